"""Split-KV decode for the caches the split-KV/stream-K kernels of :mod:`perfmodel.kernels._decode_kernels`
do not take: any head size from 16 to 256 (and MLA's 576), a value head of its own width, an fp8
(e4m3) cache with float32 scales, and MLA's latent cache, whose value rows are the first
``kv_lora_rank`` elements of its key rows.

The score ``q . k`` is taken in two power-of-two parts (``HEAD_DIM`` + ``HEAD_DIM_B``, the second
masked past ``D_B``; :func:`perfmodel.kernels._common.split_head_dim`), value rows are padded to
``HEAD_DIM_V`` lanes with masked loads. An fp8 cache is loaded as bytes and converted in registers,
to fp16 under a bf16 query (both products then run in fp16, :func:`_to_f16`), else to the query's
format; its scales multiply the score (K) and the output (V), so the dequantised cache never exists
in memory.

Program ``(pair, head block, split)`` serves ``BLOCK_G`` query heads of one (sequence, kv head)
pair over keys ``[split*CHUNK, (split+1)*CHUNK)`` and writes an fp32 partial (normalised by its
own softmax sum) and its log2-sum-exp; :func:`_merge_kernel` merges each query head's partials.
MLA's latent runs keys-major (``_latent_tiles``): the key tile is the row side of both products
(``S^T = K Q^T``, ``O^T = V^T P^T``) and the 16 query heads the column side, so the few heads do not
pad the MMA's rows to its 64-row minimum (a stand-alone kernel of this form read 0.75-0.79 of the copy
bandwidth on an H200 against 0.44-0.46 heads-major; ``docs/kernels.md``). A cache layout travels as ``(s_b, s_h, s_n)`` element
strides of a sequence (or page), a kv head and a token.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from perfmodel import decode_schedule as ds

from ._common import (
    KV_DTYPES,
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
    KernelInputError,
    check_last_dim_contiguous,
    check_same_device,
    check_tensor,
    interpreting,
    next_pow2,
    num_sms,
    split_head_dim,
)

_LOG2E = 1.4426950408889634
#: splits per step of the merge kernel's loop
_MERGE_BLOCK_S = 16
#: query heads per program: the interpreter's (16) also makes a group of more than 16 heads take
#: several programs, so the tests cover the head blocks
_INTERPRETER_META = {"BLOCK_G": 16, "BLOCK_N": 16}
#: an fp8 cache under a bf16 q takes both products in fp16 (:func:`_to_f16`)
FP8_PRODUCTS_F16 = True


@triton.jit
def _rows(b, hk, offs_n, valid, BT, s_btb, lay, PAGE_SIZE, PAGED: tl.constexpr):
    # Element offset of each token's row for kv head hk of sequence b (page BT[b, n // PAGE_SIZE]
    # at row n % PAGE_SIZE when PAGED).
    s_b, s_h, s_n = lay
    if PAGED:
        page = tl.load(BT + b.to(tl.int64) * s_btb + offs_n // PAGE_SIZE, mask=valid, other=0)
        return page.to(tl.int64) * s_b + hk * s_h + (offs_n % PAGE_SIZE) * s_n
    else:
        return b.to(tl.int64) * s_b + hk * s_h + offs_n.to(tl.int64) * s_n


@triton.jit
def _to_f16(q, q_b, scale, HEAD_DIM_B: tl.constexpr):
    # q in fp16 for an fp8 cache (e4m3 converts to fp16 exactly, in fewer instructions than to bf16):
    # q is first scaled by a power of two 2^-e that brings its largest magnitude under 2^14 (exact
    # unless bits fall below fp16's range), and the score's scale takes 2^e back.
    big = tl.max(tl.max(tl.abs(q.to(tl.float32)), 1), 0)
    if HEAD_DIM_B > 0:
        big = tl.maximum(big, tl.max(tl.max(tl.abs(q_b.to(tl.float32)), 1), 0))
    e = tl.maximum(tl.math.ceil(tl.math.log2(tl.maximum(big, 1.0))) - 14.0, 0.0)
    shrink = tl.math.exp2(-e)
    q16 = (q.to(tl.float32) * shrink).to(tl.float16)
    q_b16 = (q_b.to(tl.float32) * shrink).to(tl.float16)
    return q16, q_b16, scale * tl.math.exp2(e)


@triton.jit
def _latent_tiles(q, q_b, K, k_lay, BT, s_btb, PAGE_SIZE, b, hk, n_lo, n_hi, scale,
                  HEAD_DIM: tl.constexpr, HEAD_DIM_B: tl.constexpr, D_B: tl.constexpr, BLOCK_G: tl.constexpr,
                  BLOCK_N: tl.constexpr, PAGED: tl.constexpr, PRECISION: tl.constexpr):
    # MLA's latent, keys-major: the keys are the rows of both products (S^T = K Q^T, O^T = V^T P^T),
    # the BLOCK_G query heads their columns, so a few heads do not pad the MMA's row side; the value
    # tile is the first HEAD_DIM lanes of the key tile. Returns (acc [BLOCK_G, HEAD_DIM], l, m).
    offs_d = tl.arange(0, HEAD_DIM)
    qt = tl.trans(q)
    qt_b = tl.trans(q_b)
    m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((HEAD_DIM, BLOCK_G), dtype=tl.float32)
    for start in range(n_lo, n_hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        valid = offs_n < n_hi
        rk = _rows(b, hk, offs_n, valid, BT, s_btb, k_lay, PAGE_SIZE, PAGED)
        k = tl.load(K + rk[:, None] + offs_d[None, :], mask=valid[:, None], other=0.0).to(q.dtype)
        s = tl.dot(k, qt, input_precision=PRECISION)
        if HEAD_DIM_B > 0:
            offs_db = tl.arange(0, HEAD_DIM_B)
            k_b = tl.load(
                K + rk[:, None] + HEAD_DIM + offs_db[None, :],
                mask=valid[:, None] & (offs_db[None, :] < D_B),
                other=0.0,
            ).to(q.dtype)
            s = tl.dot(k_b, qt_b, s, input_precision=PRECISION)
        s = tl.where(valid[:, None], s * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        p = tl.math.exp2(s - m_new[None, :])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 0)
        acc = tl.dot(tl.trans(k), p.to(k.dtype), acc * alpha[None, :], input_precision=PRECISION)
        m_i = m_new
    return tl.trans(acc), l_i, m_i


@triton.jit
def _split_kernel(
    Q,
    q_strides,
    K,
    k_lay,
    V,
    v_lay,
    BT,
    s_btb,
    PAGE_SIZE,
    KV_LENS,
    K_SCALE,
    V_SCALE,
    s_scale,
    PO,
    PL,
    qk_scale,
    Hkv,
    GROUP,
    HEAD_BLOCKS,
    CHUNK,
    NUM_SPLITS,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_B: tl.constexpr,
    D_B: tl.constexpr,
    HEAD_DIM_V: tl.constexpr,
    DV: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr,
    V_FROM_K: tl.constexpr,
    SCALED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    F16: tl.constexpr,
):
    """Partials of query heads ``hb*BLOCK_G ..`` of pair ``bh`` over one chunk of keys.

    ``V_FROM_K``: the value tile is the first ``HEAD_DIM`` lanes of the key tile (MLA's latent;
    then ``DV == HEAD_DIM``) and ``V`` is not read. ``SCALED``: ``K_SCALE[hk*s_scale]`` and
    ``V_SCALE[hk*s_scale]`` (``s_scale`` 0 for one scale per tensor) dequantise K and V.
    Partial layout: ``[B*Hq, NUM_SPLITS, HEAD_DIM_V]`` and ``[B*Hq, NUM_SPLITS]``.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    bh = pid // HEAD_BLOCKS
    hb = pid % HEAD_BLOCKS
    b = bh // Hkv
    hk = bh % Hkv
    kv_len = tl.load(KV_LENS + b)
    n_lo = split * CHUNK
    n_hi = tl.minimum(n_lo + CHUNK, kv_len)
    s_qb, s_qh = q_strides
    offs_g = hb * BLOCK_G + tl.arange(0, BLOCK_G)
    gmask = offs_g < GROUP
    q_rows = Q + b.to(tl.int64) * s_qb + (hk * GROUP + offs_g)[:, None] * s_qh
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_rows + offs_d[None, :], mask=gmask[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    q_b = q  # a placeholder when the head is one part
    if HEAD_DIM_B > 0:
        offs_db = tl.arange(0, HEAD_DIM_B)
        q_b = tl.load(
            q_rows + HEAD_DIM + offs_db[None, :], mask=gmask[:, None] & (offs_db[None, :] < D_B), other=0.0
        )
        if UPCAST:
            q_b = q_b.to(tl.float32)
    scale = qk_scale
    if F16:
        q, q_b, scale = _to_f16(q, q_b, scale, HEAD_DIM_B)
    v_scale = 1.0
    if SCALED:
        scale = scale * tl.load(K_SCALE + hk * s_scale)
        v_scale = tl.load(V_SCALE + hk * s_scale)
    offs_dv = tl.arange(0, HEAD_DIM_V)
    if V_FROM_K:
        acc, l_i, m_i = _latent_tiles(
            q, q_b, K, k_lay, BT, s_btb, PAGE_SIZE, b, hk, n_lo, n_hi, scale,
            HEAD_DIM, HEAD_DIM_B, D_B, BLOCK_G, BLOCK_N, PAGED, PRECISION,
        )
    else:
        m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_G, HEAD_DIM_V), dtype=tl.float32)
        for start in range(n_lo, n_hi, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            valid = offs_n < n_hi
            rk = _rows(b, hk, offs_n, valid, BT, s_btb, k_lay, PAGE_SIZE, PAGED)
            k = tl.load(K + rk[None, :] + offs_d[:, None], mask=valid[None, :], other=0.0).to(q.dtype)
            s = tl.dot(q, k, input_precision=PRECISION)
            if HEAD_DIM_B > 0:
                offs_db = tl.arange(0, HEAD_DIM_B)
                k_b = tl.load(
                    K + rk[None, :] + HEAD_DIM + offs_db[:, None],
                    mask=valid[None, :] & (offs_db[:, None] < D_B),
                    other=0.0,
                ).to(q.dtype)
                s = tl.dot(q_b, k_b, s, input_precision=PRECISION)
            s = tl.where(valid[None, :], s * scale, float("-inf"))
            rv = _rows(b, hk, offs_n, valid, BT, s_btb, v_lay, PAGE_SIZE, PAGED)
            v = tl.load(
                V + rv[:, None] + offs_dv[None, :], mask=valid[:, None] & (offs_dv[None, :] < DV), other=0.0
            ).to(q.dtype)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
            m_i = m_new
    has = l_i > 0
    out = acc * v_scale / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    rows = (b * Hkv * GROUP + hk * GROUP + offs_g).to(tl.int64) * NUM_SPLITS + split
    tl.store(PO + rows[:, None] * HEAD_DIM_V + offs_dv[None, :], out, mask=gmask[:, None])
    tl.store(PL + rows, lse, mask=gmask)


@triton.jit
def _merge_kernel(
    PO,
    PL,
    Out,
    Hq,
    NUM_SPLITS,
    s_ob,
    s_oh,
    HEAD_DIM_V: tl.constexpr,
    DV: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """Out[b, h, :DV]: the partials of query head ``row = b*Hq + h`` merged by their log-sum-exp."""
    row = tl.program_id(0)
    b = row // Hq
    h = row % Hq
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM_V)
    m = tl.full((), float("-inf"), dtype=tl.float32)
    den = tl.zeros((), dtype=tl.float32)
    acc = tl.zeros((HEAD_DIM_V,), dtype=tl.float32)
    base = row.to(tl.int64) * NUM_SPLITS
    for s0 in range(0, NUM_SPLITS, BLOCK_S):
        ok = s0 + offs_s < NUM_SPLITS
        slots = base + s0 + offs_s
        lse = tl.load(PL + slots, mask=ok, other=float("-inf"))
        part = tl.load(PO + slots[:, None] * HEAD_DIM_V + offs_d[None, :], mask=ok[:, None], other=0.0)
        m_new = tl.maximum(m, tl.max(lse, 0))
        w = tl.math.exp2(lse - m_new)
        alpha = tl.math.exp2(m - m_new)
        den = den * alpha + tl.sum(w, 0)
        acc = acc * alpha + tl.sum(w[:, None] * part, 0)
        m = m_new
    tl.store(
        Out + b.to(tl.int64) * s_ob + h * s_oh + offs_d, (acc / den).to(Out.dtype.element_ty), mask=offs_d < DV
    )


def gpu_meta(head_dim: int, v_head_dim: int, group: int, v_from_k: bool, paged: bool = False) -> dict:
    """Tile sizes on a GPU: :func:`perfmodel.decode_schedule.general_tile` (shared with the cost
    model)."""
    g, n, warps, stages = ds.general_tile(head_dim, v_head_dim, group, v_from_k, paged)
    return {"BLOCK_G": g, "BLOCK_N": n, "num_warps": warps, "num_stages": stages}


def check_scale(name: str, scale: object, kv_heads: int, device: torch.device) -> int:
    """An fp8 cache's scale: a float32 tensor of one element (per tensor) or ``kv_heads`` (per kv
    head) on the cache's device. Returns its stride over kv heads (0 per tensor)."""
    if not isinstance(scale, torch.Tensor):
        raise KernelInputError(f"{name}: expected a float32 tensor, got {type(scale).__name__}")
    if scale.dtype != torch.float32:
        raise KernelInputError(f"{name}: dtype {scale.dtype}, expected torch.float32")
    if scale.device != device:
        raise KernelInputError(f"{name}: on {scale.device}, the cache is on {device}")
    if scale.numel() == 1:
        return 0
    if scale.dim() != 1 or scale.shape[0] != kv_heads:
        raise KernelInputError(f"{name}: shape {tuple(scale.shape)}; expected one element or [{kv_heads}] (per kv head)")
    return int(scale.stride(0))


def check_cache(names: tuple[str, str], k: object, v: object, sm_scale: object) -> None:
    """K and V caches (or pages) of the general kernel: 4-D, one device, of one format (the
    float formats or fp8 e4m3), equal but for the head dim, V's within ``[MIN_HEAD_DIM,
    MAX_HEAD_DIM]``; ``sm_scale`` None or a positive finite number."""
    k_name, v_name = names
    for name, t in ((k_name, k), (v_name, v)):
        check_tensor(name, t, 4, KV_DTYPES)
        check_last_dim_contiguous(name, t)
    check_same_device(**{k_name: k, v_name: v})
    if v.shape[:3] != k.shape[:3]:
        raise KernelInputError(f"{v_name}: shape {tuple(v.shape)} differs from {k_name}'s {tuple(k.shape)} before the head dim")
    if v.dtype != k.dtype:
        raise KernelInputError(f"{v_name}: dtype {v.dtype} differs from {k_name}'s {k.dtype}")
    if not MIN_HEAD_DIM <= v.shape[3] <= MAX_HEAD_DIM:
        raise KernelInputError(f"{v_name}: head_dim {v.shape[3]} not supported (expected {MIN_HEAD_DIM} to {MAX_HEAD_DIM})")
    if sm_scale is not None and not (
        isinstance(sm_scale, (int, float)) and math.isfinite(sm_scale) and sm_scale > 0
    ):
        raise KernelInputError(f"sm_scale: expected a positive finite number, got {sm_scale!r}")


def check_kv_format(q: torch.Tensor, k_name: str, k: torch.Tensor, k_scale: object, v_scale: object,
                    kv_heads: int) -> int:
    """The cache holds q's format, or fp8 (e4m3) with optional scales (:func:`check_scale`;
    default 1); returns the scales' stride over kv heads (0 per tensor)."""
    if k.dtype != torch.float8_e4m3fn:
        if k.dtype != q.dtype:
            raise KernelInputError(f"{k_name}: dtype {k.dtype} differs from q's {q.dtype}")
        for name, sc in (("k_scale", k_scale), ("v_scale", v_scale)):
            if sc is not None:
                raise KernelInputError(f"{name}: given for a {k.dtype} cache; scales apply to an fp8 cache only")
        return 0
    strides = {check_scale(name, sc, kv_heads, k.device) for name, sc in (("k_scale", k_scale), ("v_scale", v_scale))
               if sc is not None}
    if len(strides) > 1:
        raise KernelInputError("v_scale: per tensor and per kv head mixed with k_scale; give both alike")
    return strides.pop() if strides else 0


def launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layouts: tuple[tuple[int, int, int], tuple[int, int, int]],
    kv_heads: int,
    v_head_dim: int,
    kv_lens: torch.Tensor,
    paging: tuple[torch.Tensor, int] | None,
    max_len: int,
    num_splits: int | None,
    sm_scale: float | None,
    scales: tuple[torch.Tensor | None, torch.Tensor | None, int],
    v_from_k: bool = False,
) -> torch.Tensor:
    """Launch the split-KV kernel and the merge over checked inputs; return ``[B, Hq, v_head_dim]``.

    ``layouts``: the ``(s_b, s_h, s_n)`` element strides of K and of V; ``paging``: the block table
    and page size (None: contiguous caches, ``s_b`` per sequence); ``scales``: K's and V's scales
    (None: 1, or a float cache) and their stride over kv heads; ``v_from_k``: the value rows are
    the first ``v_head_dim`` lanes of the key rows (``v`` is not read).
    """
    B, Hq, D = q.shape
    group = Hq // kv_heads
    interp = interpreting()
    meta = dict(_INTERPRETER_META) if interp else gpu_meta(D, v_head_dim, group, v_from_k, paging is not None)
    block_g = meta.pop("BLOCK_G")
    head_blocks = triton.cdiv(group, block_g)
    d_a, d_b = split_head_dim(D)
    hdv = max(MIN_HEAD_DIM, next_pow2(v_head_dim))
    if v_from_k and (d_a != v_head_dim or hdv != d_a):
        raise KernelInputError(f"v_head_dim: {v_head_dim} must be the power-of-two part {d_a} of head_dim {D}")
    pairs = B * kv_heads * head_blocks
    sms = num_sms(q.device)
    if num_splits is None:
        num_splits = ds.general_splits(pairs, sms)
    chunk, pieces = (int(x) for x in ds.split_kv_pieces(
        pairs, max_len, ds.SPLIT_KV_PROGRAMS_PER_SM * sms, meta["BLOCK_N"], num_splits))
    po = torch.empty((B * Hq * pieces, hdv), dtype=torch.float32, device=q.device)
    pl = torch.empty((B * Hq * pieces,), dtype=torch.float32, device=q.device)
    bt, page_size = paging if paging is not None else (kv_lens, 1)  # kv_lens: any tensor, not read
    k_scale, v_scale, s_scale = scales
    scaled = k_scale is not None or v_scale is not None
    one = torch.ones((1,), dtype=torch.float32, device=q.device) if scaled and None in (k_scale, v_scale) else None
    k_scale = k_scale if k_scale is not None else (one if scaled else kv_lens)
    v_scale = v_scale if v_scale is not None else (one if scaled else kv_lens)
    scale = (1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)) * _LOG2E
    f16 = FP8_PRODUCTS_F16 and k.dtype == torch.float8_e4m3fn and q.dtype == torch.bfloat16
    _split_kernel[(B * kv_heads * head_blocks, pieces)](
        q, (q.stride(0), q.stride(1)), k, layouts[0], v, layouts[1], bt, bt.stride(0) if paging else 0, page_size,
        kv_lens, k_scale, v_scale, s_scale, po, pl, scale, kv_heads, group, head_blocks, chunk, pieces,
        HEAD_DIM=d_a, HEAD_DIM_B=d_b, D_B=D - d_a, HEAD_DIM_V=hdv, DV=v_head_dim, BLOCK_G=block_g,
        PAGED=paging is not None, V_FROM_K=v_from_k, SCALED=scaled,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        UPCAST=interp and q.dtype == torch.bfloat16 and not f16, F16=f16, **meta,
    )
    o = torch.empty((B, Hq, v_head_dim), dtype=q.dtype, device=q.device)
    _merge_kernel[(B * Hq,)](po, pl, o, Hq, pieces, o.stride(0), o.stride(1), HEAD_DIM_V=hdv, DV=v_head_dim,
                             BLOCK_S=_MERGE_BLOCK_S)
    return o
