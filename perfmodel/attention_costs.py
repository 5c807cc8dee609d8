"""Attention cost helpers: the schedules attention kernels run, vectorised with numpy.

- :func:`flash_splits`: the KV split count flash-attention (v2) picks (PyTorch SDPA's flash backend);
- :func:`flash_block_n`: the KV block of its split-KV kernel;
- :func:`prefill_schedule_s`: prefill attention as (sequence, head, query tile) programs over the SMs;
- :func:`triton_decode_pieces`: programs and KV pieces of our Triton decode kernels (split-KV, stream-K).
- :func:`stream_k_fused`: where stream-K merges in its own kernel.

``perfmodel.costs`` prices attention ops with them; they hold no state.
"""

from __future__ import annotations

import numpy as np

from hw.spec import GPU
from perfmodel.calibration import SPLIT_STREAM, ClassParams
from perfmodel.ops import Attention


def flash_splits(units, n_blocks, slots: int, max_splits: int = 128):
    """KV splits the flash-attention (v2) forward picks, vectorised.

    Flash-attention splits the KV axis only when the ``units`` (batch x heads x 64-row query
    blocks) fill under 80% of ``slots`` (2 x SMs: two 128-thread blocks per SM).  Among split
    counts up to ``min(max_splits, slots, n_blocks)`` that change the blocks per split, it takes
    the smallest whose wave efficiency ``w / ceil(w)`` (``w = units * splits / slots``) is within
    85% of the best (Dao et al., flash-attention ``num_splits_heuristic``).

    Evaluated once per distinct (units, n_blocks) pair, so a million-point sweep stays cheap.
    """
    u, n = np.broadcast_arrays(np.asarray(units, dtype=np.float64), np.asarray(n_blocks, dtype=np.float64))
    out = np.ones(u.shape)
    need = u < 0.8 * slots
    if not np.any(need):
        return out if out.ndim else float(out)
    key = np.round(u[need]) * 1e9 + np.round(n[need])
    uniq, inv = np.unique(key, return_inverse=True)
    uu = np.floor(uniq / 1e9)
    nn = uniq - uu * 1e9
    s = np.arange(1, max_splits + 1, dtype=np.float64)[None, :]
    allowed = s <= np.minimum(min(max_splits, slots), nn)[:, None]
    changes = (s == 1) | (np.ceil(nn[:, None] / s) != np.ceil(nn[:, None] / np.maximum(s - 1, 1)))
    w = uu[:, None] * s / slots
    with np.errstate(invalid="ignore", divide="ignore"):  # w = 0 (no units): 0 / 0, not chosen
        eff = np.where(allowed & changes, w / np.ceil(w), 0.0)
    ok = (eff >= 0.85 * eff.max(axis=1, keepdims=True)) & (eff > 0)
    choice = np.where(ok.any(axis=1), np.argmax(ok, axis=1) + 1.0, 1.0)
    out[need] = choice[np.ravel(inv)]
    return out if out.ndim else float(out)


def flash_block_n(head_dim):
    """KV block of the flash split-KV kernel (256 keys up to head_dim 64, 128 up to 128, else 64)."""
    d = np.asarray(head_dim, dtype=np.float64)
    return np.where(d <= 64, 256.0, np.where(d <= 128, 128.0, 64.0))


def prefill_schedule_s(op: Attention, gpu: GPU, p: ClassParams, splits, math_peak_flops_per_s: float):
    """Compute time of prefill attention as (sequence, head, query tile) programs over the SMs.

    Each program (a ``tile_m``-row query tile, 128 if unset) loops over its keys: it costs
    ``unit_overhead_s + tile_m * (4 * head_dim + score_flops) * keys / (unit_compute_eff * peak / SMs)``
    (``score_flops``: the softmax work of one score, which does not shrink with the head).  With
    a causal mask the tile ``t`` of ``T`` sees ``kv - q + (t + 1) * tile_m`` keys, so the last
    tiles do most of the work.  ``units_per_sm * SMs`` programs run at once (flash-attention 2
    runs one query tile per thread block and loops over key blocks, Dao 2023).  The makespan is
    at least the longest program and at least the mean load of a slot plus ``wave_quant`` of a
    mean program (the tail of list scheduling); without a causal mask the programs are equal, so
    that tail is at most the idle part of the last wave (``ceil(x) - x`` programs for ``x``
    programs per slot).  KV splits divide each program's keys.
    """
    bm = float(p.tile_m or 128)
    q = np.asarray(op.q_len, dtype=np.float64)
    kv = np.asarray(op.kv_len, dtype=np.float64)
    tiles = np.ceil(q / bm)
    units = np.asarray(op.batch, dtype=np.float64) * np.asarray(op.q_heads, dtype=np.float64) * tiles * splits
    if op.causal:
        mean_keys = np.clip(kv - q + bm * (tiles + 1.0) / 2.0, 1.0, kv)
    else:
        mean_keys = kv
    mean_keys, max_keys = mean_keys / splits, kv / splits
    rate = p.unit_compute_eff * math_peak_flops_per_s / gpu.sm_count
    # programs sharing an SM split its math; fewer programs than slots each run faster
    per_sm = max(p.units_per_sm, 1.0)
    rate = rate * per_sm / np.clip(units / gpu.sm_count, 1.0, per_sm)
    per_key_s = bm * (4.0 * np.asarray(op.head_dim, dtype=np.float64) + p.score_flops) / rate
    t_mean = p.unit_overhead_s + mean_keys * per_key_s
    t_max = p.unit_overhead_s + max_keys * per_key_s
    if p.unit_share > 0:
        # the longest program speeds up once the shorter ones on its SM finish, up to a share
        # ``unit_share`` of the SM's math rate (``per_sm`` programs at the base rate fill it)
        sm_rate = p.unit_compute_eff * math_peak_flops_per_s / gpu.sm_count * per_sm
        key_flops = bm * (4.0 * np.asarray(op.head_dim, dtype=np.float64) + p.score_flops)
        t_max = np.minimum(t_max, p.unit_overhead_s + max_keys * key_flops / (p.unit_share * sm_rate))
    slots = max(p.units_per_sm, 1.0) * gpu.sm_count
    tail = p.wave_quant
    if not op.causal:
        # equal programs: no list-scheduling tail beyond the idle part of the last wave (a grid
        # that fills the slots exactly ends with its one wave)
        x = units / slots
        tail = np.minimum(p.wave_quant, np.ceil(x) - x)
    return np.maximum(t_max, units * t_mean / slots + tail * t_mean)


TRITON_DECODE_BLOCK_N = 64.0  # keys per tile of kernels.attention_decode (split-KV and stream-K)
# stream-K programs per SM in kernels.attention_decode, and the cache size (KV tiles per SM, at
# most) below which it runs one per SM instead (when the (sequence, kv head) pairs fit the SMs)
STREAM_K_PROGRAMS_PER_SM = 2.0
STREAM_K_SMALL_TILES_PER_SM = 32.0


# rows (pieces x padded query heads) the one-wave stream-K merge loads at once
# (``kernels.attention_decode._FUSED_MERGE_ROWS``)
STREAM_K_MERGE_ROWS = 64.0


def stream_k_merge_loads(pieces, group):
    """Loads of partials by the one-wave stream-K merge of a pair cut into ``pieces``: blocks of
    ``STREAM_K_MERGE_ROWS // next_pow2(group)`` pieces (at least one), ``group`` query heads per
    KV head (``kernels.attention_decode``'s ``BLOCK_S``)."""
    g = np.maximum(np.asarray(group, dtype=np.float64), 1.0)
    per_load = np.maximum(np.floor(STREAM_K_MERGE_ROWS / 2.0 ** np.ceil(np.log2(g))), 1.0)
    return np.ceil(np.asarray(pieces, dtype=np.float64) / per_load)


def stream_k_fused(programs, sm_count: int):
    """Whether our stream-K decode merges split pairs inside its own kernel (no reduction kernel):
    where its ``programs`` fit one per SM (``kernels.attention_decode.fused_merge``)."""
    return np.asarray(programs, dtype=np.float64) <= sm_count


def triton_decode_block_n(rule: int, head_dim):
    """Keys per KV tile of our Triton decode kernels: 64, and 128 for stream-K at head_dim <= 64
    (each program then keeps a head_dim-128 tile's bytes in flight)."""
    d = np.asarray(head_dim, dtype=np.float64)
    if rule == SPLIT_STREAM:
        return np.where(d <= 64, 2.0 * TRITON_DECODE_BLOCK_N, TRITON_DECODE_BLOCK_N)
    return np.full(d.shape, TRITON_DECODE_BLOCK_N) if d.ndim else TRITON_DECODE_BLOCK_N


def triton_decode_pieces(units, kv_len, slots: int, rule: int, sm_count: int | None = None, head_dim=128):
    """(programs, KV pieces per (sequence, kv head)) of our Triton decode kernels.

    split-KV (``kernels.attention_decode``): ``splits = ceil(slots / units)`` chunks of whole
    64-key tiles per (sequence, kv head), ``pieces = ceil(kv / chunk)``.  Stream-K (tiles of
    :func:`triton_decode_block_n` keys): ``STREAM_K_PROGRAMS_PER_SM`` programs per SM
    (``sm_count``; ``slots`` when not given), one per SM when all the tiles are at most
    ``STREAM_K_SMALL_TILES_PER_SM`` per SM and the pairs are no more than the SMs, rounded down
    to a multiple of the ``units`` (sequence, kv head) pairs when there are fewer pairs, and at
    most one per tile, share all KV tiles equally.  Rounded, every program's run lies inside one pair (``programs / units`` pieces
    per pair); otherwise a run ends a piece at each pair boundary, about ``programs + units``
    pieces in all.
    """
    kv = np.asarray(kv_len, dtype=np.float64)
    n_tiles = np.maximum(np.ceil(kv / triton_decode_block_n(rule, head_dim)), 1.0)
    if rule == SPLIT_STREAM:
        sms = float(sm_count or slots)
        u = np.maximum(np.asarray(units, dtype=np.float64), 1.0)
        small = (u * n_tiles <= STREAM_K_SMALL_TILES_PER_SM * sms) & (u <= sms)
        target = np.where(small, sms, STREAM_K_PROGRAMS_PER_SM * sms)
        aligned = u <= target
        target = np.where(aligned, np.floor(target / u) * u, target)
        programs = np.maximum(np.minimum(target, u * n_tiles), 1.0)
        pieces = np.where(aligned, np.maximum(programs / u, 1.0), (programs + u) / u)
        return programs, pieces
    splits = np.maximum(np.ceil(slots / units), 1.0)
    chunk = np.ceil(np.ceil(kv / np.minimum(splits, n_tiles)) / TRITON_DECODE_BLOCK_N) * TRITON_DECODE_BLOCK_N
    pieces = np.ceil(kv / chunk)
    return units * pieces, pieces
