"""One process per GPU without torchrun: start ``world`` ranks, join them under a wall-clock limit.

:func:`launch` starts the ranks with the ``spawn`` start method (a fresh interpreter each, as
CUDA requires), each in its own process group, and kills every rank that is still alive when the
limit passes or when one rank fails (a collective whose peer died never returns).  A rank calls
:func:`init_rank` first: it sets the device, joins the process group (NCCL with ``device_id``, or
gloo on the CPU for a dry run) and checks an all-reduce sum.

NVLink multicast stays off in every rank (:data:`SAFE_ENV`): a program that uses it can put a
host's GPUs out of service.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
#: seconds a collective may wait before the process group gives up (NCCL watchdog, gloo timeout)
PG_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LaunchResult:
    """How a launch ended: each rank's exit code (None: killed) and why it was stopped, if it was."""

    exit_codes: tuple[int | None, ...]
    stopped: str = ""

    @property
    def ok(self) -> bool:
        return not self.stopped and all(c == 0 for c in self.exit_codes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(fn: Callable, rank: int, world: int, port: int, args: tuple) -> None:
    os.environ.update(
        SAFE_ENV,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        PYTHONUNBUFFERED="1",
    )
    try:
        os.setpgrp()  # its own group: a kill reaches the threads and helpers it started
    except OSError:  # pragma: no cover
        pass
    fn(rank, world, *args)


def launch(
    fn: Callable,
    world: int,
    args: tuple = (),
    timeout_s: float = 600.0,
    stall_s: float = 0.0,
    progress: Callable[[], int] | None = None,
    startup_s: float = 90.0,
    poll_s: float = 0.2,
) -> LaunchResult:
    """Run ``fn(rank, world, *args)`` in ``world`` spawned processes; wait at most ``timeout_s``.

    ``fn`` must be importable (a module-level function).  A rank that exits non-zero stops the
    others at once; at the limit every live rank is killed, and so they are when ``progress()``
    (say, records written) stays the same for ``stall_s`` seconds (``startup_s`` more before the
    first change: process start, CUDA and NCCL initialisation); ``stall_s`` 0 turns that off.
    """
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world, port, args), daemon=False) for r in range(world)]
    for p in procs:
        p.start()
    start = last = time.time()
    seen = progress() if progress else 0
    stopped = ""
    while any(p.is_alive() for p in procs):
        now = time.time()
        if progress:
            n = progress()
            if n != seen:
                seen, last = n, now
        bad = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if bad:
            stopped = f"a rank exited with status {bad[0]}"
            break
        if now - start > timeout_s:
            stopped = f"time limit of {timeout_s:.0f} s reached"
            break
        if stall_s and now - last > stall_s + (startup_s if last == start else 0.0):
            stopped = f"no progress for {now - last:.0f} s (hang)"
            break
        time.sleep(poll_s)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(timeout=10)
    bad = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
    if bad and not stopped:
        stopped = f"a rank exited with status {bad[0]}"
    return LaunchResult(tuple(p.exitcode for p in procs), stopped)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def run_items(
    fn: Callable,
    world: int,
    items: list[str],
    out: Path,
    budget_s: float,
    args: tuple = (),
    stall_s: float = 60.0,
    key: Callable[[dict], str] = lambda r: r["item"],
) -> list[dict]:
    """Launch ``fn(rank, world, todo, out, *args)`` until every item of ``items`` has a record in ``out``
    (rank 0 appends them, keyed by ``key`` and ``world``) or ``budget_s`` is spent.

    After a crash or a hang the first item without a record is written off as failed and the rest
    relaunched.  Returns the failures, ``{"item", "world", "failed"}`` each.
    """

    def done() -> set[str]:
        return {key(r) for r in read_jsonl(out) if r.get("world") == world}

    failures: list[dict] = []
    start = time.time()
    todo = [i for i in items if i not in done()]
    while todo:
        left = budget_s - (time.time() - start)
        if left < 10:
            failures += [{"item": i, "world": world, "failed": "not run: time budget spent"} for i in todo]
            break
        res = launch(
            fn,
            world,
            (todo, str(out), *args),
            timeout_s=left,
            stall_s=stall_s,
            progress=lambda: len(read_jsonl(out)),
        )
        got = done()
        todo = [i for i in todo if i not in got]
        if res.ok or not todo:
            break
        why = res.stopped or f"exit codes {res.exit_codes}"
        failures.append({"item": todo[0], "world": world, "failed": why})
        print(f"[world {world}] {todo[0]} failed: {why}; going on", flush=True)
        todo = todo[1:]
    return failures


def init_rank(rank: int, world: int, dry_run: bool):
    """Join the process group; the rank's device (``cuda:rank``, or the CPU with gloo for a dry run)."""
    import torch
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=PG_TIMEOUT_S)
    if dry_run:
        dev = torch.device("cpu")
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    else:
        dev = torch.device("cuda", rank)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", rank=rank, world_size=world, timeout=timeout, device_id=dev)
    x = torch.full((256,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    want = world * (world + 1) / 2
    if float(x[0]) != want:
        raise RuntimeError(f"all-reduce sum check gave {float(x[0])}, want {want}")
    return dev


def nccl_env() -> dict[str, str]:
    """The NCCL and multicast variables set in this process."""
    return {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith(("NCCL_", "TORCH_NCCL_", "NVSHMEM_")) or k in SAFE_ENV
    }


def versions(device) -> dict:
    """GPU, driver, torch, CUDA and NCCL versions and the date, for each record."""
    import torch

    from perfmodel.validation.records import canonical_gpu
    from perfmodel.validation.run import driver_version

    cuda = getattr(device, "type", str(device)) == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    nccl = None
    if cuda:
        try:
            nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
        except Exception:  # pragma: no cover
            nccl = None
    return {
        "gpu": name,
        "gpu_model": canonical_gpu(name) if cuda else None,
        "driver": driver_version() if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": nccl,
        "date": datetime.date.today().isoformat(),
        "nccl_env": nccl_env(),
    }
