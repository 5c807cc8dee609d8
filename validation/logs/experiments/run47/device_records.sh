#!/usr/bin/env bash
# After stream-k-adopt.patch is adopted: one device call per GPU that measures the stream-K decode
# records again (main and coverage sets), checks every decode path on the GPU, and runs the
# 31-shape rounds, with the settings before the patch as a variant (about 420 s on a fresh H200).
#   bash validation/logs/experiments/run47/device_records.sh "$OUT"
# Then, here: python -m validation.records replace validation/data/<gpu>.jsonl \
#   OUT/rec/<gpu>.jsonl OUT/rec_extra/<gpu>.jsonl --impls stream_k ; python -m validation.fit --gpu <gpu>
set -u
OUT=${1:?usage: device_records.sh OUT_DIR}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 120 python -m validation.run --out "$OUT/rec" --quick --sections attention --impls stream_k > /dev/null 2>&1
echo "records rc=$?"
timeout 120 python -m validation.run --out "$OUT/rec_extra" --quick --extra --sections attention --impls stream_k > /dev/null 2>&1
echo "extra records rc=$?"
cat "$OUT/rec/run.log" "$OUT/rec_extra/run.log" > "$OUT/records.run.log" 2>/dev/null
rm -f "$OUT/rec/run.log" "$OUT/rec_extra/run.log"
wc -l "$OUT"/rec*/*.jsonl
timeout 170 python benchmarks/attention_check.py --out "$OUT" > "$OUT/attention_check.log" 2>&1
echo "attention_check rc=$?"; tail -2 "$OUT/attention_check.log"
(cd benchmarks && timeout 200 python kernels.py --sections streamk_rounds --out "$OUT/bench" \
    --variant "before:_STREAM_K_SMALL_TILES_PER_SM=16,_STREAM_K_PHANTOM=0" > "$OUT/bench.log" 2>&1)
echo "rounds rc=$?"
rm -f "$OUT/bench/run.log" "$OUT/bench/kernels_bench.csv"
grep -v "^\[" "$OUT/bench.log" | cut -c1-200 | tail -40
