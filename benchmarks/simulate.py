"""Simulator speed: the issue's workload (Llama-3-8B on one H100, 2K prompts, 128 outputs, 40 req/s).

Prints wall seconds for building the cost tables and for the simulation, the requests and iterations per
second, and the simulated metrics, with the machine it ran on.  Usage::

    python benchmarks/simulate.py [--requests 100000] [--rate 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from perfmodel.serving import Deployment, LengthDist, Workload, build_timer, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=40.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kv-policy", default="swap")
    args = ap.parse_args()
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_policy=args.kv_policy)
    w = Workload(args.requests, args.rate, LengthDist.parse(2048), LengthDist.parse(128), seed=0)
    t0 = time.perf_counter()
    reqs = w.generate()
    t1 = time.perf_counter()
    timer = build_timer(dep, 2048 + 128)
    t2 = time.perf_counter()
    walls = []
    for _ in range(args.repeat):
        s = time.perf_counter()
        res = simulate(dep, reqs, record_timeline=False, timer=timer)
        walls.append(time.perf_counter() - s)
    m = res.summary()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"workload: {args.requests} requests, 2048 prompt, 128 output, {args.rate} req/s, {dep.describe()}")
    print(f"generate requests: {t1 - t0:.3f} s   cost tables: {t2 - t1:.3f} s")
    print(
        f"simulate: best {min(walls):.2f} s, median {np.median(walls):.2f} s of {args.repeat} "
        f"({res.iterations:,} iterations; {args.requests / min(walls):,.0f} requests/s)"
    )
    print(
        f"simulated: makespan {m['makespan_s']:.1f} s, throughput {m['throughput_tokens_per_s']:.1f} tok/s, "
        f"TTFT p50 {m['ttft_s']['p50']:.2f} s, TPOT p50 {m['tpot_s']['p50'] * 1e3:.1f} ms, "
        f"peak concurrency {m['peak_concurrency']}, preemptions {m['preemptions']}"
    )


if __name__ == "__main__":
    main()
