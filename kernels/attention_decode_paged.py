"""One-token GQA attention over a paged KV cache (same kernels as :mod:`perfmodel.kernels.attention_decode`).

Pages ``[num_blocks, Hkv, page_size, D]``; ``block_table [B, max_blocks]`` lists the pages of
each sequence in order, so token ``n`` of sequence ``b`` sits in page ``block_table[b, n // page_size]``
at row ``n % page_size``. Any ``page_size`` works (tiles gather rows across pages). Head sizes,
V pages of their own width and fp8 pages as in :func:`perfmodel.kernels.attention_decode`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from perfmodel.decode_schedule import DEFAULT_CONFIG, DecodeConfig, DecodeSchedule
from perfmodel.ops import Attention

from . import _counts
from . import _decode_general as _dg
from ._common import (
    KernelInputError,
    check_same_device,
    check_tensor,
)
from .attention_decode import (
    _check_config,
    _check_num_splits,
    _schedule,
    check_kv_dtype_and_scale,
    check_kv_pair,
    check_lens_values,
    check_q_and_lens,
    general_schedule,
    launch_decode,
    takes_stream_k,
)

__all__ = ["attention_decode_paged", "bytes_moved", "flops"]


def _check_table_values(
    block_table: torch.Tensor, kv_lens: torch.Tensor, page_size: int, num_blocks: int
) -> None:
    """Check that every page a sequence uses is a valid page index (a device sync)."""
    pages_used = (kv_lens.long() + page_size - 1) // page_size
    cols = torch.arange(block_table.shape[1], device=block_table.device)
    used = block_table[cols[None, :] < pages_used[:, None]]
    lo, hi = int(used.min()), int(used.max())
    if lo < 0 or hi >= num_blocks:
        raise KernelInputError(
            f"block_table: used entries must lie in [0, {num_blocks}), got min {lo}, max {hi}"
        )


def attention_decode_paged(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    block_table: torch.Tensor,
    kv_lens: torch.Tensor,
    num_splits: int | None = None,
    schedule: str | DecodeSchedule = "split_kv",
    sm_scale: float | None = None,
    validate: bool = True,
    config: DecodeConfig = DEFAULT_CONFIG,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one new token per sequence over a paged KV cache.

    Parameters
    ----------
    q : torch.Tensor, shape [B, Hq, D]
        fp16, bf16 or fp32; ``D`` from 16 to 256; innermost stride 1.
    k_pages : torch.Tensor, shape [num_blocks, Hkv, page_size, D]
        q's dtype or fp8 (``torch.float8_e4m3fn``); innermost stride 1.
    v_pages : torch.Tensor, shape [num_blocks, Hkv, page_size, Dv]
        K's dtype and device; ``Dv`` from 16 to 256.
    block_table : torch.Tensor, shape [B, max_blocks], int32 or int64
        Page indices of each sequence; entries past a sequence's length are not read.
    kv_lens : torch.Tensor, shape [B], int32 or int64
        Tokens of each sequence, in ``[1, max_blocks * page_size]``.
    num_splits, schedule, sm_scale, config, k_scale, v_scale
        As in :func:`perfmodel.kernels.attention_decode`.
    validate : bool
        Check the values of ``kv_lens`` and of the used ``block_table`` entries (a device sync).

    Returns
    -------
    torch.Tensor, shape [B, Hq, Dv], dtype of ``q``

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument.
    """
    sched = _schedule(schedule)
    _check_num_splits(num_splits)
    _check_config(config)
    general = not takes_stream_k(k_pages, v_pages, k_scale, v_scale)
    if general:
        _dg.check_cache(("k_pages", "v_pages"), k_pages, v_pages, sm_scale)
    else:
        check_kv_pair("k_pages", k_pages, "v_pages", v_pages)
    num_blocks, Hkv, page_size, D = k_pages.shape
    check_tensor("block_table", block_table, 2, (torch.int32, torch.int64))
    check_same_device(k_pages=k_pages, block_table=block_table)
    B = block_table.shape[0]
    check_q_and_lens(q, kv_lens, Hkv, D, B, k_pages.device)
    if general:
        s_scale = _dg.check_kv_format(q, "k_pages", k_pages, k_scale, v_scale, Hkv)
        general_schedule(sched, D, v_pages.shape[3])
    else:
        check_kv_dtype_and_scale(q, sm_scale, k_pages=k_pages, v_pages=v_pages)
    if block_table.stride(1) != 1:
        raise KernelInputError(f"block_table: innermost stride is {block_table.stride(1)}; need 1")
    max_len = block_table.shape[1] * page_size
    if validate:
        check_lens_values(kv_lens, max_len)
        _check_table_values(block_table, kv_lens, page_size, num_blocks)
    if general:
        layouts = (tuple(k_pages.stride()[:3]), tuple(v_pages.stride()[:3]))
        return _dg.launch(q, k_pages, v_pages, layouts, Hkv, v_pages.shape[3], kv_lens, (block_table, page_size),
                          max_len, num_splits, sm_scale, (k_scale, v_scale, s_scale))
    return launch_decode(
        q, k_pages, v_pages, kv_lens, block_table, page_size, max_len, num_splits, sched, sm_scale, config
    )


def flops(op: Attention | Mapping) -> int:
    """FLOPs of a decode core ``Attention`` or its descriptor (same as the contiguous cache)."""
    return _counts.flops(op, Attention)


def bytes_moved(op: Attention | Mapping) -> int:
    """Fewest bytes: the used pages read once plus q read and the output written."""
    return _counts.bytes_moved(op, Attention)


# `perfmodel.kernels.attention_decode_paged.flops(op)` works whether `perfmodel.kernels.attention_decode_paged`
# is the module or the function.
attention_decode_paged.flops = flops
attention_decode_paged.bytes_moved = bytes_moved
