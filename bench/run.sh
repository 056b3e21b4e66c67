#!/bin/sh
# Runs the benchmarks and appends a dated section with the machine's
# description to bench/RESULTS.md. Reproduce with: make bench
# Data: ../shared/data/Beauty.txt if present (override with BENCH_DATA),
# otherwise a synthetic file of Beauty's size. The PyTorch figures need
# Debian's python3-torch (skipped when it is missing).
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
    echo "## $(date -u +%Y-%m-%d) — $cpu, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load before: $(cut -d' ' -f1 /proc/loadavg)"
    echo
    echo "Command: \`make bench\` (data: $(basename "$data"))"
    echo
    echo '```'
    for th in 1 2; do
        "$B/bench/bench_sgemm" "$th"
        "$B/bench/bench_ops" "$th"
        "$B/bench/bench_train" "$data" 3 "$th" stage1
        "$B/bench/bench_train" "$data" 2 "$th" stage2
    done
    for th in 1 2; do
        "$B/bench/bench_loss" "$th" "$data"
    done
    for loss in ce sampled-ce; do
        "$B/bench/bench_train" "$data" 1 2 stage1 50 sasrec "$loss"
    done
    for model in gru4rec nextitnet fmlprec; do
        "$B/bench/bench_train" "$data" 2 2 stage1 50 "$model"
        "$B/bench/bench_train" "$data" 1 2 stage2 50 "$model"
    done
    "$B/bench/bench_rank"
    if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
        for mode in stage1 stage2 eval; do
            OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/torch_ref.py --data "$data" --mode "$mode" \
                --threads 2 --batches 5 | sed 's/^/torch: /'
        done
    fi
    echo '```'
} | tee "$out"
cat "$out" >>bench/RESULTS.md
rm -f "$out"
