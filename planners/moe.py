"""MoE expert placement: per layer the smallest largest GPU load, then a GPU mapping for the cross-layer traffic.

Stage 1 (per layer ``l``, loads ``w_e``; ``G`` identical GPUs with ``S``
slots each; expert ``e`` gets ``r_e >= 1`` replicas on distinct GPUs, each
serving ``w_e / r_e``).  Layers are independent, and each goes through
(:mod:`perfmodel.planners.moe_search`):

1. the best baseline against a valid lower bound (the mean GPU load, the
   smallest possible largest replica, a pigeonhole bound without spare slots);
   many layers are proven here;
2. a local search from the best baseline and from counts-first constructions
   (replica counts by EPLB's rule, then longest-first packing): moves, swaps
   and added replicas out of the busiest GPU;
3. for small layers, an exact branch and bound that chooses each expert's
   replica count, heaviest expert first, and places its replicas on GPU
   *states* (load, used slots): identical GPUs in the same state are one
   choice, which removes the GPU-permutation symmetry that stalls the MILP;
4. what is still open goes to the MILP below::

    min z  s.t.  sum_e w_e f[e,g] <= z                  (GPU load)
                 sum_g f[e,g] = 1,  f[e,g] <= x[e,g]    (every token of e served)
                 f[e,g] <= u_e,  f[e,g] >= u_e - (1 - x[e,g])
                 sum_g x[e,g] >= 1,  sum_e x[e,g] <= S, x binary

With ``x`` fixed, ``f[e,g] = u_e x[e,g]`` and ``u_e = 1 / r_e``: the exact
even split over the ``r_e`` replicas, linear in ``(x, f, u)``.  With no spare
slot the model drops ``f, u`` and uses ``sum_g x = 1``.  Symmetry: one replica of
the heaviest expert sits on GPU 0 (with no spare slot: the ``j``-th heaviest
expert only on GPUs ``0..j``).  Every step starts from the best placement so
far and keeps it unless it finds a better one: the plan is never worse than
any baseline.

Stage 2 (with inter-layer routing counts ``R[l][e1][e2]``): the clusters of
stage 1 (the expert sets of the GPUs of each layer) are mapped onto GPUs by a
permutation per layer, minimising the bandwidth-weighted traffic between
consecutive layers, ``sum_l sum_{c1,c2} C_l[c1,c2] W[pi_l(c1), pi_{l+1}(c2)]``
with ``C_l = A_l^T R_l A_{l+1}`` (MoETuner's second ILP, as a sum over layer
boundaries; ``W`` is 0 on the same GPU, 1 inside a node and
``B_intra / B_inter`` across nodes).  Permuting clusters leaves every load
unchanged, so the objective is lexicographic: load first, then traffic.
Stage 2 is a quadratic assignment; it runs as an ILP (products linearised as
``w >= y + y' - 1``) when that has at most ``EXACT_STAGE2_TERMS`` product terms,
and otherwise as a local search of exact linear assignments (one layer at a
time, neighbours fixed; ``scipy.optimize.linear_sum_assignment``), reported
as not proven optimal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pulp

from perfmodel.progress import progress
from perfmodel.planners import moe_baselines as mb
from perfmodel.planners import moe_search as ms
from perfmodel.planners.errors import InfeasibleError, PlannerError
from perfmodel.planners.moe_ties import TieSearch, tie_search as run_tie_search
from perfmodel.planners.moe_traffic import TrafficModel, stage2_map
from perfmodel.planners.solver import (
    SolverOptions,
    SolveStatus,
    check_model_size,
    new_var,
    relative_gap,
    solve,
)

Placement = mb.Placement


@dataclass(frozen=True)
class MoEProblem:
    """Input of the placement planner.

    Attributes
    ----------
    loads : ndarray [layers, experts], tokens
        Tokens routed to each expert of each MoE layer.
    gpus, slots_per_gpu, nodes : int
        ``gpus * slots_per_gpu >= experts``; spare slots hold redundant replicas.
        GPUs are split into ``nodes`` equal consecutive blocks.
    affinity : ndarray [layers - 1, experts, experts] or None, tokens
        ``R[l][e1][e2]``: tokens that went to ``e1`` in layer ``l`` and ``e2`` in ``l + 1``.
    intra_node_bytes_per_s, inter_node_bytes_per_s : float, bytes/s
        Per-GPU link bandwidths (from ``hw/`` system files); only their ratio weighs traffic.
    transitions : ndarray [layers - 1, experts, experts] or None, token copies
        ``X[l][e1][e2]``: copies routed to ``e2`` in layer ``l + 1`` that leave from where ``e1`` ran in
        layer ``l`` (:func:`perfmodel.ep_route.traffic_matrix`); None: derived from ``affinity``
        (:func:`perfmodel.ep_route.routed_transitions`) when given, else tokens sit evenly.
    """

    loads: np.ndarray
    gpus: int
    slots_per_gpu: int
    nodes: int = 1
    affinity: np.ndarray | None = None
    intra_node_bytes_per_s: float = 450e9
    inter_node_bytes_per_s: float = 50e9
    transitions: np.ndarray | None = None

    def __post_init__(self) -> None:
        loads = np.asarray(self.loads, dtype=float)
        if loads.ndim == 1:
            loads = loads[None, :]
        object.__setattr__(self, "loads", loads)
        for name in ("gpus", "slots_per_gpu", "nodes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InfeasibleError(f"{name.replace('_', ' ')} must be a positive integer, got {v!r}")
        if loads.ndim != 2 or loads.shape[1] == 0 or loads.shape[0] == 0:
            raise PlannerError(f"loads must be a non-empty [layers][experts] table, got shape {loads.shape}")
        if not np.isfinite(loads).all() or (loads < 0).any():
            raise PlannerError("loads must be finite and >= 0")
        e = loads.shape[1]
        if self.gpus * self.slots_per_gpu < e:
            raise InfeasibleError(
                f"{e} experts do not fit: {self.gpus} GPUs x {self.slots_per_gpu} slots = "
                f"{self.gpus * self.slots_per_gpu} slots"
            )
        if self.gpus % self.nodes:
            raise PlannerError(f"{self.gpus} GPUs do not split evenly into {self.nodes} nodes")
        if self.affinity is not None:
            r = np.asarray(self.affinity, dtype=float)
            want = (loads.shape[0] - 1, e, e)
            if r.shape != want:
                raise PlannerError(
                    f"affinity must have shape [layers-1][experts][experts] = {list(want)}, "
                    f"got {list(r.shape)}"
                )
            if not np.isfinite(r).all() or (r < 0).any():
                raise PlannerError("affinity counts must be finite and >= 0")
            object.__setattr__(self, "affinity", r)
        if not (self.intra_node_bytes_per_s > 0 and self.inter_node_bytes_per_s > 0):
            raise PlannerError("link bandwidths must be > 0")
        if self.transitions is not None:
            x = np.asarray(self.transitions, dtype=float)
            if x.shape != (loads.shape[0] - 1, e, e) or not np.isfinite(x).all() or (x < 0).any():
                raise PlannerError(
                    f"transitions must be finite counts >= 0 of shape {[loads.shape[0] - 1, e, e]}"
                )
            object.__setattr__(self, "transitions", x)

    def routing(self) -> np.ndarray | None:
        """The transitions that set each layer's token sources (``transitions``, else from ``affinity``), or None."""
        if self.transitions is not None:
            return self.transitions
        if self.affinity is None:
            return None
        from perfmodel.ep_route import routed_transitions

        return routed_transitions(self.affinity, self.loads)

    @property
    def num_layers(self) -> int:
        return self.loads.shape[0]

    @property
    def num_experts(self) -> int:
        return self.loads.shape[1]

    def traffic(self) -> TrafficModel:
        return TrafficModel(self.gpus, self.nodes, self.intra_node_bytes_per_s / self.inter_node_bytes_per_s)


@dataclass(frozen=True)
class LayerMetrics:
    """Scores of one layer's placement; traffic counts go to the next layer (None: no affinity or last layer)."""

    max_gpu_load: float
    mean_gpu_load: float
    cross_gpu_tokens: float | None = None
    cross_node_tokens: float | None = None
    weighted_traffic: float | None = None

    def to_dict(self) -> dict:
        return {
            "max_gpu_load": self.max_gpu_load,
            "mean_gpu_load": self.mean_gpu_load,
            "cross_gpu_tokens": self.cross_gpu_tokens,
            "cross_node_tokens": self.cross_node_tokens,
            "weighted_traffic": self.weighted_traffic,
        }


@dataclass(frozen=True)
class SolverReport:
    name: str
    status: SolveStatus
    gap: float
    seconds: float
    layers_proven: int
    layers: int
    stage2_status: SolveStatus | None = None
    milp_layers: int = 0
    ties: TieSearch | None = None

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "status": self.status.value,
            "gap": self.gap,
            "seconds": self.seconds,
            "layers_proven_optimal": self.layers_proven,
            "layers": self.layers,
            "milp_layers": self.milp_layers,
        }
        if self.stage2_status is not None:
            d["affinity_status"] = self.stage2_status.value
        if self.ties is not None:
            d["tie_search"] = self.ties.to_dict()
        return d


@dataclass(frozen=True)
class MoEPlan:
    """The plan, its per-layer metrics and lower bounds, every baseline's metrics, and the solver report."""

    placements: tuple[Placement, ...]
    metrics: tuple[LayerMetrics, ...]
    lower_bounds: tuple[float, ...]
    baselines: dict[str, tuple[LayerMetrics, ...]] = field(default_factory=dict)
    solver: SolverReport | None = None
    gaps: tuple[float, ...] = ()
    methods: tuple[str | None, ...] = ()

    def to_dict(self) -> dict:
        def total(ms, key):
            vals = [getattr(m, key) for m in ms]
            return None if all(v is None for v in vals) else float(sum(v for v in vals if v is not None))

        n = len(self.placements)
        gaps = self.gaps or (None,) * n
        methods = self.methods or (None,) * n
        layers = [
            {"placement": [list(g) for g in p], **m.to_dict(), "lower_bound": lb, "gap": gap, "method": how}
            for p, m, lb, gap, how in zip(self.placements, self.metrics, self.lower_bounds, gaps, methods)
        ]
        from perfmodel.jsonout import jsonable

        keys = ("max_gpu_load", "cross_gpu_tokens", "cross_node_tokens", "weighted_traffic")
        return jsonable(
            {
                "layers": layers,
                "total": {k: total(self.metrics, k) for k in keys}
                | {"lower_bound": float(sum(self.lower_bounds))},
                "baselines": {
                    name: {"layers": [m.to_dict() for m in ms], "total": {k: total(ms, k) for k in keys}}
                    for name, ms in self.baselines.items()
                },
                "solver": self.solver.to_dict() if self.solver else None,
            }
        )


def score(
    problem: MoEProblem, placements: list[Placement] | tuple[Placement, ...]
) -> tuple[LayerMetrics, ...]:
    """Metrics of one placement per layer."""
    tm = problem.traffic() if problem.affinity is not None else None
    e = problem.num_experts
    shares = [mb.share_matrix(p, e) for p in placements] if tm else None
    out = []
    for l, p in enumerate(placements):
        loads = mb.gpu_loads(p, problem.loads[l])
        cg = cn = wt = None
        if tm is not None and l + 1 < problem.num_layers:
            c = shares[l].T @ problem.affinity[l] @ shares[l + 1]
            cg, cn, wt = tm.cross_gpu(c), tm.cross_node(c), tm.weighted(c)
        out.append(LayerMetrics(float(loads.max()), float(problem.loads[l].sum()) / problem.gpus, cg, cn, wt))
    return tuple(out)


def _layer_model(w: np.ndarray, gpus: int, slots: int, incumbent: Placement, lb: float, ub: float):
    """Stage-1 ILP of one layer, with the incumbent as initial values; returns (problem, x)."""
    e = len(w)
    spare = gpus * slots - e
    prob = pulp.LpProblem("moe_layer", pulp.LpMinimize)
    z = new_var(prob, "z", low=lb, up=ub * (1 + 1e-9) + 1e-9)
    prob += z
    x = {(i, g): new_var(prob, f"x_{i}_{g}", cat=pulp.LpBinary) for i in range(e) for g in range(gpus)}
    order = np.argsort(-w, kind="stable")
    cnt = mb.replica_counts(incumbent, e)
    held = {(i, g) for g, gpu in enumerate(incumbent) for i in gpu}
    for key, var in x.items():
        var.setInitialValue(1 if key in held else 0)
    z.setInitialValue(float(mb.gpu_loads(incumbent, w).max()))
    if spare == 0:
        for i in range(e):
            prob += pulp.lpSum(x[i, g] for g in range(gpus)) == 1
        for g in range(gpus):
            prob += pulp.lpSum(x[i, g] for i in range(e)) == slots
            prob += pulp.lpSum(float(w[i]) * x[i, g] for i in range(e) if w[i] > 0) <= z
        for j, i in enumerate(order[:gpus]):  # j-th heaviest only on GPUs 0..j
            for g in range(j + 1, gpus):
                x[int(i), g].upBound = 0
        return prob, x
    kmax = min(gpus, spare + 1)
    u = {i: new_var(prob, f"u_{i}", low=1.0 / kmax, up=1.0) for i in range(e)}
    f = {(i, g): new_var(prob, f"f_{i}_{g}", low=0, up=1) for i in range(e) for g in range(gpus)}
    for i in range(e):
        u[i].setInitialValue(1.0 / cnt[i])
        for g in range(gpus):
            f[i, g].setInitialValue((1.0 / cnt[i]) if (i, g) in held else 0.0)
    for i in range(e):
        prob += pulp.lpSum(x[i, g] for g in range(gpus)) >= 1
        prob += pulp.lpSum(f[i, g] for g in range(gpus)) == 1
        for g in range(gpus):
            prob += f[i, g] <= x[i, g]
            prob += f[i, g] <= u[i]
            prob += f[i, g] >= u[i] - 1 + x[i, g]
            prob += f[i, g] >= x[i, g] * (1.0 / kmax)  # valid: a replica serves >= 1/kmax
    for g in range(gpus):
        prob += pulp.lpSum(x[i, g] for i in range(e)) <= slots
        prob += pulp.lpSum(float(w[i]) * f[i, g] for i in range(e) if w[i] > 0) <= z
    x[int(order[0]), 0].lowBound = 1  # a replica of the heaviest expert on GPU 0
    return prob, x


def _extract(x, e: int, gpus: int) -> Placement:
    return tuple(tuple(i for i in range(e) if (x[i, g].varValue or 0) > 0.5) for g in range(gpus))


def plan_moe(problem: MoEProblem, options: SolverOptions | None = None, tie_search: bool = False) -> MoEPlan:
    """Plan every layer within ``options.time_limit_s`` (wall clock, both stages, scoring included),
    or by ``options.deadline`` when set.

    Layers are independent for the load, so each is planned alone:

    1. the best baseline and the lower bound of :func:`perfmodel.planners.moe_search.lower_bound`;
       a layer whose baseline meets the bound within ``options.gap_rel`` is proven;
    2. the local search and counts-first constructions of :func:`perfmodel.planners.moe_search.heuristic`
       (at most half of what is left for stage 1, shared equally by the open layers);
    3. with at most ``SEARCH_MAX_EXPERTS`` experts, the exact branch and bound of
       :func:`perfmodel.planners.moe_search.branch_and_bound`, which proves the layer when it ends in time;
    4. the MILP on what is still open, worst gap first, each layer an equal share of
       the remaining time but at least one second of solver time.

    With inter-layer affinity (``problem.affinity`` or ``problem.transitions``) stage 2 maps the clusters to
    GPUs (:func:`perfmodel.planners.moe_traffic.stage2_map`), and ``tie_search`` then runs
    :func:`perfmodel.planners.moe_ties.tie_search` until the deadline or convergence: replicas swapped or moved where no
    layer's largest load grows and the routed traffic between layers falls.

    A layer whose steps prove nothing keeps the best placement found, and the
    report says "not proven optimal".  Each layer's ``gap`` is ``(plan - lower
    bound) / plan``; ``method`` says what closed it (``lower_bound``, ``search``,
    ``milp``) or None.
    """
    options = options or SolverOptions()
    t0 = time.perf_counter()
    deadline = options.deadline_from(t0)
    L, E, G, S = problem.num_layers, problem.num_experts, problem.gpus, problem.slots_per_gpu
    check_model_size(layer_variables(E, G, S), f"{E} experts on {G} GPUs")
    base = [mb.baselines(problem.loads[l], G, S, problem.nodes) for l in range(L)]
    placements: list[Placement] = []
    ub, lb = np.zeros(L), np.zeros(L)
    for l in range(L):
        best = min(base[l].values(), key=lambda p: (mb.gpu_loads(p, problem.loads[l]).max(), -len(p)))
        placements.append(best)
        ub[l] = mb.gpu_loads(best, problem.loads[l]).max()
        lb[l] = ms.lower_bound(problem.loads[l], G, S)
    base_ub = ub.copy()
    method: list[str | None] = [None] * L

    def is_open(l: int) -> bool:
        return relative_gap(ub[l], lb[l]) > options.gap_rel + 1e-12

    for l in range(L):
        if not is_open(l):
            method[l] = "lower_bound"
    # score the baselines first: scoring the plan at the end takes as long, and that time is kept for it
    t_score = time.perf_counter()
    bl = {name: score(problem, [base[l][name] for l in range(L)]) for name in base[0]}
    reserve = 1.5 * (time.perf_counter() - t_score) / max(1, len(bl)) + 0.05
    tie_share = 0.1 if tie_search and problem.routing() is not None else 0.0
    stage2_share = (0.25 if problem.affinity is not None else 0.0) + tie_share
    stage1_end = deadline - stage2_share * max(0.0, deadline - time.perf_counter()) - reserve
    todo = [l for l in range(L) if is_open(l)]
    todo.sort(key=lambda l: -relative_gap(ub[l], lb[l]))
    search_end = time.perf_counter() + 0.5 * max(0.0, stage1_end - time.perf_counter())
    with progress(len(todo), "plan moe: search") as advance:
        for k, l in enumerate(todo):
            layer_end = time.perf_counter() + max(0.0, search_end - time.perf_counter()) / (len(todo) - k)
            w = problem.loads[l]
            cand = ms.heuristic(w, G, S, placements[l], layer_end)
            val = mb.gpu_loads(cand, w).max()
            if val < ub[l]:
                placements[l], ub[l] = cand, val
            if not is_open(l):
                method[l] = "lower_bound"
            elif E <= SEARCH_MAX_EXPERTS and time.perf_counter() < layer_end:
                cand, proven, _ = ms.branch_and_bound(w, G, S, placements[l], options.gap_rel, layer_end)
                val = mb.gpu_loads(cand, w).max()
                if val < ub[l]:
                    placements[l], ub[l] = cand, val
                if proven:
                    lb[l] = max(lb[l], ub[l] * (1 - options.gap_rel))
                    method[l] = "search"
            advance(1)
    todo = [l for l in todo if is_open(l)]
    todo.sort(key=lambda l: -relative_gap(ub[l], lb[l]))
    solved_status = {}
    # seconds per layer outside the solver's own limit (model building, handing it to the solver,
    # extraction): estimated from the model's size until the first layer measures it
    overhead = BUILD_S_PER_VARIABLE * layer_variables(E, G, S)
    with progress(len(todo), "plan moe: layers") as advance:
        for k, l in enumerate(todo):
            t_layer = time.perf_counter()
            left = stage1_end - t_layer
            # an equal share of what is left, but never less than a useful solve: the worst layers go first
            budget = min(max(left / (len(todo) - k), overhead + 1.0), left)
            if budget - overhead < 0.2:
                break
            w = problem.loads[l]
            prob, x = _layer_model(w, G, S, placements[l], lb[l], ub[l])
            granted = max(0.05, t_layer + budget - time.perf_counter() - 0.25 * overhead)
            res = solve(prob, options, granted, warm=True)
            if res.objective is not None:
                cand = _extract(x, E, G)
                if mb.replica_counts(cand, E).min() >= 1:
                    val = mb.gpu_loads(cand, w).max()
                    if val < ub[l] - 1e-9 * max(1.0, ub[l]):
                        placements[l], ub[l] = cand, val
            if res.bound is not None:
                lb[l] = max(lb[l], min(res.bound, ub[l]))
            if res.status is SolveStatus.OPTIMAL:
                lb[l] = max(lb[l], ub[l] * (1 - options.gap_rel))
            if not is_open(l):
                method[l] = "milp"
            solved_status[l] = res.status
            overhead = max(0.0, time.perf_counter() - t_layer - min(granted, res.seconds))
            advance(1)
    stage2_status = None
    if problem.affinity is not None:
        ties_from = (
            deadline - reserve - tie_share / stage2_share * max(0.0, deadline - reserve - time.perf_counter())
        )
        placements, stage2_status = stage2_map(problem, placements, options, ties_from)
    ties = None
    if tie_search and problem.routing() is not None:
        placements, ties = run_tie_search(problem, placements, deadline - reserve)
    gaps = [relative_gap(ub[l], lb[l]) for l in range(L)]
    proven = sum(g <= options.gap_rel + 1e-12 for g in gaps)
    improved = any(ub[l] < base_ub[l] for l in range(L))
    if proven == L:
        status = SolveStatus.OPTIMAL
    elif improved or any(s in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE) for s in solved_status.values()):
        status = SolveStatus.FEASIBLE
    else:
        status = SolveStatus.HEURISTIC
    metrics = score(problem, placements)
    report = SolverReport(
        options.name.value,
        status,
        float(max(gaps)),
        time.perf_counter() - t0,
        int(proven),
        L,
        stage2_status,
        len(solved_status),
        ties,
    )
    return MoEPlan(
        tuple(placements),
        metrics,
        tuple(float(v) for v in lb),
        bl,
        report,
        tuple(float(g) for g in gaps),
        tuple(method),
    )


SEARCH_MAX_EXPERTS = 24
"""Largest expert count per layer for which the exact branch and bound runs (beyond it, the
local search, the lower bound and the MILP)."""


BUILD_S_PER_VARIABLE = 6e-5
"""seconds per MILP variable to build a layer's model and hand it to HiGHS (measured: about 0.8 s for
256 experts x 32 GPUs with spare slots, 16K variables); the first layer's measurement replaces it."""


def layer_variables(experts: int, gpus: int, slots_per_gpu: int) -> int:
    """Variables of one layer's stage-1 MILP: ``x`` (and ``f``, ``u`` with spare slots)."""
    spare = gpus * slots_per_gpu > experts
    return experts * gpus * (2 if spare else 1) + (experts if spare else 0) + 1
