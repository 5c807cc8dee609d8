"""Result tables: writing them (CSV, or Parquet for a ``.parquet`` path) and formatting their cells.

One place for every command and the dashboard: :func:`fmt_seconds` for times, :func:`fmt_bytes` for
sizes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from perfmodel.errors import InvalidInputError


def parquet_engine() -> str:
    """The installed Parquet engine pandas will use; :class:`InvalidInputError` saying what to install if none."""
    for name in ("pyarrow", "fastparquet"):
        try:
            __import__(name)
        except ImportError:
            continue
        return name
    raise InvalidInputError("writing .parquet needs pyarrow: pip install pyarrow (or write a .csv path)")


def write_table(df: Any, path: "str | Path") -> None:
    """Write the DataFrame ``df`` to ``path``: Parquet when it ends in ``.parquet``, else CSV without the index."""
    if str(path).endswith(".parquet"):
        df.to_parquet(path, engine=parquet_engine())
    else:
        df.to_csv(path, index=False)


def fmt_seconds(s: float | None) -> str:
    """A time in its most readable unit: ``2.00 h``, ``1.5 min``, ``1.50 s``, ``12.3 ms``, ``25 µs``;
    ``n/a`` for None, NaN or infinity.  Value and unit are separated by one space."""
    if s is None or not math.isfinite(s):
        return "n/a"
    s = float(s)
    if abs(s) >= 3600:
        return f"{s / 3600:,.2f} h"
    if abs(s) >= 60:
        return f"{s / 60:.1f} min"
    if abs(s) >= 1:
        return f"{s:.2f} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


_BINARY = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def fmt_bytes(b: float | None) -> str:
    """A size in binary units to three figures: ``6.13 GiB``, ``45.2 GiB``, ``531 MiB``, ``512 B``; ``n/a`` for
    None, NaN or infinity.  Value and unit are separated by one space."""
    if b is None or not math.isfinite(b):
        return "n/a"
    b = float(b)
    for unit, f in _BINARY:
        if abs(b) >= f:
            v = b / f
            return f"{v:,.{2 if abs(v) < 10 else 1 if abs(v) < 100 else 0}f} {unit}"
    return f"{b:,.0f} B"
