"""Run a few decode-attention calls for a profiler (Nsight Compute) to capture.

    ncu --clock-control none -k regex:"_split_kv_kernel|_stream_k_kernel|_reduce_kernel" \
        --section SpeedOfLight --section LaunchStats --section WarpStateStats \
        python benchmarks/decode_profile.py --batch 1 --kv-len 1024

Each schedule runs ``--calls`` times on fresh random inputs (bf16, Hq 32, Hkv 8, D 128, uniform
lengths unless ``--ragged``); the last calls are the ones worth reading (Triton compiles and
autotunes on the first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--kv-len", type=int, default=1024)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--ragged", action="store_true")
    ap.add_argument("--schedules", default="split_kv,stream_k")
    args = ap.parse_args()
    import torch

    import kernels

    if not torch.cuda.is_available():
        print("error: needs a CUDA device", file=sys.stderr)
        return 2
    b, n, hq, hkv, d = args.batch, args.kv_len, 32, 8, 128
    for sched in args.schedules.split(","):
        for _ in range(args.calls):
            q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, hkv, n, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, hkv, n, d, device="cuda", dtype=torch.bfloat16)
            lens = (torch.randint(1, n + 1, (b,), device="cuda", dtype=torch.int32) if args.ragged
                    else torch.full((b,), n, device="cuda", dtype=torch.int32))
            kernels.attention_decode(q, k, v, lens, schedule=sched, validate=False)
        torch.cuda.synchronize()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
