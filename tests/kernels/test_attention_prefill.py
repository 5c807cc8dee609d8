import math

import pytest
import torch

from perfmodel import kernels
from perfmodel.kernels.reference import attention_prefill_ref

# (B, Hq, Hkv, L, D): length 1, odd lengths, GQA ratios 1, 2, 4, 7, both head dims
SHAPES = [
    (1, 1, 1, 1, 64),
    (2, 4, 2, 37, 64),
    (1, 7, 1, 19, 64),
    (1, 4, 4, 33, 128),
    (1, 8, 2, 64, 64),
    (2, 4, 1, 50, 64),
]


def _inputs(b, hq, hkv, length, d, dtype):
    q = torch.randn(b, hq, length, d).to(dtype)
    k = torch.randn(b, hkv, length, d).to(dtype)
    v = torch.randn(b, hkv, length, d).to(dtype)
    return q, k, v


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_fp16_matches_reference(shape, causal, seed, check, poisoned):
    q, k, v = _inputs(*shape, torch.float16)
    with poisoned():
        o = kernels.attention_prefill(q, k, v, causal=causal)
    assert o.shape == q.shape and o.dtype == q.dtype
    check(o, attention_prefill_ref(q, k, v, causal), torch.float16, seed, f"{shape} causal={causal}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(2, 4, 2, 37, 64), (1, 7, 1, 19, 128)])
def test_other_dtypes(shape, dtype, seed, check, poisoned):
    q, k, v = _inputs(*shape, dtype)
    with poisoned():
        o = kernels.attention_prefill(q, k, v, causal=True)
    check(o, attention_prefill_ref(q, k, v, True), dtype, seed)


# (D, Dv, B, Hq, Hkv, L): each head size once, with an odd length and a GQA ratio; 192/128 is
# DeepSeek's attention before weight absorption
HEAD_SIZE_CASES = [
    (32, 32, 1, 4, 2, 23),
    (80, 80, 2, 6, 2, 21),
    (96, 96, 1, 3, 1, 37),
    (192, 128, 1, 4, 4, 19),
    (256, 256, 1, 2, 1, 35),
    (128, 64, 1, 4, 2, 17),
]


@pytest.mark.parametrize("d,dv,b,hq,hkv,length", HEAD_SIZE_CASES)
def test_head_sizes_match_reference(d, dv, b, hq, hkv, length, seed, check, poisoned):
    q = torch.randn(b, hq, length, d).to(torch.float16)
    k = torch.randn(b, hkv, length, d).to(torch.float16)
    v = torch.randn(b, hkv, length, dv).to(torch.float16)
    for causal in (True, False):
        with poisoned():
            o = kernels.attention_prefill(q, k, v, causal=causal)
        assert o.shape == (b, hq, length, dv) and o.dtype == q.dtype
        check(
            o, attention_prefill_ref(q, k, v, causal), torch.float16, seed, f"D={d} Dv={dv} causal={causal}"
        )


def test_second_head_part_is_read():
    # keys that differ only in the lanes past the first power of two (64..79 of 80) must change
    # the weights: a kernel reading only the first 64 lanes would return the plain mean of v
    q = torch.zeros(1, 1, 2, 80)
    k = torch.zeros(1, 1, 2, 80)
    q[..., 64:] = 1.0
    k[0, 0, 1, 64:] = 1.0
    v = torch.tensor([[0.0], [1.0]]).expand(2, 16).reshape(1, 1, 2, 16).contiguous()
    o = kernels.attention_prefill(q, k, v, causal=False)
    ref = attention_prefill_ref(q, k, v, False)
    torch.testing.assert_close(o.double(), ref, rtol=1e-5, atol=1e-5)
    assert float(o[0, 0, 0, 0]) > 0.8


def test_sm_scale_and_strided_q(seed, check):
    base = torch.randn(1, 37, 4, 64, dtype=torch.float16)  # [B, L, H, D] viewed as [B, H, L, D]
    q = base.transpose(1, 2)
    k = torch.randn(1, 2, 37, 64, dtype=torch.float16)
    v = torch.randn(1, 2, 37, 64, dtype=torch.float16)
    o = kernels.attention_prefill(q, k, v, causal=True, sm_scale=0.3)
    check(o, attention_prefill_ref(q, k, v, True, sm_scale=0.3), torch.float16, seed)


def test_causal_first_row_is_v0():
    q, k, v = _inputs(1, 2, 1, 21, 64, torch.float32)
    o = kernels.attention_prefill(q, k, v, causal=True)
    torch.testing.assert_close(o[:, :, 0], v[:, [0, 0], 0], rtol=1e-5, atol=1e-5)


def _bad_cases():
    q, k, v = _inputs(1, 4, 2, 9, 64, torch.float16)
    yield (q, k[:, :1].expand(1, 3, 9, 64), v[:, :1].expand(1, 3, 9, 64)), {}, "k"  # 4 % 3 != 0
    yield _inputs(1, 2, 1, 9, 8, torch.float16), {}, "q"  # head_dim 8
    yield _inputs(1, 2, 1, 9, 320, torch.float16), {}, "q"  # head_dim 320
    yield (q, k, torch.randn(1, 2, 9, 512, dtype=torch.float16)), {}, "v"  # value head 512
    yield (q, k.float(), v), {}, "k"
    yield (q, k, v[:, :, :8]), {}, "v"
    yield (q, k[:, :, :8], v[:, :, :8]), {}, "k"
    yield (q.transpose(2, 3).contiguous().transpose(2, 3), k, v), {}, "q"  # innermost stride != 1
    yield (q, k, v), {"sm_scale": -1.0}, "sm_scale"
    yield (q, k, v), {"sm_scale": math.nan}, "sm_scale"
    yield (q[0], k, v), {}, "q"


@pytest.mark.parametrize("args,kw,name", list(_bad_cases()))
def test_bad_input_names_the_argument(args, kw, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        kernels.attention_prefill(*args, **kw)


def test_counts_causal_half():
    op = {
        "op": "attention",
        "phase": "prefill",
        "batch": 2,
        "q_len": 9,
        "kv_len": 9,
        "q_heads": 4,
        "kv_heads": 2,
        "head_dim": 64,
        "causal": True,
        "dtype": "bf16",
    }
    mask_pairs = int(torch.tril(torch.ones(9, 9)).sum())
    assert mask_pairs == 9 * 10 // 2
    assert kernels.attention_prefill.flops(op) == 4 * 2 * 4 * 64 * mask_pairs
    assert kernels.attention_prefill.flops({**op, "causal": False}) == 4 * 2 * 4 * 64 * 81
    assert kernels.attention_prefill.bytes_moved(op) == 2 * (2 * 2 * 2 * 9 * 64 + 2 * 2 * 4 * 9 * 64)


def test_gpu_configs_by_head_size():
    # heads up to 128 keep the configurations they were tuned with; wider heads get those that fit
    import sys

    m = sys.modules["perfmodel.kernels.attention_prefill"]
    every = m._GPU_CONFIGS + m._WIDE_GPU_CONFIGS

    def offered(d, dv):
        a, b = kernels._common.split_head_dim(d)
        return m.configs_for_head(
            every, {}, HEAD_DIM=a, HEAD_DIM_B=b, HEAD_DIM_V=max(16, 1 << (dv - 1).bit_length())
        )

    for d in (32, 64, 80, 96, 128):
        assert offered(d, d) == m._GPU_CONFIGS
    for d, dv in ((192, 128), (256, 256), (128, 256)):
        assert offered(d, dv) == m._WIDE_GPU_CONFIGS
