"""Expert parallelism in the simulator: analyze's EP pricing per iteration, placements, memory, refusals."""

import json

import numpy as np
import pytest

from perfmodel.analyze import analyze
from perfmodel.ep_route import MoePlacement
from perfmodel.errors import InvalidInputError
from perfmodel.knobs import Knobs
from perfmodel.scenario import Layout, Scenario
from perfmodel.serving import Deployment, Requests, analytic_bounds, build_timer, simulate
from perfmodel.serving.deployment import replica_memory
from tests.conftest import run_perfmodel

MODEL, GPU = "mixtral-8x7b", "h100-sxm-80gb"  # 8 experts
HOT = [[[0, 1, 2, 3, 4], [5], [6], [7]]]  # five experts on GPU 0
HOT_LOADS = MoePlacement(layers=(((0, 1), (2, 3), (4, 5), (6, 7)),), loads=((9.0, 9.0, 1, 1, 1, 1, 1, 1),))


@pytest.mark.parametrize(
    "tp,ep,placement",
    [(1, 4, None), (2, 4, None), (1, 8, None), (1, 4, HOT), (1, 4, HOT_LOADS), (2, 4, HOT_LOADS)],
)
def test_decode_iteration_is_analyze_decode_step(tp, ep, placement):
    dep = Deployment.make(MODEL, GPU, tp=tp, ep=ep, moe_placement=placement)
    timer = build_timer(dep, 20_000)
    for b, kv in [(1, 1000), (5, 3000), (16, 2000), (30, 1500)]:
        got = timer.iteration_s(b, kv * b, 0, b, 0.0)
        step = analyze(
            MODEL, GPU, context_len=kv, output_tokens=8, batch=b, tp=tp, ep=ep, moe_placement=placement
        ).decode_step
        assert got == pytest.approx(float(step.total_s), rel=1e-4), (b, kv)  # the key grid's interpolation


@pytest.mark.parametrize("placement", [None, HOT])
def test_decode_only_simulation_step_equals_analyze(placement):
    n, prompt = 8, 1000
    dep = Deployment.make(MODEL, GPU, ep=4, moe_placement=placement)
    res = simulate(dep, Requests.of([0.0] * n, [prompt] * n, [2] * n))
    df = res.timeline_frame()
    decode = df[(df["prefill_tokens"] == 0) & (df["decode_batch"] == n)]
    assert len(decode) == 1
    # the step reads the prompt's keys and the first token's
    step = analyze(
        MODEL, GPU, context_len=prompt + 1, output_tokens=1, batch=n, ep=4, moe_placement=placement
    ).decode_step
    assert float(decode["duration_s"].iloc[0]) == pytest.approx(float(step.total_s), rel=1e-6)


def test_hot_placement_slows_serving_and_the_bounds_follow():
    reqs = Requests.of([0.0] * 64, [2000] * 64, [32] * 64)
    out = {}
    for name, pl in (("spread", None), ("hot", HOT_LOADS)):
        dep = Deployment.make(MODEL, GPU, ep=4, moe_placement=pl)
        s = simulate(dep, reqs, record_timeline=False).summary()
        b = analytic_bounds(dep, reqs)
        assert s["completed"] == 64
        assert s["tpot_s"]["p50"] >= float(b.tpot_floor_s.min()) * (1 - 1e-9)
        assert s["throughput_tokens_per_s"] <= b.throughput_bound_tokens_per_s
        out[name] = s
    assert out["hot"]["tpot_s"]["mean"] > 1.2 * out["spread"]["tpot_s"]["mean"]
    assert out["hot"]["ttft_s"]["mean"] > out["spread"]["ttft_s"]["mean"]


def test_attention_groups_hold_their_own_kv():
    one = replica_memory(Deployment.make(MODEL, GPU, tp=4))
    dep = Deployment.make(MODEL, GPU, tp=1, ep=4)
    mem = replica_memory(dep)
    assert dep.gpus == 4 and dep.attention_ranks == 4 and mem.ranks == 4
    assert mem.capacity_blocks == 4 * mem.rank_blocks
    # each GPU holds a quarter of the experts either way; tp=4 splits every request's KV, ep=4 keeps it whole
    assert mem.rank_blocks * mem.block_bytes_per_gpu == pytest.approx(
        one.capacity_blocks * one.block_bytes_per_gpu, rel=0.2
    )
    assert Deployment.make(MODEL, GPU, tp=2, ep=4, replicas=3).gpus == 12


def test_from_scenario_keeps_ep_and_placement():
    scn = Scenario.make(MODEL, GPU, layout=Layout(ep=4), moe_placement=HOT)
    dep = Deployment.from_scenario(scn)
    assert dep.ep == 4 and dep.moe_placement == scn.moe_placement
    with pytest.raises(InvalidInputError, match="attention_dp"):
        Deployment.from_scenario(Scenario.make("deepseek-v2", GPU, layout=Layout(tp=1, ep=1, attention_dp=8)))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(model="llama-3-8b", ep=2), "needs a mixture-of-experts model"),
        (dict(ep=3), "does not divide the 8 experts"),
        (dict(ep=4, pp=2), "pp=2 is not modelled"),
        (dict(moe_placement=HOT), r"needs expert parallelism \(ep > 1\)"),
        (dict(ep=2, moe_placement=HOT), "is for 4 GPUs but ep=2"),
        (dict(ep=4, knobs=Knobs(shared_prefix_tokens=256)), "shared_prefix_tokens"),
    ],
)
def test_bad_ep_layouts_are_refused(kw, match):
    kw = {"model": MODEL, "gpu": GPU} | kw
    with pytest.raises(InvalidInputError, match=match):
        Deployment.make(**kw)


def test_cli_simulates_ep_with_a_plan_file(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": [{"placement": HOT[0]}]}))
    args = (
        "simulate",
        "--model",
        MODEL,
        "--gpu",
        "h100",
        "--requests",
        "20",
        "--prompt-len",
        "500",
        "--output-len",
        "8",
        "--ep",
        "4",
        "--json",
    )
    runs = {}
    for name, extra in (("spread", ()), ("hot", ("--moe-placement", plan))):
        r = run_perfmodel(*args, *extra)
        assert r.returncode == 0, r.stderr
        runs[name] = json.loads(r.stdout)
        assert runs[name]["completed"] == 20 and "ep=4" in runs[name]["deployment"]
    assert runs["hot"]["tpot_s"]["mean"] > runs["spread"]["tpot_s"]["mean"]
    assert np.isfinite(runs["hot"]["analytic"]["throughput_bound_tokens_per_s"])
    for bad in (("--ep", "3"), ("--moe-placement", plan)):
        r = run_perfmodel(*args[:-3], *bad, "--json")
        assert r.returncode == 1 and r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("perfmodel: error:") and "Traceback" not in r.stderr
