"""Time ``perfmodel.sweep`` beside a plain-numpy roofline over the same grid, and the start-up of the CLI.

Usage: ``python benchmarks/sweep.py [--model yi-34b] [--gpu a100-sxm-80gb] [--sizes 1e5,1e6,1e7] [--knobs]``.

Prints, measured in this run:

- the one-GPU sweep at each size (context x 100 batch sizes x 10 output lengths), best of ``--repeat``,
  beside a plain-numpy roofline that computes the same columns point by point over the flattened grid
  (weights, KV, prefill, decode step, decode, concurrency, swap, throughput, bounds, fits), and the
  peak memory the sweep allocates (tracemalloc, a separate run) over the bytes of its frame, and the share
  of the points that fit (the sweep prices the decode only where some point of a context fits);
- sweeps on multi-GPU layouts (pp, sp ring/Ulysses/hybrid, ep, a topology) at 100,000 points;
- ``import perfmodel``, the first use of ``perfmodel.analyze`` (which loads numpy and the model's modules) and
  ``perfmodel analyze`` (the default scenario) in fresh interpreters, best of 5, with the bytecode cached (as
  installed) and as the environment runs them.

The targets: the sweep within 2x of the roofline with peak memory under 2x its frame; layout sweeps at
100,000 points/s or more; ``import perfmodel`` under 0.15 s; ``perfmodel analyze`` under 0.25 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from _host import cpu_model  # noqa: E402  (this folder, on the path when run as a script)

N_BATCH, N_OUT = 100, 10


def grid(points: int):
    """Contexts x 100 batch sizes x 10 output lengths, ``points`` in all."""
    n_ctx = max(1, int(points) // (N_BATCH * N_OUT))
    return np.arange(1, n_ctx + 1) * 1000, np.arange(1, N_BATCH + 1), np.arange(1, N_OUT + 1) * 100


def plain_roofline(model: str, gpu: str, ctx, batch, out):
    """The same columns from one plain roofline per point: the full grid flattened, no factoring."""
    import pandas as pd

    from perfmodel.hw import Dtype, load_gpu
    from perfmodel.models import load_model

    m, g = load_model(model), load_gpu(gpu)
    c, b, o = (a.astype(np.float64).ravel() for a in np.meshgrid(ctx, batch, out, indexing="ij"))
    n = c.size
    wb = float(m.weight_bytes("bf16"))
    params = wb / 2
    kv_tok = float(m.kv_bytes_per_token("bf16"))
    peak = g.flops_for(Dtype.BF16)
    bw, pcie = g.hbm_bytes_per_s, g.pcie_bytes_per_s_per_direction
    attn = 4.0 * m.num_layers * m.q_heads * m.head_dim

    def phase(tokens, keys):
        fl = 2.0 * params * tokens * b + attn * tokens * keys * b
        by = wb + kv_tok * keys * b
        comp, mem = fl / peak, by / bw
        return np.maximum(comp, mem), np.where(comp >= mem, 0, 1).astype(np.int8)

    pre, pre_b = phase(c, c / 2)
    step, step_b = phase(1.0, c)
    mean, _ = phase(1.0, c + (o + 1) / 2)
    dec = mean * o
    tokens = c + o
    conc = np.floor((g.hbm_usable_bytes - wb) / (kv_tok * tokens))
    swap = 2 * kv_tok * tokens / pcie
    fits = conc >= b
    nan = np.where(fits, 1.0, np.nan)
    total = pre + dec
    cats = ["compute", "hbm_bandwidth"]
    const = lambda s: pd.Categorical.from_codes(np.zeros(n, np.int8), [s])  # noqa: E731
    return pd.DataFrame(
        {
            "model": const(m.name),
            "gpu": const(g.name),
            "tp": 1,
            "mode": const("calibrated"),
            "provenance": const("roofline"),
            "context_len": c.astype(np.int64),
            "output_tokens": o.astype(np.int64),
            "batch": b.astype(np.int64),
            "weight_bytes": int(wb),
            "kv_bytes_per_token": int(kv_tok),
            "kv_cache_bytes": np.round(kv_tok * tokens * b).astype(np.int64),
            "prefill_s": pre * nan,
            "prefill_s_low": 0.9 * pre * nan,
            "prefill_s_high": 1.1 * pre * nan,
            "decode_s_per_token": step * nan,
            "decode_s_per_token_low": 0.9 * step * nan,
            "decode_s_per_token_high": 1.1 * step * nan,
            "decode_s": dec * nan,
            "decode_s_low": 0.9 * dec * nan,
            "decode_s_high": 1.1 * dec * nan,
            "max_concurrency": conc.astype(np.int64),
            "context_switch_s": swap * nan,
            "context_switch_duplex_s": swap / 2 * nan,
            "session_throughput_tokens_per_s": b * o / total * nan,
            "prefill_bound": pd.Categorical.from_codes(pre_b, cats),
            "decode_bound": pd.Categorical.from_codes(step_b, cats),
            "fits": fits,
        }
    )


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def fresh_s(code: str, repeat: int = 5, pycache: str | None = None) -> float:
    """Best wall time of ``python -c code`` in a fresh interpreter, seconds; with ``pycache``, the modules'
    bytecode is cached there (as an installed package has it; the first run writes it), else as the
    environment says (``PYTHONDONTWRITEBYTECODE`` compiles every module on every start)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, capture_output=True)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yi-34b")
    p.add_argument("--gpu", default="a100-sxm-80gb")
    p.add_argument("--sizes", default="1e5,1e6,1e7", help="one-GPU sweep sizes, points")
    p.add_argument("--knobs", action="store_true", help="evaluate with fp8 KV, keep ratio 0.5, density 0.5")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true", help="no tracemalloc run (it doubles the time)")
    args = p.parse_args()

    from perfmodel.knobs import Knobs
    from perfmodel.sweep import sweep

    knobs = Knobs(kv_dtype="fp8", kv_keep_ratio=0.5, attention_density=0.5) if args.knobs else None
    print(
        f"host: {cpu_model()}, nproc {os.cpu_count()}, python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )
    print(f"one-GPU sweep: model={args.model} gpu={args.gpu} knobs={'on' if knobs else 'off'}")
    print(
        f"{'points':>12} {'sweep s':>9} {'roofline s':>11} {'ratio':>6} {'points/s':>12} "
        f"{'frame MiB':>10} {'peak MiB':>9} {'peak/frame':>10} {'fit':>6}"
    )
    for size in (float(x) for x in args.sizes.split(",")):
        ctx, batch, out = grid(int(size))
        run = lambda: sweep(
            args.model,
            args.gpu,
            context_len=ctx,
            batch=batch,
            output_tokens=out,  # noqa: E731
            knobs=knobs,
            max_bytes=2**40,
        )
        repeat = args.repeat if size <= 1e6 else 1
        t_sweep, df = best_of(run, repeat)
        t_base, _ = best_of(lambda: plain_roofline(args.model, args.gpu, ctx, batch, out), repeat)
        frame = int(df.memory_usage(index=True, deep=False).sum())
        fit = float(df["fits"].mean())
        del df
        peak = None if args.skip_memory else peak_bytes(run)
        peak_s = "-" if peak is None else f"{peak / 2**20:9.0f}"
        ratio_s = "-" if peak is None else f"{peak / frame:10.2f}"
        n = ctx.size * batch.size * out.size
        print(
            f"{n:>12,} {t_sweep:9.3f} {t_base:11.3f} {t_sweep / t_base:6.2f} {n / t_sweep:12,.0f} "
            f"{frame / 2**20:10.0f} {peak_s:>9} {ratio_s:>10} {fit:6.1%}"
        )

    print("layout sweeps: llama-3-8b on h100 (mixtral-8x7b for ep), 100,000 points")
    ctx, batch, out = grid(100_000)
    layouts = [
        dict(pp=2),
        dict(pp=4, tp=2),
        dict(sp=4),
        dict(sp=4, sp_kind="ulysses"),
        dict(sp=8, sp_kind="hybrid"),
        dict(topology="dgx-h100", tp=8),
        dict(model="mixtral-8x7b", ep=2, tp=2),
        dict(model="mixtral-8x7b", ep=8, pp=2),
    ]
    for kw in layouts:
        kw = dict(kw)
        model = kw.pop("model", "llama-3-8b")
        t, df = best_of(
            lambda: sweep(model, "h100", context_len=ctx, batch=batch, output_tokens=out, **kw), args.repeat
        )
        name = " ".join(f"{k}={v}" for k, v in kw.items())
        print(f"  {model:<13} {name:<26} {len(df) / t:12,.0f} points/s")

    import tempfile

    analyze = "import sys; from perfmodel.cli import main; sys.exit(main(['analyze']))"
    first_use = (
        "import perfmodel; perfmodel.analyze"  # the package's names load on first use: numpy, the model
    )
    with tempfile.TemporaryDirectory() as cache:
        for label, pyc in (("bytecode cached", cache), ("as the environment runs it", None)):
            base, imp, use, ana = (
                fresh_s(c, pycache=pyc) for c in ("pass", "import perfmodel", first_use, analyze)
            )
            print(
                f"{label}: empty python {base:.3f} s; import perfmodel {imp:.3f} s wall ({imp - base:.3f} s "
                f"beyond an empty python); import perfmodel and load perfmodel.analyze {use:.3f} s wall; "
                f"perfmodel analyze {ana:.3f} s wall"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
