"""KV-cache knobs: hand-computed checks on a small model, invariants, combinations, bad values."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.hw.loader import load_gpu
from perfmodel.hw.spec import Dtype
from perfmodel.analyze import analyze
from perfmodel.calibration import peak_profile
from perfmodel.knobs import AttentionOffload, Knobs, KnobError, KvTier, TierKind
from perfmodel.layers import kv_bytes_per_token_per_gpu, model_ops
from perfmodel.match import match_context
from perfmodel.models import spec_from_config
from perfmodel.ops import Phase, bytes_moved, flops
from perfmodel.phases import context_switch, decode_step_cost, memory_budget, prefill_cost

A100 = load_gpu("a100-sxm-80gb")
PEAK = peak_profile(A100)
# 60 layers, 8 query heads, 2 KV heads of 64: bf16 KV = 2 x 60 x 2 x 64 x 2 B = 30,720 B/token
SMALL = spec_from_config(
    {
        "hidden_size": 512,
        "intermediate_size": 1024,
        "num_hidden_layers": 60,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": 1000,
    },
    "small",
)
A = 2.0  # bf16 bytes


def _op(ops, name):
    found = [(op, c) for n, op, c in ops if n == name]
    assert len(found) == 1, name
    return found[0]


def _decode_kv_read(knobs, batch=1, kv=10_000):
    """Bytes of KV decode attention reads per step (Q/O traffic taken out)."""
    ops = model_ops(SMALL, Phase.DECODE, batch, 1, kv, knobs=knobs)
    op, c = _op(ops, "attention")
    qo = op.batch * op.q_heads * op.q_len * 2 * op.head_dim * A
    return (bytes_moved(op) - qo) * c


def test_no_knobs_changes_nothing():
    for phase, q in ((Phase.PREFILL, 512), (Phase.DECODE, 1)):
        a = model_ops(SMALL, phase, 2, q, 4096)
        b = model_ops(SMALL, phase, 2, q, 4096, knobs=Knobs())
        assert [(n, c) for n, _, c in a] == [(n, c) for n, _, c in b]
    assert not Knobs().active and Knobs(kv_keep_ratio=0.5).active


def test_fp8_halves_kv_bytes_and_decode_kv_traffic_and_adds_dequant():
    assert kv_bytes_per_token_per_gpu(SMALL, 1, Dtype.BF16) == 30_720
    assert kv_bytes_per_token_per_gpu(SMALL, 1, Dtype.BF16, Knobs(kv_dtype="fp8")) == 15_360
    assert _decode_kv_read(Knobs(kv_dtype="fp8")) == pytest.approx(_decode_kv_read(None) / 2)
    # the dequantisation: 2 FLOPs per KV element read, 60 layers x 2 heads x 10,000 keys x 128 elements
    op, c = _op(model_ops(SMALL, Phase.DECODE, 1, 1, 10_000, knobs=Knobs(kv_dtype="fp8")), "kv_dequant")
    assert flops(op) * c == 2.0 * 60 * 2 * 10_000 * 128
    assert not [n for n, _, _ in model_ops(SMALL, Phase.DECODE, 1, 1, 10_000) if n == "kv_dequant"]


def test_fp8_doubles_concurrency():
    base = memory_budget(SMALL, A100, 100_000, 0)
    fp8 = memory_budget(SMALL, A100, 100_000, 0, knobs=Knobs(kv_dtype="fp8"))
    assert fp8.kv_bytes_per_user == pytest.approx(base.kv_bytes_per_user / 2)
    assert fp8.max_concurrency == math.floor(base.free_for_kv_bytes / (base.kv_bytes_per_user / 2))


def test_15_kv_layers_of_60_quarter_storage_and_quadruple_concurrency():
    k = Knobs(kv_layers=15)
    assert kv_bytes_per_token_per_gpu(SMALL, 1, Dtype.BF16, k) == 30_720 / 4
    base = memory_budget(SMALL, A100, 100_000, 0)
    mem = memory_budget(SMALL, A100, 100_000, 0, knobs=k)
    assert mem.kv_bytes_per_user == pytest.approx(base.kv_bytes_per_user / 4)
    assert mem.max_concurrency == math.floor(base.free_for_kv_bytes / (base.kv_bytes_per_user / 4))
    ops = model_ops(SMALL, Phase.DECODE, 1, 1, 10_000, knobs=k)
    assert _op(ops, "kv_append")[1] == 15 and _op(ops, "qkv_proj")[1] == 15 and _op(ops, "q_proj")[1] == 45
    # every attention layer still reads the KV it shares: decode KV traffic is unchanged (docs/knobs.md)
    assert _decode_kv_read(k) == pytest.approx(_decode_kv_read(None))
    sw = context_switch(A100, PEAK, mem.kv_bytes_per_user, knobs=k)
    assert sw.serial_s == pytest.approx(context_switch(A100, PEAK, base.kv_bytes_per_user).serial_s / 4)


def test_kv_heads_override():
    k = Knobs(kv_heads=1)
    assert kv_bytes_per_token_per_gpu(SMALL, 1, Dtype.BF16, k) == 30_720 / 2
    assert _decode_kv_read(k) == pytest.approx(_decode_kv_read(None) / 2)
    qkv, _ = _op(model_ops(SMALL, Phase.DECODE, 1, 1, 100, knobs=k), "qkv_proj")
    assert qkv.n == (8 + 2 * 1) * 64


def test_eviction_keeps_ceil_ratio_and_budget():
    k = Knobs(kv_keep_ratio=0.3, kv_budget_tokens=2_000)
    assert k.kept_tokens(1_000) == 300 and k.kept_tokens(10_001) == 2_000
    assert _decode_kv_read(Knobs(kv_keep_ratio=0.25)) == pytest.approx(_decode_kv_read(None) / 4)
    assert _decode_kv_read(Knobs(kv_budget_tokens=1_000)) == pytest.approx(_decode_kv_read(None) / 10)
    # eviction alone leaves prefill as it is; pruning the prompt prefills only the kept tokens
    full = prefill_cost(SMALL, A100, PEAK, 40_000).total_s
    assert prefill_cost(SMALL, A100, PEAK, 40_000, knobs=Knobs(kv_keep_ratio=0.25)).total_s == full
    pruned = prefill_cost(SMALL, A100, PEAK, 40_000, knobs=Knobs(kv_keep_ratio=0.25, prune_prefill=True))
    assert pruned.total_s == pytest.approx(prefill_cost(SMALL, A100, PEAK, 10_000).total_s)


def test_sliding_window_caps_keys_and_memory():
    k = Knobs(sliding_window=4_096)
    assert _decode_kv_read(k, kv=40_000) == pytest.approx(_decode_kv_read(None, kv=4_096))
    mem = memory_budget(SMALL, A100, 40_000, 1000, knobs=k)
    assert mem.kv_bytes_per_user == 30_720 * 4_096


def test_attention_density_scales_attention_only():
    k = Knobs(attention_density=0.25)
    assert _decode_kv_read(k) == pytest.approx(_decode_kv_read(None) / 4)
    pre = model_ops(SMALL, Phase.PREFILL, 1, 8192, 8192, knobs=k)
    base = model_ops(SMALL, Phase.PREFILL, 1, 8192, 8192)
    fa = lambda ops: flops(_op(ops, "attention")[0]) * _op(ops, "attention")[1]  # noqa: E731
    assert fa(pre) == pytest.approx(fa(base) / 4)
    assert (
        memory_budget(SMALL, A100, 8192, knobs=k).max_concurrency
        == memory_budget(SMALL, A100, 8192).max_concurrency
    )


def test_shared_prefix_read_once_per_batch_and_stored_once():
    b, n, p = 8, 10_000, 9_000
    k = Knobs(shared_prefix_tokens=p)
    ops = model_ops(SMALL, Phase.DECODE, b, 1, n, knobs=k)
    suffix, c = _op(ops, "attention")
    prefix, _ = _op(ops, "prefix_attention")
    per_key = 2 * 128 * A  # 2 heads x (K + V) x 64
    kv_read = suffix.batch * suffix.kv_len * per_key + prefix.batch * prefix.kv_len * per_key
    assert kv_read == pytest.approx((b * (n - p) + p) * per_key)
    mem = memory_budget(SMALL, A100, n, 0, batch=b, knobs=k)
    assert mem.shared_kv_bytes == 30_720 * p and mem.kv_bytes_per_user == 30_720 * (n - p)
    assert (
        decode_step_cost(SMALL, A100, PEAK, n, b, knobs=k).total_s
        < decode_step_cost(SMALL, A100, PEAK, n, b).total_s
    )
    # a batch of one gains nothing and pays nothing
    one = decode_step_cost(SMALL, A100, PEAK, n, 1, knobs=k).total_s
    assert one == pytest.approx(decode_step_cost(SMALL, A100, PEAK, n, 1).total_s)


def test_hybrid_layers_keep_constant_state():
    k = Knobs(attention_every=4)  # 15 attention layers of 60, 45 recurrent
    assert kv_bytes_per_token_per_gpu(SMALL, 1, Dtype.BF16, k) == 30_720 / 4
    state = 45 * 8 * 64 * 64 * 4  # q_heads x head_dim^2 fp32 per recurrent layer
    m1 = memory_budget(SMALL, A100, 10_000, knobs=k).kv_bytes_per_user
    m2 = memory_budget(SMALL, A100, 20_000, knobs=k).kv_bytes_per_user
    assert m1 == pytest.approx(30_720 / 4 * 10_000 + state)
    assert m2 - m1 == pytest.approx(30_720 / 4 * 10_000)
    assert _op(model_ops(SMALL, Phase.DECODE, 1, 1, 100, knobs=k), "attention")[1] == 15
    long = 200_000
    assert (
        decode_step_cost(SMALL, A100, PEAK, long, knobs=k).total_s
        < decode_step_cost(SMALL, A100, PEAK, long).total_s
    )
    assert (
        prefill_cost(SMALL, A100, PEAK, long, knobs=k).total_s < prefill_cost(SMALL, A100, PEAK, long).total_s
    )


def test_host_tier_adds_capacity_and_streams_spilled_kv():
    tier = KvTier(TierKind.HOST_DDR)
    k = Knobs(kv_tiers=(tier,))
    assert tier.capacity_for(A100) == A100.host_ddr_bytes / 8
    assert tier.bandwidth_for(A100) == A100.pcie_bytes_per_s_per_direction  # 32 GB/s < 51.2 GB/s DDR share
    base = memory_budget(SMALL, A100, 1_000_000, 0)
    mem = memory_budget(SMALL, A100, 1_000_000, 0, knobs=k)
    assert mem.max_concurrency == math.floor(
        (base.free_for_kv_bytes + A100.host_ddr_bytes / 8) / base.kv_bytes_per_user
    )
    # fits in HBM: nothing streamed
    assert decode_step_cost(SMALL, A100, PEAK, 10_000, 1, knobs=k).total_s == pytest.approx(
        decode_step_cost(SMALL, A100, PEAK, 10_000, 1).total_s
    )
    # 4 users of 1M tokens: the KV beyond free HBM crosses PCIe every step
    b = 4
    at_b = memory_budget(SMALL, A100, 1_000_000, 0, batch=b)  # activations of a batch of 4
    spilled = b * at_b.kv_bytes_per_user - at_b.free_for_kv_bytes
    step = decode_step_cost(SMALL, A100, PEAK, 1_000_000, b, knobs=k).total_s
    no_pf = decode_step_cost(SMALL, A100, PEAK, 1_000_000, b, knobs=k.replace(prefetch=False)).total_s
    hbm = decode_step_cost(SMALL, A100, PEAK, 1_000_000, b).total_s
    assert no_pf == pytest.approx(hbm + spilled / 32e9, rel=1e-6)
    assert hbm < step <= no_pf


def test_attention_offload_moves_kv_to_the_pool():
    pool = load_gpu("h200-sxm-141gb")
    k = Knobs(offload=AttentionOffload(pool, 50e9, 2.0, 5e-6))
    mem = memory_budget(SMALL, A100, 100_000, 0, knobs=k)
    assert mem.max_concurrency == math.floor(pool.hbm_usable_bytes * 0.98 * 2 / mem.kv_bytes_per_user)
    assert decode_step_cost(SMALL, A100, PEAK, 100_000, 4, knobs=k).total_s > 0


def test_combined_knobs_multiply():
    k = Knobs(kv_dtype="fp8", kv_layers=15)
    assert kv_bytes_per_token_per_gpu(SMALL, 1, Dtype.BF16, k) == 30_720 / 8
    k2 = Knobs(kv_dtype="fp8", kv_heads=1, kv_keep_ratio=0.5)
    base = memory_budget(SMALL, A100, 10_000, 0).kv_bytes_per_user
    assert memory_budget(SMALL, A100, 10_000, 0, knobs=k2).kv_bytes_per_user == pytest.approx(base / 8)
    assert _decode_kv_read(k2) == pytest.approx(_decode_kv_read(None) / 8)
    k3 = Knobs(kv_keep_ratio=0.5, attention_density=0.5)
    assert _decode_kv_read(k3) == pytest.approx(_decode_kv_read(None) / 4)


# ---------------------------------------------------------------------------
# invariants: a knob that removes work never makes a metric worse


def _metrics(knobs, ctx, batch, out=100):
    mem = memory_budget(SMALL, A100, ctx, out, batch=batch, knobs=knobs)
    return {
        "prefill": prefill_cost(SMALL, A100, PEAK, ctx, batch, knobs=knobs).total_s,
        "decode": decode_step_cost(SMALL, A100, PEAK, ctx, batch, knobs=knobs).total_s,
        "switch": context_switch(A100, PEAK, mem.kv_bytes_per_user, knobs=knobs).serial_s,
        "concurrency": -mem.max_concurrency,
    }


@st.composite
def _work_removing_knobs(draw, ctx):
    evict = draw(st.booleans())
    kw = dict(
        kv_dtype=draw(st.sampled_from([None, "bf16"])),
        kv_layers=draw(st.one_of(st.none(), st.integers(1, 60))),
        kv_heads=draw(st.sampled_from([None, 1, 2])),
        attention_density=draw(st.floats(0.01, 1.0)),
    )
    if evict:
        kw |= dict(
            kv_keep_ratio=draw(st.floats(0.01, 1.0)),
            kv_budget_tokens=draw(st.one_of(st.none(), st.integers(1, 2 * ctx))),
            sliding_window=draw(st.one_of(st.none(), st.integers(1, ctx))),
        )
        if kw["kv_keep_ratio"] < 1 or kw["kv_budget_tokens"]:
            kw["prune_prefill"] = draw(st.booleans())
    else:
        kw["shared_prefix_tokens"] = draw(st.integers(0, ctx - 1))
    return Knobs(**kw)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), ctx=st.integers(2, 200_000), batch=st.integers(1, 16))
def test_no_work_removing_knob_makes_anything_slower(data, ctx, batch):
    knobs = data.draw(_work_removing_knobs(ctx))
    base, new = _metrics(None, ctx, batch), _metrics(knobs, ctx, batch)
    for k in base:
        assert new[k] <= base[k] + 1e-9 * abs(base[k]) + 1e-15, (k, knobs.describe())
        assert math.isfinite(new[k])


@settings(max_examples=20, deadline=None)
@given(ctx=st.integers(1000, 100_000), ratio=st.floats(0.05, 1.0), r2=st.floats(0.05, 1.0))
def test_more_eviction_never_costs_more(ctx, ratio, r2):
    lo, hi = sorted((ratio, r2))
    assert _metrics(Knobs(kv_keep_ratio=lo), ctx, 2)["decode"] <= _metrics(Knobs(kv_keep_ratio=hi), ctx, 2)[
        "decode"
    ] * (1 + 1e-12)


# ---------------------------------------------------------------------------
# bad values


@pytest.mark.parametrize(
    "kw, text",
    [
        (dict(kv_keep_ratio=0), "kv_keep_ratio"),
        (dict(kv_keep_ratio=1.5), "kv_keep_ratio"),
        (dict(attention_density=0), "attention_density"),
        (dict(attention_density=float("nan")), "attention_density"),
        (dict(kv_layers=0), "kv_layers"),
        (dict(kv_budget_tokens=-3), "kv_budget_tokens"),
        (dict(attention_every=0), "attention_every"),
        (dict(kv_dtype="fp7"), "unknown dtype"),
        (dict(shared_prefix_tokens=10, kv_keep_ratio=0.5), "shared prefix"),
        (dict(prune_prefill=True), "prune_prefill"),
        (dict(recurrent_state_bytes=-1), "recurrent_state_bytes"),
    ],
)
def test_out_of_range_values_are_clear_errors(kw, text):
    with pytest.raises(KnobError, match=text):
        Knobs(**kw)
    assert issubclass(KnobError, ValueError)


def test_knobs_that_do_not_fit_the_model_or_context():
    with pytest.raises(KnobError, match="exceeds the 60 attention layers"):
        memory_budget(SMALL, A100, 1000, knobs=Knobs(kv_layers=61))
    with pytest.raises(KnobError, match="longer than the context"):
        analyze(SMALL, A100, 4000, knobs=Knobs(sliding_window=8000))
    with pytest.raises(KnobError, match="divide the 8 query heads"):
        analyze(SMALL, A100, 4000, knobs=Knobs(kv_heads=3))
    with pytest.raises(KnobError, match="exceeds the 15 attention layers"):
        analyze(SMALL, A100, 4000, knobs=Knobs(attention_every=4, kv_layers=20))
    with pytest.raises(KnobError, match="capacity and bandwidth"):
        KvTier(TierKind.NVME)


def test_analyze_shows_both_sides_and_the_note():
    a = analyze(SMALL, A100, 50_000, 100, knobs=Knobs(kv_dtype="fp8"))
    d = a.to_dict()
    assert d["knobs"] == {"kv_dtype": "fp8"} and d["kv_dtype"] == "fp8"
    assert d["without_knobs"]["kv_cache_bytes"] == 2 * d["kv_cache_bytes"]
    assert d["knob_ratio"]["kv_cache_bytes"] == pytest.approx(0.5)
    assert any("cost, not quality" in n for n in d["notes"])
    plain = analyze(SMALL, A100, 50_000, 100).to_dict()
    assert plain["knobs"] == {} and "without_knobs" not in plain
    assert not any("quality" in n for n in plain["notes"])


def test_match_context_finds_the_compression_factor():
    r = match_context(SMALL, A100, PEAK, 64_000, 4_000, output_tokens=0)
    # context switch moves the KV: a keep ratio of 4000/64000 matches it exactly (ceil rounding aside)
    assert r.compression_factor("context_switch_s") == pytest.approx(16, rel=2e-3)
    rows = {(x.knob, x.metric): x for x in r.rows}
    pre = rows[("kv_keep_ratio", "prefill_s")]
    assert pre.setting is None and "does not change" in pre.reason
    assert rows[("kv_keep_ratio+prune_prefill", "prefill_s")].setting == pytest.approx(
        4_000 / 64_000, rel=2e-3
    )
    assert rows[("sliding_window", "decode_s_per_token")].setting == 4_000
    for x in r.rows:
        assert x.setting is not None or x.reason
        if x.setting is not None and not isinstance(x.setting, str):
            assert x.value <= x.target * (1 + 1e-9) if x.metric != "max_concurrency" else x.value >= x.target


# ---------------------------------------------------------------------------
# command line


def _cli(capsys, *argv):
    from perfmodel.cli import main

    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_knob_flags_and_comparison(capsys):
    import json

    status, out, err = _cli(
        capsys, "analyze", "--context", "50000", "--kv-dtype", "fp8", "--kv-layers", "15", "--json"
    )
    assert status == 0
    d = json.loads(out)
    assert d["knobs"] == {"kv_dtype": "fp8", "kv_layers": 15}
    assert d["knob_ratio"]["kv_cache_bytes"] == pytest.approx(1 / 8)
    status, out, _ = _cli(capsys, "analyze", "--kv-keep-ratio", "0.5")
    assert status == 0 and "ratio" in out and "cost, not quality" in " ".join(out.split())


@pytest.mark.parametrize(
    "argv, text",
    [
        (["--kv-keep-ratio", "2"], "kv_keep_ratio"),
        (["--attention-density", "0"], "attention_density"),
        (["--kv-layers", "61"], "exceeds the 60"),
        (["--sliding-window", "60000"], "longer than the context"),
        (["--kv-tier", "nvme"], "capacity and bandwidth"),
        (["--kv-tier", "tape"], "unknown KV tier"),
        (["--match-context", "60000"], "must be shorter"),
        # a knob the layout does not model, with the match on that layout
        (["--match-context", "4000", "--sp", "2", "--sliding-window", "1000"], "sliding_window"),
    ],
)
def test_cli_bad_knobs_are_one_line(capsys, argv, text):
    status, out, err = _cli(capsys, "analyze", "--context", "50000", *argv)
    assert status in (1, 2) and text in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_match_context_and_sweep_axis(capsys):
    import json

    status, out, _ = _cli(
        capsys, "analyze", "--model", "llama-3-8b", "--context", "64000", "--match-context", "4000", "--json"
    )
    assert status == 0
    m = json.loads(out)["match"]
    assert m["compression_factor"]["context_switch_s"] == pytest.approx(
        64_250 / 4_250, rel=2e-3
    )  # prompt + 250 out
    assert m["compression_factor"]["prefill_s"] is None
    status, out, err = _cli(capsys, "sweep", "--context", "4000,8000", "--knob-axis", "kv_keep_ratio=1,0.5")
    assert status == 0 and len(out.strip().splitlines()) == 1 + 4 and "kv_keep_ratio" in out.splitlines()[0]
