#!/bin/sh
# Runs the benchmarks and appends a dated section with the machine's
# description to bench/RESULTS.md. Reproduce with: make bench
# Data: ../shared/data/Beauty.txt if present (override with BENCH_DATA),
# otherwise a synthetic file of Beauty's size.
set -e
B=${BUILD:-build}
data=${BENCH_DATA:-../shared/data/Beauty.txt}
if [ ! -r "$data" ]; then
    data=$(mktemp /tmp/basrec-bench-XXXXXX.txt)
    "$B/basrec" synth --out "$data" --users 22363 --items 12101 --seed 1
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
out=$(mktemp)
{
    echo
    echo "## $(date -u +%Y-%m-%d) — $cpu, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
    echo
    echo "Command: \`make bench\` (data: $(basename "$data"))"
    echo
    echo '```'
    for th in 1 2; do "$B/bench/bench_train" "$data" 3 "$th"; done
    [ -x "$B/bench/bench_rank" ] && "$B/bench/bench_rank"
    echo '```'
} | tee "$out"
cat "$out" >>bench/RESULTS.md
rm -f "$out"
