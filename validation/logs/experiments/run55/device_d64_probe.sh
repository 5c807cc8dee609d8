#!/usr/bin/env bash
# Run 55 (experiment): where stream-K loses at head_dim 64 (H100).
# 1. Nsight Compute (full set) of split-KV and stream-K (default, and without the peeled first
#    piece) at 16/4 heads, head_dim 64, B=1 with 1K and 64K tokens.
# 2. The alternating rounds at 16:4:64 and 32:8:64 with run 54's variants (no peel; no peel with
#    the reduction as a dependent launch) and split-KV's own partition run by stream-K (64-key tiles,
#    two programs per SM, dependent reduction launch).
#   bash validation/logs/experiments/run55/device_d64_probe.sh "$OUT"
set -u
OUT=${1:?usage: device_d64_probe.sh OUT_DIR}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)"
K='regex:_split_kv_kernel|_stream_k_kernel|_reduce_kernel'
for L in 1024 65536; do
  for cfg in "split_kv:" "stream_k:" "stream_k:_STREAM_K_PEEL=False"; do
    sched=${cfg%%:*}; var=${cfg#*:}; tag="L${L}_${sched}${var:+_nopeel}"
    timeout 120 ncu --clock-control none -k "$K" --launch-skip 2 --set full \
      python3 benchmarks/decode_profile.py --batch 1 --kv-len $L --layout 16:4:64 --calls 3 \
      --schedules $sched ${var:+--variant $var} > "$OUT/ncu_$tag.txt" 2>&1
    echo "== ncu $tag rc=$?"
    grep -E "^  _|Duration  |DRAM Throughput|Registers Per|Achieved Occupancy|Executed Ipc E|Executed Instructions  |Warp Cycles Per Issued|L2 Hit Rate  |Block Size|Grid Size" "$OUT/ncu_$tag.txt" | tail -24
  done
done
(cd "$OUT" && tar czf ncu.tgz ncu_*.txt && rm -f ncu_*.txt)
SHAPES="1:1024,1:4096,1:16384,1:65536,2:4096,4:1024,4:4096,4:16384,8:4096,16:1024,16:4096,8:4096:r"
for layout in 16:4:64 32:8:64; do
  tag=${layout//:/_}
  (cd benchmarks && timeout 150 python3 kernels.py --sections streamk_rounds --out "$OUT/$tag" --layout $layout \
      --shapes "$SHAPES" --variant "nopeel:_STREAM_K_PEEL=False" \
      --variant "nopeel_pdl:_STREAM_K_PEEL=False,_STREAM_K_PDL=True" \
      --variant "k64p2:_STREAM_K_BLOCK_N_SMALL_HEAD=64,_STREAM_K_SMALL_TILES_PER_SM=0,_STREAM_K_PDL=True" \
      > "$OUT/$tag.log" 2>&1)
  echo "layout $layout rc=$?"
  rm -f "$OUT/$tag/run.log" "$OUT/$tag/kernels_bench.csv" "$OUT/$tag/kernels_bench.md"
  grep -v "^\[" "$OUT/$tag.log" | cut -c1-330 | tail -17
done
