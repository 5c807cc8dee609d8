"""Time the whole-model runner's MoE block kernel by kernel on a CUDA GPU.

For each model and shape, one MoE layer of :class:`perfmodel.validation.e2e_model.E2EModel` runs on
random activations: decode shapes as CUDA-graph replays, prefill shapes eagerly (as the whole-model
runner times them).  The block's time is the median of CUDA events over many calls; the kernels
that ran and their device time per call come from ``torch.profiler``.  Prints one table per shape
and writes ``DIR/moe_block.json`` (with GPU, driver, library versions and date)::

    python benchmarks/moe_block.py --out DIR [--models qwen3-30b-a3b,mixtral-8x7b]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from perfmodel.validation.e2e import resolve_model, with_layers  # noqa: E402
from perfmodel.validation.e2e_model import E2EModel  # noqa: E402

SHAPES = (("decode", 1), ("decode", 16), ("decode", 256), ("prefill", 4096), ("prefill", 16384))


def _driver() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _events_s(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def measure(model: E2EModel, tokens: int, graph: bool, calls: int) -> dict:
    lay = next(lay for lay in model.layers if "experts" in lay)
    hn = torch.randn(tokens, model.spec.hidden, device="cuda", dtype=model.dtype)
    fn = lambda: model._moe(hn, lay)  # noqa: E731
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        run = g.replay
    else:
        run = fn
    for _ in range(5):
        run()
    t = _events_s(run, calls)
    prof_calls = 10
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(prof_calls):
            run()
        torch.cuda.synchronize()
    kernels = {}
    for ev in prof.key_averages():
        dev = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
        if dev > 0 and ev.key not in ("", "cudaGraphLaunch"):
            kernels[ev.key] = {"us_per_call": dev / prof_calls, "count_per_call": ev.count / prof_calls}
    return {"measured_s": t, "kernels": kernels}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", default="qwen3-30b-a3b,mixtral-8x7b")
    p.add_argument("--calls", type=int, default=50)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "driver": _driver(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.date.today().isoformat(),
    }
    rows = []
    for name in a.models.split(","):
        spec = with_layers(resolve_model(name)[0], 1)
        model = E2EModel(spec, "cuda")
        for phase, n in SHAPES:
            r = measure(model, n, graph=phase == "decode", calls=a.calls if phase == "decode" else 20)
            rows.append(
                {
                    "model": name,
                    "phase": phase,
                    "tokens": n,
                    "moe_path": model.moe_path,
                    "launch": "graph" if phase == "decode" else "eager",
                    **r,
                    **meta,
                }
            )
            ks = sorted(r["kernels"].items(), key=lambda kv: -kv[1]["us_per_call"])
            total = sum(v["us_per_call"] for _, v in ks)
            print(
                f"== {name} {phase} tokens={n}: {r['measured_s'] * 1e6:.1f} us per call (events); "
                f"kernels sum {total:.1f} us, {sum(v['count_per_call'] for _, v in ks):.0f} kernels"
            )
            for k, v in ks:
                print(f"   {v['us_per_call']:9.1f} us x{v['count_per_call']:.0f}  {k[:110]}")
        del model
        torch.cuda.empty_cache()
    (a.out / "moe_block.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
