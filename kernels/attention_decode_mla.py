"""MLA decode (DeepSeek-V2/V3, weight-absorbed form) over a paged latent cache.

Each token stores one latent row of ``R + P`` elements (``R = kv_lora_rank`` compressed KV, 512
in DeepSeek-V2/V3, then the ``P`` = 64 rotary key elements), shared by all query heads. A query
head (``q_nope`` already multiplied by the absorbed ``W_UK``, then ``q_pe``) is ``R + P`` wide; the
score is ``q . latent`` and the output ``softmax . latent[:, :R]``, ``R`` per head (``W_UV`` and the
output projection follow outside). Pages ``[num_blocks, page_size, R + P]`` (vLLM's layout);
``block_table`` as in :func:`perfmodel.kernels.attention_decode_paged`.

The split-KV kernel of :mod:`perfmodel.kernels._decode_general` runs it: the score in two parts (``R`` and
``P`` lanes), the value tile taken from the key tile in registers, so each latent row is read once
per program of 16 query heads; an fp8 (e4m3) latent cache with a float32 scale is dequantised in
the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping

import math

import torch

from perfmodel.ops import Attention

from . import _counts
from . import _decode_general as _dg
from ._common import (
    KV_DTYPES,
    KernelInputError,
    check_last_dim_contiguous,
    check_same_device,
    check_tensor,
    split_head_dim,
)
from .attention_decode import _check_num_splits, check_lens_values, check_q_and_lens
from .attention_decode_paged import _check_table_values

__all__ = ["MAX_LATENT_DIM", "attention_decode_mla", "bytes_moved", "flops"]

#: widest latent row (R + P) taken
MAX_LATENT_DIM = 1024


def _check(q, latent_pages, block_table, kv_lens, kv_lora_rank, sm_scale, latent_scale) -> None:
    check_tensor("latent_pages", latent_pages, 3, KV_DTYPES)
    check_last_dim_contiguous("latent_pages", latent_pages)
    check_tensor("block_table", block_table, 2, (torch.int32, torch.int64))
    check_same_device(latent_pages=latent_pages, block_table=block_table)
    if block_table.stride(1) != 1:
        raise KernelInputError(f"block_table: innermost stride is {block_table.stride(1)}; need 1")
    d = latent_pages.shape[2]
    check_q_and_lens(q, kv_lens, 1, d, block_table.shape[0], latent_pages.device, MAX_LATENT_DIM)
    if isinstance(kv_lora_rank, bool) or not isinstance(kv_lora_rank, int) or kv_lora_rank < 16:
        raise KernelInputError(f"kv_lora_rank: expected an int >= 16, got {kv_lora_rank!r}")
    if split_head_dim(d)[0] != kv_lora_rank or kv_lora_rank > 512:
        raise KernelInputError(
            f"kv_lora_rank: {kv_lora_rank} must be a power of two up to 512, greater than the rotary part "
            f"(latent row of {d} = kv_lora_rank + rope dim)"
        )
    if latent_pages.dtype == torch.float8_e4m3fn:
        if latent_scale is not None:
            _dg.check_scale("latent_scale", latent_scale, 1, latent_pages.device)
    else:
        if latent_pages.dtype != q.dtype:
            raise KernelInputError(f"latent_pages: dtype {latent_pages.dtype} differs from q's {q.dtype}")
        if latent_scale is not None:
            raise KernelInputError("latent_scale: given for a float cache; it applies to an fp8 cache only")
    if sm_scale is not None and not (
        isinstance(sm_scale, (int, float)) and math.isfinite(sm_scale) and sm_scale > 0
    ):
        raise KernelInputError(f"sm_scale: expected a positive finite number, got {sm_scale!r}")


def attention_decode_mla(
    q: torch.Tensor,
    latent_pages: torch.Tensor,
    block_table: torch.Tensor,
    kv_lens: torch.Tensor,
    kv_lora_rank: int = 512,
    num_splits: int | None = None,
    sm_scale: float | None = None,
    validate: bool = True,
    latent_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one new token per sequence over its paged MLA latent cache.

    Parameters
    ----------
    q : torch.Tensor, shape [B, H, R + P]
        fp16, bf16 or fp32: each head's absorbed ``q_nope`` (``R`` elements) then ``q_pe``
        (``P``); innermost stride 1.
    latent_pages : torch.Tensor, shape [num_blocks, page_size, R + P]
        q's dtype, or fp8 (``torch.float8_e4m3fn``); innermost stride 1.
    block_table : torch.Tensor, shape [B, max_blocks], int32 or int64
        Page indices of each sequence; entries past a sequence's length are not read.
    kv_lens : torch.Tensor, shape [B], int32 or int64
        Tokens of each sequence, in ``[1, max_blocks * page_size]``.
    kv_lora_rank : int
        ``R``: a power of two up to 512, greater than ``P``; 512 in DeepSeek-V2/V3.
    num_splits : int, optional
        KV chunks per sequence; default about two programs per SM.
    sm_scale : float, optional
        Default ``1/sqrt(R + P)``; DeepSeek's models use ``1/sqrt(qk_nope_head_dim +
        qk_rope_head_dim)`` (times their YaRN factor), so pass it.
    validate : bool
        Check ``kv_lens`` and the used ``block_table`` entries on the host (a device sync).
    latent_scale : torch.Tensor, optional
        An fp8 cache's float32 scale (one element): the cache holds ``latent / latent_scale``.

    Returns
    -------
    torch.Tensor, shape [B, H, R], dtype of ``q``

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument.
    """
    _check_num_splits(num_splits)
    _check(q, latent_pages, block_table, kv_lens, kv_lora_rank, sm_scale, latent_scale)
    num_blocks, page_size, _ = latent_pages.shape
    max_len = block_table.shape[1] * page_size
    if validate:
        check_lens_values(kv_lens, max_len)
        _check_table_values(block_table, kv_lens, page_size, num_blocks)
    lay = (latent_pages.stride(0), 0, latent_pages.stride(1))
    return _dg.launch(
        q, latent_pages, latent_pages, (lay, lay), 1, kv_lora_rank, kv_lens, (block_table, page_size), max_len,
        num_splits, sm_scale, (latent_scale, latent_scale, 0), v_from_k=True,
    )


def flops(op: Attention | Mapping) -> int:
    """FLOPs of an MLA decode ``Attention`` (``head_dim = R + P``, ``v_head_dim = R``,
    ``kv_shared``) or its descriptor: ``2*B*H*(R + P + R)*kv_len``."""
    return _counts.flops(op, Attention)


def bytes_moved(op: Attention | Mapping) -> int:
    """Fewest bytes: each latent row read once (``R + P`` elements of ``kv_dtype``), q read and
    the output written."""
    return _counts.bytes_moved(op, Attention)


attention_decode_mla.flops = flops
attention_decode_mla.bytes_moved = bytes_moved
