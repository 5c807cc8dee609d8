"""Cost of a dense GEMM under its class's curve (:class:`GemmParams`): a roofline with output tiles and
waves, the tile a heuristic library picks, and rows off the 128-byte lines."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perfmodel.hw.spec import GPU
from perfmodel.costs.base import Bound, CurveParams, OpClass, OpCost, op_memo, roofline, waves
from perfmodel.ops import Gemm, bytes_moved, flops

if TYPE_CHECKING:
    from perfmodel.calibration import Profile


@dataclass(frozen=True)
class GemmParams(CurveParams):
    """Achieved-fraction curve of the ``gemm`` class.

    time = blend(compute_s, memory_s, overlap) + waves * tile_overhead_s + latency_s, where

    - compute_s = flops_eff / (peak_flops * compute_eff * flops / (flops + ramp_flops));
    - memory_s = bytes / (bandwidth * memory_eff * bytes / (bytes + ramp_bytes));
    - blend = max(c, m) when overlap = 1, c + m when overlap = 0, linear between.

    The work is cut into output tiles of ``tile_m`` x ``tile_n`` (0 disables them); M and N are padded
    to whole tiles, the M tile shrinking to the next power of two of M (at least ``tile_m_min``) for
    skinny problems; the tiles run in ``waves = ceil(tiles / SMs)``.  ``wave_quant`` in [0, 1] is the
    share of the partial last wave that costs a full wave (1: strict wave quantization; 0: the library
    spreads the tail, e.g. split-K/stream-K).  ``tile_overhead_s`` is paid once per wave (pipeline
    fill, epilogue).

    Attributes
    ----------
    compute_eff : float, fraction of peak FLOP/s in (0, 1.5]
    memory_eff : float, fraction of peak bandwidth in (0, 1.5]
    latency_s : float, seconds added per kernel (launch and fixed cost)
    tile_m, tile_n : int, output tile of the kernel (0: no quantization)
    tile_m_min : int, smallest M tile for skinny problems (0: always ``tile_m``)
    wave_quant : float in [0, 1], weight of the partial-wave penalty
    tile_overhead_s : float, seconds per wave of tiles
    overlap : float in [0, 1]
    ramp_flops : float, FLOPs at which half of ``compute_eff`` is reached (0: none)
    ramp_bytes : float, bytes at which half of ``memory_eff`` is reached (0: none)
    bandwidth_bytes_per_s : float, overrides the datasheet bandwidth (0: datasheet)
    knee_bytes : float, size above which ``tail_memory_eff`` applies to the extra bytes (0: none)
    tail_memory_eff : float, memory efficiency of the bytes beyond ``knee_bytes`` (0: ``memory_eff``)
    tile_choice : int (0: the fitted ``tile_m`` x ``tile_n`` tile; 1: the fastest of
        :data:`GEMM_CANDIDATE_TILES`, each with its own waves, as a heuristic library picks;
        ``tile_m``/``tile_n`` must still be non-zero to switch tiling on)
    small_tile_eff : float in [0, 1], candidate tiles: math-rate factor per halving of the tile
        area below 128 x 256 (0: the same rate for every tile)
    fill_tile_eff : float in [0, 1], a grid of fewer tiles than SMs runs as one full wave of smaller tiles
        (the library shrinks the tile until the grid fills the SMs), at this math-rate factor per halving of the
        tile area, ``log2(SMs / tiles)`` halvings, instead of paying ``wave_quant`` of the idle SMs (0: off)
    misaligned_eff : float in [0, 1], math-rate factor when a row of N or K elements of either operand is not
        a multiple of :data:`GEMM_ALIGN_BYTES` bytes: tile loads then start mid cache line (0: off)
    misaligned_memory_eff : float in [0, 1], factor on ``memory_eff`` for the same misaligned rows: their
        loads cannot move whole 128-byte lines (each row touches one more line, the TMA copies split), so the
        byte stream of a weight-streaming (small-M) GEMM runs slower too (0: off)
    split_k_rows : int, the library splits K of a square-ish weight (:func:`gemm_split_k`) for up to this
        many rows (0: off)
    split_k_s : float, seconds such a split adds (its second kernel, the reduction of the partial sums)
    """

    compute_eff: float = 1.0
    memory_eff: float = 1.0
    latency_s: float = 0.0
    tile_m: int = 0
    tile_n: int = 0
    tile_m_min: int = 0
    wave_quant: float = 1.0
    tile_overhead_s: float = 0.0
    overlap: float = 1.0
    ramp_flops: float = 0.0
    ramp_bytes: float = 0.0
    bandwidth_bytes_per_s: float = 0.0
    knee_bytes: float = 0.0
    tail_memory_eff: float = 0.0
    tile_choice: int = 0
    small_tile_eff: float = 0.0
    fill_tile_eff: float = 0.0
    misaligned_eff: float = 0.0
    misaligned_memory_eff: float = 0.0
    split_k_rows: int = 0
    split_k_s: float = 0.0


def gemm_tile_m(m, p: GemmParams):
    """The M tile used for ``m`` rows: ``tile_m``, or the next power of two of m (>= ``tile_m_min``)."""
    if p.tile_m_min <= 0:
        return np.full(np.shape(m), float(p.tile_m)) if np.ndim(m) else float(p.tile_m)
    m = np.maximum(np.asarray(m, dtype=np.float64), 1.0)
    return np.clip(2.0 ** np.ceil(np.log2(m)), p.tile_m_min, max(p.tile_m, p.tile_m_min))


# Output tiles a heuristic GEMM library chooses among (M x N), largest first (CUTLASS/cuBLAS Hopper
# kernels: 128x256, 256x128, 128x128, ... down to 64x64 for small problems).
GEMM_CANDIDATE_TILES = ((128, 256), (256, 128), (128, 128), (64, 256), (64, 128), (128, 64), (64, 64))
_LARGEST_TILE = 128 * 256


def _gemm_tile_time(m, n, k, tm, tn, gpu: GPU, p: GemmParams):
    """(effective FLOPs, per-wave overhead seconds) of an M x N x K GEMM run in ``tm`` x ``tn`` tiles.

    With ``p.fill_tile_eff`` > 0, a grid of fewer tiles than SMs is not charged a partial wave: the
    library cuts the same padded work into smaller tiles until the grid fills the SMs (one wave),
    each halving of the tile area (``log2(SMs / tiles)`` of them) running at ``fill_tile_eff`` of
    the math rate.
    """
    tiles = np.ceil(m / tm) * np.ceil(n / tn)
    factor, whole = waves(tiles, gpu.sm_count, p.wave_quant)
    if p.small_tile_eff > 0:  # smaller tiles reuse less of each operand load: a lower math rate
        factor = factor / p.small_tile_eff ** np.log2(_LARGEST_TILE / (tm * tn))
    if p.fill_tile_eff > 0:  # the library's own smaller tiles: their rate replaces the two factors above
        fill = 1.0 / p.fill_tile_eff ** np.log2(gpu.sm_count / np.maximum(tiles, 1.0))
        factor = np.where(tiles < gpu.sm_count, fill, factor)
    return 2.0 * tiles * tm * tn * k * factor, whole * p.tile_overhead_s


# Operand rows (N or K elements) whose length is not a multiple of this many bytes start mid cache line
# (the L2 line and the TMA 128-byte swizzle width), so every tile row load touches one more line.
GEMM_ALIGN_BYTES = 128


def gemm_misaligned(op: Gemm):
    """True (an array for array ops) where a row of N or K elements of either operand is not a
    multiple of :data:`GEMM_ALIGN_BYTES` bytes."""
    b_dtype = op.b_dtype or op.dtype
    out = np.zeros(np.broadcast(op.n, op.k).shape, dtype=bool)  # M does not enter: over N and K first
    for dim in (op.n, op.k):
        for dt in (op.dtype, b_dtype):
            row_bytes = np.asarray(dim, dtype=np.float64) * dt.bytes_per_element
            out = out | (np.mod(row_bytes, GEMM_ALIGN_BYTES) != 0)
    return np.broadcast_to(out, np.broadcast(op.m, op.n, op.k).shape)


# cuBLAS on Hopper splits K of few-row GEMMs; on a square-ish weight (K/N in this range, K at least
# SPLIT_K_MIN_K, rows on the 128-byte lines) the split runs a second kernel that costs more than it saves,
# on a long K (K/N of 2.7 and more) it pays for itself (``validation/README.md``, the GEMM tail).  Up to
# how many rows it splits is the library's heuristic and differs per GPU: ``GemmParams.split_k_rows``.
SPLIT_K_ASPECT = (0.75, 1.05)
SPLIT_K_MIN_K = 3072


def gemm_split_k(op: Gemm, p: GemmParams, misaligned=None):
    """True (an array for array ops) where the library is taken to split K at a cost: at most
    ``p.split_k_rows`` rows, K/N within :data:`SPLIT_K_ASPECT`, K at least :data:`SPLIT_K_MIN_K` and
    rows on the 128-byte lines (``misaligned``, :func:`gemm_misaligned` of ``op`` when not given, is False)."""
    m, n, k = (np.asarray(x, dtype=np.float64) for x in (op.m, op.n, op.k))
    aspect = k / n
    out = (
        (m <= p.split_k_rows)
        & (aspect >= SPLIT_K_ASPECT[0])
        & (aspect <= SPLIT_K_ASPECT[1])
        & (k >= SPLIT_K_MIN_K)
        & ~(gemm_misaligned(op) if misaligned is None else misaligned)
    )
    return out if out.ndim else bool(out)


def _best_candidate_tile(m, n, k, gpu: GPU, p: GemmParams, rate_flops_per_s: float):
    """(effective FLOPs, per-wave overhead seconds) of the fastest of :data:`GEMM_CANDIDATE_TILES`, each
    with its waves (a heuristic library's choice)."""
    best_s = best_fl = best_oh = None
    for tm0, tn in GEMM_CANDIDATE_TILES:
        tm = gemm_tile_m(m, dataclasses.replace(p, tile_m=tm0))
        f, oh = _gemm_tile_time(m, n, k, tm, float(tn), gpu, p)
        t = f / rate_flops_per_s + oh
        if best_s is None:
            best_s, best_fl, best_oh = t, f, oh
        else:
            better = t < best_s
            best_s = np.where(better, t, best_s)
            best_fl = np.where(better, f, best_fl)
            best_oh = np.where(better, oh, best_oh)
    return best_fl, best_oh


def gemm_cost(op: Gemm, gpu: GPU, prof: Profile) -> OpCost:
    """One GEMM under the profile's ``gemm`` curve (:class:`GemmParams`).

    Parameters
    ----------
    op : Gemm, sizes may be numpy arrays
    gpu : GPU
    prof : Profile

    Returns
    -------
    OpCost, seconds (arrays of the op's shape for array ops)
    """
    p = prof.params(OpClass.GEMM)
    fl = op_memo(op, "flops", flops)
    fl_eff, extra = None, 0.0
    if p.tile_m > 0 and p.tile_n > 0:
        m, n, k = (np.asarray(x, dtype=np.float64) for x in (op.m, op.n, op.k))
        if p.tile_choice:
            best_fl, extra = _best_candidate_tile(m, n, k, gpu, p, gpu.flops_for(op.dtype) * p.compute_eff)
            fl_eff = np.maximum(best_fl, fl)
        else:
            tm = gemm_tile_m(m, p)
            f, extra = _gemm_tile_time(m, n, k, tm, float(p.tile_n), gpu, p)
            fl_eff = np.maximum(f, fl)
    mem_eff, off = None, None
    if p.misaligned_eff > 0 or p.misaligned_memory_eff > 0:  # rows off the 128-byte lines
        off = op_memo(op, "misaligned", gemm_misaligned)
        if p.misaligned_eff > 0:  # a lower math rate
            fl_eff = fl if fl_eff is None else fl_eff
            fl_eff = np.where(off, np.divide(fl_eff, p.misaligned_eff), fl_eff)
            fl_eff = fl_eff if np.ndim(fl_eff) else float(fl_eff)
        if p.misaligned_memory_eff > 0:  # each row load touches one more line: a lower byte rate
            mem_eff = np.where(off, p.memory_eff * p.misaligned_memory_eff, p.memory_eff)
            mem_eff = mem_eff if np.ndim(mem_eff) else float(mem_eff)
    split_s = 0.0
    if p.split_k_rows > 0 and p.split_k_s > 0:  # the library's split of K: a second kernel
        split_s = np.where(gemm_split_k(op, p, off), p.split_k_s, 0.0)
        split_s = split_s if np.ndim(split_s) else float(split_s)
    return roofline(
        fl,
        op_memo(op, "bytes", bytes_moved),
        gpu.flops_for(op.dtype),
        gpu.hbm_bytes_per_s,
        p,
        Bound.HBM_BANDWIDTH,
        fl_eff,
        extra,
        extra_latency_s=split_s,
        memory_eff=mem_eff,
    )
