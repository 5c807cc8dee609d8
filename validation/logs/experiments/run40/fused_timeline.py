"""Kernel timeline of split-KV, stream-K and stream-K with its merge fused into the kernel
(``_STREAM_K_FUSED`` 1 to 9 of the run-40 experiment patch) in CUDA-graph replays (torch.profiler).

Per configuration: the median first-kernel duration, the median time from the first kernel's end
to the reduction's end (0 without a reduction) and the median call-to-call period, µs.

Usage: python fused_timeline.py OUT_DIR [LABEL_PREFIXES]

The modes 2 to 9 exist only with ``h100-stream-k-fused-merge-modes.patch`` applied to ``kernels/``
at ``kernels_sha256`` fa0753bb8954409b; on the current source any true ``_STREAM_K_FUSED`` runs the
adopted merge.
"""
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import kernels  # noqa: E402
from benchmarks import kernels as bench  # noqa: E402
from validation.bench import capture_graph, lead  # noqa: E402

mod = sys.modules["kernels.attention_decode"]
CALLS = 32
REPLAYS = 20
CONFIGS = [
    ("split", "split_kv", {}),
    ("streamK", "stream_k", {}),
    ("FU1 fused", "stream_k", {"_STREAM_K_FUSED": 1}),
    ("FU2 lean", "stream_k", {"_STREAM_K_FUSED": 2}),
    ("FU3 atomic only", "stream_k", {"_STREAM_K_FUSED": 3}),
    ("FU4 partials only", "stream_k", {"_STREAM_K_FUSED": 4}),
    ("FU5 lse plane", "stream_k", {"_STREAM_K_FUSED": 5}),
    ("FU6 unrolled", "stream_k", {"_STREAM_K_FUSED": 6}),
    ("FU7 slot rows", "stream_k", {"_STREAM_K_FUSED": 7}),
    ("FU7r32 slot rows, 8 at once", "stream_k", {"_STREAM_K_FUSED": 7, "_FUSED_MERGE_ROWS": 32}),
    ("FU9 slot rows, lse x4", "stream_k", {"_STREAM_K_FUSED": 9}),
]
if len(sys.argv) > 2:  # labels to run, comma-separated prefixes
    CONFIGS = [c for c in CONFIGS if any(c[0].startswith(x) for x in sys.argv[2].split(","))]
SHAPES = [(1, 1024, False), (2, 1024, False), (4, 4096, False), (2, 16384, False), (2, 16384, True)]


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for bsz, length, ragged in SHAPES:
        lens, sets, _ = bench._decode_inputs(bsz, length, ragged=ragged)
        for label, sched, flags in CONFIGS:
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
                  if e.get("cat") == "kernel" and ("reduce" in e["name"] or "split_kv" in e["name"]
                                                   or "stream_k" in e["name"])]
            ev.sort(key=lambda e: e["ts"])
            firsts = [e for e in ev if "reduce" not in e["name"]]
            reds = [e for e in ev if "reduce" in e["name"]]
            assert len(firsts) == CALLS * REPLAYS and len(reds) in (0, len(firsts)), (len(firsts), len(reds))
            tails = ([r["ts"] + r["dur"] - f["ts"] - f["dur"] for f, r in zip(firsts, reds)] if reds
                     else [0.0] * len(firsts))
            periods = [b["ts"] - a["ts"] for i, (a, b) in enumerate(zip(firsts, firsts[1:])) if (i + 1) % CALLS]
            med = (statistics.median(f["dur"] for f in firsts), statistics.median(tails), statistics.median(periods))
            results.append(dict(batch=bsz, kv_len=length, ragged=ragged, config=label, first_us=med[0],
                                tail_us=med[1], period_us=med[2]))
            print(f"B={bsz} L={length}{' r' if ragged else '  '} {label:18s} first {med[0]:6.2f}  "
                  f"tail {med[1]:5.2f}  period {med[2]:6.2f} us", flush=True)
            del g
        del sets
    import datetime
    import subprocess

    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip()
    env = dict(gpu=torch.cuda.get_device_name(0), driver=driver, cuda=torch.version.cuda, torch=torch.__version__,
               triton=__import__("triton").__version__,
               date_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    (out / "fused_timeline.json").write_text(json.dumps({"env": env, "results": results}, indent=1))


if __name__ == "__main__":
    main()
