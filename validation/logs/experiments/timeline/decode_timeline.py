"""Kernel timeline of the two decode schedules in CUDA-graph replays (torch.profiler / CUPTI).

For each configuration (shape, schedule, module settings of kernels.attention_decode) one CUDA
graph of ``CALLS`` calls over rotated input copies is captured and replayed under the profiler; per
call the first kernel's and the reduction's GPU start and end are read from the trace, and the
medians printed: first kernel duration, reduction duration, the reduction's start after the first
kernel's start and after its end (negative with an early dependent launch), and the period from
one call's first kernel to the next call's.

Usage: python decode_timeline.py OUT_DIR [N_SHAPES]

Configurations whose settings exist only with ``../h100-stream-k-knobs-runs33-37.patch`` applied
(``_REDUCE_NUM_WARPS``) are skipped without it.
"""
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import kernels  # noqa: E402
from benchmarks import kernels as bench  # noqa: E402  (the benchmark script, as a module)
from validation.bench import capture_graph, lead  # noqa: E402

mod = sys.modules["kernels.attention_decode"]
CALLS = 32
REPLAYS = 20

CONFIGS = [
    ("split nw2", "split_kv", {"_REDUCE_NUM_WARPS": 2}),
    ("streamK PDL0 nw1", "stream_k", {"_STREAM_K_PDL": True, "_REDUCE_NUM_WARPS": 1}),
    ("streamK PDL0 nw2", "stream_k", {"_STREAM_K_PDL": True, "_REDUCE_NUM_WARPS": 2}),
    ("streamK PDL0 nw8", "stream_k", {"_STREAM_K_PDL": True, "_REDUCE_NUM_WARPS": 8}),
    ("streamK PDL0 noG", "stream_k", {"_STREAM_K_PDL": True, "_STREAM_K_REDUCE_GUESS": False}),
    ("streamK noG", "stream_k", {"_STREAM_K_REDUCE_GUESS": False}),
    ("streamK nw2", "stream_k", {"_REDUCE_NUM_WARPS": 2}),
    ("split", "split_kv", {}),
    ("split noPDL", "split_kv", {"_SPLIT_KV_PDL": False}),
    ("streamK", "stream_k", {}),
    ("streamK PDL0", "stream_k", {"_STREAM_K_PDL": True, "_STREAM_K_PDL_TRIGGER": 0}),
    ("streamK PDL2", "stream_k", {"_STREAM_K_PDL": True, "_STREAM_K_PDL_TRIGGER": 2}),
]
SHAPES = [(1, 1024, False), (2, 1024, False), (8, 1024, False), (2, 16384, False), (2, 16384, True)]
if len(sys.argv) > 2:
    SHAPES = SHAPES[: int(sys.argv[2])]


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for bsz, length, ragged in SHAPES:
        lens, sets, _ = bench._decode_inputs(bsz, length, ragged=ragged)
        for label, sched, flags in CONFIGS:
            if not all(hasattr(mod, k) for k in flags):  # settings of the experiment patch only
                print(f"skipped {label}: needs {sorted(k for k in flags if not hasattr(mod, k))}")
                continue
            fns = [(lambda qq=qq, kk=kk, vv=vv: kernels.attention_decode(qq, kk, vv, lens, None, sched,
                                                                        validate=False)) for qq, kk, vv in sets]
            g = bench._with_flags(mod, flags, lambda: capture_graph(fns, CALLS))
            for _ in range(3):
                g.replay()
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(REPLAYS):
                    lead()
                    g.replay()
                torch.cuda.synchronize()
            trace = out / "trace.json"
            prof.export_chrome_trace(str(trace))
            ev = [e for e in json.loads(trace.read_text())["traceEvents"]
                  if e.get("cat") == "kernel" and ("decode" in e["name"] or "reduce" in e["name"]
                                                   or "split_kv" in e["name"] or "stream_k" in e["name"])]
            ev.sort(key=lambda e: e["ts"])
            firsts = [e for e in ev if "reduce" not in e["name"]]
            reds = [e for e in ev if "reduce" in e["name"]]
            # one first kernel and one reduction per call, each starting after the call's first kernel
            assert len(firsts) == len(reds) == CALLS * REPLAYS, (len(firsts), len(reds))
            rows = [(f["dur"], r["dur"], r["ts"] - f["ts"], r["ts"] - f["ts"] - f["dur"]) for f, r in zip(firsts, reds)]
            # call to call, within one replay
            periods = [b["ts"] - a["ts"] for i, (a, b) in enumerate(zip(firsts, firsts[1:])) if (i + 1) % CALLS]
            med = [statistics.median(x[j] for x in rows) for j in range(4)] + [statistics.median(periods)]
            res = dict(batch=bsz, kv_len=length, ragged=ragged, config=label, first_us=med[0], reduce_us=med[1],
                       reduce_start_after_first_start_us=med[2], reduce_start_after_first_end_us=med[3],
                       period_us=med[4], kernels=len(ev), names=sorted({e["name"][:40] for e in ev}))
            results.append(res)
            print(f"B={bsz} L={length}{' r' if ragged else '  '} {label:17s} first {med[0]:6.2f}  reduce {med[1]:6.2f}"
                  f"  red.start-first.start {med[2]:6.2f}  red.start-first.end {med[3]:6.2f}  tail {med[2] + med[1] - med[0]:5.2f}  period {med[4]:6.2f} us"
                  f"  ({len(ev)} kernels)", flush=True)
            del g
        del sets
    import datetime
    import subprocess

    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip()
    env = dict(gpu=torch.cuda.get_device_name(0), driver=driver, cuda=torch.version.cuda, torch=torch.__version__,
               triton=__import__("triton").__version__,
               date_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    (out / "decode_timeline.json").write_text(json.dumps({"env": env, "results": results}, indent=1))


if __name__ == "__main__":
    main()
