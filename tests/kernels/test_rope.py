"""kernels.rope_qkv_cache against the rotate-half RoPE and cache writes in plain PyTorch."""

import pytest
import torch

from perfmodel.kernels import KernelInputError, rope_qkv_cache


def _tables(max_len: int, d: int):
    inv = 1.0 / (10_000.0 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    ang = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos().contiguous(), ang.sin().contiguous()


def _rope_ref(x, cos, sin):
    x1, x2 = x.float().chunk(2, dim=-1)
    return x.float() * cos + torch.cat((-x2, x1), dim=-1) * sin


@pytest.mark.parametrize(
    "b,n,pos,hq,hkv,d",
    [
        (2, 5, 0, 4, 2, 16),
        (1, 1, 7, 3, 3, 96),
        (3, 2, 4, 6, 1, 24),
        # the blocked prefill kernel: a partial token block, head groups cut by the head count, D 96 and 80
        (2, 37, 3, 5, 1, 96),
        (1, 64, 0, 8, 8, 80),
        (2, 16, 9, 3, 2, 16),
    ],
)
def test_matches_rotate_half_and_writes_the_cache(b, n, pos, hq, hkv, d):
    torch.manual_seed(0)
    max_len = pos + n + 3
    cos, sin = _tables(max_len, d)
    qkv = torch.randn(b, n, hq + 2 * hkv, d, dtype=torch.bfloat16)
    kc = torch.zeros(b, hkv, max_len, d, dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    q = rope_qkv_cache(qkv, cos, sin, kc, vc, pos, hq, hkv)
    c, s = cos[pos : pos + n].view(1, n, 1, d), sin[pos : pos + n].view(1, n, 1, d)
    want_q = _rope_ref(qkv[:, :, :hq], c, s).transpose(1, 2)
    want_k = _rope_ref(qkv[:, :, hq : hq + hkv], c, s).transpose(1, 2)
    assert q.shape == (b, hq, n, d) and q.transpose(1, 2).is_contiguous()  # token-major storage
    torch.testing.assert_close(q.float(), want_q, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(kc[:, :, pos : pos + n].float(), want_k, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(vc[:, :, pos : pos + n], qkv[:, :, hq + hkv :].transpose(1, 2))
    untouched = torch.ones(max_len, dtype=torch.bool)
    untouched[pos : pos + n] = False
    assert not kc[:, :, untouched].any() and not vc[:, :, untouched].any()


def test_refuses_bad_shapes_with_one_line():
    cos, sin = _tables(8, 16)
    qkv = torch.randn(1, 2, 4, 16, dtype=torch.bfloat16)
    kc = torch.zeros(1, 1, 8, 16, dtype=torch.bfloat16)
    with pytest.raises(KernelInputError, match="q_heads"):
        rope_qkv_cache(qkv, cos, sin, kc, kc.clone(), 0, 3, 1)
    with pytest.raises(KernelInputError, match="pos"):
        rope_qkv_cache(qkv, cos, sin, kc, kc.clone(), 7, 2, 1)
