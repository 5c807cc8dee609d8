"""Op descriptors: parsing, FLOP and byte counts against hand arithmetic."""

import json

import numpy as np
import pytest

from perfmodel.hw.spec import Dtype
from perfmodel.errors import OpDescriptorError
from perfmodel.ops import (
    Attention,
    Gemm,
    Memcpy,
    MemLocation,
    Phase,
    bytes_moved,
    decoder_layer_parts,
    flops,
    op_from_dict,
    op_to_dict,
    visible_keys,
)


def test_gemm_counts():
    op = Gemm(4096, 1024, 512, Dtype.BF16)
    assert flops(op) == 2 * 4096 * 1024 * 512
    assert bytes_moved(op) == 2 * (4096 * 512 + 512 * 1024 + 4096 * 1024)


def test_gemm_weight_dtype_counts_weight_bytes_only():
    op = Gemm(1, 8192, 8192, Dtype.BF16, b_dtype=Dtype.INT4)
    assert bytes_moved(op) == 2 * 8192 + 0.5 * 8192 * 8192 + 2 * 8192


def test_causal_prefill_counts_unmasked_half():
    # L queries over L keys: L (L + 1) / 2 pairs, 4 * D FLOPs per pair and head
    L, D, H = 1000, 128, 8
    op = Attention(Phase.PREFILL, 2, L, L, H, 2, D, causal=True)
    assert visible_keys(L, L, True) == L * (L + 1) / 2
    assert flops(op) == 2 * 2 * H * (D + D) * L * (L + 1) / 2
    full = Attention(Phase.PREFILL, 2, L, L, H, 2, D, causal=False)
    assert flops(full) == pytest.approx(2 * flops(op) * L / (L + 1))


def test_chunk_pairs_sum_to_full_causal():
    L, c = 1000, 250
    total = sum(visible_keys(c, (i + 1) * c, True) for i in range(L // c))
    assert total == L * (L + 1) / 2


def test_sliding_window_caps_keys():
    # window 3 over 5 causal queries: keys seen 1, 2, 3, 3, 3
    assert visible_keys(5, 5, True, window=3) == 12
    assert visible_keys(2, 5, True, window=3) == 6
    arr = visible_keys(np.array([5, 2]), np.array([5, 5]), True, window=3)
    assert list(arr) == [12, 6]


def test_decode_reads_kv_once():
    B, L, Hq, Hkv, D = 4, 10_000, 32, 8, 128
    op = Attention(Phase.DECODE, B, 1, L, Hq, Hkv, D)
    kv = B * Hkv * L * 2 * D * 2
    qo = B * Hq * 1 * 2 * D * 2
    assert bytes_moved(op) == kv + qo
    assert flops(op) == 2 * B * Hq * 2 * D * L


def test_memcpy_bytes():
    assert bytes_moved(Memcpy(100, MemLocation.DEVICE, MemLocation.DEVICE)) == 200
    assert bytes_moved(Memcpy(100, MemLocation.DEVICE, MemLocation.HOST_PINNED)) == 100


def test_decoder_layer_is_sum_of_parts():
    d = {
        "op": "decoder_layer",
        "phase": "prefill",
        "batch": 1,
        "q_len": 512,
        "kv_len": 512,
        "hidden": 4096,
        "intermediate": 14336,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "mlp": "gated_silu",
        "dtype": "bf16",
    }
    op = op_from_dict(d)
    parts = decoder_layer_parts(op)
    assert [n for n, _, _ in parts][:4] == ["input_norm", "qkv_proj", "kv_append", "attention"]
    assert flops(op) == sum(flops(o) for _, o, _ in parts)
    gemm_flops = 2 * 512 * 4096 * (6144 + 4096 + 2 * 14336 + 14336 * 4096 / 4096)
    assert flops(op) > gemm_flops * 0.99


@pytest.mark.parametrize(
    "d",
    [
        {"op": "gemm", "m": 1, "n": 2, "k": 3, "dtype": "fp16"},
        {
            "op": "attention",
            "phase": "decode",
            "batch": 2,
            "q_len": 1,
            "kv_len": 9,
            "q_heads": 8,
            "kv_heads": 2,
            "head_dim": 64,
            "causal": True,
            "dtype": "bf16",
        },
        {"op": "memcpy", "bytes": 1024, "src": "host_pinned", "dst": "device"},
        {"op": "all_reduce", "bytes": 1 << 20, "world": 4, "dtype": "bf16"},
    ],
)
def test_round_trip(d):
    back = op_to_dict(op_from_dict(d))
    for k, v in d.items():
        assert back[k] == v
    json.dumps(back)


@pytest.mark.parametrize(
    "d, field",
    [
        ({"op": "gemm", "m": 1, "n": 2}, "'k'"),
        ({"op": "gemm", "m": 0, "n": 2, "k": 3}, "'m'"),
        ({"op": "gemm", "m": 1.5, "n": 2, "k": 3}, "'m'"),
        ({"op": "gemm", "m": float("nan"), "n": 2, "k": 3}, "'m'"),
        ({"op": "gemm", "m": 1, "n": 2, "k": 3, "dtype": "fp5"}, "'dtype'"),
        ({"op": "conv2d"}, "'op'"),
        ({"m": 1}, "'op'"),
        (
            {
                "op": "attention",
                "phase": "decode",
                "batch": 1,
                "q_len": 1,
                "kv_len": 9,
                "q_heads": 7,
                "kv_heads": 2,
                "head_dim": 64,
            },
            "'q_heads'",
        ),
        (
            {
                "op": "attention",
                "phase": "sideways",
                "batch": 1,
                "q_len": 1,
                "kv_len": 9,
                "q_heads": 8,
                "kv_heads": 2,
                "head_dim": 64,
            },
            "'phase'",
        ),
        ({"op": "memcpy", "bytes": 10, "src": "disk"}, "'src'"),
    ],
)
def test_bad_descriptors_name_the_field(d, field):
    with pytest.raises(OpDescriptorError, match=field):
        op_from_dict(d, where="line 7: ")
    with pytest.raises(OpDescriptorError, match="line 7"):
        op_from_dict(d, where="line 7: ")
