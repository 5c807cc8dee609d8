"""Our Triton decode kernels priced by their schedules, vectorised with numpy, and the KV split rules
(:class:`SplitRule`) an attention curve names:

- :func:`triton_decode_pieces`: programs and KV pieces of the split-KV and stream-K kernels, by the rules
  of :mod:`perfmodel.decode_schedule` (shared with the kernels' launcher);
- :func:`triton_general_decode`: the tile of the general split-KV kernel, for the decodes it runs;
- :func:`triton_decode_terms`: the combine or merge time, memory efficiency and occupancy floor of a
  decode those kernels run, for :func:`perfmodel.costs.attention.attention_cost`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import numpy as np

from perfmodel import decode_schedule as ds
from perfmodel.costs.base import unit_waves_s
from perfmodel.hw.spec import GPU, Dtype
from perfmodel.ops import Attention, Phase

if TYPE_CHECKING:
    from perfmodel.costs.attention import AttentionParams


class SplitRule(enum.IntEnum):
    """How an attention kernel splits the KV axis over programs (:attr:`AttentionParams.split_rule`; stored
    as its number in profiles): no split; the flash-attention heuristic over ``2 * SMs`` slots; our
    split-KV kernel (enough splits to fill ``2 * SMs`` programs); our stream-K kernel (programs
    sharing all KV tiles equally). The Triton kernels' rules live in :mod:`perfmodel.decode_schedule`."""

    NONE = 0
    FLASH = 1
    FILL = 2
    STREAM_K = 3


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


_SCHEDULE_OF_RULE = {
    SplitRule.FILL: ds.DecodeSchedule.SPLIT_KV,
    SplitRule.STREAM_K: ds.DecodeSchedule.STREAM_K,
}


def triton_decode_pieces(
    units,
    kv_len,
    slots: int,
    rule: SplitRule,
    sm_count: int | None = None,
    head_dim=128,
    tile: int | None = None,
    num_splits=None,
):
    """(programs, KV pieces per (sequence, kv head)) of our Triton decode kernels, by the rules of
    :mod:`perfmodel.decode_schedule` with the shipped settings.

    split-KV (``SplitRule.FILL``): chunks of whole tiles aiming at ``slots`` programs
    (:func:`~perfmodel.decode_schedule.split_kv_pieces`).  Stream-K (``SplitRule.STREAM_K``):
    :func:`~perfmodel.decode_schedule.stream_k_programs` on ``sm_count`` SMs (``slots`` when not
    given) over the ``units`` (sequence, kv head) pairs, with the mean pieces per pair of uniform
    lengths (:func:`~perfmodel.decode_schedule.stream_k_pieces_per_pair`). ``tile``: keys per
    split-KV tile (default :data:`~perfmodel.decode_schedule.BLOCK_N`); ``num_splits``: split-KV chunks
    per pair instead of the ``slots`` target (the general kernel's :func:`~perfmodel.decode_schedule.general_splits`).
    """
    kv = np.asarray(kv_len, dtype=np.float64)
    u = np.asarray(units, dtype=np.float64)
    tile = triton_decode_block_n(rule, head_dim)
    if rule == SplitRule.STREAM_K:
        u = np.maximum(u, 1.0)
        n_tiles = np.maximum(np.ceil(kv / tile), 1.0)
        programs = np.asarray(ds.stream_k_programs(u, n_tiles, int(sm_count or slots)), dtype=np.float64)
        return programs, ds.stream_k_pieces_per_pair(programs, u)
    _, pieces = ds.split_kv_pieces(u, kv, slots, tile or ds.BLOCK_N, num_splits)
    return u * pieces, pieces


def triton_decode_terms(op: Attention, gpu: GPU, p: AttentionParams, units, heads, rows, kv_read, by):
    """The terms of a decode our Triton kernels run (``p.split_rule`` ``FILL`` or ``STREAM_K``).

    Parameters
    ----------
    op : Attention, a decode op
    gpu : GPU
    p : AttentionParams, the curve of ``op``'s class and impl
    units : float or array, (sequence, kv head, 64-row block) programs before the KV split
    heads, rows : float or array, KV heads and query rows per program (a KV head's query group)
    kv_read : float or array, keys one program's pair walks (a window caps them)
    by : float or array, bytes the op moves

    Returns
    -------
    split_lat : float or array, seconds of the combine kernel or of the in-kernel merge
    eff : array or None, the memory efficiency per element (None: the curve's ``memory_eff``)
    floor : float or array, seconds: the occupancy floor on the memory time
    """
    q = np.asarray(op.q_len, dtype=np.float64)
    slots = 2 * gpu.sm_count
    eff = None
    rule, tile, splits = p.split_rule, None, None
    general = triton_general_decode(op)
    if general is not None:
        # the general split-KV kernel (any schedule asked for): programs of block_g query heads
        block_g, tile = general
        rule = SplitRule.FILL
        units = np.asarray(op.batch, dtype=np.float64) * heads * np.ceil(rows / block_g)
        splits = ds.general_splits(units, gpu.sm_count)
    programs, pieces = triton_decode_pieces(
        units, kv_read, slots, rule, gpu.sm_count, op.head_dim, tile, splits
    )
    split = np.asarray(pieces) > 1 if rule == SplitRule.FILL else np.ones(np.shape(pieces), bool)
    # the combine kernel always runs: its launch, and the fp32 partials (a row of v_head_dim
    # values and a log-sum-exp per query head and piece) written and read back (not
    # stream-K at one wave: see below)
    stream_k = rule == SplitRule.STREAM_K
    fused = ds.fused_merge(programs, gpu.sm_count) if stream_k else False
    split_lat = p.split_latency_s + p.split_piece_s * np.asarray(pieces, dtype=np.float64)
    if p.reduce_bytes_eff > 0:
        dv = np.asarray(op.v_head_dim or op.head_dim, dtype=np.float64)
        pair_units = units if general is None else np.asarray(op.batch, dtype=np.float64) * heads
        partial_bytes = 2.0 * pair_units * pieces * rows * (dv + 1.0) * 4.0
        split_lat = split_lat + partial_bytes / (p.reduce_bytes_eff * gpu.hbm_bytes_per_s)
    if p.reduce_row_s > 0:
        # the combine kernel runs one short, latency-bound program per output row (a query
        # head of a sequence): their count over the SMs
        out_rows = np.asarray(op.batch, dtype=np.float64) * np.asarray(op.q_heads, dtype=np.float64) * q
        split_lat = split_lat + p.reduce_row_s * out_rows / gpu.sm_count
    if stream_k:
        # at one wave no combine kernel runs: where a pair is split, its last program takes the
        # atomic and merges the pair's pieces after its own tiles; unsplit pairs cost nothing
        # ... and one step per load of the pair's partials (blocks of pieces; each load a
        # dependent round trip through L2)
        loads = ds.merge_loads(pieces, op.q_heads / op.kv_heads)
        merge = p.merge_latency_s + p.merge_step_s * loads
        split_lat = np.where(fused, np.where(np.asarray(pieces) > 1, merge, 0.0), split_lat)
    if p.split_memory_eff > 0:
        eff = np.where(split, p.split_memory_eff, p.memory_eff)
    block_n = tile or triton_decode_block_n(rule, op.head_dim)
    tiles = units * np.maximum(np.ceil(kv_read / block_n), 1.0)
    floor = unit_waves_s(programs, by, gpu.sm_count, gpu.hbm_bytes_per_s, p, tiles / programs)
    return split_lat, eff, floor
