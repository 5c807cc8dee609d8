import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfmodel.planners import InfeasibleError, PlannerError, SolverOptions, SolveStatus
from perfmodel.planners import moe_baselines as mb
from perfmodel.planners.moe import MoEProblem, plan_moe
from perfmodel.planners.synthetic import markov_affinity, zipf_loads

EXACT = SolverOptions(time_limit_s=20, gap_rel=0.0)


def brute_force(w, gpus, slots):
    """Minimum max GPU load over every placement (each GPU a subset of <= slots experts, all covered)."""
    e = len(w)
    subsets = [s for k in range(slots + 1) for s in itertools.combinations(range(e), k)]
    best = np.inf
    for combo in itertools.product(subsets, repeat=gpus):
        if any(a > b for a, b in zip(combo, combo[1:])):  # GPUs are interchangeable
            continue
        if len(set().union(*combo)) < e:
            continue
        best = min(best, mb.gpu_loads(combo, np.asarray(w, float)).max())
    return best


@pytest.mark.parametrize(
    "w,gpus,slots",
    [
        ([9, 7, 6, 5], 2, 2),  # no spare slot
        ([10, 3, 2, 1], 2, 3),  # spare slots: replicate the hot expert
        ([12, 5, 4, 4, 3], 3, 2),
        ([20, 1, 1, 1, 1], 3, 2),
        ([5, 5, 5], 2, 2),
    ],
)
def test_exact_optimum_matches_brute_force(w, gpus, slots):
    plan = plan_moe(MoEProblem(np.array([w], float), gpus, slots), EXACT)
    assert plan.metrics[0].max_gpu_load == pytest.approx(brute_force(w, gpus, slots), rel=1e-6)
    assert plan.solver.status is SolveStatus.OPTIMAL
    mb.check_placement(plan.placements[0], len(w), slots)


def _invariants(problem, plan):
    L, E = problem.loads.shape
    for l in range(L):
        mb.check_placement(plan.placements[l], E, problem.slots_per_gpu)
        got = plan.metrics[l].max_gpu_load
        assert got == pytest.approx(mb.gpu_loads(plan.placements[l], problem.loads[l]).max())
        for name, ms in plan.baselines.items():
            assert got <= ms[l].max_gpu_load * (1 + 1e-9), name
        assert got >= plan.lower_bounds[l] * (1 - 1e-9)
        assert (
            plan.lower_bounds[l]
            >= mb.load_lower_bound(problem.loads[l], problem.gpus, problem.slots_per_gpu) - 1e-9
        )
    assert 0 <= plan.solver.gap <= 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 10), st.integers(1, 4), st.integers(0, 3), st.integers(0, 10_000))
def test_invariants_random(experts, gpus, extra, seed):
    slots = -(-experts // gpus) + extra
    w = np.random.default_rng(seed).integers(0, 1000, size=(2, experts)).astype(float)
    problem = MoEProblem(w, gpus, slots)
    _invariants(problem, plan_moe(problem, SolverOptions(time_limit_s=2)))


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.2])
@pytest.mark.parametrize("slots", [4, 5])
def test_zipf_loads(alpha, slots):
    loads = zipf_loads(32, 2, alpha, tokens=20_000, top_k=4, seed=3)
    problem = MoEProblem(loads, 8, slots, nodes=2)
    plan = plan_moe(problem, SolverOptions(time_limit_s=3))
    _invariants(problem, plan)
    if plan.solver.status is SolveStatus.OPTIMAL:
        assert plan.solver.gap <= 1e-3 + 1e-12


def test_status_is_honest_at_a_time_limit():
    loads = zipf_loads(64, 2, 1.2, tokens=50_000, seed=1)
    plan = plan_moe(MoEProblem(loads, 8, 9), SolverOptions(time_limit_s=0.5, gap_rel=0.0))
    gaps = [1 - lb / m.max_gpu_load for lb, m in zip(plan.lower_bounds, plan.metrics)]
    if plan.solver.status is SolveStatus.OPTIMAL:
        assert max(gaps) <= 1e-9
    else:
        assert "not proven optimal" in plan.solver.status.value
        assert plan.solver.gap == pytest.approx(max(gaps), abs=1e-9) and plan.solver.gap > 0


def test_time_limit_respected_at_scale():
    import time

    loads = zipf_loads(256, 4, 1.2, seed=2)
    t0 = time.perf_counter()
    plan = plan_moe(MoEProblem(loads, 32, 9, nodes=4), SolverOptions(time_limit_s=4))
    assert time.perf_counter() - t0 < 4 + 2.0
    _invariants(MoEProblem(loads, 32, 9, nodes=4), plan)


def _stage2_brute(problem, placements):
    tm = problem.traffic()
    L, G = problem.num_layers, problem.gpus
    best = np.inf
    for perms in itertools.product(itertools.permutations(range(G)), repeat=L):
        moved = [tuple(p[perm.index(g)] for g in range(G)) for p, perm in zip(placements, perms)]
        sh = [mb.share_matrix(m, problem.num_experts) for m in moved]
        best = min(best, sum(tm.weighted(sh[l].T @ problem.affinity[l] @ sh[l + 1]) for l in range(L - 1)))
    return best


def test_affinity_stage_is_exact_on_small_instances_and_keeps_loads():
    loads = zipf_loads(6, 2, 1.0, tokens=3000, top_k=2, seed=5)
    aff = markov_affinity(loads, seed=5)
    with_aff = MoEProblem(
        loads, 4, 2, nodes=2, affinity=aff, intra_node_bytes_per_s=450e9, inter_node_bytes_per_s=50e9
    )
    plan = plan_moe(with_aff, EXACT)
    plain = plan_moe(MoEProblem(loads, 4, 2, nodes=2), EXACT)
    for a, b in zip(plan.metrics, plain.metrics):
        assert a.max_gpu_load == pytest.approx(b.max_gpu_load)
    got = sum(m.weighted_traffic for m in plan.metrics[:-1])
    # the stage-2 optimum over GPU permutations of the same per-layer clusters
    unmapped = [tuple(sorted(plan.placements[l])) for l in range(2)]
    assert got == pytest.approx(_stage2_brute(with_aff, unmapped), rel=1e-6)
    assert plan.solver.stage2_status is SolveStatus.OPTIMAL
    assert plan.metrics[-1].cross_gpu_tokens is None
    for name, ms in plan.baselines.items():
        assert ms[0].cross_gpu_tokens is not None, name


def test_infeasible_inputs_name_what_cannot_fit():
    with pytest.raises(InfeasibleError, match="10 experts do not fit: 2 GPUs x 4 slots = 8 slots"):
        MoEProblem(np.ones((1, 10)), 2, 4)
    with pytest.raises(InfeasibleError, match="gpus must be a positive integer"):
        MoEProblem(np.ones((1, 4)), 0, 4)
    with pytest.raises(PlannerError, match="nodes"):
        MoEProblem(np.ones((1, 4)), 3, 4, nodes=2)
    with pytest.raises(PlannerError, match="affinity must have shape"):
        MoEProblem(np.ones((2, 4)), 2, 2, affinity=np.ones((2, 4, 4)))
    with pytest.raises(PlannerError, match=">= 0"):
        MoEProblem(-np.ones((1, 4)), 2, 2)


def test_baselines_shapes():
    assert mb.contiguous(8, 4) == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert mb.round_robin(8, 4) == ((0, 4), (1, 5), (2, 6), (3, 7))
    w = np.array([50.0, 10, 10, 10, 5, 5, 5, 5])
    rep = mb.greedy_replicated(w, 4, 3)
    mb.check_placement(rep, 8, 3)
    assert mb.replica_counts(rep, 8)[0] >= 3  # the hot expert takes the spare slots
    h = mb.eplb_hierarchical(w, 4, 3, nodes=2)
    mb.check_placement(h, 8, 3)
