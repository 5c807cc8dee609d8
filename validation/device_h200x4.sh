#!/bin/bash
# One call on nvidia-h200-x4 (validation/README.md, "Collectives at world 4"):
#   1. collectives (+ send/recv ring, + Ring-attention steps) among 4 GPUs, 64 KiB .. 1 GiB per rank;
#   2. the same collectives among GPUs 0 and 1 of that host, while GPU 3 measures the non-causal
#      prefill attention set (python -m perfmodel.validation.run --noncausal) on its own.
# Usage: bash validation/device_h200x4.sh RESULTS_DIR   (each launch under its own hard timeout)
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
R=${1:?results dir}
PY=${PYTHON:-python3}
mkdir -p "$R/w4" "$R/w2" "$R/attn"
t0=$(date +%s)
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
$PY -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__, "gpus", torch.cuda.device_count())'
COLLECTIVES_COLL_BUDGET_S=${W4_COLL_S:-120} COLLECTIVES_P2P_BUDGET_S=${W4_P2P_S:-45} COLLECTIVES_RING_BUDGET_S=${W4_RING_S:-60} \
  timeout ${W4_TIMEOUT_S:-240} $PY -m validation.collectives measure --out "$R/w4" --nproc 4 --parts coll,p2p,ring \
  --min-bytes 65536 ${MAX_BYTES:+--max-bytes $MAX_BYTES}
echo "world 4 done: rc=$? at $(( $(date +%s) - t0 )) s"
( CUDA_VISIBLE_DEVICES=${ATTN_GPU:-3} timeout ${ATTN_TIMEOUT_S:-150} $PY -m validation.run --out "$R/attn" --noncausal \
    --budget-s ${ATTN_BUDGET_S:-110} --name h200-noncausal ${ATTN_DRY:+--dry-run} > "$R/attn/stdout.txt" 2>&1
  echo "attention done: rc=$? at $(( $(date +%s) - t0 )) s" ) &
COLLECTIVES_COLL_BUDGET_S=${W2_COLL_S:-100} COLLECTIVES_P2P_BUDGET_S=${W2_P2P_S:-40} \
  timeout ${W2_TIMEOUT_S:-150} $PY -m validation.collectives measure --out "$R/w2" --nproc 2 --parts coll,p2p \
  --min-bytes 65536 ${MAX_BYTES:+--max-bytes $MAX_BYTES}
echo "world 2 done: rc=$? at $(( $(date +%s) - t0 )) s"
wait
tail -12 "$R/attn/stdout.txt"
echo "all done at $(( $(date +%s) - t0 )) s"
