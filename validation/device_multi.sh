#!/bin/bash
# Multi-GPU measurements of issue 28 on whatever GPUs this host has (validation/README.md, "Multi-GPU"):
#   coll  collectives three ways (eager single, eager back-to-back, CUDA graph) at world 2, 4, 8 <= GPUs;
#   e2e   whole models over TP 2/4/8, PP 2 and EP 2/4 (validation.e2e_parallel), compared with analyze;
#   ring  Ring-attention steps and collectives at world 4 (validation/device_h200x4.sh), when >= 4 GPUs.
# Usage: OUT=DIR bash validation/device_multi.sh [coll,e2e,ring]   (default: all three)
# Each part runs under its own hard timeout; results are tarred to $OUT/multi_results.tar.gz.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to the results folder}
PARTS=${1:-coll,e2e,ring}
PY=${PYTHON:-python3}
R="$OUT/multi"
mkdir -p "$R"
t0=$(date +%s)
N=$($PY -c 'import torch; print(torch.cuda.device_count())')
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv | tee "$R/gpus.csv"
nvidia-smi topo -m > "$R/topo.txt" 2>&1
$PY -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "nccl", torch.cuda.nccl.version(), "gpus", torch.cuda.device_count())' | tee "$R/versions.txt"
if [ "$N" -lt 2 ]; then echo "only $N GPU(s): nothing to measure"; exit 2; fi
case ",$PARTS," in *,coll,*)
  timeout ${COLL_TIMEOUT_S:-560} $PY -m validation.collectives_launch measure --out "$R/coll" \
    --budget-s ${COLL_BUDGET_S:-520} ${COLL_MAX_BYTES:+--max-bytes $COLL_MAX_BYTES} > "$R/coll.log" 2>&1
  echo "coll done: rc=$? at $(( $(date +%s) - t0 )) s"; tail -5 "$R/coll.log"
  $PY -m validation.collectives_launch fit "$R"/coll/collectives_launch.jsonl > "$R/coll_fit.json" 2> "$R/coll_fit.err"
  echo "coll fit: rc=$?";;
esac
case ",$PARTS," in *,e2e,*)
  timeout ${E2E_TIMEOUT_S:-570} $PY -m validation.e2e_parallel --out "$R/e2e" --budget-s ${E2E_BUDGET_S:-500} \
    ${E2E_QUICK:+--quick} ${E2E_ONLY:+--only $E2E_ONLY} > "$R/e2e.log" 2>&1
  echo "e2e done: rc=$? at $(( $(date +%s) - t0 )) s"; tail -40 "$R/e2e.log"
  $PY -m validation.e2e report "$R"/e2e/e2e_parallel_*.jsonl --md "$R/e2e_score.md" || true;;
esac
case ",$PARTS," in *,ring,*)
  if [ "$N" -ge 4 ]; then
    timeout ${RING_TIMEOUT_S:-420} bash validation/device_h200x4.sh "$R/ring" > "$R/ring.log" 2>&1
    echo "ring done: rc=$? at $(( $(date +%s) - t0 )) s"; tail -20 "$R/ring.log"
  else
    echo "ring skipped: needs 4 GPUs, this host has $N"
  fi;;
esac
tar -czf "$OUT/multi_results.tar.gz" -C "$OUT" multi && rm -rf "$R"
echo "all done at $(( $(date +%s) - t0 )) s: $OUT/multi_results.tar.gz"
