"""Decode over the caches of the general split-KV kernel: head sizes other than 64/128, V heads of
their own size, fp8 caches, and MLA's latent cache."""

import math

import pytest
import torch

from perfmodel import kernels
from perfmodel.kernels.reference import (
    attention_decode_mla_ref,
    attention_decode_paged_ref,
    attention_decode_ref,
    dequantize_fp8_ref,
    quantize_fp8,
)

#: (D, Dv, Hq, Hkv): every head size with a GQA ratio; 192/128 as DeepSeek's attention before
#: weight absorption
HEAD_CASES = [
    (32, 32, 4, 2),
    (80, 80, 6, 2),
    (96, 96, 7, 1),
    (192, 128, 4, 4),
    (256, 256, 4, 2),
    (128, 64, 8, 1),
]


def _contiguous(b, hq, hkv, d, dv, lmax, dtype):
    q = torch.randn(b, hq, d).to(dtype)
    k = torch.randn(b, hkv, lmax, d).to(dtype)
    v = torch.randn(b, hkv, lmax, dv).to(dtype)
    return q, k, v


def _pages(nb, hkv, page, d, dtype):
    return torch.randn(nb, hkv, page, d).to(dtype)


def _table(lens, page, spare=2):
    max_blocks = -(-max(lens) // page) + 1  # one unused column
    nb = len(lens) * max_blocks + spare
    return torch.randperm(nb)[: len(lens) * max_blocks].reshape(len(lens), max_blocks).to(torch.int32), nb


@pytest.mark.parametrize("d,dv,hq,hkv", HEAD_CASES)
def test_head_sizes_contiguous_and_paged(d, dv, hq, hkv, seed, check, poisoned):
    lens = [37, 1, 20]  # ragged, odd, a single key
    kv_lens = torch.tensor(lens, dtype=torch.int32)
    q, k, v = _contiguous(3, hq, hkv, d, dv, 40, torch.float16)
    for i, n in enumerate(lens):  # cache rows past a sequence's length must not be read
        k[i, :, n:] = float("nan")
        v[i, :, n:] = float("nan")
    ref = attention_decode_ref(q, k, v, kv_lens)
    with poisoned():
        o = kernels.attention_decode(q, k, v, kv_lens, num_splits=3)
    assert o.shape == (3, hq, dv) and o.dtype == q.dtype
    check(o, ref, torch.float16, seed, f"contiguous D={d} Dv={dv}")
    table, nb = _table(lens, 5)
    kp, vp = _pages(nb, hkv, 5, d, torch.float16), _pages(nb, hkv, 5, dv, torch.float16)
    with poisoned():
        o = kernels.attention_decode_paged(q, kp, vp, table, kv_lens)
    check(
        o, attention_decode_paged_ref(q, kp, vp, table, kv_lens), torch.float16, seed, f"paged D={d} Dv={dv}"
    )
    if d == dv == 256:  # a size of the split-KV/stream-K kernels: the stream-K schedule too
        with poisoned():
            o = kernels.attention_decode(q, k, v, kv_lens, schedule="stream_k")
        check(o, ref, torch.float16, seed, "stream_k D=256")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_other_dtypes(dtype, seed, check, poisoned):
    q, k, v = _contiguous(2, 4, 2, 80, 48, 29, dtype)
    kv_lens = torch.tensor([29, 11], dtype=torch.int32)
    with poisoned():
        o = kernels.attention_decode(q, k, v, kv_lens, sm_scale=0.2)
    check(o, attention_decode_ref(q, k, v, kv_lens, sm_scale=0.2), dtype, seed)


@pytest.mark.parametrize("d,per_head", [(128, True), (96, False)])
def test_fp8_cache_matches_the_dequantised_reference(d, per_head, seed, check, poisoned):
    lens = [45, 3, 30]
    kv_lens = torch.tensor(lens, dtype=torch.int32)
    q, k, v = _contiguous(3, 8, 2, d, d, 45, torch.bfloat16)
    k = k * torch.tensor([1.0, 30.0])[None, :, None, None]  # kv heads of unequal range
    kq, ks = quantize_fp8(k, per_head)
    vq, vs = quantize_fp8(v, per_head)
    assert kq.dtype == torch.float8_e4m3fn and ks.shape == ((2,) if per_head else (1,))
    ref = attention_decode_ref(q, dequantize_fp8_ref(kq, ks), dequantize_fp8_ref(vq, vs), kv_lens)
    with poisoned():
        o = kernels.attention_decode(q, kq, vq, kv_lens, k_scale=ks, v_scale=vs)
    assert o.dtype == torch.bfloat16
    check(o, ref, torch.bfloat16, seed, f"fp8 contiguous per_head={per_head}")
    # paged: the same cache cut into pages of 4 tokens
    table, nb = _table(lens, 4)
    kp = torch.zeros(nb, 2, 4, d).to(torch.float8_e4m3fn)
    vp = torch.zeros(nb, 2, 4, d).to(torch.float8_e4m3fn)
    for b, n in enumerate(lens):
        for j in range(-(-n // 4)):
            rows = slice(4 * j, min(4 * j + 4, n))
            kp[table[b, j], :, : rows.stop - rows.start] = kq[b, :, rows]
            vp[table[b, j], :, : rows.stop - rows.start] = vq[b, :, rows]
    with poisoned():
        o = kernels.attention_decode_paged(q, kp, vp, table, kv_lens, k_scale=ks, v_scale=vs)
    check(o, ref, torch.bfloat16, seed, f"fp8 paged per_head={per_head}")


@pytest.mark.parametrize("magnitude", [1.0, 3e5, 1e-3])
def test_fp8_cache_under_bf16_q_of_any_magnitude(magnitude, seed, check, poisoned):
    # a bf16 q over an fp8 cache takes the products in fp16: q beyond fp16's range (65504) is
    # scaled by a power of two first, and tiny q keeps its bits (no inf, no NaN, no lost scores)
    q, k, v = _contiguous(2, 8, 2, 128, 128, 33, torch.bfloat16)
    q = (q.float() * magnitude).to(torch.bfloat16)
    kv_lens = torch.tensor([33, 17], dtype=torch.int32)
    kq, ks = quantize_fp8(k, True)
    vq, vs = quantize_fp8(v, True)
    sm_scale = 1.0 / (magnitude * math.sqrt(128))
    ref = attention_decode_ref(
        q, dequantize_fp8_ref(kq, ks), dequantize_fp8_ref(vq, vs), kv_lens, sm_scale=sm_scale
    )
    with poisoned():
        o = kernels.attention_decode(q, kq, vq, kv_lens, k_scale=ks, v_scale=vs, sm_scale=sm_scale)
    assert torch.isfinite(o).all()
    check(o, ref, torch.bfloat16, seed, f"fp8 under q of magnitude {magnitude}")


def test_fp8_scales_are_applied(seed):
    # the same bytes with scales 1 and 2 must not give the same attention
    q, k, v = _contiguous(1, 4, 1, 64, 64, 16, torch.float32)
    kv_lens = torch.tensor([16], dtype=torch.int32)
    kq, vq = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
    one = kernels.attention_decode(q, kq, vq, kv_lens)
    two = kernels.attention_decode(q, kq, vq, kv_lens, v_scale=torch.tensor([2.0]))
    torch.testing.assert_close(two, 2 * one, rtol=1e-5, atol=1e-5)
    sharp = kernels.attention_decode(q, kq, vq, kv_lens, k_scale=torch.tensor(4.0))
    ref = attention_decode_ref(q, kq.double() * 4, vq.double(), kv_lens)
    torch.testing.assert_close(sharp.double(), ref, rtol=1e-4, atol=1e-4)


def _mla_inputs(b, heads, r, p, page, lens, dtype):
    table, nb = _table(lens, page)
    latent = torch.randn(nb, page, r + p).to(dtype)
    q = torch.randn(b, heads, r + p).to(dtype)
    return q, latent, table, torch.tensor(lens, dtype=torch.int32)


def test_mla_small_dims(seed, check, poisoned):
    # 32 heads (two programs of 16 heads each), a ragged paged latent of 64 + 16 per token
    q, latent, table, kv_lens = _mla_inputs(3, 32, 64, 16, 8, [33, 1, 17], torch.float16)
    scale = 1 / math.sqrt(24)
    with poisoned():
        o = kernels.attention_decode_mla(
            q, latent, table, kv_lens, kv_lora_rank=64, sm_scale=scale, num_splits=2
        )
    assert o.shape == (3, 32, 64)
    check(o, attention_decode_mla_ref(q, latent, table, kv_lens, 64, scale), torch.float16, seed)


def test_mla_deepseek_dims(seed, check, poisoned):
    # DeepSeek-V2/V3: latent 512 + 64, output 512 per head; a tiny cache
    q, latent, table, kv_lens = _mla_inputs(2, 16, 512, 64, 4, [9, 5], torch.bfloat16)
    scale = 1 / math.sqrt(192)
    with poisoned():
        o = kernels.attention_decode_mla(q, latent, table, kv_lens, sm_scale=scale)
    assert o.shape == (2, 16, 512)
    check(o, attention_decode_mla_ref(q, latent, table, kv_lens, 512, scale), torch.bfloat16, seed)


def test_mla_fp8_latent(seed, check, poisoned):
    q, latent, table, kv_lens = _mla_inputs(2, 16, 64, 32, 4, [13, 6], torch.bfloat16)
    lq, ls = quantize_fp8(latent[:, None], per_head=False)
    lq = lq[:, 0]
    with poisoned():
        o = kernels.attention_decode_mla(q, lq, table, kv_lens, kv_lora_rank=64, latent_scale=ls)
    ref = attention_decode_mla_ref(q, lq.double() * ls.double(), table, kv_lens, 64)
    check(o, ref, torch.bfloat16, seed)


def _bad_cases():
    q, k, v = _contiguous(2, 4, 2, 80, 80, 9, torch.float16)
    lens = torch.tensor([9, 4], dtype=torch.int32)
    f8 = k.to(torch.float8_e4m3fn)
    yield (q, k, v, lens), {"schedule": "stream_k"}, "schedule"
    yield (q, k, v, lens), {"k_scale": torch.tensor([1.0])}, "k_scale"  # a float cache
    yield (q, f8, v.to(torch.float8_e4m3fn), lens), {"k_scale": torch.ones(3)}, "k_scale"
    yield (q, f8, v.to(torch.float8_e4m3fn), lens), {"k_scale": torch.ones(1, dtype=torch.float64)}, "k_scale"
    yield (
        (q, f8, v.to(torch.float8_e4m3fn), lens),
        {"k_scale": torch.ones(2), "v_scale": torch.ones(1)},
        "v_scale",
    )
    yield (q, f8, v, lens), {}, "v_cache"  # formats differ
    yield (q, k, v[:, :, :8], lens), {}, "v_cache"
    yield (q, k, torch.randn(2, 2, 9, 512).half(), lens), {}, "v_cache"  # value head 512
    yield (q[..., :64], k, v, lens), {}, "q"
    yield (q.float(), k, v, lens), {}, "k_cache"
    yield (q, k, v, torch.tensor([10, 4], dtype=torch.int32)), {}, "kv_lens"


@pytest.mark.parametrize("args,kw,name", list(_bad_cases()))
def test_bad_input_names_the_argument(args, kw, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        kernels.attention_decode(*args, **kw)


def _bad_mla_cases():
    q, latent, table, lens = _mla_inputs(2, 16, 64, 16, 4, [9, 5], torch.float16)
    yield (q, latent, table, lens), {"kv_lora_rank": 32}, "kv_lora_rank"
    yield (q, latent, table, lens), {}, "kv_lora_rank"  # default 512 against a latent of 80
    yield (q, latent, table, lens), {"kv_lora_rank": 64, "latent_scale": torch.tensor([1.0])}, "latent_scale"
    yield (q[..., :64], latent, table, lens), {"kv_lora_rank": 64}, "q"
    yield (q.float(), latent, table, lens), {"kv_lora_rank": 64}, "latent_pages"
    yield (q, latent, table, torch.tensor([9, 99], dtype=torch.int32)), {"kv_lora_rank": 64}, "kv_lens"
    yield (q, latent[:, None], table, lens), {"kv_lora_rank": 64}, "latent_pages"


@pytest.mark.parametrize("args,kw,name", list(_bad_mla_cases()))
def test_bad_mla_input_names_the_argument(args, kw, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        kernels.attention_decode_mla(*args, **kw)


def test_counts_fp8_and_mla():
    op = {
        "op": "attention",
        "phase": "decode",
        "batch": 3,
        "q_len": 1,
        "kv_len": 1000,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 96,
        "dtype": "bf16",
    }
    fp8 = {**op, "kv_dtype": "fp8"}
    kv_elems = 3 * 8 * 1000 * 2 * 96
    qo_bytes = 2 * 3 * 32 * 96 * 2
    assert kernels.attention_decode.bytes_moved(op) == 2 * kv_elems + qo_bytes
    assert kernels.attention_decode.bytes_moved(fp8) == kv_elems + qo_bytes  # 1 byte per cache element
    assert kernels.attention_decode.flops(fp8) == kernels.attention_decode.flops(op) == 4 * 3 * 32 * 96 * 1000
    mla = {
        "op": "attention",
        "phase": "decode",
        "batch": 2,
        "q_len": 1,
        "kv_len": 4096,
        "q_heads": 16,
        "kv_heads": 1,
        "head_dim": 576,
        "v_head_dim": 512,
        "kv_shared": True,
        "dtype": "bf16",
    }
    assert kernels.attention_decode_mla.flops(mla) == 2 * 2 * 16 * (576 + 512) * 4096
    # the latent row read once (not K and V apart), q in and the output out
    assert kernels.attention_decode_mla.bytes_moved(mla) == 2 * 4096 * 576 * 2 + 2 * 16 * (576 + 512) * 2
    assert kernels.attention_decode_mla.bytes_moved({**mla, "kv_dtype": "fp8"}) == (
        2 * 4096 * 576 + 2 * 16 * (576 + 512) * 2
    )
