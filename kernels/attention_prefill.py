"""Causal GQA flash attention forward (FlashAttention-2 style) in Triton.

``q [B,Hq,L,D]``, ``k, v [B,Hkv,L,D]``, ``Hq % Hkv == 0``, ``D`` in {64, 128}, any ``L``.
Online softmax in fp32 with base-2 exponentials; under causal masking, key tiles entirely above
the diagonal are never visited and only the tiles that cross the diagonal are masked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import triton
import triton.language as tl

from perfmodel.ops import Attention

from ._common import (
    FLOAT_DTYPES,
    KernelInputError,
    check_last_dim_contiguous,
    check_same_device,
    check_tensor,
    interpreting,
)
from . import _counts

__all__ = ["HEAD_DIMS", "attention_prefill", "bytes_moved", "flops"]

HEAD_DIMS = (64, 128)
_LOG2E = 1.4426950408889634


@triton.jit
def _attend_tiles(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    s_kn,
    s_vn,
    offs_m,
    lo,
    hi,
    L,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASK_CAUSAL: tl.constexpr,
    MASK_KEYS: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    offs_d = tl.arange(0, HEAD_DIM)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if MASK_KEYS:
            k = tl.load(
                k_base + offs_n[None, :] * s_kn + offs_d[:, None], mask=offs_n[None, :] < L, other=0.0
            )
            v = tl.load(
                v_base + offs_n[:, None] * s_vn + offs_d[None, :], mask=offs_n[:, None] < L, other=0.0
            )
        else:
            k = tl.load(k_base + offs_n[None, :] * s_kn + offs_d[:, None])
            v = tl.load(v_base + offs_n[:, None] * s_vn + offs_d[None, :])
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, k, input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        if MASK_CAUSAL:
            s = tl.where((offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < L), s, float("-inf"))
        elif MASK_KEYS:
            s = tl.where(offs_n[None, :] < L, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _prefill_kernel(
    Q,
    K,
    V,
    Out,
    qk_scale,
    L,
    Hq,
    GROUP,
    s_qb,
    s_qh,
    s_qm,
    s_kb,
    s_kh,
    s_kn,
    s_vb,
    s_vh,
    s_vn,
    s_ob,
    s_oh,
    s_om,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    # Longest (most key tiles) query blocks first: better balance under causal masking.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // Hq
    h = bh % Hq
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qm + offs_d[None, :],
        mask=offs_m[:, None] < L,
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    k_base = K + b * s_kb + hk * s_kh
    v_base = V + b * s_vb + hk * s_vh
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    if CAUSAL:
        # Key tiles wholly left of this query block need no mask; the rest up to the
        # diagonal are masked; tiles right of the diagonal are skipped.
        mid = (pid_m * BLOCK_M) // BLOCK_N * BLOCK_N
        end = tl.minimum((pid_m + 1) * BLOCK_M, L)
    else:
        # every key tile but a partial last one needs no mask
        mid = L // BLOCK_N * BLOCK_N
        end = L
    acc, l_i, m_i = _attend_tiles(
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        s_kn,
        s_vn,
        offs_m,
        0,
        mid,
        L,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        False,
        False,
        PRECISION,
        UPCAST,
    )
    acc, l_i, m_i = _attend_tiles(
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        s_kn,
        s_vn,
        offs_m,
        mid,
        end,
        L,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        CAUSAL,
        True,
        PRECISION,
        UPCAST,
    )
    out = acc / l_i[:, None]
    tl.store(
        Out + b * s_ob + h * s_oh + offs_m[:, None] * s_om + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=offs_m[:, None] < L,
    )


def _cfg(bm, bn, stages, warps):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_stages=stages, num_warps=warps)


_GPU_CONFIGS = [
    _cfg(128, 64, 3, 8),
    _cfg(128, 128, 3, 8),
    _cfg(128, 64, 4, 4),
    _cfg(64, 64, 4, 4),
    _cfg(128, 32, 4, 4),
]
_INTERPRETER_META = {"BLOCK_M": 32, "BLOCK_N": 16}
_tuned = triton.autotune(configs=_GPU_CONFIGS, key=["L", "HEAD_DIM", "CAUSAL"])(_prefill_kernel)


def _check(q, k, v, sm_scale) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, 4, FLOAT_DTYPES)
        check_last_dim_contiguous(name, t)
    check_same_device(q=q, k=k, v=v)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise KernelInputError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
    B, Hq, L, D = q.shape
    if D not in HEAD_DIMS:
        raise KernelInputError(f"q: head_dim {D} not supported (expected one of {HEAD_DIMS})")
    if k.shape[0] != B or k.shape[2] != L or k.shape[3] != D:
        raise KernelInputError(f"k: shape {tuple(k.shape)} does not match q {tuple(q.shape)}")
    if v.shape != k.shape:
        raise KernelInputError(f"v: shape {tuple(v.shape)} differs from k's {tuple(k.shape)}")
    if Hq % k.shape[1]:
        raise KernelInputError(f"k: q heads {Hq} not a multiple of kv heads {k.shape[1]}")
    if sm_scale is not None and not (
        isinstance(sm_scale, (int, float)) and math.isfinite(sm_scale) and sm_scale > 0
    ):
        raise KernelInputError(f"sm_scale: expected a positive finite number, got {sm_scale!r}")


def attention_prefill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, sm_scale: float | None = None
) -> torch.Tensor:
    """Return ``softmax(q k^T * sm_scale [+ causal mask]) v`` for every query head.

    Parameters
    ----------
    q : torch.Tensor, shape [B, Hq, L, D]
        fp16, bf16 or fp32; innermost stride 1.
    k, v : torch.Tensor, shape [B, Hkv, L, D]
        Same dtype and device as ``q``; query head ``h`` reads kv head ``h // (Hq // Hkv)``.
    causal : bool
        Query ``i`` attends to keys ``0..i`` only.
    sm_scale : float, optional
        Score scale; default ``1/sqrt(D)``.

    Returns
    -------
    torch.Tensor, shape [B, Hq, L, D], dtype of ``q``

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument.
    """
    _check(q, k, v, sm_scale)
    B, Hq, L, D = q.shape
    group = Hq // k.shape[1]
    scale = (1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)) * _LOG2E
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    interp = interpreting()
    args = (
        q,
        k,
        v,
        o,
        scale,
        L,
        Hq,
        group,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *o.stride()[:3],
    )
    consts = {
        "HEAD_DIM": D,
        "CAUSAL": bool(causal),
        "PRECISION": precision,
        "UPCAST": interp and q.dtype == torch.bfloat16,
    }
    if interp:
        grid = (triton.cdiv(L, _INTERPRETER_META["BLOCK_M"]), B * Hq)
        _prefill_kernel[grid](*args, **consts, **_INTERPRETER_META)
    else:

        def grid(meta):
            return (triton.cdiv(L, meta["BLOCK_M"]), B * Hq)

        _tuned[grid](*args, **consts)
    return o


def flops(op: Attention | Mapping) -> int:
    """FLOPs of a prefill core ``Attention`` or its ``{"op": "attention", ...}`` descriptor (unmasked pairs only)."""
    return _counts.flops(op, Attention)


def bytes_moved(op: Attention | Mapping) -> int:
    """Fewest bytes of an ``{"op": "attention", ...}`` descriptor (Q, K, V read, O written once)."""
    return _counts.bytes_moved(op, Attention)


# `kernels.attention_prefill.flops(op)` works whether `kernels.attention_prefill`
# is the module or the function.
attention_prefill.flops = flops
attention_prefill.bytes_moved = bytes_moved
