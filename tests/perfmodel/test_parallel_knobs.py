"""KV-cache knobs under PP, SP, EP and named topologies (perfmodel.parallel.check_knobs and the
knobs threaded through parallel_phases)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.analyze import analyze
from perfmodel.cli import main
from perfmodel.errors import InvalidInputError
from perfmodel.knobs import Knobs, KvTier, TierKind

KNOBS = [
    None,
    Knobs(kv_dtype="fp8"),
    Knobs(kv_keep_ratio=0.5, prune_prefill=True),
    Knobs(sliding_window=4096),
    Knobs(attention_every=4),
    Knobs(kv_layers=20, attention_density=0.5),
    Knobs(kv_heads=4),
    Knobs(kv_budget_tokens=2000),
]


def _metrics(a):
    return (
        float(a.prefill.total_s),
        float(a.decode_step.total_s),
        float(a.decode.total_s),
        a.memory.max_concurrency,
        float(a.memory.kv_bytes_per_user),
    )


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: "none" if k is None else ",".join(k.describe()))
def test_a_topology_at_degree_one_prices_the_knobs_as_one_gpu(knobs, mode):
    # the multi-GPU path at pp = sp = ep = 1 (a named topology) and the one-GPU path price the same
    # scenario alike, with and without knobs; batch 4 makes the prefill chunks shared by the prompts
    one = analyze("llama-3-8b", "h100-sxm-80gb", 6000, 200, batch=4, knobs=knobs, mode=mode)
    multi = analyze(
        "llama-3-8b", "h100-sxm-80gb", 6000, 200, batch=4, knobs=knobs, mode=mode, topology="dgx-h100"
    )
    assert _metrics(multi) == pytest.approx(_metrics(one), rel=1e-9)


def test_fp8_kv_with_pipeline_parallelism():
    # the common case that used to be refused: an fp8 KV cache on two pipeline stages
    base = analyze("yi-34b", "h100-sxm-80gb", 50_000, 250, pp=2)
    fp8 = analyze("yi-34b", "h100-sxm-80gb", 50_000, 250, pp=2, knobs=Knobs(kv_dtype="fp8"))
    assert fp8.memory.kv_bytes_per_user == pytest.approx(base.memory.kv_bytes_per_user / 2)
    assert fp8.memory.max_concurrency >= 2 * base.memory.max_concurrency
    assert fp8.decode_step.total_s < base.decode_step.total_s
    # the baseline of a knob analysis is the same layout without the knobs
    assert fp8.baseline is not None and fp8.baseline.pp == 2
    assert _metrics(fp8.baseline) == pytest.approx(_metrics(base), rel=1e-12)


@pytest.mark.parametrize("sp,pp", [(2, 1), (4, 1), (2, 2)])
def test_eviction_under_sp_shards_the_kept_tokens(sp, pp):
    # a decode step at n tokens keeping half (or a budget of B) costs what a step at n/2 (or B) tokens
    # costs without knobs, whatever the layout: eviction decides the kept tokens on the whole sequence
    n = 65_536
    kw = dict(sp=sp, pp=pp, batch=2)
    half = analyze("llama-3-8b", "h200-sxm-141gb", n, 1, knobs=Knobs(kv_keep_ratio=0.5), **kw)
    short = analyze("llama-3-8b", "h200-sxm-141gb", n // 2, 1, **kw)
    assert float(half.decode_step.total_s) == pytest.approx(float(short.decode_step.total_s), rel=1e-12)
    budget = analyze("llama-3-8b", "h200-sxm-141gb", n, 1, knobs=Knobs(kv_budget_tokens=3000), **kw)
    at_budget = analyze("llama-3-8b", "h200-sxm-141gb", 3000, 1, **kw)
    assert float(budget.decode_step.total_s) == pytest.approx(float(at_budget.decode_step.total_s), rel=1e-12)
    # the prefill is unchanged (these methods evict after computing the whole prompt)
    plain = analyze("llama-3-8b", "h200-sxm-141gb", n, 1, **kw)
    assert float(half.prefill.total_s) == pytest.approx(float(plain.prefill.total_s), rel=1e-12)


@pytest.mark.parametrize(
    "knobs,layout,needle",
    [
        (Knobs(shared_prefix_tokens=1000), dict(pp=2), "shared_prefix_tokens"),
        (Knobs(kv_tiers=(KvTier(TierKind.HOST_DDR),)), dict(ep=1, topology="dgx-h100"), "kv_tiers"),
        (Knobs(sliding_window=4096), dict(sp=2), "sliding_window"),
        (Knobs(kv_keep_ratio=0.5, prune_prefill=True), dict(sp=2), "prune_prefill"),
        (Knobs(attention_density=0.5, kv_layers=8), dict(sp=2), "kv_layers, attention_density"),
    ],
)
def test_knobs_not_modelled_with_a_layout_are_named(knobs, layout, needle):
    with pytest.raises(InvalidInputError, match=needle):
        analyze("llama-3-8b", "h200-sxm-141gb", 16_384, 10, knobs=knobs, **layout)


def test_window_and_pruning_work_with_pp():
    # the knobs SP cannot take are fine with PP: a window caps the decode keys there too
    w = analyze("llama-3-8b", "h200-sxm-141gb", 65_536, 10, pp=2, knobs=Knobs(sliding_window=4096))
    short = analyze("llama-3-8b", "h200-sxm-141gb", 4096, 10, pp=2)
    assert float(w.decode_step.total_s) == pytest.approx(float(short.decode_step.total_s), rel=1e-12)
    p = analyze(
        "llama-3-8b", "h200-sxm-141gb", 65_536, 10, pp=2, knobs=Knobs(kv_keep_ratio=0.25, prune_prefill=True)
    )
    assert float(p.prefill.total_s) < float(p.baseline.prefill.total_s)


@settings(max_examples=25, deadline=None)
@given(
    r1=st.floats(0.05, 1.0),
    r2=st.floats(0.05, 1.0),
    sp=st.sampled_from([1, 2, 4]),
    pp=st.sampled_from([1, 2]),
)
def test_keeping_fewer_tokens_never_costs_more(r1, r2, sp, pp):
    lo, hi = sorted((r1, r2))
    a = analyze("llama-3-8b", "h200-sxm-141gb", 32_768, 16, sp=sp, pp=pp, knobs=Knobs(kv_keep_ratio=lo))
    b = analyze("llama-3-8b", "h200-sxm-141gb", 32_768, 16, sp=sp, pp=pp, knobs=Knobs(kv_keep_ratio=hi))
    for x, y in (
        (a.decode_step.total_s, b.decode_step.total_s),
        (a.memory.kv_bytes_per_user, b.memory.kv_bytes_per_user),
    ):
        assert math.isfinite(float(x)) and float(x) <= float(y) * (1 + 1e-12)
    assert a.memory.max_concurrency >= b.memory.max_concurrency


def test_cli_knobs_with_a_layout(capsys):
    assert (
        main(
            [
                "analyze",
                "--model",
                "yi-34b",
                "--gpu",
                "h100",
                "--context",
                "50000",
                "--kv-dtype",
                "fp8",
                "--pp",
                "2",
            ]
        )
        == 0
    )
    assert "with the knobs: kv_dtype=fp8" in capsys.readouterr().out
    assert (
        main(
            [
                "analyze",
                "--model",
                "llama-3-8b",
                "--gpu",
                "h200",
                "--context",
                "16384",
                "--sp",
                "2",
                "--sliding-window",
                "1024",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sliding_window" in err and "sp > 1" in err


# ---- --match-context on a layout -----------------------------------------------------------------------------
def _match(**kw):
    from perfmodel.hw import load_gpu
    from perfmodel.calibration import Mode, resolve_profile
    from perfmodel.match import match_context
    from perfmodel.models import load_model

    g = load_gpu("h200-sxm-141gb")
    return match_context(
        load_model("llama-3-8b"), g, resolve_profile(g, Mode.PEAK), 32_000, 4_000, batch=2, **kw
    )


def test_match_at_degree_one_equals_one_tp_group():
    # (less the knobs no layout models, which one TP group also searches)
    from perfmodel.parallel import knobs_not_modelled

    one, multi = _match(), _match(topology="hgx-h200")
    assert one.targets == pytest.approx(multi.targets, rel=1e-9)
    kept = [r for r in one.rows if r.knob not in knobs_not_modelled(1)]
    assert len(kept) < len(one.rows)
    assert [(r.metric, r.knob, r.setting) for r in kept] == [
        (r.metric, r.knob, r.setting) for r in multi.rows
    ]
    assert [r.value for r in kept] == pytest.approx([r.value for r in multi.rows], rel=1e-9, nan_ok=True)


@pytest.mark.parametrize("layout", [dict(pp=2), dict(sp=2), dict(pp=2, sp=2, sp_kind="ulysses")])
def test_match_targets_are_the_layouts_metrics(layout):
    r = _match(**layout)
    short = analyze("llama-3-8b", "h200-sxm-141gb", 4_000, 250, batch=2, mode="peak", **layout).to_dict()
    long = analyze("llama-3-8b", "h200-sxm-141gb", 32_000, 250, batch=2, mode="peak", **layout).to_dict()
    for metric in ("prefill_s", "decode_s_per_token", "max_concurrency", "context_switch_s"):
        assert r.targets[metric] == pytest.approx(short[metric], rel=1e-9)
        assert r.unmatched[metric] == pytest.approx(long[metric], rel=1e-9)
    searched = {row.knob for row in r.rows}
    assert not searched & {"shared_prefix_tokens", "kv_tiers"}
    if layout.get("sp", 1) > 1:
        assert not searched & {
            "kv_layers",
            "sliding_window",
            "attention_density",
            "attention_every",
            "kv_keep_ratio+prune_prefill",
        }
    assert "kv_keep_ratio" in searched
    # a found setting meets its target on that layout
    for row in r.rows:
        if row.setting is not None and row.knob == "kv_keep_ratio" and row.metric == "decode_s_per_token":
            got = analyze(
                "llama-3-8b",
                "h200-sxm-141gb",
                32_000,
                250,
                batch=2,
                mode="peak",
                knobs=Knobs(kv_keep_ratio=float(row.setting)),
                **layout,
            ).to_dict()
            assert got["decode_s_per_token"] <= row.target * (1 + 1e-9)


def test_cli_match_context_with_a_layout(capsys):
    import json

    assert (
        main(
            [
                "analyze",
                "--model",
                "llama-3-8b",
                "--gpu",
                "h200",
                "--context",
                "32000",
                "--match-context",
                "4000",
                "--pp",
                "2",
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    short = analyze("llama-3-8b", "h200-sxm-141gb", 4_000, 250, pp=2).to_dict()
    assert doc["match"]["targets"]["max_concurrency"] == short["max_concurrency"]


@pytest.mark.parametrize("layout", [dict(pp=2), dict(pp=4), dict(pp=2, sp=2)])
def test_does_not_fit_suggests_a_tp_for_the_layout(layout):
    # the suggested TP degree is computed with the given pp/sp/ep kept, and it is the smallest that fits
    from perfmodel.errors import DoesNotFitError

    with pytest.raises(DoesNotFitError) as info:
        analyze("llama-3-70b", "h100-sxm-80gb", 100_000, 250, batch=8, **layout)
    tp = info.value.suggested_tp
    label = "".join(f", {k}={v}" for k, v in layout.items())
    assert f"(tp=1{label})" in str(info.value) and f"tp={tp}{label} fits" in str(info.value)
    analyze("llama-3-70b", "h100-sxm-80gb", 100_000, 250, batch=8, tp=tp, **layout)  # fits
    with pytest.raises(DoesNotFitError):
        analyze("llama-3-70b", "h100-sxm-80gb", 100_000, 250, batch=8, tp=tp // 2, **layout)
