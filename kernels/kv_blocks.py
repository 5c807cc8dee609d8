"""Copy selected KV-cache blocks to or from a contiguous buffer (device half of a KV swap).

``pages [num_blocks, ...]`` (contiguous; each block is one contiguous row of
``prod(pages.shape[1:])`` elements, e.g. ``[Hkv, block_size, D]``), ``block_ids [n]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import triton
import triton.language as tl

from perfmodel.ops import Memcpy

from ._common import KernelInputError, check_same_device, check_tensor, interpreting
from . import _counts
from ._counts import kv_block_copy_op

__all__ = ["bytes_moved", "flops", "gather_kv_blocks", "kv_block_copy_op", "scatter_kv_blocks"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float8_e4m3fn, torch.uint8)


@triton.jit
def _copy_blocks_kernel(SRC, DST, IDS, row_elems, GATHER: tl.constexpr, BLOCK: tl.constexpr):
    """Program (i, j) copies elements [j*BLOCK, (j+1)*BLOCK) of block i."""
    i = tl.program_id(0)
    j = tl.program_id(1)
    blk = tl.load(IDS + i).to(tl.int64)
    offs = j * BLOCK + tl.arange(0, BLOCK)
    mask = offs < row_elems
    if GATHER:  # pages[blk] -> buffer[i]
        src_row = blk * row_elems
        dst_row = i.to(tl.int64) * row_elems
    else:  # buffer[i] -> pages[blk]
        src_row = i.to(tl.int64) * row_elems
        dst_row = blk * row_elems
    x = tl.load(SRC + src_row + offs, mask=mask)
    tl.store(DST + dst_row + offs, x, mask=mask)


def _block() -> int:
    return 1024 if interpreting() else 4096


def _check(pages, block_ids, validate: bool, unique: bool) -> None:
    if not isinstance(pages, torch.Tensor) or pages.dim() < 2:
        raise KernelInputError(
            f"pages: expected a tensor of at least 2 dimensions, got {type(pages).__name__}"
            f"{tuple(pages.shape) if isinstance(pages, torch.Tensor) else ''}"
        )
    check_tensor("pages", pages, pages.dim(), _DTYPES)
    if not pages.is_contiguous():
        raise KernelInputError("pages: must be contiguous (each block one contiguous row)")
    check_tensor("block_ids", block_ids, 1, (torch.int32, torch.int64))
    check_same_device(pages=pages, block_ids=block_ids)
    if validate:
        lo, hi = int(block_ids.min()), int(block_ids.max())
        if lo < 0 or hi >= pages.shape[0]:
            raise KernelInputError(
                f"block_ids: values must lie in [0, {pages.shape[0]}), got min {lo}, max {hi}"
            )
        if unique and torch.unique(block_ids).numel() != block_ids.numel():
            raise KernelInputError("block_ids: repeated block ids (a scatter target must be unique)")


def _launch(
    src: torch.Tensor, dst: torch.Tensor, block_ids: torch.Tensor, row_elems: int, gather: bool
) -> None:
    blk = _block()
    grid = (block_ids.shape[0], triton.cdiv(row_elems, blk))
    _copy_blocks_kernel[grid](
        src,
        dst,
        block_ids,
        row_elems,
        GATHER=gather,
        BLOCK=blk,
        **({} if interpreting() else {"num_warps": 8}),
    )


def gather_kv_blocks(pages: torch.Tensor, block_ids: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """Return ``pages[block_ids]`` as a new contiguous ``[n, *pages.shape[1:]]`` tensor.

    Parameters
    ----------
    pages : torch.Tensor, shape [num_blocks, ...], contiguous
    block_ids : torch.Tensor, shape [n], int32 or int64
    validate : bool
        Check that every id lies in ``[0, num_blocks)`` (a device sync).

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument.
    """
    _check(pages, block_ids, validate, unique=False)
    out = torch.empty((block_ids.shape[0], *pages.shape[1:]), dtype=pages.dtype, device=pages.device)
    _launch(pages, out, block_ids, pages[0].numel(), gather=True)
    return out


def scatter_kv_blocks(
    pages: torch.Tensor, block_ids: torch.Tensor, src: torch.Tensor, validate: bool = True
) -> torch.Tensor:
    """Write ``src[i]`` into ``pages[block_ids[i]]`` in place; return ``pages``.

    Parameters
    ----------
    pages : torch.Tensor, shape [num_blocks, ...], contiguous
    block_ids : torch.Tensor, shape [n], int32 or int64, distinct
    src : torch.Tensor, shape [n, *pages.shape[1:]], contiguous, dtype of ``pages``
    validate : bool
        Check that ids lie in ``[0, num_blocks)`` and are distinct (a device sync).

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument.
    """
    _check(pages, block_ids, validate, unique=True)
    check_tensor("src", src, pages.dim(), _DTYPES)
    check_same_device(pages=pages, src=src)
    if src.dtype != pages.dtype:
        raise KernelInputError(f"src: dtype {src.dtype} differs from pages' {pages.dtype}")
    if tuple(src.shape) != (block_ids.shape[0], *pages.shape[1:]):
        raise KernelInputError(
            f"src: shape {tuple(src.shape)}, expected {(block_ids.shape[0], *pages.shape[1:])}"
        )
    if not src.is_contiguous():
        raise KernelInputError("src: must be contiguous")
    _launch(src, pages, block_ids, pages[0].numel(), gather=False)
    return pages


def flops(op: Memcpy | Mapping) -> int:
    """A block copy does no arithmetic: 0 for a core ``Memcpy`` (:func:`kv_block_copy_op`) or its
    ``{"op": "memcpy", ...}`` descriptor."""
    return _counts.flops(op, Memcpy)


def bytes_moved(op: Memcpy | Mapping) -> int:
    """Bytes of a block gather or scatter (:func:`kv_block_copy_op`): each block read once and
    written once."""
    return _counts.bytes_moved(op, Memcpy)


gather_kv_blocks.flops = scatter_kv_blocks.flops = flops
gather_kv_blocks.bytes_moved = scatter_kv_blocks.bytes_moved = bytes_moved
