"""Cost of an elementwise op (norms, activations, residual adds, KV appends) under its kernel's curve
(:class:`ElementwiseParams`): a roofline with an occupancy floor for row kernels, a row-length knee and a
working set held in the cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perfmodel.hw.spec import GPU, Dtype
from perfmodel.costs.base import Bound, RooflineParams, OpCost, roofline, unit_waves_s
from perfmodel.ops import Elementwise, bytes_moved, flops

if TYPE_CHECKING:
    from perfmodel.calibration import Profile


@dataclass(frozen=True)
class ElementwiseParams(RooflineParams):
    """Achieved-fraction curve of the ``elementwise`` class or of one named kernel (``rmsnorm``, ...).

    Attributes
    ----------
    compute_eff, memory_eff : float, fractions of peak FLOP/s and bandwidth in (0, 1.5]
    latency_s : float, seconds per kernel
    overlap : float in [0, 1]
    ramp_flops, ramp_bytes : float, FLOPs / bytes at which half of the efficiency is reached (0: none)
    bandwidth_bytes_per_s : float, overrides the datasheet bandwidth (0: datasheet)
    knee_bytes : float, size above which ``tail_memory_eff`` applies to the extra bytes (0: none)
    tail_memory_eff : float, memory efficiency of the bytes beyond ``knee_bytes`` (0: ``memory_eff``)
    wave_quant : float in [0, 1], weight of the partial last wave of work units
    units_per_sm : float, row kernels: blocks (one per row) resident per SM at once (0: no occupancy
        term; :func:`perfmodel.costs.base.unit_waves_s`)
    unit_overhead_s : float, fixed seconds of one block
    unit_memory_eff : float, streaming rate of one block as a fraction of the bandwidth per SM (0: none)
    unit_step_s : float, seconds per step of one block its byte stream does not hide (0: none)
    row_knee_bytes : float, row kernels: rows of more activation bytes than this no longer stay on chip
        between the kernel's passes over the row and stream at ``row_tail_memory_eff`` (0: off)
    row_tail_memory_eff : float, memory efficiency of rows longer than ``row_knee_bytes`` (0: ``memory_eff``)
    row_knee_width_bytes : float, the knee is a ramp of this many row bytes instead of a step (0: a step):
        a row of ``row_knee_bytes + f * row_knee_width_bytes`` bytes (f in [0, 1]) pays the share ``f`` of
        the tail's extra time per byte (rows just past the knee still keep part of the row on chip)
    cache_bytes : float, an op of at most this many bytes streams all of them at ``cache_memory_eff`` (its
        working set stays in L2 between runs); a larger one misses the cache as a whole (cyclic reuse
        evicts what the next run needs) and follows the knee form (0: off)
    cache_memory_eff : float in [0, 4], rate of the bytes of an op within ``cache_bytes``, as a fraction of
        the HBM bandwidth (above 1: L2) (0: ``memory_eff``)
    step_s : float, seconds of each of an op's ``serial_steps`` (dependent loads of one thread), added to
        its latency (0: off)
    """

    wave_quant: float = 1.0
    units_per_sm: float = 0.0
    unit_overhead_s: float = 0.0
    unit_memory_eff: float = 0.0
    unit_step_s: float = 0.0
    row_knee_bytes: float = 0.0
    row_tail_memory_eff: float = 0.0
    row_knee_width_bytes: float = 0.0
    cache_bytes: float = 0.0
    cache_memory_eff: float = 0.0
    step_s: float = 0.0


def elementwise_rows(op: Elementwise):
    """Rows of a row-wise elementwise kernel (a norm), or None when the descriptor does not say.

    An explicit ``rows`` attribute wins.  An ``rmsnorm`` descriptor (``bytes = (2 rows + 1) *
    hidden * a``, ``flops = 4 rows * hidden``) determines its rows for the one activation width
    ``a`` in {4, 2, 1} bytes that gives a whole row of at least one element and at least one row.
    """
    rows = getattr(op, "rows", None)
    if rows is not None:
        return rows
    if op.name != "rmsnorm" or not np.any(op.flops):
        return None
    by = np.asarray(op.bytes, dtype=np.float64)
    fl = np.asarray(op.flops, dtype=np.float64)
    out = np.full(np.broadcast(by, fl).shape, np.nan)
    for a in (4.0, 2.0, 1.0):
        hidden = by / a - fl / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(hidden >= 1.0, fl / (4.0 * hidden), 0.0)
        out = np.where(np.isnan(out) & (t >= 0.999), np.round(t), out)
    return out


def row_memory_eff(row_bytes, p: ElementwiseParams):
    """Memory efficiency of a row kernel whose rows hold ``row_bytes`` activation bytes.

    Rows up to ``p.row_knee_bytes`` stream at ``p.memory_eff``; longer rows at ``p.row_tail_memory_eff``.
    With ``p.row_knee_width_bytes`` the change is a ramp: the time per byte moves linearly from the
    head's to the tail's over that many row bytes past the knee.
    """
    rb = np.asarray(row_bytes, dtype=np.float64)
    tail_eff = p.row_tail_memory_eff or p.memory_eff
    if p.row_knee_width_bytes > 0:
        share = np.clip((rb - p.row_knee_bytes) / p.row_knee_width_bytes, 0.0, 1.0)
    else:
        share = (rb > p.row_knee_bytes).astype(np.float64)
    return 1.0 / ((1.0 - share) / p.memory_eff + share / tail_eff)


def elementwise_cost(op: Elementwise, gpu: GPU, prof: Profile) -> OpCost:
    """One elementwise op under its kernel's curve (the class curve for a kernel without one), seconds."""
    p = prof.elementwise_params(op.name)
    floor, eff = 0.0, None
    if p.units_per_sm > 0 or p.row_knee_bytes > 0:
        rows = elementwise_rows(op)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.float64)
            known = np.isfinite(rows) & (rows >= 1)
            safe = np.where(known, rows, 1.0)
            # a row's activation bytes: bytes = (2 rows + 1) x row bytes (read, write, and the weight)
            row_bytes = np.asarray(op.bytes, dtype=np.float64) / (2.0 * safe + 1.0)
            if p.units_per_sm > 0:
                # one block per row streams its input row, its output row and the whole weight vector
                # (each block reads the weight, from L2 after the first): 3 row bytes per block
                block_bytes = 3.0 * row_bytes * safe
                floor = np.where(
                    known, unit_waves_s(safe, block_bytes, gpu.sm_count, gpu.hbm_bytes_per_s, p), 0.0
                )
            if p.row_knee_bytes > 0:
                eff = np.where(known, row_memory_eff(row_bytes, p), p.memory_eff)
    if p.cache_bytes > 0:
        # a working set that fits the cache streams at the cache rate; a larger one misses it as a whole
        by = np.asarray(bytes_moved(op), dtype=np.float64)
        eff = np.where(
            by <= p.cache_bytes, p.cache_memory_eff or p.memory_eff, p.memory_eff if eff is None else eff
        )
    serial_s = 0.0
    if p.step_s > 0 and op.serial_steps is not None:  # a dependent chain of one thread
        serial_s = np.multiply(op.serial_steps, p.step_s)
        serial_s = serial_s if np.ndim(serial_s) else float(serial_s)
    return roofline(
        flops(op),
        bytes_moved(op),
        gpu.flops_for(Dtype.FP32),
        gpu.hbm_bytes_per_s,
        p,
        Bound.HBM_BANDWIDTH,
        memory_floor_s=floor,
        extra_latency_s=serial_s,
        memory_eff=eff,
    )
