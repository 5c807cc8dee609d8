"""Layers without spare slots: balanced multiway number partitioning with equal cardinalities.

When ``E = G S`` (as many slots as experts) no expert can be replicated, every
GPU holds exactly ``S`` experts, and a layer's placement is a partition of the
loads ``w_e`` into ``G`` sets of ``S`` items minimising the largest sum.  This
module gives that problem its own tools:

- :func:`cardinality_bound`, a lower bound that knows every GPU holds ``S``
  experts (the proof is in its docstring); on skewed loads it is far above the
  mean, which is where the general bound left layers to the MILP;
- :func:`differencing`, the balanced largest differencing method (Karmarkar
  and Karp's differencing with the items taken ``G`` at a time so that each set
  gets one item of every group: Michiels et al., "Performance ratios for the
  differencing method", 2003 and later);
- :func:`rebalance`, a local search that repartitions the busiest GPU's and
  another GPU's ``2 S`` experts optimally into two sets of ``S`` (every 1-for-1
  and k-for-k swap between the two at once) while that lowers their larger load;
"""

from __future__ import annotations

import heapq
import itertools
import math
import time

import numpy as np

from perfmodel.planners import moe_baselines as mb

Placement = mb.Placement

REBALANCE_MAX_SPLITS = 20_000
"""Largest ``C(2S, S)`` for which :func:`rebalance` enumerates every split of two GPUs' experts
(``S <= 8``: 12,870 splits); beyond it the pair step is skipped."""


def no_spare_slots(num_experts: int, gpus: int, slots_per_gpu: int) -> bool:
    """True when the slots equal the experts: no replica fits and every GPU holds ``slots_per_gpu`` experts."""
    return gpus * slots_per_gpu == num_experts


def cardinality_bound(loads: np.ndarray, gpus: int, slots_per_gpu: int) -> float:
    """A lower bound of the largest GPU load over every placement with no spare slot (``E = G S``).

    Every GPU holds exactly ``S`` experts.  With ``w`` sorted decreasing and ``low(n)`` the sum of the
    ``n`` smallest loads, the bound is the largest of:

    - ``sum w / G`` (the mean load);
    - for ``k = 1..G``: ``min over m of (w_1 + ... + w_k + low(m S - k)) / m`` with
      ``ceil(k / S) <= m <= k``: the ``k`` heaviest experts sit on some ``m`` GPUs, which hold
      ``m S`` experts in all; the other ``m S - k`` of them weigh at least the ``m S - k`` smallest,
      and the busiest of the ``m`` carries at least their mean.  ``k = m = 1`` is the heaviest
      expert plus the ``S - 1`` lightest;
    - for ``j = 1..S-1`` with ``j G + 1 <= E``: ``w_(jG+1-j) + ... + w_(jG+1) + low(S - j - 1)``: by
      pigeonhole some GPU holds ``j + 1`` of the ``j G + 1`` heaviest, which weigh at least the
      ``j + 1`` lightest of them, and ``S - j - 1`` more experts (``j = 1`` is ``w_(G) + w_(G+1)``).

    Integer loads give integer GPU loads, so the bound is then rounded up.
    """
    w = np.sort(np.asarray(loads, dtype=float))[::-1]
    e, g, s = len(w), int(gpus), int(slots_per_gpu)
    if e == 0:
        return 0.0
    if e != g * s:
        raise ValueError(f"cardinality_bound needs experts = GPUs x slots, got {e} != {g} x {s}")
    top = np.concatenate([[0.0], np.cumsum(w)])
    low = np.concatenate([[0.0], np.cumsum(w[::-1])])
    lb = float(top[-1]) / g
    for k in range(1, g + 1):
        m = np.arange(-(-k // s), k + 1)
        lb = max(lb, float(np.min((top[k] + low[m * s - k]) / m)))
    for j in range(1, s):
        n = j * g + 1
        if n > e:
            break
        lb = max(lb, float(w[n - 1 - j : n].sum() + low[s - j - 1]))
    if np.all(w == np.round(w)):
        lb = math.ceil(lb - 1e-9 * max(1.0, lb))
    return float(lb)


def differencing(loads: np.ndarray, gpus: int, slots_per_gpu: int) -> Placement:
    """The balanced largest differencing method: ``S`` groups of ``G`` consecutive experts (heaviest
    first) are partial partitions of one expert per GPU; the two with the largest spread (largest minus
    smallest sum) are merged, the heaviest set of one with the lightest of the other, until one is left.
    Every GPU gets one expert of each group, so ``S`` in all."""
    w = np.asarray(loads, dtype=float)
    g, s = int(gpus), int(slots_per_gpu)
    order = np.argsort(-w, kind="stable")
    heap = []
    for k in range(s):
        grp = order[k * g : (k + 1) * g]
        sums = [float(w[e]) for e in grp]
        heap.append((-(max(sums) - min(sums)), k, sums, [[int(e)] for e in grp]))
    heapq.heapify(heap)
    count = s
    while len(heap) > 1:
        _, _, sa, ea = heapq.heappop(heap)
        _, _, sb, eb = heapq.heappop(heap)
        ia = sorted(range(g), key=lambda i: -sa[i])
        ib = sorted(range(g), key=lambda i: sb[i])
        sums = [sa[i] + sb[j] for i, j in zip(ia, ib)]
        sets = [ea[i] + eb[j] for i, j in zip(ia, ib)]
        count += 1
        heapq.heappush(heap, (-(max(sums) - min(sums)), count, sums, sets))
    return tuple(tuple(sorted(x)) for x in heap[0][3])


def _splits(slots: int) -> np.ndarray | None:
    """Boolean ``[C(2S, S), 2S]`` table of the splits of ``2S`` positions into two halves (None: too many)."""
    n = math.comb(2 * slots, slots)
    if n > REBALANCE_MAX_SPLITS:
        return None
    out = np.zeros((n, 2 * slots), dtype=bool)
    for r, c in enumerate(itertools.combinations(range(2 * slots), slots)):
        out[r, list(c)] = True
    return out


def rebalance(
    loads: np.ndarray,
    gpus: int,
    slots_per_gpu: int,
    placement: Placement,
    deadline: float,
    max_steps: int = 10_000,
) -> Placement:
    """Local search for a no-spare-slot placement: repartition the busiest GPU's and another GPU's
    experts optimally into two sets of ``S`` (the split with the smallest larger sum), lightest partner
    first, while that lowers the pair's larger load below the busiest load.  Each step lowers the largest
    load or the number of GPUs at it, so the search ends; the result is never worse than ``placement``."""
    w = np.asarray(loads, dtype=float)
    s = int(slots_per_gpu)
    splits = _splits(s)
    if splits is None:
        return placement
    sets = [list(p) for p in placement]
    load = np.array([float(w[list(p)].sum()) for p in sets])
    tol = 1e-9 * max(1.0, float(w.sum()))
    for step in range(max_steps):
        if step % 8 == 0 and time.perf_counter() > deadline:
            break
        g = int(np.argmax(load))
        top = load[g]
        done = False
        for h in np.argsort(load, kind="stable"):
            h = int(h)
            if h == g or load[h] >= top - tol:
                continue
            both = sets[g] + sets[h]
            x = w[both]
            side = splits @ x
            worst = np.maximum(side, load[g] + load[h] - side)
            r = int(np.argmin(worst))
            if worst[r] < top - tol:
                a = [both[i] for i in np.flatnonzero(splits[r])]
                b = [both[i] for i in np.flatnonzero(~splits[r])]
                sets[g], sets[h] = a, b
                load[g], load[h] = float(w[a].sum()), float(w[b].sum())
                done = True
                break
        if not done:
            break
    out = tuple(tuple(sorted(int(e) for e in p)) for p in sets)
    return out if mb.gpu_loads(out, w).max() <= mb.gpu_loads(placement, w).max() else placement
