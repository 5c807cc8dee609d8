"""Per-kernel GPU time of one whole-model prefill (or decode step) as the whole-model validation runs it, on a GPU.

Usage: ``python benchmarks/prefill_kernels.py [--out DIR] [--cases phi-3-mini-4k:32,llama-3.2-3b:28] [--context 4096]
[--decode-batch N]``.

``--decode-batch N``: one decode step instead, ``N`` sequences of one new token each over a cache of
``--context`` tokens (eager; the whole-model validation replays it as a CUDA graph, which removes the
launch gaps but not the kernels' own times).

Each case is ``MODEL:LAYERS``: a model of ``python -m perfmodel.validation.e2e`` (its config, random weights) cut to
``LAYERS`` layers, prefilling ``--context`` tokens at batch 1 with the default SDPA and our fused RoPE + KV-append
kernel (``perfmodel.validation.e2e_model``). After three warm-up calls, one call is timed with CUDA events and
one is read with ``torch.profiler``; the kernels' GPU times are summed by name. Prints the largest ones per
model (the time per layer is the sum over the model's calls divided by its layers) and writes
``prefill_kernels.json`` under ``--out`` (default ``$OUT`` or the current folder) with the GPU, driver and
library versions and the date.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._host import gpu_env, no_cuda  # noqa: E402

DEFAULT_CASES = "phi-3-mini-4k:32,llama-3.2-3b:28,qwen2.5-14b:24"


def parse_cases(text: str) -> list[tuple[str, int]]:
    """``MODEL:LAYERS`` items, comma-separated; ValueError naming the bad item."""
    out = []
    for item in text.split(","):
        name, _, layers = item.strip().partition(":")
        try:
            n = int(layers)
        except ValueError:
            raise ValueError(f"case {item!r} is not MODEL:LAYERS with LAYERS an integer") from None
        if not name or n < 1:
            raise ValueError(f"case {item!r}: a model name and LAYERS >= 1")
        out.append((name, n))
    return out


def _profile(fn) -> dict[str, list[float]]:
    """Calls and summed GPU seconds per kernel name of one call of ``fn``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    agg: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for e in p.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            agg[e.name][0] += 1
            agg[e.name][1] += e.device_time_total / 1e6
    return agg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--cases", default=DEFAULT_CASES, metavar="MODEL:LAYERS[,...]")
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--decode-batch", type=int, default=0, metavar="N", help="one decode step at batch N")
    args = ap.parse_args(argv)
    from perfmodel.validation.e2e import UsageError, resolve_model, with_layers

    try:
        cases = parse_cases(args.cases)
        if args.context < 1:
            raise ValueError(f"--context {args.context} must be >= 1")
        if args.decode_batch < 0:
            raise ValueError(f"--decode-batch {args.decode_batch} must be >= 1 (0: prefill)")
        specs = [(name, layers, with_layers(resolve_model(name)[0], layers)) for name, layers in cases]
    except (ValueError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    if no_cuda():
        return 2
    from perfmodel.validation.e2e_model import E2EModel

    dev, ctx, res = torch.device("cuda"), args.context, {}
    for name, layers, spec in specs:
        model = E2EModel(spec, dev)
        batch = args.decode_batch or 1
        if args.decode_batch:
            cache = model.new_cache(batch, ctx + 1, fill=True)
            ids = torch.randint(0, spec.vocab, (batch, 1), device=dev)

            def call(model=model, cache=cache, ids=ids):
                return model(ids, cache, ctx, ctx + 1)
        else:
            cache = model.new_cache(1, ctx, fill=False)
            ids = torch.randint(0, spec.vocab, (1, ctx), device=dev)

            def call(model=model, cache=cache, ids=ids):
                return model(ids, cache, 0, ctx)

        for _ in range(3):
            call()
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        call()
        b.record()
        b.synchronize()
        agg = _profile(call)
        kernels = sorted(([k, int(v[0]), v[1]] for k, v in agg.items()), key=lambda x: -x[2])
        res[name] = {
            "layers": layers,
            "context": ctx,
            "batch": batch,
            "phase": "decode" if args.decode_batch else "prefill",
            "wall_s": a.elapsed_time(b) / 1e3,
            "kernels": kernels,
        }
        what = f"decode step at batch {batch} over {ctx} tokens" if args.decode_batch else f"{ctx} tokens"
        print(f"{name}, {layers} layers, {what}: {res[name]['wall_s'] * 1e3:.2f} ms")
        for k, n, t in kernels[:10]:
            print(f"  {t * 1e3:8.3f} ms x{n:4d} ({t / layers * 1e6:7.1f} us a layer)  {k[:90]}")
        del model, cache
        torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("decode_kernels.json" if args.decode_batch else "prefill_kernels.json")).write_text(
        json.dumps({**gpu_env(), "models": res}, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
