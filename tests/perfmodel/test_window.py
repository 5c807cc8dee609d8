"""Sliding-window attention in both modes: each query reads at most ``window`` keys."""

import dataclasses

import pytest

import perfmodel
from perfmodel.calibration import resolve_profile
from perfmodel.costs import op_cost
from perfmodel.hw.loader import load_gpu
from perfmodel.knobs import Knobs
from perfmodel.layers import LINEAR_ATTENTION_CHUNK_TOKENS, Precision, model_ops
from perfmodel.models import load_model
from perfmodel.ops import Attention, AttentionImpl, Phase

H100 = load_gpu("h100")
PROFILES = {m: resolve_profile(H100, m) for m in ("peak", "calibrated")}
MODES = sorted(PROFILES)
IMPLS = [None, AttentionImpl.FLASH2, AttentionImpl.TRITON, AttentionImpl.STREAM_K]


def _t(mode, phase, batch, q, kv, window, impl=None):
    op = Attention(phase, batch, q, kv, 32, 8, 128, True, window=window, impl=impl)
    return float(op_cost(op, H100, PROFILES[mode]).total_s)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "phase,batch,q,kv",
    [
        (Phase.PREFILL, 1, 5_000, 5_000),
        (Phase.PREFILL, 2, 1_000, 9_000),
        (Phase.DECODE, 1, 1, 9_000),
        (Phase.DECODE, 8, 3, 20_000),
    ],
)
def test_a_window_as_long_as_the_context_changes_nothing(mode, impl, phase, batch, q, kv):
    plain = _t(mode, phase, batch, q, kv, 0, impl)
    for window in (kv, 2 * kv):
        assert _t(mode, phase, batch, q, kv, window, impl) == pytest.approx(plain, rel=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_windowed_prefill_grows_linearly_in_the_context(mode):
    # 4x the context: about 4x the time with a 4K window, about 16x without
    short, long = 32_768, 131_072
    win = _t(mode, Phase.PREFILL, 1, long, long, 4_096) / _t(mode, Phase.PREFILL, 1, short, short, 4_096)
    full = _t(mode, Phase.PREFILL, 1, long, long, 0) / _t(mode, Phase.PREFILL, 1, short, short, 0)
    assert 3.5 < win < 4.5
    assert full > 12


@pytest.mark.parametrize("mode", MODES)
def test_windowed_chunk_after_a_long_past_costs_what_one_after_the_window_does(mode):
    # a prefill chunk reads the window behind it however long the past: the same at 64K and 1M
    t = [_t(mode, Phase.PREFILL, 1, 2_048, past + 2_048, 4_096) for past in (65_536, 1_000_000)]
    assert t[1] == pytest.approx(t[0], rel=1e-9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 8])
def test_windowed_decode_is_flat_beyond_the_window(mode, impl, batch):
    at = [_t(mode, Phase.DECODE, batch, 1, kv, 4_096, impl) for kv in (4_096, 65_536, 1_000_000)]
    assert at[1] == pytest.approx(at[0], rel=1e-9)
    assert at[2] == pytest.approx(at[0], rel=1e-9)
    assert _t(mode, Phase.DECODE, batch, 1, 1_000_000, 0, impl) > 10 * at[0]


@pytest.mark.parametrize("mode", MODES)
def test_mistral_analyze_follows_its_window(mode):
    m = load_model("mistral-7b")  # a 4,096-token window on every layer
    full = dataclasses.replace(m, sliding_window=0)

    def run(model, ctx):
        return perfmodel.analyze(model, "h100", context_len=ctx, output_tokens=8, mode=mode).to_dict()

    assert run(m, 2_000)["prefill_s"] == pytest.approx(run(full, 2_000)["prefill_s"], rel=1e-12)
    a16, a32 = run(m, 16_000), run(m, 32_000)
    assert a32["decode_s_per_token"] == pytest.approx(a16["decode_s_per_token"], rel=1e-9)
    assert 1.8 < a32["prefill_s"] / a16["prefill_s"] < 2.2
    assert a32["prefill_s"] < run(full, 32_000)["prefill_s"]


def test_hybrid_chunk_attention_is_linear_in_the_context_when_calibrated():
    m = load_model("llama-3-8b")
    knobs = Knobs(attention_every=4)
    prof = PROFILES["calibrated"]

    def chunk_s(ctx):
        ops = model_ops(m, Phase.PREFILL, 1, ctx, ctx, Precision(), 1, None, knobs)
        (op,) = [o for name, o, _ in ops if name == "recurrent.chunk_attention"]
        assert op.window == LINEAR_ATTENTION_CHUNK_TOKENS
        return float(op_cost(op, H100, prof).total_s)

    assert 3.5 < chunk_s(131_072) / chunk_s(32_768) < 4.5
