"""Token sources that follow the placement (inter-layer affinity) and the tie search over equal-load placements."""

import json
import time

import numpy as np
import pytest

from perfmodel.ep_route import plan_traffic, routed_transitions, synthetic_transitions, traffic_matrix
from perfmodel.errors import InvalidInputError
from perfmodel.planners import moe_baselines as mb
from perfmodel.planners.moe import MoEProblem, plan_moe
from perfmodel.planners.moe_ties import routed_weighted_traffic, tie_search
from perfmodel.planners.solver import SolverOptions
from perfmodel.planners.synthetic import zipf_loads
from tests.conftest import run_perfmodel


def _cross_node(t: np.ndarray, per_node: int) -> float:
    n = np.arange(len(t)) // per_node
    return float(t[n[:, None] != n[None, :]].sum())


def test_no_transition_is_the_even_model():
    w = np.array([4.0, 2.0, 6.0, 1.0])
    p0, p1 = ((0, 1), (2, 3)), ((0, 2), (1, 3))
    even = traffic_matrix(p1, w)
    assert np.allclose(traffic_matrix(p1, w, p0, np.zeros((4, 4))), even)
    assert np.allclose(traffic_matrix(p1, w, p0, synthetic_transitions(np.stack([w, w]), 0.0)[0]), even)
    assert np.isclose(
        traffic_matrix(p1, w, p0, synthetic_transitions(np.stack([w, w]), 0.7)[0]).sum(), w.sum()
    )


def test_full_affinity_on_the_same_gpus_stays_local():
    """Every copy of expert e comes from expert e's GPU: the same placement twice sends nothing off-GPU."""
    w = np.array([[3.0, 1.0, 2.0, 5.0]] * 2)
    x = synthetic_transitions(w, 1.0)
    same = [((0, 1), (2, 3))] * 2
    moved = [((0, 1), (2, 3)), ((0, 2), (1, 3))]
    t_same, t_moved = plan_traffic(same, w, x), plan_traffic(moved, w, x)
    assert np.isclose(np.trace(t_same[1]), w[1].sum()) and np.isclose(
        t_same[1].sum() - np.trace(t_same[1]), 0
    )
    assert t_moved[1].sum() - np.trace(t_moved[1]) > 0
    # the first layer's tokens sit evenly either way
    assert np.allclose(t_same[0], t_moved[0])


def test_cross_node_bytes_follow_the_placement():
    """Under the even model cross-node copies do not depend on which experts share a node; with affinity they do."""
    w = np.full((2, 8), 100.0)
    keep = [tuple((2 * g, 2 * g + 1) for g in range(4))] * 2  # expert e on the same GPU in both layers
    swap = [keep[0], ((4, 5), (6, 7), (0, 1), (2, 3))]  # layer 1's experts on the other node
    even = [_cross_node(plan_traffic(p, w)[1], 2) for p in (keep, swap)]
    aff = [_cross_node(plan_traffic(p, w, synthetic_transitions(w, 0.8))[1], 2) for p in (keep, swap)]
    assert even[0] == pytest.approx(even[1])
    assert aff[0] < even[0] < aff[1]


def test_routed_transitions_scale_trace_pairs_to_copies():
    pairs = np.array([[[2.0, 0.0], [2.0, 4.0]]])  # top-k pairs: column sums 4, 4
    loads = np.array([[2.0, 6.0], [2.0, 3.0]])
    x = routed_transitions(pairs, loads)
    assert np.allclose(x.sum(axis=1), loads[1])
    assert np.allclose(x[0][:, 0], [1.0, 1.0]) and np.allclose(x[0][:, 1], [0.0, 3.0])
    with pytest.raises(InvalidInputError):
        synthetic_transitions(loads, 1.5)


def test_tie_search_keeps_loads_and_lowers_traffic():
    loads = zipf_loads(16, 4, 1.0, tokens=8000, top_k=2, seed=1)
    x = synthetic_transitions(loads, 0.6)
    problem = MoEProblem(loads, 8, 3, 2, x, transitions=x)
    start = [mb.baselines(loads[l], 8, 3, 2)["greedy_replicated"] for l in range(4)]
    out, rep = tie_search(problem, start, time.perf_counter() + 20)
    assert rep.converged and rep.changes > 0
    assert rep.weighted_after < rep.weighted_before == pytest.approx(routed_weighted_traffic(problem, start))
    assert rep.weighted_after == pytest.approx(routed_weighted_traffic(problem, out))
    for l, (a, b) in enumerate(zip(start, out)):
        mb.check_placement(b, 16, 3)
        assert mb.gpu_loads(b, loads[l]).max() <= mb.gpu_loads(a, loads[l]).max() * (1 + 1e-9)
        assert sorted(mb.replica_counts(a, 16)) == sorted(mb.replica_counts(b, 16))


def test_plan_with_ties_reports_and_keeps_loads():
    loads = zipf_loads(16, 3, 1.2, tokens=8000, top_k=2, seed=4)
    x = synthetic_transitions(loads, 0.7)
    problem = MoEProblem(loads, 8, 3, 2, x, transitions=x)
    opts = SolverOptions(time_limit_s=4)
    b = plan_moe(problem, opts, tie_search=True)
    assert b.solver.ties is not None
    assert b.solver.ties.weighted_after <= b.solver.ties.weighted_before
    for l, m in enumerate(b.metrics):  # the tie search never raises a layer's load above a baseline's
        best = min(mb.gpu_loads(p, loads[l]).max() for p in mb.baselines(loads[l], 8, 3, 2).values())
        assert m.max_gpu_load <= best * (1 + 1e-9)


def test_plan_moe_cli_synthetic_affinity_and_loads_in_the_file(tmp_path):
    loads = zipf_loads(16, 3, 1.0, tokens=8000, top_k=2, seed=1)
    (tmp_path / "loads.json").write_text(json.dumps({"loads": loads.tolist()}))
    base = (
        "plan",
        "moe",
        "--loads",
        tmp_path / "loads.json",
        "--gpus",
        "8",
        "--slots-per-gpu",
        "3",
        "--nodes",
        "2",
        "--time-limit",
        "4",
        "--json",
    )
    even = json.loads(run_perfmodel(*base).stdout)
    r = run_perfmodel(*base, "--synthetic-affinity", "0.8", "--tie-search")
    assert r.returncode == 0, r.stderr
    aff = json.loads(r.stdout)
    assert even["all_to_all"]["token_sources"] == "even"
    assert aff["all_to_all"]["token_sources"] == "synthetic affinity 0.8"
    assert "tie_search" in aff["solver"]
    # contiguous keeps expert e on one GPU in every layer: with affinity its later layers send less across nodes
    c_even, c_aff = even["baselines"]["contiguous"]["layers"], aff["baselines"]["contiguous"]["layers"]
    assert c_aff[1]["all_to_all_cross_node_bytes"] < c_even[1]["all_to_all_cross_node_bytes"]
    for layer, w in zip(aff["layers"], loads):
        assert layer["loads"] == pytest.approx(w.tolist())
        t = np.asarray(layer["traffic"])
        assert t.shape == (8, 8) and t.sum() == pytest.approx(w.sum(), rel=1e-6)
    for bad in (("--synthetic-affinity", "2"), ("--tie-search",)):
        r = run_perfmodel(*base, *bad)
        assert r.returncode != 0 and r.stdout == "" and "Traceback" not in r.stderr
