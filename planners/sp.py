"""Sequence-parallel split planner (FlexSP's MILP, arXiv 2412.01523 section 4, bucketed).

Given sequence lengths, ``N`` GPUs and per-sequence times ``t_i(d)`` for
power-of-two degrees ``d`` (:mod:`perfmodel.planners.sp_cost`), choose SP groups (degrees
summing to at most ``N``) and the sequences each runs, minimising the makespan::

    min C  s.t.  sum_q t_q(d_p) A[q,p] <= C            per virtual group p
                 sum_q mem_q(d_p) A[q,p] <= cap m_p    per-GPU KV memory (and A = 0 when unused)
                 sum_p A[q,p] = b_q                    every sequence once
                 sum_p d_p m_p <= N
                 m[d,j] >= m[d,j+1], load[d,j] >= load[d,j+1]   (symmetry)

with ``N / d`` virtual groups of each degree ``d``, ``A`` integer counts of
bucket ``q`` (``b_q`` sequences) in group ``p``, and a bucket's time and memory
those of its longest member (so a bucketed plan's true makespan is never
above the MILP's).  Buckets: at most ``buckets`` (default 16, FlexSP's Q),
chosen by FlexSP's DP that minimises the summed padding ``sum (s_hat - s)``;
with no more distinct lengths than buckets the model is exact.

With a topology (:attr:`SpInstance.gpus_per_node`), groups are placed on GPUs
respecting node boundaries: a group of ``d <=`` GPUs per node inside one node,
a larger one on whole nodes, exactly as :mod:`perfmodel.planners.sp_cost` priced it.
With micro-batches, a group runs its sequences as several micro-batches (packed
first-fit decreasing by KV footprint) so that only one micro-batch's KV cache
must be resident: the per-group memory row becomes a per-sequence one; the
time is unchanged (the sequences of a group run one after another either way).
The batch may then also run as two cluster-wide rounds, each with its own
groups (FlexSP's micro-batches): the longest sequences on large groups first,
then the rest on small ones; the makespan sums the rounds.

The solve starts from the best static strategy (one degree for all, sequences
balanced over ``N / d`` groups by longest-time-first with memory respected),
is capped by it, and the plan is never worse than any static strategy.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import pulp

from perfmodel.planners.errors import InfeasibleError, PlannerError
from perfmodel.progress import progress
from perfmodel.planners.solver import (
    SolverOptions,
    SolveStatus,
    check_model_size,
    new_var,
    relative_gap,
    solve,
)


@dataclass(frozen=True)
class SpInstance:
    """Cost tables of one batch.

    Attributes
    ----------
    lengths : ndarray [K], tokens
    gpus : int
    degrees : tuple[int, ...]
        Usable degrees (powers of two <= gpus; with a topology, dividing the GPUs per node or
        multiples of it).
    time_s : ndarray [K, D], seconds
        ``t_i(d)`` per sequence and degree.
    mem_tokens : ndarray [K, D], tokens
        Per-GPU KV footprint per sequence and degree.
    capacity_tokens : float, tokens
        KV tokens one GPU can hold.
    kinds : ndarray [K, D] of str or None
        The SP kind (``ulysses``, ``ring``, ``hybrid``) behind each ``time_s`` entry.
    gpus_per_node : int or None
        GPUs per node of the topology the times were priced on (None: one node).
    topology_name : str
    """

    lengths: np.ndarray
    gpus: int
    degrees: tuple[int, ...]
    time_s: np.ndarray
    mem_tokens: np.ndarray
    capacity_tokens: float
    kinds: np.ndarray | None = None  # [K, D] str: the SP kind each sequence uses at each degree
    gpus_per_node: int | None = None  # None: all GPUs one node
    topology_name: str = ""

    def feasible(self) -> np.ndarray:
        """``[K, D]``: sequence fits one GPU's memory at that degree."""
        return self.mem_tokens <= self.capacity_tokens * (1 + 1e-12)


def check_gpus(gpus) -> int:
    if isinstance(gpus, bool) or not isinstance(gpus, (int, np.integer)) or gpus < 1:
        raise InfeasibleError(f"need at least one GPU, got {gpus!r}")
    return int(gpus)


def build_instance(lengths, gpus: int, cost) -> SpInstance:
    """Tables from an :class:`perfmodel.planners.sp_cost.SpCostModel`; raises if a sequence fits on no group."""
    gpus = check_gpus(gpus)
    s = np.asarray(lengths)
    if s.ndim != 1 or s.size == 0:
        raise PlannerError("lengths must be a non-empty list of sequence lengths")
    if not np.all(np.isfinite(s)) or np.any(s < 1) or np.any(np.floor(s) != s):
        raise PlannerError("sequence lengths must be positive integers")
    system = getattr(cost, "system", None)
    check_topology(gpus, system)
    gpn = getattr(cost, "gpus_per_node", None)
    degrees = tuple(d for d in (1 << i for i in range(gpus.bit_length())) if d <= gpus and cost.degree_ok(d))
    cap = cost.capacity_tokens()
    chosen = [cost.choose(s, d) for d in degrees]
    t = np.stack([c[0] for c in chosen], axis=1)
    mem = np.stack([c[1] for c in chosen], axis=1)
    kinds = np.array([[k.value for k in c[2]] for c in chosen], dtype=object).T
    name = system.name if system is not None else ""
    if system is None and gpn is not None:
        name = f"{cost.gpu.name} nodes of {gpn} (default)"
    inst = SpInstance(
        s.astype(np.int64),
        gpus,
        degrees,
        t,
        mem,
        cap,
        kinds,
        None if gpn is None else min(int(gpn), gpus),
        name,
    )
    check_fits(inst)
    return inst


def check_topology(gpus: int, topology) -> None:
    """A named system must hold the GPUs."""
    if topology is None:
        return
    gpn, total = int(topology.gpus_per_node), int(topology.world_size)
    if gpus > total:
        raise InfeasibleError(
            f"{gpus} GPUs requested; {topology.name} has {total} ({topology.num_nodes} node(s) of {gpn})"
        )


BUILD_S_PER_VARIABLE = 5e-5
"""seconds per MILP variable to build the model and hand it to HiGHS (measured: 7 s for 4096 GPUs x 16
buckets, 139K variables)."""


def milp_variables(gpus: int, buckets: int) -> int:
    """Variables of the bucketed MILP at most: ``A[q,p]`` and ``m_p`` over ``sum_d N / d`` virtual groups
    (every power-of-two degree ``d <= N``), and ``C``."""
    groups = sum(gpus // (1 << i) for i in range(int(gpus).bit_length()))
    return groups * (buckets + 1) + 1


def check_size(gpus: int, buckets: int) -> None:
    """Refuse (:class:`perfmodel.planners.errors.TooLargeError`, naming the GPU count) an instance whose MILP
    would exceed :data:`perfmodel.planners.solver.MAX_MILP_VARIABLES`; cheap, before any table is built."""
    check_model_size(milp_variables(gpus, buckets), f"{gpus:,} GPUs x {buckets} length buckets")


def check_fits(inst: SpInstance) -> None:
    ok = inst.feasible().any(axis=1)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        d = inst.degrees[-1]
        raise InfeasibleError(
            f"sequence {i} ({int(inst.lengths[i]):,} tokens) fits on no group: it needs "
            f"{inst.mem_tokens[i, -1]:,.0f} KV tokens per GPU even at degree {d}, and one GPU holds "
            f"{inst.capacity_tokens:,.0f} ({int((~ok).sum())} sequence(s) do not fit)"
        )


@dataclass(frozen=True)
class SpGroup:
    degree: int
    gpus: tuple[int, ...]
    sequences: tuple[int, ...]
    time_s: float
    nodes: tuple[int, ...] = (0,)
    sp_kinds: dict[str, int] = field(default_factory=dict)
    micro_batches: tuple[tuple[int, ...], ...] = ()
    round: int = 0  # cluster-wide round (micro-batches only): rounds run one after another

    def to_dict(self) -> dict:
        return {
            "degree": self.degree,
            "gpus": list(self.gpus),
            "sequences": list(self.sequences),
            "time_s": self.time_s,
            "nodes": list(self.nodes),
            "sp_kinds": dict(self.sp_kinds),
            "micro_batches": [list(b) for b in self.micro_batches],
            "round": self.round,
        }


@dataclass(frozen=True)
class SpPlan:
    groups: tuple[SpGroup, ...]
    makespan_s: float
    lower_bound_s: float
    baselines: dict[str, float | None] = field(default_factory=dict)
    solver: dict = field(default_factory=dict)
    topology: dict | None = None

    def to_dict(self) -> dict:
        from perfmodel.jsonout import jsonable

        return jsonable(
            {
                "groups": [g.to_dict() for g in self.groups],
                "makespan_s": self.makespan_s,
                "lower_bound_s": self.lower_bound_s,
                "baselines": dict(self.baselines),
                "solver": dict(self.solver),
                "topology": self.topology,
            }
        )


def lower_bound(inst: SpInstance) -> float:
    """``max(sum_i min_d d t_i(d) / N, max_i min_d t_i(d))`` over the degrees where each sequence fits."""
    ok = inst.feasible()
    d = np.asarray(inst.degrees, dtype=float)
    area = np.where(ok, inst.time_s * d[None, :], np.inf).min(axis=1)
    single = np.where(ok, inst.time_s, np.inf).min(axis=1)
    return float(max(area.sum() / inst.gpus, single.max()))


def static_assign(
    time_s: np.ndarray, mem: np.ndarray, groups: int, cap: float, micro_batches: bool = False
) -> list[list[int]] | None:
    """Longest-time-first into the least-loaded group with memory room (with micro-batches: any group,
    each sequence fitting alone); None if something cannot fit."""
    load, used = np.zeros(groups), np.zeros(groups)
    group_cap = np.inf if micro_batches else cap
    out: list[list[int]] = [[] for _ in range(groups)]
    for i in np.argsort(-time_s, kind="stable"):
        if mem[i] > cap * (1 + 1e-12):
            return None
        for g in np.argsort(load, kind="stable"):
            if used[g] + mem[i] <= group_cap * (1 + 1e-12):
                break
        else:
            return None
        out[g].append(int(i))
        load[g] += time_s[i]
        used[g] += mem[i]
    return out


def bucketize(lengths: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket index of each sequence; buckets are contiguous in length and minimise summed padding."""
    vals, inv, counts = np.unique(lengths, return_inverse=True, return_counts=True)
    u = len(vals)
    if u <= buckets:
        return inv
    # pre-merge to at most 512 groups of equal count, then the exact DP on the groups
    grp_of_val = np.minimum((np.cumsum(counts) - 1) * 512 // counts.sum(), 511) if u > 512 else np.arange(u)
    gi = np.unique(grp_of_val, return_inverse=True)[1]
    n_g = gi.max() + 1
    if n_g <= buckets:
        return gi[inv]
    top = np.array([vals[gi == j].max() for j in range(n_g)], dtype=float)
    cnt = np.array([counts[gi == j].sum() for j in range(n_g)], dtype=float)
    tot = np.array([(vals[gi == j] * counts[gi == j]).sum() for j in range(n_g)], dtype=float)
    cc, ct = np.concatenate([[0], np.cumsum(cnt)]), np.concatenate([[0], np.cumsum(tot)])

    def cost(a, b):  # groups a..b inclusive padded to top[b]
        return top[b] * (cc[b + 1] - cc[a]) - (ct[b + 1] - ct[a])

    inf = np.inf
    dp = np.full((buckets + 1, n_g), inf)
    arg = np.zeros((buckets + 1, n_g), dtype=np.int64)
    dp[1] = [cost(0, b) for b in range(n_g)]
    for q in range(2, buckets + 1):
        for b in range(n_g):
            a = np.arange(1, b + 1)
            if a.size == 0:
                dp[q, b] = dp[q - 1, b]
                arg[q, b] = -1
                continue
            vals_q = dp[q - 1, a - 1] + top[b] * (cc[b + 1] - cc[a]) - (ct[b + 1] - ct[a])
            k = int(np.argmin(vals_q))
            dp[q, b], arg[q, b] = vals_q[k], a[k]
    bucket_of_group = np.zeros(n_g, dtype=np.int64)
    b, q = n_g - 1, buckets
    while b >= 0 and q >= 1:
        a = arg[q, b] if q > 1 else 0
        if a < 0:
            q -= 1
            continue
        bucket_of_group[a : b + 1] = q - 1
        b, q = a - 1, q - 1
    return np.unique(bucket_of_group[gi[inv]], return_inverse=True)[1]


def place_groups(degrees: list[int], gpus: int, gpus_per_node: int | None) -> list[tuple[int, ...]]:
    """GPU ids of each group (in the order given), respecting node boundaries.

    Nodes hold ``gpus_per_node`` GPUs (None: all ``gpus`` are one node).  Largest groups first: a group
    of at least a node takes whole free nodes; a smaller one goes to the fullest node with room, at
    the node's next free GPU.  Degrees that divide the node size (or are multiples of it) and sum to
    at most ``gpus`` always fit this way; anything else raises :class:`PlannerError`.
    """
    gpn = int(gpus_per_node or gpus)
    n_nodes = max(1, -(-gpus // gpn))
    size = [min(gpn, gpus - k * gpn) for k in range(n_nodes)]
    used = [0] * n_nodes
    out: list[tuple[int, ...] | None] = [None] * len(degrees)
    for i in sorted(range(len(degrees)), key=lambda i: -degrees[i]):
        d = int(degrees[i])
        if d > gpn:
            need = d // gpn
            free = [k for k in range(n_nodes) if used[k] == 0 and size[k] == gpn]
            if d % gpn or len(free) < need:
                raise PlannerError(f"cannot place a group of {d} GPUs on whole nodes of {gpn}")
            ids: list[int] = []
            for k in free[:need]:
                ids += range(k * gpn, k * gpn + gpn)
                used[k] = gpn
            out[i] = tuple(ids)
            continue
        room = [k for k in range(n_nodes) if size[k] - used[k] >= d]
        if not room:
            raise PlannerError(f"cannot place a group of {d} GPUs inside one node of {gpn}")
        k = min(room, key=lambda k: (size[k] - used[k], k))
        out[i] = tuple(range(k * gpn + used[k], k * gpn + used[k] + d))
        used[k] += d
    return out  # type: ignore[return-value]


def micro_batch_split(seqs: list[int], mem: np.ndarray, cap: float) -> tuple[tuple[int, ...], ...]:
    """First-fit decreasing of ``seqs`` by KV footprint ``mem[i]`` into micro-batches of at most ``cap``."""
    bins: list[list[int]] = []
    room: list[float] = []
    for i in sorted(seqs, key=lambda i: (-mem[i], i)):
        for b in range(len(bins)):
            if mem[i] <= room[b] * (1 + 1e-12):
                bins[b].append(i)
                room[b] -= mem[i]
                break
        else:
            bins.append([i])
            room.append(cap - mem[i])
    return tuple(tuple(sorted(b)) for b in bins)


def _layout(
    groups: list[tuple[int, list[int]]], inst: SpInstance, micro_batches: bool = False
) -> tuple[SpGroup, ...]:
    """GPU ids by decreasing degree (node-respecting aligned blocks) and exact group times."""
    col = {d: j for j, d in enumerate(inst.degrees)}
    groups = sorted(groups, key=lambda g: (-g[0], -len(g[1])))
    ids = place_groups([d for d, _ in groups], inst.gpus, inst.gpus_per_node)
    gpn = int(inst.gpus_per_node or inst.gpus)
    out = []
    for (d, seqs), gp in zip(groups, ids):
        j = col[d]
        t = float(inst.time_s[seqs, j].sum()) if seqs else 0.0
        kinds: dict[str, int] = {}
        if inst.kinds is not None:
            for i in seqs:
                kinds[str(inst.kinds[i, j])] = kinds.get(str(inst.kinds[i, j]), 0) + 1
        mem = inst.mem_tokens[:, j]
        mbs = (
            micro_batch_split(seqs, mem, inst.capacity_tokens)
            if micro_batches
            else ((tuple(sorted(seqs)),) if seqs else ())
        )
        nodes = tuple(sorted({g // gpn for g in gp}))
        out.append(SpGroup(d, gp, tuple(sorted(seqs)), t, nodes, kinds, mbs))
    return tuple(out)


def static_plans(inst: SpInstance, micro_batches: bool = False) -> dict[int, list[list[int]] | None]:
    """Per degree: the static strategy's groups (None when a sequence does not fit)."""
    return {
        d: static_assign(
            inst.time_s[:, j], inst.mem_tokens[:, j], inst.gpus // d, inst.capacity_tokens, micro_batches
        )
        for j, d in enumerate(inst.degrees)
    }


def mixed_split(
    inst: SpInstance,
    micro_batches: bool = False,
    time_s: np.ndarray | None = None,
    mem_tokens: np.ndarray | None = None,
    steps: int = 24,
    deadline: float | None = None,
) -> list[tuple[int, list[int]]] | None:
    """Groups of mixed degrees for a makespan target ``C`` found by bisection (None: nothing fits).

    For a target ``C`` the sequences are taken longest first; each goes where it adds the least
    GPU-time ``d t_i(d)`` with its group's load staying ``<= C`` (and memory fitting): into an open
    group, or into a new group of any degree while GPUs are left.  Short sequences so stay on small
    groups inside a node, or fill what the long ones leave of large groups, and only long ones pay
    for large groups over the NICs (FlexSP's point).  Degrees summing to at most ``N`` always fit
    whole nodes (:func:`place_groups`).
    """
    t = inst.time_s if time_s is None else time_s
    mem = inst.mem_tokens if mem_tokens is None else mem_tokens
    cap = inst.capacity_tokens
    deg = np.asarray(inst.degrees, dtype=np.int64)
    fits = mem <= cap * (1 + 1e-12)
    group_cap = np.inf if micro_batches else cap
    area = t * deg[None, :]
    order = np.argsort(-np.where(fits, t, np.inf).min(axis=1), kind="stable")
    tol = 1 + 1e-12

    def attempt(c: float, fill: float) -> list[tuple[int, list[int]]] | None:
        ok = fits & (t <= c * tol)
        if not ok.any(axis=1).all():
            return None
        gcol = np.zeros(inst.gpus, dtype=np.int64)  # open groups: degree column, load, KV
        gload, gmem = np.zeros(inst.gpus), np.zeros(inst.gpus)
        members: list[list[int]] = []
        free = inst.gpus
        for step, i in enumerate(order):
            if deadline is not None and step % 128 == 127 and time.perf_counter() > deadline:
                raise TimeoutError
            n = len(members)
            best, where = np.inf, -1
            if n:
                cols = gcol[:n]
                room = (
                    (gload[:n] + t[i, cols] <= c * tol)
                    & (gmem[:n] + mem[i, cols] <= group_cap * tol)
                    & fits[i, cols]
                )
                if room.any():
                    cost = np.where(room, area[i, cols], np.inf)
                    where = int(np.argmin(cost))
                    best = float(cost[where])
            new = np.where(ok[i] & (deg <= free), area[i], np.inf)
            j = int(np.argmin(new))
            if new[j] * (1 + fill) < best:
                gcol[n], gload[n], gmem[n] = j, t[i, j], mem[i, j]
                members.append([int(i)])
                free -= int(deg[j])
            elif where >= 0:
                gload[where] += t[i, gcol[where]]
                gmem[where] += mem[i, gcol[where]]
                members[where].append(int(i))
            else:
                return None
        return [(int(deg[gcol[k]]), members[k]) for k in range(len(members))]

    def span(groups) -> float:
        return max(float(t[x, inst.degrees.index(dg)].sum()) for dg, x in groups)

    # feasibility is not monotone in C (a tighter C moves a long sequence to a larger group whose
    # slack then goes unused): scan C geometrically, then bisect below the best target found
    lo = max(lower_bound(inst) if time_s is None else 0.0, 1e-12)
    hi = float(np.where(fits, t, np.inf).min(axis=1).sum())
    if not np.isfinite(hi):
        return None
    try:
        best_plan = attempt(hi, 0.0)
    except TimeoutError:
        return None
    if best_plan is None:
        return None
    best_span = span(best_plan)
    try:
        best_plan = _scan(attempt, span, lo, hi, steps, best_plan, best_span, deadline)
    except _Late as late:
        best_plan = late.plan
    return best_plan


class _Late(Exception):
    def __init__(self, plan):
        self.plan = plan


def _scan(
    attempt, span, lo: float, hi: float, steps: int, best_plan, best_span: float, deadline: float | None
):
    """:func:`mixed_split`'s search over targets and fill shares; raises :class:`_Late` (with the best
    plan so far) at the deadline."""

    def tryit(c: float, fill: float):
        if deadline is not None and time.perf_counter() > deadline:
            raise _Late(best_plan)
        try:
            return attempt(c, fill)
        except TimeoutError:
            raise _Late(best_plan) from None

    for fill in (0.0, 0.02, 0.1, 0.5):
        if deadline is not None and time.perf_counter() > deadline:
            break
        best_c, below = hi, lo
        for c in np.geomspace(lo, hi, steps):
            got = tryit(float(c), fill)
            if got is None:
                below = float(c) if c < best_c else below
            elif float(c) < best_c:
                best_c = float(c)
                if span(got) < best_span:
                    best_plan, best_span = got, span(got)
        a, b = below, best_c
        for _ in range(steps // 2):
            if b - a <= 1e-4 * b:
                break
            mid = (a + b) / 2
            got = tryit(mid, fill)
            if got is None:
                a = mid
            else:
                b = mid
                if span(got) < best_span:
                    best_plan, best_span = got, span(got)
    return best_plan


def _makespan(groups: tuple[SpGroup, ...]) -> float:
    """The slowest group's time, summed over rounds (rounds run one after another)."""
    rounds: dict[int, float] = {}
    for g in groups:
        rounds[g.round] = max(rounds.get(g.round, 0.0), g.time_s)
    return sum(rounds.values())


def _subset(inst: SpInstance, idx: np.ndarray) -> SpInstance:
    return dataclasses.replace(
        inst,
        lengths=inst.lengths[idx],
        time_s=inst.time_s[idx],
        mem_tokens=inst.mem_tokens[idx],
        kinds=None if inst.kinds is None else inst.kinds[idx],
    )


def two_rounds(inst: SpInstance, micro_batches: bool, deadline: float) -> tuple[SpGroup, ...] | None:
    """The batch in two cluster-wide rounds (FlexSP's micro-batches, each with its own groups): the ``k``
    longest sequences first, then the rest, each round a :func:`mixed_split`; ``k`` in 1, 2, 4, ...
    The best such plan (None when none was found in time)."""
    order = np.argsort(-inst.lengths, kind="stable")
    best, best_s = None, np.inf
    k = 1
    while k < len(order) and time.perf_counter() < deadline:
        parts = [order[:k], order[k:]]
        plans = []
        for r, idx in enumerate(parts):
            got = mixed_split(_subset(inst, idx), micro_batches, deadline=deadline)
            if got is None:
                break
            lay = _layout([(d, [int(idx[i]) for i in x]) for d, x in got], inst, micro_batches)
            plans += [dataclasses.replace(g, round=r) for g in lay]
        else:
            ms = _makespan(tuple(plans))
            if ms < best_s:
                best, best_s = tuple(plans), ms
        k *= 2
    return best


def _milp(
    inst: SpInstance,
    bucket: np.ndarray,
    start: list[tuple[int, list[int]]] | None,
    lb: float,
    options: SolverOptions,
    deadline: float,
    micro_batches: bool = False,
):
    """Bucketed MILP, solved by ``deadline`` (``time.perf_counter()``, model building included);
    returns (groups as [(degree, [sequence ids])] or None, SolveResult or None)."""
    t_build = time.perf_counter()
    nq = int(bucket.max()) + 1
    members = [np.flatnonzero(bucket == q) for q in range(nq)]
    members = [m[np.argsort(-inst.lengths[m], kind="stable")] for m in members]
    b = [len(m) for m in members]
    tq = np.array([inst.time_s[m].max(axis=0) for m in members])  # [Q, D]
    mq = np.array([inst.mem_tokens[m].max(axis=0) for m in members])
    cap = inst.capacity_tokens
    vgroups = [(j, d, k) for j, d in enumerate(inst.degrees) for k in range(inst.gpus // d)]
    prob = pulp.LpProblem("sp_split", pulp.LpMinimize)
    ub = None
    if (
        start is not None
    ):  # a plan in bucket space (groups of any degrees): a feasible point and an upper bound
        # per degree, groups by non-increasing bucketed load (the symmetry rows' order)
        loads0 = sorted(
            ((d, float(tq[bucket[s], inst.degrees.index(d)].sum()) if s else 0.0, s) for d, s in start),
            key=lambda t: (t[0], -t[1]),
        )
        ub = max((t[1] for t in loads0), default=0.0)
    c = new_var(prob, "C", low=0)
    prob += c
    m = {p: new_var(prob, f"m_{p}", cat=pulp.LpBinary) for p in range(len(vgroups))}
    a = {}
    for p, (j, d, k) in enumerate(vgroups):
        for q in range(nq):
            if mq[q, j] <= cap * (1 + 1e-12):
                a[q, p] = new_var(prob, f"a_{q}_{p}", low=0, up=b[q], cat=pulp.LpInteger)
    for q in range(nq):
        terms = [a[q, p] for p in range(len(vgroups)) if (q, p) in a]
        if not terms:
            return None, None
        prob += pulp.lpSum(terms) == b[q]
    load = {}
    for p, (j, d, k) in enumerate(vgroups):
        qs = [q for q in range(nq) if (q, p) in a]
        load[p] = pulp.lpSum(float(tq[q, j]) * a[q, p] for q in qs)
        prob += load[p] <= c
        if np.isfinite(cap) and not micro_batches:
            prob += pulp.lpSum(float(mq[q, j]) * a[q, p] for q in qs) <= cap * m[p]
        prob += pulp.lpSum(a[q, p] for q in qs) <= len(inst.lengths) * m[p]
        if k > 0:
            prob += m[p - 1] >= m[p]
            prob += load[p - 1] >= load[p]
    prob += pulp.lpSum(d * m[p] for p, (j, d, k) in enumerate(vgroups)) <= inst.gpus
    prob += c >= lb * (1 - 1e-9)
    warm = False
    if start is not None:
        prob += c <= ub * (1 + 1e-9) + 1e-12
        for v in list(m.values()) + list(a.values()):
            v.setInitialValue(0)
        c.setInitialValue(ub)
        rank: dict[int, int] = {}
        for d0, _, seqs in loads0:
            k = rank[d0] = rank.get(d0, -1) + 1
            p = next(p for p, (j, d, kk) in enumerate(vgroups) if d == d0 and kk == k)
            m[p].setInitialValue(1 if seqs else 0)
            for s in seqs:
                a[bucket[s], p].setInitialValue((a[bucket[s], p].varValue or 0) + 1)
        warm = True
    build = time.perf_counter() - t_build  # extraction and handing the model over take about as long
    res = solve(prob, options, max(0.05, deadline - time.perf_counter() - build), warm=warm)
    if res.objective is None:
        return None, res
    taken = [0] * nq
    groups = []
    for p, (j, d, k) in enumerate(vgroups):
        if (m[p].varValue or 0) < 0.5:
            continue
        seqs = []
        for q in range(nq):
            n = int(round(a[q, p].varValue or 0)) if (q, p) in a else 0
            seqs += members[q][taken[q] : taken[q] + n].tolist()
            taken[q] += n
        groups.append((d, seqs))
    if taken != b:
        return None, res
    return groups, res


def plan_sp(
    inst: SpInstance, options: SolverOptions | None = None, buckets: int = 16, micro_batches: bool = False
) -> SpPlan:
    """Plan the SP groups of one batch within ``options.time_limit_s``.

    ``micro_batches``: a group may run its sequences as several micro-batches, so only each
    sequence (not the group's whole set) must fit the GPUs' KV memory.
    """
    options = options or SolverOptions()
    t0 = time.perf_counter()
    deadline = options.deadline_from(t0)
    check_fits(inst)
    if buckets < 1:
        raise PlannerError(f"buckets must be >= 1, got {buckets}")
    check_size(inst.gpus, min(buckets, len(np.unique(inst.lengths))))
    lb = lower_bound(inst)
    mb = bool(micro_batches)
    statics = static_plans(inst, mb)
    base = {
        f"static_sp_{d}": (_makespan(_layout([(d, s) for s in g], inst)) if g is not None else None)
        for d, g in statics.items()
    }
    best_d = min(
        (d for d, g in statics.items() if g is not None), key=lambda d: base[f"static_sp_{d}"], default=None
    )
    plan = _layout([(best_d, s) for s in statics[best_d]], inst, mb) if best_d is not None else None
    heuristic = False
    bucket = bucketize(inst.lengths, buckets)
    exact = all(len(np.unique(inst.lengths[bucket == q])) == 1 for q in range(int(bucket.max()) + 1))
    # the static plan again with bucketed (upper) times and memory, to seed the MILP
    nq = int(bucket.max()) + 1
    up_t = np.array([inst.time_s[bucket == q].max(axis=0) for q in range(nq)])[bucket]
    up_m = np.array([inst.mem_tokens[bucket == q].max(axis=0) for q in range(nq)])[bucket]
    seeds = {
        d: static_assign(up_t[:, j], up_m[:, j], inst.gpus // d, inst.capacity_tokens, mb)
        for j, d in enumerate(inst.degrees)
    }
    seeds = {d: g for d, g in seeds.items() if g is not None}
    cands = [[(d, x) for x in g] for d, g in seeds.items()]
    share = lambda: time.perf_counter() + 0.25 * max(0.0, deadline - time.perf_counter())
    mixed = mixed_split(inst, mb, deadline=share())  # in true times: also a plan of its own
    if mixed is not None:
        cand = _layout(mixed, inst, mb)
        if plan is None or _makespan(cand) < _makespan(plan) - 1e-12:
            plan, heuristic = cand, True
        cands.append(mixed)
    mixed_b = mixed_split(
        inst, mb, up_t, up_m, deadline=share()
    )  # the same in bucketed times, to seed the MILP
    if mixed_b is not None:
        cands.append(mixed_b)
    # with micro-batches the batch may also run in two rounds (not a MILP seed: the MILP plans one round)
    two = two_rounds(inst, mb, share()) if mb else None
    start = None
    if cands:

        def bucketed(groups):
            return max((up_t[x, inst.degrees.index(d)].sum() if x else 0.0 for d, x in groups), default=0.0)

        start = min(cands, key=bucketed)
    # building the model and handing it to the solver take about as long as each other: run the MILP
    # only when both and a short solve fit in what is left
    if deadline - time.perf_counter() > BUILD_S_PER_VARIABLE * milp_variables(inst.gpus, nq) + 0.2:
        with progress(None, "plan sp: MILP"):
            groups, res = _milp(inst, bucket, start, lb, options, deadline, mb)
    else:  # no time left for a MILP: the best static strategy
        groups, res = None, None
    status = SolveStatus.HEURISTIC
    if groups is not None:
        cand = _layout(groups, inst, mb)
        if plan is None or _makespan(cand) < _makespan(plan) - 1e-12:
            plan = cand
            status = res.status if (exact or res.status is not SolveStatus.OPTIMAL) else SolveStatus.FEASIBLE
        elif res.status is SolveStatus.OPTIMAL and exact:
            status = SolveStatus.OPTIMAL  # the MILP proved the plan in hand optimal
    if mb and plan is not None:
        if two is not None and _makespan(two) < _makespan(plan) - 1e-12:
            plan, heuristic = two, True
        if status is SolveStatus.OPTIMAL:  # the MILP's optimum is over one-round plans only
            status = SolveStatus.FEASIBLE
    if status is SolveStatus.HEURISTIC and heuristic:
        status = SolveStatus.FEASIBLE  # the mixed split beat every static strategy
    if plan is None:
        raise InfeasibleError("no feasible split found: the sequences do not fit the GPUs' memory together")
    if exact and not mb and res is not None and res.bound is not None:  # (a one-round bound)
        lb = max(lb, min(res.bound, _makespan(plan)))
    ms = _makespan(plan)
    gap = relative_gap(ms, lb)
    if gap <= options.gap_rel + 1e-12:
        status = SolveStatus.OPTIMAL
    solver = {
        "name": options.name.value,
        "status": status.value,
        "gap": gap,
        "seconds": time.perf_counter() - t0,
        "buckets": nq,
        "bucketing_exact": bool(exact),
        "milp_status": res.status.value if res is not None else "not run: no time left to build and solve it",
        "micro_batches": mb,
    }
    topo = None
    if inst.gpus_per_node is not None:
        topo = {
            "name": inst.topology_name,
            "gpus_per_node": inst.gpus_per_node,
            "nodes": -(-inst.gpus // inst.gpus_per_node),
        }
    return SpPlan(plan, ms, lb, base, solver, topo)
