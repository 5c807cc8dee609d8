"""analyze with an MoE placement: the EP all-to-all priced from the traffic its placement implies."""

import json

import numpy as np
import pytest

from perfmodel import parallel as par
from perfmodel.analyze import analyze
from perfmodel.errors import InvalidInputError
from perfmodel.scenario import Scenario
from tests.conftest import run_perfmodel

KW = dict(
    model="qwen3-30b-a3b",
    gpu="h100-sxm-80gb",
    context_len=8000,
    output_tokens=100,
    batch=64,
    ep=16,
    topology="dgx-h100-x4",
)
SPREAD = [[list(range(8 * g, 8 * g + 8)) for g in range(16)]]  # 8 experts a GPU over both nodes
NODE0 = [[list(range(16 * g, 16 * g + 16)) for g in range(8)] + [[] for _ in range(8)]]  # all on node 0
ONE = [[list(range(128))] + [[] for _ in range(15)]]  # all on GPU 0


def test_without_placement_unchanged():
    a = analyze(**KW)
    scn = Scenario.make(**KW)
    assert scn.moe_placement is None
    _, ph = par.price_layout(
        scn.priced_model,
        scn.gpu,
        scn.profile,
        scn.context_len,
        scn.output_tokens,
        scn.batch,
        scn.priced_precision,
        scn.layout.tp,
        scn.chunk_tokens,
        scn.reserve_fraction,
        scn.knobs,
        par.layout(
            scn.priced_model,
            scn.layout.tp,
            scn.layout.pp,
            scn.layout.sp,
            scn.layout.sp_kind,
            scn.layout.ep,
            scn.layout.topology,
        ),
        par.ring_step_model(scn.profile),
    )
    assert float(a.prefill.total_s) == pytest.approx(float(ph.prefill.total_s), rel=1e-12)
    assert float(a.decode_step.total_s) == pytest.approx(float(ph.decode_step.total_s), rel=1e-12)
    assert "ep_route" not in a.parallel


def test_placement_kept_balanced_is_no_slower():
    spread, node0, one = (analyze(moe_placement=p, **KW) for p in (SPREAD, NODE0, ONE))
    assert spread.parallel["ep_route"] == "placement"
    for f in (lambda r: r.prefill.total_s, lambda r: r.decode_step.total_s, lambda r: r.decode.total_s):
        assert f(spread) <= f(node0) <= f(one)
    assert spread.prefill.total_s < one.prefill.total_s
    # the contiguous placement priced from its traffic lands near the busiest-GPU rule
    assert spread.prefill.total_s == pytest.approx(analyze(**KW).prefill.total_s, rel=0.05)


def test_placement_from_plan_file(tmp_path):
    per_layer = {"layers": [{"placement": SPREAD[0]} for _ in range(48)]}
    (tmp_path / "plan.json").write_text(json.dumps(per_layer))
    a = analyze(moe_placement=tmp_path / "plan.json", **KW)
    b = analyze(moe_placement=SPREAD, **KW)
    assert a.decode_step.total_s == pytest.approx(b.decode_step.total_s, rel=1e-9)


@pytest.mark.parametrize(
    "change, placement, match",
    [
        ({}, [SPREAD[0][:8]], "8 GPUs but ep=16"),
        ({}, [SPREAD[0]] * 3, "3 layers"),
        ({}, [[[e] for e in range(16)]], "not placed"),
        ({"ep": 1}, SPREAD, "ep > 1"),
        ({"model": "llama-2-7b", "ep": 1}, SPREAD, "dense"),
    ],
)
def test_bad_placement_is_typed(change, placement, match):
    with pytest.raises(InvalidInputError, match=match):
        analyze(moe_placement=placement, **(KW | change))


def test_cli_takes_and_refuses_placements(tmp_path):
    args = (
        "analyze",
        "--model",
        "qwen3-30b-a3b",
        "--gpu",
        "h100-sxm-80gb",
        "--context",
        "8000",
        "--batch",
        "64",
        "--ep",
        "16",
        "--topology",
        "dgx-h100-x4",
        "--json",
    )
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"placement": SPREAD[0]}))
    r = run_perfmodel(*args, "--moe-placement", good)
    assert r.returncode == 0, r.stderr
    (tmp_path / "junk.json").write_text("[1, 2]")
    (tmp_path / "few.json").write_text(json.dumps({"placement": SPREAD[0][:4]}))
    for bad in (tmp_path / "missing.json", tmp_path / "junk.json", tmp_path / "few.json"):
        r = run_perfmodel(*args, "--moe-placement", bad)
        assert r.returncode == 1 and r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("perfmodel: error:") and "Traceback" not in r.stderr


def _plan_file(tmp_path, placement, loads=None, traffic=None, name="plan.json"):
    layer = {"placement": placement}
    if loads is not None:
        layer["loads"] = loads
    if traffic is not None:
        layer["traffic"] = traffic
    path = tmp_path / name
    path.write_text(json.dumps({"layers": [layer]}))
    return path


def test_plan_loads_price_the_experts_on_the_busiest_gpu(tmp_path):
    """The same placement with hot experts on one GPU: the expert GEMMs and the all-to-all both grow."""
    even = [1.0] * 128
    hot = [40.0] * 8 + [1.0] * 120  # experts 0-7 all on GPU 0
    a = analyze(moe_placement=_plan_file(tmp_path, SPREAD[0], even, name="even.json"), **KW)
    b = analyze(moe_placement=_plan_file(tmp_path, SPREAD[0], hot, name="hot.json"), **KW)
    assert a.prefill.total_s == pytest.approx(analyze(moe_placement=SPREAD, **KW).prefill.total_s, rel=1e-9)
    assert b.prefill.total_s > 1.5 * a.prefill.total_s
    assert b.decode_step.total_s > a.decode_step.total_s
    # spreading the hot experts over the GPUs brings the time back
    spread_hot = [[e for e in range(128) if e % 16 == g] for g in range(16)]
    c = analyze(moe_placement=_plan_file(tmp_path, spread_hot, hot, name="spread.json"), **KW)
    assert c.prefill.total_s < b.prefill.total_s


def test_plan_traffic_shapes_the_all_to_all(tmp_path):
    """Traffic kept on each GPU (affinity) is cheaper than the even spread of the same copies."""
    local = np.eye(16).tolist()
    spread = np.full((16, 16), 1.0).tolist()
    a = analyze(moe_placement=_plan_file(tmp_path, SPREAD[0], traffic=local, name="local.json"), **KW)
    b = analyze(moe_placement=_plan_file(tmp_path, SPREAD[0], traffic=spread, name="spread.json"), **KW)
    assert a.prefill.total_s < b.prefill.total_s


@pytest.mark.parametrize(
    "layer, match",
    [
        ({"loads": [1.0] * 7}, "loads must have shape"),
        ({"loads": [-1.0] * 128}, "finite numbers >= 0"),
        ({"traffic": [[1.0] * 4] * 4}, "traffic must have shape"),
    ],
)
def test_bad_plan_tables_are_typed(tmp_path, layer, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"layers": [{"placement": SPREAD[0], **layer}]}))
    with pytest.raises(InvalidInputError, match=match):
        analyze(moe_placement=path, **KW)


def test_sweep_takes_the_placement(tmp_path):
    from perfmodel.sweep import sweep

    path = _plan_file(tmp_path, SPREAD[0], [40.0] * 8 + [1.0] * 120)
    df = sweep(
        KW["model"],
        KW["gpu"],
        context_len=[2000, 8000],
        batch=[16, 64],
        output_tokens=100,
        ep=16,
        topology="dgx-h100-x4",
        moe_placement=path,
    )
    for _, r in df.iterrows():
        a = analyze(**(KW | {"context_len": int(r.context_len), "batch": int(r.batch)}), moe_placement=path)
        assert r.prefill_s == pytest.approx(a.prefill.total_s, rel=1e-9)
        assert r.decode_s_per_token == pytest.approx(a.decode_step.total_s, rel=1e-9)
    plain = sweep(
        KW["model"],
        KW["gpu"],
        context_len=[8000],
        batch=[64],
        output_tokens=100,
        ep=16,
        topology="dgx-h100-x4",
    )
    assert float(df.prefill_s.iloc[-1]) > float(plain.prefill_s.iloc[0])
    with pytest.raises(InvalidInputError, match="ep > 1"):
        sweep(KW["model"], KW["gpu"], context_len=[8000], moe_placement=path)


def test_sweep_cli_takes_and_refuses_placements(tmp_path):
    good = _plan_file(tmp_path, SPREAD[0])
    args = (
        "sweep",
        "--model",
        "qwen3-30b-a3b",
        "--gpu",
        "h100-sxm-80gb",
        "--context",
        "2000,8000",
        "--batch",
        "64",
        "--ep",
        "16",
        "--topology",
        "dgx-h100-x4",
    )
    r = run_perfmodel(*args, "--moe-placement", good)
    assert r.returncode == 0, r.stderr
    with_p = r.stdout
    r = run_perfmodel(*args)
    assert r.returncode == 0 and r.stdout.count("\n") == with_p.count("\n") == 3
    r = run_perfmodel(*args, "--moe-placement", tmp_path / "missing.json")
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perfmodel: error:")
