"""What every cost module shares: the :class:`OpCost` breakdown, the roofline blend, the occupancy and
wave terms, the op classes, and the base of each class's curve parameters.

Every op class prices its ops with its own parameter type (:mod:`perfmodel.costs.gemm`'s
``GemmParams``, ...), a frozen dataclass of the fields that class uses; :class:`CurveParams` gives them
one set of range rules (:data:`FIELD_RULES`), their JSON form (the fields that differ from the peak
values) and its parser.  A profile file stores the same keys for every class (``docs/calibration.md``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from perfmodel.errors import ProfileError


class Bound(str, enum.Enum):
    """The resource that limits a cost."""

    COMPUTE = "compute"
    HBM_BANDWIDTH = "hbm_bandwidth"
    HBM_CAPACITY = "hbm_capacity"
    LATENCY = "latency"
    PCIE = "pcie"
    INTERCONNECT = "interconnect"


class Mode(str, enum.Enum):
    """The theoretical-peak model or a calibrated profile (:mod:`perfmodel.calibration`)."""

    PEAK = "peak"
    CALIBRATED = "calibrated"


class Launch(str, enum.Enum):
    """How kernels are launched: ``graph`` (CUDA-graph replays, what serving engines use for decode and
    what the profile's curves are fitted on) or ``eager`` (one host launch per kernel, back to back:
    a short kernel waits for the host; :attr:`perfmodel.calibration.Profile.launch_terms`)."""

    GRAPH = "graph"
    EAGER = "eager"


class OpClass(str, enum.Enum):
    """Op classes with their own achieved-fraction curves (the keys of a profile's ``classes``)."""

    GEMM = "gemm"
    ATTENTION_PREFILL = "attention_prefill"
    ATTENTION_DECODE = "attention_decode"
    ELEMENTWISE = "elementwise"
    MEMCPY_D2D = "memcpy_d2d"
    MEMCPY_H2D = "memcpy_h2d"
    MEMCPY_D2H = "memcpy_d2h"
    MEMCPY_H2D_PAGEABLE = "memcpy_h2d_pageable"
    MEMCPY_D2H_PAGEABLE = "memcpy_d2h_pageable"
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_TO_ALL = "all_to_all"
    SEND_RECV = "send_recv"
    GROUPED_GEMM = "grouped_gemm"


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
        """The cost of ``factor`` identical ops run one after another.

        Parameters
        ----------
        factor : float or numpy.ndarray
            How many times the op runs (an array prices several counts at once).

        Returns
        -------
        OpCost
            Every time (seconds), FLOP and byte count multiplied by ``factor``; the bound is kept.
        """
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


#: The summable fields of :class:`OpCost` (all but ``memory_bound``), in declaration order.
COST_FIELDS = tuple(f.name for f in fields(OpCost) if f.name != "memory_bound")

ZERO = OpCost()


# ---- curve parameters -------------------------------------------------------------------------------------


def _finite_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[float], bool]:
    return lambda v: math.isfinite(v) and (lo < v if lo_open else lo <= v) and v <= hi


def _in_closed(lo: float, hi: float) -> Callable[[float], bool]:
    return lambda v: lo <= v <= hi


_NON_NEGATIVE = (
    "latency_s",
    "k_overhead",
    "ramp_flops",
    "ramp_bytes",
    "bandwidth_bytes_per_s",
    "tile_m",
    "tile_n",
    "tile_m_min",
    "tile_overhead_s",
    "units_per_sm",
    "unit_overhead_s",
    "unit_memory_eff",
    "split_latency_s",
    "knee_bytes",
    "row_knee_bytes",
    "row_knee_width_bytes",
    "cache_bytes",
    "score_flops",
    "split_piece_s",
    "unit_step_s",
    "step_s",
    "reduce_row_s",
    "merge_latency_s",
    "merge_step_s",
    "split_k_rows",
    "split_k_s",
)

#: The range rule of every curve field, in the order they are checked: (fields, test, what the message says
#: after "must be").  A parameter type checks the rules of the fields it has.
FIELD_RULES: tuple[tuple[tuple[str, ...], Callable[[float], bool], str], ...] = (
    (("compute_eff", "memory_eff"), _finite_in(0.0, 1.5, lo_open=True), "in (0, 1.5]"),
    (("tile_choice",), lambda v: v in (0, 1), "0 or 1"),
    (
        ("small_tile_eff", "fill_tile_eff", "misaligned_eff", "misaligned_memory_eff"),
        _in_closed(0.0, 1.0),
        "in [0, 1] (0: off)",
    ),
    (
        ("split_memory_eff", "tail_memory_eff", "row_tail_memory_eff"),
        _finite_in(0.0, 1.5),
        "in [0, 1.5] (0: memory_eff)",
    ),
    (("unit_compute_eff", "reduce_bytes_eff"), _finite_in(0.0, 1.5), "in [0, 1.5] (0: off)"),
    (("cache_memory_eff",), _finite_in(0.0, 4.0), "in [0, 4] (0: memory_eff)"),
    (_NON_NEGATIVE, lambda v: math.isfinite(v) and v >= 0, "finite and >= 0"),
    (("overlap", "wave_quant", "unit_share"), _in_closed(0.0, 1.0), "in [0, 1]"),
)

P = TypeVar("P", bound="CurveParams")


@dataclass(frozen=True)
class CurveParams:
    """Base of the curve parameters of one op class (every field optional, its default the peak value:
    efficiency 1, latency 0, no tile quantization).  Subclasses declare the fields their class uses;
    integer fields are annotated ``int`` (or an ``IntEnum``), the others ``float``."""

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    def validate(self, where: str) -> None:
        """Raise :class:`~perfmodel.errors.ProfileError` naming ``where`` for a field out of its range."""
        have = self.field_names()
        for names, ok, what in FIELD_RULES:
            for name in names:
                if name in have and not ok(getattr(self, name)):
                    raise ProfileError(f"{where}: {name} must be {what}, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls: type[P], raw: Any, where: str) -> P:
        """Parse and validate one curve of a profile file; ``where`` names it in errors."""
        if not isinstance(raw, dict):
            raise ProfileError(f"{where} must be an object")
        types = {f.name: f.type for f in fields(cls)}
        extra = set(raw) - set(types)
        if extra:
            raise ProfileError(f"{where} has unknown field(s) {', '.join(sorted(extra))}")
        try:
            vals = {}
            for k, v in raw.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise TypeError
                vals[k] = float(v) if types[k] == "float" else int(v)
            p = cls(**vals)
        except (TypeError, ValueError, OverflowError):
            raise ProfileError(f"{where} has a non-numeric value") from None
        p.validate(where)
        return p

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the peak values (the profile file's form)."""
        peak = type(self)()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(peak, f.name)
        }

    def replace_fields(self: P, changes: dict[str, Any]) -> P:
        """This curve with the ``changes`` of the fields it has (the others are not its class's)."""
        have = self.field_names()
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if k in have})


@dataclass(frozen=True)
class RooflineParams(CurveParams):
    """The roofline fields every memory- or compute-bound class shares (attention, grouped GEMM, copies,
    elementwise): achieved fractions of the peak FLOP/s and bandwidth, a fixed latency, their overlap, the
    ramps to full efficiency, the path's bandwidth, and the knee beyond which a tail efficiency applies.
    Each subclass documents them with its own fields."""

    compute_eff: float = 1.0
    memory_eff: float = 1.0
    latency_s: float = 0.0
    overlap: float = 1.0
    ramp_flops: float = 0.0
    ramp_bytes: float = 0.0
    bandwidth_bytes_per_s: float = 0.0
    knee_bytes: float = 0.0
    tail_memory_eff: float = 0.0


# ---- quantities of an op alone, kept for the ops priced last ----------------------------------------------

#: How many op-only quantities :func:`op_memo` keeps (the oldest leaves first).
OP_MEMO_SIZE = 512
#: Only ops of at most this many points are kept (a fit prices the same few hundred records under every trial
#: curve; a sweep's large grids are priced once and not held).
OP_MEMO_MAX_POINTS = 4096
_OP_MEMO: dict[tuple, tuple[Any, Any]] = {}


def _frozen(v: Any) -> Any:
    """An array as its own read-only copy (it may be one of the op's arrays); anything else as it is."""
    if not isinstance(v, np.ndarray):
        return v
    v = np.array(v)
    v.setflags(write=False)
    return v


def op_memo(op: Any, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(op, *args)``, a quantity of the op alone (FLOPs, bytes, the kernel's split choice), computed once
    while ``op`` (the same object) is among the last :data:`OP_MEMO_SIZE` kept.  ``args`` must be hashable;
    array results (or a tuple of them) are returned read-only, so a caller cannot change what later calls
    get; results over more than :data:`OP_MEMO_MAX_POINTS` points are not kept."""
    key = (id(op), name, args)
    hit = _OP_MEMO.get(key)
    if hit is not None and hit[0] is op:
        return hit[1]
    value = fn(op, *args)
    parts = value if isinstance(value, tuple) else (value,)
    if any(np.size(v) > OP_MEMO_MAX_POINTS for v in parts):
        return value
    parts = tuple(_frozen(v) for v in parts)
    value = parts if isinstance(value, tuple) else parts[0]
    if len(_OP_MEMO) >= OP_MEMO_SIZE:
        _OP_MEMO.pop(next(iter(_OP_MEMO)), None)
    _OP_MEMO[key] = (op, value)
    return value


# ---- the roofline and its occupancy terms -----------------------------------------------------------------


def ramp(x: Any, half: float) -> Any:
    """``x / (x + half)``: 0 at 0, 1/2 at ``half``, 1 as x grows (1 when ``half`` is 0)."""
    if half <= 0:
        return 1.0
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x / (x + half), 1.0)


def roofline(
    fl,
    by,
    peak_flops_per_s,
    bw_bytes_per_s,
    p: Any,
    bound: Bound,
    fl_eff=None,
    extra_compute_s=0.0,
    memory_floor_s=0.0,
    extra_latency_s=0.0,
    memory_eff=None,
) -> OpCost:
    """Roofline of one op under the curve ``p`` (any parameter type with the roofline fields
    ``compute_eff``, ``memory_eff``, ``latency_s``, ``overlap``, ``ramp_flops``, ``ramp_bytes``,
    ``bandwidth_bytes_per_s``, ``knee_bytes``, ``tail_memory_eff``):

    - compute_s = fl_eff / (peak_flops * compute_eff * ramp(fl_eff, ramp_flops)) + ``extra_compute_s``;
    - memory_s = by / (bandwidth * memory_eff * ramp(by, ramp_bytes)); bytes beyond ``knee_bytes`` stream
      at ``tail_memory_eff`` (host copies that outgrow a cache); at least ``memory_floor_s`` (the least
      memory time the kernel's occupancy allows, :func:`unit_waves_s`);
    - overlap_s = min(compute, memory) * overlap; latency_s = ``p.latency_s + extra_latency_s``.

    ``memory_eff`` overrides ``p.memory_eff`` (an array where the kernel path depends on the shape).
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
    return OpCost(
        compute_s=c, memory_s=m, latency_s=lat, overlap_s=ov, flops=fl, bytes=by, memory_bound=bound
    )


def unit_waves_s(units, by, sm_count: int, bw_bytes_per_s: float, p: Any, steps=0.0):
    """Occupancy floor of the memory time: ``units`` thread blocks streaming ``by`` bytes in all.

    ``p.units_per_sm * sm_count`` blocks run at once; each takes ``unit_overhead_s + steps *
    unit_step_s + (by / units) / (unit_memory_eff * bw_bytes_per_s / sm_count)`` (``steps``: KV tiles
    one block walks); the partial last wave costs ``wave_quant`` of a full one.
    Few blocks cannot keep enough bytes in flight to reach the HBM bandwidth (Little's law), so
    the memory time is at least this.  0 when ``units_per_sm`` is 0 (peak mode).  ``p``: a curve with
    the occupancy fields (attention, elementwise).
    """
    if p.units_per_sm <= 0:
        return 0.0
    u = np.maximum(np.asarray(units, dtype=np.float64), 1.0)
    exact = u / (p.units_per_sm * sm_count)
    waves_ = exact + p.wave_quant * (np.ceil(exact) - exact)
    rate = p.unit_memory_eff * (p.bandwidth_bytes_per_s or bw_bytes_per_s) / sm_count
    unit_s = p.unit_overhead_s + (np.asarray(by, dtype=np.float64) / u / rate if rate > 0 else 0.0)
    if p.unit_step_s > 0:
        unit_s = unit_s + p.unit_step_s * np.asarray(steps, dtype=np.float64)
    return waves_ * unit_s


def waves(work_units, sm_count: int, wave_quant: float):
    """(effective waves / exact waves, whole waves) for ``work_units`` tiles over the SMs.

    The partial last wave costs ``wave_quant`` of a full wave on top of its share.
    """
    exact = np.maximum(np.asarray(work_units, dtype=np.float64), 1.0) / sm_count
    whole = np.ceil(exact)
    return (exact + wave_quant * (whole - exact)) / exact, whole


def eager_cost(cost: OpCost, terms) -> OpCost:
    """``cost`` (a graph-replay time) as one eager launch: ``max(t + gap_s, issue_s)``, the difference
    added as latency."""
    t = np.asarray(cost.total_s, dtype=np.float64)
    eager = np.maximum(t + terms["gap_s"], terms["issue_s"])
    add = eager - t
    return dataclasses.replace(cost, latency_s=cost.latency_s + (add if np.ndim(add) else float(add)))
