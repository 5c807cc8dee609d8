"""Burst against sustained rates: how fast compute-bound work runs once the GPU reaches its power cap.

``python benchmarks/sustained.py --out DIR [--seconds 8]`` times, on the GPU it runs on:

- **burst**: after an idle pause, a CUDA graph of a few ms of the op, replayed a few times (the
  rate a short phase such as a decode step sees);
- **sustained**: the op back to back for ``--seconds``, in graph replays of about 50 ms, each
  timed with CUDA events, while a thread samples the SM clock and the power draw through
  ``nvidia-smi`` every 100 ms (the rate a prefill of seconds sees).

Ops: a bf16 GEMM 8192^3 (cuBLAS), causal prefill attention through PyTorch's default SDPA
(32 query / 8 KV heads, head_dim 128, 16K tokens) and, as the memory-bound control, a 1 GiB
device-to-device copy.  It writes ``DIR/sustained_<gpu>.json``: per op the burst rate, the
series of (time, rate, SM clock, power), the settled rate (median after ``--settle-s``), their
ratio, the kernel names that ran and the GPU, driver and library versions.  On a CPU
(``--dry-run``) it runs tiny shapes with the host clock so the script's path can be tested.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


class SmiSampler:
    """Samples (host time, SM clock MHz, power W) from ``nvidia-smi`` every ``period_s`` in a thread."""

    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                clk, pw = (float(x) for x in out.stdout.strip().splitlines()[0].split(","))
                self.samples.append((t, clk, pw))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                pass
            self._stop.wait(self.period_s)

    def __enter__(self) -> "SmiSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def between(self, t0: float, t1: float) -> tuple[float | None, float | None]:
        """Median SM clock and power of the samples taken between host times ``t0`` and ``t1``."""
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if not s:
            return None, None
        return statistics.median(x[1] for x in s), statistics.median(x[2] for x in s)


def _ops(device, dry: bool):
    import torch
    import torch.nn.functional as F

    def rnd(*shape):
        return torch.randn(*shape, device=device, dtype=torch.bfloat16)

    n = 256 if dry else 8192
    a, b, c = rnd(n, n), rnd(n, n) * n**-0.5, torch.empty(n, n, device=device, dtype=torch.bfloat16)
    L = 128 if dry else 16384
    q, k, v = rnd(1, 32, L, 128), rnd(1, 8, L, 128), rnd(1, 8, L, 128)
    nbytes = (1 << 20) if dry else (1 << 30)
    src, dst = (
        torch.empty(nbytes // 2, device=device, dtype=torch.bfloat16),
        torch.empty(nbytes // 2, device=device, dtype=torch.bfloat16),
    )
    attn_flops = 4.0 * 32 * 128 * L * (L + 1) / 2
    return [
        ("gemm_bf16_8192", lambda: torch.matmul(a, b, out=c), 2.0 * n**3, "compute"),
        (
            "attention_prefill_sdpa_16k",
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
            attn_flops,
            "compute",
        ),
        ("memcpy_d2d_1gib", lambda: dst.copy_(src), 2.0 * nbytes, "memory"),
    ]


def _replay_s(g) -> float:
    import torch

    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    g.replay()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) / 1e3


def measure(out: Path, seconds: float, settle_s: float, pause_s: float, dry: bool) -> dict:
    import torch

    from perfmodel.validation.bench import capture_graph, kernel_names
    from perfmodel.validation.records import canonical_gpu
    from perfmodel.validation.run import driver_version

    cuda = torch.cuda.is_available() and not dry
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    result = {
        "gpu": name,
        "gpu_model": canonical_gpu(name),
        "driver": driver_version() if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": _dt.date.today().isoformat(),
        "seconds": seconds,
        "settle_s": settle_s,
        "pause_s": pause_s,
        "dry_run": not cuda,
        "ops": {},
    }
    for op_name, fn, work, kind in _ops(device, not cuda):
        fn()
        if not cuda:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            result["ops"][op_name] = {
                "kind": kind,
                "work": work,
                "burst_rate": work / dt,
                "sustained_rate": work / dt,
                "ratio": 1.0,
                "series": [],
                "kernels": [],
            }
            continue
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        one_s = max(time.perf_counter() - t0, 1e-6)
        burst_calls = max(1, int(5e-3 / one_s))
        seg_calls = max(1, int(0.05 / one_s))
        g_burst, g_seg = capture_graph([fn], burst_calls), capture_graph([fn], seg_calls)
        kern = kernel_names(fn)
        time.sleep(pause_s)  # idle: the clocks recover before the burst
        burst = [burst_calls * work / _replay_s(g_burst) for _ in range(5)]
        series = []
        with SmiSampler() as smi:
            t_start = time.perf_counter()
            while time.perf_counter() - t_start < seconds:
                h0 = time.perf_counter()
                dt = _replay_s(g_seg)
                h1 = time.perf_counter()
                series.append([h1 - t_start, seg_calls * work / dt, h0, h1])
        rows = []
        for t, rate, h0, h1 in series:
            clk, pw = smi.between(h0 - 0.06, h1 + 0.06)
            rows.append({"t_s": round(t, 4), "rate": rate, "sm_clock_mhz": clk, "power_w": pw})
        settled = [r["rate"] for r in rows if r["t_s"] >= settle_s]
        sustained = statistics.median(settled) if settled else statistics.median(r["rate"] for r in rows)
        b = statistics.median(burst)
        clocks = [r["sm_clock_mhz"] for r in rows if r["t_s"] >= settle_s and r["sm_clock_mhz"] is not None]
        powers = [r["power_w"] for r in rows if r["t_s"] >= settle_s and r["power_w"] is not None]
        # when the rate first comes within 2% of the settled rate and stays there for 0.5 s
        reach = None
        for i, r in enumerate(rows):
            later = [x["rate"] for x in rows[i:] if x["t_s"] <= r["t_s"] + 0.5]
            if all(abs(x / sustained - 1) <= 0.02 for x in later):
                reach = r["t_s"]
                break
        result["ops"][op_name] = {
            "kind": kind,
            "work": work,
            "work_unit": "flops" if kind == "compute" else "bytes",
            "burst_rate": b,
            "burst_rates": burst,
            "burst_calls": burst_calls,
            "burst_launch": "cuda_graph",
            "sustained_rate": sustained,
            "ratio": sustained / b,
            "settled_after_s": reach,
            "segment_calls": seg_calls,
            "sustained_launch": "cuda_graph back to back",
            "sm_clock_mhz_settled": statistics.median(clocks) if clocks else None,
            "power_w_settled": statistics.median(powers) if powers else None,
            "series": rows,
            "kernels": kern,
        }
        del g_burst, g_seg
        torch.cuda.synchronize()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sustained_{result['gpu_model'] or 'cpu'}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/sustained.py", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of back-to-back work per op")
    ap.add_argument("--settle-s", type=float, default=3.0, help="the settled rate is the median after this")
    ap.add_argument("--pause-s", type=float, default=3.0, help="idle seconds before each burst")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    a = ap.parse_args(argv)
    if a.seconds <= 0 or a.settle_s < 0 or a.pause_s < 0:
        print("error: --seconds must be > 0, --settle-s and --pause-s >= 0", file=sys.stderr)
        return 2
    res = measure(a.out, a.seconds, a.settle_s, a.pause_s, a.dry_run)
    print(
        f"{'op':30s} {'burst':>12s} {'sustained':>12s} {'ratio':>6s} {'settled@s':>9s} {'clock MHz':>9s} {'power W':>8s}"
    )
    for k, v in res["ops"].items():
        unit = 1e12 if v["kind"] == "compute" else 1e9
        print(
            f"{k:30s} {v['burst_rate'] / unit:12.1f} {v['sustained_rate'] / unit:12.1f} {v['ratio']:6.3f} "
            f"{v.get('settled_after_s') or 0:9.2f} {v.get('sm_clock_mhz_settled') or 0:9.0f} {v.get('power_w_settled') or 0:8.0f}"
        )
    print("(compute: TFLOP/s, memory: GB/s)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
