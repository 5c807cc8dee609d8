"""Error bands of a predicted cost (``docs/calibration.md``, "Error bands"): each op's band keys, its regime
(compute, memory or latency bound) and size class (decades of the predicted time), and the band itself."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from perfmodel.costs.attention import attention_class, curve_key
from perfmodel.costs.base import OpClass, OpCost
from perfmodel.costs.copies import memcpy_class
from perfmodel.ops import Attention, Elementwise, Gemm, Memcpy, Op

if TYPE_CHECKING:
    from perfmodel.calibration import Profile


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


def _regime_code(c: OpCost, total_s: Any = None) -> np.ndarray:
    """:func:`regime_of` as the index of the regime in :data:`REGIMES` (int8, the cost's shape); ``total_s``:
    ``c.total_s`` when the caller has it."""
    t = c.total_s if total_s is None else total_s
    t, lat = np.broadcast_arrays(np.asarray(t, dtype=np.float64), np.asarray(c.latency_s, dtype=np.float64))
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
    if np.ndim(t) == 0 and np.ndim(c.latency_s) == 0:
        r, z = divmod(int(_regime_code(c, t)) * len(SIZE_CLASSES) + int(_size_code(t)), len(SIZE_CLASSES))
        q10, q90 = profile.band_of(oc, keys, REGIMES[r], SIZE_CLASSES[z])
        return dataclasses.replace(c, band_lo_s=t * math.expm1(-q90), band_hi_s=t * math.expm1(-q10))
    lo, hi = _cell_factors(profile.band_cells(oc, keys, REGIMES, SIZE_CLASSES))
    if lo.size == 1:  # one band for every cell
        shape = np.broadcast_shapes(np.shape(t), np.shape(c.latency_s))
        return dataclasses.replace(
            c, band_lo_s=np.broadcast_to(t, shape) * lo[0], band_hi_s=np.broadcast_to(t, shape) * hi[0]
        )
    code = _cell_code(c, t)
    return dataclasses.replace(c, band_lo_s=t * lo.take(code), band_hi_s=t * hi.take(code))


def _cell_code(c: OpCost, t_s: Any) -> np.ndarray:
    """The (regime, size class) cell of each point of an array cost, ``regime * len(SIZE_CLASSES) + size``
    (:func:`_regime_code`, :func:`_size_code`) in one pass; ``t_s``: ``c.total_s``."""
    t = np.asarray(t_s, dtype=np.float64)
    lat = np.asarray(c.latency_s, dtype=np.float64)
    comp = np.asarray(c.compute_s, dtype=np.float64)
    move = np.asarray(c.memory_s, dtype=np.float64) + np.asarray(c.comm_s, dtype=np.float64)
    n = len(SIZE_CLASSES)
    code = np.where(np.greater(comp, move), np.intp(0), np.intp(n))  # compute, else memory bound
    code = np.where(lat >= LATENCY_BOUND_SHARE * t, np.intp(2 * n), code)  # latency bound
    code = code + _SIZE_EDGES.searchsorted(t, side="right")
    return np.broadcast_to(code, np.broadcast_shapes(t.shape, lat.shape))


_SIZE_EDGES = np.asarray(SIZE_EDGES_S)


@functools.lru_cache(maxsize=256)
def _cell_factors(cells: tuple[tuple[float, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """The band's low and high ends per unit of predicted time, ``expm1(-q90)`` and ``expm1(-q10)``, of each
    ``(q10, q90)`` cell (:meth:`Profile.band_cells`); one element each when every cell has the same band.
    Read-only arrays."""
    q = np.array(cells, dtype=np.float64)
    lo, hi = np.expm1(-q[:, 1]), np.expm1(-q[:, 0])
    if np.all(lo == lo[0]) and np.all(hi == hi[0]):
        lo, hi = lo[:1], hi[:1]
    lo.setflags(write=False)
    hi.setflags(write=False)
    return lo, hi


def phase_band(c: OpCost, profile: Profile) -> OpCost:
    """``c``, a pass of several ops summed (a phase, a decoder layer), with its band's low and high ends scaled
    by the profile's combination factors (:attr:`Profile.band_combination`): the ops' bands add linearly (errors
    perfectly correlated), which over-covers, since the errors of a pass's ops partly cancel; the factors,
    fitted on held-out decoder layers (10% of them below the band, 10% above), bring the sum back to a central
    80% band (``docs/calibration.md``, "Combining into a phase")."""
    k_lo, k_hi = profile.band_combination
    if k_lo == k_hi == 1.0:
        return c
    return dataclasses.replace(c, band_lo_s=c.band_lo_s * k_lo, band_hi_s=c.band_hi_s * k_hi)
