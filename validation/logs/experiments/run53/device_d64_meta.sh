#!/usr/bin/env bash
# Run 53 (experiment, not adopted): stream-K's num_warps and num_stages at head_dim 64, as variants
# in the alternating rounds, with stream-k-d64-warps-stages.patch applied in the device's copy only.
#   bash validation/logs/experiments/run53/device_d64_meta.sh "$OUT"
set -u
OUT=${1:?usage: device_d64_meta.sh OUT_DIR}
mkdir -p "$OUT"
git apply validation/logs/experiments/run53/stream-k-d64-warps-stages.patch || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SHAPES="1:1024,1:4096,1:16384,1:65536,2:4096,4:1024,4:4096,4:16384,8:4096,16:1024,16:4096,8:4096:r"
for layout in 16:4:64 32:8:64; do
  tag=${layout//:/_}
  (cd benchmarks && timeout 150 python kernels.py --sections streamk_rounds --out "$OUT/$tag" --layout $layout \
      --shapes "$SHAPES" --variant "w8:_STREAM_K_SMALL_HEAD_WARPS=8" --variant "s2:_STREAM_K_SMALL_HEAD_STAGES=2" \
      --variant "s4:_STREAM_K_SMALL_HEAD_STAGES=4" > "$OUT/$tag.log" 2>&1)
  echo "layout $layout rc=$?"
  rm -f "$OUT/$tag/run.log" "$OUT/$tag/kernels_bench.csv" "$OUT/$tag/kernels_bench.md"
  grep -v "^\[" "$OUT/$tag.log" | cut -c1-330 | tail -17
done
