"""Sustained clocks: a long compute-bound phase runs at the power-capped rate.

A calibration profile's curves are fitted on short timed regions (graph replays of a few ms), so
they price the rate a GPU reaches in a burst.  Back-to-back compute-bound work for seconds draws the
board to its power limit and the SM clock drops (``benchmarks/sustained.py`` measures it).  The
profile's ``sustained`` object says how much:

- ``compute_ratio``: the settled rate of compute-bound work as a fraction of the rate the profile
  predicts for the same op (at most 1);
- ``settle_s``: seconds of back-to-back work before the rate has settled.

- ``ramp`` (optional): the measured way there, ``[[t_s, ratio], ...]``: the rate of back-to-back
  compute-bound work ``t_s`` seconds after an idle GPU started it, as a fraction of the profile's
  rate (at most 1); after its last point the rate is ``compute_ratio``.

The rule (:func:`sustained_phase`): only a phase's compute time slows.  With a ramp, compute spread
evenly over a phase of predicted length ``T`` that starts ``busy_s`` into back-to-back work runs at
the ramp's rates over ``[busy_s, busy_s + T]``:

    T' = T + compute_s * (mean of 1 / ratio(t) over that interval - 1)

Without a ramp the rate is the profile's for ``settle_s`` and ``compute_ratio`` after, so

    T' = T + compute_s * max(0, 1 - (settle_s - busy_s) / T) * (1 / compute_ratio - 1)

A prefill of seconds pays the settled rate; a decode step of milliseconds is not priced through
this rule (decode is priced per step, memory-bound, and the measured copy rate does not drop with
the clock).  A phase priced alone starts from an idle GPU (``busy_s`` 0); :func:`after_busy` gives
the terms a phase sees after other back-to-back work.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from perfmodel.errors import ProfileError

SUSTAINED_KEYS = ("compute_ratio", "settle_s")
#: points of the cumulative table :func:`sustained_phase` integrates a ramp on
_RAMP_GRID_POINTS = 256


def sustained_from_dict(raw: Any, where: str) -> dict[str, Any]:
    """Validate a profile's ``sustained`` object (``compute_ratio`` in (0, 1], ``settle_s`` >= 0)."""
    if not isinstance(raw, Mapping):
        raise ProfileError(f"{where}: 'sustained' must be an object")
    extra = set(raw) - set(SUSTAINED_KEYS) - {"source", "measured"}
    extra = extra - {"ramp"}
    if extra:
        raise ProfileError(f"{where}: sustained has unknown field(s) {', '.join(sorted(extra))}")
    out: dict[str, Any] = {}
    for k in SUSTAINED_KEYS:
        if k not in raw:
            raise ProfileError(f"{where}: sustained.{k} is missing")
        v = raw[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ProfileError(f"{where}: sustained.{k} must be a number, got {v!r}")
        out[k] = float(v)
    if not 0 < out["compute_ratio"] <= 1:
        raise ProfileError(f"{where}: sustained.compute_ratio must be in (0, 1], got {out['compute_ratio']}")
    if out["settle_s"] < 0:
        raise ProfileError(f"{where}: sustained.settle_s must be >= 0, got {out['settle_s']}")
    if "ramp" in raw:
        out["ramp"] = _check_ramp(raw["ramp"], where)
    for k in ("source", "measured"):
        if k in raw:
            out[k] = raw[k]
    return out


def _check_ramp(raw: Any, where: str) -> tuple[tuple[float, float], ...]:
    ok = isinstance(raw, (list, tuple)) and len(raw) >= 2
    pts: list[tuple[float, float]] = []
    for item in raw if ok else ():
        if not (
            isinstance(item, (list, tuple))
            and len(item) == 2
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in item
            )
        ):
            ok = False
            break
        pts.append((float(item[0]), float(item[1])))
    ok = (
        ok
        and pts[0][0] == 0.0
        and all(b[0] > a[0] for a, b in zip(pts, pts[1:]))
        and all(0 < r <= 1 for _, r in pts)
    )
    if not ok:
        raise ProfileError(
            f"{where}: sustained.ramp must be [[t_s, ratio], ...] from t_s 0, times increasing, "
            f"ratios in (0, 1]"
        )
    return tuple(pts)


def after_busy(sustained: Mapping[str, Any], busy_s: float) -> dict[str, Any]:
    """The sustained terms a phase sees when it starts ``busy_s`` seconds into back-to-back compute-bound
    work (the ramp shifted, the settling time shortened by as much)."""
    if not sustained or busy_s <= 0:
        return dict(sustained)
    out = dict(sustained)
    out["settle_s"] = max(0.0, float(sustained["settle_s"]) - busy_s)
    if "ramp" in sustained:
        ts, rs = _ramp_arrays(sustained)
        keep = ts > busy_s
        head = (
            (0.0, float(np.interp(busy_s, ts, rs)))
            if busy_s < ts[-1]
            else (0.0, float(sustained["compute_ratio"]))
        )
        tail = [(float(t - busy_s), float(r)) for t, r in zip(ts[keep], rs[keep])]
        out["ramp"] = tuple([head] + tail) if tail else (head, (1.0, float(sustained["compute_ratio"])))
    return out


def _ramp_arrays(sustained: Mapping[str, Any]):
    pts = np.asarray(sustained["ramp"], dtype=np.float64)
    return pts[:, 0], pts[:, 1]


def _mean_inverse_rate(sustained: Mapping[str, Any], t):
    """Mean of ``1 / ratio`` over ``[0, t]`` of the ramp (``compute_ratio`` after its last point)."""
    ts, rs = _ramp_arrays(sustained)
    grid = np.linspace(0.0, ts[-1], _RAMP_GRID_POINTS)
    inv = 1.0 / np.interp(grid, ts, rs)
    cum = np.concatenate(([0.0], np.cumsum((inv[1:] + inv[:-1]) / 2.0 * np.diff(grid))))
    t = np.asarray(t, dtype=np.float64)
    within = np.interp(np.minimum(t, ts[-1]), grid, cum)
    beyond = np.maximum(t - ts[-1], 0.0) / float(sustained["compute_ratio"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, (within + beyond) / np.where(t > 0, t, 1.0), inv[0])


def sustained_phase(cost, sustained: Mapping[str, Any]):
    """``cost`` (an :class:`~perfmodel.costs.OpCost` of one phase run back to back) with its compute
    slowed to the sustained rate after ``settle_s`` (module docstring); unchanged without data."""
    if not sustained:
        return cost
    r, t0 = float(sustained["compute_ratio"]), float(sustained["settle_s"])
    total = np.asarray(cost.total_s, dtype=np.float64)
    compute = np.minimum(np.asarray(cost.compute_s, dtype=np.float64), total)
    if "ramp" in sustained:
        extra = compute * (_mean_inverse_rate(sustained, total) - 1.0)
    else:
        if r >= 1.0:
            return cost
        with np.errstate(divide="ignore", invalid="ignore"):
            after = np.where(total > t0, 1.0 - t0 / np.where(total > 0, total, 1.0), 0.0)
        extra = compute * after * (1.0 / r - 1.0)
    extra = extra if np.ndim(extra) else float(extra)
    return dataclasses.replace(cost, compute_s=cost.compute_s + extra)


__all__ = ["SUSTAINED_KEYS", "after_busy", "sustained_from_dict", "sustained_phase"]
