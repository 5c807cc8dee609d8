"""Cost of one op on one GPU: a roofline with a calibration profile.

``op_cost(op, gpu, profile) -> OpCost`` is a pure function.  Numeric op
fields may be numpy arrays; the result's fields then are arrays of the same
shape.  Costs add with ``+`` (use :func:`scale` for repeated ops).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.spec import GPU, Dtype
from perfmodel.calibration import ClassParams, OpClass, Profile, ramp
from perfmodel.ops import (
    Attention,
    Collective,
    DecoderLayer,
    Elementwise,
    Gemm,
    MemLocation,
    Memcpy,
    Op,
    OpKind,
    Phase,
    bytes_moved,
    decoder_layer_parts,
    flops,
)


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

    @property
    def total_s(self) -> Any:
        return self.compute_s + self.memory_s - self.overlap_s + self.latency_s + self.comm_s

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

    def __add__(self, other: "OpCost") -> "OpCost":
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
        )

    def __radd__(self, other: Any) -> "OpCost":
        if other == 0:
            return self
        return self.__add__(other)

    def scale(self, factor: Any) -> "OpCost":
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
        )


ZERO = OpCost()


def _roofline(fl, by, peak_flops_per_s, bw_bytes_per_s, p: ClassParams, bound: Bound, fl_eff=None,
              extra_compute_s=0.0) -> OpCost:
    fl_eff = fl if fl_eff is None else fl_eff
    c = np.divide(fl_eff, peak_flops_per_s * p.compute_eff * ramp(fl_eff, p.ramp_flops)) + extra_compute_s
    bw = p.bandwidth_bytes_per_s or bw_bytes_per_s
    m = np.divide(by, bw * p.memory_eff * ramp(by, p.ramp_bytes))
    ov = np.minimum(c, m) * p.overlap
    c, m, ov = (x if np.ndim(x) else float(x) for x in (c, m, ov))
    return OpCost(compute_s=c, memory_s=m, latency_s=p.latency_s, overlap_s=ov, flops=fl, bytes=by, memory_bound=bound)


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


def _gemm_cost(op: Gemm, gpu: GPU, prof: Profile) -> OpCost:
    p = prof.params(OpClass.GEMM)
    fl = flops(op)
    fl_eff, extra = None, 0.0
    if p.tile_m > 0 and p.tile_n > 0:
        tm = gemm_tile_m(op.m, p)
        m, n, k = (np.asarray(x, dtype=np.float64) for x in (op.m, op.n, op.k))
        tiles = np.ceil(m / tm) * np.ceil(n / p.tile_n)
        factor, whole = _waves(tiles, gpu.sm_count, p)
        fl_eff = np.maximum(2.0 * tiles * tm * p.tile_n * k * factor, fl)
        extra = whole * p.tile_overhead_s
    return _roofline(fl, bytes_moved(op), gpu.flops_for(op.dtype), gpu.hbm_bytes_per_s, p, Bound.HBM_BANDWIDTH,
                     fl_eff, extra)


def _attention_cost(op: Attention, gpu: GPU, prof: Profile) -> OpCost:
    cls = OpClass.ATTENTION_PREFILL if op.phase is Phase.PREFILL else OpClass.ATTENTION_DECODE
    p = prof.params(cls)
    math_dtype = op.dtype if op.dtype not in (Dtype.INT8, Dtype.INT4) else Dtype.BF16
    fl = flops(op)
    fl_eff, extra = None, 0.0
    if p.tile_m > 0:
        q = np.asarray(op.q_len, dtype=np.float64)
        if op.phase is Phase.PREFILL:
            # one program per block of tile_m queries of one head, in waves over the SMs
            rows, heads = q, np.asarray(op.q_heads, dtype=np.float64)
        else:
            # decode kernels pack a KV head's query group (and its new tokens) into one tile of
            # rows, padded to tile_m; the KV length is split over programs, so no wave penalty
            rows, heads = q * op.q_heads / op.kv_heads, np.asarray(op.kv_heads, dtype=np.float64)
        tiles_per_head = np.ceil(rows / p.tile_m)
        pad = tiles_per_head * p.tile_m / rows
        blocks = np.asarray(op.batch, dtype=np.float64) * heads * tiles_per_head
        factor, whole = _waves(blocks, gpu.sm_count, p)
        if op.phase is not Phase.PREFILL:
            factor = 1.0
        fl_eff = np.asarray(fl, dtype=np.float64) * pad * factor
        extra = whole * p.tile_overhead_s
    return _roofline(fl, bytes_moved(op), gpu.flops_for(math_dtype), gpu.hbm_bytes_per_s, p, Bound.HBM_BANDWIDTH,
                     fl_eff, extra)


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


def _elementwise_cost(op: Elementwise, gpu: GPU, prof: Profile) -> OpCost:
    return _roofline(
        flops(op), bytes_moved(op), gpu.flops_for(Dtype.FP32), gpu.hbm_bytes_per_s,
        prof.elementwise_params(op.name), Bound.HBM_BANDWIDTH,
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
    """Predicted cost of ``op`` on ``gpu`` under ``profile`` (peak or calibrated)."""
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
    if isinstance(op, DecoderLayer):
        return sum((op_cost(o, gpu, profile).scale(c) for _, o, c in decoder_layer_parts(op)), ZERO)
    raise TypeError(f"not an op: {op!r}")
