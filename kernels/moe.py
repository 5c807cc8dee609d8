"""A MoE layer's routing kernels: the token-expert pairs sorted by expert, and the weighted sum of
the expert outputs back in token order.

``moe_align(idx, num_experts)`` sorts the ``P = T * k`` token-expert pairs of ``idx [T, k]`` by
expert by counting, as engines do (vLLM's ``moe_align_block_size``): a per-expert count, a prefix
sum, and a slot per pair taken with an atomic cursor of its expert, in four launches whatever ``P``
(the order of the pairs within one expert is arbitrary; each row's result does not depend on it).

``moe_combine(y, pos, weights)`` reads the expert outputs ``y [P, hidden]`` of the ``P = T * k``
token-expert pairs in the order the grouped GEMMs ran them (sorted by expert), and returns
``out [T, hidden]`` with ``out[t] = sum_j weights[t, j] * y[pos[t, j]]``: ``pos [T, k]`` holds where
token ``t``'s ``j``-th pair landed in ``y``.  It is the un-permute and the top-k sum that engines
run after the second grouped GEMM (vLLM's ``moe_sum``), reading each expert row once and writing
each token row once, accumulating in float32.  The model prices it as the ``expert_combine`` op of
:func:`perfmodel.layers.model_ops`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import FLOAT_DTYPES, KernelInputError, check_same_device, check_tensor

__all__ = ["moe_align", "moe_combine"]

_BLOCK = 1024
_ALIGN_BLOCK = 1024


@triton.jit
def _count_kernel(IDX, COUNTS, pairs, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < pairs
    e = tl.load(IDX + offs, mask=mask, other=0)
    tl.atomic_add(COUNTS + e, tl.full((BLOCK,), 1, tl.int32), mask=mask)


@triton.jit
def _offsets_kernel(COUNTS, OFFS, CURSOR, experts, EP2: tl.constexpr):
    e = tl.arange(0, EP2)
    mask = e < experts
    c = tl.load(COUNTS + e, mask=mask, other=0)
    end = tl.cumsum(c, axis=0)
    tl.store(OFFS + e, end, mask=mask)
    tl.store(CURSOR + e, end - c, mask=mask)


@triton.jit
def _place_kernel(IDX, CURSOR, TOKEN, POS, pairs, K: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < pairs
    e = tl.load(IDX + offs, mask=mask, other=0)
    slot = tl.atomic_add(CURSOR + e, tl.full((BLOCK,), 1, tl.int32), mask=mask)
    tl.store(TOKEN + slot, (offs // K).to(tl.int64), mask=mask)
    tl.store(POS + offs, slot.to(tl.int64), mask=mask)


def moe_align(idx: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of ``idx`` sorted by expert: ``(offs, token, pos)``.

    Parameters
    ----------
    idx : int64 tensor ``[T, k]``, contiguous, values in ``[0, num_experts)`` (each token's experts)
    num_experts : int, at most 4096

    Returns
    -------
    offs : int32 ``[num_experts]``, the cumulative row count up to and including each expert (the
        grouped GEMMs' offsets)
    token : int64 ``[T * k]``, the token of each sorted pair
    pos : int64 ``[T, k]``, where each pair landed among the sorted ones
    """
    check_tensor("idx", idx, 2, (torch.int64,))
    if not isinstance(num_experts, int) or not 1 <= num_experts <= 4096:
        raise KernelInputError(f"num_experts: expected an int in [1, 4096], got {num_experts!r}")
    if not idx.is_contiguous():
        raise KernelInputError("idx must be contiguous")
    t, k = idx.shape
    pairs = t * k
    counts = torch.zeros(num_experts, device=idx.device, dtype=torch.int32)
    offs = torch.empty_like(counts)
    cursor = torch.empty_like(counts)
    token = torch.empty(pairs, device=idx.device, dtype=torch.int64)
    pos = torch.empty((t, k), device=idx.device, dtype=torch.int64)
    grid = (triton.cdiv(pairs, _ALIGN_BLOCK),)
    _count_kernel[grid](idx, counts, pairs, BLOCK=_ALIGN_BLOCK)
    _offsets_kernel[(1,)](counts, offs, cursor, num_experts, EP2=triton.next_power_of_2(num_experts))
    _place_kernel[grid](idx, cursor, token, pos, pairs, K=k, BLOCK=_ALIGN_BLOCK)
    return offs, token, pos


@triton.jit
def _combine_kernel(Y, POS, W, OUT, hidden, K: tl.constexpr, BLOCK: tl.constexpr):
    """Program (token, column block)."""
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in range(K):
        row = tl.load(POS + t * K + j)
        w = tl.load(W + t * K + j).to(tl.float32)
        acc += w * tl.load(Y + row * hidden + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(OUT + t * hidden + cols, acc.to(OUT.dtype.element_ty), mask=mask)


def moe_combine(y: torch.Tensor, pos: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Token rows ``[T, hidden]``: each token's expert rows of ``y`` weighted and summed.

    Parameters
    ----------
    y : tensor ``[P, hidden]``, contiguous, float (expert outputs, one row per token-expert pair)
    pos : int64 tensor ``[T, k]``, contiguous, values in ``[0, P)`` (row of ``y`` of each pair)
    weights : tensor ``[T, k]``, contiguous, float (routing weights)
    """
    check_tensor("y", y, 2, FLOAT_DTYPES)
    check_tensor("weights", weights, 2, FLOAT_DTYPES)
    check_tensor("pos", pos, 2, (torch.int64,))
    check_same_device(y=y, pos=pos, weights=weights)
    if tuple(pos.shape) != tuple(weights.shape):
        raise KernelInputError(f"pos: shape {tuple(pos.shape)} differs from weights' {tuple(weights.shape)}")
    t, k = pos.shape
    if t * k != y.shape[0]:
        raise KernelInputError(f"y: {y.shape[0]} rows, expected tokens * k = {t * k}")
    if not (y.is_contiguous() and pos.is_contiguous() and weights.is_contiguous()):
        raise KernelInputError("y, pos and weights must be contiguous")
    hidden = y.shape[1]
    out = torch.empty((t, hidden), device=y.device, dtype=y.dtype)
    block = min(_BLOCK, triton.next_power_of_2(hidden))
    _combine_kernel[(t, triton.cdiv(hidden, block))](y, pos, weights, out, hidden, K=k, BLOCK=block)
    return out
