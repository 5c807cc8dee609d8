"""Cost formulas: peak roofline, tile/wave quantization, ramps, latency, arrays."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.hw.loader import load_gpu
from perfmodel.hw.spec import Dtype
from perfmodel.calibration import Mode, OpClass, Profile, peak_profile
from perfmodel.costs import Bound, OpCost, op_cost
from perfmodel.costs.attention import AttentionParams, flash_splits
from perfmodel.costs.base import unit_waves_s
from perfmodel.costs.copies import CopyParams
from perfmodel.costs.elementwise import ElementwiseParams, elementwise_rows
from perfmodel.costs.gemm import GemmParams, gemm_tile_m
from perfmodel.ops import (
    Attention,
    DecoderLayer,
    Elementwise,
    Gemm,
    Memcpy,
    MemLocation,
    Phase,
    decoder_layer_parts,
)

H100 = load_gpu("h100-sxm-80gb")
PEAK = peak_profile(H100)


def _prof(**classes):
    return Profile(H100.name, Mode.CALIBRATED, {OpClass(k): v for k, v in classes.items()})


def test_peak_gemm_is_the_datasheet_roofline():
    op = Gemm(8192, 8192, 8192)
    c = op_cost(op, H100, PEAK)
    assert c.total_s == pytest.approx(2 * 8192**3 / 989.4e12)
    assert c.bound is Bound.COMPUTE
    small = op_cost(Gemm(1, 8192, 8192), H100, PEAK)
    assert small.bound is Bound.HBM_BANDWIDTH
    assert small.total_s == pytest.approx((8192 + 8192 * 8192 + 8192) * 2 / 3.35e12)


def test_wave_quantization_one_more_column_costs_a_wave():
    # 128x256 tiles on 132 SMs: 4096x4096 -> 512 tiles (3.9 waves -> 4); 4096x4352 -> 544 tiles (5 waves)
    p = GemmParams(compute_eff=1.0, tile_m=128, tile_n=256, wave_quant=1.0)
    prof = _prof(gemm=p)
    a = op_cost(Gemm(4096, 4096, 4096), H100, prof).compute_s
    b = op_cost(Gemm(4096, 4352, 4096), H100, prof).compute_s
    assert b / a == pytest.approx(5 / 4)
    # without the penalty (wave_quant 0) the time follows the padded work only
    prof0 = _prof(gemm=GemmParams(tile_m=128, tile_n=256, wave_quant=0.0))
    a0 = op_cost(Gemm(4096, 4096, 4096), H100, prof0).compute_s
    b0 = op_cost(Gemm(4096, 4352, 4096), H100, prof0).compute_s
    assert b0 / a0 == pytest.approx(4352 / 4096)


def test_skinny_m_uses_a_small_tile():
    p = GemmParams(tile_m=128, tile_n=128, tile_m_min=16)
    assert gemm_tile_m(1, p) == 16 and gemm_tile_m(40, p) == 64 and gemm_tile_m(5000, p) == 128
    assert list(gemm_tile_m(np.array([1, 200]), p)) == [16, 128]
    c = op_cost(Gemm(1, 4096, 4096), H100, _prof(gemm=p))
    assert c.bound is Bound.HBM_BANDWIDTH  # 16 padded rows stay memory-bound


def test_latency_and_tile_overhead_add():
    p = GemmParams(latency_s=5e-6, tile_m=128, tile_n=128, tile_overhead_s=1e-6)
    c = op_cost(Gemm(128, 128, 64), H100, _prof(gemm=p))
    assert c.latency_s == 5e-6
    assert c.total_s > 6e-6


def test_ramp_slows_small_ops_only():
    p = CopyParams(memory_eff=0.9, ramp_bytes=1e6)
    small = op_cost(Memcpy(1_000_000), H100, _prof(memcpy_d2d=p))
    big = op_cost(Memcpy(1_000_000_000), H100, _prof(memcpy_d2d=p))
    assert small.memory_s == pytest.approx(
        2e6 / (3.35e12 * 0.9 * 0.5 * 2e6 / (2e6 + 1e6) * 2)
    ) or small.memory_s > 2e6 / (3.35e12 * 0.9)
    assert big.memory_s == pytest.approx(2e9 / (3.35e12 * 0.9), rel=1e-3)


def test_host_copies_use_pcie():
    c = op_cost(Memcpy(64_000_000, MemLocation.HOST_PINNED, MemLocation.DEVICE), H100, PEAK)
    assert c.total_s == pytest.approx(64e6 / 64e9)
    assert c.memory_bound is Bound.PCIE


def test_elementwise_uses_its_named_curve():
    prof = Profile(
        H100.name,
        Mode.CALIBRATED,
        {OpClass.ELEMENTWISE: ElementwiseParams(memory_eff=0.5)},
        elementwise={"rmsnorm": ElementwiseParams(memory_eff=0.25)},
    )
    a = op_cost(Elementwise("rmsnorm", bytes=1e9), H100, prof).total_s
    b = op_cost(Elementwise("gelu", bytes=1e9), H100, prof).total_s
    assert a == pytest.approx(2 * b)


def test_prefill_attention_waves():
    p = AttentionParams(tile_m=128, wave_quant=1.0)
    # 1 x 1 head x 128 queries = 1 block: one SM of 132 busy -> 132x the ideal compute time
    op = Attention(Phase.PREFILL, 1, 128, 128, 1, 1, 128)
    ideal = op_cost(op, H100, PEAK).compute_s
    assert op_cost(op, H100, _prof(attention_prefill=p)).compute_s == pytest.approx(132 * ideal)


def test_layer_is_the_sum_of_its_parts():
    op = DecoderLayer(Phase.DECODE, 8, 1, 4096, 4096, 14336, 32, 8, 128)
    prof = _prof(
        gemm=GemmParams(0.8, 0.9, 4e-6, 128, 128, 16), attention_decode=AttentionParams(memory_eff=0.7)
    )
    total = sum(op_cost(o, H100, prof).scale(c).total_s for _, o, c in decoder_layer_parts(op))
    assert op_cost(op, H100, prof).total_s == pytest.approx(total)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 20000),
    n=st.integers(1, 30000),
    k=st.integers(1, 20000),
    tm=st.sampled_from([64, 128, 256]),
    tn=st.sampled_from([64, 128, 256]),
    wq=st.floats(0, 1),
)
def test_calibrated_never_beats_peak_and_arrays_match_scalars(m, n, k, tm, tn, wq):
    prof = _prof(gemm=GemmParams(0.8, 0.9, 3e-6, tm, tn, 16, wq, 5e-7, 0.5, 1e8, 1e6))
    one = op_cost(Gemm(m, n, k), H100, prof).total_s
    assert one >= op_cost(Gemm(m, n, k), H100, PEAK).total_s
    arr = op_cost(Gemm(np.array([m, 2 * m]), n, k), H100, prof).total_s
    assert arr[0] == pytest.approx(one)
    assert arr[1] >= arr[0] * (1 - 1e-9)  # more rows never cost less


def test_array_costs_broadcast_for_the_sweep():
    b = np.arange(1, 1001)
    op = Attention(Phase.DECODE, b, 1, 4096, 32, 8, 128)
    c = op_cost(
        op, H100, _prof(attention_decode=AttentionParams(memory_eff=0.8, latency_s=5e-6, ramp_bytes=1e6))
    )
    assert c.total_s.shape == (1000,) and np.all(np.diff(c.total_s) > 0)
    assert isinstance(c + OpCost(), OpCost)


def test_flash_splits_follow_the_heuristic():
    # enough (sequence, head) units to fill 80% of 2 x 132 slots: no split
    assert flash_splits(256, 128, 264) == 1
    # one unit over 512 KV blocks: the smallest split count within 85% of the best wave efficiency
    assert flash_splits(8, 512, 264) == 29  # 8 x 29 = 232 of 264 slots (0.88)
    # never more splits than KV blocks, and eligible counts only
    assert flash_splits(1, 2, 264) == 2
    # arrays give the scalar answers element by element
    u = np.array([1, 8, 16, 64, 256, 8])
    n = np.array([2, 512, 32, 8, 128, 4])
    got = flash_splits(u, n, 264)
    assert list(got) == [flash_splits(int(a), int(b), 264) for a, b in zip(u, n)]


def test_rmsnorm_rows_are_derived_from_bytes_and_flops():
    for a in (1, 2, 4):
        for tokens, hidden in ((1, 2048), (7, 4096), (16384, 8192)):
            op = Elementwise("rmsnorm", bytes=(2 * tokens + 1) * hidden * a, flops=4 * tokens * hidden)
            assert elementwise_rows(op) == tokens
    assert elementwise_rows(Elementwise("silu_mul", bytes=100, flops=10)) is None


def test_occupancy_floor_makes_few_long_units_slow_and_vanishes_in_peak_mode():
    p = ElementwiseParams(
        memory_eff=1.0,
        units_per_sm=2,
        unit_memory_eff=10e9 * H100.sm_count / H100.hbm_bytes_per_s,
        unit_overhead_s=1e-6,
    )
    prof = Profile(H100.name, Mode.CALIBRATED, elementwise={"rmsnorm": p})
    one_row_short = Elementwise("rmsnorm", bytes=3 * 2048 * 2, flops=4 * 2048)
    one_row_long = Elementwise("rmsnorm", bytes=3 * 8192 * 2, flops=4 * 8192)
    # one row: one block streams it alone, far below the HBM rate, and a longer row takes longer
    t_short = op_cost(one_row_short, H100, prof).total_s
    t_long = op_cost(one_row_long, H100, prof).total_s
    assert t_short == pytest.approx(1e-6 + 3 * 2048 * 2 / 10e9)
    assert t_long - 1e-6 == pytest.approx(4 * (t_short - 1e-6))  # the per-row time scales with the row
    # many rows: the HBM roofline binds
    big = Elementwise("rmsnorm", bytes=(2 * 65536 + 1) * 4096 * 2, flops=4 * 65536 * 4096)
    assert op_cost(big, H100, prof).memory_s >= big.bytes / H100.hbm_bytes_per_s
    assert unit_waves_s(10, 1e6, 132, 3e12, ElementwiseParams()) == 0.0
    assert op_cost(one_row_long, H100, PEAK).total_s == pytest.approx(
        one_row_long.bytes / H100.hbm_bytes_per_s
    )


def test_split_kv_adds_the_combine_latency_only_when_it_splits():
    p = AttentionParams(split_rule=1, split_latency_s=5e-6)
    prof = _prof(attention_decode=p)
    few = Attention(Phase.DECODE, batch=1, q_len=1, kv_len=65536, q_heads=32, kv_heads=8, head_dim=128)
    many = Attention(Phase.DECODE, batch=64, q_len=1, kv_len=65536, q_heads=32, kv_heads=8, head_dim=128)
    assert op_cost(few, H100, prof).latency_s == pytest.approx(5e-6)
    assert op_cost(many, H100, prof).latency_s == 0.0


def test_host_copy_knee_changes_the_rate_of_the_tail():
    p = CopyParams(memory_eff=0.25, knee_bytes=16e6, tail_memory_eff=0.125)
    prof = _prof(memcpy_h2d_pageable=p)
    bw = H100.pcie_bytes_per_s_per_direction
    small = Memcpy(8e6, MemLocation.HOST_PAGEABLE, MemLocation.DEVICE)
    big = Memcpy(32e6, MemLocation.HOST_PAGEABLE, MemLocation.DEVICE)
    assert op_cost(small, H100, prof).total_s == pytest.approx(8e6 / (0.25 * bw))
    assert op_cost(big, H100, prof).total_s == pytest.approx(16e6 / (0.25 * bw) + 16e6 / (0.125 * bw))


def _prefill(batch, n, heads=32, causal=True):
    return Attention(
        Phase.PREFILL, batch=batch, q_len=n, kv_len=n, q_heads=heads, kv_heads=8, head_dim=128, causal=causal
    )


def test_scheduled_prefill_is_set_by_the_longest_tile_when_few_and_by_the_load_when_many():
    rate = 0.1 * H100.flops_for(Dtype.BF16) / H100.sm_count
    p = AttentionParams(
        tile_m=128, units_per_sm=1, unit_compute_eff=0.1, unit_overhead_s=2e-6, wave_quant=0.0
    )
    prof = _prof(attention_prefill=p)
    per_key = 4 * 128 * 128 / rate
    # 32 heads x 8 tiles = 256 programs over 132 slots: the last tile (all 1024 keys) or the mean load
    few = op_cost(_prefill(1, 1024), H100, prof).compute_s
    mean_keys = 1024 - 1024 + 128 * 9 / 2
    assert few == pytest.approx(max(2e-6 + 1024 * per_key, 256 * (2e-6 + mean_keys * per_key) / 132))
    # many programs: the time follows the total work, not the longest tile
    many = op_cost(_prefill(4, 8192), H100, prof).compute_s
    units = 4 * 32 * 64
    assert many == pytest.approx(units * (2e-6 + (128 * 65 / 2) * per_key) / 132)
    # a causal mask halves the work of long sequences; without one every tile sees every key
    full = op_cost(_prefill(4, 8192, causal=False), H100, prof).compute_s
    assert 1.9 < full / many < 2.1
    # the head layout does not change the work of a query tile (K/V per program are the same)
    gqa = Attention(Phase.PREFILL, batch=4, q_len=2048, kv_len=2048, q_heads=32, kv_heads=8, head_dim=128)
    mha = Attention(Phase.PREFILL, batch=4, q_len=2048, kv_len=2048, q_heads=32, kv_heads=32, head_dim=128)
    assert op_cost(gqa, H100, prof).compute_s == pytest.approx(op_cost(mha, H100, prof).compute_s)


def test_scheduled_prefill_vectorises():
    p = AttentionParams(
        tile_m=64,
        units_per_sm=2,
        unit_compute_eff=0.2,
        unit_overhead_s=1e-6,
        wave_quant=0.5,
        split_rule=1,
        split_latency_s=3e-6,
    )
    prof = _prof(attention_prefill=p)
    ns = np.array([128, 512, 2048, 16384])
    arr = op_cost(_prefill(1, ns), H100, prof).total_s
    one = [op_cost(_prefill(1, int(n)), H100, prof).total_s for n in ns]
    assert np.allclose(arr, one)
    assert np.all(np.diff(arr) > 0)


def test_triton_decode_pieces_follow_the_kernels_schedules():
    from perfmodel.costs.attention import SplitRule
    from perfmodel.costs.attention import triton_decode_pieces as _triton_decode_pieces

    # split-KV: 8 (sequence, kv head) pairs, 264 slots -> 33 splits, but 4096 keys are 64 tiles:
    # chunks of 2 tiles (128 keys), 32 pieces
    programs, pieces = _triton_decode_pieces(np.float64(8), 4096, 264, SplitRule.FILL)
    assert (programs, pieces) == (256, 32)
    # enough pairs: no split
    assert _triton_decode_pieces(np.float64(1024), 4096, 264, SplitRule.FILL) == (1024, 1)
    # stream-K: 1024 pairs (more than the SMs: two programs per SM though the cache is small)
    # share 1024 x 4 tiles; every pair adds a piece boundary
    programs, pieces = _triton_decode_pieces(np.float64(1024), 256, 264, SplitRule.STREAM_K)
    assert programs == 528 and pieces == pytest.approx((528 + 1024) / 1024)
    # the same small cache over as many pairs as SMs: one per SM
    assert _triton_decode_pieces(np.float64(264), 256, 264, SplitRule.STREAM_K)[0] == 264
    # fewer tiles than slots: one program per tile
    assert _triton_decode_pieces(np.float64(2), 128, 264, SplitRule.STREAM_K)[0] == 4
    # two programs per SM when the SM count is given (a large cache), a multiple of the 8 pairs:
    # every run inside one pair, 33 pieces per pair
    programs, pieces = _triton_decode_pieces(np.float64(8), 65536, 264, SplitRule.STREAM_K, 132)
    assert (programs, pieces) == (264, 33)
    # a small cache (at most 32 tiles per SM): one per SM, rounded down to a multiple of the pairs
    programs, pieces = _triton_decode_pieces(np.float64(8), 4096, 264, SplitRule.STREAM_K, 132)
    assert (programs, pieces) == (128, 16)
    # head_dim 64: stream-K walks 128-key tiles (2 tiles of 128 keys per pair here), split-KV 64-key ones
    assert _triton_decode_pieces(np.float64(8), 256, 264, SplitRule.STREAM_K, 132, 64)[0] == 16
    assert _triton_decode_pieces(np.float64(8), 256, 264, SplitRule.STREAM_K, 132, 128)[0] == 32


def test_decode_step_time_charges_each_tile_a_program_walks():
    from perfmodel.costs.attention import SplitRule

    op = Attention(Phase.DECODE, 4, 1, 65536, 32, 8, 128, causal=True)
    base = AttentionParams(split_rule=SplitRule.STREAM_K, units_per_sm=1.0, unit_memory_eff=1.0)
    t0 = op_cost(op, H100, _prof(attention_decode=base)).total_s
    step = AttentionParams(
        split_rule=SplitRule.STREAM_K, units_per_sm=1.0, unit_memory_eff=1.0, unit_step_s=1e-7
    )
    t1 = op_cost(op, H100, _prof(attention_decode=step)).total_s
    # 32 pairs x 1024 tiles over 256 programs (2 per SM, rounded to the pairs): 128 tiles each,
    # 0.1 us per tile on the floor
    assert t1 > t0 and t1 >= 128 * 1e-7


def test_triton_decode_combine_kernel_costs_its_partials():
    from perfmodel.costs.attention import SplitRule

    base = AttentionParams(split_rule=SplitRule.FILL, split_latency_s=2e-6)
    with_bytes = AttentionParams(split_rule=SplitRule.FILL, split_latency_s=2e-6, reduce_bytes_eff=0.5)
    op = Attention(Phase.DECODE, batch=1, q_len=1, kv_len=4096, q_heads=32, kv_heads=8, head_dim=128)
    lat0 = op_cost(op, H100, _prof(attention_decode=base)).latency_s
    lat1 = op_cost(op, H100, _prof(attention_decode=with_bytes)).latency_s
    assert lat0 == pytest.approx(2e-6)  # the combine kernel runs even without a split
    partial = (
        2 * 8 * 32 * 4 * 129 * 4
    )  # 8 pairs x 32 pieces x 4 query heads x (128 + 1) fp32, written and read
    assert lat1 - lat0 == pytest.approx(partial / (0.5 * H100.hbm_bytes_per_s))


def test_triton_decode_combine_kernel_costs_its_rows():
    from perfmodel.costs.attention import SplitRule

    base = AttentionParams(split_rule=SplitRule.FILL, split_latency_s=2e-6)
    rows = AttentionParams(split_rule=SplitRule.FILL, split_latency_s=2e-6, reduce_row_s=1e-7)
    lat = {}
    for b in (1, 64):
        op = Attention(Phase.DECODE, batch=b, q_len=1, kv_len=256, q_heads=32, kv_heads=8, head_dim=128)
        lat[b] = (
            op_cost(op, H100, _prof(attention_decode=rows)).latency_s
            - op_cost(op, H100, _prof(attention_decode=base)).latency_s
        )
    # one combine program per query head of a sequence, over the SMs
    assert lat[1] == pytest.approx(1e-7 * 32 / H100.sm_count)
    assert lat[64] == pytest.approx(64 * lat[1])


def test_stream_k_at_one_wave_has_no_combine_rows():
    # stream-K whose programs fit one per SM merges in its own kernel: no combine program per
    # output row; beyond one wave the reduction kernel's rows are priced as for split-KV
    from perfmodel.costs.attention import triton_decode_pieces
    from perfmodel.costs.attention import SplitRule

    base = AttentionParams(split_rule=SplitRule.STREAM_K, split_latency_s=2e-6)
    rows = AttentionParams(split_rule=SplitRule.STREAM_K, split_latency_s=2e-6, reduce_row_s=1e-7)
    for b, kv, fused in (
        (1, 1024, True),
        (4, 4096, True),
        (2, 16384, True),
        (4, 16384, False),
        (16, 65536, False),
    ):
        op = Attention(Phase.DECODE, batch=b, q_len=1, kv_len=kv, q_heads=32, kv_heads=8, head_dim=128)
        programs, _ = triton_decode_pieces(
            b * 8, kv, 2 * H100.sm_count, SplitRule.STREAM_K, H100.sm_count, 128
        )
        assert (programs <= H100.sm_count) == fused
        extra = (
            op_cost(op, H100, _prof(attention_decode=rows)).latency_s
            - op_cost(op, H100, _prof(attention_decode=base)).latency_s
        )
        assert extra == pytest.approx(0.0 if fused else 1e-7 * b * 32 / H100.sm_count)


def test_stream_k_one_wave_merge_costs_its_latency_and_loads():
    # at one wave the last program of a split pair merges its pieces: merge_latency_s plus
    # merge_step_s per load of up to 64 // next_pow2(group) pieces; an unsplit pair (one piece)
    # costs nothing, and the combine kernel's split_latency_s is not charged
    from perfmodel.costs.attention import triton_decode_pieces
    from perfmodel.decode_schedule import merge_loads as stream_k_merge_loads
    from perfmodel.costs.attention import SplitRule

    base = AttentionParams(split_rule=SplitRule.STREAM_K, split_latency_s=2e-6)
    merge = AttentionParams(
        split_rule=SplitRule.STREAM_K, split_latency_s=2e-6, merge_latency_s=1e-6, merge_step_s=4e-7
    )
    # (batch, KV length, query heads, KV heads, loads expected): 16 pieces of group 4 in one load of 16,
    # 16 pieces of group 8 in two loads of 8, 33 pieces of group 4 in three, one piece: no merge
    for b, kv, hq, hkv, loads in (
        (1, 1024, 32, 8, 1),
        (1, 1024, 64, 8, 2),
        (1, 16384, 16, 4, 3),
        (16, 256, 32, 8, 0),
    ):
        op = Attention(Phase.DECODE, batch=b, q_len=1, kv_len=kv, q_heads=hq, kv_heads=hkv, head_dim=128)
        programs, pieces = triton_decode_pieces(
            b * hkv, kv, 2 * H100.sm_count, SplitRule.STREAM_K, H100.sm_count, 128
        )
        assert programs <= H100.sm_count
        lat0 = op_cost(op, H100, _prof(attention_decode=base)).latency_s
        lat1 = op_cost(op, H100, _prof(attention_decode=merge)).latency_s
        assert lat0 == pytest.approx(0.0)
        if loads:
            assert float(stream_k_merge_loads(pieces, hq // hkv)) == loads
        assert lat1 - lat0 == pytest.approx(1e-6 + 4e-7 * loads if loads else 0.0)


@pytest.mark.parametrize("group", [1, 2, 3, 4, 5, 7, 8, 9, 16, 32, 64, 128])
def test_stream_k_merge_loads_take_blocks_of_pieces(group):
    from perfmodel.decode_schedule import merge_loads as stream_k_merge_loads

    per_load = max(1, 64 // (1 << (group - 1).bit_length()))
    for pieces in (1, per_load, per_load + 1, 3 * per_load, 33):
        assert float(stream_k_merge_loads(pieces, group)) == -(-pieces // per_load)


def test_gemm_candidate_tiles_never_slower_than_the_largest_tile():
    from types import MappingProxyType

    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import Mode, OpClass, Profile
    from perfmodel.ops import Gemm

    g = load_gpu("h100-sxm-80gb")
    base = GemmParams(compute_eff=0.7, memory_eff=0.9, tile_m=128, tile_n=256, tile_m_min=16, wave_quant=1.0)
    choose = GemmParams(**{**base.__dict__, "tile_choice": 1})
    op = Gemm(
        np.array([1.0, 1000, 1000, 4096, 16384]),
        np.array([1000.0, 1000, 640, 4352, 640]),
        np.array([1000.0, 1000, 2560, 4096, 2560]),
    )
    prof = lambda p: Profile("h100-sxm-80gb", Mode.CALIBRATED, MappingProxyType({OpClass.GEMM: p}))
    fixed, chosen = op_cost(op, g, prof(base)).total_s, op_cost(op, g, prof(choose)).total_s
    assert np.all(chosen <= fixed * (1 + 1e-12))
    assert np.any(chosen < 0.9 * fixed)  # a small (N) problem fills more SMs with smaller tiles
    # a per-halving efficiency below 1 makes the small tiles dearer
    dear = GemmParams(**{**choose.__dict__, "small_tile_eff": 0.5})
    assert np.all(op_cost(op, g, prof(dear)).total_s >= chosen * (1 - 1e-12))


def test_rmsnorm_rows_past_the_knee_stream_at_the_tail_efficiency():
    from types import MappingProxyType

    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import Mode, Profile
    from perfmodel.ops import Elementwise

    g = load_gpu("h100-sxm-80gb")
    p = ElementwiseParams(memory_eff=0.8, row_knee_bytes=8192.0, row_tail_memory_eff=0.6)
    prof = Profile("h100-sxm-80gb", Mode.CALIBRATED, elementwise=MappingProxyType({"rmsnorm": p}))
    t, h = 16384, np.array([2048.0, 16384.0])
    op = Elementwise("rmsnorm", bytes=(2 * t + 1) * h * 2, flops=4 * t * h)
    got = op_cost(op, g, prof).memory_s
    want = (2 * t + 1) * h * 2 / (g.hbm_bytes_per_s * np.array([0.8, 0.6]))
    assert np.allclose(got, want)


def test_unit_share_shortens_a_causal_wave_not_a_non_causal_one():
    from perfmodel.costs.attention import SplitRule

    base = dict(
        split_rule=SplitRule.NONE,
        units_per_sm=4.0,
        unit_compute_eff=0.4,
        unit_overhead_s=1e-6,
        tile_m=128,
        wave_quant=0.5,
    )
    off, on = AttentionParams(**base), AttentionParams(**base, unit_share=0.3)

    def t(params, causal):
        op = Attention(Phase.PREFILL, 1, 2048, 2048, 32, 8, 128, causal=causal)
        return op_cost(op, H100, _prof(attention_prefill=params)).total_s

    # 512 programs on 528 slots: one wave. Causal: the last query tile's program runs faster
    # once the shorter ones beside it finish; non-causal programs are all equally long
    assert t(on, True) < t(off, True)
    assert t(on, False) == pytest.approx(t(off, False))
    assert t(on, True) < t(on, False)


def test_non_causal_grids_pay_no_tail_beyond_the_idle_part_of_the_last_wave():
    from perfmodel.costs.attention import SplitRule

    p = AttentionParams(
        split_rule=SplitRule.NONE,
        units_per_sm=4.0,
        unit_compute_eff=0.4,
        unit_overhead_s=1e-6,
        tile_m=128,
        wave_quant=0.4,
    )
    prof = _prof(attention_prefill=p)
    rate = 0.4 * H100.flops_for(Dtype.BF16) / H100.sm_count  # 4 programs share an SM's math
    slots = 4 * H100.sm_count

    def t(n, causal):
        return op_cost(_prefill(1, n, causal=causal), H100, prof).compute_s

    def program_s(n):  # one non-causal program: every key of its query tile
        units = 32 * (n // 128)
        share = 4.0 / min(max(units / H100.sm_count, 1.0), 4.0)
        return 1e-6 + n * 128 * (4 * 128) / (rate * share)

    # 512 programs on 528 slots (one wave): one program's time, no tail
    assert t(2048, False) == pytest.approx(program_s(2048))
    # 1024 programs: 1.94 waves, the tail bounded by the 0.06 of a wave left idle
    x = 1024 / slots
    assert t(4096, False) == pytest.approx((x + (np.ceil(x) - x)) * program_s(4096))
    # causal programs differ in length: the list-scheduling tail (wave_quant of a mean program) stays
    units, mean_keys = 512, 128 * 17 / 2
    t_mean = 1e-6 + mean_keys * 128 * (4 * 128) / (rate * 4.0 / min(units / H100.sm_count, 4.0))
    assert t(2048, True) >= units * t_mean / slots + 0.4 * t_mean - 1e-12


def test_op_memo_keeps_an_ops_own_quantities_read_only_and_apart():
    from perfmodel.costs import base
    from perfmodel.ops import Gemm, flops

    calls = []

    def counted(op):
        calls.append(op)
        return flops(op)

    m = np.arange(1.0, 9.0)
    a, b = Gemm(m, 64, 64), Gemm(m, 64, 128)
    fa = base.op_memo(a, "test_flops", counted)
    assert base.op_memo(a, "test_flops", counted) is fa and len(calls) == 1  # computed once for this op
    np.testing.assert_array_equal(base.op_memo(b, "test_flops", counted), flops(b))  # another op: its own
    assert len(calls) == 2
    with pytest.raises(ValueError):
        fa[0] = 0.0  # read-only: a caller cannot change what later calls get
    m[0] = 5.0  # and the op's own array was copied, not frozen
    big = Gemm(np.arange(1.0, base.OP_MEMO_MAX_POINTS + 2.0), 64, 64)
    base.op_memo(big, "test_flops", counted)
    base.op_memo(big, "test_flops", counted)
    assert calls[-2:] == [big, big]  # a large grid is not kept
