#!/usr/bin/env bash
# Run 56 (experiment): per-program timestamps of split-KV and stream-K (stamps.patch, applied in the
# device's copy only), then the head_dim-64 rounds with larger fused-merge loads and the merge's
# next load in flight (merge-prefetch.patch, device's copy only) as variants.
#   bash validation/logs/experiments/run56/device_stamps.sh "$OUT"
set -u
OUT=${1:?usage: device_stamps.sh OUT_DIR}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
git apply validation/logs/experiments/run56/stamps.patch || exit 1
timeout 240 python3 validation/logs/experiments/run56/decode_stamps.py "$OUT" > "$OUT/stamps.log" 2>&1
echo "stamps rc=$?"
grep -v "^{" "$OUT/stamps.log" | tail -30
git checkout kernels/
git apply validation/logs/experiments/run56/merge-prefetch.patch || exit 1
SHAPES="1:1024,1:4096,1:16384,1:65536,2:4096,4:1024,4:4096,4:16384,8:4096,16:1024,16:4096,8:4096:r"
for layout in 16:4:64; do
  tag=${layout//:/_}
  (cd benchmarks && timeout 150 python3 kernels.py --sections streamk_rounds --out "$OUT/$tag" --layout $layout \
      --shapes "$SHAPES" --variant "rows128:_FUSED_MERGE_ROWS=128" --variant "rows256:_FUSED_MERGE_ROWS=256" \
      --variant "k64:_STREAM_K_BLOCK_N_SMALL_HEAD=64" --variant "pf:_FUSED_MERGE_PREFETCH=True" \
      --variant "pf128:_FUSED_MERGE_PREFETCH=True,_FUSED_MERGE_ROWS=128" > "$OUT/$tag.log" 2>&1)
  echo "layout $layout rc=$?"
  rm -f "$OUT/$tag/run.log" "$OUT/$tag/kernels_bench.csv" "$OUT/$tag/kernels_bench.md"
  grep -v "^\[" "$OUT/$tag.log" | cut -c1-330 | tail -17
done
