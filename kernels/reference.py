"""Plain PyTorch references of every kernel, computed in float64 on the inputs' device.

Used by the tests; slow but obviously right. Each returns float64 unless noted.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "attention_decode_paged_ref",
    "attention_decode_ref",
    "attention_prefill_ref",
    "gather_kv_blocks_ref",
    "matmul_ref",
    "paged_to_contiguous",
    "scatter_kv_blocks_ref",
]


def matmul_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in float64. Shapes ``[M,K] @ [K,N] -> [M,N]``."""
    return a.double() @ b.double()


def _expand_kv(t: torch.Tensor, q_heads: int) -> torch.Tensor:
    # [B, Hkv, ...] -> [B, Hq, ...]: query head h reads kv head h // (Hq // Hkv)
    return t.repeat_interleave(q_heads // t.shape[1], dim=1)


def attention_prefill_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, sm_scale: float | None = None
) -> torch.Tensor:
    """Attention in float64: ``q [B,Hq,Lq,D]``, ``k, v [B,Hkv,Lk,D]`` -> ``[B,Hq,Lq,D]``.

    The causal mask is aligned to the bottom-right corner (query ``i`` sees keys up to
    ``Lk - Lq + i``), which is the usual mask when ``Lq == Lk``.
    """
    hq, lq, d = q.shape[1], q.shape[2], q.shape[3]
    lk = k.shape[2]
    scale = 1.0 / math.sqrt(d) if sm_scale is None else sm_scale
    kk = _expand_kv(k.double(), hq)
    vv = _expand_kv(v.double(), hq)
    s = (q.double() @ kk.transpose(-1, -2)) * scale
    if causal:
        i = torch.arange(lq, device=q.device)[:, None]
        j = torch.arange(lk, device=q.device)[None, :]
        s = s.masked_fill(j > i + (lk - lq), float("-inf"))
    return torch.softmax(s, dim=-1) @ vv


def attention_decode_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_lens: torch.Tensor,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """One-token attention in float64: ``q [B,Hq,D]``, caches ``[B,Hkv,Lmax,D]``, ``kv_lens [B]``.

    Sequence ``b`` attends to its first ``kv_lens[b]`` cache positions. Returns ``[B,Hq,D]``.
    """
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    for b, n in enumerate(kv_lens.tolist()):
        o = attention_prefill_ref(
            q[b : b + 1, :, None, :],
            k_cache[b : b + 1, :, :n],
            v_cache[b : b + 1, :, :n],
            causal=False,
            sm_scale=sm_scale,
        )
        out[b] = o[0, :, 0]
    return out


def paged_to_contiguous(pages: torch.Tensor, block_table: torch.Tensor, max_len: int) -> torch.Tensor:
    """Assemble ``[B,Hkv,max_len,D]`` from pages ``[num_blocks,Hkv,block_size,D]`` and a block table."""
    bs = pages.shape[2]
    nblk = -(-max_len // bs)
    g = pages[block_table[:, :nblk].long()]  # [B, nblk, Hkv, bs, D]
    g = g.permute(0, 2, 1, 3, 4).reshape(g.shape[0], g.shape[2], nblk * bs, g.shape[4])
    return g[:, :, :max_len]


def attention_decode_paged_ref(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    block_table: torch.Tensor,
    kv_lens: torch.Tensor,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """Paged one-token attention in float64 (pages gathered, then :func:`attention_decode_ref`)."""
    lmax = int(kv_lens.max())
    k = paged_to_contiguous(k_pages, block_table, lmax)
    v = paged_to_contiguous(v_pages, block_table, lmax)
    return attention_decode_ref(q, k, v, kv_lens, sm_scale)


def gather_kv_blocks_ref(pages: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """``pages[block_ids]``: ``[n, *pages.shape[1:]]`` in the pages' dtype."""
    return pages[block_ids.long()].clone()


def scatter_kv_blocks_ref(pages: torch.Tensor, block_ids: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """A copy of ``pages`` with ``pages[block_ids[i]] = src[i]``."""
    out = pages.clone()
    out[block_ids.long()] = src
    return out
