"""Per-program timestamps of the decode kernels (experiment; needs stamps.patch applied).

Each program of the first kernel (split-KV or stream-K) and of the reduction writes the GPU's
global timer (ns) and its SM's clock at fixed points: start (0), after finding its pair (1, stream-K),
end of its tile loop (3), after its counter update (4, fused stream-K), after its merge (5, the
merging program), and its end (2); the reduction: start (0), after its grid-dependency wait (1), end
(2). One call per CUDA-graph replay, L2 flushed before each, 30 replays, medians printed.

Usage: python decode_stamps.py OUT_DIR
"""
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import kernels  # noqa: E402
from validation.bench import capture_graph, lead  # noqa: E402

mod = sys.modules["kernels.attention_decode"]
CASES = [((16, 4, 64), 1, 1024), ((16, 4, 64), 1, 4096), ((16, 4, 64), 1, 65536), ((16, 4, 64), 4, 4096),
         ((16, 4, 64), 16, 1024), ((32, 8, 128), 1, 1024), ((32, 8, 128), 1, 16384), ((32, 8, 128), 2, 16384)]
CONFIGS = [("split", "split_kv", {}), ("streamK", "stream_k", {}),
           ("streamK k64", "stream_k", {"_STREAM_K_BLOCK_N_SMALL_HEAD": 64})]
REPLAYS = 30
RED = 16384


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def analyse(ts, sched):
    g = ts[:, 0::2].double()  # ns
    c = ts[:, 1::2].double()  # SM cycles
    first = g[:RED]
    rows = (first[:, 0] != 0).nonzero().flatten()
    f = first[rows]
    t0 = f[:, 0].min()
    r = {"programs": len(rows), "start_spread_us": float(f[:, 0].max() - t0) / 1e3,
         "loop_end_med_us": float(f[:, 3].median() - t0) / 1e3, "loop_end_max_us": float(f[:, 3].max() - t0) / 1e3,
         "end_max_us": float(f[:, 2].max() - t0) / 1e3, "end_med_us": float(f[:, 2].median() - t0) / 1e3}
    cf = c[:RED][rows]
    r["loop_cycles_med"] = float((cf[:, 3] - cf[:, 0]).median())
    if sched == "stream_k":
        r["prologue_cycles_med"] = float((cf[:, 1] - cf[:, 0]).median())
        at = f[:, 4][f[:, 4] != 0]
        if len(at):
            r["atomic_max_us"] = float(at.max() - t0) / 1e3
            r["atomic_cycles_med"] = float((cf[:, 4] - cf[:, 3])[f[:, 4] != 0].median())
        mg = f[:, 5] != 0
        if mg.any():
            r["merge_end_max_us"] = float(f[mg, 5].max() - t0) / 1e3
            r["merge_cycles_med"] = float((cf[mg, 5] - cf[mg, 4]).median())
    red = g[RED:]
    rr = (red[:, 0] != 0).nonzero().flatten()
    if len(rr):
        rd = red[rr]
        r["reduce_start_min_us"] = float(rd[:, 0].min() - t0) / 1e3
        r["reduce_wait_min_us"] = float(rd[:, 1].min() - t0) / 1e3
        r["reduce_wait_max_us"] = float(rd[:, 1].max() - t0) / 1e3
        r["reduce_end_max_us"] = float(rd[:, 2].max() - t0) / 1e3
        r["reduce_cycles_after_wait_med"] = float((c[RED:][rr, 2] - c[RED:][rr, 1]).median())
    r["total_us"] = max(r["end_max_us"], r.get("reduce_end_max_us", 0), r.get("merge_end_max_us", 0))
    return r


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    results = []
    for (hq, hkv, d), bsz, length in CASES:
        q = torch.randn(bsz, hq, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(bsz, hkv, length, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(bsz, hkv, length, d, device="cuda", dtype=torch.bfloat16)
        lens = torch.full((bsz,), length, device="cuda", dtype=torch.int32)
        ref = kernels.attention_decode(q, k, v, lens, schedule="split_kv")
        for label, sched, flags in CONFIGS:
            ts = torch.zeros((RED + bsz * hq, 16), dtype=torch.int64, device="cuda")
            saved = {n: getattr(mod, n) for n in flags}
            for n, val in flags.items():
                setattr(mod, n, val)
            mod._STAMPS = ts
            try:
                o = kernels.attention_decode(q, k, v, lens, schedule=sched)
                err = float((o.double() - ref.double()).norm() / ref.double().norm())
                g = capture_graph([lambda: kernels.attention_decode(q, k, v, lens, schedule=sched, validate=False)], 1)
            finally:
                mod._STAMPS = None
                for n, val in saved.items():
                    setattr(mod, n, val)
            reps = []
            grain = []
            for _ in range(REPLAYS):
                flush.random_(0, 100)
                ts.zero_()
                torch.cuda.synchronize()
                lead()
                g.replay()
                torch.cuda.synchronize()
                h = ts.cpu()
                reps.append(analyse(h, sched))
                gv = h[:, 0::2].flatten()
                gv = gv[gv != 0]
                grain.append(int((gv % 1000 == 0).float().mean() * 100))
            keys = reps[0].keys()
            m = {kk: med([rp.get(kk) for rp in reps]) for kk in keys}
            res = dict(layout=f"{hq}:{hkv}:{d}", batch=bsz, kv_len=length, config=label, rel_err=err,
                       pct_stamps_whole_us=statistics.median(grain), **m)
            results.append(res)
            print(json.dumps(res), flush=True)
            del g
    import datetime
    import subprocess

    import triton

    drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    env = dict(gpu=torch.cuda.get_device_name(0), driver=drv, cuda=torch.version.cuda, torch=torch.__version__,
               triton=triton.__version__, date_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    (out / "decode_stamps.json").write_text(json.dumps({"env": env, "results": results}, indent=1))
    cols = ["programs", "start_spread_us", "prologue_cycles_med", "loop_cycles_med", "loop_end_med_us",
            "loop_end_max_us", "end_max_us", "atomic_max_us", "merge_end_max_us", "reduce_wait_min_us",
            "reduce_wait_max_us", "reduce_end_max_us", "total_us"]
    print("layout B L config | " + " ".join(cols))
    for r in results:
        print(f"{r['layout']} {r['batch']} {r['kv_len']} {r['config']} | "
              + " ".join(f"{r.get(c, float('nan')):.2f}" if isinstance(r.get(c), float) else str(r.get(c, "-"))
                         for c in cols))


if __name__ == "__main__":
    main()
