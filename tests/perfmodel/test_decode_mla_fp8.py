"""MLA decode and fp8-KV decode ops: descriptors, counts, and their price on each attention impl
(the Triton impls price the general split-KV kernel these caches run)."""

import math

import numpy as np
import pytest

from perfmodel.hw.spec import Dtype
from perfmodel import decode_schedule as ds
from perfmodel.costs.attention import triton_general_decode
from perfmodel.errors import OpDescriptorError
from perfmodel.layers import Precision, model_ops
from perfmodel.models import load_model
from perfmodel.ops import Attention, AttentionImpl, Phase, bytes_moved, flops, op_from_dict
from perfmodel.predict import predict, predict_cost

MLA = {
    "op": "attention",
    "phase": "decode",
    "batch": 16,
    "q_len": 1,
    "kv_len": 32768,
    "q_heads": 16,
    "kv_heads": 1,
    "head_dim": 576,
    "v_head_dim": 512,
    "kv_shared": True,
    "dtype": "bf16",
}
GQA = {
    "op": "attention",
    "phase": "decode",
    "batch": 16,
    "q_len": 1,
    "kv_len": 32768,
    "q_heads": 32,
    "kv_heads": 8,
    "head_dim": 128,
    "dtype": "bf16",
}


def test_mla_decode_counts_the_latent_once():
    op = op_from_dict(MLA)
    assert op.kv_shared and op.v_head_dim == 512
    assert flops(op) == 2 * 16 * 16 * (576 + 512) * 32768
    assert bytes_moved(op) == 16 * 32768 * 576 * 2 + 16 * 16 * (576 + 512) * 2


@pytest.mark.parametrize("impl", [i.value for i in AttentionImpl])
def test_predict_takes_an_mla_decode_on_every_impl(impl):
    t = predict({**MLA, "impl": impl}, "h100")
    t8 = predict({**MLA, "impl": impl, "kv_dtype": "fp8"}, "h100")
    assert math.isfinite(t) and 0 < t8 < t
    # memory bound at 32K tokens: at least the latent's bytes at the HBM bandwidth (3.35 TB/s)
    assert t > bytes_moved(op_from_dict(MLA)) / 3.35e12


@pytest.mark.parametrize("impl", ["split_kv", "stream_k", "triton"])
def test_fp8_kv_decode_is_priced_at_one_byte_per_element(impl):
    bf16 = predict_cost({**GQA, "impl": impl}, "h100")
    fp8 = predict_cost({**GQA, "impl": impl, "kv_dtype": "fp8"}, "h100")
    kv = 16 * 8 * 32768 * 2 * 128
    assert bf16.bytes - fp8.bytes == kv  # 2 bytes an element against 1
    assert fp8.total_s < bf16.total_s


def test_the_general_kernel_rule_is_the_launchers():
    assert triton_general_decode(op_from_dict(GQA)) is None  # the split-KV/stream-K kernels
    assert triton_general_decode(op_from_dict({**GQA, "kv_dtype": "fp8"})) == (16, 64)
    assert triton_general_decode(op_from_dict({**GQA, "head_dim": 96})) == (16, 64)
    assert triton_general_decode(op_from_dict({**GQA, "head_dim": 192, "v_head_dim": 128})) == (16, 32)
    assert triton_general_decode(op_from_dict(MLA)) == (16, 32)  # keys-major, 32-key tiles
    assert (
        triton_general_decode(op_from_dict({**GQA, "phase": "prefill", "q_len": 8, "head_dim": 96})) is None
    )
    for d in ds.STREAM_K_HEAD_DIMS:
        assert not ds.runs_general(d, d, False)
        assert ds.runs_general(d, d, True)


def test_mla_with_128_heads_prices_eight_head_blocks():
    # 128 query heads on one latent head: 8 programs of 16 heads per (sequence, piece), where the
    # stream-K pricing counted 2 blocks of 64 rows; more programs, not less time than 16 heads
    many = predict({**MLA, "q_heads": 128, "impl": "split_kv"}, "h100")
    few = predict({**MLA, "impl": "split_kv"}, "h100")
    assert many >= few


def _decode_attention(model, kv_dtype):
    prec = Precision.of(Dtype.BF16, Dtype.BF16, kv_dtype)
    ops = model_ops(load_model(model), Phase.DECODE, 8, 1, 4096, prec, tp=8 if "deepseek" in model else 1)
    return [o for name, o, _ in ops if isinstance(o, Attention)]


def test_model_decode_ops_are_what_the_kernels_take():
    (mla,) = _decode_attention("deepseek-v3", Dtype.FP8)
    assert (mla.kv_heads, mla.head_dim, mla.v_head_dim, mla.kv_shared, mla.kv_dtype) == (
        1,
        576,
        512,
        True,
        Dtype.FP8,
    )
    assert triton_general_decode(mla) == (16, 32)
    (gqa,) = _decode_attention("llama-3-8b", Dtype.FP8)
    assert gqa.kv_dtype is Dtype.FP8 and triton_general_decode(gqa) == (16, 64)
    (plain,) = _decode_attention("llama-3-8b", Dtype.BF16)
    assert triton_general_decode(plain) is None


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"v_head_dim": 640}, "v_head_dim"),
        ({"kv_shared": "yes"}, "kv_shared"),
    ],
)
def test_bad_mla_descriptors_name_the_field(bad, field):
    with pytest.raises(OpDescriptorError, match=field):
        op_from_dict({**MLA, **bad})


def test_vectorised_mla_decode():
    op = Attention(
        Phase.DECODE,
        np.array([1, 8, 64]),
        1,
        np.array([1024, 8192, 65536]),
        16,
        1,
        576,
        v_head_dim=512,
        kv_shared=True,
        impl=AttentionImpl.SPLIT_KV,
    )
    t = predict_cost(op, "h100").total_s
    assert np.all(np.diff(t) > 0)


@pytest.mark.parametrize("d,dv", [(80, 80), (96, 96), (128, 128), (192, 128), (256, 256)])
def test_a_paged_cache_takes_two_more_pipeline_stages(d, dv):
    # the block-table load holds two stages: a paged program buffers as many tiles as a contiguous one
    flat, paged = ds.general_tile(d, dv, 4), ds.general_tile(d, dv, 4, paged=True)
    assert paged[:3] == flat[:3] and paged[3] == flat[3] + 2
    assert ds.general_tile(576, 512, 16, kv_shared=True) == (16, 32, 4, 5)  # MLA's latent is always paged


def test_the_general_kernel_keeps_its_programs_resident():
    # 132 SMs, 32 program pairs: 8 splits (256 programs), not the rounded-up 9 (288 > 2 x 132)
    assert ds.general_splits(32, 132) == 8
    assert ds.general_splits(32, 132) == 8
    assert ds.general_splits(256, 132) == 1  # more pairs than slots: no split
    pairs = np.array([1.0, 32.0, 128.0, 400.0])
    assert ds.general_splits(pairs, 132).tolist() == [264.0, 8.0, 2.0, 1.0]
    for pairs in range(1, 400, 7):  # never over what the SMs hold, unless a pair alone is
        n = ds.general_splits(pairs, 132)
        assert n >= 1 and (pairs * n <= ds.SPLIT_KV_PROGRAMS_PER_SM * 132 or n == 1)


def test_the_cost_model_prices_the_general_kernels_split_count():
    from perfmodel.costs.attention_decode import triton_decode_pieces, SplitRule

    units = np.array([32.0])
    _, pieces = triton_decode_pieces(
        units, 65536.0, 264, SplitRule.FILL, 132, 128, 64, ds.general_splits(units, 132)
    )
    assert pieces.tolist() == [8.0]
    _, plain = triton_decode_pieces(units, 65536.0, 264, SplitRule.FILL, 132, 128, 64)
    assert plain.tolist() == [9.0]  # the split-KV kernel's own target: ceil(264 / 32)
