import json
from pathlib import Path

import numpy as np
import pytest

import perfmodel
from perfmodel.hw.loader import load_system
from perfmodel.calibration import resolve_profile
from perfmodel.cli import main
from perfmodel.comm import Topology, topology_from_system
from perfmodel.planners import SolverOptions
from perfmodel.planners.sp import build_instance, place_groups, plan_sp
from perfmodel.planners.sp_cost import SpCostModel, SpKind
from perfmodel.planners.synthetic import lognormal_lengths

TWO_NODES = str(Path(__file__).resolve().parents[2] / "examples" / "sp-two-nodes.json")


@pytest.fixture(scope="module")
def setup():
    m = perfmodel.load_model("llama-3-8b")
    g = perfmodel.load_gpu("h100-sxm-80gb")
    topo = topology_from_system(load_system("dgx-h100-x4"))  # 4 nodes of 8 H100, one 400 Gb/s NIC per GPU
    return m, g, topo


@pytest.mark.parametrize("kind", [SpKind.ULYSSES, SpKind.RING, SpKind.HYBRID])
def test_group_over_nodes_is_slower_than_inside_one(setup, kind):
    m, g, topo = setup
    p = perfmodel.peak_profile(g)
    s = np.array([4_000, 64_000])
    one_node = Topology("one NVLink node of 32", topo.gpu_name, 32, 1, topo.intra, None)
    flat = SpCostModel(m, g, p, kind, topology=one_node)  # the same GPUs and links, no node boundary
    nodes = SpCostModel(m, g, p, kind, topology=topo)
    assert np.allclose(nodes.time_s(s, 8), flat.time_s(s, 8))  # inside one node: the same links
    assert (nodes.time_s(s, 16) >= flat.time_s(s, 16)).all()  # over two nodes: the NICs
    assert nodes.time_s(s, 16)[0] > flat.time_s(s, 16)[0] * 1.05  # (a long ring hides its steps)
    assert nodes.comm_s(s, 16)[0] > nodes.comm_s(s, 8)[0]  # a short sequence pays the NICs


def _check_layout(plan, gpus, gpn):
    for r in {g.round for g in plan.groups}:
        groups = [g for g in plan.groups if g.round == r]
        ids = [x for g in groups for x in g.gpus]
        assert len(ids) == len(set(ids)) and max(ids) < gpus and min(ids) >= 0
        assert sum(g.degree for g in groups) <= gpus
        for g in groups:
            assert len(g.gpus) == g.degree
            nodes = {x // gpn for x in g.gpus}
            assert tuple(sorted(nodes)) == g.nodes
            if g.degree <= gpn:
                assert len(nodes) == 1  # inside one node
            else:  # whole nodes
                assert sorted(g.gpus) == [x for n in sorted(nodes) for x in range(n * gpn, n * gpn + gpn)]


@pytest.mark.parametrize("gpus", [32, 20, 13])
def test_place_groups_respects_nodes(gpus):
    rng = np.random.default_rng(gpus)
    for _ in range(200):
        degrees, left = [], gpus
        while left:
            d = int(
                rng.choice([d for d in (1, 2, 4, 8, 16, 32) if d <= left and (d <= 8 or d <= gpus // 8 * 8)])
            )
            degrees.append(d)
            left -= d if rng.random() < 0.9 else left
        ids = place_groups(degrees, gpus, 8)
        flat = [x for g in ids for x in g]
        assert len(flat) == len(set(flat)) and max(flat) < gpus
        for d, g in zip(degrees, ids):
            assert len(g) == d
            assert len({x // 8 for x in g}) == max(1, d // 8)


@pytest.mark.parametrize("micro_batches", [False, True])
def test_plan_on_topology_respects_nodes_and_bound(setup, micro_batches):
    m, g, topo = setup
    cost = SpCostModel(m, g, resolve_profile(g, "calibrated"), SpKind.AUTO, topology=topo)
    inst = build_instance(lognormal_lengths(80, 8.0, 1.6, min_len=128, max_len=262_144, seed=1), 32, cost)
    plan = plan_sp(inst, SolverOptions(time_limit_s=1.5), micro_batches=micro_batches)
    _check_layout(plan, 32, 8)
    assert sorted(i for x in plan.groups for i in x.sequences) == list(range(80))
    assert plan.makespan_s >= plan.lower_bound_s * (1 - 1e-9)
    assert all(plan.makespan_s <= v * (1 + 1e-9) for v in plan.baselines.values() if v is not None)
    for x in plan.groups:
        assert sum(x.sp_kinds.values()) == len(x.sequences)
        assert sorted(i for b in x.micro_batches for i in b) == list(x.sequences)


def test_two_nodes_mixed_plan_beats_every_static_degree(setup):
    m, g, topo = setup
    lengths = json.loads(Path(TWO_NODES).read_text())["lengths"]
    cost = SpCostModel(m, g, resolve_profile(g, "calibrated"), SpKind.AUTO, topology=topo)
    inst = build_instance(lengths, 16, cost)
    plan = plan_sp(inst, SolverOptions(time_limit_s=2), micro_batches=True)
    longest = int(np.argmax(inst.lengths))
    within_node = min(inst.time_s[longest, j] for j, d in enumerate(inst.degrees) if d <= 8)
    assert within_node > plan.makespan_s  # the longest sequence needs a group over both nodes
    best_static = min(v for v in plan.baselines.values() if v is not None)
    assert best_static / plan.makespan_s > 1.0
    assert plan.makespan_s >= plan.lower_bound_s * (1 - 1e-9)
    _check_layout(plan, 16, 8)


def test_cli_topology_json(capsys):
    rc = main(
        [
            "plan",
            "sp",
            "--lengths",
            TWO_NODES,
            "--gpus",
            "16",
            "--model",
            "llama-3-8b",
            "--gpu",
            "h100",
            "--topology",
            "dgx-h100-x4",
            "--sp-kind",
            "auto",
            "--micro-batches",
            "--time-limit",
            "3",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["topology"] == {"name": "dgx-h100-x4", "gpus_per_node": 8, "nodes": 2}
    assert {"nodes", "sp_kinds", "micro_batches", "round"} <= set(out["groups"][0])
    assert out["solver"]["micro_batches"] is True
    assert (
        main(
            [
                "plan",
                "sp",
                "--lengths",
                TWO_NODES,
                "--gpus",
                "64",
                "--model",
                "llama-3-8b",
                "--gpu",
                "h100",
                "--topology",
                "dgx-h100-x4",
                "--json",
            ]
        )
        == 1
    )  # more GPUs than the system has
