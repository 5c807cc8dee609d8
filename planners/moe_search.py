"""Combinatorial search for one layer's placement: a lower bound, a local search and an exact branch and bound.

The problem (one layer): ``E`` experts with loads ``w_e`` on ``G`` identical
GPUs of ``S`` slots; expert ``e`` gets ``r_e >= 1`` replicas on distinct GPUs,
each carrying ``w_e / r_e``; minimise the largest GPU load.

- :func:`lower_bound` is valid for every placement (the proof is in its docstring);
- :func:`improve` is a local search (moves, swaps and added replicas out of the
  busiest GPU) that never makes a placement worse;
- :func:`branch_and_bound` decides replica counts expert by expert (heaviest
  first) and places each expert's replicas, treating GPUs with the same load and
  slot count as one (the GPUs are identical, so a placement is determined up to
  a permutation by these states).  When it finishes within its time it proves
  that nothing beats its result by more than the relative gap.
"""

from __future__ import annotations

import math
import time

import numpy as np

from perfmodel.planners import moe_baselines as mb
from perfmodel.planners import moe_partition as mp

Placement = mb.Placement


def lower_bound(loads: np.ndarray, gpus: int, slots_per_gpu: int) -> float:
    """A lower bound of the largest GPU load over every placement of one layer.

    The largest of:

    - ``sum w / G``: the GPU loads sum to ``sum w`` (every token is served once),
      so the largest is at least their mean;
    - ``min over replica counts of max_e w_e / r_e`` subject to ``sum r_e <= G S``
      and ``1 <= r_e <= G``: every placement has such counts, and the GPU that
      holds the largest replica carries at least that replica.  The minimum is
      reached by adding replicas one at a time to the expert with the largest
      ``w_e / r_e`` (:func:`perfmodel.planners.moe_baselines.replicate`): the largest
      replica can only shrink by giving the expert that holds it one more copy,
      and an exchange argument shows the greedy choice is never worse;
    - with no spare slot and ``E > G``: ``w_(G) + w_(G+1)`` (sorted decreasing):
      by pigeonhole two of the ``G + 1`` heaviest experts share a GPU;
    - with no spare slot (``E = G S``):
      :func:`perfmodel.planners.moe_partition.cardinality_bound`, which uses that every GPU then
      holds exactly ``S`` experts (it contains the two bounds above).
    """
    w = np.asarray(loads, dtype=float)
    lb = mb.load_lower_bound(w, gpus, slots_per_gpu)
    if len(w):
        cnt = mb.replicate(w, gpus * slots_per_gpu, gpus)
        lb = max(lb, float((w / cnt).max()))
    if mp.no_spare_slots(len(w), gpus, slots_per_gpu):
        lb = max(lb, mp.cardinality_bound(w, gpus, slots_per_gpu))
    return lb


class _State:
    """A placement under local search: replica counts, holders and GPU loads."""

    def __init__(self, w: np.ndarray, gpus: int, slots: int, placement: Placement):
        self.w, self.gpus, self.slots = w, gpus, slots
        self.cnt = mb.replica_counts(placement, len(w)).astype(float)
        self.hold = np.zeros((len(w), gpus), dtype=bool)
        for g, gpu in enumerate(placement):
            self.hold[list(gpu), g] = True
        self.refresh()

    def refresh(self) -> None:
        self.share = self.w / np.maximum(self.cnt, 1)
        self.loads = self.hold.T.astype(float) @ self.share
        self.used = self.hold.sum(axis=0)

    def placement(self) -> Placement:
        return tuple(tuple(int(e) for e in np.flatnonzero(self.hold[:, g])) for g in range(self.gpus))


def _best_move(st: _State, g: int, top: float, tol: float):
    """The improving change out of GPU ``g`` (load ``top``) that gives the lowest new load pair, or None."""
    best, best_val = None, top - tol
    mine = np.flatnonzero(st.hold[:, g])
    free = st.used < st.slots
    for a in mine[np.argsort(-st.share[mine])]:
        sa = st.share[a]
        # move a to a GPU with a free slot
        ok = free & ~st.hold[a]
        ok[g] = False
        if ok.any():
            h = int(np.flatnonzero(ok)[np.argmin(st.loads[ok])])
            val = max(top - sa, st.loads[h] + sa)
            if val < best_val:
                best, best_val = ("move", a, h, None), val
        # swap a with a lighter replica b of another expert on GPU h (h lacks a, g lacks b)
        sb = st.share[:, None]
        cand = st.hold & ~st.hold[a][None, :] & ~st.hold[:, g][:, None] & (sb < sa)
        cand[:, g] = False
        if cand.any():
            b_idx, h_idx = np.nonzero(cand)
            val = np.maximum(top - sa + st.share[b_idx], st.loads[h_idx] - st.share[b_idx] + sa)
            k = int(np.argmin(val))
            if val[k] < best_val:
                best, best_val = ("swap", a, int(h_idx[k]), int(b_idx[k])), float(val[k])
        # one more replica of a, on a GPU with a free slot
        if ok.any() and st.cnt[a] < st.gpus:
            new = st.w[a] / (st.cnt[a] + 1)
            h = int(np.flatnonzero(ok)[np.argmin(st.loads[ok])])
            holders = np.flatnonzero(st.hold[a])
            val = max(float((st.loads[holders] - sa + new).max()), st.loads[h] + new)
            if val < best_val:
                best, best_val = ("split", a, h, None), val
    return best


def improve(
    loads: np.ndarray,
    gpus: int,
    slots_per_gpu: int,
    placement: Placement,
    deadline: float,
    max_steps: int = 100_000,
) -> Placement:
    """Local search from ``placement``: while some change out of the busiest GPU leaves every GPU it touches
    below that GPU's load, apply the best one (move a replica to a GPU with a free slot, swap it with a
    lighter replica, or add a replica of one of its experts).  Each step lowers the largest load or the
    number of GPUs at it, so the search ends; the result is never worse than ``placement``."""
    w = np.asarray(loads, dtype=float)
    st = _State(w, gpus, slots_per_gpu, placement)
    tol = 1e-9 * max(1.0, float(w.sum()))
    for step in range(max_steps):
        if step % 16 == 0 and time.perf_counter() > deadline:
            break
        g = int(np.argmax(st.loads))
        ch = _best_move(st, g, float(st.loads[g]), tol)
        if ch is None:
            break
        kind, a, h, b = ch
        if kind == "move":
            st.hold[a, g], st.hold[a, h] = False, True
        elif kind == "swap":
            st.hold[a, g], st.hold[a, h] = False, True
            st.hold[b, h], st.hold[b, g] = False, True
        else:
            st.hold[a, h] = True
            st.cnt[a] += 1
        st.refresh()
    out = st.placement()
    return out if mb.gpu_loads(out, w).max() <= mb.gpu_loads(placement, w).max() else placement


def construct(loads: np.ndarray, gpus: int, slots_per_gpu: int, replicas: int) -> Placement:
    """Replica counts first (EPLB's rule up to ``replicas`` in all), then the replicas packed
    longest first into the least-loaded GPU with a free slot that lacks the expert."""
    w = np.asarray(loads, dtype=float)
    cnt = mb.replicate(w, replicas, gpus)
    items = [(float(w[e]) / cnt[e], e) for e in range(len(w)) for _ in range(cnt[e])]
    return tuple(tuple(sorted(b)) for b in mb._pack(items, gpus, slots_per_gpu))


def heuristic(
    loads: np.ndarray, gpus: int, slots_per_gpu: int, start: Placement, deadline: float
) -> Placement:
    """The best of :func:`improve` from ``start`` and from counts-first constructions with all, half
    and none of the spare slots used; with no spare slot, :func:`partition_heuristic`."""
    w = np.asarray(loads, dtype=float)
    e, total = len(w), gpus * slots_per_gpu
    if mp.no_spare_slots(e, gpus, slots_per_gpu):
        return partition_heuristic(w, gpus, slots_per_gpu, start, deadline)
    best = improve(w, gpus, slots_per_gpu, start, deadline)
    best_v = mb.gpu_loads(best, w).max()
    for replicas in sorted({total, e + (total - e) // 2, e}, reverse=True):
        if time.perf_counter() > deadline:
            break
        p = construct(w, gpus, slots_per_gpu, replicas)
        if mb.replica_counts(p, e).min() < 1:
            continue
        p = improve(w, gpus, slots_per_gpu, p, deadline)
        v = mb.gpu_loads(p, w).max()
        if v < best_v:
            best, best_v = p, v
    return best


def partition_heuristic(
    loads: np.ndarray, gpus: int, slots_per_gpu: int, start: Placement, deadline: float
) -> Placement:
    """No spare slot (``E = G S``): the best of ``start``, longest-first packing and the balanced
    differencing method (:func:`perfmodel.planners.moe_partition.differencing`), each improved by
    :func:`improve` (swaps out of the busiest GPU) and then by
    :func:`perfmodel.planners.moe_partition.rebalance` (optimal splits of two GPUs' experts), the time
    to ``deadline`` shared equally."""
    w = np.asarray(loads, dtype=float)
    starts = [start, mb.greedy_lpt(w, gpus, slots_per_gpu), mp.differencing(w, gpus, slots_per_gpu)]
    best, best_v = start, float(mb.gpu_loads(start, w).max())
    for k, p in enumerate(starts):
        now = time.perf_counter()
        if now > deadline:
            break
        end = now + (deadline - now) / (len(starts) - k)
        p = mp.rebalance(w, gpus, slots_per_gpu, improve(w, gpus, slots_per_gpu, p, end), end)
        v = float(mb.gpu_loads(p, w).max())
        if v < best_v:
            best, best_v = p, v
    return best


def branch_and_bound(
    loads: np.ndarray, gpus: int, slots_per_gpu: int, incumbent: Placement, gap_rel: float, deadline: float
) -> tuple[Placement, bool, int]:
    """Exact search for a placement whose largest load beats ``incumbent``'s by more than ``gap_rel``.

    Experts are taken heaviest first; for each, every replica count ``r`` (fewest
    first, from ``ceil(w_e / threshold)`` to what the free slots allow) and every
    set of ``r`` distinct GPUs with a free slot and room below the threshold.
    GPUs are identical, so GPUs with equal (load, used slots) are one class and a
    set is chosen as counts per class.  A branch is cut when the room left below
    the threshold on GPUs with a free slot is less than the load still to place,
    when the remaining experts outnumber the free slots, or when its state
    (expert index, sorted GPU states) already failed.  Each solution found
    lowers the threshold to ``(1 - gap_rel)`` times its load.

    Returns (best placement, proven, nodes): ``proven`` means the search ended
    before ``deadline``, so no placement has a largest load below
    ``(1 - gap_rel)`` times the returned one's.
    """
    w = np.asarray(loads, dtype=float)
    E, G, S = len(w), gpus, slots_per_gpu
    order = sorted(range(E), key=lambda e: (-w[e], e))
    ws = [float(w[e]) for e in order]
    rem = np.concatenate([np.cumsum(ws[::-1])[::-1], [0.0]]).tolist()
    best = [incumbent, float(mb.gpu_loads(incumbent, w).max())]
    eps = 1e-9 * max(1.0, float(w.sum()))
    thr = [best[1] * (1 - gap_rel) - eps]  # allowed largest load of a better solution
    load, used = [0.0] * G, [0] * G
    sets: list[list[int]] = [[] for _ in range(G)]
    failed: set = set()
    nodes = [0]
    timed_out = [False]

    def key(i):
        return (i, tuple(sorted(zip((round(x, 9) for x in load), used))))

    def combos(cands, r):
        """r-subsets of candidate GPUs (sorted by state), one per multiset of states."""
        n = len(cands)
        out: list[int] = []

        def rec(start):
            if len(out) == r:
                yield list(out)
                return
            prev = None
            for j in range(start, n - (r - len(out)) + 1):
                g = cands[j]
                st = (load[g], used[g])
                if st == prev:
                    continue  # same state as the sibling just tried: the same subtree
                prev = st
                out.append(g)
                yield from rec(j + 1)
                out.pop()

        yield from rec(0)

    def dfs(i) -> None:
        nodes[0] += 1
        if nodes[0] % 256 == 0 and time.perf_counter() > deadline:
            timed_out[0] = True
        if timed_out[0]:
            return
        if i == E:
            val = max(load)
            if val < best[1]:
                p = [()] * G
                for g in range(G):
                    p[g] = tuple(sorted(order[k] for k in sets[g]))
                best[0], best[1] = tuple(p), val
                thr[0] = val * (1 - gap_rel) - eps
            return
        free = sum(S - u for u in used)
        if free < E - i:
            return
        room = sum(thr[0] - x for x, u in zip(load, used) if u < S and x < thr[0])
        if room < rem[i] - eps:
            return
        k = key(i)
        if k in failed:
            return
        t_before = thr[0]
        wi = ws[i]
        r_min = max(1, math.ceil(wi / thr[0] - 1e-12)) if thr[0] > 0 else 1
        r_max = min(G, free - (E - i - 1))
        for r in range(r_min, r_max + 1):
            s = wi / r
            if s > thr[0] + 1e-15:
                continue
            cands = sorted(
                (g for g in range(G) if used[g] < S and load[g] + s <= thr[0]),
                key=lambda g: (load[g], used[g], g),
            )
            if len(cands) < r:
                continue
            for chosen in combos(cands, r):
                if any(load[g] + s > thr[0] for g in chosen):
                    continue  # the threshold fell since the candidates were listed
                for g in chosen:
                    load[g] += s
                    used[g] += 1
                    sets[g].append(i)
                dfs(i + 1)
                for g in chosen:
                    load[g] -= s
                    used[g] -= 1
                    sets[g].pop()
                if timed_out[0]:
                    return
        if not timed_out[0] and thr[0] == t_before:
            failed.add(k)  # nothing below this threshold from here; lower thresholds fail too

    dfs(0)
    return best[0], not timed_out[0], nodes[0]
