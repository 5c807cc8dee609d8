"""Time ``perfmodel.sweep`` on 1,000,000 points and print the rate.

Usage: ``python benchmarks/sweep.py [--model yi-34b] [--gpu a100-sxm-80gb] [--knobs]``.
The points are 1000 context lengths x 100 batch sizes x 10 output lengths at
one TP degree; ``--knobs`` adds fp8 KV, half the tokens kept and block-sparse
attention at density 0.5 to every point.  Prints what it measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from perfmodel.knobs import Knobs  # noqa: E402
from perfmodel.sweep import sweep  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yi-34b")
    p.add_argument("--gpu", default="a100-sxm-80gb")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--knobs", action="store_true", help="evaluate with fp8 KV, keep ratio 0.5, density 0.5")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    ctx = np.arange(1, 1001) * 1000
    batch = np.arange(1, 101)
    out = np.arange(1, 11) * 100
    knobs = Knobs(kv_dtype="fp8", kv_keep_ratio=0.5, attention_density=0.5) if args.knobs else None
    best = float("inf")
    n = 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        df = sweep(args.model, args.gpu, context_len=ctx, batch=batch, tp=args.tp, output_tokens=out, knobs=knobs)
        best = min(best, time.perf_counter() - t0)
        n = len(df)
    print(f"model={args.model} gpu={args.gpu} tp={args.tp} knobs={'on' if knobs else 'off'} points={n:,}")
    print(f"best of {args.repeat}: {best:.3f} s -> {n / best:,.0f} points/s")
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
