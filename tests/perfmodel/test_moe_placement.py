"""analyze with an MoE placement: the EP all-to-all priced from the traffic its placement implies."""

import json

import pytest

from perfmodel import parallel as par
from perfmodel.analyze import analyze
from perfmodel.errors import InvalidInputError
from perfmodel.scenario import Scenario
from tests.conftest import run_perfmodel

KW = dict(model="qwen3-30b-a3b", gpu="h100-sxm-80gb", context_len=8000, output_tokens=100, batch=64, ep=16,
          topology="dgx-h100-x4")
SPREAD = [[list(range(8 * g, 8 * g + 8)) for g in range(16)]]  # 8 experts a GPU over both nodes
NODE0 = [[list(range(16 * g, 16 * g + 16)) for g in range(8)] + [[] for _ in range(8)]]  # all on node 0
ONE = [[list(range(128))] + [[] for _ in range(15)]]  # all on GPU 0


def test_without_placement_unchanged():
    a = analyze(**KW)
    scn = Scenario.make(**KW)
    assert scn.moe_placement is None
    _, ph = par.price_layout(scn.priced_model, scn.gpu, scn.profile, scn.context_len, scn.output_tokens, scn.batch,
                             scn.priced_precision, scn.layout.tp, scn.chunk_tokens, scn.reserve_fraction, scn.knobs,
                             par.layout(scn.priced_model, scn.layout.tp, scn.layout.pp, scn.layout.sp, scn.layout.sp_kind,
                                        scn.layout.ep, scn.layout.topology),
                             par.ring_step_model(scn.profile))
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


@pytest.mark.parametrize("change, placement, match", [
    ({}, [SPREAD[0][:8]], "8 GPUs but ep=16"),
    ({}, [SPREAD[0]] * 3, "3 layers"),
    ({}, [[[e] for e in range(16)]], "not placed"),
    ({"ep": 1}, SPREAD, "ep > 1"),
    ({"model": "llama-2-7b", "ep": 1}, SPREAD, "dense"),
])
def test_bad_placement_is_typed(change, placement, match):
    with pytest.raises(InvalidInputError, match=match):
        analyze(moe_placement=placement, **(KW | change))


def test_cli_takes_and_refuses_placements(tmp_path):
    args = ("analyze", "--model", "qwen3-30b-a3b", "--gpu", "h100-sxm-80gb", "--context", "8000", "--batch", "64",
            "--ep", "16", "--topology", "dgx-h100-x4", "--json")
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
