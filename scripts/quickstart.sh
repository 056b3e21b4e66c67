#!/bin/sh
# One command from a fresh Debian machine to a trained recommender:
# installs what is missing, builds, generates a synthetic dataset, trains
# SASRec on it with early stopping, evaluates, and prints recommendations.
set -e
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
make -j"$(nproc)"
mkdir -p runs
./build/basrec synth --out runs/synthetic.txt --users 6000 --items 2000 --seed 1
./build/basrec train --data runs/synthetic.txt --out runs/synthetic --epochs 30 --patience 5
./build/basrec eval --checkpoint runs/synthetic/best.safetensors --data runs/synthetic.txt --split test
./build/basrec recommend --checkpoint runs/synthetic/best.safetensors --data runs/synthetic.txt --users 1,2,3 --k 10
