"""RoPE and KV append in one kernel, as serving engines run them (one pass over the QKV rows).

``rope_qkv_cache(qkv, cos, sin, k_cache, v_cache, pos, q_heads, kv_heads)`` reads the fused QKV
projection ``qkv [B, n, Hq + 2 Hkv, D]`` of ``n`` new tokens at positions ``pos .. pos+n-1``,
rotates the query and key heads (rotate-half RoPE with the tables ``cos, sin [max_len, D]``),
writes the rotated keys and the values into the caches ``[B, Hkv, max_len, D]`` at those
positions, and returns the rotated queries as a ``[B, Hq, n, D]`` view of token-major storage
``[B, n, Hq, D]``: the layout engines keep, so attention writes its output token-major and the output
projection reads it without a copy. Decode steps (fewer than ``BLOCK_FROM_TOKENS`` new tokens a
sequence) run one program per (token, head); prefill runs programs of ``BLOCK_TOKENS`` tokens that
load the tables' rows once and rotate ``BLOCK_HEADS`` heads with them. The model prices the kernel as the
``rope`` and ``kv_append`` ops of :func:`perfmodel.layers.model_ops`.
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


@triton.jit
def _rope_cache_block_kernel(QKV, COS, SIN, Q, KC, VC, n, pos0, max_len,
                             HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, HALF: tl.constexpr,
                             BT: tl.constexpr, HPB: tl.constexpr):
    """Program (token block, head group): ``BT`` tokens of one sequence, ``HPB`` heads in turn.

    The tables' rows of the block are loaded once and serve every head of the group, and each head's
    rows are moved as one ``[BT, D]`` tile: the prefill path (many new tokens).
    """
    blocks = tl.cdiv(n, BT)
    b = (tl.program_id(0) // blocks).to(tl.int64)
    t = (tl.program_id(0) % blocks) * BT + tl.arange(0, BT)
    offs = tl.arange(0, HALF)
    tmask = t < n
    mask = tmask[:, None] & (offs < D // 2)[None, :]
    p = (pos0 + t)[:, None] * D + offs[None, :]
    c1 = tl.load(COS + p, mask=mask)
    s1 = tl.load(SIN + p, mask=mask)
    c2 = tl.load(COS + p + D // 2, mask=mask)
    s2 = tl.load(SIN + p + D // 2, mask=mask)
    rows = (b * n + t).to(tl.int64)
    cache_rows = (pos0 + t).to(tl.int64)
    for i in range(HPB):
        head = tl.program_id(1) * HPB + i
        if head < HQ + 2 * HKV:
            src = QKV + (rows * (HQ + 2 * HKV) + head)[:, None] * D + offs[None, :]
            x1 = tl.load(src, mask=mask).to(tl.float32)
            x2 = tl.load(src + D // 2, mask=mask).to(tl.float32)
            if head < HQ + HKV:
                y1 = x1 * c1 - x2 * s1
                y2 = x2 * c2 + x1 * s2
                if head < HQ:
                    dst = Q + (rows * HQ + head)[:, None] * D + offs[None, :]
                else:
                    dst = KC + ((b * HKV + head - HQ) * max_len + cache_rows)[:, None] * D + offs[None, :]
            else:
                y1 = x1
                y2 = x2
                dst = VC + ((b * HKV + head - HQ - HKV) * max_len + cache_rows)[:, None] * D + offs[None, :]
            tl.store(dst, y1.to(dst.dtype.element_ty), mask=mask)
            tl.store(dst + D // 2, y2.to(dst.dtype.element_ty), mask=mask)


#: new tokens a sequence from which the blocked kernel runs (prefill); below it one program per (token, head)
BLOCK_FROM_TOKENS = 16
#: tokens and heads one program of the blocked kernel moves
BLOCK_TOKENS = 32
BLOCK_HEADS = 4


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
    half = triton.next_power_of_2(d // 2)
    if n >= BLOCK_FROM_TOKENS:
        grid = (b * triton.cdiv(n, BLOCK_TOKENS), triton.cdiv(heads, BLOCK_HEADS))
        _rope_cache_block_kernel[grid](qkv, cos, sin, q, k_cache, v_cache, n, pos, max_len,
                                       HQ=q_heads, HKV=kv_heads, D=d, HALF=half,
                                       BT=BLOCK_TOKENS, HPB=BLOCK_HEADS)
    else:
        _rope_cache_kernel[(b * n, heads)](qkv, cos, sin, q, k_cache, v_cache, n, pos, max_len,
                                           HQ=q_heads, HKV=kv_heads, D=d, HALF=half)
    return q.transpose(1, 2)
