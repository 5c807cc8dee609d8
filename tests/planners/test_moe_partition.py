"""Layers without spare slots: the cardinality bound, the differencing method and the pair rebalancing."""

import itertools
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfmodel.planners import SolverOptions, SolveStatus
from perfmodel.planners import moe_baselines as mb
from perfmodel.planners import moe_partition as mp
from perfmodel.planners import moe_search as ms
from perfmodel.planners.moe import MoEProblem, plan_moe
from perfmodel.planners.synthetic import zipf_loads


def brute_force(w, gpus, slots):
    """Smallest largest sum over every partition of ``w`` into ``gpus`` sets of ``slots`` items."""
    best = [np.inf]

    def rec(left, sums):
        if not left:
            best[0] = min(best[0], max(sums))
            return
        first, rest = left[0], left[1:]

        for others in itertools.combinations(rest, slots - 1):
            s = w[first] + sum(w[i] for i in others)
            if max([s, *sums]) >= best[0]:
                continue
            rec([i for i in rest if i not in others], sums + [s])

    rec(list(range(len(w))), [])
    return best[0]


shapes = st.sampled_from([(2, 2), (2, 3), (3, 2), (2, 4), (3, 3), (4, 2)])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes, st.floats(0.0, 2.0), st.booleans(), st.integers(0, 10_000))
def test_cardinality_bound_is_valid_and_the_heuristic_keeps_cardinalities(shape, alpha, integral, seed):
    gpus, slots = shape
    rng = np.random.default_rng(seed)
    w = rng.permutation(np.arange(1, gpus * slots + 1, dtype=float) ** -alpha) * rng.uniform(10, 1000)
    w = np.round(w) if integral else w
    opt = brute_force(w, gpus, slots)
    lb = mp.cardinality_bound(w, gpus, slots)
    assert lb <= opt * (1 + 1e-12) + 1e-9
    assert lb >= mb.load_lower_bound(w, gpus, slots) * (1 - 1e-12) - 1e-9  # contains the general bound
    assert ms.lower_bound(w, gpus, slots) >= lb
    p = ms.partition_heuristic(w, gpus, slots, mb.greedy_lpt(w, gpus, slots), time.perf_counter() + 5)
    mb.check_placement(p, len(w), slots)
    assert all(len(g) == slots for g in p)
    assert mb.gpu_loads(p, w).max() >= opt * (1 - 1e-12)


def test_heaviest_expert_with_the_lightest_is_the_bound_on_skewed_loads():
    # one hot expert above the mean GPU load: its GPU carries it and at least the S - 1 lightest
    w = np.array([100.0, 9, 8, 7, 6, 5, 4, 3])
    assert mb.load_lower_bound(w, 2, 4) == pytest.approx(100)  # the hot expert alone
    assert mp.cardinality_bound(w, 2, 4) == pytest.approx(100 + 3 + 4 + 5)
    assert brute_force(w, 2, 4) == pytest.approx(112)


def test_differencing_and_rebalance_keep_cardinalities_and_never_worsen():
    rng = np.random.default_rng(3)
    for _ in range(5):
        w = rng.integers(0, 1000, 64).astype(float)
        p = mp.differencing(w, 8, 8)
        mb.check_placement(p, 64, 8)
        assert sorted(e for g in p for e in g) == list(range(64))
        assert all(len(g) == 8 for g in p)
        q = mp.rebalance(w, 8, 8, mb.greedy_lpt(w, 8, 8), time.perf_counter() + 5)
        mb.check_placement(q, 64, 8)
        assert all(len(g) == 8 for g in q)
        assert mb.gpu_loads(q, w).max() <= mb.gpu_loads(mb.greedy_lpt(w, 8, 8), w).max()
        assert mb.gpu_loads(q, w).max() >= mp.cardinality_bound(w, 8, 8)


@pytest.mark.parametrize("alpha", [0.5, 1.2])
def test_deepseek_v3_sized_layers_without_spare_slots_are_proven_without_the_milp(alpha):
    loads = zipf_loads(256, 61, alpha, tokens=200_000, top_k=8, seed=11)
    t0 = time.perf_counter()
    plan = plan_moe(MoEProblem(loads, 32, 8, 4), SolverOptions(time_limit_s=60))
    seconds = time.perf_counter() - t0
    d = plan.to_dict()
    assert plan.solver.status is SolveStatus.OPTIMAL and plan.solver.layers_proven == 61
    assert plan.solver.milp_layers == 0
    assert all(layer["method"] == "lower_bound" and layer["gap"] <= 1e-3 for layer in d["layers"])
    for l in range(61):
        assert all(len(g) == 8 for g in plan.placements[l])
        assert plan.lower_bounds[l] >= mp.cardinality_bound(loads[l], 32, 8)
    assert seconds < 20.0


def test_a_layer_the_bound_cannot_close_goes_to_the_milp():
    # even loads with an odd mean GPU load: every GPU sum is even, so the optimum (52) is above the bound (51)
    w = np.array(
        [
            [
                10,
                8,
                6,
                4,
                4,
                2,
                2,
                2,
                2,
                10,
                8,
                10,
                6,
                8,
                10,
                8,
                8,
                6,
                6,
                10,
                4,
                10,
                8,
                2,
                4,
                10,
                6,
                2,
                8,
                8,
                10,
                2,
            ]
        ],
        float,
    )
    assert mp.cardinality_bound(w[0], 4, 8) == 51
    plan = plan_moe(MoEProblem(w, 4, 8), SolverOptions(time_limit_s=20))
    assert plan.metrics[0].max_gpu_load == 52
    assert plan.solver.milp_layers == 1 and plan.methods[0] == "milp"
    assert plan.solver.status is SolveStatus.OPTIMAL and plan.lower_bounds[0] > 51
