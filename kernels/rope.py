"""RoPE and KV append in one kernel, as serving engines run them (one pass over the QKV rows).

``rope_qkv_cache(qkv, cos, sin, k_cache, v_cache, pos, q_heads, kv_heads)`` reads the fused QKV
projection ``qkv [B, n, Hq + 2 Hkv, D]`` of ``n`` new tokens at positions ``pos .. pos+n-1``,
rotates the query and key heads (rotate-half RoPE with the tables ``cos, sin [max_len, D]``),
writes the rotated keys and the values into the caches ``[B, Hkv, max_len, D]`` at those
positions, and returns the rotated queries as a ``[B, Hq, n, D]`` view of token-major storage
``[B, n, Hq, D]``: the layout engines keep, so attention writes its output token-major and the output
projection reads it without a copy. One program per (token, head); the model prices it as the ``rope`` and ``kv_append`` ops of
:func:`perfmodel.layers.model_ops`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import KernelInputError, check_same_device, check_tensor

__all__ = ["rope_qkv_cache"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _rope_cache_kernel(QKV, COS, SIN, Q, KC, VC, n, pos0, max_len,
                       HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, HALF: tl.constexpr):
    """Program (row, head): row = b * n + t of the new tokens, head in [0, HQ + 2 HKV)."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    b = row // n
    t = row % n
    offs = tl.arange(0, HALF)
    mask = offs < D // 2
    src = QKV + (row * (HQ + 2 * HKV) + head) * D
    x1 = tl.load(src + offs, mask=mask).to(tl.float32)
    x2 = tl.load(src + D // 2 + offs, mask=mask).to(tl.float32)
    if head < HQ + HKV:
        p = (pos0 + t) * D
        c1 = tl.load(COS + p + offs, mask=mask)
        s1 = tl.load(SIN + p + offs, mask=mask)
        c2 = tl.load(COS + p + D // 2 + offs, mask=mask)
        s2 = tl.load(SIN + p + D // 2 + offs, mask=mask)
        y1 = x1 * c1 - x2 * s1
        y2 = x2 * c2 + x1 * s2
        if head < HQ:
            dst = Q + (row * HQ + head) * D
        else:
            dst = KC + ((b * HKV + head - HQ) * max_len + pos0 + t) * D
    else:
        y1 = x1
        y2 = x2
        dst = VC + ((b * HKV + head - HQ - HKV) * max_len + pos0 + t) * D
    tl.store(dst + offs, y1.to(dst.dtype.element_ty), mask=mask)
    tl.store(dst + D // 2 + offs, y2.to(dst.dtype.element_ty), mask=mask)


def rope_qkv_cache(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, pos: int, q_heads: int, kv_heads: int) -> torch.Tensor:
    """Rotated queries ``[B, Hq, n, D]`` (a transposed view of ``[B, n, Hq, D]``); rotated keys and the values written into the caches.

    Parameters
    ----------
    qkv : tensor ``[B, n, Hq + 2 Hkv, D]``, contiguous (the fused QKV projection of the new tokens)
    cos, sin : tensors ``[max_len, D]``, float32, contiguous (rotate-half tables: row p for position p)
    k_cache, v_cache : tensors ``[B, Hkv, max_len, D]``, contiguous, of ``qkv``'s dtype
    pos : int, position of the first new token
    q_heads, kv_heads : int, query and key/value heads
    """
    check_tensor("qkv", qkv, 4, _DTYPES)
    check_tensor("k_cache", k_cache, 4, _DTYPES)
    check_tensor("v_cache", v_cache, 4, _DTYPES)
    check_same_device(qkv=qkv, cos=cos, sin=sin, k_cache=k_cache, v_cache=v_cache)
    b, n, heads, d = qkv.shape
    if heads != q_heads + 2 * kv_heads:
        raise KernelInputError(f"qkv: {heads} heads, expected q_heads + 2 * kv_heads = {q_heads + 2 * kv_heads}")
    if d % 2:
        raise KernelInputError(f"qkv: head size {d} must be even for rotate-half RoPE")
    max_len = k_cache.shape[2]
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        if tuple(c.shape) != (b, kv_heads, max_len, d) or c.dtype != qkv.dtype:
            raise KernelInputError(f"{name}: expected {(b, kv_heads, max_len, d)} of {qkv.dtype}, "
                                   f"got {tuple(c.shape)} of {c.dtype}")
    for name, tab in (("cos", cos), ("sin", sin)):
        if tab.dim() != 2 or tab.shape[1] != d or tab.dtype != torch.float32 or not tab.is_contiguous():
            raise KernelInputError(f"{name}: expected a contiguous float32 [max_len, {d}] table, "
                                   f"got {tuple(tab.shape)} of {tab.dtype}")
    if not 0 <= pos or pos + n > min(max_len, cos.shape[0], sin.shape[0]):
        raise KernelInputError(f"pos: positions {pos}..{pos + n - 1} do not fit the cache ({max_len}) "
                               f"and tables ({cos.shape[0]})")
    if not (qkv.is_contiguous() and k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise KernelInputError("qkv, k_cache and v_cache must be contiguous")
    q = torch.empty((b, n, q_heads, d), device=qkv.device, dtype=qkv.dtype)
    if b * n == 0:
        return q.transpose(1, 2)
    _rope_cache_kernel[(b * n, heads)](qkv, cos, sin, q, k_cache, v_cache, n, pos, max_len,
                                       HQ=q_heads, HKV=kv_heads, D=d, HALF=triton.next_power_of_2(d // 2))
    return q.transpose(1, 2)
