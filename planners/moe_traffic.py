"""Cross-layer token traffic of an expert placement, and stage 2 of the MoE planner (cluster -> GPU maps).

``C[g1, g2]`` is the traffic from the GPUs of layer ``l`` to those of layer
``l + 1``: ``A_l^T R_l A_{l+1}`` with ``A[e, g] = 1 / r_e`` where GPU ``g``
holds a replica of ``e`` (tokens are assumed to pick replicas evenly and
independently).  ``W`` weighs a pair of GPUs: 0 on the same GPU, 1 inside a
node, ``B_intra / B_inter`` across nodes, so ``sum(C * W)`` counts tokens in
units of an intra-node hop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pulp
from scipy.optimize import linear_sum_assignment

from perfmodel.planners import moe_baselines as mb
from perfmodel.planners.solver import SolverOptions, SolveStatus, new_var, solve

if TYPE_CHECKING:  # pragma: no cover
    from perfmodel.planners.moe import MoEProblem

#: Largest number of product terms ``(L - 1) * G^4`` for which stage 2 runs as an exact ILP.
EXACT_STAGE2_TERMS = 20_000


@dataclass(frozen=True)
class TrafficModel:
    """GPUs in ``nodes`` equal blocks; ``cross_node_weight = B_intra / B_inter``."""

    gpus: int
    nodes: int
    cross_node_weight: float

    @property
    def node_of(self) -> np.ndarray:
        return np.arange(self.gpus) // (self.gpus // self.nodes)

    @property
    def weights(self) -> np.ndarray:
        n = self.node_of
        same_node = n[:, None] == n[None, :]
        w = np.where(same_node, 1.0, self.cross_node_weight)
        np.fill_diagonal(w, 0.0)
        return w

    def cross_gpu(self, c: np.ndarray) -> float:
        return float(c.sum() - np.trace(c))

    def cross_node(self, c: np.ndarray) -> float:
        n = self.node_of
        return float(c[n[:, None] != n[None, :]].sum())

    def weighted(self, c: np.ndarray) -> float:
        return float((c * self.weights).sum())


def _objective(cs: list[np.ndarray], perms: list[np.ndarray], w: np.ndarray) -> float:
    return float(sum((c * w[np.ix_(perms[l], perms[l + 1])]).sum() for l, c in enumerate(cs)))


def _local_search(cs: list[np.ndarray], w: np.ndarray, layers: int, deadline: float) -> list[np.ndarray]:
    """Coordinate descent: re-map one layer at a time by an exact linear assignment."""
    g = w.shape[0]
    perms = [np.arange(g) for _ in range(layers)]
    best = _objective(cs, perms, w)
    for _ in range(20):
        for l in range(layers):
            if time.perf_counter() > deadline:  # every layer's map stays a permutation; descent is monotone
                return perms
            cost = np.zeros((g, g))
            if l > 0:
                cost += cs[l - 1].T @ w[perms[l - 1], :]
            if l + 1 < layers:
                cost += cs[l] @ w[:, perms[l + 1]].T
            _, cols = linear_sum_assignment(cost)
            perms[l] = cols
        val = _objective(cs, perms, w)
        if val >= best - 1e-9 * max(1.0, best) or time.perf_counter() > deadline:
            best = min(best, val)
            break
        best = val
    return perms


def _exact(cs, w, layers, start, options, seconds):
    """The linearised quadratic-assignment ILP, warm-started from ``start``; returns (perms or None, status)."""
    g = w.shape[0]
    prob = pulp.LpProblem("moe_stage2", pulp.LpMinimize)
    y = {
        (l, c, k): new_var(prob, f"y_{l}_{c}_{k}", cat=pulp.LpBinary)
        for l in range(layers)
        for c in range(g)
        for k in range(g)
    }
    for (l, c, k), v in y.items():
        v.setInitialValue(1 if start[l][c] == k else 0)
    terms = []
    for l, cm in enumerate(cs):
        for c1 in range(g):
            for c2 in range(g):
                if cm[c1, c2] <= 0:
                    continue
                for k1 in range(g):
                    for k2 in range(g):
                        if w[k1, k2] <= 0:
                            continue
                        p = new_var(prob, f"p_{l}_{c1}_{c2}_{k1}_{k2}", low=0)
                        p.setInitialValue(1 if start[l][c1] == k1 and start[l + 1][c2] == k2 else 0)
                        prob += p >= y[l, c1, k1] + y[l + 1, c2, k2] - 1
                        terms.append(float(cm[c1, c2] * w[k1, k2]) * p)
    prob += pulp.lpSum(terms)
    for l in range(layers):
        for c in range(g):
            prob += pulp.lpSum(y[l, c, k] for k in range(g)) == 1
        for k in range(g):
            prob += pulp.lpSum(y[l, c, k] for c in range(g)) == 1
    y[0, 0, 0].lowBound = 1  # node-preserving relabelling puts cluster 0 of layer 0 on GPU 0
    start_val = _objective(cs, start, w)
    if start[0][0] != 0:  # keep the start feasible under the symmetry row
        return start, SolveStatus.HEURISTIC
    res = solve(prob, options, seconds, warm=True)
    if res.objective is None:
        return start, SolveStatus.HEURISTIC
    perms = [
        np.array([next(k for k in range(g) if (y[l, c, k].varValue or 0) > 0.5) for c in range(g)])
        for l in range(layers)
    ]
    if _objective(cs, perms, w) > start_val:
        return start, SolveStatus.HEURISTIC
    return perms, res.status


def stage2_map(problem: MoEProblem, placements, options: SolverOptions, deadline: float):
    """Permute each layer's GPU contents to cut weighted cross-layer traffic; returns (placements, status)."""
    tm = problem.traffic()
    w = tm.weights
    L, E, G = problem.num_layers, problem.num_experts, problem.gpus
    shares = [mb.share_matrix(p, E) for p in placements]
    cs = [shares[l].T @ problem.affinity[l] @ shares[l + 1] for l in range(L - 1)]
    perms = _local_search(cs, w, L, deadline)
    status = SolveStatus.HEURISTIC
    if _objective(cs, perms, w) <= 0:
        status = SolveStatus.OPTIMAL
    elif L > 1 and (L - 1) * G**4 <= EXACT_STAGE2_TERMS and deadline - time.perf_counter() > 0.2:
        # relabel so that cluster 0 of layer 0 sits on GPU 0 (a node-preserving GPU permutation)
        shift = _relabel_to_zero(int(perms[0][0]), G, problem.nodes)
        perms = [shift[p] for p in perms]
        perms, status = _exact(cs, w, L, perms, options, deadline - time.perf_counter())
    out = []
    for l, p in enumerate(placements):
        new = [()] * G
        for c, k in enumerate(perms[l]):
            new[int(k)] = p[c]
        out.append(tuple(new))
    return out, status


def _relabel_to_zero(gpu: int, gpus: int, nodes: int) -> np.ndarray:
    """A node-block-preserving permutation ``s`` of GPU ids with ``s[gpu] = 0``."""
    per = gpus // nodes
    n0, i0 = divmod(gpu, per)
    node_map = np.arange(nodes)
    node_map[[0, n0]] = node_map[[n0, 0]]
    in_map = np.arange(per)
    in_map[[0, i0]] = in_map[[i0, 0]]
    ids = np.arange(gpus)
    return node_map[ids // per] * per + in_map[ids % per]


def route_topology(system: str, gpus: int, nodes: int):
    """The links of ``system`` (its node's fabric, its per-GPU NIC) under the problem's split of ``gpus`` into
    ``nodes`` equal blocks; returns (topology, profile) for :mod:`perfmodel.ep_route`."""
    from perfmodel.hw.loader import load_gpu, load_system
    from perfmodel.calibration import resolve_profile
    from perfmodel.comm import Topology, topology_from_system

    base = topology_from_system(load_system(system))
    if nodes > 1 and base.inter is None:
        from perfmodel.planners.errors import PlannerError

        raise PlannerError(
            f"system {system!r} is a single node; give a cluster (it sets the cross-node link)"
        )
    topo = Topology(
        f"{base.name} as {nodes} x {gpus // nodes}",
        base.gpu_name,
        gpus // nodes,
        nodes,
        base.intra,
        base.inter if nodes > 1 else None,
    )
    return topo, resolve_profile(load_gpu(base.gpu_name))


def layer_routes(problem: MoEProblem, placements, topo, profile, bytes_per_token: float) -> list[dict]:
    """Per layer, the dispatch + combine all-to-all of ``placements`` priced from its traffic matrix
    (:func:`perfmodel.ep_route.plan_traffic`, token sources by :meth:`MoEProblem.routing`;
    :func:`perfmodel.ep_route.route_time`): ``all_to_all_s``, the busiest-GPU bound ``all_to_all_bound_s``,
    the bytes crossing nodes and the traffic itself (``traffic``, token copies GPU to GPU)."""
    from perfmodel.ep_route import plan_traffic, route_time

    out = []
    for t in plan_traffic(placements, problem.loads, problem.routing()):
        rt = route_time(t * bytes_per_token, topo, profile)
        out.append(
            {
                "all_to_all_s": 2 * rt.seconds,
                "all_to_all_bound_s": 2 * rt.bound_s,
                "all_to_all_cross_node_bytes": 2 * rt.inter_bytes,
                "traffic": t,
            }
        )
    return out


def add_route_times(
    out: dict, problem: MoEProblem, placements, topo, profile, bytes_per_token: float, sources: str = "even"
) -> dict:
    """Add the all-to-all seconds of the plan and of every baseline to ``plan.to_dict()``'s ``out`` (new keys
    only).  The plan's layers also get their ``loads`` (copies per expert) and ``traffic`` (token copies from
    GPU to GPU), which ``analyze --moe-placement`` reads; every baseline's layers get their ``placement`` and
    ``loads``, and their ``traffic`` when tokens do not sit evenly (with even sources ``analyze`` derives the
    same matrix from the placement), so ``--moe-placement plan.json:NAME`` prices baseline ``NAME`` under
    the same loads and token sources.  ``sources`` names the token-source model."""
    from perfmodel.jsonout import jsonable

    keys = ("all_to_all_s", "all_to_all_bound_s", "all_to_all_cross_node_bytes")
    uneven = problem.transitions is not None or problem.affinity is not None

    def put(layers_out: list[dict], total: dict, rows: list[dict], keep_traffic: bool) -> None:
        for d, r in zip(layers_out, rows):
            d.update({k: r[k] for k in keys})
            if keep_traffic:
                d["traffic"] = jsonable(np.round(r["traffic"], 6))
        total.update({k: float(sum(r[k] for r in rows)) for k in keys})

    put(out["layers"], out["total"], layer_routes(problem, placements, topo, profile, bytes_per_token), True)
    for d, w in zip(out["layers"], problem.loads):
        d["loads"] = jsonable(w)
    base = [
        mb.baselines(problem.loads[l], problem.gpus, problem.slots_per_gpu, problem.nodes)
        for l in range(problem.num_layers)
    ]
    for name, b in out["baselines"].items():
        chosen = [base[l][name] for l in range(problem.num_layers)]
        put(b["layers"], b["total"], layer_routes(problem, chosen, topo, profile, bytes_per_token), uneven)
        for d, p, w in zip(b["layers"], chosen, problem.loads):
            d["placement"] = [list(g) for g in p]
            d["loads"] = jsonable(w)
    out["all_to_all"] = {
        "topology": topo.name,
        "gpus_per_node": topo.gpus_per_node,
        "nodes": topo.num_nodes,
        "bytes_per_token": bytes_per_token,
        "token_sources": sources,
        "rule": "dispatch + combine, from the GPU-to-GPU traffic matrix over the system's links",
    }
    return out
