"""Collectives timed three ways, as a model step may issue them; one fit per way.

All-reduce, all-gather, reduce-scatter, all-to-all and ring send/recv (the buffers and byte
conventions of :mod:`perfmodel.validation.collectives`), per rank 4 KiB .. 1 GiB, at each world size asked
for, one process per GPU (:mod:`perfmodel.validation.spawn`, NCCL with ``device_id``, multicast off):

- ``eager_single``: one eager call on an idle stream, after a barrier and a device sync: the
  start event is recorded before the host issues the call, so the time holds the host's launch
  and the wait for the slowest peer, as a lone collective between host-synchronised steps pays;
- ``eager_burst``: the mean of back-to-back eager calls (as nccl-tests and
  :mod:`perfmodel.validation.collectives` time them): the host's issue rate or the GPU, whichever is slower;
- ``graph``: the calls captured in one CUDA graph and replayed (behind the busy-wait lead kernel of
  :func:`perfmodel.validation.bench.lead`): what a decode step captured with its collectives pays.

Each record: ``launch`` (the way), ``op``, ``bytes``, ``world``, ``time_s`` (median over
repetitions of the slower rank's time a call), ``times_s``, calls per timing, GPU, driver, torch,
CUDA and NCCL versions, date and the NCCL variables set.  The model prices the collectives of a
decode step with the ``graph`` terms and those of a prefill with the ``eager_burst`` terms, where
the profile has them (its ``collective_launch`` object, which ``fit --write-profile WORLD`` writes;
``docs/communication.md``), else with the class terms.

Usage::

    python -m perfmodel.validation.collectives_launch measure --out DIR --worlds 2,4,8   # GPUs
    python -m perfmodel.validation.collectives_launch measure --out DIR --dry-run        # CPU, gloo, tiny sizes
    python -m perfmodel.validation.collectives_launch fit DIR/collectives_launch.jsonl [--gpu h100-sxm-80gb] [--write-profile 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from perfmodel.validation import collectives as C
from perfmodel.validation.spawn import read_jsonl, run_items

METHODS = ("eager_single", "eager_burst", "graph")
OPS = (*C.COLL_OPS, "send_recv")
RECORD_FILE = "collectives_launch.jsonl"
DRY_SIZES = (4096, 16384)
#: held-out targets of issue #28, per method: median and p90 absolute relative error
TARGET_MEDIAN, TARGET_P90 = 0.10, 0.20
#: seconds per point assumed by --plan (three ways, warm-up, capture), and per launch (start, NCCL init)
PLAN_POINT_S, PLAN_LAUNCH_S = 0.35, 15.0


def _reps(nbytes: int) -> tuple[int, int]:
    """Repetitions of the single call and of the timed burst or replay at ``nbytes`` per rank."""
    return (20, 7) if nbytes < 64 * 2**20 else (5, 5)


def _slower_rank(vals: list[float], dist, torch, dev) -> list[float]:
    t = torch.tensor(vals, device=dev, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [float(v) for v in t.cpu()]


def _single(fn, reps: int, dist, torch, dev) -> list[float]:
    """Seconds of each of ``reps`` lone calls on an idle stream (host launch and peer wait included)."""
    cuda = dev.type == "cuda"
    for _ in range(2):
        fn()
    vals = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        dist.barrier()
        if cuda:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            vals.append(a.elapsed_time(b) * 1e-3)
        else:
            t0 = time.perf_counter()
            fn()
            vals.append(time.perf_counter() - t0)
    return _slower_rank(vals, dist, torch, dev)


def _burst(fn, calls: int, reps: int, dist, torch, dev) -> list[float]:
    """Seconds a call of ``reps`` timings of ``calls`` back-to-back eager calls."""
    return C.burst_times(fn, calls, reps, dist, torch, dev)


def _graph(fn, calls: int, reps: int, dist, torch, dev) -> list[float]:
    """Seconds a call of ``reps`` replays of one CUDA graph of ``calls`` calls."""
    from perfmodel.validation import bench

    g = bench.capture_graph([fn], calls=calls, warm_replays=1)
    torch.cuda.synchronize()
    dist.barrier()
    torch.cuda.synchronize()
    vals = bench.replay_s(g, calls, reps)
    del g
    return _slower_rank(vals, dist, torch, dev)


def worker(rank: int, world: int, items: list[str], out: str, dry_run: bool) -> None:
    """Time every ``op:bytes`` item three ways; rank 0 appends one record per way to ``out``."""
    import torch
    import torch.distributed as dist

    from perfmodel.validation.spawn import init_rank, versions

    dev = init_rank(rank, world, dry_run)
    C.DEV, C.DTYPE = ("cpu", "float32") if dry_run else ("cuda", "bfloat16")
    meta = versions(dev)
    torch.manual_seed(rank)
    fh = open(out, "a") if rank == 0 else None
    for item in items:
        op, nbytes = item.split(":")[0], int(item.split(":")[1])
        calls, (r1, r2) = (C._iters(nbytes), _reps(nbytes)) if not dry_run else (10, (5, 3))
        fn = C._coll_fn(op, nbytes, world, rank, torch, dist)
        recs = []
        for method in METHODS:
            rec = {
                "item": item,
                "op": op,
                "bytes": nbytes,
                "world": world,
                "launch": method,
                "dtype": C.DTYPE,
                "backend": "gloo" if dry_run else "nccl",
                "dry_run": dry_run,
                **meta,
            }
            if method == "graph" and dev.type != "cuda":
                rec.update(status="skipped", skip_reason="CUDA graphs need a GPU (gloo on the CPU)")
            else:
                if method == "eager_single":
                    times, n = _single(fn, r1, dist, torch, dev), 1
                elif method == "eager_burst":
                    times, n = _burst(fn, calls, r2, dist, torch, dev), calls
                else:
                    times, n = _graph(fn, calls, r2, dist, torch, dev), calls
                rec.update(status="ok", time_s=statistics.median(times), times_s=times, calls_per_timing=n)
            recs.append(rec)
        if fh:
            fh.write("".join(json.dumps(r) + "\n" for r in recs))
            fh.flush()
        fn = None
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    dist.barrier()
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- driver


def items_for(ops: list[str], sizes: list[int]) -> list[str]:
    return [f"{op}:{s}" for op in ops for s in sizes]


def plan_s(worlds: list[int], ops: list[str], sizes: list[int]) -> float:
    """Rough GPU seconds of a measurement: a fixed cost per point and launch, plus the transfers
    (three ways, about 40 calls each at the large sizes, at 150 GB/s of bus bandwidth)."""
    pts = len(ops) * len(sizes)
    move = sum(3 * 40 * min(C._iters(s), 40) / 40 * s / 150e9 for s in sizes) * len(ops)
    return sum(pts * PLAN_POINT_S + len(ops) * PLAN_LAUNCH_S + move for _ in worlds)


def measure(
    out_dir: Path, worlds: list[int], ops: list[str], sizes: list[int], budget_s: float, dry_run: bool
) -> list[dict]:
    """Each world size in turn, one launch per op (a hang costs the rest of that op's sizes once)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / RECORD_FILE
    fails: list[dict] = []
    start = time.time()
    groups = [ops] if dry_run else [[op] for op in ops]  # a dry run starts its ranks once
    for i, w in enumerate(worlds):
        for j, group in enumerate(groups):
            left = budget_s - (time.time() - start)
            share = left / (
                (len(worlds) - i - 1) * len(groups) + len(groups) - j
            )  # an even share of what is left
            fails += run_items(
                worker, w, items_for(group, sizes), out, share, (dry_run,), stall_s=30.0 if dry_run else 60.0
            )
    (out_dir / "collectives_launch_failures.json").write_text(json.dumps(fails, indent=1))
    return fails


# ----------------------------------------------------------------------------- fit (no torch)


def fit(records: list[dict], gpu: str) -> dict:
    """Per way and world: the class fits of :func:`perfmodel.validation.collectives.fit_class`, on all sizes of
    64 KiB .. 1 GiB and held out (fitted on powers of two, scored on the 1.5x sizes between them)."""
    out: dict = {"gpu": gpu, "targets": {"median_ape": TARGET_MEDIAN, "p90_ape": TARGET_P90}, "methods": {}}
    ok = [r for r in records if r.get("status") == "ok" and r.get("time_s")]
    for method in METHODS:
        for w in sorted({r["world"] for r in ok if r["launch"] == method}):
            rows = [r for r in ok if r["launch"] == method and r["world"] == w]
            ops = [op for op in OPS if sum(r["op"] == op for r in rows) >= 5]
            fits, held = {}, {}
            for op in ops:
                try:
                    fits[op] = C.fit_class(rows, op, gpu)
                except ValueError as exc:
                    held[op] = {"error": str(exc)}
            pow2 = [r for r in rows if r["bytes"] & (r["bytes"] - 1) == 0]
            mids = [r for r in rows if r["bytes"] & (r["bytes"] - 1) != 0]
            res: dict = {"fits": fits}
            if fits:
                res["errors"] = C.evaluate(rows, fits, gpu)
                try:
                    res["errors_held_out"] = C.evaluate(
                        mids, {op: C.fit_class(pow2, op, gpu) for op in fits}, gpu
                    )
                    e = res["errors_held_out"]["all"]["fitted"]
                    res["meets_target"] = e["median_ape"] <= TARGET_MEDIAN and e["p90_ape"] <= TARGET_P90
                except ValueError as exc:
                    res["errors_held_out"] = {"error": str(exc)}
            out["methods"].setdefault(method, {})[f"world_{w}"] = res
    return out


def profile_section(result: dict, world: int = 2) -> dict:
    """The fitted terms of each way at ``world`` as a profile's ``collective_launch`` object:
    ``{way: {op: {latency_s, memory_eff, overlap, knee_bytes, tail_memory_eff}}}``."""
    sec: dict = {}
    for method, per_world in result["methods"].items():
        fits = per_world.get(f"world_{world}", {}).get("fits", {})
        if fits:
            sec[method] = {op: {k: float(f"{f[k]:.4g}") for k in C.PROFILE_KEYS} for op, f in fits.items()}
    return sec


def write_profile_section(result: dict, world: int, records: list[dict], files: list[str]) -> Path:
    """Add or replace the ``collective_launch`` object (the terms fitted at ``world``) and its provenance
    in the shipped profile of the records' GPU; nothing else in it changes."""
    from perfmodel.calibration import profile_from_dict, shipped_profile_path

    gpu = result["gpu"]
    path = shipped_profile_path(gpu)
    prof = json.loads(path.read_text()) if path.exists() else {"schema_version": 1, "gpu": gpu, "classes": {}}
    sec = profile_section(result, world)
    if not sec:
        raise ValueError(f"no fitted terms at world {world}")
    prof["collective_launch"] = sec
    first = next((r for r in records if r.get("status") == "ok" and r.get("world") == world), {})
    prof.setdefault("measured_on", {})["collectives_launch"] = {
        "source": f"validation/collectives_launch.py fit of {', '.join(Path(f).name for f in files)} at world {world}",
        **{k: first.get(k) for k in ("gpu", "driver", "torch", "cuda", "nccl", "date", "nccl_env")},
    }
    profile_from_dict(prof, str(path))  # refuse to write a profile that does not load
    path.write_text(json.dumps(prof, indent=2) + "\n")
    return path


def _table(records: list[dict]) -> str:
    lines = [f"{'way':13s} {'world':>5s} {'op':15s} {'bytes':>11s} {'time_us':>10s}"]
    for r in records:
        if r.get("status") == "ok" and r["bytes"] in (4096, 65536, 1 << 20, 1 << 24, 1 << 28, 1 << 30):
            lines.append(
                f"{r['launch']:13s} {r['world']:5d} {r['op']:15s} {r['bytes']:11d} {r['time_s'] * 1e6:10.1f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m perfmodel.validation.collectives_launch", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="time the collectives three ways (GPUs, or the CPU with --dry-run)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument(
        "--worlds", default="", help="comma-separated world sizes (default: 2, 4, 8 up to the GPUs here)"
    )
    m.add_argument("--ops", default=",".join(OPS))
    m.add_argument("--min-bytes", type=int, default=4096)
    m.add_argument("--max-bytes", type=int, default=2**30)
    m.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting points after this many seconds"
    )
    m.add_argument(
        "--dry-run", action="store_true", help="gloo on the CPU, world 2, two tiny sizes, no graphs"
    )
    m.add_argument(
        "--plan", action="store_true", help="print the points and the estimated GPU time, run nothing"
    )
    f = sub.add_parser("fit", help="fit each way separately and score it on held-out sizes")
    f.add_argument("files", nargs="+")
    f.add_argument("--gpu", default="", help="hw name (default: the records' gpu_model)")
    f.add_argument(
        "--profile-section",
        type=int,
        default=0,
        metavar="WORLD",
        help="print the profile's collective_launch object fitted at this world size instead",
    )
    f.add_argument(
        "--write-profile",
        type=int,
        default=0,
        metavar="WORLD",
        help="write the terms fitted at this world size into the GPU's profile (collective_launch)",
    )
    a = ap.parse_args(argv)
    if a.cmd == "fit":
        recs = [r for p in a.files for r in read_jsonl(Path(p))]
        gpu = a.gpu or next((r["gpu_model"] for r in recs if r.get("gpu_model")), C.FIT_GPU)
        res = fit(recs, gpu)
        print(json.dumps(profile_section(res, a.profile_section) if a.profile_section else res, indent=1))
        if a.write_profile:
            print(f"wrote {write_profile_section(res, a.write_profile, recs, a.files)}", file=sys.stderr)
        return 0
    ops = [o for o in a.ops.split(",") if o]
    bad = [o for o in ops if o not in OPS]
    if bad:
        ap.error(f"unknown op(s) {', '.join(bad)}; known: {', '.join(OPS)}")
    if a.dry_run:
        worlds, sizes = [2], list(DRY_SIZES)
    else:
        sizes = [s for s in C.default_sizes() if a.min_bytes <= s <= a.max_bytes]
        if a.worlds:
            worlds = [int(w) for w in a.worlds.split(",")]
        else:
            import torch

            n = torch.cuda.device_count()
            worlds = [w for w in (2, 4, 8) if w <= n]
    if a.plan or not worlds:
        print(
            f"{len(ops)} ops x {len(sizes)} sizes x {len(METHODS)} ways at world(s) {worlds}: "
            f"about {plan_s(worlds, ops, sizes):.0f} s of GPU time (budget {a.budget_s:g} s)"
        )
        return 0 if worlds else 2
    fails = measure(a.out, worlds, ops, sizes, a.budget_s, a.dry_run)
    print(_table(read_jsonl(a.out / RECORD_FILE)))
    if fails:
        print("failures:", json.dumps(fails))
    return 0


if __name__ == "__main__":
    sys.exit(main())
