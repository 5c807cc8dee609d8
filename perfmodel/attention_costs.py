"""Attention cost helpers: the schedules attention kernels run, vectorised with numpy.

- :func:`flash_splits`: the KV split count flash-attention (v2) picks (PyTorch SDPA's flash backend);
- :func:`flash_block_n`: the KV block of its split-KV kernel;
- :func:`prefill_schedule_s`: prefill attention as (sequence, head, query tile) programs over the SMs;
- :func:`triton_decode_pieces`: programs and KV pieces of our Triton decode kernels (split-KV, stream-K),
  by the rules of :mod:`perfmodel.decode_schedule` (shared with the kernels' launcher);
- :func:`triton_general_decode`: the tile of the general split-KV kernel, for the decodes it runs.

``perfmodel.costs`` prices attention ops with them; they hold no state.
"""

from __future__ import annotations

import numpy as np

from perfmodel.hw.spec import GPU, Dtype
from perfmodel import decode_schedule as ds
from perfmodel.calibration import ClassParams, SplitRule
from perfmodel.ops import Attention, Phase, window_keys


def flash_splits(units, n_blocks, slots: int, max_splits: int = 128):
    """KV splits the flash-attention (v2) forward picks, vectorised.

    Flash-attention splits the KV axis only when the ``units`` (batch x heads x 64-row query
    blocks) fill under 80% of ``slots`` (2 x SMs: two 128-thread blocks per SM).  Among split
    counts up to ``min(max_splits, slots, n_blocks)`` that change the blocks per split, it takes
    the smallest whose wave efficiency ``w / ceil(w)`` (``w = units * splits / slots``) is within
    85% of the best (Dao et al., flash-attention ``num_splits_heuristic``).

    Evaluated once per distinct (units, n_blocks) pair, so a million-point sweep stays cheap; when
    the two broadcast over different axes (a grid), the pairs are the product of each one's distinct
    values and no sort of the whole grid is needed.
    """
    u0, n0 = np.asarray(units, dtype=np.float64), np.asarray(n_blocks, dtype=np.float64)
    shape = np.broadcast_shapes(u0.shape, n0.shape)
    ub = u0.reshape((1,) * (len(shape) - u0.ndim) + u0.shape)
    nb = n0.reshape((1,) * (len(shape) - n0.ndim) + n0.shape)
    if len(shape) and all(a == 1 or b == 1 for a, b in zip(ub.shape, nb.shape)):
        uu, iu = np.unique(np.round(ub), return_inverse=True)
        nn, in_ = np.unique(np.round(nb), return_inverse=True)
        table = np.ones((uu.size, nn.size))
        need = uu < 0.8 * slots
        if np.any(need):
            table[need] = _split_table(uu[need], nn, slots, max_splits)
        return table[iu.reshape(ub.shape), in_.reshape(nb.shape)]
    u, n = np.broadcast_arrays(u0, n0)
    out = np.ones(u.shape)
    need = u < 0.8 * slots
    if not np.any(need):
        return out if out.ndim else float(out)
    key = np.round(u[need]) * 1e9 + np.round(n[need])
    uniq, inv = np.unique(key, return_inverse=True)
    uu = np.floor(uniq / 1e9)
    nn = uniq - uu * 1e9
    out[need] = _split_choice(uu, nn, slots, max_splits)[np.ravel(inv)]
    return out if out.ndim else float(out)


def _split_table(uu, nn, slots: int, max_splits: int):
    """:func:`_split_choice` of every (``uu[i]``, ``nn[j]``) pair, a ``(len(uu), len(nn))`` table: the split
    counts a KV length allows are found once per length, the wave efficiencies once per unit count, and
    the best allowed efficiency of a pair is the first allowed count in that unit count's ranking."""
    s = np.arange(1, max_splits + 1, dtype=np.float64)
    allowed = s[None, :] <= np.minimum(min(max_splits, slots), nn)[:, None]
    changes = (s == 1)[None, :] | (np.ceil(nn[:, None] / s) != np.ceil(nn[:, None] / np.maximum(s - 1, 1)))
    mask = allowed & changes  # (lengths, splits)
    w = uu[:, None] * s / slots
    with np.errstate(invalid="ignore", divide="ignore"):  # w = 0 (no units): 0 / 0, never chosen
        e = w / np.ceil(w)  # (units, splits)
    order = np.argsort(-np.where(np.isnan(e), -np.inf, e), axis=1, kind="stable")  # best first
    out = np.empty((uu.size, nn.size))
    for i in range(uu.size):
        best = e[i][order[i]][np.argmax(mask[:, order[i]], axis=1)]  # the best allowed efficiency per length
        with np.errstate(invalid="ignore"):
            ok = mask & (e[i][None, :] >= 0.85 * best[:, None]) & (e[i][None, :] > 0)
        out[i] = np.where(ok.any(axis=1), np.argmax(ok, axis=1) + 1.0, 1.0)
    return out


def _split_choice(uu, nn, slots: int, max_splits: int):
    """The split count of each (units, KV blocks) pair (1-D arrays) by the heuristic of :func:`flash_splits`."""
    s = np.arange(1, max_splits + 1, dtype=np.float64)[None, :]
    allowed = s <= np.minimum(min(max_splits, slots), nn)[:, None]
    changes = (s == 1) | (np.ceil(nn[:, None] / s) != np.ceil(nn[:, None] / np.maximum(s - 1, 1)))
    w = uu[:, None] * s / slots
    with np.errstate(invalid="ignore", divide="ignore"):  # w = 0 (no units): 0 / 0, not chosen
        eff = np.where(allowed & changes, w / np.ceil(w), 0.0)
    ok = (eff >= 0.85 * eff.max(axis=1, keepdims=True)) & (eff > 0)
    return np.where(ok.any(axis=1), np.argmax(ok, axis=1) + 1.0, 1.0)


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
    programs per slot).  KV splits divide each program's keys.  With a sliding window (``op.window``)
    a tile reads at most ``window + tile_m - 1`` keys (:func:`perfmodel.ops.window_keys`), so the time
    grows linearly in the context beyond the window.
    """
    bm = float(p.tile_m or 128)
    q = np.asarray(op.q_len, dtype=np.float64)
    kv = np.asarray(op.kv_len, dtype=np.float64)
    tiles = np.ceil(q / bm)
    units = np.asarray(op.batch, dtype=np.float64) * np.asarray(op.q_heads, dtype=np.float64) * tiles * splits
    # a window caps the keys of a tile: its ``bm`` rows read the last ``window + bm - 1`` at most
    cap = np.asarray(window_keys(kv, op.window, bm), dtype=np.float64)
    if op.causal:
        mean_keys = kv - q + bm * (tiles + 1.0) / 2.0
        if op.window > 0:
            mean_keys = mean_keys - _mean_tile_excess(kv - q, bm, tiles, op.window + bm - 1.0)
        mean_keys = np.clip(mean_keys, 1.0, cap)
    else:
        mean_keys = cap
    mean_keys, max_keys = mean_keys / splits, cap / splits
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


def _mean_tile_excess(past, bm: float, tiles, cap: float):
    """Mean over ``tiles`` causal query tiles of ``max(past + (t + 1) * bm - cap, 0)``: the keys of tile
    ``t`` (of a prefill after ``past`` cached tokens) beyond a window's cap; 0 when ``cap`` is at least
    ``past + tiles * bm`` (a window as long as the context)."""
    under = np.clip(np.floor((cap - past) / bm), 0.0, tiles)  # tiles within the cap
    over = tiles - under
    excess = over * (past - cap) + bm * (tiles * (tiles + 1.0) - under * (under + 1.0)) / 2.0
    return excess / np.maximum(tiles, 1.0)


def triton_general_decode(op: Attention):
    """``(block_g, block_n)`` of the general split-KV kernel when a decode ``op`` runs it
    (:func:`perfmodel.decode_schedule.runs_general`: another head size, a value head of its own
    size, an fp8 cache, MLA's latent), else None."""
    dv = op.v_head_dim or op.head_dim
    fp8 = op.kv_dtype is Dtype.FP8
    if op.phase is not Phase.DECODE or not ds.runs_general(op.head_dim, dv, fp8, op.kv_shared):
        return None
    block_g, block_n, _, _ = ds.general_tile(op.head_dim, dv, op.q_heads // op.kv_heads, op.kv_shared)
    return block_g, block_n


def triton_decode_block_n(rule: SplitRule, head_dim):
    """Keys per KV tile of our Triton decode kernels (:func:`perfmodel.decode_schedule.block_n`)."""
    out = ds.block_n(_SCHEDULE_OF_RULE.get(rule, ds.DecodeSchedule.SPLIT_KV), head_dim)
    return np.asarray(out, dtype=np.float64) if np.ndim(out) else float(out)


_SCHEDULE_OF_RULE = {SplitRule.FILL: ds.DecodeSchedule.SPLIT_KV, SplitRule.STREAM_K: ds.DecodeSchedule.STREAM_K}


def triton_decode_pieces(units, kv_len, slots: int, rule: SplitRule, sm_count: int | None = None, head_dim=128,
                         tile: int | None = None):
    """(programs, KV pieces per (sequence, kv head)) of our Triton decode kernels, by the rules of
    :mod:`perfmodel.decode_schedule` with the shipped settings.

    split-KV (``SplitRule.FILL``): chunks of whole tiles aiming at ``slots`` programs
    (:func:`~perfmodel.decode_schedule.split_kv_pieces`).  Stream-K (``SplitRule.STREAM_K``):
    :func:`~perfmodel.decode_schedule.stream_k_programs` on ``sm_count`` SMs (``slots`` when not
    given) over the ``units`` (sequence, kv head) pairs, with the mean pieces per pair of uniform
    lengths (:func:`~perfmodel.decode_schedule.stream_k_pieces_per_pair`). ``tile``: keys per
    split-KV tile (default :data:`~perfmodel.decode_schedule.BLOCK_N`).
    """
    kv = np.asarray(kv_len, dtype=np.float64)
    u = np.asarray(units, dtype=np.float64)
    tile = triton_decode_block_n(rule, head_dim)
    if rule == SplitRule.STREAM_K:
        u = np.maximum(u, 1.0)
        n_tiles = np.maximum(np.ceil(kv / tile), 1.0)
        programs = np.asarray(ds.stream_k_programs(u, n_tiles, int(sm_count or slots)), dtype=np.float64)
        return programs, ds.stream_k_pieces_per_pair(programs, u)
    _, pieces = ds.split_kv_pieces(u, kv, slots, tile or ds.BLOCK_N)
    return u * pieces, pieces
