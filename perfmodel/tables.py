"""Writing result tables: CSV, or Parquet for a ``.parquet`` path (one place for every command)."""

from __future__ import annotations

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
