"""One check of numbers where they enter: finite, and within the float range.

Python integers have no upper bound, so ``10**400`` passes ``isinstance(v, int)``
and then overflows at the first ``float()``; NaN and infinity pass ``v >= 0``
checks.  :func:`is_finite_number` is the test every parser uses (CLI flags, op
descriptors, knobs, API sizes); :func:`finite_float` raises the project's
:class:`perfmodel.errors.NonFiniteError` naming the value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from perfmodel.errors import NonFiniteError

#: Largest magnitude accepted for a count, a size or a rate: well inside float64 (1.8e308), and
#: where a product of a few such values still does not overflow.
MAX_MAGNITUDE = 1e30


def is_finite_number(v: Any) -> bool:
    """True for an int or float (numpy too, never bool) that is finite and at most :data:`MAX_MAGNITUDE` in size."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    try:
        f = float(v)
    except OverflowError:
        return False
    return math.isfinite(f) and abs(f) <= MAX_MAGNITUDE


def finite_float(name: str, v: Any) -> float:
    """``v`` as a float; raises :class:`NonFiniteError` for NaN, infinity, or a magnitude beyond :data:`MAX_MAGNITUDE`."""
    if not is_finite_number(v):
        shown = (
            f"{str(v)[:20]}... ({len(str(v))} digits)" if isinstance(v, int) and len(str(v)) > 24 else repr(v)
        )
        raise NonFiniteError(f"{name} must be a finite number of at most {MAX_MAGNITUDE:g}, got {shown}")
    return float(v)


def finite_json_loads(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity``, and numbers beyond :data:`MAX_MAGNITUDE`.

    Such a number raises ``json.JSONDecodeError`` (at its first occurrence) so every
    reader's "not valid JSON" message names the file and line; strict JSON has no NaN
    or Infinity either.
    """
    import json

    def refuse(token: str, why: str):
        raise json.JSONDecodeError(
            f"{token[:24]}{'...' if len(token) > 24 else ''} {why}", text, max(text.find(token), 0)
        )

    def constant(token: str):
        refuse(token, "is not a finite number")

    def integer(token: str) -> int:
        if len(token.lstrip("-")) > 30 and not is_finite_number(int(token)):
            refuse(token, f"is larger than {MAX_MAGNITUDE:g}")
        return int(token)

    def real(token: str) -> float:
        v = float(token)
        if -MAX_MAGNITUDE <= v <= MAX_MAGNITUDE:  # fast path (NaN and infinities fail it)
            return v
        if not is_finite_number(v):
            refuse(token, f"is not a finite number of at most {MAX_MAGNITUDE:g}")
        return v

    return json.loads(text, parse_constant=constant, parse_int=integer, parse_float=real)


__all__ = ["MAX_MAGNITUDE", "finite_float", "finite_json_loads", "is_finite_number"]
