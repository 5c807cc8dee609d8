"""Triton kernels of one-token (decode) attention: split-KV, stream-K and their reduction.

Both schedules write per-piece partial results (an fp32 output row normalised by its own
softmax sum, and its log2-sum-exp); :func:`_reduce_kernel` merges the pieces of each query
head. Stream-K writes a (sequence, kv head) pair that lies inside one program's run straight
to the output, and with ``FUSED`` also merges the other pairs itself (the last program to
finish a pair's tiles does it), so it needs no second kernel.

The cache travels as one tuple, ``cache = (K, V, BT, (s_kb, s_kh, s_kn, s_btb, PAGE_SIZE))``;
``PAGED`` selects a paged cache: token ``n`` of sequence ``b`` then lives in page
``BT[b, n // PAGE_SIZE]`` at row ``n % PAGE_SIZE``. Query and output strides travel as
``(s_b, s_h)`` pairs. Grid sizes and program counts come from :mod:`perfmodel.decode_schedule`.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def _kv_rows(b, hk, offs_n, valid, cache, PAGED: tl.constexpr):
    # Element offset of each token's K (or V) row for kv head hk of sequence b.
    # two steps: Triton 3.6's dependency hashing fails on a nested tuple target
    _, _, BT, strides = cache
    s_kb, s_kh, s_kn, s_btb, PAGE_SIZE = strides
    if PAGED:
        page = tl.load(BT + b.to(tl.int64) * s_btb + offs_n // PAGE_SIZE, mask=valid, other=0)
        return page.to(tl.int64) * s_kb + hk * s_kh + (offs_n % PAGE_SIZE) * s_kn
    else:
        return b.to(tl.int64) * s_kb + hk * s_kh + offs_n.to(tl.int64) * s_kn


@triton.jit
def _attend_range(
    q,
    cache,
    b,
    hk,
    n_lo,
    n_hi,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Online softmax of the query group ``q [BLOCK_G, D]`` over keys ``n_lo .. n_hi - 1``."""
    m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_G, HEAD_DIM), dtype=tl.float32)
    for start in range(n_lo, n_hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        valid = offs_n < n_hi
        rows = _kv_rows(b, hk, offs_n, valid, cache, PAGED)
        acc, l_i, m_i = _attend_tile(q, cache, rows, valid, qk_scale, acc, l_i, m_i, HEAD_DIM, PRECISION, UPCAST)
    return acc, l_i, m_i


@triton.jit
def _attend_tile(q, cache, rows, valid, qk_scale, acc, l_i, m_i, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr,
                 UPCAST: tl.constexpr):
    # One KV tile (token rows ``rows``, where ``valid``) folded into the running online softmax
    # (acc, l, m) of the query group ``q``.
    K, V, _, _ = cache
    offs_d = tl.arange(0, HEAD_DIM)
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
    return acc, l_i, m_new


@triton.jit
def _load_q_group(Q, q_strides, b, hk, GROUP, HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, UPCAST: tl.constexpr):
    s_qb, s_qh = q_strides
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
def _store_partial(
    PO, PL, slot_off, acc, l_i, m_i, GROUP, HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, LSE_REPEAT: tl.constexpr = 1
):
    # PO[slot, g, :] = acc / l, PL[slot, g] = m + log2(l); an empty piece gets lse = -inf. With
    # LSE_REPEAT > 1 the lse is written that many times in a row, PL[slot, g, :LSE_REPEAT].
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    gmask = offs_g < GROUP
    tl.store(
        PO + slot_off * HEAD_DIM + offs_g[:, None] * HEAD_DIM + offs_d[None, :], out, mask=gmask[:, None]
    )
    if LSE_REPEAT == 1:
        tl.store(PL + slot_off + offs_g, lse, mask=gmask)
    else:
        offs_r = tl.arange(0, LSE_REPEAT)
        rep = lse[:, None] + tl.zeros((BLOCK_G, LSE_REPEAT), dtype=tl.float32)
        tl.store(PL + (slot_off + offs_g)[:, None] * LSE_REPEAT + offs_r[None, :], rep, mask=gmask[:, None])


@triton.jit
def _split_kv_kernel(
    Q,
    q_strides,
    cache,
    KV_LENS,
    PO,
    PL,
    qk_scale,
    Hkv,
    GROUP,
    CHUNK,
    NUM_SPLITS,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    PDL: tl.constexpr = False,
):
    """Program (bh, split) handles keys [split*CHUNK, (split+1)*CHUNK) of kv head bh.

    ``PDL``: let the reduction kernel launch now (it waits for this grid to finish before reading).
    """
    if PDL:
        gdc_launch_dependents()
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // Hkv
    hk = bh % Hkv
    kv_len = tl.load(KV_LENS + b)
    n_lo = split * CHUNK
    n_hi = tl.minimum(n_lo + CHUNK, kv_len)
    q = _load_q_group(Q, q_strides, b, hk, GROUP, HEAD_DIM, BLOCK_G, UPCAST)
    acc, l_i, m_i = _attend_range(
        q, cache, b, hk, n_lo, n_hi, qk_scale, HEAD_DIM, BLOCK_G, BLOCK_N, PAGED, PRECISION, UPCAST
    )
    # partial layout [B*Hkv, NUM_SPLITS, GROUP, (D)]
    _store_partial(
        PO, PL, (bh.to(tl.int64) * NUM_SPLITS + split) * GROUP, acc, l_i, m_i, GROUP, HEAD_DIM, BLOCK_G
    )


@triton.jit
def _tile_prefix(KV_LENS, Hkv, B, BLOCK_N: tl.constexpr, B_P2: tl.constexpr):
    # Per sequence: its length, and the inclusive prefix sum of the KV tiles of all its kv heads
    # over the concatenation of all (sequence, kv head) pairs; the sequences' kv heads are
    # consecutive and equally long, so the pairs need no vector of their own.
    idx = tl.arange(0, B_P2)
    lens = tl.load(KV_LENS + idx, mask=idx < B, other=0)
    seq_tiles = (lens + BLOCK_N - 1) // BLOCK_N * Hkv
    return idx, lens, seq_tiles, tl.cumsum(seq_tiles, 0)


#: times the fused stream-K kernel writes each log-sum-exp (see :func:`_combine_pair`); the wrapper
#: sizes the buffer with it
FUSED_LSE_REPEAT = tl.constexpr(4)


@triton.jit
def _owner(t, total, NUM_PROGRAMS, WIDE: tl.constexpr = True):
    # The program whose run [p*T//P, (p+1)*T//P) holds tile t: the largest p with p*T//P <= t
    # (in 64 bits when WIDE: t*P may not fit 32).
    if WIDE:
        t = t.to(tl.int64)
    return ((t + 1) * NUM_PROGRAMS - 1) // total


@triton.jit
def _real_tile(x, units, total, idx, incl, lens, w, Hkv, BLOCK_N: tl.constexpr):
    # The real tile at unit x of a partition in which every pair is preceded by w phantom units
    # (a tile count it may not hold): a unit inside a pair's phantom units maps to the pair's first
    # tile, so a run boundary that falls there moves to the pair boundary. Unit ``units`` (the end)
    # maps to ``total``.
    incl_u = incl + w * Hkv * (idx + 1)
    key = tl.where(incl_u > x, (incl_u.to(tl.int64) << 32) + idx.to(tl.int64), 0x7FFFFFFFFFFFFFFF)
    got = tl.min(key, 0)
    b = (got & 0xFFFFFFFF).to(tl.int32)
    pair_tiles = tl.maximum((tl.sum(tl.where(idx == b, lens, 0), 0) + BLOCK_N - 1) // BLOCK_N, 1)
    pair_units = pair_tiles + w
    seq_first_u = (got >> 32).to(tl.int32) - pair_units * Hkv
    seq_first = seq_first_u - w * Hkv * b
    off = x - seq_first_u
    hk = off // pair_units
    real = seq_first + hk * pair_tiles + tl.maximum(off - hk * pair_units - w, 0)
    return tl.where(x >= units, total, real)


@triton.jit
def _find_pair(t, idx, incl, KV_LENS, B, Hkv, BLOCK_N: tl.constexpr):
    # The (sequence, kv head) pair holding tile t, as (b, kv_len, pair_tiles, seq_first, hk). The
    # sequence is the first whose inclusive tile prefix passes t; the prefix never decreases, so
    # that is the least (prefix, index) key above t: one reduction, where a count of the prefixes
    # at or below t and a select of that index would take two. Its length is then one scalar load
    # of the lengths this program has just read. Past the last tile (a program without tiles) the
    # last sequence stands in.
    key = tl.where(incl > t, (incl.to(tl.int64) << 32) + idx.to(tl.int64), 0x7FFFFFFFFFFFFFFF)
    got = tl.min(key, 0)
    b = tl.minimum(got & 0xFFFFFFFF, B - 1).to(tl.int32)
    kv_len = tl.load(KV_LENS + b)
    pair_tiles = tl.maximum((kv_len + BLOCK_N - 1) // BLOCK_N, 1)
    seq_first = (got >> 32).to(tl.int32) - pair_tiles * Hkv
    hk = (t - seq_first) // pair_tiles
    return b, kv_len, pair_tiles, seq_first, hk


@triton.jit
def _store_out(O, o_strides, b, hk, acc, l_i, GROUP, HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr):
    # O[b, hk*GROUP + g, :] = acc[g] / l[g] for a (sequence, kv head) pair done by one program.
    s_ob, s_oh = o_strides
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    gmask = offs_g < GROUP
    out = acc / tl.where(gmask, l_i, 1.0)[:, None]
    ptr = O + b.to(tl.int64) * s_ob + (hk * GROUP + offs_g)[:, None] * s_oh + offs_d[None, :]
    tl.store(ptr, out.to(O.dtype.element_ty), mask=gmask[:, None])


@triton.jit
def _combine_pair(
    PO,
    PL,
    O,
    o_strides,
    b,
    hk,
    bh,
    s_lo,
    s_hi,
    total,
    NUM_PROGRAMS,
    GROUP,
    HEAD_DIM: tl.constexpr,
    GP: tl.constexpr,
    BLOCK_S: tl.constexpr,
    LSE_REPEAT: tl.constexpr,
    WIDE: tl.constexpr,
):
    """Merge partial slots [s_lo, s_hi) of pair bh for all GROUP query heads; write O.

    Each slot's partial is one row of GROUP*D values, loaded as ``[BLOCK_S, GP*D]`` tiles; its
    log-sum-exp, written ``LSE_REPEAT`` (4) times per query head, is loaded in the same shape from
    ``4*g + d % 4``, so both tiles get the same layout and every step (max, weights, sums over the
    slots) stays inside a thread: no shared memory, no barrier. Slots of programs that own no tile
    (only when there are more programs than tiles) were never written and are skipped. Loads bypass
    L1 (``.cg``): the slots were written by other programs.
    """
    offs_s = tl.arange(0, BLOCK_S)
    offs_x = tl.arange(0, GP * HEAD_DIM)
    xok = offs_x < GROUP * HEAD_DIM
    lse_col = (offs_x // HEAD_DIM) * LSE_REPEAT + offs_x % LSE_REPEAT
    m = tl.full((GP * HEAD_DIM,), float("-inf"), dtype=tl.float32)
    den = tl.zeros((GP * HEAD_DIM,), dtype=tl.float32)
    acc = tl.zeros((GP * HEAD_DIM,), dtype=tl.float32)
    for s0 in range(s_lo, s_hi, BLOCK_S):
        slots = s0 + offs_s
        ok = slots < s_hi
        if NUM_PROGRAMS > total:
            prog = slots - bh
            if WIDE:
                prog = prog.to(tl.int64)
            ok = ok & ((prog + 1) * total // NUM_PROGRAMS > prog * total // NUM_PROGRAMS)
        msk = ok[:, None] & xok[None, :]
        lse = tl.load(
            PL + (slots * GROUP * LSE_REPEAT)[:, None] + lse_col[None, :],
            mask=msk,
            other=float("-inf"),
            cache_modifier=".cg",
        )
        part = tl.load(
            PO + (slots * GROUP * HEAD_DIM)[:, None] + offs_x[None, :], mask=msk, other=0.0, cache_modifier=".cg"
        )
        m_new = tl.maximum(m, tl.max(lse, 0))
        m_use = tl.where(m_new > float("-inf"), m_new, 0.0)  # padded heads stay -inf
        w = tl.math.exp2(lse - m_use[None, :])
        scale = tl.math.exp2(m - m_use)
        den = den * scale + tl.sum(w, 0)
        acc = acc * scale + tl.sum(w * part, 0)
        m = m_new
    out = acc / tl.where(xok, den, 1.0)
    s_ob, s_oh = o_strides
    ptr = O + b.to(tl.int64) * s_ob + (hk * GROUP + offs_x // HEAD_DIM) * s_oh + offs_x % HEAD_DIM
    tl.store(ptr, out.to(O.dtype.element_ty), mask=xok)


@triton.jit
def _stream_k_segment(
    t,
    t_end,
    p,
    pair,
    seqs,
    cache,
    io,
    qk_scale,
    GROUP,
    total,
    NUM_PROGRAMS,
    w,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    FUSED: tl.constexpr,
    GP: tl.constexpr,
    BLOCK_S: tl.constexpr,
    WIDE: tl.constexpr,
    FIND: tl.constexpr,
):
    """One piece of program p's run: its tiles from t on that lie in one (sequence, kv head)
    pair; attend, then write the output or a partial (and the plan, or merge when FUSED).
    The pair ``(b, kv_len, pair_tiles, seq_first, hk)``, as :func:`_find_pair` returns it, is
    looked up here when ``FIND``, else ``pair`` (found by the caller). Returns where the piece ends.

    ``seqs = (KV_LENS, NUM_B, Hkv, idx, incl)`` (the lengths and the tile prefix of
    :func:`_tile_prefix`); ``io = (Q, q_strides, O, o_strides, PO, PL, CNT, RNG)``."""
    KV_LENS, NUM_B, Hkv, idx, incl = seqs
    Q, q_strides, O, o_strides, PO, PL, CNT, RNG = io
    if FIND:
        b, kv_len, pair_tiles, seq_first, hk = _find_pair(t, idx, incl, KV_LENS, NUM_B, Hkv, BLOCK_N)
    else:
        b, kv_len, pair_tiles, seq_first, hk = pair
    bh = b * Hkv + hk
    first_tile = seq_first + hk * pair_tiles
    seg_end = tl.minimum(t_end, first_tile + pair_tiles)
    q = _load_q_group(Q, q_strides, b, hk, GROUP, HEAD_DIM, BLOCK_G, UPCAST)
    n_lo = (t - first_tile) * BLOCK_N
    n_hi = tl.minimum((seg_end - first_tile) * BLOCK_N, kv_len)
    acc, l_i, m_i = _attend_range(
        q, cache, b, hk, n_lo, n_hi, qk_scale, HEAD_DIM, BLOCK_G, BLOCK_N, PAGED, PRECISION, UPCAST
    )
    if not FUSED:
        if t == first_tile:
            tl.store(RNG + 2 * bh, p + bh)
        if seg_end == first_tile + pair_tiles:
            tl.store(RNG + 2 * bh + 1, p + bh + 1)
    if (t == first_tile) & (seg_end == first_tile + pair_tiles):
        _store_out(O, o_strides, b, hk, acc, l_i, GROUP, HEAD_DIM, BLOCK_G)
    else:
        # partial layout [NUM_PROGRAMS + BH, GROUP, (D)]
        if FUSED:  # the lse four times per query head: the merge loads it as it loads the partial
            _store_partial(
                PO, PL, (p + bh).to(tl.int64) * GROUP, acc, l_i, m_i, GROUP, HEAD_DIM, BLOCK_G, FUSED_LSE_REPEAT
            )
        else:
            _store_partial(PO, PL, (p + bh).to(tl.int64) * GROUP, acc, l_i, m_i, GROUP, HEAD_DIM, BLOCK_G)
        if FUSED:
            tl.debug_barrier()  # every thread's partial stores precede the release below
            done = tl.atomic_add(CNT + bh, seg_end - t, sem="acq_rel", scope="gpu")
            if done + (seg_end - t) == pair_tiles:
                # the slots of the programs owning the pair's first and last tile
                # (``total`` counts units: w phantom units precede each pair's tiles)
                first_u = first_tile + w * (bh + 1)
                s_lo = _owner(first_u, total, NUM_PROGRAMS, WIDE) + bh
                s_hi = _owner(first_u + pair_tiles - 1, total, NUM_PROGRAMS, WIDE) + bh + 1
                _combine_pair(
                    PO, PL, O, o_strides, b, hk, bh, s_lo, s_hi, total, NUM_PROGRAMS, GROUP,
                    HEAD_DIM, GP, BLOCK_S, FUSED_LSE_REPEAT, WIDE,
                )
                tl.store(CNT + bh, 0)  # the pair is done: leave its counter at zero for the next call
    return seg_end


@triton.jit
def _stream_k_flat(
    t,
    t_end,
    p,
    pair,
    seqs,
    cache,
    io,
    qk_scale,
    GROUP,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Program p's tiles [t, t_end) in one loop over tiles, crossing pair boundaries inside it.

    The pair of the next tile follows from the current one's (the next kv head, or the next
    sequence's first), updated at the end of each iteration as a pointer increment would be, so
    the software pipeline loads the next tiles while the current piece is still being written,
    across pieces. Where a piece ends (its pair's last tile, or the program's last tile) it is
    written as in :func:`_stream_k_segment` (non-fused plan), and the online softmax starts afresh.
    ``pair``, the pair of tile t, comes from :func:`_find_pair`; ``seqs`` and ``io`` as there.
    """
    KV_LENS, B, Hkv, _, _ = seqs
    Q, q_strides, O, o_strides, PO, PL, _, RNG = io
    b, kv_len, pair_tiles, seq_first, hk = pair
    first_tile = seq_first + hk * pair_tiles
    pair_end = first_tile + pair_tiles
    piece_first = t
    m_i = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_G, HEAD_DIM), dtype=tl.float32)
    for tt in range(t, t_end):
        # q of the tile's pair, loaded with the tile (pipelined with K and V; from L2 after the first)
        q = _load_q_group(Q, q_strides, b, hk, GROUP, HEAD_DIM, BLOCK_G, UPCAST)
        offs_n = (tt - first_tile) * BLOCK_N + tl.arange(0, BLOCK_N)
        valid = offs_n < kv_len
        rows = _kv_rows(b, hk, offs_n, valid, cache, PAGED)
        acc, l_i, m_i = _attend_tile(q, cache, rows, valid, qk_scale, acc, l_i, m_i, HEAD_DIM, PRECISION, UPCAST)
        ends_pair = tt + 1 == pair_end
        if ends_pair | (tt + 1 == t_end):
            bh = b * Hkv + hk
            starts_pair = piece_first == first_tile
            if starts_pair:
                tl.store(RNG + 2 * bh, p + bh)
            if ends_pair:
                tl.store(RNG + 2 * bh + 1, p + bh + 1)
            if starts_pair & ends_pair:
                _store_out(O, o_strides, b, hk, acc, l_i, GROUP, HEAD_DIM, BLOCK_G)
            else:
                _store_partial(PO, PL, (p + bh).to(tl.int64) * GROUP, acc, l_i, m_i, GROUP, HEAD_DIM, BLOCK_G)
        # the pair of tile tt + 1: the next one when tt ended this pair
        wrap = ends_pair & (hk + 1 == Hkv)
        hk = tl.where(ends_pair, tl.where(wrap, 0, hk + 1), hk)
        b = tl.where(wrap, b + 1, b)
        nxt = tl.load(KV_LENS + tl.minimum(b, B - 1))
        kv_len = tl.where(wrap, nxt, kv_len)
        first_tile = tl.where(ends_pair, pair_end, first_tile)
        pair_end = tl.where(ends_pair, pair_end + (kv_len + BLOCK_N - 1) // BLOCK_N, pair_end)
        piece_first = tl.where(ends_pair, tt + 1, piece_first)
        m_i = tl.where(ends_pair, float("-inf"), m_i)
        l_i = tl.where(ends_pair, 0.0, l_i)
        acc = tl.where(ends_pair, 0.0, acc)


@triton.jit
def _stream_k_pieces(
    t,
    t_end,
    p,
    pair,
    seqs,
    cache,
    io,
    qk_scale,
    GROUP,
    total,
    NUM_PROGRAMS,
    w,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    FUSED: tl.constexpr,
    GP: tl.constexpr,
    BLOCK_S: tl.constexpr,
    WIDE: tl.constexpr,
):
    """Program p's tiles [t, t_end) piece by piece: one call of :func:`_stream_k_segment` per
    (sequence, kv head) pair its run touches. The first piece runs outside the loop over pieces
    (its tile loop is then a top-level loop), with ``pair``, the pair of tile t the caller found."""
    if t < t_end:
        t = _stream_k_segment(
            t, t_end, p, pair, seqs, cache, io, qk_scale, GROUP, total, NUM_PROGRAMS, w,
            HEAD_DIM, BLOCK_G, BLOCK_N, PAGED, PRECISION, UPCAST, FUSED, GP, BLOCK_S, WIDE, False,
        )
    while t < t_end:
        t = _stream_k_segment(
            t, t_end, p, pair, seqs, cache, io, qk_scale, GROUP, total, NUM_PROGRAMS, w,
            HEAD_DIM, BLOCK_G, BLOCK_N, PAGED, PRECISION, UPCAST, FUSED, GP, BLOCK_S, WIDE, True,
        )


@triton.jit
def _stream_k_kernel(
    Q,
    q_strides,
    cache,
    KV_LENS,
    PO,
    PL,
    O,
    o_strides,
    CNT,
    RNG,
    qk_scale,
    Hkv,
    GROUP,
    BH,
    NUM_PROGRAMS,
    NUM_RAGGED,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    B_P2: tl.constexpr,
    PAGED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    FUSED: tl.constexpr,
    WIDE: tl.constexpr,
    GP: tl.constexpr,
    BLOCK_S: tl.constexpr,
    PHANTOM: tl.constexpr = 0,
):
    """Program p handles KV tiles [p*T/P, (p+1)*T/P) of the concatenated KV of all heads.

    Each maximal run of its tiles inside one (sequence, kv head) pair is one piece. A piece
    that is the whole pair is written straight to ``O``. Other pieces are stored as partials
    at slot ``p + bh`` (unique because runs of later programs start at bh or later). With
    ``FUSED`` each such piece then adds its tile count to ``CNT[bh]`` (zeroed by the caller);
    the program whose addition completes the pair's tiles merges the pair's partials and
    writes ``O`` (no waiting, so no program depends on another being resident). Without
    ``FUSED``, :func:`_reduce_kernel` merges them afterwards; for it the programs write the
    plan ``RNG``: ``RNG[2*bh]`` the first slot of pair bh (by the program holding its first
    tile), ``RNG[2*bh+1]`` one past its last slot (by the program holding its last tile), and
    ``RNG[2*BH]`` the total tile count (by program 0), so the reduction needs no prefix sum.

    How a program walks its tiles: with ``FUSED``, piece by piece (:func:`_stream_k_pieces`);
    without, in one loop across pair boundaries (:func:`_stream_k_flat`) when its run crosses
    one, piece by piece when it lies inside one pair.
    """
    p = tl.program_id(0)
    idx, lens, seq_tiles, incl = _tile_prefix(KV_LENS, Hkv, BH // Hkv, BLOCK_N, B_P2)
    total = tl.sum(seq_tiles, 0)
    if PHANTOM > 0:
        # unequal tile counts: PHANTOM phantom units before each pair, so a run that crosses a pair
        # boundary holds that many fewer tiles (see _real_tile), and all NUM_RAGGED programs of
        # the grid take part (NUM_PROGRAMS, a multiple of the pairs, only serves equal counts)
        ragged = tl.max(seq_tiles, 0) * (BH // Hkv) != total
        w = tl.where(ragged, PHANTOM, 0)
        units = total + w * BH
        n_prog = tl.where(ragged, NUM_RAGGED, NUM_PROGRAMS)
    else:
        w = 0
        units = total
        n_prog = NUM_PROGRAMS
    if not FUSED:
        if p == 0:
            tl.store(RNG + 2 * BH, units)
    if WIDE:  # p * units may not fit 32 bits
        x = (p.to(tl.int64) * units // n_prog).to(tl.int32)
        x_end = ((p.to(tl.int64) + 1) * units // n_prog).to(tl.int32)
    else:
        x = p * units // n_prog
        x_end = (p + 1) * units // n_prog
    t = x
    t_end = x_end
    if PHANTOM > 0:
        if ragged:
            t = _real_tile(tl.minimum(x, units), units, total, idx, incl, lens, w, Hkv, BLOCK_N)
            t_end = _real_tile(tl.minimum(x_end, units), units, total, idx, incl, lens, w, Hkv, BLOCK_N)
        else:  # programs beyond NUM_PROGRAMS hold no tile
            t = tl.minimum(x, total)
            t_end = tl.minimum(x_end, total)
    # the pair of the program's first tile, found once for the choice of walk and the walk itself
    pair = _find_pair(t, idx, incl, KV_LENS, BH // Hkv, Hkv, BLOCK_N)
    seqs = (KV_LENS, BH // Hkv, Hkv, idx, incl)
    io = (Q, q_strides, O, o_strides, PO, PL, CNT, RNG)
    if FUSED:  # piece by piece: each piece ends in its pair's counter update
        crosses = False
    else:  # the one loop only for runs that cross a pair boundary
        _, _, pair_tiles, seq_first, hk = pair
        crosses = t_end > seq_first + (hk + 1) * pair_tiles
    if crosses:  # one loop over the program's tiles (no fused merge)
        if t < t_end:
            _stream_k_flat(
                t, t_end, p, pair, seqs, cache, io, qk_scale, GROUP, HEAD_DIM, BLOCK_G, BLOCK_N, PAGED, PRECISION,
                UPCAST,
            )
    else:
        _stream_k_pieces(
            t, t_end, p, pair, seqs, cache, io, qk_scale, GROUP, units, n_prog, w,
            HEAD_DIM, BLOCK_G, BLOCK_N, PAGED, PRECISION, UPCAST, FUSED, GP, BLOCK_S, WIDE,
        )


@triton.jit
def _merge_slots(PO, PL, slots, ok, g, GROUP, m, den, acc, HEAD_DIM: tl.constexpr):
    # Fold partial slots ``slots`` (where ``ok``) of query head g into the running (m, den, acc).
    offs_d = tl.arange(0, HEAD_DIM)
    lse = tl.load(PL + slots * GROUP + g, mask=ok, other=float("-inf"))
    part = tl.load(
        PO + (slots * GROUP + g)[:, None] * HEAD_DIM + offs_d[None, :], mask=ok[:, None], other=0.0
    )
    m_new = tl.maximum(m, tl.max(lse, 0))
    w = tl.math.exp2(lse - m_new)
    scale = tl.math.exp2(m - m_new)
    return m_new, den * scale + tl.sum(w, 0), acc * scale + tl.sum(w[:, None] * part, 0)


@triton.jit
def _reduce_kernel(
    PO,
    PL,
    Out,
    RNG,
    Hq,
    Hkv,
    GROUP,
    BH,
    NUM_PIECES,
    GUESS,
    s_ob,
    s_oh,
    HEAD_DIM: tl.constexpr,
    BLOCK_S: tl.constexpr,
    STREAM_K: tl.constexpr,
    GUESS_P2: tl.constexpr,
    WIDE: tl.constexpr,
    PDL: tl.constexpr = False,
):
    """Merge the partials of query head (b, h) by their log-sum-exp weights; write Out[b, h].

    Stream-K: the slot range of pair bh and the total tile count come from the plan ``RNG``
    written by :func:`_stream_k_kernel` (split-KV does not read ``RNG``). With ``GUESS_P2`` > 0
    (the host sets ``GUESS`` to ``NUM_PIECES // BH`` when that divides evenly, and ``GUESS_P2``
    to its next power of two) the ``GUESS`` slots that pair bh has when all lengths are equal,
    from ``bh*(GUESS+1)``, are loaded at once, together with the plan rather than after it;
    they are used when the plan agrees, otherwise the plan's range is loaded as usual.

    ``PDL`` (launched as a programmatic dependent of the first kernel, which lets it start early):
    its programs compute their indices, then wait for the first kernel's grid to finish and its
    writes to be visible before any load.
    """
    row = tl.program_id(0)
    b = row // Hq
    h = row % Hq
    bh = b * Hkv + h // GROUP
    g = h % GROUP
    if PDL:
        gdc_wait()
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    m = tl.full((), float("-inf"), dtype=tl.float32)
    den = tl.zeros((), dtype=tl.float32)
    acc = tl.zeros((HEAD_DIM,), dtype=tl.float32)
    if STREAM_K:
        if GUESS_P2 > 0:
            offs_q = tl.arange(0, GUESS_P2)
            g_lo = bh * (GUESS + 1)
            q_slots = g_lo + offs_q
            in_q = offs_q < GUESS
            lse_q = tl.load(PL + q_slots * GROUP + g, mask=in_q, other=float("-inf"))
            part_q = tl.load(
                PO + (q_slots * GROUP + g)[:, None] * HEAD_DIM + offs_d[None, :],
                mask=in_q[:, None],
                other=0.0,
            )
        s_lo = tl.load(RNG + 2 * bh)
        s_hi = tl.load(RNG + 2 * bh + 1)
        total = tl.load(RNG + 2 * BH)
        if WIDE:  # program * total may not fit 32 bits
            total = total.to(tl.int64)
        # a pair inside one program's run (one slot) was written to Out by that program:
        # no slots to merge, nothing to store
        need = offs_d < tl.where(s_hi - s_lo > 1, HEAD_DIM, 0)
        s_hi = tl.where(s_hi - s_lo > 1, s_hi, s_lo)
        if GUESS_P2 > 0:
            hit = (s_lo == g_lo) & (s_hi == g_lo + GUESS)
            if hit:
                prog = q_slots - bh
                if WIDE:
                    prog = prog.to(tl.int64)
                ok = in_q & ((prog + 1) * total // NUM_PIECES > prog * total // NUM_PIECES)  # owned a tile
                lse_q = tl.where(ok, lse_q, float("-inf"))
                m = tl.max(lse_q, 0)
                w = tl.math.exp2(lse_q - m)
                den = tl.sum(w, 0)
                acc = tl.sum(w[:, None] * tl.where(ok[:, None], part_q, 0.0), 0)
                s_hi = s_lo  # nothing left to load
    else:
        s_lo = bh.to(tl.int64) * NUM_PIECES
        s_hi = s_lo + NUM_PIECES
        need = offs_d < HEAD_DIM  # all true
    for s0 in range(s_lo, s_hi, BLOCK_S):
        slots = s0 + offs_s
        ok = slots < s_hi
        if STREAM_K:  # skip programs that owned no tile (only when there are fewer tiles than programs)
            prog = slots - bh
            if WIDE:
                prog = prog.to(tl.int64)
            ok = ok & ((prog + 1) * total // NUM_PIECES > prog * total // NUM_PIECES)
        m, den, acc = _merge_slots(PO, PL, slots, ok, g, GROUP, m, den, acc, HEAD_DIM)
    out = acc / tl.where(need, den, 1.0)
    tl.store(Out + b.to(tl.int64) * s_ob + h * s_oh + offs_d, out.to(Out.dtype.element_ty), mask=need)
