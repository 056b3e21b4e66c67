#!/bin/sh
# Benchmark of `basrec prepare` on a synthetic interaction log: generates a
# CSV of ROWS rows (default 10 million) with Zipf-like users and items,
# string ids and unsorted unix timestamps, then prepares it under
# /usr/bin/time -v and prints the wall time and the peak resident memory.
#
#   sh bench/bench_prepare.sh             # 10M rows, ~370 MB of CSV in a temp dir
#   ROWS=1000000 TIME_FORMAT=iso sh bench/bench_prepare.sh
#
# TIME_FORMAT=iso writes "2019-01-02T03:04:05Z" timestamps instead of unix
# seconds. The temp dir (TMPDIR) needs about 2.5x the CSV's size.
set -eu
BIN=${BUILD:-build}/basrec
ROWS=${ROWS:-10000000}
TIME_FORMAT=${TIME_FORMAT:-unix}
[ -x "$BIN" ] || { echo "bench_prepare: build $BIN first (make)" >&2; exit 1; }
[ -x /usr/bin/time ] || {
    echo "bench_prepare: needs /usr/bin/time (Debian package 'time')" >&2
    exit 1
}
T=$(mktemp -d "${TMPDIR:-/tmp}/basrec-bench-prepare-XXXXXX")
trap 'rm -rf "$T"' EXIT

cat >"$T/gen.c" <<'EOF'
/* gen ROWS USERS ITEMS unix|iso: a CSV interaction log on stdout. Ranks are
 * drawn from continuous power laws (users exponent 0.5, items 0.9), then
 * scrambled by an odd multiplier so popular ids are not adjacent. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t state = 0x9E3779B97F4A7C15ull;
static double uniform(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) * 0x1.0p-53;
}
/* Rank in [0, n) with density ~ x^-s (0 < s < 1). */
static uint32_t power_rank(uint32_t n, double s) {
    double x = pow(pow((double)n, 1.0 - s) * uniform(), 1.0 / (1.0 - s));
    return x >= n ? n - 1 : (uint32_t)x;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    long rows = atol(argv[1]);
    uint32_t users = (uint32_t)atol(argv[2]), items = (uint32_t)atol(argv[3]);
    int iso = strcmp(argv[4], "iso") == 0;
    static char buf[1 << 20];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    printf("user_id,item_id,rating,timestamp\n");
    for (long r = 0; r < rows; r++) {
        uint32_t u = power_rank(users, 0.5) * 2654435761u;
        uint32_t i = power_rank(items, 0.9) * 2246822519u;
        int rating = 1 + (int)(uniform() * 5);
        time_t t = 1400000000 + (time_t)(uniform() * 160000000);
        if (iso) {
            struct tm tm;
            char ts[32];
            gmtime_r(&t, &tm);
            strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
            printf("U%08x,I%08x,%d,%s\n", u, i, rating, ts);
        } else {
            printf("U%08x,I%08x,%d,%ld\n", u, i, rating, (long)t);
        }
    }
    return fflush(stdout) != 0;
}
EOF
cc -O2 -o "$T/gen" "$T/gen.c" -lm
USERS=$((ROWS / 10))
ITEMS=$((ROWS / 50))
start=$(date +%s.%N)
"$T/gen" "$ROWS" "$USERS" "$ITEMS" "$TIME_FORMAT" >"$T/log.csv"
gen_s=$(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')
mb=$(du -m "$T/log.csv" | cut -f1)
echo "generated $ROWS rows ($mb MB, $TIME_FORMAT timestamps) in $gen_s s"

/usr/bin/time -v "$BIN" prepare --input "$T/log.csv" --out "$T/out/seq.txt" \
    --rating-col rating 2>"$T/time.txt"
grep -v '^	' "$T/time.txt" >&2 || true
wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$T/time.txt" |
    awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.1f", s }')
cpu=$(sed -n 's/.*\(User\|System\) time (seconds): //p' "$T/time.txt" |
    awk '{ s += $1 } END { printf "%.1f", s }')
rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$T/time.txt")
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
echo "prepare: $ROWS rows in $wall s wall ($cpu s CPU), peak RSS $((rss / 1024)) MiB"
