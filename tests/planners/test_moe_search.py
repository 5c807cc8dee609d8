import itertools
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfmodel.planners import SolverOptions, SolveStatus
from perfmodel.planners import moe_baselines as mb
from perfmodel.planners import moe_search as ms
from perfmodel.planners.moe import MoEProblem, plan_moe

# deepseek-ai/EPLB README: 2 layers x 12 experts, 16 physical slots on 8 GPUs in 2 nodes
EPLB_README = np.array(
    [
        [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
        [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
    ],
    float,
)


def brute_force(w, gpus, slots):
    """Minimum largest GPU load over every placement (GPUs interchangeable: subsets in order)."""
    e = len(w)
    subsets = [s for k in range(1, slots + 1) for s in itertools.combinations(range(e), k)] + [()]
    best = np.inf
    for combo in itertools.combinations_with_replacement(range(len(subsets)), gpus):
        placement = tuple(subsets[i] for i in combo)
        if len(set().union(*placement)) < e:
            continue
        best = min(best, mb.gpu_loads(placement, np.asarray(w, float)).max())
    return best


def test_published_example_is_proven_optimal_fast():
    t0 = time.perf_counter()
    plan = plan_moe(MoEProblem(EPLB_README, 8, 2, nodes=2), SolverOptions(time_limit_s=30, gap_rel=0.0))
    seconds = time.perf_counter() - t0
    assert plan.solver.status is SolveStatus.OPTIMAL
    assert plan.solver.layers_proven == 2 and plan.solver.gap == 0.0
    assert [m.max_gpu_load for m in plan.metrics] == pytest.approx([136.0, 172.0])
    assert plan.to_dict()["total"]["max_gpu_load"] == pytest.approx(136.0 + 172.0)
    for l in range(2):
        mb.check_placement(plan.placements[l], 12, 2)
        assert plan.lower_bounds[l] == pytest.approx(plan.metrics[l].max_gpu_load)
        for name, ms_ in plan.baselines.items():
            assert plan.metrics[l].max_gpu_load <= ms_[l].max_gpu_load, name
    assert seconds < 5.0


small = st.tuples(st.integers(2, 6), st.integers(1, 3), st.integers(0, 2), st.integers(0, 10_000))


def _instance(args):
    experts, gpus, extra, seed = args
    slots = -(-experts // gpus) + extra
    w = np.random.default_rng(seed).integers(0, 100, size=experts).astype(float)
    return w, gpus, slots


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small)
def test_branch_and_bound_and_lower_bound_against_brute_force(args):
    w, gpus, slots = _instance(args)
    opt = brute_force(w, gpus, slots)
    assert ms.lower_bound(w, gpus, slots) <= opt * (1 + 1e-9) + 1e-9
    start = mb.greedy_lpt(w, gpus, slots)
    p, proven, _ = ms.branch_and_bound(w, gpus, slots, start, 0.0, time.perf_counter() + 10)
    assert proven
    mb.check_placement(p, len(w), slots)
    assert mb.gpu_loads(p, w).max() == pytest.approx(opt, rel=1e-9, abs=1e-9)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(4, 40), st.integers(2, 8), st.integers(0, 2), st.floats(0.0, 1.5), st.integers(0, 10_000))
def test_plan_respects_slots_and_bound(experts, gpus, extra, alpha, seed):
    slots = -(-experts // gpus) + extra
    rng = np.random.default_rng(seed)
    w = rng.permutation(np.arange(1, experts + 1, dtype=float) ** -alpha) * rng.integers(1000, 100_000)
    loads = np.round(np.stack([w, rng.permutation(w)]))
    problem = MoEProblem(loads, gpus, slots)
    plan = plan_moe(problem, SolverOptions(time_limit_s=1.5))
    d = plan.to_dict()
    for l in range(2):
        mb.check_placement(plan.placements[l], experts, slots)  # every expert placed, slots respected
        got = mb.gpu_loads(plan.placements[l], loads[l]).max()
        assert got == pytest.approx(plan.metrics[l].max_gpu_load)
        assert plan.lower_bounds[l] <= got * (1 + 1e-9)
        assert plan.lower_bounds[l] >= ms.lower_bound(loads[l], gpus, slots) * (1 - 1e-12)
        assert d["layers"][l]["gap"] == pytest.approx(1 - plan.lower_bounds[l] / got, abs=1e-9)
        assert (d["layers"][l]["method"] is not None) == (d["layers"][l]["gap"] <= 1e-3 + 1e-12)
    assert plan.solver.layers_proven == sum(x["method"] is not None for x in d["layers"])


def test_improve_never_worse_and_keeps_slots():
    rng = np.random.default_rng(4)
    w = np.round(rng.permutation(np.arange(1, 65, dtype=float) ** -1.2) * 50_000)
    start = mb.greedy_replicated(w, 8, 9)
    out = ms.improve(w, 8, 9, start, time.perf_counter() + 5)
    mb.check_placement(out, 64, 9)
    assert mb.gpu_loads(out, w).max() <= mb.gpu_loads(start, w).max()
    assert mb.gpu_loads(out, w).max() >= ms.lower_bound(w, 8, 9)
