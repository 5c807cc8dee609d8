"""Run a few decode-attention calls for a profiler (Nsight Compute) to capture.

    ncu --clock-control none -k regex:"_split_kv_kernel|_stream_k_kernel|_reduce_kernel" \
        --section SpeedOfLight --section LaunchStats --section WarpStateStats \
        python benchmarks/decode_profile.py --batch 1 --kv-len 1024 --layout 16:4:64

Each schedule runs ``--calls`` times on fresh random inputs (bf16, the head layout of ``--layout``,
32 query over 8 KV heads at head_dim 128 by default, uniform lengths unless ``--ragged``); the last
calls are the ones worth reading (Triton compiles on the first). ``--variant
NAME=VALUE[,NAME=VALUE]`` runs them with other ``perfmodel.kernels.DecodeConfig`` settings
(the syntax of ``benchmarks/kernels.py --variant`` without its label).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bench():
    # the parsers of benchmarks/kernels.py (a script, not a package)
    spec = importlib.util.spec_from_file_location("kernels_bench", ROOT / "benchmarks" / "kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--kv-len", type=int, default=1024)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--ragged", action="store_true")
    ap.add_argument("--schedules", default="split_kv,stream_k")
    ap.add_argument("--layout", default="32:8:128", metavar="HQ:HKV:D")
    ap.add_argument("--variant", default="", metavar="NAME=VALUE[,NAME=VALUE]")
    args = ap.parse_args(argv)
    bench = _bench()
    try:
        hq, hkv, d = bench._parse_layout(args.layout)
        flags = bench._parse_variant("v:" + args.variant)[1] if args.variant else {}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    from perfmodel import kernels

    if not torch.cuda.is_available():
        print("error: needs a CUDA device", file=sys.stderr)
        return 2
    config = kernels.DecodeConfig(**flags)
    b, n = args.batch, args.kv_len
    for sched in args.schedules.split(","):
        for _ in range(args.calls):
            q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, hkv, n, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, hkv, n, d, device="cuda", dtype=torch.bfloat16)
            lens = (
                torch.randint(1, n + 1, (b,), device="cuda", dtype=torch.int32)
                if args.ragged
                else torch.full((b,), n, device="cuda", dtype=torch.int32)
            )
            kernels.attention_decode(q, k, v, lens, schedule=sched, validate=False, config=config)
        torch.cuda.synchronize()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
