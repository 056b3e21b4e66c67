#!/bin/sh
# Stage-1 epoch time against data size and max_len: cost should follow the
# real (non-padding) training positions, not users x max_len.
#  - synthetic data of Beauty's catalogue (12,101 items) with 1x, 4x and 16x
#    Beauty's users (22,363) and so about 1x, 4x, 16x its interactions;
#  - Beauty (or its synthetic stand-in) at max_len 50 and 200.
# Usage: sh bench/bench_scaling.sh [threads]   (after make bench)
# Prints one bench_train JSON line per run.
set -e
B=${BUILD:-build}
th=${1:-1}
tmp=$(mktemp -d /tmp/basrec-scaling-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
for k in 1 4 16; do
    "$B/basrec" synth --out "$tmp/synth$k.txt" --users $((22363 * k)) --items 12101 --seed 1 >/dev/null
    printf '{"scale": %d, "interactions": %d} ' "$k" "$(awk '{n += NF - 1} END {print n}' "$tmp/synth$k.txt")"
    "$B/bench/bench_train" "$tmp/synth$k.txt" 1 "$th" stage1
done
data=${BENCH_DATA:-../shared/data/Beauty.txt}
[ -r "$data" ] || data=$tmp/synth1.txt
for len in 50 200; do
    "$B/bench/bench_train" "$data" 2 "$th" stage1 "$len"
done
