"""Stage 3 of the MoE planner: among placements whose largest GPU load per layer is no larger, the one
whose token traffic between consecutive layers is cheapest.

With inter-layer affinity (:meth:`perfmodel.planners.moe.MoEProblem.routing`, ExFlow's token locality) layer ``l``'s
dispatch sends ``T_l[s, g] = sum_e src_l[e, s] A_l[e, g]`` token copies (:func:`perfmodel.ep_route.traffic_matrix`),
where ``src_l`` depends on layer ``l - 1``'s placement.  The objective is ``sum_l sum(T_l * W)`` with the
weights of stage 2 (0 on the same GPU, 1 inside a node, ``B_intra / B_inter`` across nodes).  With the
neighbouring layers fixed it is linear in where layer ``l``'s replicas sit: a replica of ``e`` on GPU ``g``
costs ``K[e, g] = ((X_{l-1}^T A_{l-1} W)[e, g] + (X_l A_{l+1} W^T)[e, g]) / r_e`` (the copies that reach it
from the previous layer, and those that leave it for the next); the tokens that sit evenly add the same
amount wherever a replica is, because every GPU has the same weights to the others.

The search swaps two replicas between GPUs, or moves one to a free slot, when that lowers the objective and
keeps both GPUs' loads at or below the layer's largest load: every layer's largest load (stage 1's objective)
is unchanged or lower, so the plan stays lexicographic (load first).  Each round applies the best improving
changes that touch distinct GPUs, layer after layer, until a whole pass finds none or the deadline passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perfmodel.planners import moe_baselines as mb

if TYPE_CHECKING:  # pragma: no cover
    from perfmodel.planners.moe import MoEProblem


@dataclass(frozen=True)
class TieSearch:
    """What the search did: the weighted traffic (intra-node hops) before and after, and the changes applied."""

    weighted_before: float
    weighted_after: float
    changes: int
    converged: bool

    def to_dict(self) -> dict:
        return {
            "routed_weighted_traffic_before": self.weighted_before,
            "routed_weighted_traffic_after": self.weighted_after,
            "changes": self.changes,
            "converged": self.converged,
        }


def routed_weighted_traffic(problem: MoEProblem, placements) -> float:
    """``sum_l sum(T_l * W)``: token copies of every layer's dispatch, each weighted by the link it takes."""
    from perfmodel.ep_route import plan_traffic

    w = problem.traffic().weights
    return float(sum((t * w).sum() for t in plan_traffic(placements, problem.loads, problem.routing())))


def _costs(problem: MoEProblem, shares: list[np.ndarray], x: np.ndarray, l: int, w: np.ndarray) -> np.ndarray:
    """``K[e, g]``: the weighted copies a replica of ``e`` on GPU ``g`` in layer ``l`` receives and sends."""
    e, g = shares[l].shape
    k = np.zeros((e, g))
    if l > 0:
        k += (x[l - 1].T @ shares[l - 1]) @ w
    if l + 1 < len(shares):
        k += (x[l] @ shares[l + 1]) @ w.T
    cnt = np.maximum(mb.replica_counts(_placement(shares[l]), e), 1)
    return k / cnt[:, None]


def _placement(share: np.ndarray):
    return tuple(tuple(int(i) for i in np.flatnonzero(share[:, g] > 0)) for g in range(share.shape[1]))


def _improve_layer(
    k: np.ndarray, hold: np.ndarray, share_per: np.ndarray, slots: int, cap: float, tol: float
) -> int:
    """One round of improving swaps and moves on ``hold`` (in place); returns how many were applied."""
    ea, ga = np.nonzero(hold)
    loads = hold.T.astype(float) @ share_per
    kc = k[ea, ga]
    sh = share_per[ea]
    cands = []
    # swaps of replica i (on ga[i]) and j (on ga[j])
    d = k[ea[:, None], ga[None, :]] + k[ea[None, :], ga[:, None]] - kc[:, None] - kc[None, :]
    ok = (ga[:, None] < ga[None, :]) & (ea[:, None] != ea[None, :])
    ok &= ~hold[ea[:, None], ga[None, :]] & ~hold[ea[None, :], ga[:, None]]
    ok &= loads[ga][:, None] - sh[:, None] + sh[None, :] <= cap
    ok &= loads[ga][None, :] - sh[None, :] + sh[:, None] <= cap
    ok &= d < -tol
    for i, j in zip(*np.nonzero(ok)):
        cands.append((float(d[i, j]), int(ga[i]), int(ga[j]), ("swap", int(i), int(j))))
    # moves of replica i to a GPU with a free slot
    free = hold.sum(axis=0) < slots
    dm = k[ea[:, None], np.arange(hold.shape[1])[None, :]] - kc[:, None]
    okm = free[None, :] & ~hold[ea, :] & (loads[None, :] + sh[:, None] <= cap) & (dm < -tol)
    for i, h in zip(*np.nonzero(okm)):
        cands.append((float(dm[i, h]), int(ga[i]), int(h), ("move", int(i), int(h))))
    cands.sort(key=lambda c: c[0])
    used: set[int] = set()
    applied = 0
    for _, g1, g2, (kind, i, j) in cands:
        if g1 in used or g2 in used:
            continue
        used.update((g1, g2))
        if kind == "swap":
            hold[ea[i], ga[i]], hold[ea[i], ga[j]] = False, True
            hold[ea[j], ga[j]], hold[ea[j], ga[i]] = False, True
        else:
            hold[ea[i], ga[i]], hold[ea[i], j] = False, True
        applied += 1
    return applied


def tie_search(problem: MoEProblem, placements, deadline: float, max_passes: int = 200):
    """Lower the routed weighted traffic of ``placements`` without raising any layer's largest GPU load.

    Returns (placements, :class:`TieSearch`); without transitions (no affinity) the placements come back
    unchanged.  Stops between rounds at ``deadline`` (``time.perf_counter()`` seconds).
    """
    x = problem.routing()
    placements = list(placements)
    before = routed_weighted_traffic(problem, placements)
    if x is None or problem.num_layers < 2:
        return placements, TieSearch(before, before, 0, True)
    w = problem.traffic().weights
    E, L = problem.num_experts, problem.num_layers
    shares = [mb.share_matrix(p, E) for p in placements]
    caps = []
    for l, p in enumerate(placements):
        top = float(mb.gpu_loads(p, problem.loads[l]).max())
        caps.append(top + 1e-9 * max(1.0, top))
    tol = 1e-9 * max(1.0, before)
    changes, converged, passes = 0, False, 0
    while passes < max_passes and not converged:
        converged = True
        passes += 1
        for l in range(L):
            if time.perf_counter() > deadline:
                converged = False
                break
            k = _costs(problem, shares, x, l, w)
            hold = shares[l] > 0
            cnt = hold.sum(axis=1)
            share_per = problem.loads[l] / np.maximum(cnt, 1)
            n = _improve_layer(k, hold, share_per, problem.slots_per_gpu, caps[l], tol)
            if n:
                changes += n
                converged = False
                shares[l] = hold / np.maximum(cnt, 1)[:, None]
        if time.perf_counter() > deadline:
            break
    out = [_placement(s) for s in shares]
    after = routed_weighted_traffic(problem, out)
    if after > before:  # cannot happen (each change lowers the objective); keep the input if it did
        return placements, TieSearch(before, before, 0, converged)
    return out, TieSearch(before, after, changes, converged)
