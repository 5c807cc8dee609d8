#!/usr/bin/env bash
# Stream-K against split-KV at head_dim 64 in the alternating rounds (the grid's 32:8:128 layout is
# runs 48-50): 16/4 and 32/8 heads, 16 shapes each, with 64-key stream-K tiles as a variant.
#   bash validation/logs/experiments/run51/device_d64.sh "$OUT"
set -u
OUT=${1:?usage: device_d64.sh OUT_DIR}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SHAPES="1:1024,1:4096,1:16384,1:65536,2:1024,2:4096,4:1024,4:4096,4:16384,8:1024,8:4096,16:1024,16:4096,32:1024,1:4096:r,8:4096:r"
for layout in 16:4:64 32:8:64; do
  tag=${layout//:/_}
  (cd benchmarks && timeout 220 python kernels.py --sections streamk_rounds --out "$OUT/$tag" --layout $layout \
      --shapes "$SHAPES" --variant "k64:_STREAM_K_BLOCK_N_SMALL_HEAD=64" > "$OUT/$tag.log" 2>&1)
  echo "layout $layout rc=$?"
  rm -f "$OUT/$tag/run.log" "$OUT/$tag/kernels_bench.csv" "$OUT/$tag/kernels_bench.md"
  grep -v "^\[" "$OUT/$tag.log" | cut -c1-200 | tail -20
done
