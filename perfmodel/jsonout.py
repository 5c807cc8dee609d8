"""One way to write results as JSON: plain values only, every number finite.

:func:`jsonable` turns enums into their values, dataclasses into dicts (their
``to_dict`` when they have one), tuples into lists and numpy scalars into
Python numbers; :func:`dumps` refuses a NaN or infinite number with
:class:`perfmodel.errors.NonFiniteError` naming where it is, instead of
writing ``NaN`` / ``Infinity`` (which JSON parsers reject).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

from perfmodel.errors import NonFiniteError


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON-ready values (dict, list, str, int, float, bool, None)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return jsonable(obj.value)
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return [jsonable(v) for v in obj.tolist()]
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) else str(obj)


def non_finite(obj: Any, path: str = "") -> tuple[str, float] | None:
    """The first ``(path, value)`` in a :func:`jsonable` tree whose number is NaN or infinite, else None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "value", obj
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        hit = non_finite(v, f"{path}[{k}]" if isinstance(k, int) else (f"{path}.{k}" if path else str(k)))
        if hit is not None:
            return hit
    return None


def check_finite(obj: Any, what: str = "output") -> Any:
    """:func:`jsonable` of ``obj``; raises :class:`NonFiniteError` naming the first NaN or infinite number."""
    data = jsonable(obj)
    hit = non_finite(data)
    if hit is not None:
        raise NonFiniteError(f"{what}: {hit[0]} is {hit[1]!r}, not a finite number; nothing written")
    return data


def dumps(obj: Any, what: str = "output", **kw: Any) -> str:
    """``json.dumps`` of :func:`check_finite` ``(obj)`` (keywords as for ``json.dumps``)."""
    return json.dumps(check_finite(obj, what), allow_nan=False, **kw)


__all__ = ["check_finite", "dumps", "jsonable", "non_finite"]
