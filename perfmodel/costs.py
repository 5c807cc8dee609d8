"""Cost of one op on one GPU: a roofline with a calibration profile.

``op_cost(op, gpu, profile) -> OpCost`` is a pure function.  Numeric op
fields may be numpy arrays; the result's fields then are arrays of the same
shape.  Costs add with ``+`` (use :func:`scale` for repeated ops).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfmodel.hw.spec import GPU, Dtype
from perfmodel import decode_schedule
from perfmodel.attention_costs import (
    flash_block_n,
    flash_splits,
    prefill_schedule_s,
    triton_decode_block_n,
    triton_decode_pieces,
    triton_general_decode,
)
from perfmodel.calibration import (ClassParams, Launch, OpClass, Profile, SplitRule, attention_class, curve_key,
                                   ramp)
from perfmodel.ops import (
    Attention,
    Collective,
    DecoderLayer,
    Elementwise,
    Gemm,
    Memcpy,
    MemLocation,
    Op,
    OpKind,
    Phase,
    bytes_moved,
    decoder_layer_parts,
    flops,
    window_keys,
)
from perfmodel.ops import padded as ops_padded

# names kept for callers of the earlier layout
_prefill_schedule_s, _triton_decode_pieces, _flash_block_n = prefill_schedule_s, triton_decode_pieces, flash_block_n


class Bound(str, enum.Enum):
    """The resource that limits a cost."""

    COMPUTE = "compute"
    HBM_BANDWIDTH = "hbm_bandwidth"
    HBM_CAPACITY = "hbm_capacity"
    LATENCY = "latency"
    PCIE = "pcie"
    INTERCONNECT = "interconnect"


@dataclass(frozen=True)
class OpCost:
    """Time breakdown of an op (or a sum of ops), seconds.

    ``total_s`` = blend(compute_s, memory_s) + latency_s + comm_s, where the
    blend is already folded into ``overlap_s`` (what overlapping saves).
    ``memory_bound`` names the memory path: HBM, PCIe or the GPU fabric.
    """

    compute_s: Any = 0.0
    memory_s: Any = 0.0
    latency_s: Any = 0.0
    comm_s: Any = 0.0
    overlap_s: Any = 0.0  # subtracted: min(compute, memory) * overlap
    flops: Any = 0.0
    bytes: Any = 0.0
    memory_bound: Bound = Bound.HBM_BANDWIDTH
    #: Error band (calibrated profiles with ``bands``; ``docs/calibration.md``, "Error bands"): seconds to add to
    #: ``total_s`` for the low (``band_lo_s``, usually <= 0) and high (``band_hi_s``) end of the central 80%
    #: interval of the measured time.  They add linearly over sums (errors of one class perfectly correlated).
    band_lo_s: Any = 0.0
    band_hi_s: Any = 0.0

    @property
    def total_s(self) -> Any:
        return self.compute_s + self.memory_s - self.overlap_s + self.latency_s + self.comm_s

    @property
    def low_s(self) -> Any:
        """The low end of the error band (``total_s`` without a band)."""
        return self.total_s + self.band_lo_s

    @property
    def high_s(self) -> Any:
        """The high end of the error band (``total_s`` without a band)."""
        return self.total_s + self.band_hi_s

    @property
    def bound(self) -> Any:
        """The largest term's resource (an array of names for array costs)."""
        terms = np.stack(np.broadcast_arrays(self.compute_s, self.memory_s, self.latency_s, self.comm_s))
        idx = np.argmax(terms, axis=0)
        names = np.array(
            [Bound.COMPUTE.value, self.memory_bound.value, Bound.LATENCY.value, Bound.INTERCONNECT.value]
        )
        out = names[idx]
        return Bound(str(out)) if np.ndim(out) == 0 else out

    def __add__(self, other: OpCost) -> OpCost:
        if not isinstance(other, OpCost):
            return NotImplemented
        mb = self.memory_bound if np.sum(self.memory_s) >= np.sum(other.memory_s) else other.memory_bound
        return OpCost(
            compute_s=self.compute_s + other.compute_s,
            memory_s=self.memory_s + other.memory_s,
            latency_s=self.latency_s + other.latency_s,
            comm_s=self.comm_s + other.comm_s,
            overlap_s=self.overlap_s + other.overlap_s,
            flops=self.flops + other.flops,
            bytes=self.bytes + other.bytes,
            memory_bound=mb,
            band_lo_s=self.band_lo_s + other.band_lo_s,
            band_hi_s=self.band_hi_s + other.band_hi_s,
        )

    def __radd__(self, other: Any) -> OpCost:
        if other == 0:
            return self
        return self.__add__(other)

    def scale(self, factor: Any) -> OpCost:
        """The cost of ``factor`` identical ops run one after another."""
        return OpCost(
            compute_s=self.compute_s * factor,
            memory_s=self.memory_s * factor,
            latency_s=self.latency_s * factor,
            comm_s=self.comm_s * factor,
            overlap_s=self.overlap_s * factor,
            flops=self.flops * factor,
            bytes=self.bytes * factor,
            memory_bound=self.memory_bound,
            band_lo_s=self.band_lo_s * factor,
            band_hi_s=self.band_hi_s * factor,
        )


ZERO = OpCost()


def _roofline(fl, by, peak_flops_per_s, bw_bytes_per_s, p: ClassParams, bound: Bound, fl_eff=None,
              extra_compute_s=0.0, memory_floor_s=0.0, extra_latency_s=0.0, memory_eff=None) -> OpCost:
    """Roofline of one op under ``p``.

    ``memory_floor_s``: the least memory time the kernel's occupancy allows (see :func:`unit_waves_s`);
    ``memory_eff`` overrides ``p.memory_eff`` (an array where the kernel path depends on the shape).
    Bytes beyond ``p.knee_bytes`` stream at ``p.tail_memory_eff`` (host copies that outgrow a cache).
    """
    fl_eff = fl if fl_eff is None else fl_eff
    c = np.divide(fl_eff, peak_flops_per_s * p.compute_eff * ramp(fl_eff, p.ramp_flops)) + extra_compute_s
    bw = p.bandwidth_bytes_per_s or bw_bytes_per_s
    eff = p.memory_eff if memory_eff is None else memory_eff
    if p.knee_bytes > 0:
        head = np.minimum(by, p.knee_bytes)
        tail = np.maximum(np.asarray(by, dtype=np.float64) - p.knee_bytes, 0.0)
        m = np.divide(head, bw * eff * ramp(by, p.ramp_bytes)) + tail / (bw * (p.tail_memory_eff or eff))
    else:
        m = np.divide(by, bw * eff * ramp(by, p.ramp_bytes))
    if np.any(memory_floor_s):
        m = np.maximum(m, memory_floor_s)
    ov = np.minimum(c, m) * p.overlap
    lat = p.latency_s + extra_latency_s
    c, m, ov, lat = (x if np.ndim(x) else float(x) for x in (c, m, ov, lat))
    return OpCost(compute_s=c, memory_s=m, latency_s=lat, overlap_s=ov, flops=fl, bytes=by, memory_bound=bound)


def unit_waves_s(units, by, sm_count: int, bw_bytes_per_s: float, p: ClassParams, steps=0.0):
    """Occupancy floor of the memory time: ``units`` thread blocks streaming ``by`` bytes in all.

    ``p.units_per_sm * sm_count`` blocks run at once; each takes ``unit_overhead_s + steps *
    unit_step_s + (by / units) / (unit_memory_eff * bw_bytes_per_s / sm_count)`` (``steps``: KV tiles
    one block walks); the partial last wave costs ``wave_quant`` of a full one.
    Few blocks cannot keep enough bytes in flight to reach the HBM bandwidth (Little's law), so
    the memory time is at least this.  0 when ``units_per_sm`` is 0 (peak mode).
    """
    if p.units_per_sm <= 0:
        return 0.0
    u = np.maximum(np.asarray(units, dtype=np.float64), 1.0)
    exact = u / (p.units_per_sm * sm_count)
    waves = exact + p.wave_quant * (np.ceil(exact) - exact)
    rate = p.unit_memory_eff * (p.bandwidth_bytes_per_s or bw_bytes_per_s) / sm_count
    unit_s = p.unit_overhead_s + (np.asarray(by, dtype=np.float64) / u / rate if rate > 0 else 0.0)
    if p.unit_step_s > 0:
        unit_s = unit_s + p.unit_step_s * np.asarray(steps, dtype=np.float64)
    return waves * unit_s


def _waves(work_units, sm_count: int, p: ClassParams):
    """(effective waves / exact waves, whole waves) for ``work_units`` tiles over the SMs.

    The partial last wave costs ``wave_quant`` of a full wave on top of its share.
    """
    exact = np.maximum(np.asarray(work_units, dtype=np.float64), 1.0) / sm_count
    whole = np.ceil(exact)
    return (exact + p.wave_quant * (whole - exact)) / exact, whole


def gemm_tile_m(m, p: ClassParams):
    """The M tile used for ``m`` rows: ``tile_m``, or the next power of two of m (>= ``tile_m_min``)."""
    if p.tile_m_min <= 0:
        return np.full(np.shape(m), float(p.tile_m)) if np.ndim(m) else float(p.tile_m)
    m = np.maximum(np.asarray(m, dtype=np.float64), 1.0)
    return np.clip(2.0 ** np.ceil(np.log2(m)), p.tile_m_min, max(p.tile_m, p.tile_m_min))


# Output tiles a heuristic GEMM library chooses among (M x N), largest first (CUTLASS/cuBLAS Hopper
# kernels: 128x256, 256x128, 128x128, ... down to 64x64 for small problems).
GEMM_CANDIDATE_TILES = ((128, 256), (256, 128), (128, 128), (64, 256), (64, 128), (128, 64), (64, 64))
_LARGEST_TILE = 128 * 256


def _gemm_tile_time(m, n, k, tm, tn, gpu: GPU, p: ClassParams):
    """(effective FLOPs, per-wave overhead seconds) of an M x N x K GEMM run in ``tm`` x ``tn`` tiles.

    With ``p.fill_tile_eff`` > 0, a grid of fewer tiles than SMs is not charged a partial wave: the
    library cuts the same padded work into smaller tiles until the grid fills the SMs (one wave),
    each halving of the tile area (``log2(SMs / tiles)`` of them) running at ``fill_tile_eff`` of
    the math rate.
    """
    tiles = np.ceil(m / tm) * np.ceil(n / tn)
    factor, whole = _waves(tiles, gpu.sm_count, p)
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
    out = np.zeros(np.broadcast(op.m, op.n, op.k).shape, dtype=bool)
    for dim in (op.n, op.k):
        for dt in (op.dtype, b_dtype):
            row_bytes = np.asarray(dim, dtype=np.float64) * dt.bytes_per_element
            out = out | (np.mod(row_bytes, GEMM_ALIGN_BYTES) != 0)
    return out


def _gemm_cost(op: Gemm, gpu: GPU, prof: Profile) -> OpCost:
    p = prof.params(OpClass.GEMM)
    fl = flops(op)
    fl_eff, extra = None, 0.0
    if p.tile_m > 0 and p.tile_n > 0:
        m, n, k = (np.asarray(x, dtype=np.float64) for x in (op.m, op.n, op.k))
        if p.tile_choice:
            # the library's heuristic: the fastest of the candidate tiles (each with its waves)
            best_s = best_fl = best_oh = None
            rate = gpu.flops_for(op.dtype) * p.compute_eff
            for tm0, tn in GEMM_CANDIDATE_TILES:
                tm = gemm_tile_m(m, dataclasses.replace(p, tile_m=tm0))
                f, oh = _gemm_tile_time(m, n, k, tm, float(tn), gpu, p)
                t = f / rate + oh
                if best_s is None:
                    best_s, best_fl, best_oh = t, f, oh
                else:
                    better = t < best_s
                    best_s = np.where(better, t, best_s)
                    best_fl = np.where(better, f, best_fl)
                    best_oh = np.where(better, oh, best_oh)
            fl_eff, extra = np.maximum(best_fl, fl), best_oh
        else:
            tm = gemm_tile_m(m, p)
            f, extra = _gemm_tile_time(m, n, k, tm, float(p.tile_n), gpu, p)
            fl_eff = np.maximum(f, fl)
    mem_eff = None
    if p.misaligned_eff > 0 or p.misaligned_memory_eff > 0:  # rows off the 128-byte lines
        off = gemm_misaligned(op)
        if p.misaligned_eff > 0:  # a lower math rate
            fl_eff = fl if fl_eff is None else fl_eff
            fl_eff = np.where(off, np.divide(fl_eff, p.misaligned_eff), fl_eff)
            fl_eff = fl_eff if np.ndim(fl_eff) else float(fl_eff)
        if p.misaligned_memory_eff > 0:  # each row load touches one more line: a lower byte rate
            mem_eff = np.where(off, p.memory_eff * p.misaligned_memory_eff, p.memory_eff)
            mem_eff = mem_eff if np.ndim(mem_eff) else float(mem_eff)
    return _roofline(fl, bytes_moved(op), gpu.flops_for(op.dtype), gpu.hbm_bytes_per_s, p, Bound.HBM_BANDWIDTH,
                     fl_eff, extra, memory_eff=mem_eff)


def _ragged_attention_cost(op: Attention, gpu: GPU, prof: Profile) -> OpCost:
    """A ragged batch (``op.seq_lens``) as one variable-length kernel: its grid is the padded batch's
    (programs past a sequence's end exit at once), so the padded op's terms are kept with its compute
    time scaled by the FLOP ratio (each sequence's own causal pairs over the padded ones) and its memory
    time by the byte ratio; the fixed latency is the padded launch's.  Equal lengths cost what the
    padded op does."""
    pad = ops_padded(op)
    c = _attention_cost(pad, gpu, prof)
    fl, by = flops(op), bytes_moved(op)
    rf = fl / float(c.flops) if c.flops else 1.0
    rb = by / float(c.bytes) if c.bytes else 1.0
    comp, mem = c.compute_s * rf, c.memory_s * rb
    cls = OpClass.ATTENTION_PREFILL if op.phase is Phase.PREFILL else OpClass.ATTENTION_DECODE
    ov = min(comp, mem) * prof.attention_params(cls, op.impl).overlap
    return dataclasses.replace(c, compute_s=comp, memory_s=mem, overlap_s=ov, flops=fl, bytes=by)


def _attention_cost(op: Attention, gpu: GPU, prof: Profile) -> OpCost:
    if op.seq_lens is not None:
        return _ragged_attention_cost(op, gpu, prof)
    cls = OpClass.ATTENTION_PREFILL if op.phase is Phase.PREFILL else OpClass.ATTENTION_DECODE
    p = prof.attention_params(cls, op.impl)
    math_dtype = op.dtype if op.dtype not in (Dtype.INT8, Dtype.INT4) else Dtype.BF16
    fl = flops(op)
    by = bytes_moved(op)
    q = np.asarray(op.q_len, dtype=np.float64)
    if op.phase is Phase.PREFILL:
        # one program per block of queries of one head
        rows, heads = q, np.asarray(op.q_heads, dtype=np.float64)
    else:
        # decode kernels pack a KV head's query group (and its new tokens) into one tile of rows
        rows, heads = q * op.q_heads / op.kv_heads, np.asarray(op.kv_heads, dtype=np.float64)
    scheduled = op.phase is Phase.PREFILL and p.unit_compute_eff > 0
    fl_eff, extra = None, 0.0
    if p.tile_m > 0 and not scheduled:
        tiles_per_head = np.ceil(rows / p.tile_m)
        pad = tiles_per_head * p.tile_m / rows
        blocks = np.asarray(op.batch, dtype=np.float64) * heads * tiles_per_head
        factor, whole = _waves(blocks, gpu.sm_count, p)
        if op.phase is not Phase.PREFILL:
            factor = 1.0  # the KV length is split over programs: no wave penalty on the math
        fl_eff = np.asarray(fl, dtype=np.float64) * pad * factor
        extra = whole * p.tile_overhead_s
    floor, split_lat, eff = 0.0, 0.0, None
    splits = 1.0
    if p.split_rule or p.units_per_sm > 0 or scheduled:
        # programs: (sequence, head, 64-row query block) units, times the KV splits
        units = np.asarray(op.batch, dtype=np.float64) * heads * np.ceil(rows / 64.0)
        # the keys one program walks: a window caps them (a decode step's new tokens, a 64-row query block)
        kv_read = np.asarray(window_keys(op.kv_len, op.window, q if op.phase is Phase.DECODE else 64.0),
                             dtype=np.float64)
        n_blocks = np.ceil(kv_read / flash_block_n(op.head_dim))
        slots = 2 * gpu.sm_count
        if p.split_rule in (SplitRule.FILL, SplitRule.STREAM_K):
            rule, tile = p.split_rule, None
            general = triton_general_decode(op)
            if general is not None:
                # the general split-KV kernel (any schedule asked for): programs of block_g query heads
                block_g, tile = general
                rule = SplitRule.FILL
                units = np.asarray(op.batch, dtype=np.float64) * heads * np.ceil(rows / block_g)
            programs, pieces = triton_decode_pieces(units, kv_read, slots, rule, gpu.sm_count, op.head_dim, tile)
            split = np.asarray(pieces) > 1 if rule == SplitRule.FILL else np.ones(np.shape(pieces), bool)
            # the combine kernel always runs: its launch, and the fp32 partials (a row of v_head_dim
            # values and a log-sum-exp per query head and piece) written and read back (not
            # stream-K at one wave: see below)
            stream_k = rule == SplitRule.STREAM_K
            fused = decode_schedule.fused_merge(programs, gpu.sm_count) if stream_k else False
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
                loads = decode_schedule.merge_loads(pieces, op.q_heads / op.kv_heads)
                merge = p.merge_latency_s + p.merge_step_s * loads
                split_lat = np.where(fused, np.where(np.asarray(pieces) > 1, merge, 0.0), split_lat)
            if p.split_memory_eff > 0:
                eff = np.where(split, p.split_memory_eff, p.memory_eff)
            block_n = tile or triton_decode_block_n(rule, op.head_dim)
            tiles = units * np.maximum(np.ceil(kv_read / block_n), 1.0)
            floor = unit_waves_s(programs, by, gpu.sm_count, gpu.hbm_bytes_per_s, p, tiles / programs)
        else:
            if p.split_rule == SplitRule.FLASH:
                splits = flash_splits(units, n_blocks, slots)
            else:
                splits = np.ones_like(units)
            split = np.asarray(splits) > 1
            if p.split_latency_s > 0 or p.split_piece_s > 0:
                # the combine kernel: a launch, and each of its few blocks reads every split's partial in turn
                split_lat = np.where(split, p.split_latency_s + p.split_piece_s * np.asarray(splits, dtype=np.float64), 0.0)
            if p.split_memory_eff > 0:
                eff = np.where(split, p.split_memory_eff, p.memory_eff)
            if not scheduled:
                floor = unit_waves_s(units * splits, by, gpu.sm_count, gpu.hbm_bytes_per_s, p, n_blocks / splits)
    if scheduled:
        fl_eff = 0.0
        extra = prefill_schedule_s(op, gpu, p, np.asarray(splits, dtype=np.float64), gpu.flops_for(math_dtype))
    return _roofline(fl, by, gpu.flops_for(math_dtype), gpu.hbm_bytes_per_s, p, Bound.HBM_BANDWIDTH,
                     fl_eff, extra, floor, split_lat, eff)


_MEMCPY_CLASS = {
    (MemLocation.DEVICE, MemLocation.DEVICE): OpClass.MEMCPY_D2D,
    (MemLocation.HOST_PINNED, MemLocation.DEVICE): OpClass.MEMCPY_H2D,
    (MemLocation.DEVICE, MemLocation.HOST_PINNED): OpClass.MEMCPY_D2H,
    (MemLocation.HOST_PAGEABLE, MemLocation.DEVICE): OpClass.MEMCPY_H2D_PAGEABLE,
    (MemLocation.DEVICE, MemLocation.HOST_PAGEABLE): OpClass.MEMCPY_D2H_PAGEABLE,
}


def memcpy_class(op: Memcpy) -> OpClass:
    try:
        return _MEMCPY_CLASS[(op.src, op.dst)]
    except KeyError:
        from perfmodel.errors import OpDescriptorError

        raise OpDescriptorError(f"memcpy from {op.src.value} to {op.dst.value} is not modelled") from None


def _memcpy_cost(op: Memcpy, gpu: GPU, prof: Profile) -> OpCost:
    cls = memcpy_class(op)
    if cls is OpClass.MEMCPY_D2D:
        return _roofline(0.0, bytes_moved(op), 1.0, gpu.hbm_bytes_per_s, prof.params(cls), Bound.HBM_BANDWIDTH)
    return _roofline(0.0, bytes_moved(op), 1.0, gpu.pcie_bytes_per_s_per_direction, prof.params(cls), Bound.PCIE)


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


def row_memory_eff(row_bytes, p: ClassParams):
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


def _elementwise_cost(op: Elementwise, gpu: GPU, prof: Profile) -> OpCost:
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
                floor = np.where(known, unit_waves_s(safe, block_bytes, gpu.sm_count, gpu.hbm_bytes_per_s, p), 0.0)
            if p.row_knee_bytes > 0:
                eff = np.where(known, row_memory_eff(row_bytes, p), p.memory_eff)
    if p.cache_bytes > 0:
        # a working set that fits the cache streams at the cache rate; a larger one misses it as a whole
        by = np.asarray(bytes_moved(op), dtype=np.float64)
        eff = np.where(by <= p.cache_bytes, p.cache_memory_eff or p.memory_eff, p.memory_eff if eff is None else eff)
    return _roofline(
        flops(op), bytes_moved(op), gpu.flops_for(Dtype.FP32), gpu.hbm_bytes_per_s, p, Bound.HBM_BANDWIDTH,
        memory_floor_s=floor, memory_eff=eff,
    )


# Ring algorithms: (bytes-volume factor, number of latency steps) as functions of world size w.
_COLLECTIVE_FACTORS = {
    OpKind.ALL_REDUCE: (lambda w: 2.0 * (w - 1) / w, lambda w: 2.0 * (w - 1)),
    OpKind.ALL_GATHER: (lambda w: (w - 1) / w, lambda w: float(w - 1)),
    OpKind.REDUCE_SCATTER: (lambda w: (w - 1) / w, lambda w: float(w - 1)),
    OpKind.ALL_TO_ALL: (lambda w: (w - 1) / w, lambda w: float(w - 1)),
    OpKind.SEND_RECV: (lambda w: 1.0, lambda w: 1.0),
}


def collective_cost_simple(op: Collective, gpu: GPU, prof: Profile) -> OpCost:
    """Alpha-beta ring model over the GPU's own fabric (NVLink, else PCIe).

    ``bytes`` is the per-rank buffer: an all-gather's output, a reduce-scatter's
    input, an all-reduce's buffer.  time = steps * latency_s + factor * bytes / bandwidth.
    """
    if op.world <= 1:
        return OpCost(bytes=op.bytes)
    factor, steps = _COLLECTIVE_FACTORS[op.op]
    p = prof.params(OpClass(op.op.value))
    if gpu.nvlink_bytes_per_s_per_direction > 0:
        bw, bound = gpu.nvlink_bytes_per_s_per_direction, Bound.INTERCONNECT
    else:
        bw, bound = gpu.pcie_bytes_per_s_per_direction, Bound.PCIE
    bw = (p.bandwidth_bytes_per_s or bw) * p.memory_eff
    t = factor(op.world) * np.asarray(op.bytes, dtype=np.float64) / bw
    t = t if np.ndim(t) else float(t)
    lat = steps(op.world) * p.latency_s
    return OpCost(comm_s=t, latency_s=lat, bytes=op.bytes, memory_bound=bound)


def op_cost(op: Op, gpu: GPU, profile: Profile) -> OpCost:
    """Predicted cost of ``op`` on ``gpu`` under ``profile`` (peak or calibrated).

    Under eager launch (``profile.launch``) a kernel takes its graph-replay time plus ``gap_s``, and at
    least the host's ``issue_s`` per launch (:func:`eager_cost`).
    """
    c = _op_cost(op, gpu, profile)
    if profile.launch is Launch.EAGER and profile.launch_terms and not isinstance(op, (DecoderLayer, Collective)):
        c = eager_cost(c, profile.launch_terms)
    if profile.bands and not isinstance(op, DecoderLayer):  # a layer's band is the sum of its parts'
        c = with_band(c, op, profile)
    return c


#: Regimes of an op's predicted cost (:func:`regime_of`): band keys ``<key>|<regime>`` (``docs/calibration.md``).
REGIMES: tuple[str, ...] = ("compute", "memory", "latency")
#: Share of the total above which fixed costs (launch, ramp-free latency) make an op latency-bound.
LATENCY_BOUND_SHARE = 0.5


def regime_of(c: OpCost) -> Any:
    """``latency`` when ``latency_s`` is at least :data:`LATENCY_BOUND_SHARE` of the total, else ``compute``
    when the math term exceeds the data movement (memory plus communication), else ``memory``; an array of
    names for array costs."""
    code = _regime_code(c)
    out = np.asarray(REGIMES)[code]
    return str(out) if out.ndim == 0 else out


def _regime_code(c: OpCost) -> np.ndarray:
    """:func:`regime_of` as the index of the regime in :data:`REGIMES` (int8, the cost's shape)."""
    t, lat = np.broadcast_arrays(np.asarray(c.total_s, dtype=np.float64), np.asarray(c.latency_s, dtype=np.float64))
    comp = np.asarray(c.compute_s, dtype=np.float64)
    move = np.asarray(c.memory_s, dtype=np.float64) + np.asarray(c.comm_s, dtype=np.float64)
    code = np.where(lat >= LATENCY_BOUND_SHARE * t, np.int8(2), np.where(comp > move, np.int8(0), np.int8(1)))
    return np.broadcast_to(code, t.shape)


#: Size classes of an op's predicted time (:func:`size_class_of`): band keys ``<key>|<size>``; the upper edges in
#: :data:`SIZE_EDGES_S` (decades of the predicted time).
SIZE_CLASSES: tuple[str, ...] = ("under_10us", "10us_to_100us", "over_100us")
SIZE_EDGES_S: tuple[float, ...] = (1e-5, 1e-4)


def size_class_of(t_s: Any) -> Any:
    """Size class (:data:`SIZE_CLASSES`) of a predicted time ``t_s`` (seconds): ``under_10us`` below 10 us,
    ``10us_to_100us`` below 100 us, else ``over_100us``; an array of names for an array."""
    out = np.asarray(SIZE_CLASSES)[_size_code(t_s)]
    return str(out) if out.ndim == 0 else out


def _size_code(t_s: Any) -> np.ndarray:
    """:func:`size_class_of` as the index in :data:`SIZE_CLASSES` (the shape of ``t_s``)."""
    return np.searchsorted(np.asarray(SIZE_EDGES_S), np.asarray(t_s, dtype=np.float64), side="right")


def band_keys(op: Op, profile: Profile) -> tuple[OpClass, tuple[str, ...]]:
    """The op class of ``op`` and its band keys, most specific first (``attention_decode[stream_k]``,
    ``elementwise:rmsnorm`` then ``elementwise``)."""
    if isinstance(op, Gemm):
        return OpClass.GEMM, ("gemm",)
    if isinstance(op, Attention):
        oc = attention_class(op.phase)
        impl = (op.impl or profile.attention_impl).curve(op.phase)
        return oc, (curve_key(oc, impl), oc.value)
    if isinstance(op, Memcpy):
        oc = memcpy_class(op)
        return oc, (oc.value,)
    if isinstance(op, Elementwise):
        return OpClass.ELEMENTWISE, (f"elementwise:{op.name}", "elementwise")
    oc = OpClass(op.kind.value)
    return oc, (oc.value,)


def with_band(c: OpCost, op: Op, profile: Profile) -> OpCost:
    """``c`` with the error band of ``op``'s class, regime (:func:`regime_of`), size class (:func:`size_class_of`)
    and provenance (:meth:`Profile.band_of`): the measured time lies in ``[t * exp(-q90), t * exp(-q10)]`` where
    ``q10``, ``q90`` are quantiles of log(predicted / measured)."""
    oc, keys = band_keys(op, profile)
    t = c.total_s
    code = _regime_code(c) * len(SIZE_CLASSES) + _size_code(t)  # (regime, size) cell of each point
    if code.ndim == 0:
        r, z = divmod(int(code), len(SIZE_CLASSES))
        q10, q90 = profile.band_of(oc, keys, REGIMES[r], SIZE_CLASSES[z])
        return dataclasses.replace(c, band_lo_s=t * math.expm1(-q90), band_hi_s=t * math.expm1(-q10))
    q = np.array([profile.band_of(oc, keys, r, z) for r in REGIMES for z in SIZE_CLASSES], dtype=np.float64)
    lo, hi = np.expm1(-q[:, 1]), np.expm1(-q[:, 0])
    if np.all(lo == lo[0]) and np.all(hi == hi[0]):  # one band for every cell
        return dataclasses.replace(c, band_lo_s=np.broadcast_to(t, code.shape) * lo[0],
                                   band_hi_s=np.broadcast_to(t, code.shape) * hi[0])
    return dataclasses.replace(c, band_lo_s=t * lo[code], band_hi_s=t * hi[code])


def eager_cost(cost: OpCost, terms) -> OpCost:
    """``cost`` (a graph-replay time) as one eager launch: ``max(t + gap_s, issue_s)``, the difference
    added as latency."""
    t = np.asarray(cost.total_s, dtype=np.float64)
    eager = np.maximum(t + terms["gap_s"], terms["issue_s"])
    add = eager - t
    return dataclasses.replace(cost, latency_s=cost.latency_s + (add if np.ndim(add) else float(add)))


def _op_cost(op: Op, gpu: GPU, profile: Profile) -> OpCost:
    if isinstance(op, Gemm):
        return _gemm_cost(op, gpu, profile)
    if isinstance(op, Attention):
        return _attention_cost(op, gpu, profile)
    if isinstance(op, Memcpy):
        return _memcpy_cost(op, gpu, profile)
    if isinstance(op, Elementwise):
        return _elementwise_cost(op, gpu, profile)
    if isinstance(op, Collective):
        from perfmodel import comm  # refined communication model

        return comm.collective_cost(op, gpu, profile)
    if op.kind is OpKind.GROUPED_GEMM:  # MoE experts as one kernel (perfmodel.costs_grouped)
        from perfmodel.costs_grouped import grouped_gemm_cost

        return grouped_gemm_cost(op, gpu, profile)
    if isinstance(op, DecoderLayer):
        return sum((op_cost(o, gpu, profile).scale(c) for _, o, c in decoder_layer_parts(op)), ZERO)
    raise TypeError(f"not an op: {op!r}")
