#!/bin/sh
# End-to-end tests of serving: recommend's ad-hoc histories and id maps,
# basrec serve (health, recommendations, a battery of malformed requests,
# a few thousand random and mutated requests, clean shutdown on SIGTERM and
# SIGINT), basrec plot, and the installed library (make install, an example
# compiled with pkg-config, make uninstall). Prints "serve: N passed, N failed".
#
# Under `make SAN=1 test` (BUILD=build-san) the server runs with
# AddressSanitizer and UBSan, so the random requests check memory safety and
# the exit status checks for leaks.
#
# sh tests/serve_test.sh --load: the load test instead (wrk; not part of
# make test): a model of the default synthetic size, wrk at a few
# connection counts, requests/s and latency percentiles (docs/SERVING.md).
BUILD=${BUILD:-build}
BIN=$BUILD/basrec
CC=${CC:-cc}
ROOT=$(pwd)
T=$(mktemp -d /tmp/basrec-serve-XXXXXX)
PID=""
cleanup() {
    [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { # check NAME CMD...: CMD must succeed
    name=$1
    shift
    if "$@"; then ok "$name"; else ko "$name"; fi
}

# start_server ARGS...: basrec serve on a free 127.0.0.1 port; sets PID, URL.
start_server() {
    "$BIN" serve --host 127.0.0.1 --port 0 "$@" 2>"$T/serve.log" &
    PID=$!
    port=""
    i=0
    while [ $i -lt 300 ] && [ -z "$port" ] && kill -0 "$PID" 2>/dev/null; do
        sleep 0.05
        port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/serve.log")
        i=$((i + 1))
    done
    URL=http://127.0.0.1:$port
    [ -n "$port" ]
}
# stop_server SIGNAL: sends it and sets STATUS to the server's exit status.
stop_server() {
    kill "-$1" "$PID"
    wait "$PID"
    STATUS=$?
    PID=""
}
# http METHOD PATH [BODY-FILE]: prints the status code; the body goes to $T/body.
http() {
    if [ -n "${3:-}" ]; then
        curl -s -m 10 -o "$T/body" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
            --data-binary "@$3" "$URL$2"
    else
        curl -s -m 10 -o "$T/body" -w '%{http_code}' -X "$1" "$URL$2"
    fi
}
# answered CODE WANT: the last request got status 200 and the body the JSON
# text in file WANT (an HTTP body has no final newline).
answered() { [ "$1" = 200 ] && [ "$(cat "$T/body")" = "$(cat "$2")" ]; }
# post JSON: POST /recommend with that body; prints the status code.
post() {
    printf '%s' "$1" >"$T/req"
    http POST /recommend "$T/req"
}

if ! command -v curl >/dev/null || ! "$BIN" synth --out "$T/data.txt" --users 200 --items 80 --seed 3; then
    echo "FAIL setup: needs curl (sh scripts/install-deps.sh) and $BIN"
    echo "serve: 0 passed, 1 failed"
    exit 1
fi

if [ "${1:-}" = "--load" ]; then
    command -v wrk >/dev/null || { echo "wrk is not installed (sh scripts/install-deps.sh --dev)"; exit 1; }
    "$BIN" synth --out "$T/load.txt" --seed 1 # the default size: 5000 users, 2000 items
    "$BIN" train --data "$T/load.txt" --out "$T/load" --epochs 3 --no-progress >/dev/null || exit 1
    start_server --checkpoint "$T/load/best.safetensors" --threads "$(nproc)" || exit 1
    # A 20-item history of a real user, as the body of every request.
    items=$(sed -n 1p "$T/load.txt" | cut -d' ' -f2-21 | tr ' ' ',')
    cat >"$T/rec.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"items": [$items], "k": 10}'
wrk.headers["Content-Type"] = "application/json"
EOF
    echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "model: $(curl -s "$URL/health")"
    for c in 1 4 16 64; do
        wrk -t "$((c < 2 ? c : 2))" -c "$c" -d 10s --latency -s "$T/rec.lua" "$URL/recommend" >"$T/wrk.txt"
        rps=$(sed -n 's/^Requests\/sec: *//p' "$T/wrk.txt")
        p50=$(sed -n 's/^ *50% *//p' "$T/wrk.txt")
        p99=$(sed -n 's/^ *99% *//p' "$T/wrk.txt")
        errs=$(grep -E 'Non-2xx|Socket errors' "$T/wrk.txt" | tr -s ' ' | tr '\n' ' ')
        echo "connections $c: $rps requests/s, p50 $p50, p99 $p99 $errs"
    done
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    stop_server TERM
    exit "$STATUS"
fi

TRAIN="--data $T/data.txt --epochs 2 --hidden-size 16 --batch-size 64 --max-seq-length 20 --no-progress --threads 2"
check "train a small model" sh -c "'$BIN' train $TRAIN --out '$T/run' --seed 1 --metrics-log '$T/log.jsonl' >/dev/null"
CKPT=$T/run/best.safetensors
N_ITEMS=$(awk '{for (i = 2; i <= NF; i++) if ($i > m) m = $i} END {print m}' "$T/data.txt")

# ---- recommend: ad-hoc histories ----------------------------------------
"$BIN" recommend --checkpoint "$CKPT" --history "5,9,12" --k 5 >"$T/h.json"
check "recommend --history" grep -q '^{"items": \[[0-9]*, [0-9]*, [0-9]*, [0-9]*, [0-9]*\], "scores": \[' "$T/h.json"
check "recommend --history excludes the history" sh -c \
    "! sed 's/.*\"items\": \[\([^]]*\)\].*/\1/' '$T/h.json' | tr -d ' ' | tr ',' '\n' | grep -qx -e 5 -e 9 -e 12"
"$BIN" recommend --checkpoint "$CKPT" --history "5,9,12" --k 5 --include-seen >"$T/hs.json"
check "recommend --include-seen" test -s "$T/hs.json"
# A user's whole history given ad hoc answers like --users.
hist=$(sed -n 1p "$T/data.txt" | cut -d' ' -f2- | tr ' ' ',')
"$BIN" recommend --checkpoint "$CKPT" --history "$hist" --k 5 >"$T/h1.json"
"$BIN" recommend --checkpoint "$CKPT" --data "$T/data.txt" --users 1 --k 5 | sed 's/^{"user": 1, /{/' >"$T/u1.json"
check "ad-hoc history equals the user's recommendation" cmp -s "$T/h1.json" "$T/u1.json"
printf '{"items": [5, 9, 12], "k": 5}\n\n{"items": [5], "k": 0}\n{"user": 1, "k": 5}\n' >"$T/lines"
"$BIN" recommend --checkpoint "$CKPT" --stdin --data "$T/data.txt" <"$T/lines" >"$T/stdin.out"
status=$?
check "recommend --stdin: one answer per request, errors in line" sh -c \
    "[ $status -eq 1 ] && [ \$(wc -l <'$T/stdin.out') -eq 3 ] && sed -n 2p '$T/stdin.out' | grep -q '\"error\": \"k = 0' \
     && sed -n 1p '$T/stdin.out' | cmp -s - '$T/h.json' && sed -n 3p '$T/stdin.out' | cmp -s - '$T/u1.json'"
"$BIN" recommend --checkpoint "$CKPT" --history "5,x" >/dev/null 2>"$T/err"
check "recommend --history rejects a bad list" grep -q "not a comma-separated list" "$T/err"
"$BIN" recommend --checkpoint "$CKPT" --history "5,99999" >/dev/null 2>"$T/err"
check "recommend --history rejects an unknown item" grep -q "items\[1\] = 99999 is not an item" "$T/err"

# ---- id maps: original ids in and out -------------------------------------
awk -v n="$N_ITEMS" 'BEGIN {print "new_id\toriginal_id"; for (i = 1; i <= n; i++) printf "%d\tsku-%d\n", i, i}' >"$T/items.tsv"
awk '{printf "%d\tuser:%d\n", $1, $1}' "$T/data.txt" >"$T/users.tsv"
"$BIN" recommend --checkpoint "$CKPT" --data "$T/data.txt" --users user:1 --k 5 \
    --item-map "$T/items.tsv" --user-map "$T/users.tsv" >"$T/m1.json"
mapped=$(sed 's/"sku-\([0-9]*\)"/\1/g; s/"user:1"/1/' "$T/m1.json")
check "recommend --users with id maps" [ "$mapped" = "$(sed 's/^{/{"user": 1, /' "$T/u1.json")" ]
"$BIN" recommend --checkpoint "$CKPT" --history "sku-5,sku-9,sku-12" --k 5 --item-map "$T/items.tsv" >"$T/m2.json"
check "recommend --history in original ids" [ "$(sed 's/"sku-\([0-9]*\)"/\1/g' "$T/m2.json")" = "$(cat "$T/h.json")" ]
"$BIN" recommend --checkpoint "$CKPT" --history "sku-5,nope" --item-map "$T/items.tsv" >/dev/null 2>"$T/err"
check "unknown original item: clear error" grep -q "items\[1\]: unknown id 'nope'" "$T/err"
head -n 10 "$T/items.tsv" >"$T/short.tsv"
"$BIN" recommend --checkpoint "$CKPT" --history "sku-5" --item-map "$T/short.tsv" >/dev/null 2>"$T/err"
check "an item map must cover the model" grep -q "no original id for the model's item 10" "$T/err"

# ---- plot -----------------------------------------------------------------
check "plot writes an SVG" sh -c "'$BIN' plot --metrics-log '$T/log.jsonl' --out '$T/curves.svg' \
    && grep -q '^<svg' '$T/curves.svg' && grep -q 'valid NDCG@10' '$T/curves.svg' && grep -q '</svg>' '$T/curves.svg'"
if command -v rsvg-convert >/dev/null; then
    check "the SVG renders" rsvg-convert -o "$T/curves.png" "$T/curves.svg"
fi
printf '{"epoch": 0, "loss": 1.5}\nnot json\n' >"$T/bad.jsonl"
"$BIN" plot --metrics-log "$T/bad.jsonl" --out "$T/bad.svg" 2>"$T/err"
check "plot names a bad line" sh -c "grep -q 'bad.jsonl:2' '$T/err' && [ ! -e '$T/bad.svg' ]"

# ---- serve ----------------------------------------------------------------
if start_server --checkpoint "$CKPT" --threads 2; then ok "serve starts"; else ko "serve starts ($(cat "$T/serve.log"))"; fi
check "GET /health" sh -c "[ \$(curl -s -o '$T/health' -w '%{http_code}' '$URL/health') = 200 ] \
    && grep -q '\"status\": \"ok\"' '$T/health' && grep -q '\"n_items\": $N_ITEMS' '$T/health'"
code=$(post '{"items": [5, 9, 12], "k": 5}')
check "POST /recommend" answered "$code" "$T/h.json"
code=$(post '{"items": [5, 9, 12], "k": 5, "exclude_seen": false}')
check "POST /recommend exclude_seen false" answered "$code" "$T/hs.json"

# Malformed requests: each a 4xx with a JSON error, and the server lives on.
deep=$(awk 'BEGIN {for (i = 0; i < 5000; i++) printf "["; for (i = 0; i < 5000; i++) printf "]"}')
bad=0
for req in 'not json' '[1, 2]' '{}' '"items"' '{"items": []}' '{"items": [0]}' '{"items": [-4]}' \
    '{"items": [99999]}' '{"items": ["5"]}' '{"items": [5.5]}' '{"items": [null]}' '{"items": 5}' \
    '{"items": [5], "k": 0}' '{"items": [5], "k": 1001}' '{"items": [5], "k": "3"}' \
    '{"items": [5], "k": 1.5}' '{"items": [5], "k": 99999999999999999999}' \
    '{"items": [5], "exclude_seen": "yes"}' '{"items": [5], "extra": 1}' \
    '{"items": [5], "items": [6]}' '{"user": 1}' '{"items": [5], "user": 1}' "$deep" '' \
    '{"items": [5, 9' '{"items": [5]} trailing' '{"items": ["\u0000"]}'; do
    code=$(post "$req")
    case $code in
    4??) grep -q '"error": ' "$T/body" || { bad=$((bad + 1)); echo "  no JSON error for: $req"; } ;;
    *) bad=$((bad + 1)); echo "  got $code for: $(printf '%.60s' "$req")" ;;
    esac
done
check "malformed bodies get 400 with a JSON error" [ $bad -eq 0 ]
check "unknown path: 404" [ "$(http GET /nope)" = 404 ]
check "GET /recommend: 405" [ "$(http GET /recommend)" = 405 ]
check "PUT /recommend: 405" [ "$(http PUT /recommend)" = 405 ]
check "POST /health: 405" [ "$(http POST /health)" = 405 ]
head -c 1100000 /dev/zero | tr '\0' ' ' >"$T/big"
check "oversized body: 413" [ "$(http POST /recommend "$T/big")" = 413 ]
code=$(curl -s -m 10 -o "$T/body" -w '%{http_code}' -H 'Transfer-Encoding: chunked' --data-binary "@$T/big" "$URL/recommend")
check "oversized chunked body: 413" [ "$code" = 413 ]
printf '{"items": [5]}\0garbage' >"$T/nul"
check "body with a NUL byte: 400" [ "$(http POST /recommend "$T/nul")" = 400 ]

# Random and mutated requests (a small generator and HTTP client in C).
cat >"$T/fuzz.c" <<'EOF'
/* fuzz PORT N SEED [tolerant]: sends N random or mutated requests, mostly
 * POST /recommend, some with broken HTTP. A well-formed request must be
 * answered with a status below 500; broken HTTP may also be dropped.
 * tolerant (a server shutting down): unanswered requests are no errors,
 * and the first refused connection ends the run. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static unsigned long long rng;
static unsigned rnd(unsigned n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)((rng >> 33) % n);
}
static const char *seeds[] = {
    "{\"items\": [5, 9, 12], \"k\": 10}",
    "{\"items\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], \"k\": 3, \"exclude_seen\": false}",
    "{\"user\": 1, \"k\": 2}",
    "{\"items\": [\"a\", null, true, 1.5, -3, 99999999999999999999, {}, []], \"k\": -1}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{\"items\": [1]}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{\"items\": [5, 9, 12], \"k\": 80, \"exclude_seen\": true}",
    "{\"k\": 5, \"items\": [80, 79, 1, 1, 1]}",
};
static const char *tokens[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "1e999", "-0", "null", "true",
    "\"items\"", "\"k\"", "\"user\"", "\"exclude_seen\"", "0", "2147483648", "-2147483649", "80", "81",
    "\xff", "\xc3", "\xe2\x82", " ", "\n", "1000", "1001", "1.0", "\"\\uDFFF\"",
};
#define N_SEEDS (sizeof seeds / sizeof seeds[0])
#define N_TOKENS (sizeof tokens / sizeof tokens[0])

static size_t mutate(char *b, size_t len, size_t cap) {
    for (unsigned m = 1 + rnd(4); m > 0; m--) {
        unsigned op = rnd(5), at = len ? rnd((unsigned)len + 1) : 0;
        if (op == 0 && len) { b[rnd((unsigned)len)] = (char)rnd(256); }
        else if (op == 1) { /* insert a token */
            const char *t = tokens[rnd(N_TOKENS)];
            size_t tl = strlen(t);
            if (len + tl >= cap) continue;
            memmove(b + at + tl, b + at, len - at);
            memcpy(b + at, t, tl);
            len += tl;
        } else if (op == 2 && len) { /* delete a range */
            size_t n = rnd((unsigned)(len - (at < len ? at : len - 1)) + 1);
            if (at >= len) at = (unsigned)len - 1;
            if (at + n > len) n = len - at;
            memmove(b + at, b + at + n, len - at - n);
            len -= n;
        } else if (op == 3 && len && len * 2 < cap) { /* duplicate a range */
            size_t from = rnd((unsigned)len), n = 1 + rnd((unsigned)(len - from));
            memmove(b + at + n, b + at, len - at);
            memcpy(b + at, b + from + (from >= at ? n : 0), n);
            len += n;
        } else if (op == 4) { len = at; } /* truncate */
    }
    return len;
}

/* Sends one request and reads the status line; returns the status, 0 when
 * no answer came, -1 when the connection failed. Broken HTTP may leave the
 * server waiting for the rest of a request: its answer is awaited briefly. */
static int exchange(int port, const char *req, size_t len, int broken) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {broken ? 0 : 10, broken ? 100000 : 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int status = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && send(fd, req, len, MSG_NOSIGNAL) == (ssize_t)len) {
        char resp[4096];
        ssize_t got = 0, n;
        resp[0] = '\0';
        while (!strstr(resp, "\r\n") && got < (ssize_t)sizeof resp - 1 &&
               (n = recv(fd, resp + got, sizeof resp - 1 - got, 0)) > 0) {
            got += n;
            resp[got] = '\0';
        }
        if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) status = 0;
    } else {
        status = -1;
    }
    close(fd);
    return status;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    const int port = atoi(argv[1]), n = atoi(argv[2]), tolerant = argc > 4;
    rng = strtoull(argv[3], NULL, 10);
    static char body[1 << 16], req[1 << 17];
    int c2 = 0, c4 = 0, c5 = 0, dropped = 0, refused = 0, broken_sent = 0;
    for (int i = 0; i < n; i++) {
        const char *s = seeds[rnd(N_SEEDS)];
        size_t len = strlen(s);
        memcpy(body, s, len);
        if (rnd(8)) len = mutate(body, len, sizeof body);
        const unsigned kind = rnd(40);
        size_t rl;
        int well_formed = 1;
        if (kind == 0) { /* another method or path */
            static const char *lines[] = {"GET /health", "PUT /recommend", "POST /x", "DELETE /recommend",
                                          "POST /recommend?x=1", "OPTIONS *", "POST //recommend"};
            rl = (size_t)snprintf(req, sizeof req, "%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                                  lines[rnd(sizeof lines / sizeof lines[0])], len);
        } else if (kind == 1) { /* broken HTTP: mutated head, lying lengths */
            rl = (size_t)snprintf(req, sizeof req, "POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", len);
            rl = mutate(req, rl, sizeof req / 2);
            well_formed = 0;
            broken_sent++;
        } else {
            rl = (size_t)snprintf(req, sizeof req, "POST /recommend HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", len);
        }
        if (rl >= sizeof req / 2) rl = sizeof req / 2;
        memcpy(req + rl, body, len);
        const int st = exchange(port, req, rl + len, !well_formed);
        if (st < 0 && tolerant) break;
        if (st < 0) refused++;
        else if (st == 0) dropped += well_formed;
        else if (st < 300) c2++;
        else if (st < 500) c4++;
        else c5++;
        if (st == 0 && well_formed && !tolerant) fprintf(stderr, "no answer to: %.*s\n", (int)(rl + len), req);
    }
    printf("%d requests (%d with broken HTTP): %d 2xx, %d 4xx, %d 5xx, %d unanswered, %d refused\n", n,
           broken_sent, c2, c4, c5, dropped, refused);
    return c5 > 0 || (!tolerant && (dropped > 0 || refused > 0));
}
EOF
if $CC -O1 -o "$T/fuzz" "$T/fuzz.c" 2>"$T/cc.err"; then
    if "$T/fuzz" "${URL##*:}" 3000 7 >"$T/fuzz.out" 2>&1; then ok "3000 random/mutated requests: $(cat "$T/fuzz.out")"
    else ko "random/mutated requests: $(cat "$T/fuzz.out")"; fi
else
    ko "fuzz generator compiles ($(cat "$T/cc.err"))"
fi
check "server alive after the battery" [ "$(http GET /health)" = 200 ]
# SIGTERM while clients are busy: requests finish, exit 0, nothing leaks.
"$T/fuzz" "${URL##*:}" 100000 9 tolerant >/dev/null 2>&1 &
load=$!
sleep 0.5
stop_server TERM
wait $load 2>/dev/null
check "SIGTERM under load: clean exit 0" sh -c "[ $STATUS -eq 0 ] && grep -q 'stopped after' '$T/serve.log'"
[ $STATUS -eq 0 ] || cat "$T/serve.log"

# Original ids and user histories over HTTP; SIGINT.
start_server --checkpoint "$CKPT" --item-map "$T/items.tsv" --data "$T/data.txt" --user-map "$T/users.tsv" --threads 1
code=$(post '{"items": ["sku-5", "sku-9", "sku-12"], "k": 5}')
check "serve with an item map" answered "$code" "$T/m2.json"
code=$(post '{"user": "user:1", "k": 5}')
check "serve a user's history by original id" sh -c "[ $code = 200 ] && [ \"\$(sed 's/\"sku-\([0-9]*\)\"/\1/g' '$T/body')\" = \"\$(cat '$T/h1.json')\" ]"
code=$(post '{"items": ["sku-5", "sku-0"]}')
check "unknown original item: 400 naming it" sh -c "[ $code = 400 ] && grep -q \"unknown id 'sku-0'\" '$T/body'"
check "unknown user: 400" [ "$(post '{"user": "user:9999"}')" = 400 ]
stop_server INT
check "SIGINT: clean exit 0" [ $STATUS -eq 0 ]

# Startup errors.
"$BIN" serve --port 0 >/dev/null 2>&1
check "serve without --checkpoint: usage error" [ $? -eq 2 ]
"$BIN" serve --checkpoint "$CKPT" --item-map "$T/short.tsv" --port 0 2>"$T/err"
check "serve rejects an item map that does not cover the model" grep -q "no original id" "$T/err"

# ---- installed library ------------------------------------------------------
san=""
[ "$BUILD" = build-san ] && san="SAN=1"
if make -s -C "$ROOT" install PREFIX="$T/prefix" BUILD="$BUILD" $san >"$T/make.out" 2>&1; then
    ok "make install"
    cflags=""
    [ -n "$san" ] && cflags="-fsanitize=address,undefined"
    if $CC -std=c11 $cflags -o "$T/example" "$ROOT/examples/recommend_example.c" \
        $(PKG_CONFIG_PATH="$T/prefix/lib/pkgconfig" pkg-config --cflags --libs basrec) 2>"$T/cc.err"; then
        ok "example compiles against the installed library with pkg-config"
    else
        ko "example compiles against the installed library ($(cat "$T/cc.err"))"
    fi
    "$T/example" "$CKPT" 5 9 12 >"$T/ex.out"
    "$BIN" recommend --checkpoint "$CKPT" --history 5,9,12 --k 10 >"$T/h10.json"
    want=$(sed 's/.*"items": \[\([^]]*\)\].*/\1/' "$T/h10.json" | tr -d ' ')
    check "the example recommends like basrec recommend" [ "$(cut -d' ' -f1 "$T/ex.out" | paste -sd, -)" = "$want" ]
    make -s -C "$ROOT" uninstall PREFIX="$T/prefix" >/dev/null 2>&1
    check "make uninstall" [ -z "$(find "$T/prefix" -type f)" ]
else
    ko "make install ($(tail -n 5 "$T/make.out"))"
fi

# The whole path on a generated raw log: prepare -> train -> recommend ->
# serve -> HTTP in original ids -> shutdown.
"$BIN" synth --out "$T/raw_seq.txt" --users 300 --items 90 --seed 11
awk 'BEGIN{print "user_id,item_id,timestamp"}
     {for (i = 2; i <= NF; i++) print "u" $1 ",sku-" $i "," 1600000000 + 60 * i}' \
    "$T/raw_seq.txt" >"$T/raw.csv"
if "$BIN" prepare --input "$T/raw.csv" --out "$T/shop.txt" >/dev/null \
    && "$BIN" train --data "$T/shop.txt" --out "$T/shop" --epochs 1 --hidden-size 16 --no-progress >/dev/null \
    && "$BIN" recommend --checkpoint "$T/shop/best.safetensors" --item-map "$T/shop.txt.items.tsv" \
        --data "$T/shop.txt" --users 1 --k 3 | grep -q '"items": \["sku-'; then
    ok "raw log: prepare, train, recommend in original ids"
else
    ko "raw log: prepare, train, recommend in original ids"
fi
if start_server --checkpoint "$T/shop/best.safetensors" --item-map "$T/shop.txt.items.tsv" --threads 1; then
    printf '{"items": ["%s", "%s"], "k": 3}' "$(sed -n 1p "$T/shop.txt.items.tsv" | cut -f2)" \
        "$(sed -n 2p "$T/shop.txt.items.tsv" | cut -f2)" >"$T/raw_req.json"
    code=$(http POST /recommend "$T/raw_req.json")
    check "raw log: served recommendations in original ids" \
        sh -c "[ '$code' = 200 ] && grep -q '\"items\": \\[\"sku-' '$T/body'"
    stop_server TERM
    check "raw log: server stops cleanly" [ "$STATUS" -eq 0 ]
else
    ko "raw log: server starts"
fi

echo "serve: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
