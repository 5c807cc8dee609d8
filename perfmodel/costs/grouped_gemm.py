"""Cost of a grouped GEMM: a MoE layer's experts run as one kernel, as serving engines run them.

vLLM's ``fused_moe`` Triton kernel, SGLang's and TensorRT-LLM's MoE kernels (and
``torch._grouped_mm``) sort the token-expert pairs by expert and run every expert's GEMM in one
launch: each program takes a ``tile_m``-row block of one expert's rows and streams that expert's
weight.  Priced as one roofline (:func:`perfmodel.costs.base.roofline`):

- one launch (``latency_s``) per call, not one per expert;
- bytes: the touched experts' weights plus the rows in and out, at ``memory_eff``;
- math at ``compute_eff`` over the padded rows: each group's rows are padded to whole ``tile_m``
  blocks (``groups * ceil(m / groups / tile_m) * tile_m`` rows; the rows are taken as spread evenly
  over the groups, so routing skew enters only through the touched count), with every output element
  also paying ``k_overhead`` steps of the reduction: a tile's fixed prologue and epilogue, which weigh
  more on experts of a short reduction (fine-grained experts: K of 768-2048) than on large ones;
- the output tiles (``tile_m`` x ``tile_n``: each group's padded rows by the columns) run in waves
  over the SMs, a partial last wave after the first costing ``wave_quant`` of a full one
  (:func:`perfmodel.costs.base.waves`; a grid of one partial wave is not charged: it still draws the
  whole bandwidth), in the math and in the weight stream alike: two large experts
  at one row each (Mixtral decode) are 448 tiles of 128 columns, 3.4 waves on 132 SMs.

The profile's ``grouped_gemm`` class sets these (:class:`GroupedGemmParams`).  A calibrated profile
without that class borrows its ``gemm`` class's ``compute_eff``, ``memory_eff``, ``latency_s`` and
``overlap`` (:func:`grouped_gemm_params`); the peak profile prices the datasheet roofline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perfmodel.hw.spec import GPU
from perfmodel.costs.base import Bound, RooflineParams, Mode, OpClass, OpCost, roofline, waves
from perfmodel.ops import GroupedGemm, bytes_moved, flops

if TYPE_CHECKING:
    from perfmodel.calibration import Profile


@dataclass(frozen=True)
class GroupedGemmParams(RooflineParams):
    """Achieved-fraction curve of the ``grouped_gemm`` class: the roofline fields (as
    :class:`perfmodel.costs.gemm.GemmParams`) and the kernel's M tile.

    Attributes
    ----------
    compute_eff, memory_eff : float, fractions of peak FLOP/s and bandwidth in (0, 1.5]
    latency_s : float, seconds per launch
    overlap : float in [0, 1]
    ramp_flops, ramp_bytes : float, FLOPs / bytes at which half of the efficiency is reached (0: none)
    bandwidth_bytes_per_s : float, overrides the datasheet bandwidth (0: datasheet)
    knee_bytes, tail_memory_eff : float, bytes beyond the knee stream at the tail efficiency (0: none)
    tile_m : int, rows of one program; each group's rows are padded to whole tiles (0: no padding)
    k_overhead : float, fixed cost of an output tile, as extra reduction steps per output element
        (math priced as ``2 * rows * n * (k + k_overhead)``; 0: none)
    tile_n : int, columns of one program (0: no wave term)
    wave_quant : float in [0, 1], weight of the partial last wave of output tiles (0: no wave term)
    """

    tile_m: int = 0
    k_overhead: float = 0.0
    tile_n: int = 0
    wave_quant: float = 0.0


#: fields a calibrated profile without a ``grouped_gemm`` class takes from its ``gemm`` class
BORROWED_FROM_GEMM = ("compute_eff", "memory_eff", "latency_s", "overlap")

_PEAK = GroupedGemmParams()


def grouped_gemm_params(prof: Profile) -> GroupedGemmParams:
    """The curve that prices grouped GEMMs under ``prof``.

    The ``grouped_gemm`` class when the profile has one; else, in calibrated mode, the ``gemm``
    class's efficiencies, latency and overlap (:data:`BORROWED_FROM_GEMM`; no tile padding);
    else the peak curve (efficiency 1, latency 0).
    """
    own = prof.classes.get(OpClass.GROUPED_GEMM)
    if own is not None:
        return own
    gemm = prof.classes.get(OpClass.GEMM)
    if prof.mode is Mode.CALIBRATED and gemm is not None:
        return GroupedGemmParams(**{f: getattr(gemm, f) for f in BORROWED_FROM_GEMM})
    return _PEAK


def grouped_padded_rows(groups, m, tile_m: int):
    """Rows the kernel computes: each of ``groups`` groups pads its share of ``m`` rows to whole
    ``tile_m`` blocks (at least one block per group); ``m`` when ``tile_m`` is 0."""
    m = np.asarray(m, dtype=np.float64)
    if tile_m <= 0:
        return m if m.ndim else float(m)
    g = np.maximum(np.asarray(groups, dtype=np.float64), 1e-12)
    out = g * np.maximum(np.ceil(m / g / tile_m), 1.0) * tile_m
    out = np.maximum(out, m)
    return out if np.ndim(out) else float(out)


def grouped_gemm_cost(op: GroupedGemm, gpu: GPU, prof: Profile) -> OpCost:
    """One grouped-GEMM launch under ``prof`` (see the module docstring), seconds."""
    p = grouped_gemm_params(prof)
    fl = flops(op)
    fl_eff = None
    mem_eff = None
    if p.tile_m > 0 or p.k_overhead > 0 or (p.tile_n > 0 and p.wave_quant > 0):
        rows = grouped_padded_rows(op.groups, op.m, p.tile_m)
        fl_eff = (
            2.0
            * rows
            * np.asarray(op.n, dtype=np.float64)
            * (np.asarray(op.k, dtype=np.float64) + p.k_overhead)
        )
        if p.tile_n > 0 and p.wave_quant > 0:
            tiles = grouped_output_tiles(
                op.groups, op.m, op.n, p.tile_m, p.tile_n, rows if p.tile_m > 0 else None
            )
            factor, _ = waves(tiles, gpu.sm_count, p.wave_quant)
            factor = np.where(tiles > gpu.sm_count, factor, 1.0)  # one partial wave still fills the bandwidth
            fl_eff = fl_eff * factor
            mem_eff = p.memory_eff / factor
        fl_eff = fl_eff if np.ndim(fl_eff) else float(fl_eff)
    return roofline(
        fl,
        bytes_moved(op),
        gpu.flops_for(op.dtype),
        gpu.hbm_bytes_per_s,
        p,
        Bound.HBM_BANDWIDTH,
        fl_eff,
        memory_eff=mem_eff,
    )


def grouped_output_tiles(groups, m, n, tile_m: int, tile_n: int, padded_rows=None):
    """Output tiles of a grouped GEMM: each group's padded rows (:func:`grouped_padded_rows`; ``tile_m``
    0 counts one row block of 128 per group) in ``tile_m``-row blocks, by ``ceil(n / tile_n)`` column blocks.
    ``padded_rows``: those rows when the caller has them (at ``tile_m`` > 0)."""
    tm = tile_m if tile_m > 0 else 128
    rows = grouped_padded_rows(groups, m, tm) if padded_rows is None else padded_rows
    row_blocks = rows / tm
    return row_blocks * np.ceil(np.asarray(n, dtype=np.float64) / tile_n)
