#!/usr/bin/env bash
# Run 52: stream-K schedules at head_dim 64 (where run 51 found stream-K slower than split-KV in 14
# of 16 and 12 of 15 shapes), as variants in the alternating rounds: two programs per SM also for
# small caches (reduction kernel), the same with the merge in the kernel, and never one per SM.
#   bash validation/logs/experiments/run52/device_d64_variants.sh "$OUT"
set -u
OUT=${1:?usage: device_d64_variants.sh OUT_DIR}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SHAPES="1:1024,1:4096,1:16384,1:65536,2:1024,2:4096,4:1024,4:4096,4:16384,8:1024,8:4096,16:1024,16:4096,1:4096:r,8:4096:r"
for layout in 16:4:64 32:8:64; do
  tag=${layout//:/_}
  (cd benchmarks && timeout 200 python kernels.py --sections streamk_rounds --out "$OUT/$tag" --layout $layout \
      --shapes "$SHAPES" --variant "small2:_STREAM_K_SMALL_PROGRAMS_PER_SM=2" \
      --variant "small2fused:_STREAM_K_SMALL_PROGRAMS_PER_SM=2,_STREAM_K_FUSED=True" \
      --variant "nosmall:_STREAM_K_SMALL_TILES_PER_SM=0" > "$OUT/$tag.log" 2>&1)
  echo "layout $layout rc=$?"
  rm -f "$OUT/$tag/run.log" "$OUT/$tag/kernels_bench.csv" "$OUT/$tag/kernels_bench.md"
  grep -v "^\[" "$OUT/$tag.log" | cut -c1-330 | tail -20
done
