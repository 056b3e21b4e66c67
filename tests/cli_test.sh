#!/bin/sh
# End-to-end tests of the basrec command: training, evaluation,
# recommendation, resuming, determinism, and clear errors on bad input.
# Prints "cli: N passed, N failed".
BIN=${BUILD:-build}/basrec
T=$(mktemp -d /tmp/basrec-cli-XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; }
# meta_of CHECKPOINT KEY: a value of the checkpoint's metadata (in its header).
meta_of() { head -c 200000 "$1" | grep -a -o "\"$2\":\"[^\"]*\"" | cut -d'"' -f4; }
# expect_fail NAME PATTERN CMD...: CMD must exit non-zero with PATTERN on stderr.
expect_fail() {
    name=$1 pattern=$2
    shift 2
    if "$@" >"$T/out" 2>"$T/err"; then
        ko "$name (exited 0)"
    elif grep -q -- "$pattern" "$T/err"; then
        ok "$name"
    else
        ko "$name (stderr: $(cat "$T/err"))"
    fi
}

"$BIN" synth --out "$T/data.txt" --users 400 --items 150 --seed 3 && ok "synth" || ko "synth"
TRAIN="--data $T/data.txt --epochs 3 --hidden-size 16 --batch-size 64 --max-seq-length 20 --no-progress --threads 2"

if "$BIN" train $TRAIN --out "$T/run" --seed 7 --metrics-log "$T/log.jsonl" >"$T/res1.json"; then
    ok "train"
else
    ko "train"
fi
[ -s "$T/run/best.safetensors" ] && [ -s "$T/run/last.safetensors" ] && [ -s "$T/run/result.json" ] \
    && ok "train writes checkpoints and result" || ko "train writes checkpoints and result"
[ "$(wc -l <"$T/log.jsonl")" -eq 3 ] && grep -q '"NDCG@10"' "$T/log.jsonl" \
    && ok "metrics log has one JSON line per epoch" || ko "metrics log has one JSON line per epoch"
ls "$T/run" | grep -q tmp && ko "no temporary files left" || ok "no temporary files left"

"$BIN" train $TRAIN --out "$T/run2" --seed 7 >"$T/res2.json"
# Same seed and threads: identical metrics (the timing field differs).
strip() { sed 's/"seconds": [0-9.]*, //' "$1"; }
[ "$(strip "$T/res1.json")" = "$(strip "$T/res2.json")" ] && ok "deterministic for a seed" \
    || ko "deterministic for a seed"
"$BIN" train $TRAIN --out "$T/run3" --seed 8 >"$T/res3.json"
[ "$(strip "$T/res1.json")" != "$(strip "$T/res3.json")" ] && ok "another seed differs" \
    || ko "another seed differs"

# Resume: 2 epochs then 1 more equals 3 straight epochs.
"$BIN" train $TRAIN --out "$T/run4" --seed 7 --epochs 2 >/dev/null
"$BIN" train $TRAIN --out "$T/run4" --epochs 3 --resume >"$T/res4.json"
[ "$(strip "$T/res1.json")" = "$(strip "$T/res4.json")" ] && ok "resume replays exactly" \
    || ko "resume replays exactly"
# A resumed run's seconds count the time before the resume (kept in
# last.safetensors): resuming the finished run3 only re-evaluates its best.
before=$(meta_of "$T/run3/last.safetensors" seconds)
"$BIN" train $TRAIN --out "$T/run3" --resume >"$T/res3b.json"
after=$(grep -o '"seconds": [0-9.]*' "$T/res3b.json" | grep -o '[0-9.]*$')
[ -n "$before" ] && awk -v b="$before" -v a="$after" 'BEGIN { exit !(b > 0 && a >= b) }' \
    && ok "a resumed run's seconds include the time before the resume" \
    || ko "a resumed run's seconds include the time before the resume (stored $before, reported $after)"
# A run stopped by patience goes on when resumed with more: it then equals a
# run started with that patience (here the default 20, over 8 epochs).
"$BIN" train $TRAIN --out "$T/run5" --seed 7 --epochs 8 >"$T/res5.json"
"$BIN" train $TRAIN --out "$T/run6" --seed 7 --epochs 8 --patience 1 >"$T/res6.json"
"$BIN" train $TRAIN --out "$T/run6" --epochs 8 --resume >"$T/res7.json"
grep -q '"epochs_run": 8' "$T/res5.json" && ! grep -q '"epochs_run": 8' "$T/res6.json" \
    && [ "$(strip "$T/res5.json")" = "$(strip "$T/res7.json")" ] \
    && ok "resume with more patience continues an early-stopped run" \
    || ko "resume with more patience continues an early-stopped run"

# sampled-ce: reproducible, its sampler matters, and its options survive a resume.
SCE="--loss sampled-ce --ce-negatives 32 --ce-sampler uniform"
"$BIN" train $TRAIN --out "$T/sce1" --seed 7 $SCE >"$T/sce1.json"
"$BIN" train $TRAIN --out "$T/sce2" --seed 7 $SCE >"$T/sce2.json"
[ -s "$T/sce1.json" ] && [ "$(strip "$T/sce1.json")" = "$(strip "$T/sce2.json")" ] \
    && ok "sampled-ce deterministic for a seed" || ko "sampled-ce deterministic for a seed"
"$BIN" train $TRAIN --out "$T/sce3" --seed 7 --loss sampled-ce --ce-negatives 32 >"$T/sce3.json"
[ -s "$T/sce3.json" ] && [ "$(strip "$T/sce1.json")" != "$(strip "$T/sce3.json")" ] \
    && ok "sampled-ce pop differs from uniform" || ko "sampled-ce pop differs from uniform"
"$BIN" train $TRAIN --out "$T/sce4" --seed 7 $SCE --epochs 2 >/dev/null
"$BIN" train $TRAIN --out "$T/sce4" --epochs 3 --resume >"$T/sce4.json"
[ "$(strip "$T/sce1.json")" = "$(strip "$T/sce4.json")" ] && ok "sampled-ce resume replays exactly" \
    || ko "sampled-ce resume replays exactly"

if "$BIN" eval --checkpoint "$T/run/best.safetensors" --data "$T/data.txt" >"$T/eval.json"; then
    test_line=$(sed 's/.*"test": //; s/}$//' "$T/res1.json")
    eval_line=$(sed 's/.*"metrics": //; s/}$//' "$T/eval.json")
    [ "$test_line" = "$eval_line" ] && ok "eval reproduces train's test metrics" \
        || ko "eval reproduces train's test metrics ($test_line vs $eval_line)"
else
    ko "eval"
fi
# The reference's scoring of seen items (0, not removed) runs and is reported as such.
"$BIN" eval --checkpoint "$T/run/best.safetensors" --data "$T/data.txt" --seen zero >"$T/eval0.json" \
    && grep -q '"seen": "zero"' "$T/eval0.json" && grep -q '"NDCG@10"' "$T/eval0.json" \
    && ok "eval --seen zero" || ko "eval --seen zero"
expect_fail "unknown --seen" "--seen must be" "$BIN" eval --checkpoint "$T/run/best.safetensors" --data "$T/data.txt" --seen keep

if "$BIN" recommend --checkpoint "$T/run/best.safetensors" --data "$T/data.txt" --users 1,2 --k 5 >"$T/rec.jsonl"; then
    [ "$(wc -l <"$T/rec.jsonl")" -eq 2 ] && grep -q '^{"user": 1, "items": \[[0-9]*, [0-9]*, [0-9]*, [0-9]*, [0-9]*\]' "$T/rec.jsonl" \
        && ok "recommend" || ko "recommend ($(cat "$T/rec.jsonl"))"
else
    ko "recommend"
fi
# Seen items are excluded unless asked.
seen=$(sed -n 1p "$T/data.txt" | cut -d' ' -f2- | tr ' ' '\n' | sort -u)
recs=$(sed -n 1p "$T/rec.jsonl" | sed 's/.*"items": \[\([^]]*\)\].*/\1/' | tr -d ' ' | tr ',' '\n')
overlap=$(printf '%s\n%s\n' "$seen" "$recs" | sort | uniq -d | wc -l)
[ "$overlap" -eq 0 ] && ok "recommend excludes seen items" || ko "recommend excludes seen items"

# reproduce: two seeds in two processes, then a second call reuses the runs.
mkdir -p "$T/rd"
cp "$T/data.txt" "$T/rd/Beauty.txt"
REPRO="--dataset beauty --method basrec --seeds 1,2 --max-epochs 2 --data-dir $T/rd --runs-dir $T/rd/runs --results $T/rd/res.jsonl --no-progress"
if "$BIN" reproduce $REPRO --jobs 2 >/dev/null && [ "$(wc -l <"$T/rd/res.jsonl")" -eq 1 ] \
    && [ -s "$T/rd/runs/beauty-sasrec-basrec-s2/result.json" ] && [ -s "$T/rd/runs/beauty-sasrec-plain-s1/best.safetensors" ]; then
    ok "reproduce runs seeds in parallel"
else
    ko "reproduce runs seeds in parallel"
fi
before=$(stat -c %Y "$T/rd/runs/beauty-sasrec-basrec-s1/result.json")
"$BIN" reproduce $REPRO >/dev/null
[ "$(wc -l <"$T/rd/res.jsonl")" -eq 2 ] && [ "$(sed -n 1p "$T/rd/res.jsonl")" = "$(sed -n 2p "$T/rd/res.jsonl")" ] \
    && [ "$(stat -c %Y "$T/rd/runs/beauty-sasrec-basrec-s1/result.json")" = "$before" ] \
    && ok "reproduce reuses finished runs" || ko "reproduce reuses finished runs"
# Into a log file, reproduce reports a line per epoch and no progress bar.
"$BIN" reproduce --dataset beauty --method plain --seeds 1 --max-epochs 1 --data-dir "$T/rd" --runs-dir "$T/logrun" \
    --results "$T/logrun/res.jsonl" 2>"$T/rd/log.txt" >/dev/null \
    && grep -q '^epoch    0 loss' "$T/rd/log.txt" && ! grep -q "$(printf '\r')" "$T/rd/log.txt" \
    && ok "reproduce logs a line per epoch, no bar, when stderr is a file" \
    || ko "reproduce logs a line per epoch, no bar, when stderr is a file"
# An ICE variant of RM-HSAOCL trains its stage 1 with ICE in a directory of
# its own; the BCE variant starts from BASRec's BCE stage 1.
plain_before=$(stat -c %Y "$T/rd/runs/beauty-sasrec-plain-s1/result.json")
RMH="--dataset beauty --method rm-hsaocl --seeds 1 --max-epochs 2 --data-dir $T/rd --runs-dir $T/rd/runs --results $T/rd/res.jsonl --no-progress"
"$BIN" reproduce $RMH --ablation no-crop >/dev/null \
    && "$BIN" reproduce $RMH --ablation bce >/dev/null \
    && [ "$(stat -c %Y "$T/rd/runs/beauty-sasrec-plain-s1/result.json")" = "$plain_before" ] \
    && grep -q '"method": "rm-hsaocl", "ablation": "no-crop"' "$T/rd/res.jsonl" \
    && [ -s "$T/rd/runs/beauty-sasrec-plain-ce-s1/result.json" ] \
    && [ -s "$T/rd/runs/beauty-sasrec-plain-ce-s1/metrics.jsonl" ] \
    && [ -s "$T/rd/runs/beauty-sasrec-rm-hsaocl-no-crop-s1/result.json" ] \
    && [ -s "$T/rd/runs/beauty-sasrec-rm-hsaocl-bce-s1/result.json" ] \
    && [ ! -e "$T/rd/runs/beauty-sasrec-plain-bce-s1" ] \
    && ok "reproduce runs RM-HSAOCL variants on their loss's stage 1" \
    || ko "reproduce runs RM-HSAOCL variants on their loss's stage 1"
# A run made under other settings (here another epoch cap) is neither
# reused nor resumed: the error names the run and the setting.
msg=$("$BIN" reproduce $REPRO --max-epochs 3 2>&1 >/dev/null)
rc=$?
[ "$rc" -ne 0 ] && echo "$msg" | grep -q "beauty-sasrec-plain-s1 was made with at most 2 epochs, planned 3" \
    && [ "$(stat -c %Y "$T/rd/runs/beauty-sasrec-plain-s1/result.json")" = "$plain_before" ] \
    && [ "$(wc -l <"$T/rd/res.jsonl")" -eq 4 ] \
    && ok "reproduce refuses a run made with other settings" \
    || ko "reproduce refuses a run made with other settings ($msg)"
# --patience reaches the plan of every stage (here stage 1's, which it refuses).
msg=$("$BIN" reproduce $REPRO --patience 7 2>&1 >/dev/null)
rc=$?
[ "$rc" -ne 0 ] && echo "$msg" | grep -q "beauty-sasrec-plain-s1 was made with patience 20, planned 7" \
    && ok "reproduce --patience overrides the preset's" \
    || ko "reproduce --patience overrides the preset's ($msg)"
"$BIN" reproduce $REPRO --patience -1 >/dev/null 2>&1
[ $? -eq 2 ] && ok "reproduce rejects a negative --patience" || ko "reproduce rejects a negative --patience"
# Another weight form is a variant in runs of its own, from the same stage 1,
# and the summary says which weights it used; the table's own form adds no
# suffix.
ce_before=$(stat -c %Y "$T/rd/runs/beauty-sasrec-plain-ce-s1/result.json")
"$BIN" reproduce $RMH --ablation no-crop --weight-form batch >/dev/null \
    && "$BIN" reproduce $RMH --ablation no-crop --weight-form sequence >/dev/null \
    && [ "$(stat -c %Y "$T/rd/runs/beauty-sasrec-plain-ce-s1/result.json")" = "$ce_before" ] \
    && [ -s "$T/rd/runs/beauty-sasrec-rm-hsaocl-no-crop-batch-weights-s1/result.json" ] \
    && [ ! -e "$T/rd/runs/beauty-sasrec-rm-hsaocl-no-crop-sequence-weights-s1" ] \
    && [ "$(grep -c '"ablation": "no-crop", "weights": "batch"' "$T/rd/res.jsonl")" -eq 1 ] \
    && [ "$(grep -c '"ablation": "no-crop", "weights": "sequence"' "$T/rd/res.jsonl")" -eq 2 ] \
    && ok "reproduce --weight-form: a variant of its own over the same stage 1" \
    || ko "reproduce --weight-form: a variant of its own over the same stage 1"
"$BIN" reproduce $RMH --weight-form columns >/dev/null 2>&1
[ $? -eq 2 ] && ok "reproduce rejects an unknown --weight-form" || ko "reproduce rejects an unknown --weight-form"

# Under a preset, BASRec's stage 1 takes the plain recipe (SASRec: dropout
# 0.5, lr 3e-4) and stage 2 the preset's dropout (0.1) and the reference's
# lr (1e-3); an explicit --dropout or --lr sets both stages.
dropout_of() { meta_of "$1" hidden_dropout_prob; }
lr_of() { meta_of "$1" lr; }
"$BIN" train $TRAIN --out "$T/pr" --preset beauty --method basrec --epochs 1 --stage1-epochs 1 >/dev/null \
    && [ "$(dropout_of "$T/pr/stage1/best.safetensors")" = "0.5" ] \
    && [ "$(lr_of "$T/pr/stage1/last.safetensors")" = "0.000300000014" ] \
    && [ "$(dropout_of "$T/pr/best.safetensors")" = "0.100000001" ] \
    && [ "$(lr_of "$T/pr/last.safetensors")" = "0.00100000005" ] \
    && "$BIN" train $TRAIN --out "$T/pr2" --preset beauty --epochs 1 --dropout 0.3 --lr 0.002 >/dev/null \
    && [ "$(dropout_of "$T/pr2/best.safetensors")" = "0.300000012" ] \
    && [ "$(lr_of "$T/pr2/last.safetensors")" = "0.00200000009" ] \
    && ok "preset: plain recipe for stage 1, preset dropout and lr for stage 2" \
    || ko "preset: plain recipe for stage 1, preset dropout and lr for stage 2"
# FMLP-Rec's plain recipe validates from the first epoch.
"$BIN" train $TRAIN --out "$T/fm" --model fmlprec --preset beauty --epochs 1 >/dev/null \
    && [ "$(meta_of "$T/fm/last.safetensors" start_valid)" = 0 ] \
    && "$BIN" train $TRAIN --out "$T/gm" --model gru4rec --preset beauty --epochs 1 >/dev/null \
    && [ "$(meta_of "$T/gm/last.safetensors" start_valid)" = 100 ] \
    && ok "preset: FMLP-Rec validates from epoch 0, GRU4Rec from 100" \
    || ko "preset: FMLP-Rec validates from epoch 0, GRU4Rec from 100"
# FMLP-Rec's BASRec stage 2 gets at least 300 epochs; its stage 1 keeps the
# preset's 200.
"$BIN" train --data "$T/data.txt" --hidden-size 16 --batch-size 64 --max-seq-length 20 --no-progress --threads 2 \
    --out "$T/fb" --model fmlprec --preset beauty --method basrec --start-valid 0 --patience 1 >/dev/null \
    && [ "$(meta_of "$T/fb/last.safetensors" epochs)" = 300 ] \
    && [ "$(meta_of "$T/fb/stage1/last.safetensors" epochs)" = 200 ] \
    && ok "preset: FMLP-Rec's stage 2 runs up to 300 epochs, its stage 1 200" \
    || ko "preset: FMLP-Rec's stage 2 runs up to 300 epochs, its stage 1 200"

# GRU4Rec run over the padding: the option travels with the checkpoint.
"$BIN" train $TRAIN --out "$T/grp" --model gru4rec --run-padding >"$T/grp.json" \
    && "$BIN" eval --checkpoint "$T/grp/best.safetensors" --data "$T/data.txt" >"$T/grp_eval.json" \
    && [ "$(sed 's/.*"test": //; s/}$//' "$T/grp.json")" = "$(sed 's/.*"metrics": //; s/}$//' "$T/grp_eval.json")" ] \
    && ok "gru4rec --run-padding checkpoint evaluates as trained" \
    || ko "gru4rec --run-padding checkpoint evaluates as trained"

# One-command two-stage training: stage 1 trains with stage 2's loss.
"$BIN" train $TRAIN --out "$T/2s" --method basrec --loss ce --stage1-epochs 1 --epochs 1 >/dev/null \
    && head -c 65536 "$T/2s/stage1/last.safetensors" | grep -aq '"loss":"ce"' \
    && head -c 65536 "$T/2s/last.safetensors" | grep -aq '"loss":"ce"' \
    && ok "two-stage training uses the loss in both stages" \
    || ko "two-stage training uses the loss in both stages"

# Bad input: clear message naming the file and line, non-zero exit.
expect_fail "missing data file" "$T/nope.txt" "$BIN" train --data "$T/nope.txt" --out "$T/x"
printf '1 2 3 4\n2 5 x 6\n' >"$T/bad.txt"
expect_fail "non-numeric token" "bad.txt:2" "$BIN" train --data "$T/bad.txt" --out "$T/x"
printf '1 2 3 4\n2 5 6 7\n3 7 8 9\n4 9\n' >"$T/short.txt"
expect_fail "too-short user" "short.txt:4" "$BIN" train --data "$T/short.txt" --out "$T/x"
expect_fail "run-padding on sasrec" "option of gru4rec" "$BIN" train --data "$T/data.txt" --out "$T/x" --run-padding
expect_fail "mix padding encode on gru4rec" "encodes padded slots" "$BIN" train --data "$T/data.txt" --out "$T/x" \
    --model gru4rec --method basrec --mix-pad encode --epochs 1
expect_fail "unknown option" "unknown option" "$BIN" train --data "$T/data.txt" --bogus 1
expect_fail "bad number" "not a number" "$BIN" train --data "$T/data.txt" --lr abc
expect_fail "missing checkpoint" "$T/none.safetensors" "$BIN" eval --checkpoint "$T/none.safetensors" --data "$T/data.txt"
printf 'garbage' >"$T/garbage.safetensors"
expect_fail "corrupt checkpoint" "garbage.safetensors" "$BIN" eval --checkpoint "$T/garbage.safetensors" --data "$T/data.txt"
"$BIN" synth --out "$T/other.txt" --users 300 --items 400 --seed 4
expect_fail "checkpoint/data item mismatch" "items" "$BIN" eval --checkpoint "$T/run/best.safetensors" --data "$T/other.txt"
"$BIN" synth --out "$T/same_size.txt" --users 400 --items 150 --seed 5
expect_fail "checkpoint trained on other data" "other data" "$BIN" eval --checkpoint "$T/run/best.safetensors" --data "$T/same_size.txt"
expect_fail "unknown user" "user 999999" "$BIN" recommend --checkpoint "$T/run/best.safetensors" --data "$T/data.txt" --users 999999
expect_fail "resume without a run" "last.safetensors" "$BIN" train --data "$T/data.txt" --out "$T/empty" --resume
expect_fail "unknown model" "unknown model" "$BIN" train --data "$T/data.txt" --out "$T/x" --model nope
expect_fail "unknown sampler" "unknown --ce-sampler" "$BIN" train --data "$T/data.txt" --out "$T/x" --loss sampled-ce --ce-sampler zipf
expect_fail "unknown weight form" "unknown --weight-form" "$BIN" train --data "$T/data.txt" --out "$T/x" --method basrec --weight-form mean
expect_fail "no negatives" "ce-negatives" "$BIN" train --data "$T/data.txt" --out "$T/x" --loss sampled-ce --ce-negatives 0
"$BIN" --help >/dev/null && "$BIN" train --help | grep -q -- "--hidden-size" && ok "help" || ko "help"

# prepare: a raw CSV log (quoted ids, one bad row on line 2) to a sequence
# file and id maps, then one training epoch on it.
awk 'BEGIN { print "user_id,item_id,timestamp"; print "u0,\"it,0\",oops"
    for (u = 0; u < 120; u++) for (k = 0; k < 8; k++)
        printf "u%d,\"it,%d\",%d\n", u, (u * 7 + k * 13) % 50, 1546300800 + (8 - k) * 60 }' >"$T/log.csv"
if "$BIN" prepare --input "$T/log.csv" --out "$T/prep/seq.txt" >"$T/prep.out" 2>"$T/prep.err" \
    && grep -q "after k-core" "$T/prep.out" && grep -q "line 2" "$T/prep.err" \
    && [ "$(wc -l <"$T/prep/seq.txt.users.tsv")" -eq "$(wc -l <"$T/prep/seq.txt")" ] \
    && grep -q "^[0-9]*$(printf '\t')it,0\$" "$T/prep/seq.txt.items.tsv"; then
    ok "prepare"
else
    ko "prepare ($(cat "$T/prep.out" "$T/prep.err"))"
fi
"$BIN" train --data "$T/prep/seq.txt" --out "$T/prep/run" --epochs 1 --hidden-size 16 --batch-size 64 \
    --max-seq-length 20 --no-progress --threads 2 >/dev/null && ok "train on prepared data" \
    || ko "train on prepared data"
expect_fail "prepare --strict names the bad line" "log.csv:2: 'timestamp' value 'oops'" \
    "$BIN" prepare --input "$T/log.csv" --out "$T/prep/strict.txt" --strict
expect_fail "prepare missing column" "no column 'time'" \
    "$BIN" prepare --input "$T/log.csv" --out "$T/prep/x.txt" --time-col time

# Serving: recommend's ad-hoc histories, basrec serve, plot, the installed
# library (tests/serve_test.sh); its counts join these.
serve_out=$(BUILD="${BUILD:-build}" sh tests/serve_test.sh 2>&1)
printf '%s\n' "$serve_out"
sp=$(printf '%s\n' "$serve_out" | sed -n 's/^serve: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
sf=$(printf '%s\n' "$serve_out" | sed -n 's/^serve: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
pass=$((pass + ${sp:-0}))
fail=$((fail + ${sf:-1}))

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
