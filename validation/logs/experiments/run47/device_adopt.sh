#!/usr/bin/env bash
# One device call that decides on stream-k-adopt.patch (one-wave rule at 32 tiles per SM, 3 phantom
# tiles for ragged batches, all programs of a one-wave grid for ragged batches). Run from the
# repository root with the patch applied to the working tree:
#   git apply validation/logs/experiments/run47/stream-k-adopt.patch
#   bash validation/logs/experiments/run47/device_adopt.sh "$OUT"
# Steps (each under its own timeout, about 480 s in all): the phantom GPU check, the full GPU
# check of every decode path, then the 31-shape stream-K rounds with the settings before the patch
# and two other phantom counts as variants. The table printed last is the decision.
set -u
OUT=${1:?usage: device_adopt.sh OUT_DIR}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 90 python validation/logs/experiments/run47/phantom_check.py "$OUT/phantom_check.json" 2>&1 | tail -2
timeout 170 python benchmarks/attention_check.py --out "$OUT" > "$OUT/attention_check.log" 2>&1
echo "attention_check rc=$?"; tail -2 "$OUT/attention_check.log"
(cd benchmarks && timeout 330 python kernels.py --sections streamk_rounds --out "$OUT/bench" \
    --variant "before:_STREAM_K_SMALL_TILES_PER_SM=16,_STREAM_K_PHANTOM=0" \
    --variant "p2:_STREAM_K_PHANTOM=2" --variant "p5:_STREAM_K_PHANTOM=5" > "$OUT/bench.log" 2>&1)
echo "rounds rc=$?"
rm -f "$OUT/bench/run.log"
grep -v "^\[" "$OUT/bench.log" | cut -c1-300 | tail -42
