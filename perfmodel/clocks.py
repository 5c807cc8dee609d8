"""Sustained clocks: a long compute-bound phase runs at the power-capped rate.

A calibration profile's curves are fitted on short timed regions (graph replays of a few ms), so
they price the rate a GPU reaches in a burst.  Back-to-back compute-bound work for seconds draws the
board to its power limit and the SM clock drops (``benchmarks/sustained.py`` measures it).  The
profile's ``sustained`` object says how much:

- ``compute_ratio``: the settled rate of compute-bound work as a fraction of the rate the profile
  predicts for the same op (at most 1);
- ``settle_s``: seconds of back-to-back work before the rate has settled.

The rule (:func:`sustained_phase`): a phase of predicted length ``T`` runs its first ``settle_s``
at the profile's rate and the rest at the sustained rate; only its compute time slows, in
proportion (the share of the phase after ``settle_s``), so

    T' = T + compute_s * max(0, 1 - settle_s / T) * (1 / compute_ratio - 1)

A prefill of seconds pays it; a decode step of milliseconds does not (decode is priced per step,
memory-bound, and the measured copy rate does not drop with the clock).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from perfmodel.errors import ProfileError

SUSTAINED_KEYS = ("compute_ratio", "settle_s")


def sustained_from_dict(raw: Any, where: str) -> dict[str, Any]:
    """Validate a profile's ``sustained`` object (``compute_ratio`` in (0, 1], ``settle_s`` >= 0)."""
    if not isinstance(raw, Mapping):
        raise ProfileError(f"{where}: 'sustained' must be an object")
    extra = set(raw) - set(SUSTAINED_KEYS) - {"source", "measured"}
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
    for k in ("source", "measured"):
        if k in raw:
            out[k] = raw[k]
    return out


def sustained_phase(cost, sustained: Mapping[str, Any]):
    """``cost`` (an :class:`~perfmodel.costs.OpCost` of one phase run back to back) with its compute
    slowed to the sustained rate after ``settle_s`` (module docstring); unchanged without data."""
    if not sustained:
        return cost
    r, t0 = float(sustained["compute_ratio"]), float(sustained["settle_s"])
    if r >= 1.0:
        return cost
    total = np.asarray(cost.total_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        after = np.where(total > t0, 1.0 - t0 / np.where(total > 0, total, 1.0), 0.0)
    compute = np.minimum(np.asarray(cost.compute_s, dtype=np.float64), total)
    extra = compute * after * (1.0 / r - 1.0)
    extra = extra if np.ndim(extra) else float(extra)
    return dataclasses.replace(cost, compute_s=cost.compute_s + extra)


__all__ = ["SUSTAINED_KEYS", "sustained_from_dict", "sustained_phase"]
