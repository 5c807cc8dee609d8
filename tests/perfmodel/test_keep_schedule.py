"""Per-layer keep schedules (``Knobs.keep_schedule``, ``--keep-schedule``): the uniform ratio is the one-pair
schedule, each layer priced at its own kept tokens."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfmodel
from perfmodel.knobs import KnobError, Knobs, parse_schedule
from perfmodel.models import load_model
from perfmodel.ops import Phase
from perfmodel.phases import decode_step_cost, prefill_cost
from tests.conftest import run_perfmodel

KW = dict(context_len=4000, output_tokens=16, mode="peak")
KEYS = ("prefill_s", "decode_s_per_token", "decode_s", "max_concurrency", "kv_cache_bytes")


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
@pytest.mark.parametrize("prune", [False, True])
def test_uniform_ratio_is_the_one_pair_schedule(mode, prune):
    ratio = analyze_dict(Knobs(kv_keep_ratio=0.4, prune_prefill=prune), mode)
    one = analyze_dict(Knobs(keep_schedule=((0, 0.4),), prune_prefill=prune), mode)
    split = analyze_dict(Knobs(keep_schedule=((0, 0.4), (10, 0.4), (20, 0.4)), prune_prefill=prune), mode)
    for k in KEYS:
        assert one[k] == ratio[k], k
        assert split[k] == pytest.approx(ratio[k], rel=1e-12), k


def analyze_dict(knobs, mode="peak"):
    return perfmodel.analyze("llama-2-7b", "a100", knobs=knobs, **(KW | {"mode": mode})).to_dict()


def test_each_layer_at_its_own_kept_tokens():
    """Peak roofline: the schedule's prefill is the layer-weighted mix of uniform prunings (the embedding once,
    at the first fraction), and the decode reads each layer's kept KV."""
    m = load_model("llama-2-7b")
    gpu = "a100"
    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import peak_profile

    g = load_gpu(gpu)
    prof = peak_profile(g)
    sched = Knobs(keep_schedule=((0, 1.0), (8, 0.5), (20, 0.25)), prune_prefill=True)
    got = prefill_cost(m, g, prof, 4096, knobs=sched).flops
    parts = [(8, 1.0), (12, 0.5), (12, 0.25)]
    from perfmodel.layers import model_ops
    from perfmodel.ops import flops

    def layer_flops(tokens):
        ops = model_ops(m, Phase.PREFILL, 1, tokens, tokens, lm_head_rows=0)
        return sum(flops(o) * c for n, o, c in ops if n != "embedding") / m.num_layers

    # one pass (4096 tokens fit one 8192-token chunk); the LM head on one row and the embedding are tiny
    want = sum(n * layer_flops(4096 * f) for n, f in parts)
    assert got == pytest.approx(want, rel=1e-3)
    # decode: the KV read per step is the layer mean of the kept keys
    step = decode_step_cost(m, g, prof, 4096, knobs=Knobs(keep_schedule=((0, 1.0), (16, 0.5))))
    full = decode_step_cost(m, g, prof, 4096)
    half = decode_step_cost(m, g, prof, 4096, knobs=Knobs(kv_keep_ratio=0.5))
    assert step.bytes == pytest.approx((full.bytes + half.bytes) / 2, rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4), st.booleans())
def test_a_schedule_costs_between_its_first_and_last_fraction(fracs, prune):
    fracs = sorted(fracs, reverse=True)
    sched = tuple((8 * i, f) for i, f in enumerate(fracs))
    s = analyze_dict(Knobs(keep_schedule=sched, prune_prefill=prune))
    hi = analyze_dict(Knobs(kv_keep_ratio=fracs[0], prune_prefill=prune) if fracs[0] < 1 else None)
    lo = analyze_dict(Knobs(kv_keep_ratio=fracs[-1], prune_prefill=prune) if fracs[-1] < 1 else None)
    for k in ("prefill_s", "decode_s_per_token"):
        assert lo[k] * (1 - 1e-9) <= s[k] <= hi[k] * (1 + 1e-9), k


@pytest.mark.parametrize(
    "bad, match",
    [
        (((0, 0.5), (4, 0.7)), "must not increase"),
        (((2, 0.5),), "start at layer 0"),
        (((0, 1.0), (0, 0.5)), "layers must increase"),
        (((0, 0.0),), r"\(0, 1\]"),
    ],
)
def test_bad_schedules(bad, match):
    with pytest.raises(KnobError, match=match):
        Knobs(keep_schedule=bad)


def test_schedule_checks_against_the_model_and_the_ratio():
    with pytest.raises(KnobError, match="not both"):
        Knobs(kv_keep_ratio=0.5, keep_schedule=((0, 0.5),))
    with pytest.raises(KnobError, match="layers 0 to 31"):
        perfmodel.analyze("llama-2-7b", "a100", knobs=Knobs(keep_schedule=((0, 1.0), (40, 0.5))), **KW)


def test_parse_text_and_file(tmp_path):
    assert parse_schedule("1.0@0,0.5@8,0.3@20") == ((0, 1.0), (8, 0.5), (20, 0.3))
    f = tmp_path / "s.json"
    f.write_text(json.dumps([{"layer": 0, "keep": 1.0}, {"layer": 8, "keep": 0.5}]))
    assert parse_schedule(str(f)) == ((0, 1.0), (8, 0.5))
    f.write_text("[[0, 1.0], [4, 0.25]]")
    assert parse_schedule(str(f)) == ((0, 1.0), (4, 0.25))
    with pytest.raises(KnobError, match="FRACTION@LAYER"):
        parse_schedule("0.5")


def test_simulator_takes_a_schedule():
    from perfmodel.serving import Deployment

    dep = Deployment.make(
        "llama-2-7b",
        "a100",
        mode="peak",
        knobs=Knobs(keep_schedule=((0, 1.0), (16, 0.5)), prune_prefill=True),
    )
    assert dep.kept_tokens(1000) == 750


def test_cli_keep_schedule():
    r = run_perfmodel(
        "analyze",
        "--model",
        "llama-2-7b",
        "--gpu",
        "a100",
        "--mode",
        "peak",
        "--context",
        "4000",
        "--output-tokens",
        "1",
        "--keep-schedule",
        "1.0@0,0.5@8,0.3@20",
        "--prune-prefill",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["knobs"]["keep_schedule"] == [[0, 1.0], [8, 0.5], [20, 0.3]]
    assert d["prefill_s"] < d["without_knobs"]["prefill_s"]
    bad = run_perfmodel("analyze", "--keep-schedule", "0.5@0,0.7@4")
    assert bad.returncode == 2 and "must not increase" in bad.stderr and "Traceback" not in bad.stderr
