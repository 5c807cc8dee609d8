"""Plain PyTorch references of every kernel, computed in float64 on the inputs' device.

Used by the tests; slow but obviously right. Each returns float64 unless noted.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "attention_decode_mla_ref",
    "attention_decode_paged_ref",
    "attention_decode_ref",
    "dequantize_fp8_ref",
    "attention_prefill_ref",
    "gather_kv_blocks_ref",
    "matmul_ref",
    "paged_to_contiguous",
    "quantize_fp8",
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
    """One-token attention in float64: ``q [B,Hq,D]``, caches ``[B,Hkv,Lmax,D]`` and
    ``[B,Hkv,Lmax,Dv]``, ``kv_lens [B]``.

    Sequence ``b`` attends to its first ``kv_lens[b]`` cache positions. Returns ``[B,Hq,Dv]``.
    """
    out = torch.empty(q.shape[:2] + v_cache.shape[-1:], dtype=torch.float64, device=q.device)
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


def quantize_fp8(t: torch.Tensor, per_head: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``t [B or num_blocks, Hkv, L, D]`` as e4m3 with float32 scales: ``(t / scale, scale)``, the
    scale ``amax / 448`` per kv head (``[Hkv]``) or of the whole tensor (``[1]``)."""
    amax = t.abs().float().amax(dim=(0, 2, 3)) if per_head else t.abs().float().amax().reshape(1)
    scale = (amax / torch.finfo(torch.float8_e4m3fn).max).clamp_min(1e-12)
    shaped = scale[None, :, None, None] if per_head else scale
    return (t.float() / shaped).to(torch.float8_e4m3fn), scale


def dequantize_fp8_ref(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """An e4m3 cache ``[., Hkv, L, D]`` times its scale (one, or one per kv head) in float64."""
    s = scale.double().reshape(-1)
    return t.double() * (s[None, :, None, None] if s.numel() > 1 else s)


def attention_decode_mla_ref(
    q: torch.Tensor,
    latent_pages: torch.Tensor,
    block_table: torch.Tensor,
    kv_lens: torch.Tensor,
    kv_lora_rank: int,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """MLA decode (weight-absorbed) in float64: ``q [B,H,R+P]`` over latent pages
    ``[num_blocks, page_size, R+P]`` (one latent head shared by all query heads), keys the whole
    latent rows and values their first ``R = kv_lora_rank`` elements. Returns ``[B,H,R]``."""
    pages = latent_pages[:, None]  # [num_blocks, 1, page_size, R+P]
    return attention_decode_paged_ref(q, pages, pages[..., :kv_lora_rank], block_table, kv_lens, sm_scale)


def gather_kv_blocks_ref(pages: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """``pages[block_ids]``: ``[n, *pages.shape[1:]]`` in the pages' dtype."""
    return pages[block_ids.long()].clone()


def scatter_kv_blocks_ref(pages: torch.Tensor, block_ids: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """A copy of ``pages`` with ``pages[block_ids[i]] = src[i]``."""
    out = pages.clone()
    out[block_ids.long()] = src
    return out
