"""Triton kernels of one-token (decode) attention: split-KV, stream-K and their reduction.

Both schedules write per-piece partial results (an fp32 output row normalised by its own
softmax sum, and its log2-sum-exp); :func:`_reduce_kernel` merges the pieces of each query
head. ``PAGED`` selects a paged cache: token ``n`` of sequence ``b`` then lives in page
``block_table[b, n // PAGE_SIZE]`` at row ``n % PAGE_SIZE``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _kv_rows(b, hk, offs_n, valid, s_kb, s_kh, s_kn, BT, s_btb, PAGE_SIZE, PAGED: tl.constexpr):
    # Element offset of each token's K (or V) row for kv head hk of sequence b.
    if PAGED:
        page = tl.load(BT + b.to(tl.int64) * s_btb + offs_n // PAGE_SIZE, mask=valid, other=0)
        return page.to(tl.int64) * s_kb + hk * s_kh + (offs_n % PAGE_SIZE) * s_kn
    else:
        return b.to(tl.int64) * s_kb + hk * s_kh + offs_n.to(tl.int64) * s_kn


@triton.jit
def _attend_range(
    q,
    K,
    V,
    b,
    hk,
    n_lo,
    n_hi,
    qk_scale,
    s_kb,
    s_kh,
    s_kn,
    BT,
    s_btb,
    PAGE_SIZE,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Online softmax of the query group ``q [BLOCK_G, D]`` over keys ``n_lo .. n_hi - 1``."""
    offs_d = tl.arange(0, HEAD_DIM)
    m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_G, HEAD_DIM), dtype=tl.float32)
    for start in range(n_lo, n_hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        valid = offs_n < n_hi
        rows = _kv_rows(b, hk, offs_n, valid, s_kb, s_kh, s_kn, BT, s_btb, PAGE_SIZE, PAGED)
        k = tl.load(K + rows[None, :] + offs_d[:, None], mask=valid[None, :], other=0.0)
        v = tl.load(V + rows[:, None] + offs_d[None, :], mask=valid[:, None], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, k, input_precision=PRECISION) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _load_q_group(
    Q, b, hk, s_qb, s_qh, GROUP, HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, UPCAST: tl.constexpr
):
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(
        Q + b.to(tl.int64) * s_qb + (hk * GROUP + offs_g)[:, None] * s_qh + offs_d[None, :],
        mask=offs_g[:, None] < GROUP,
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    return q


@triton.jit
def _store_partial(PO, PL, slot_off, acc, l_i, m_i, GROUP, HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr):
    # PO[slot, g, :] = acc / l, PL[slot, g] = m + log2(l); an empty piece gets lse = -inf.
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    gmask = offs_g < GROUP
    tl.store(
        PO + slot_off * HEAD_DIM + offs_g[:, None] * HEAD_DIM + offs_d[None, :], out, mask=gmask[:, None]
    )
    tl.store(PL + slot_off + offs_g, lse, mask=gmask)


@triton.jit
def _split_kv_kernel(
    Q,
    K,
    V,
    KV_LENS,
    BT,
    PO,
    PL,
    qk_scale,
    Hkv,
    GROUP,
    CHUNK,
    NUM_SPLITS,
    s_qb,
    s_qh,
    s_kb,
    s_kh,
    s_kn,
    s_btb,
    PAGE_SIZE,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Program (bh, split) handles keys [split*CHUNK, (split+1)*CHUNK) of kv head bh."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // Hkv
    hk = bh % Hkv
    kv_len = tl.load(KV_LENS + b)
    n_lo = split * CHUNK
    n_hi = tl.minimum(n_lo + CHUNK, kv_len)
    q = _load_q_group(Q, b, hk, s_qb, s_qh, GROUP, HEAD_DIM, BLOCK_G, UPCAST)
    acc, l_i, m_i = _attend_range(
        q,
        K,
        V,
        b,
        hk,
        n_lo,
        n_hi,
        qk_scale,
        s_kb,
        s_kh,
        s_kn,
        BT,
        s_btb,
        PAGE_SIZE,
        HEAD_DIM,
        BLOCK_G,
        BLOCK_N,
        PAGED,
        PRECISION,
        UPCAST,
    )
    # partial layout [B*Hkv, NUM_SPLITS, GROUP, (D)]
    _store_partial(
        PO, PL, (bh.to(tl.int64) * NUM_SPLITS + split) * GROUP, acc, l_i, m_i, GROUP, HEAD_DIM, BLOCK_G
    )


@triton.jit
def _tile_prefix(KV_LENS, Hkv, BH, BLOCK_N: tl.constexpr, BH_P2: tl.constexpr):
    # Inclusive prefix sum of KV tiles over the concatenation of all (sequence, kv head) pairs.
    idx = tl.arange(0, BH_P2)
    lens = tl.load(KV_LENS + idx // Hkv, mask=idx < BH, other=0)
    tiles = (lens + BLOCK_N - 1) // BLOCK_N
    return idx, tiles, tl.cumsum(tiles, 0)


@triton.jit
def _stream_k_kernel(
    Q,
    K,
    V,
    KV_LENS,
    BT,
    PO,
    PL,
    qk_scale,
    Hkv,
    GROUP,
    BH,
    NUM_PROGRAMS,
    s_qb,
    s_qh,
    s_kb,
    s_kh,
    s_kn,
    s_btb,
    PAGE_SIZE,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BH_P2: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Program p handles KV tiles [p*T/P, (p+1)*T/P) of the concatenated KV of all heads.

    Each maximal run of its tiles inside one (sequence, kv head) pair becomes one partial,
    stored at slot ``p + bh`` (unique because runs of later programs start at bh or later).
    """
    p = tl.program_id(0)
    idx, tiles, incl = _tile_prefix(KV_LENS, Hkv, BH, BLOCK_N, BH_P2)
    total = tl.sum(tiles, 0)
    t = (p.to(tl.int64) * total // NUM_PROGRAMS).to(tl.int32)
    t_end = ((p.to(tl.int64) + 1) * total // NUM_PROGRAMS).to(tl.int32)
    while t < t_end:
        bh = tl.sum((incl <= t).to(tl.int32), 0)  # first pair whose tiles reach past t
        first_tile = tl.sum(tl.where(idx < bh, tiles, 0), 0)
        seg_end = tl.minimum(t_end, first_tile + tl.sum(tl.where(idx == bh, tiles, 0), 0))
        b = bh // Hkv
        hk = bh % Hkv
        kv_len = tl.load(KV_LENS + b)
        q = _load_q_group(Q, b, hk, s_qb, s_qh, GROUP, HEAD_DIM, BLOCK_G, UPCAST)
        n_lo = (t - first_tile) * BLOCK_N
        n_hi = tl.minimum((seg_end - first_tile) * BLOCK_N, kv_len)
        acc, l_i, m_i = _attend_range(
            q,
            K,
            V,
            b,
            hk,
            n_lo,
            n_hi,
            qk_scale,
            s_kb,
            s_kh,
            s_kn,
            BT,
            s_btb,
            PAGE_SIZE,
            HEAD_DIM,
            BLOCK_G,
            BLOCK_N,
            PAGED,
            PRECISION,
            UPCAST,
        )
        # partial layout [NUM_PROGRAMS + BH, GROUP, (D)]
        _store_partial(PO, PL, (p + bh).to(tl.int64) * GROUP, acc, l_i, m_i, GROUP, HEAD_DIM, BLOCK_G)
        t = seg_end


@triton.jit
def _reduce_kernel(
    PO,
    PL,
    Out,
    KV_LENS,
    Hq,
    Hkv,
    GROUP,
    BH,
    NUM_PIECES,
    s_ob,
    s_oh,
    HEAD_DIM: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BH_P2: tl.constexpr,
    STREAM_K: tl.constexpr,
):
    """Merge the partials of query head (b, h) by their log-sum-exp weights; write Out[b, h]."""
    row = tl.program_id(0)
    b = row // Hq
    h = row % Hq
    bh = b * Hkv + h // GROUP
    g = h % GROUP
    if STREAM_K:
        idx, tiles, incl = _tile_prefix(KV_LENS, Hkv, BH, BLOCK_N, BH_P2)
        total = tl.sum(tiles, 0)
        first = tl.sum(tl.where(idx < bh, tiles, 0), 0)
        last = tl.sum(tl.where(idx == bh, incl, 0), 0) - 1
        # owner(t) = the largest p with p*T//P <= t = ((t+1)*P - 1) // T
        p0 = ((first.to(tl.int64) + 1) * NUM_PIECES - 1) // total
        p1 = ((last.to(tl.int64) + 1) * NUM_PIECES - 1) // total
        s_lo = p0 + bh
        s_hi = p1 + bh + 1
    else:
        s_lo = bh.to(tl.int64) * NUM_PIECES
        s_hi = s_lo + NUM_PIECES
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    m = tl.full((), float("-inf"), dtype=tl.float32)
    den = tl.zeros((), dtype=tl.float32)
    acc = tl.zeros((HEAD_DIM,), dtype=tl.float32)
    for s0 in range(s_lo, s_hi, BLOCK_S):
        slots = s0 + offs_s
        ok = slots < s_hi
        if STREAM_K:  # skip programs that owned no tile (only when there are fewer tiles than programs)
            prog = (slots - bh).to(tl.int64)
            ok = ok & ((prog + 1) * total // NUM_PIECES > prog * total // NUM_PIECES)
        lse = tl.load(PL + slots * GROUP + g, mask=ok, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(lse, 0))
        w = tl.math.exp2(lse - m_new)
        part = tl.load(
            PO + (slots * GROUP + g)[:, None] * HEAD_DIM + offs_d[None, :], mask=ok[:, None], other=0.0
        )
        scale = tl.math.exp2(m - m_new)
        den = den * scale + tl.sum(w, 0)
        acc = acc * scale + tl.sum(w[:, None] * part, 0)
        m = m_new
    out = acc / den
    tl.store(Out + b.to(tl.int64) * s_ob + h * s_oh + offs_d, out.to(Out.dtype.element_ty))
