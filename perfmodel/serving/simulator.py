"""Discrete-event simulation of replicas behind a router.

Events are request arrivals and iteration ends.  An arrival is routed at
once (round robin, or to the replica with the fewest outstanding requests)
and waits for that replica's next iteration; a replica with work starts its
next iteration as soon as the previous one ends.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

import numpy as np

from perfmodel.errors import InvalidInputError
from perfmodel.prefix_cache import Tier, tier_rate
from perfmodel.serving.deployment import Deployment, Router, check_fits_alone, kv_tokens_kept, replica_memory
from perfmodel.serving.metrics import SimResult
from perfmodel.serving.scheduler import Replica, RequestTable
from perfmodel.serving.timing import IterationTimer
from perfmodel.serving.workload import Requests, Workload

ProgressFn = Callable[[int, int], None]


def build_timer(dep: Deployment, max_kv_tokens: int, mem=None) -> IterationTimer:
    """Tables for ``dep`` covering sequences up to ``max_kv_tokens`` tokens (``mem``: the replica's memory,
    by default :func:`replica_memory` of ``dep``).

    Parameters
    ----------
    dep : Deployment
        The deployment.
    max_kv_tokens : int
        The longest sequence the tables cover, tokens.
    mem : ReplicaMemory, optional
        The replica's memory; default: :func:`replica_memory` of ``dep``.

    Returns
    -------
    IterationTimer
        Iteration-time tables (seconds) up to ``max_kv_tokens`` tokens and the largest batch that fits.
    """
    mem = replica_memory(dep) if mem is None else mem
    min_blocks = mem.blocks_for(1)
    max_batch = max(1, min(dep.max_num_seqs, mem.capacity_blocks // max(min_blocks, 1)))
    return IterationTimer(dep, max(int(max_kv_tokens), 2), max_batch, mem)


def simulate(
    dep: Deployment,
    requests: Requests | Workload,
    record_timeline: bool = True,
    progress: ProgressFn | None = None,
    timer: IterationTimer | None = None,
    max_concurrency: int | None = None,
) -> SimResult:
    """Serve ``requests`` on ``dep``; every request runs to completion.

    ``max_concurrency`` makes the client a closed loop, as ``vllm bench serve --max-concurrency``:
    at most that many requests are in flight, and a request is sent at its arrival time or when
    one in flight finishes, whichever is later.  Its latencies count from the time it is sent
    (``SimResult.arrival_s`` holds the send times).

    The deployment's knobs (``dep.knobs``) shape the KV and the costs; see
    ``docs/serving.md``.

    Parameters
    ----------
    dep : Deployment
        Model, GPU, parallelism, replicas and scheduler settings.
    requests : Requests or Workload
        The requests (arrival times in seconds, prompt and output lengths in tokens), or a workload
        that generates them.
    record_timeline : bool
        Keep the per-iteration timeline (``SimResult.timeline_frame``).
    progress : callable or None
        Called as ``progress(completed, total)`` (requests) as the simulation advances.
    timer : IterationTimer or None
        A prebuilt iteration timer for ``dep`` (reused across simulations).
    max_concurrency : int or None, requests
        Closed-loop client: at most this many requests in flight.

    Returns
    -------
    SimResult
        Per-request times (seconds), the timeline, notes; ``summary()`` gives TTFT, TPOT and E2E
        percentiles (seconds), throughput (tokens/s) and goodput (requests/s).

    Raises
    ------
    InvalidInputError
        For requests that are not :class:`Requests` or a :class:`Workload`.  A request beyond the
        model's trained window is simulated, with a note in ``SimResult.notes``.
    KnobError
        When a knob does not fit the model or the requests (a window longer
        than the shortest prompt).
    DoesNotFitError
        When a request's KV does not fit in a replica's HBM even alone.
    """
    reqs = requests.generate() if isinstance(requests, Workload) else requests
    if not isinstance(reqs, Requests):
        raise InvalidInputError(f"requests must be Requests or Workload, got {type(requests).__name__}")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise InvalidInputError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
    dep.check_knobs(int(reqs.prompt_len.min()))
    cached = _check_prefixes(dep, reqs)
    mem = replica_memory(dep, cached)
    totals = reqs.prompt_len + reqs.output_len
    longest = int(np.argmax(totals))
    check_fits_alone(dep, mem, int(reqs.prompt_len[longest]), int(reqs.output_len[longest]))
    # the tables' key axis is the sequence length (the knobs and the window decide the keys read)
    biggest = max(int(totals.max()) if dep.knobs is not None else kv_tokens_kept(dep, int(totals.max())), 2)
    if timer is None or timer.dep != dep or timer.max_kv_tokens < biggest:
        timer = build_timer(dep, int(totals.max()), mem)
    wall0 = time.perf_counter()
    table = RequestTable(reqs.arrival_s, reqs.prompt_len, reqs.output_len, *_prefix_columns(dep, mem, reqs))
    replicas = [Replica(k, dep, mem, timer, table, record_timeline) for k in range(dep.replicas)]
    _run(replicas, table, dep.router, progress, max_concurrency)
    wall = time.perf_counter() - wall0
    res = SimResult.collect(dep, mem, reqs, table, replicas, wall)
    from dataclasses import replace

    from perfmodel.scenario import check_world, window_note

    notes = tuple(
        n
        for n in (
            window_note(dep.model, int(totals.max())),
            check_world(dep.gpu, [dep.tp], dep.pp, 1, dep.ep, None),
        )
        if n
    )
    return replace(res, notes=notes) if notes else res


def _check_prefixes(dep: Deployment, reqs: Requests) -> tuple[int, ...]:
    """The tokens of each prefix cached in HBM (held once per replica); raises for a deployment the
    workload's cached prefixes do not combine with."""
    if not reqs.prefixes:
        return ()
    k = dep.knobs
    if dep.model.ssm is not None:
        raise InvalidInputError(f"{dep.model.name} is a state-space stack: it keeps no prefix KV to cache")
    if k is not None and (k.shared_prefix_tokens or k.prune_prefill):
        raise InvalidInputError(
            "cached prefixes (--prefix) take neither --shared-prefix-tokens (one prefix held "
            "for every request) nor --prune-prefill"
        )
    return tuple(p.tokens for p in reqs.prefixes if p.tier is Tier.HBM and p.hit_rate > 0)


def _prefix_columns(dep: Deployment, mem, reqs: Requests) -> tuple:
    """Per request: cached prompt tokens, of which in shared HBM blocks, and the load seconds and bytes per
    GPU of the rest (:mod:`perfmodel.prefix_cache`'s tier rates); ``()`` without prefixes."""
    if not reqs.prefixes:
        return ()
    cached = reqs.cached_tokens()
    n = len(reqs)
    shared, load_s, load_bytes = np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
    for k, p in enumerate(reqs.prefixes):
        on = reqs.prefix_hit & (reqs.prefix_id == k)
        if p.tier is Tier.HBM:
            shared[on] = p.tokens
        else:
            nbytes = dep.kept_tokens(p.tokens) * mem.kv_bytes_per_token_per_gpu
            load_bytes[on] = nbytes
            load_s[on] = nbytes / tier_rate(p.tier, p.bytes_per_s, dep.gpu)
    return cached, shared, load_s, load_bytes


def _run(
    replicas: list[Replica],
    table: RequestTable,
    router: Router,
    progress: ProgressFn | None,
    max_concurrency: int | None = None,
) -> None:
    arrival = table.arrival
    n = len(arrival)
    busy: list[tuple[float, int]] = []
    rr = 0
    ai = 0
    inf = math.inf
    tick = 0
    # closed loop: the times at which a client slot is free (one entry per free slot)
    slots: list[float] | None = None if max_concurrency is None else [0.0] * min(max_concurrency, n)
    # the engine's front end: one request at a time per replica; a request reaches the scheduler when
    # its front end has handled it (``ready``: (time, request, replica))
    engine = replicas[0].dep.engine
    frontend_s = engine.frontend_s if engine is not None else 0.0
    blocks = frontend_s > 0.0 and engine.frontend_blocks_engine
    frontend_free = [0.0] * len(replicas)
    ready: list[tuple[float, int, int]] = []
    while True:
        if ai >= n:
            t_arr = inf
        elif slots is None:
            t_arr = arrival[ai]
        else:
            t_arr = max(arrival[ai], slots[0]) if slots else inf
        t_ready = ready[0][0] if ready else inf
        t_rep = busy[0][0] if busy else inf
        if t_arr == inf and t_rep == inf and t_ready == inf:
            break
        if t_arr <= t_rep and t_arr <= t_ready:
            if router is Router.ROUND_ROBIN:
                rep = replicas[rr]
                rr = (rr + 1) % len(replicas)
            else:
                rep = min(replicas, key=_load) if len(replicas) > 1 else replicas[0]
            if slots is not None:
                heapq.heappop(slots)
                arrival[ai] = t_arr  # sent now: its latencies count from here
            if frontend_s > 0.0:
                t_in = max(t_arr, frontend_free[rep.index]) + frontend_s
                frontend_free[rep.index] = t_in
                rep.outstanding += 1  # the router sees it at once
                heapq.heappush(ready, (t_in, ai, rep.index))
            else:
                _admit(rep, ai, t_arr, busy)
            ai += 1
            continue
        if t_ready <= t_rep:
            t_in, i, k = heapq.heappop(ready)
            replicas[k].outstanding -= 1
            _admit(replicas[k], i, t_in, busy)
            continue
        t, k = heapq.heappop(busy)
        if blocks and frontend_free[k] > t:  # the front end holds the engine's loop: the step waits
            heapq.heappush(busy, (frontend_free[k], k))
            continue
        rep = replicas[k]
        done = table.completed
        dur = rep.step(t)
        if slots is not None:
            for _ in range(table.completed - done):
                heapq.heappush(slots, t + (dur or 0.0))
        if dur is None:
            rep.busy = False
        else:
            heapq.heappush(busy, (t + dur, k))
        tick += 1
        if progress is not None and not tick & 0xFFF:
            progress(table.completed, n)
    if progress is not None:
        progress(table.completed, n)
    if table.completed != n:  # pragma: no cover - a scheduler bug, never bad input
        raise RuntimeError(f"simulation ended with {n - table.completed} of {n} requests unfinished")


def _admit(rep: Replica, i: int, t: float, busy: list) -> None:
    """Request ``i`` reaches ``rep``'s scheduler at ``t``; an idle replica starts a step then."""
    rep.add(i)
    if not rep.busy:
        rep.busy = True
        heapq.heappush(busy, (t, rep.index))


def _load(rep: Replica) -> int:
    return rep.outstanding


def simulate_summary(job: tuple) -> dict:
    """``simulate(*job).summary()`` without the timeline: a picklable unit of work for ``parallel_map``
    (``(deployment, requests)``, or ``(deployment, requests, max_concurrency)``)."""
    dep, requests, *rest = job
    return simulate(dep, requests, record_timeline=False, max_concurrency=rest[0] if rest else None).summary()
