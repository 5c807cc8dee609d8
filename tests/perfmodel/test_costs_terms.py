"""Cost terms: norm blocks and the weight they re-read, the softmax cost per attention score, the
combine kernel's cost per KV split, and the size knee of memory-bound kernels."""

from types import MappingProxyType

import numpy as np
import pytest

from perfmodel.hw.loader import load_gpu
from perfmodel.hw.spec import Dtype
from perfmodel.calibration import Mode, OpClass, Profile, peak_profile
from perfmodel.costs.attention import AttentionParams, SplitRule
from perfmodel.costs.copies import CopyParams
from perfmodel.costs.elementwise import ElementwiseParams
from perfmodel.costs import op_cost
from perfmodel.costs.attention import flash_splits
from perfmodel.ops import Attention, Elementwise, Memcpy, MemLocation, Phase

H100 = load_gpu("h100-sxm-80gb")


def _prof(**classes):
    return Profile(H100.name, Mode.CALIBRATED, {OpClass(k): v for k, v in classes.items()})


def _norm(tokens, hidden, a=2):
    return Elementwise("rmsnorm", bytes=(2 * tokens + 1) * hidden * a, flops=4 * tokens * hidden)


def test_each_norm_block_streams_its_row_and_the_whole_weight():
    # one block per row, all in one wave: 8 rows take as long as one (each block reads its input row,
    # writes its output row and reads the weight), not 17/8 / 3 of it
    rate = 10e9
    p = ElementwiseParams(
        memory_eff=1.0, units_per_sm=4, unit_memory_eff=rate * H100.sm_count / H100.hbm_bytes_per_s
    )
    prof = Profile(H100.name, Mode.CALIBRATED, elementwise=MappingProxyType({"rmsnorm": p}))
    one = op_cost(_norm(1, 8192), H100, prof).memory_s
    eight = op_cost(_norm(8, 8192), H100, prof).memory_s
    assert one == pytest.approx(3 * 8192 * 2 / rate)
    assert eight == pytest.approx(one)
    # many rows: the HBM roofline over the op's fewest bytes binds, the re-read weights come from L2
    big = _norm(65536, 4096)
    assert op_cost(big, H100, prof).memory_s >= big.bytes / H100.hbm_bytes_per_s


def _prefill(n, head_dim, heads=32):
    return Attention(
        Phase.PREFILL, batch=1, q_len=n, kv_len=n, q_heads=heads, kv_heads=8, head_dim=head_dim, causal=False
    )


def test_softmax_cost_per_score_is_paid_per_key_and_weighs_more_for_small_heads():
    base = AttentionParams(tile_m=128, units_per_sm=1, unit_compute_eff=0.2, wave_quant=0.0)
    with_sm = AttentionParams(**{**base.__dict__, "score_flops": 128.0})
    rate = 0.2 * H100.flops_for(Dtype.BF16) / H100.sm_count
    n = 4096  # 32 heads x 32 tiles = 1024 equal programs over 132 slots
    for d in (64, 128):
        t0 = op_cost(_prefill(n, d), H100, _prof(attention_prefill=base)).compute_s
        t1 = op_cost(_prefill(n, d), H100, _prof(attention_prefill=with_sm)).compute_s
        assert t0 == pytest.approx(1024 * n * 128 * 4 * d / rate / 132)
        assert t1 / t0 == pytest.approx((4 * d + 128) / (4 * d))
    # a score costs the same for every head_dim, so head_dim 64 is more than half of head_dim 128
    t64 = op_cost(_prefill(n, 64), H100, _prof(attention_prefill=with_sm)).compute_s
    t128 = op_cost(_prefill(n, 128), H100, _prof(attention_prefill=with_sm)).compute_s
    assert t64 / t128 == pytest.approx((256 + 128) / (512 + 128))
    # peak mode has no score cost
    assert peak_profile(H100).params(OpClass.ATTENTION_PREFILL).score_flops == 0.0


def _decode(batch, kv, kv_heads=4):
    return Attention(
        Phase.DECODE, batch=batch, q_len=1, kv_len=kv, q_heads=8 * kv_heads, kv_heads=kv_heads, head_dim=128
    )


def test_combine_cost_grows_with_the_kv_splits_and_only_when_split():
    p = AttentionParams(split_rule=SplitRule.FLASH, split_latency_s=2e-6, split_piece_s=0.2e-6)
    prof = _prof(attention_decode=p)
    kvs = np.array([4096.0, 16384.0])
    lat = op_cost(_decode(1, kvs), H100, prof).latency_s
    splits = flash_splits(4.0, np.ceil(kvs / 128), 2 * H100.sm_count)
    assert np.all(splits > 1)
    assert np.allclose(lat, 2e-6 + 0.2e-6 * splits)
    # enough (sequence, head) programs: flash does not split, no combine kernel
    assert op_cost(_decode(128, 4096.0, kv_heads=8), H100, prof).latency_s == 0.0
    # our split-KV kernel: the combine runs always, one piece per chunk
    fill = _prof(
        attention_decode=AttentionParams(
            split_rule=SplitRule.FILL, split_latency_s=1e-6, split_piece_s=0.1e-6
        )
    )
    assert op_cost(_decode(1, 4096.0), H100, fill).latency_s == pytest.approx(1e-6 + 0.1e-6 * 64)


def test_size_knee_gives_small_copies_their_own_rate():
    # the first 8 MB at 1.3 x HBM (the L2 absorbs the writes), the rest at 0.9
    p = CopyParams(memory_eff=1.3, knee_bytes=8e6, tail_memory_eff=0.9, latency_s=5e-6)
    prof = _prof(memcpy_d2d=p)
    sizes = np.array([1e6, 8e6, 64e6])
    op = Memcpy(bytes=sizes, src=MemLocation.DEVICE, dst=MemLocation.DEVICE)
    by = op_cost(op, H100, prof).bytes
    want = np.minimum(by, 8e6) / (1.3 * H100.hbm_bytes_per_s) + np.maximum(by - 8e6, 0) / (
        0.9 * H100.hbm_bytes_per_s
    )
    assert np.allclose(op_cost(op, H100, prof).memory_s, want)
    assert np.all(np.diff(op_cost(op, H100, prof).total_s) > 0)


def test_split_table_memo_matches_direct_table():
    """The memoised flash split table equals the direct one, past the block count where the choice stops
    depending on it, for counts seen before and not, and falls back for counts that are not integers."""
    from perfmodel.costs.attention import _split_table, _split_table_memo

    uu = np.array([0.0, 1.0, 5.0, 17.0, 40.0, 100.0, 172.0])
    nn = np.array([0.0, 1.0, 2.0, 3.0, 7.0, 64.0, 129.0, 900.0, 16255.0, 16256.0, 16257.0, 40000.0])
    want = _split_table(uu, nn, 216, 128)
    assert np.array_equal(_split_table_memo(uu, nn, 216, 128), want)
    assert np.array_equal(_split_table_memo(uu[::-1], nn[::2], 216, 128), want[::-1, ::2])  # from the memo
    assert np.array_equal(_split_table_memo(uu, nn, 216, 8), _split_table(uu, nn, 216, 8))
    half = np.array([2.5, 9.0])
    assert np.array_equal(_split_table_memo(half, nn, 216, 128), _split_table(half, nn, 216, 128))
