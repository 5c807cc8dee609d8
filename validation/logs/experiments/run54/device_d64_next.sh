#!/usr/bin/env bash
# Prepared, not run yet: the next stream-K round at head_dim 64 (see docs/kernels.md, runs 51-53).
# The one-wave stream-K kernel compiles to 255 registers (triton 3.6); without the peeled first
# piece it needs 210. Variants: no peel, the multi-wave reduction as a programmatic dependent launch,
# and both. The 32:8:128 layout checks that the head_dim-128 grid keeps its wins. About 200 s on an H100.
#   bash validation/logs/experiments/run54/device_d64_next.sh "$OUT"
set -u
OUT=${1:?usage: device_d64_next.sh OUT_DIR}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SHAPES="1:1024,1:4096,1:16384,1:65536,2:4096,4:1024,4:4096,4:16384,8:4096,16:1024,16:4096,8:4096:r"
for layout in 16:4:64 32:8:64 32:8:128; do
  tag=${layout//:/_}
  (cd benchmarks && timeout 170 python kernels.py --sections streamk_rounds --out "$OUT/$tag" --layout $layout \
      --shapes "$SHAPES" --variant "nopeel:_STREAM_K_PEEL=False" --variant "pdl:_STREAM_K_PDL=True" \
      --variant "nopeel_pdl:_STREAM_K_PEEL=False,_STREAM_K_PDL=True" > "$OUT/$tag.log" 2>&1)
  echo "layout $layout rc=$?"
  rm -f "$OUT/$tag/run.log" "$OUT/$tag/kernels_bench.csv" "$OUT/$tag/kernels_bench.md"
  grep -v "^\[" "$OUT/$tag.log" | cut -c1-330 | tail -17
done
