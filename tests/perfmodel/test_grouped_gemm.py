"""The grouped-GEMM op (MoE experts as one kernel): schema, counts, cost, and the MoE block that uses it."""

import dataclasses
import json
from types import MappingProxyType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.hw.loader import load_gpu
from perfmodel.hw.spec import Dtype
from perfmodel.calibration import Mode, OpClass, Profile, peak_profile, resolve_profile
from perfmodel.costs.gemm import GemmParams
from perfmodel.costs.grouped_gemm import GroupedGemmParams
from perfmodel.costs import op_cost
from perfmodel.costs.grouped_gemm import grouped_gemm_params, grouped_output_tiles, grouped_padded_rows
from perfmodel.errors import OpDescriptorError
from perfmodel.layers import experts_touched, model_ops
from perfmodel.models import load_model
from perfmodel.ops import Elementwise, Gemm, GroupedGemm, Phase, bytes_moved, flops, op_from_dict, op_to_dict

H200 = load_gpu("h200-sxm-141gb")
PEAK = peak_profile(H200)
QWEN3 = load_model("qwen3-30b-a3b")


def test_counts_are_the_touched_weights_and_the_rows():
    op = GroupedGemm(8, 100, 1536, 2048)
    assert flops(op) == 2 * 100 * 1536 * 2048
    assert bytes_moved(op) == 2 * (8 * 2048 * 1536 + 100 * 2048 + 100 * 1536)
    int4 = GroupedGemm(8, 100, 1536, 2048, Dtype.BF16, Dtype.INT4)
    assert bytes_moved(int4) == 0.5 * 8 * 2048 * 1536 + 2 * 100 * (2048 + 1536)


def test_json_round_trip_and_one_line_errors():
    d = {"op": "grouped_gemm", "groups": 8, "m": 64, "n": 28672, "k": 4096, "dtype": "bf16"}
    op = op_from_dict(d)
    assert op == GroupedGemm(8, 64, 28672, 4096)
    assert op_from_dict(json.loads(json.dumps(op_to_dict(op)))) == op
    assert op_from_dict({**d, "b_dtype": "fp8"}).b_dtype is Dtype.FP8
    for bad, field in (
        ({"groups": 0}, "groups"),
        ({"m": 1.5}, "'m'"),
        ({"n": True}, "'n'"),
        ({"k": -1}, "'k'"),
        ({"groups": 65}, "groups"),
        ({"dtype": "fp7"}, "dtype"),
        ({"b_dtype": "x"}, "b_dtype"),
    ):
        with pytest.raises(OpDescriptorError, match=field) as exc:
            op_from_dict({**d, **bad}, where="line 3: ")
        assert str(exc.value).startswith("line 3: ") and "\n" not in str(exc.value)
    missing = dict(d)
    del missing["groups"]
    with pytest.raises(OpDescriptorError, match="'groups' is missing"):
        op_from_dict(missing)


def test_peak_cost_is_the_datasheet_roofline():
    op = GroupedGemm(82, 128, 1536, 2048)
    c = op_cost(op, H200, PEAK)
    assert float(c.total_s) == pytest.approx(
        max(flops(op) / H200.flops_for(Dtype.BF16), bytes_moved(op) / H200.hbm_bytes_per_s)
    )
    assert c.latency_s == 0


def test_one_launch_and_tile_padding_per_group():
    p = GroupedGemmParams(compute_eff=0.8, memory_eff=0.9, latency_s=4e-6, tile_m=64)
    prof = Profile("h200-sxm-141gb", Mode.CALIBRATED, MappingProxyType({OpClass.GROUPED_GEMM: p}))
    c = op_cost(GroupedGemm(100, 200, 1536, 2048), H200, prof)
    assert float(c.latency_s) == pytest.approx(4e-6)  # one launch, not one per group
    # 2 rows per group, each padded to one 64-row tile
    assert grouped_padded_rows(100, 200, 64) == 6400
    assert float(c.compute_s) == pytest.approx(2 * 6400 * 1536 * 2048 / (H200.flops_for(Dtype.BF16) * 0.8))
    assert grouped_padded_rows(4, 1000, 64) == 4 * 256
    assert grouped_padded_rows(4, 1000, 0) == 1000
    np.testing.assert_allclose(
        grouped_padded_rows(np.array([1.0, 8.0]), np.array([8.0, 8.0]), 16), [16.0, 128.0]
    )


def test_unfitted_profiles_borrow_the_gemm_curve_in_calibrated_mode_only():
    g = GemmParams(compute_eff=0.7, memory_eff=0.9, latency_s=3e-6, overlap=0.8, tile_m=64, tile_n=128)
    cal = Profile("h200-sxm-141gb", Mode.CALIBRATED, MappingProxyType({OpClass.GEMM: g}))
    got = grouped_gemm_params(cal)
    assert (got.compute_eff, got.memory_eff, got.latency_s, got.overlap, got.tile_m) == (
        0.7,
        0.9,
        3e-6,
        0.8,
        0,
    )
    own = GroupedGemmParams(compute_eff=0.5)
    both = Profile(
        "h200-sxm-141gb", Mode.CALIBRATED, MappingProxyType({OpClass.GEMM: g, OpClass.GROUPED_GEMM: own})
    )
    assert grouped_gemm_params(both) is own
    assert grouped_gemm_params(PEAK) == GroupedGemmParams()
    assert grouped_gemm_params(Profile("x", Mode.CALIBRATED)) == GroupedGemmParams()
    # the shipped H200 profile has grouped records of its own: its own curve, not the H100's nor its gemm curve
    shipped = resolve_profile(H200, "calibrated")
    h100 = resolve_profile(load_gpu("h100-sxm-80gb"), "calibrated")
    assert grouped_gemm_params(shipped) != grouped_gemm_params(h100)
    assert grouped_gemm_params(shipped) != shipped.params(OpClass.GEMM)
    assert shipped.provenance_of(OpClass.GROUPED_GEMM) == "measured"


def test_array_fields_broadcast():
    op = GroupedGemm(np.array([1.0, 8.0, 64.0]), np.array([2.0, 16.0, 4096.0]), 1536, 2048)
    t = op_cost(op, H200, resolve_profile(H200, "calibrated")).total_s
    assert t.shape == (3,) and np.all(np.diff(t) > 0)


@settings(max_examples=60, deadline=None)
@given(
    groups=st.integers(1, 256),
    extra=st.integers(0, 20000),
    n=st.integers(64, 16384),
    k=st.integers(64, 8192),
    tile=st.sampled_from([0, 16, 64, 128]),
)
def test_grouped_cost_between_its_bytes_and_the_per_group_gemms(groups, extra, n, k, tile):
    m = groups + extra
    op = GroupedGemm(groups, m, n, k)
    p = GroupedGemmParams(compute_eff=0.8, memory_eff=0.9, latency_s=3e-6, tile_m=tile)
    prof = Profile("h200-sxm-141gb", Mode.CALIBRATED, MappingProxyType({OpClass.GROUPED_GEMM: p}))
    t = float(op_cost(op, H200, prof).total_s)
    assert t >= bytes_moved(op) / (H200.hbm_bytes_per_s * p.memory_eff) * (1 - 1e-9)
    # peak mode: never more than one GEMM per group of its share of the rows
    peak = float(op_cost(op, H200, PEAK).total_s)
    per_group = groups * float(op_cost(Gemm(m / groups, n, k), H200, PEAK).total_s)
    assert bytes_moved(op) / H200.hbm_bytes_per_s * (1 - 1e-9) <= peak <= per_group * (1 + 1e-9)


def _experts(ops):
    return [(name, op, c) for name, op, c in ops if name.startswith("moe.expert_")]


def test_moe_block_prices_one_grouped_gemm_per_projection_per_layer():
    ops = model_ops(QWEN3, Phase.DECODE, 16, 1, 4096)
    ex = _experts(ops)
    assert [n for n, _, _ in ex] == ["moe.expert_gate_up_proj", "moe.expert_act_mul", "moe.expert_down_proj"]
    touched = experts_touched(16, 128, 8)
    gu, act, down = (op for _, op, _ in ex)
    assert all(c == QWEN3.num_moe_layers == 48 for _, _, c in ex)
    assert isinstance(gu, GroupedGemm) and isinstance(down, GroupedGemm)
    assert (gu.groups, gu.m, gu.n, gu.k) == (pytest.approx(touched), 128, 2 * 768, 2048)
    assert (down.groups, down.m, down.n, down.k) == (pytest.approx(touched), 128, 2048, 768)
    # router and no other GEMMs of the routed experts remain
    assert any(n == "moe.router" and isinstance(o, Gemm) for n, o, _ in ops)
    tp2 = {n: o for n, o, _ in _experts(model_ops(QWEN3, Phase.DECODE, 16, 1, 4096, tp=2))}
    assert tp2["moe.expert_gate_up_proj"].n == 768 and tp2["moe.expert_down_proj"].k == 384


def test_moe_block_routes_aligns_permutes_and_combines_once_per_layer():
    ops = {n: (o, c) for n, o, c in model_ops(QWEN3, Phase.PREFILL, 2, 1000, 1000)}
    pairs, h = 2 * 1000 * 8, QWEN3.hidden
    for step in ("route", "align", "permute", "combine"):
        op, c = ops[f"moe.{step}"]
        assert isinstance(op, Elementwise) and op.name == f"moe_{step}" and c == QWEN3.num_moe_layers
    # the gather reads and writes every pair's row; the combine reads them once and writes each token once
    assert ops["moe.permute"][0].bytes == pytest.approx(2 * pairs * h * 2, rel=0.01)
    assert ops["moe.combine"][0].bytes == pytest.approx((pairs + 2000) * h * 2, rel=0.01)
    assert ops["moe.route"][0].bytes >= 2000 * QWEN3.moe.num_experts * 2


@given(k0=st.floats(1.0, 4096.0), k=st.integers(64, 8192))
def test_grouped_tile_overhead_prices_math_as_a_longer_reduction(k0, k):
    op = GroupedGemm(64, 65536, 4096, k)
    base = GroupedGemmParams(compute_eff=0.8, memory_eff=0.9)
    prof = lambda p: Profile("h200-sxm-141gb", Mode.CALIBRATED, MappingProxyType({OpClass.GROUPED_GEMM: p}))  # noqa: E731
    plain = op_cost(op, H200, prof(base))
    more = op_cost(op, H200, prof(dataclasses.replace(base, k_overhead=k0)))
    assert float(more.compute_s) == pytest.approx(float(plain.compute_s) * (k + k0) / k, rel=1e-9)
    assert float(more.total_s) >= float(plain.total_s) * (1 - 1e-12)


def test_grouped_waves_charge_a_partial_last_wave_after_the_first():
    prof = lambda p: Profile("h200-sxm-141gb", Mode.CALIBRATED, MappingProxyType({OpClass.GROUPED_GEMM: p}))  # noqa: E731
    base = GroupedGemmParams(compute_eff=0.8, memory_eff=0.9, tile_m=64)
    waved = dataclasses.replace(base, tile_n=128, wave_quant=1.0)
    sms = H200.sm_count
    # two groups of one row each: 2 x ceil(n / 128) tiles
    one_wave = GroupedGemm(2, 2, 128 * (sms // 2), 4096)  # exactly one full wave
    partial = GroupedGemm(2, 2, 128 * (sms // 2) + 128, 4096)  # one full wave and two tiles
    assert grouped_output_tiles(2, 2, partial.n, 64, 128) == sms + 2
    for op, factor in ((one_wave, 1.0), (partial, 2.0 * sms / (sms + 2))):
        a, b = op_cost(op, H200, prof(base)), op_cost(op, H200, prof(waved))
        assert float(b.memory_s) == pytest.approx(float(a.memory_s) * factor, rel=1e-9)
    few = GroupedGemm(2, 2, 128 * 10, 4096)  # one partial wave: not charged
    assert float(op_cost(few, H200, prof(waved)).total_s) == pytest.approx(
        float(op_cost(few, H200, prof(base)).total_s)
    )


def _expert_seconds(batch, prof, model=QWEN3):
    ops = model_ops(model, Phase.DECODE, batch, 1, 4096)
    return sum(float(op_cost(o, H200, prof).total_s) * c for _, o, c in _experts(ops))


def test_qwen3_decode_experts_stream_their_touched_weights_in_peak_mode():
    touched = experts_touched(16, 128, 8)
    weights = QWEN3.num_moe_layers * touched * QWEN3.expert_params * 2
    t = _expert_seconds(16, PEAK)
    assert t == pytest.approx(weights / H200.hbm_bytes_per_s, rel=0.2)
    # and calibrated: a few launches per layer, not one per expert (was about 46 ms)
    cal = _expert_seconds(16, resolve_profile(H200, "calibrated"))
    assert cal < 2 * weights / H200.hbm_bytes_per_s


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
def test_expert_time_is_monotone_in_batch(mode):
    prof = resolve_profile(H200, mode)
    ts = [_expert_seconds(b, prof) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)]
    assert all(b >= a for a, b in zip(ts, ts[1:]))


def test_deepseek_shared_experts_stay_a_dense_mlp():
    v3 = load_model("deepseek-v3")
    names = {n: o for n, o, _ in model_ops(v3, Phase.DECODE, 8, 1, 1024)}
    assert isinstance(names["moe.shared_gate_up_proj"], Gemm)
    assert isinstance(names["moe.expert_gate_up_proj"], GroupedGemm)
