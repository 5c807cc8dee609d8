"""Planners honour --time-limit for the whole command and refuse inputs whose model exceeds a bound."""

import json
import time

import numpy as np
import pytest

from perfmodel.planners.errors import PlannerError, TooLargeError
from perfmodel.planners.moe import MoEProblem, plan_moe
from perfmodel.planners.solver import MAX_MILP_VARIABLES, SolverOptions
from perfmodel.planners.sp import check_size, milp_variables
from perfmodel.planners.synthetic import lognormal_lengths, zipf_loads

LIMIT_S = 2.0


def _wall(cli, *argv):
    t = time.perf_counter()
    r = cli(*argv, timeout=120)
    return r, time.perf_counter() - t


def _startup_s(cli) -> float:
    """The interpreter's start and the CLI's imports, on this machine now (outside any planner's control)."""
    r, s = _wall(cli, "plan", "moe", "--help")
    assert r.returncode == 0
    return s


def test_plan_moe_whole_command_within_limit(perfmodel_cli, tmp_path):
    # DeepSeek-V3 sized: 256 experts x 32 GPUs (9 slots) x 61 layers; each layer's model takes ~1 s to build
    loads = tmp_path / "loads.json"
    loads.write_text(json.dumps({"loads": zipf_loads(256, 61, 1.01, seed=0).tolist()}))
    r, wall = _wall(
        perfmodel_cli,
        "plan",
        "moe",
        "--loads",
        loads,
        "--gpus",
        32,
        "--slots-per-gpu",
        9,
        "--nodes",
        4,
        "--time-limit",
        LIMIT_S,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["solver"]["seconds"] <= 2 * LIMIT_S
    assert wall <= 2 * LIMIT_S + 2 + _startup_s(perfmodel_cli), wall


def test_plan_sp_whole_command_within_limit(perfmodel_cli, tmp_path):
    lengths = tmp_path / "lengths.json"
    lengths.write_text(json.dumps({"lengths": [int(x) for x in lognormal_lengths(4000, seed=0)]}))
    r, wall = _wall(
        perfmodel_cli,
        "plan",
        "sp",
        "--lengths",
        lengths,
        "--gpus",
        1024,
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
        "--time-limit",
        LIMIT_S,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["solver"]["seconds"] <= 2 * LIMIT_S
    assert wall <= 2 * LIMIT_S + 2 + _startup_s(perfmodel_cli), wall


def test_plan_sp_refuses_huge_gpu_count_at_once(perfmodel_cli, tmp_path):
    lengths = tmp_path / "lengths.json"
    lengths.write_text(json.dumps({"lengths": [1000, 2000, 4000]}))
    r, wall = _wall(
        perfmodel_cli,
        "plan",
        "sp",
        "--lengths",
        lengths,
        "--gpus",
        100000,
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "100,000 GPUs" in lines[0] and f"{MAX_MILP_VARIABLES:,}" in lines[0], r.stderr
    assert wall < 30


def test_sp_size_bound_api():
    assert milp_variables(64, 16) == (64 + 32 + 16 + 8 + 4 + 2 + 1) * 17 + 1
    check_size(1024, 16)
    with pytest.raises(TooLargeError) as e:
        check_size(100_000, 16)
    assert isinstance(e.value, PlannerError) and e.value.limit == MAX_MILP_VARIABLES


def test_moe_refuses_a_layer_model_beyond_the_bound():
    with pytest.raises(TooLargeError):
        plan_moe(MoEProblem(np.ones((1, 1024)), 256, 8), SolverOptions(time_limit_s=1))


def test_moe_deadline_already_passed_keeps_the_best_baseline():
    p = MoEProblem(zipf_loads(64, 8, 1.01, seed=1), 8, 9)
    t = time.perf_counter()
    plan = plan_moe(p, SolverOptions(time_limit_s=5, deadline=time.perf_counter() - 1))
    assert time.perf_counter() - t < 2
    assert plan.solver.status.value.startswith(("heuristic", "optimal"))
    best = min(b["total"]["max_gpu_load"] for b in plan.to_dict()["baselines"].values())
    assert plan.to_dict()["total"]["max_gpu_load"] <= best


def test_plan_capacity_whole_command_within_limit(perfmodel_cli):
    # unlimited, this search simulates about 40 deployments of 3,000 requests (over 20 s here)
    argv = (
        "plan",
        "capacity",
        "--model",
        "llama-3-8b",
        "--rate",
        "50",
        "--slo-ttft",
        "1",
        "--slo-tpot",
        "0.05",
        "--requests",
        "3000",
        "--backend",
        "local",
        "--time-limit",
        1,
        "--json",
    )
    r, wall = _wall(perfmodel_cli, *argv)
    assert wall <= 2 * 1 + 2 + _startup_s(perfmodel_cli), wall
    if r.returncode == 0:  # the cheapest found by the deadline, marked incomplete
        out = json.loads(r.stdout)
        assert out["complete"] is False and out["best"]["replicas"] >= 1
    else:
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "time limit was reached" in r.stderr, (
            r.stderr
        )


def test_plan_capacity_past_its_deadline_says_so():
    from perfmodel.serving import LengthDist, Slo, Workload
    from perfmodel.planners.capacity import CapacityQuery, load_prices, plan_capacity

    reqs = Workload(50, 10.0, LengthDist.parse(1024), LengthDist.parse(32), seed=0).generate()
    q = CapacityQuery(
        "llama-3-8b",
        reqs,
        Slo(ttft_s=1.0, tpot_s=0.05),
        ("h100-sxm-80gb",),
        (1,),
        max_gpus=2,
        deadline=time.time() - 1,
    )
    with pytest.raises(PlannerError, match="time limit was reached after simulating 0 deployment"):
        plan_capacity(q, load_prices(), backend="local")
    plan = plan_capacity(q.__class__(**{**q.__dict__, "deadline": None}), load_prices(), backend="local")
    assert plan.complete and plan.best.meets


@pytest.mark.parametrize(
    "flag, value, needle",
    [("--requests", "2000000", "above the 1,000,000"), ("--max-gpus", "1000000", "above the 65,536")],
)
def test_plan_capacity_bounds_its_inputs(perfmodel_cli, flag, value, needle):
    r = perfmodel_cli(
        "plan", "capacity", "--model", "llama-3-8b", "--rate", "5", "--slo-ttft", "1", flag, value
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_sp_groups_are_priced_over_nodes_never_as_one_nvlink_node():
    from perfmodel.scenario import Scenario
    from perfmodel.planners.sp_cost import SpCostModel

    scn = Scenario.make("llama-3-8b", "h100", context_len=64_000, output_tokens=0, sp_kind="ring")
    free = SpCostModel.from_scenario(scn)
    assert free.degree_ok(64) and free._topology(16).num_nodes == 2 and free._topology(16).inter is not None
    assert free.comm_s([64_000], 16)[0] > 0
    node = SpCostModel.from_scenario(scn.replace(topology="dgx-h100"))
    assert node.degree_ok(8) and not node.degree_ok(16)
    l40s = SpCostModel.from_scenario(Scenario.make("llama-3-8b", "l40s", context_len=8000, sp_kind="ring"))
    assert l40s.degree_ok(8) and not l40s.degree_ok(16)  # no shipped cluster of L40S: one node at most
