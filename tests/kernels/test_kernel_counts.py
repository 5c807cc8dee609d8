"""FLOP and byte counts of the kernel modules (the core's counts of perfmodel.ops objects, through
kernels/_counts.py), against brute-force counts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.kernels.attention_decode import bytes_moved as decode_bytes
from perfmodel.kernels.attention_prefill import bytes_moved as prefill_bytes
from perfmodel.kernels.attention_prefill import flops as prefill_flops
from perfmodel.kernels.kv_blocks import bytes_moved as copy_bytes
from perfmodel.kernels.kv_blocks import kv_block_copy_op
from perfmodel.kernels.matmul import bytes_moved as gemm_bytes
from perfmodel.kernels.matmul import flops as gemm_flops
from perfmodel.ops import visible_keys


def _attn(**kw):
    op = {
        "op": "attention",
        "phase": "prefill",
        "batch": 1,
        "q_len": 8,
        "kv_len": 8,
        "q_heads": 4,
        "kv_heads": 2,
        "head_dim": 64,
        "causal": True,
        "dtype": "bf16",
    }
    op.update(kw)
    return op


@settings(max_examples=40, deadline=None)
@given(lq=st.integers(1, 40), extra=st.integers(0, 40), causal=st.booleans())
def test_visible_keys_equals_mask_count(lq, extra, causal):
    lk = lq + extra
    i = torch.arange(lq)[:, None]
    j = torch.arange(lk)[None, :]
    mask = (j <= i + (lk - lq)) if causal else torch.ones(lq, lk, dtype=torch.bool)
    assert visible_keys(lq, lk, causal) == int(mask.sum())


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 8),
    length=st.integers(1, 5000),
    hkv=st.integers(1, 8),
    g=st.integers(1, 8),
    d=st.sampled_from([64, 128]),
)
def test_causal_prefill_is_the_unmasked_half(b, length, hkv, g, d):
    op = _attn(batch=b, q_len=length, kv_len=length, q_heads=hkv * g, kv_heads=hkv, head_dim=d)
    assert prefill_flops(op) == 4 * b * hkv * g * d * length * (length + 1) // 2
    assert prefill_flops(op) <= prefill_flops({**op, "causal": False})


def test_decode_bytes_read_cache_once():
    op = _attn(
        phase="decode", batch=2, q_len=1, kv_len=4096, q_heads=32, kv_heads=8, head_dim=128, dtype="fp8"
    )
    assert decode_bytes(op) == 2 * 2 * 8 * 4096 * 128 + 2 * 2 * 32 * 128


@pytest.mark.parametrize(
    "fn,op,key",
    [
        (gemm_flops, {"op": "gemm", "m": 1, "n": 2, "dtype": "bf16"}, "op: field 'k' is missing"),
        (gemm_flops, {"op": "gemm", "m": 0, "n": 2, "k": 3, "dtype": "bf16"}, "op: field 'm'"),
        (gemm_bytes, {"op": "gemm", "m": 1, "n": 2, "k": 3, "dtype": "int4"}, "op: format int4"),
        (prefill_flops, {"op": "attention"}, r"op: field '\w+' is missing"),
        (prefill_flops, _attn(q_heads=3), "op: field 'q_heads'"),
        (prefill_flops, _attn(causal="yes"), "op: field 'causal'"),
        (prefill_flops, _attn(q_len=9), "op: field 'q_len'"),
        (prefill_bytes, _attn(dtype="fp64"), "op: field 'dtype'"),
        (prefill_bytes, "gemm", "op: expected an? Attention"),
        (prefill_bytes, {"op": "gemm", "m": 1, "n": 2, "k": 3}, "op: expected an? Attention"),
        (copy_bytes, {"op": "memcpy"}, "op: field 'bytes' is missing"),
        (
            lambda op: kv_block_copy_op(**op),
            {"num_blocks": 2, "kv_heads": 0, "block_size": 16, "head_dim": 64},
            "kv_heads",
        ),
    ],
)
def test_bad_descriptor_is_a_value_error(fn, op, key):
    with pytest.raises(ValueError, match=rf"^{key}"):
        fn(op)
