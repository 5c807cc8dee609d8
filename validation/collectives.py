"""NCCL collectives and a Ring-attention step, measured with ``torch.distributed``; fit per class.

Three parts, each launched as its own ``torch.distributed.run`` job (one process per
GPU) under a hard wall-clock limit, so that a hang or a crash costs one part, not the
whole run; each finished point is written at once, and a relaunch skips what is done
and records the point that hung or crashed:

- ``coll``: all-reduce, all-gather, reduce-scatter, all-to-all, 4 KiB .. 1 GiB per rank;
- ``p2p``: ring send/recv (each rank sends to the next and receives from the previous);
- ``ring``: one Ring-attention step (attention of a query block against one KV block while
  the next KV block travels around the ring), timed as compute alone, transfer alone, both.

``bytes`` follows the op-descriptor schema (``docs/ops.md``): the all-reduce buffer, the
all-gather output, the reduce-scatter input, the all-to-all buffer, the message each rank
sends.  Times are the median of repetitions of a back-to-back loop (as nccl-tests does),
the slower rank's.

Usage (on the GPU machine)::

    NCCL_NVLS_ENABLE=0 python -m perfmodel.validation.collectives measure --out DIR --nproc 2

and on any machine::

    python -m perfmodel.validation.collectives fit --data validation/data/collectives_h200x2.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
COLL_BUDGET_S = float(os.environ.get("COLLECTIVES_COLL_BUDGET_S", 240))
P2P_BUDGET_S = float(os.environ.get("COLLECTIVES_P2P_BUDGET_S", 100))
RING_BUDGET_S = float(os.environ.get("COLLECTIVES_RING_BUDGET_S", 120))
STALL_S = float(os.environ.get("COLLECTIVES_STALL_S", 40))  # one point takes well under this
STARTUP_S = 90.0  # process start, CUDA and NCCL initialisation
COLL_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


def default_sizes(lo: int = 4096, hi: int = 2**30) -> list[int]:
    """Powers of two from ``lo`` to ``hi`` bytes and the 1.5x points between them."""
    out, s = [], lo
    while s <= hi:
        out.append(s)
        if s * 3 // 2 < hi:
            out.append(s * 3 // 2)
        s *= 2
    return out


# ----------------------------------------------------------------------------- worker side (torch)


def _iters(nbytes: int) -> int:
    return int(max(5, min(200, (256 * 2**20) // max(nbytes, 1))))


DEV = "cuda"  # "cpu" (gloo) only for a dry run of the driver on a machine without GPUs
DTYPE = "bfloat16"


def burst_times(fn, n: int, reps: int, dist, torch, dev) -> list[float]:
    """Seconds a call, one value for each of ``reps`` timings of ``n`` back-to-back eager calls (CUDA events
    on a GPU, the host clock on the CPU), each the slower rank's, after three warm-up calls and a barrier."""
    cuda = str(dev).startswith("cuda")
    for _ in range(3):
        fn()
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    vals = []
    for _ in range(reps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if cuda:
            b.record()
            b.synchronize()
            vals.append(a.elapsed_time(b) * 1e-3 / n)
        else:
            vals.append((time.perf_counter() - t0) / n)
    t = torch.tensor(vals, device=dev, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [float(v) for v in t.cpu()]


def _timed(fn, n: int, reps: int, dist, torch) -> float:
    """Median over ``reps`` of the mean time of ``n`` back-to-back calls, slower rank, seconds."""
    return statistics.median(burst_times(fn, n, reps, dist, torch, DEV))


def _coll_fn(op: str, nbytes: int, world: int, rank: int, torch, dist):
    n = nbytes // 2  # bf16 elements
    if op == "all_reduce":
        x = torch.randn(n, device=DEV, dtype=getattr(torch, DTYPE))
        return lambda: dist.all_reduce(x)
    if op == "all_gather":
        out = torch.empty(n, device=DEV, dtype=getattr(torch, DTYPE))
        inp = torch.randn(n // world, device=DEV, dtype=getattr(torch, DTYPE))
        return lambda: dist.all_gather_into_tensor(out, inp)
    if op == "reduce_scatter":
        inp = torch.randn(n, device=DEV, dtype=getattr(torch, DTYPE))
        out = torch.empty(n // world, device=DEV, dtype=getattr(torch, DTYPE))
        return lambda: dist.reduce_scatter_tensor(out, inp)
    if op == "all_to_all":
        inp = torch.randn(n, device=DEV, dtype=getattr(torch, DTYPE))
        out = torch.empty(n, device=DEV, dtype=getattr(torch, DTYPE))
        return lambda: dist.all_to_all_single(out, inp)
    if op == "send_recv":
        snd = torch.randn(n, device=DEV, dtype=getattr(torch, DTYPE))
        rcv = torch.empty(n, device=DEV, dtype=getattr(torch, DTYPE))
        nxt, prv = (rank + 1) % world, (rank - 1) % world

        def f():
            ops = [dist.P2POp(dist.isend, snd, nxt), dist.P2POp(dist.irecv, rcv, prv)]
            for r in dist.batch_isend_irecv(ops):
                r.wait()

        return f
    raise ValueError(op)


def _check_sum(torch, dist, world: int) -> None:
    x = torch.full((1024,), float(dist.get_rank() + 1), device=DEV)
    dist.all_reduce(x)
    want = world * (world + 1) / 2
    if not torch.allclose(x, torch.full_like(x, want)):
        raise RuntimeError(f"all-reduce gave {x[0].item()}, want {want}")


def _ring_points(spec: str) -> list[tuple[int, int, int, int]]:
    """``hq/hkv/d/c`` items separated by commas."""
    return [tuple(int(v) for v in item.split("/")) for item in spec.split(",") if item]  # type: ignore[misc]


def worker(part: str, items: list[str], out_path: str) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    global DEV, DTYPE
    local = int(os.environ["LOCAL_RANK"])
    if os.environ.get("COLLECTIVES_DRY_RUN_CPU") == "1":
        DEV, DTYPE = "cpu", "float32"
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    else:
        torch.cuda.set_device(local)
        dist.init_process_group(
            "nccl", device_id=torch.device("cuda", local), timeout=datetime.timedelta(seconds=120)
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    _check_sum(torch, dist, world)
    torch.manual_seed(rank)
    fh = open(out_path, "a") if rank == 0 else None
    for item in items:
        if item == os.environ.get("COLLECTIVES_TEST_HANG"):  # exercises the driver's recovery
            time.sleep(3600)
        if part in ("coll", "p2p"):
            op, nbytes = item.split(":")[0], int(item.split(":")[1])
            fn = _coll_fn(op, nbytes, world, rank, torch, dist)
            t = _timed(fn, _iters(nbytes), 7, dist, torch)
            rec = {"part": part, "item": item, "op": op, "bytes": nbytes, "world": world, "time_s": t}
        else:
            rec = _ring_step(item, rank, world, torch, dist)
        if fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        fn = None  # free this point's buffers
        if DEV == "cuda":
            torch.cuda.empty_cache()
    dist.barrier()
    dist.destroy_process_group()


def _ring_step(item: str, rank: int, world: int, torch, dist) -> dict:
    """Attention of a [hq, c, d] query block over one [hkv, c, d] KV block, with and without the
    next KV block (2 * hkv * c * d bf16) in flight around the ring."""
    import torch.nn.functional as F

    hq, hkv, d, c = (int(v) for v in item.split("/"))
    q = torch.randn(1, hq, c, d, device=DEV, dtype=getattr(torch, DTYPE))
    kv = torch.randn(2, 1, hkv, c, d, device=DEV, dtype=getattr(torch, DTYPE))
    kv_next = torch.empty_like(kv)
    nxt, prv = (rank + 1) % world, (rank - 1) % world
    gqa = hq != hkv

    def compute():
        return F.scaled_dot_product_attention(q, kv[0], kv[1], is_causal=False, enable_gqa=gqa)

    def comm():
        ops = [dist.P2POp(dist.isend, kv, nxt), dist.P2POp(dist.irecv, kv_next, prv)]
        return dist.batch_isend_irecv(ops)

    def both():
        reqs = comm()
        compute()
        for r in reqs:
            r.wait()

    def comm_only():
        for r in comm():
            r.wait()

    n = 20
    t_c = _timed(compute, n, 7, dist, torch)
    t_m = _timed(comm_only, n, 7, dist, torch)
    t_b = _timed(both, n, 7, dist, torch)
    return {
        "part": "ring",
        "item": item,
        "hq": hq,
        "hkv": hkv,
        "head_dim": d,
        "block_tokens": c,
        "world": world,
        "kv_block_bytes": int(kv.numel() * 2),
        "attn_flops": 4.0 * hq * c * c * d,
        "compute_s": t_c,
        "comm_s": t_m,
        "both_s": t_b,
    }


# ----------------------------------------------------------------------------- driver side


def _env_record(nproc: int) -> dict:
    rec: dict = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nproc": nproc}

    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unavailable: {exc.__class__.__name__}"

    rec["nvidia_smi"] = sh(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv"]
    )
    rec["topo"] = sh(["nvidia-smi", "topo", "-m"])
    rec["nvlink"] = sh(["nvidia-smi", "nvlink", "-s"])
    rec["versions"] = sh(
        [
            sys.executable,
            "-c",
            "import torch, sys; print(sys.version.split()[0], torch.__version__, "
            "torch.version.cuda, torch.cuda.nccl.version(), torch.cuda.device_count(), "
            "[torch.cuda.can_device_access_peer(0, j) for j in range(1, torch.cuda.device_count())])",
        ]
    )
    rec["env"] = {k: os.environ.get(k, "") for k in SAFE_ENV}
    return rec


def _launch(part: str, items: list[str], out: Path, nproc: int, limit_s: float, port: int) -> tuple[int, str]:
    """Start ``nproc`` workers, each leading its own process group (killed on a hang), and wait."""
    base = dict(
        os.environ,
        **SAFE_ENV,
        PYTHONUNBUFFERED="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
    )
    cmd = [
        sys.executable,
        "-m",
        "perfmodel.validation.collectives",
        "worker",
        "--part",
        part,
        "--items",
        ",".join(items),
        "--out",
        str(out),
    ]
    procs: list[subprocess.Popen] = []
    for r in range(nproc):
        env = dict(base, RANK=str(r), LOCAL_RANK=str(r))
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))

    class _Group:  # waits for all ranks; the first non-zero status wins
        @staticmethod
        def wait(timeout: float) -> int:
            end = time.time() + timeout
            for q in procs:
                q.wait(timeout=max(end - time.time(), 0.01))
            return next((q.returncode for q in procs if q.returncode), 0)

    p = _Group()
    start = last = time.time()
    seen = _count_lines(out)
    while True:
        try:
            return p.wait(timeout=1.0), ""
        except subprocess.TimeoutExpired:
            pass
        now, n = time.time(), _count_lines(out)
        if n != seen:
            seen, last = n, now
        grace = STALL_S + (STARTUP_S if last == start else 0)
        why = ""
        bad = [q.returncode for q in procs if q.poll() not in (None, 0)]
        if bad:
            why = f"a rank exited with status {bad[0]}"
        elif now - last > grace:
            why = f"no progress for {now - last:.0f} s (hang)"
        elif now - start > limit_s:
            why = f"part time budget of {limit_s:.0f} s spent"
        if why:
            for q in procs:
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
                q.wait()
            return -9, why


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_part(part: str, items: list[str], out: Path, nproc: int, budget_s: float, port: int) -> list[dict]:
    """Launch ``part`` until every item is done or failed, or ``budget_s`` is spent."""
    failures: list[dict] = []
    start = time.time()
    todo = list(items)
    while todo:
        left = budget_s - (time.time() - start)
        if left < 20:
            failures += [{"part": part, "item": i, "failed": "not run: part time budget spent"} for i in todo]
            break
        rc, why = _launch(part, todo, out, nproc, left, port)
        port += 1
        done = {json.loads(line)["item"] for line in out.read_text().splitlines()} if out.exists() else set()
        todo = [i for i in todo if i not in done]
        if rc == 0 or not todo:
            break
        failures.append({"part": part, "item": todo[0], "failed": why or f"exit status {rc}"})
        print(f"[{part}] {todo[0]} failed: {why or rc}; going on", flush=True)
        todo = todo[1:]
    return failures


def measure(out_dir: str, nproc: int, parts: list[str], max_bytes: int, min_bytes: int = 4096) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "collectives_env.json").write_text(json.dumps(_env_record(nproc), indent=1))
    sizes = [s for s in default_sizes() if min_bytes <= s <= max_bytes]
    fails: list[dict] = []
    if "coll" in parts:
        items = [f"{op}:{s}" for op in COLL_OPS for s in sizes]
        fails += run_part("coll", items, out / "collectives_raw.jsonl", nproc, COLL_BUDGET_S, 29500)
    if "p2p" in parts:
        items = [f"send_recv:{s}" for s in sizes]
        fails += run_part("p2p", items, out / "collectives_raw.jsonl", nproc, P2P_BUDGET_S, 29600)
    if "ring" in parts:
        items = [
            f"{hq}/{hkv}/128/{c}"
            for hq, hkv in ((32, 32), (32, 8))
            for c in (256, 512, 1024, 2048, 4096, 8192, 16384)
        ]
        fails += run_part("ring", items, out / "collectives_ring.jsonl", nproc, RING_BUDGET_S, 29700)
    (out / "collectives_failures.json").write_text(json.dumps(fails, indent=1))
    _print_table(out)


def _print_table(out: Path) -> None:
    raw = out / "collectives_raw.jsonl"
    if raw.exists():
        rows = [json.loads(x) for x in raw.read_text().splitlines()]
        print(f"{'op':15s} {'bytes':>12s} {'time_us':>10s} {'algbw_GB/s':>11s}")
        for r in rows:
            if r["bytes"] in (65536, 1 << 20, 1 << 24, 1 << 28, 1 << 30):
                print(
                    f"{r['op']:15s} {r['bytes']:12d} {r['time_s'] * 1e6:10.1f} {r['bytes'] / r['time_s'] / 1e9:11.1f}"
                )
    ring = out / "collectives_ring.jsonl"
    if ring.exists():
        for line in ring.read_text().splitlines():
            r = json.loads(line)
            print(
                f"ring {r['item']:16s} compute {r['compute_s'] * 1e6:8.1f} us  comm {r['comm_s'] * 1e6:8.1f} us  "
                f"both {r['both_s'] * 1e6:8.1f} us"
            )
    f = out / "collectives_failures.json"
    if f.exists():
        print("failures:", f.read_text())


# ----------------------------------------------------------------------------- fit (no torch)

FIT_LO_BYTES, FIT_HI_BYTES = 64 * 1024, 2**30
FIT_GPU = "h200-sxm-141gb"


def load_rows(path: str | Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


KNEE_GRID_BYTES = tuple(float(2 ** (k / 4)) for k in range(4 * 21, 4 * 30 + 1))  # 2 MiB .. 1 GiB per rank


def fit_class(rows: list[dict], op: str, gpu_name: str = FIT_GPU) -> dict:
    """Fit one class, minimising squared relative error over 64 KiB..1 GiB.

    ``t = A + T - overlap * min(A, T)`` with ``A = steps(w) * alpha`` and the transfer
    ``T = factor(w) * (min(b, knee) / bw + max(b - knee, 0) / bw_tail)``: NCCL's tuner gives
    large messages more channels and its bulk protocol, so the bandwidth of the bytes beyond a
    knee is higher.  The knee is picked from ``KNEE_GRID_BYTES`` (per-rank bytes); the others by
    least squares.  Returns alpha per step (s), both bandwidths (bytes/s) and their fractions of
    the datasheet NVLink bandwidth, the knee, the overlap and the points used.
    """
    import numpy as np
    from scipy.optimize import least_squares

    from perfmodel.hw.loader import load_gpu
    from perfmodel.costs.collectives import AllReduceAlgorithm, _factor_steps
    from perfmodel.ops import OpKind

    gpu = load_gpu(gpu_name)
    pts = [r for r in rows if r.get("op") == op and FIT_LO_BYTES <= r["bytes"] <= FIT_HI_BYTES]
    if len(pts) < 5:
        raise ValueError(f"too few {op} points to fit ({len(pts)})")
    w = pts[0]["world"]
    factor, steps = _factor_steps(OpKind(op), w, AllReduceAlgorithm.RING)
    t = np.array([r["time_s"] for r in pts])
    b = np.array([float(r["bytes"]) for r in pts])
    design = np.stack([1.0 / t, factor * b / t], axis=1)  # alpha-beta start: (A + x / bw) / t ~ 1
    (a0, inv0), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    a0, inv0 = max(float(a0), 1e-6), max(float(inv0), 1e-13)

    def pred(v, knee):
        a, inv, inv_tail, eta = np.exp(v[0]), np.exp(v[1]), np.exp(v[2]), v[3]
        bw_t = factor * (np.minimum(b, knee) * inv + np.maximum(b - knee, 0.0) * inv_tail)
        return a + bw_t - eta * np.minimum(a, bw_t)

    best = None
    for knee in KNEE_GRID_BYTES:
        if np.sum(b > knee) < 3 or np.sum(b <= knee) < 3:
            continue
        sol = least_squares(
            lambda v: pred(v, knee) / t - 1.0,
            [np.log(a0), np.log(inv0), np.log(inv0), 0.5],
            bounds=([-30, -40, -40, 0.0], [0, 0, 0, 1.0]),
        )
        if best is None or sol.cost < best[0].cost:
            best = (sol, knee)
    sol, knee = best
    a_total, bw, bw_tail, eta = (
        float(np.exp(sol.x[0])),
        1.0 / float(np.exp(sol.x[1])),
        1.0 / float(np.exp(sol.x[2])),
        float(sol.x[3]),
    )
    link = gpu.nvlink_bytes_per_s_per_direction
    return {
        "op": op,
        "world": w,
        "latency_s": a_total / steps,
        "latency_total_s": a_total,
        "bandwidth_bytes_per_s": bw,
        "memory_eff": bw / link,
        "knee_bytes": knee,
        "tail_bandwidth_bytes_per_s": bw_tail,
        "tail_memory_eff": bw_tail / link,
        "overlap": eta,
        "points": len(pts),
    }


PROFILE_KEYS = ("latency_s", "memory_eff", "overlap", "knee_bytes", "tail_memory_eff")


def class_params(f: dict):
    """The profile's curve (:class:`perfmodel.costs.collectives.CollectiveParams`) of one fitted class."""
    from perfmodel.costs.collectives import CollectiveParams

    return CollectiveParams(**{k: float(f"{f[k]:.4g}") for k in PROFILE_KEYS})


def _ape_stats(pred, meas) -> dict:
    import numpy as np

    ape = np.abs(np.asarray(pred) - np.asarray(meas)) / np.asarray(meas)
    return {
        "median_ape": float(np.median(ape)),
        "p90_ape": float(np.percentile(ape, 90)),
        "max_ape": float(ape.max()),
        "n": int(ape.size),
    }


def evaluate(rows: list[dict], fits: dict[str, dict], gpu_name: str = FIT_GPU) -> dict:
    """Errors over 64 KiB..1 GiB of the fitted model (through perfmodel.costs.collectives) and the datasheet baseline."""
    import numpy as np

    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import Mode, OpClass, Profile
    from perfmodel.costs.collectives import bandwidth_only_time, collective_time
    from perfmodel.ops import OpKind

    gpu = load_gpu(gpu_name)
    prof = Profile(gpu_name, Mode.CALIBRATED, {OpClass(k): class_params(v) for k, v in fits.items()})
    out: dict = {}
    all_fit, all_base, all_peak, all_meas = [], [], [], []
    for op in fits:
        pts = [r for r in rows if r.get("op") == op and FIT_LO_BYTES <= r["bytes"] <= FIT_HI_BYTES]
        b = np.array([float(r["bytes"]) for r in pts])
        w = pts[0]["world"]
        meas = np.array([r["time_s"] for r in pts])
        fit = np.asarray(collective_time(OpKind(op), b, w, gpu, prof).total_s)
        # datasheet bandwidth plus the hardware file's link latency per step (calibrated mode, nothing fitted)
        peak = np.asarray(collective_time(OpKind(op), b, w, gpu, Profile(gpu_name, Mode.CALIBRATED)).total_s)
        base = bandwidth_only_time(OpKind(op), b, w, gpu)
        out[op] = {
            "fitted": _ape_stats(fit, meas),
            "peak_with_link_latency": _ape_stats(peak, meas),
            "bandwidth_only_datasheet": _ape_stats(base, meas),
        }
        for acc, v in ((all_fit, fit), (all_base, base), (all_peak, peak), (all_meas, meas)):
            acc.extend(v.tolist())
    out["all"] = {
        "fitted": _ape_stats(all_fit, all_meas),
        "peak_with_link_latency": _ape_stats(all_peak, all_meas),
        "bandwidth_only_datasheet": _ape_stats(all_base, all_meas),
    }
    return out


RING_TRAIN_BLOCKS = (256, 1024, 4096, 16384)  # held-out check: fit on these, score 512, 2048, 8192


def _ring_arrays(rows: list[dict]):
    import numpy as np

    return (
        np.array([r["compute_s"] for r in rows]),
        np.array([r["comm_s"] for r in rows]),
        np.array([r["both_s"] for r in rows]),
    )


RING_LAUNCH_MAX_BLOCK = 512  # attention alone on blocks this small is bound by its host launch


def fit_ring_step(ring_rows: list[dict], comm_issue_s: float) -> dict:
    """Fit the Ring step model (:class:`perfmodel.parallel.RingStepModel`) to measured steps.

    ``step = max(c + m - overlap * min(c, m), min(c, h_c) + min(m, h_m) + sync)`` with the
    measured compute ``c`` and transfer ``m`` alone.  The host costs of the two calls come from
    serial measurements: ``h_m`` = ``comm_issue_s`` (the send/recv class's fitted latency, the
    host cost of issuing the pair, from the separate send/recv measurement) and ``h_c`` = the
    median time of attention alone on blocks of at most ``RING_LAUNCH_MAX_BLOCK`` tokens (a few
    GFLOP: the eager call's host launch).  ``overlap`` and ``sync`` are fitted to the overlapped
    steps by least squares of the relative step error.
    """
    import numpy as np
    from scipy.optimize import least_squares

    from perfmodel.parallel import RingStepModel, ring_step_overlap

    small = [r["compute_s"] for r in ring_rows if r["block_tokens"] <= RING_LAUNCH_MAX_BLOCK]
    if len(ring_rows) < 3 or not small:
        raise ValueError(
            f"too few Ring steps to fit ({len(ring_rows)}; {len(small)} blocks of "
            f"<= {RING_LAUNCH_MAX_BLOCK} tokens)"
        )
    h_c = float(np.median(small))
    c, m, both = _ring_arrays(ring_rows)

    def model(v):
        return RingStepModel(float(v[0]), h_c, comm_issue_s, float(v[1]) * 1e-6)

    def resid(v):
        return ring_step_overlap(c, m, model(v)).step_s / both - 1.0

    # the max() makes the surface piecewise with several local minima: search a grid (overlap in
    # steps of 0.01, sync in steps of 1 us up to 300 us), then polish locally
    hs = np.arange(0.0, 301.0)[:, None] * 1e-6
    host = np.minimum(c, h_c) + np.minimum(m, comm_issue_s) + hs
    best, best_sse = None, np.inf
    for e in np.linspace(0, 1, 101):
        sse = np.sum((np.maximum(c + m - e * np.minimum(c, m), host) / both - 1.0) ** 2, axis=-1)
        j = int(np.argmin(sse))
        if sse[j] < best_sse:
            best, best_sse = (e, float(j)), float(sse[j])
    sol = least_squares(resid, best, bounds=([0, 0], [1, 1e4]))
    x = sol.x if np.sum(resid(sol.x) ** 2) <= best_sse else np.array(best)
    rs = model(x)
    return {
        "overlap": rs.overlap,
        "compute_issue_s": rs.compute_issue_s,
        "comm_issue_s": comm_issue_s,
        "sync_s": rs.sync_s,
        "points": len(ring_rows),
    }


def _ring_errors(rows: list[dict], rs) -> dict:
    import numpy as np

    from perfmodel.parallel import ring_step_overlap

    c, m, both = _ring_arrays(rows)
    pred = ring_step_overlap(c, m, rs)
    step = np.abs(pred.step_s / both - 1.0)
    hid = np.abs(pred.hidden_fraction - (c + m - both) / m)
    return {
        "step_median_ape": float(np.median(step)),
        "step_max_ape": float(step.max()),
        "hidden_median_abs_err": float(np.median(hid)),
        "hidden_max_abs_err": float(hid.max()),
        "n": int(step.size),
    }


def evaluate_ring(ring_rows: list[dict], prof, comm_issue_s: float) -> dict:
    """Ring-attention step: measured vs predicted step time and hidden share of the transfer.

    ``hidden`` is the share of the KV transfer that compute hides: ``(c + m - both) / m``
    measured, ``(c + m - step) / m`` predicted (:func:`perfmodel.parallel.ring_step_overlap`);
    negative where the overlapped step is longer than the two run apart.  The ratio
    ``step / (c + m)`` (overlapped over serial) has the same relative error as the step time.
    Predictions use (a) the measured compute and transfer times alone, with the ideal overlap
    and with the fitted model, (b) the model's own compute and transfer times with the fitted model.
    Held out: fitted on the blocks of ``RING_TRAIN_BLOCKS``, scored on the others.
    """
    from perfmodel.hw.loader import load_gpu
    from perfmodel.parallel import RingStepModel, ring_step_overlap

    gpu = load_gpu(FIT_GPU)
    fit = fit_ring_step(ring_rows, comm_issue_s)
    rs = RingStepModel(fit["overlap"], fit["compute_issue_s"], fit["comm_issue_s"], fit["sync_s"])
    train = [r for r in ring_rows if r["block_tokens"] in RING_TRAIN_BLOCKS]
    test = [r for r in ring_rows if r["block_tokens"] not in RING_TRAIN_BLOCKS]
    fit_tr = fit_ring_step(train, comm_issue_s)
    rs_tr = RingStepModel(
        fit_tr["overlap"], fit_tr["compute_issue_s"], fit_tr["comm_issue_s"], fit_tr["sync_s"]
    )
    pts = []
    for r in ring_rows:
        c, m, both = r["compute_s"], r["comm_s"], r["both_s"]
        ideal, fitted, held = (
            ring_step_overlap(c, m, 1.0),
            ring_step_overlap(c, m, rs),
            ring_step_overlap(c, m, rs_tr),
        )
        mod = ring_step_overlap_from_model(r, gpu, prof, rs)
        pts.append(
            {
                "item": r["item"],
                "block_tokens": r["block_tokens"],
                "hq": r["hq"],
                "hkv": r["hkv"],
                "compute_s": c,
                "comm_s": m,
                "both_s": both,
                "measured_hidden": (c + m - both) / m,
                "pred_hidden": fitted.hidden_fraction,
                "pred_host_bound": bool(fitted.stall_s > 0),
                "step_err_ideal_overlap": ideal.step_s / both - 1.0,
                "step_err_fitted": fitted.step_s / both - 1.0,
                "step_err_held_out": held.step_s / both - 1.0,
                "held_out": r["block_tokens"] not in RING_TRAIN_BLOCKS,
                "model_compute_s": mod.compute_s,
                "model_comm_s": mod.comm_s,
                "model_step_s": mod.step_s,
                "step_err_model": mod.step_s / both - 1.0,
            }
        )
    return {
        "fit": fit,
        "fit_train_blocks": fit_tr,
        "train_blocks": list(RING_TRAIN_BLOCKS),
        "errors_fitted": _ring_errors(ring_rows, rs),
        "errors_held_out": _ring_errors(test, rs_tr),
        "errors_ideal": _ring_errors(ring_rows, RingStepModel()),
        "errors_overlap_only_fitted": _ring_errors(ring_rows, RingStepModel(fit["overlap"])),
        "points": pts,
    }


def ring_step_overlap_from_model(r: dict, gpu, prof, rs):
    """The step from the model's own attention (calibrated attention_prefill) and send/recv costs."""
    import dataclasses

    from perfmodel.costs.collectives import collective_time
    from perfmodel.costs import op_cost
    from perfmodel.ops import Attention, OpKind, Phase
    from perfmodel.parallel import ring_step_overlap

    att = Attention(
        Phase.PREFILL, 1, r["block_tokens"], r["block_tokens"], r["hq"], r["hkv"], r["head_dim"], causal=False
    )
    c = max(float(op_cost(att, gpu, prof).total_s), rs.compute_issue_s)
    m = collective_time(OpKind.SEND_RECV, r["kv_block_bytes"], r["world"], gpu, prof)
    return ring_step_overlap(c, float(m.total_s), dataclasses.replace(rs, comm_issue_s=float(m.latency_s)))


def report(data: str, ring: str | None = None, write_profile: bool = False) -> dict:
    """Fit every class in ``data``, evaluate, optionally write the H200 profile's collective classes."""
    from perfmodel.calibration import Mode, OpClass, Profile

    rows = load_rows(data)
    ops = [op for op in (*COLL_OPS, "send_recv") if any(r.get("op") == op for r in rows)]
    fits = {op: fit_class(rows, op) for op in ops}
    res: dict = {"fits": fits, "errors": evaluate(rows, fits)}
    # held out: fit on the power-of-two sizes, score on the 1.5x sizes between them
    pow2 = [r for r in rows if r["bytes"] & (r["bytes"] - 1) == 0]
    mids = [r for r in rows if r["bytes"] & (r["bytes"] - 1) != 0]
    res["errors_held_out"] = evaluate(mids, {op: fit_class(pow2, op) for op in ops})
    from perfmodel.calibration import shipped_profile_path

    base = {}
    if shipped_profile_path(FIT_GPU).exists():  # attention and the rest from the shipped profile
        from perfmodel.calibration import load_profile_file

        base = dict(load_profile_file(shipped_profile_path(FIT_GPU), FIT_GPU).classes)
    base.update({OpClass(k): class_params(v) for k, v in fits.items()})
    prof = Profile(FIT_GPU, Mode.CALIBRATED, base)
    res["ring_profile"] = (
        "shipped H200 profile with these collective fits" if len(base) > len(fits) else "collective fits only"
    )
    if ring and Path(ring).exists():
        res["ring"] = evaluate_ring(load_rows(ring), prof, fits["send_recv"]["latency_s"])
    if write_profile:
        env_path = Path(data).with_name(Path(data).stem + "_env.json")
        ring_fit = res.get("ring", {}).get("fit")
        write_profile_classes(
            fits,
            json.loads(env_path.read_text()) if env_path.exists() else {},
            data,
            ring_fit=ring_fit,
            ring_data=ring,
        )
    return res


def write_profile_classes(
    fits: dict[str, dict], env: dict, data: str, ring_fit: dict | None = None, ring_data: str | None = None
) -> Path:
    """Add or replace only the collective classes, the Ring step (if fitted) and their provenance
    in the H200 profile."""
    from perfmodel.calibration import shipped_profile_path

    path = shipped_profile_path(FIT_GPU)
    prof = (
        json.loads(path.read_text())
        if path.exists()
        else {"schema_version": 1, "gpu": FIT_GPU, "classes": {}}
    )
    for op, f in fits.items():
        prof["classes"][op] = {k: float(f"{f[k]:.4g}") for k in PROFILE_KEYS}
    prof.setdefault("measured_on", {})["collectives"] = {
        "source": f"validation/collectives.py fit of {Path(data).name} (NCCL via torch.distributed, 1 process per GPU)",
        "path": "2 GPUs of one host; latency_s is per algorithm step, memory_eff (tail_memory_eff beyond "
        "knee_bytes per rank) of 450 GB/s per direction",
        "gpu": env.get("nvidia_smi", ""),
        "versions (python torch cuda nccl ngpu peer)": env.get("versions", ""),
        "date": env.get("date_utc", ""),
        "env": env.get("env", {}),
    }
    if ring_fit:
        prof["ring_attention_step"] = {
            "overlap": float(f"{ring_fit['overlap']:.4g}"),
            "compute_issue_s": float(f"{ring_fit['compute_issue_s']:.4g}"),
            "comm_issue_s": None,  # the fit's issue cost is the send_recv class's latency: read it from there
            "sync_s": float(f"{ring_fit['sync_s']:.4g}"),
            "source": f"validation/collectives.py ring fit of {Path(ring_data or '').name} "
            f"({env.get('date_utc', '')})",
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(prof, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perfmodel.validation.collectives")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("--nproc", type=int, default=2)
    m.add_argument("--parts", default="coll,p2p,ring")
    m.add_argument("--max-bytes", type=int, default=2**30)
    m.add_argument("--min-bytes", type=int, default=4096)
    w = sub.add_parser("worker")
    w.add_argument("--part", required=True)
    w.add_argument("--items", required=True)
    w.add_argument("--out", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--data", default=str(DATA_DIR / "collectives_h200x2.jsonl"))
    f.add_argument("--ring", default=str(DATA_DIR / "collectives_h200x2_ring.jsonl"))
    f.add_argument(
        "--write-profile", action="store_true", help="replace the collective classes of the H200 profile"
    )
    args = ap.parse_args(argv)
    if args.cmd == "measure":
        measure(args.out, args.nproc, args.parts.split(","), args.max_bytes, args.min_bytes)
    elif args.cmd == "worker":
        worker(args.part, args.items.split(","), args.out)
    else:
        print(json.dumps(report(args.data, args.ring, args.write_profile), indent=1))
    return 0


DATA_DIR = Path(__file__).resolve().parent / "data"

if __name__ == "__main__":
    raise SystemExit(main())
