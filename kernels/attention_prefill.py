"""Causal GQA flash attention forward (FlashAttention-2 style) in Triton.

``q [B,Hq,L,D]``, ``k [B,Hkv,L,D]``, ``v [B,Hkv,L,Dv]``, ``Hq % Hkv == 0``, ``D`` and ``Dv`` from 16
to 256 (tested: :data:`HEAD_DIMS`, and ``D=192, Dv=128``, DeepSeek's attention before weight
absorption), any ``L``. A head size that is not a power of two is taken as two power-of-two parts
(80 = 64 + 16, 192 = 128 + 64; :func:`perfmodel.kernels._common.split_head_dim`) and V rows are padded to a
power of two with masked loads, since ``tl.arange`` needs powers of two. Online softmax in fp32
with base-2 exponentials; under causal masking, key tiles entirely above the diagonal are never
visited and only the tiles that cross the diagonal are masked.
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
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
    KernelInputError,
    check_last_dim_contiguous,
    check_same_device,
    check_tensor,
    interpreting,
    next_pow2,
    split_head_dim,
)
from . import _counts

__all__ = ["HEAD_DIMS", "attention_prefill", "bytes_moved", "flops"]

#: head sizes the tests run; any size from MIN_HEAD_DIM to MAX_HEAD_DIM is taken
HEAD_DIMS = (64, 80, 96, 128, 192, 256)
_LOG2E = 1.4426950408889634


@triton.jit
def _attend_tiles(
    acc,
    l_i,
    m_i,
    q,
    q_b,
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
    HEAD_DIM_B: tl.constexpr,
    D_B: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
    DV: tl.constexpr,
):
    # q: the first HEAD_DIM query/key elements; q_b: the next D_B (padded to HEAD_DIM_B; unused
    # when HEAD_DIM_B is 0); V rows of DV elements padded to HEAD_DIM_V.
    offs_d = tl.arange(0, HEAD_DIM)
    offs_dv = tl.arange(0, HEAD_DIM_V)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        if MASK_KEYS:
            k = tl.load(
                k_base + offs_n[None, :] * s_kn + offs_d[:, None], mask=offs_n[None, :] < L, other=0.0
            )
        else:
            k = tl.load(k_base + offs_n[None, :] * s_kn + offs_d[:, None])
        if DV < HEAD_DIM_V:  # padded value lanes
            v = tl.load(
                v_base + offs_n[:, None] * s_vn + offs_dv[None, :],
                mask=(offs_n[:, None] < L) & (offs_dv[None, :] < DV),
                other=0.0,
            )
        elif MASK_KEYS:
            v = tl.load(
                v_base + offs_n[:, None] * s_vn + offs_dv[None, :], mask=offs_n[:, None] < L, other=0.0
            )
        else:
            v = tl.load(v_base + offs_n[:, None] * s_vn + offs_dv[None, :])
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, k, input_precision=PRECISION)
        if HEAD_DIM_B > 0:  # the second part of the query/key head
            offs_db = tl.arange(0, HEAD_DIM_B)
            k_b = tl.load(
                k_base + HEAD_DIM + offs_n[None, :] * s_kn + offs_db[:, None],
                mask=(offs_n[None, :] < L) & (offs_db[:, None] < D_B),
                other=0.0,
            )
            if UPCAST:
                k_b = k_b.to(tl.float32)
            s = tl.dot(q_b, k_b, s, input_precision=PRECISION)
        s = s * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
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
    HEAD_DIM_B: tl.constexpr,
    D_B: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
    DV: tl.constexpr,
):
    # HEAD_DIM (+ D_B padded to HEAD_DIM_B) query/key elements, DV value elements padded to
    # HEAD_DIM_V (see kernels._common.split_head_dim).
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
    q_b = q  # a placeholder when the head is one part
    if HEAD_DIM_B > 0:
        offs_db = tl.arange(0, HEAD_DIM_B)
        q_b = tl.load(
            Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qm + HEAD_DIM + offs_db[None, :],
            mask=(offs_m[:, None] < L) & (offs_db[None, :] < D_B),
            other=0.0,
        )
        if UPCAST:
            q_b = q_b.to(tl.float32)
    k_base = K + b * s_kb + hk * s_kh
    v_base = V + b * s_vb + hk * s_vh
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM_V), dtype=tl.float32)
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
        q_b,
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
        UPCAST,        HEAD_DIM_B,
        D_B,
        HEAD_DIM_V,
        DV,
    )
    acc, l_i, m_i = _attend_tiles(
        acc,
        l_i,
        m_i,
        q,
        q_b,
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
        UPCAST,        HEAD_DIM_B,
        D_B,
        HEAD_DIM_V,
        DV,
    )
    out = acc / l_i[:, None]
    offs_dv = tl.arange(0, HEAD_DIM_V)
    tl.store(
        Out + b * s_ob + h * s_oh + offs_m[:, None] * s_om + offs_dv[None, :],
        out.to(Out.dtype.element_ty),
        mask=(offs_m[:, None] < L) & (offs_dv[None, :] < DV),
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
#: heads wider than 128 (query/key parts together, or V): the configurations that fit the shared
#: memory of an H100 without spilling registers when compiled for sm_90 (head_dim 192/128 and 256)
_WIDE_GPU_CONFIGS = [
    _cfg(128, 64, 2, 8),
    _cfg(128, 32, 2, 8),
    _cfg(128, 32, 3, 8),
    _cfg(64, 32, 3, 4),
]
_INTERPRETER_META = {"BLOCK_M": 32, "BLOCK_N": 16}


def configs_for_head(configs, named_args, **kwargs):
    """The autotuner's configurations for a head: :data:`_GPU_CONFIGS` up to 128 elements,
    :data:`_WIDE_GPU_CONFIGS` beyond."""
    wide = kwargs["HEAD_DIM"] + kwargs["HEAD_DIM_B"] > 128 or kwargs["HEAD_DIM_V"] > 128
    return [c for c in configs if any(c is w for w in _WIDE_GPU_CONFIGS) == wide]


_tuned = triton.autotune(
    configs=_GPU_CONFIGS + _WIDE_GPU_CONFIGS,
    key=["L", "HEAD_DIM", "HEAD_DIM_B", "DV", "CAUSAL"],
    prune_configs_by={"early_config_prune": configs_for_head},
)(_prefill_kernel)


def _check(q, k, v, sm_scale) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, 4, FLOAT_DTYPES)
        check_last_dim_contiguous(name, t)
    check_same_device(q=q, k=k, v=v)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise KernelInputError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
    B, Hq, L, D = q.shape
    for name, d in (("q", D), ("v", v.shape[3])):
        if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
            raise KernelInputError(
                f"{name}: head_dim {d} not supported (expected {MIN_HEAD_DIM} to {MAX_HEAD_DIM})"
            )
    if k.shape[0] != B or k.shape[2] != L or k.shape[3] != D:
        raise KernelInputError(f"k: shape {tuple(k.shape)} does not match q {tuple(q.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise KernelInputError(f"v: shape {tuple(v.shape)} differs from k's {tuple(k.shape)} before the head dim")
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
    k : torch.Tensor, shape [B, Hkv, L, D]
        Same dtype and device as ``q``; query head ``h`` reads kv head ``h // (Hq // Hkv)``.
    v : torch.Tensor, shape [B, Hkv, L, Dv]
        As ``k``; ``Dv`` may differ from ``D`` (16 to 256 each).
    causal : bool
        Query ``i`` attends to keys ``0..i`` only.
    sm_scale : float, optional
        Score scale; default ``1/sqrt(D)``.

    Returns
    -------
    torch.Tensor, shape [B, Hq, L, Dv], dtype of ``q``

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument.
    """
    _check(q, k, v, sm_scale)
    B, Hq, L, D = q.shape
    group = Hq // k.shape[1]
    scale = (1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)) * _LOG2E
    dv = v.shape[3]
    o = torch.empty((B, Hq, L, dv), dtype=q.dtype, device=q.device)
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
    d_a, d_b = split_head_dim(D)
    consts = {
        "HEAD_DIM": d_a,
        "HEAD_DIM_B": d_b,
        "D_B": D - d_a,
        "HEAD_DIM_V": max(MIN_HEAD_DIM, next_pow2(dv)),
        "DV": dv,
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


# `perfmodel.kernels.attention_prefill.flops(op)` works whether `perfmodel.kernels.attention_prefill`
# is the module or the function.
attention_prefill.flops = flops
attention_prefill.bytes_moved = bytes_moved
