"""Turning parsed uploads (JSON values or CSV tables from :func:`perfmodel.dashboard.common.parse_upload`) into planner
and simulator inputs, with size limits.  Nothing uploaded is executed or unpickled."""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfmodel.dashboard.common import UploadError

#: Largest inputs the pages accept (the solvers and the simulator run inside the request).
MAX_EXPERTS, MAX_LAYERS, MAX_SEQUENCES, MAX_REQUESTS = 512, 64, 4096, 5000


def loads_from_upload(value) -> np.ndarray:
    """Expert loads ``[layers, experts]`` from parsed JSON (``{"loads": ...}``, ``{"trace": ...}``, a table) or CSV."""
    if isinstance(value, pd.DataFrame):
        try:
            arr = value.to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise UploadError(
                "CSV loads: every cell must be a number (one row per layer, one column per expert)"
            )
    else:
        if isinstance(value, dict) and "trace" in value:
            from perfmodel.planners.inputs import trace_counts

            return trace_counts(value["trace"], value.get("num_experts"), where="upload")[0]
        raw = value.get("loads") if isinstance(value, dict) else value
        try:
            arr = np.asarray(raw, dtype=float)
        except (TypeError, ValueError):
            raise UploadError('JSON loads: expected {"loads": [[tokens per expert] per layer]}') from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise UploadError(f"loads must be a [layers][experts] table, got shape {list(arr.shape)}")
    if arr.shape[0] > MAX_LAYERS or arr.shape[1] > MAX_EXPERTS:
        raise UploadError(
            f"at most {MAX_LAYERS} layers and {MAX_EXPERTS} experts here, got {list(arr.shape)}"
        )
    return arr


def lengths_from_upload(value) -> np.ndarray:
    """Sequence lengths from parsed JSON (``{"lengths": [...]}`` or a list) or CSV (column ``length`` or the first)."""
    if isinstance(value, pd.DataFrame):
        col = "length" if "length" in value.columns else value.columns[0]
        raw = value[col].tolist()
    else:
        raw = value.get("lengths") if isinstance(value, dict) else value
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise UploadError("lengths must be a list of positive integers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise UploadError("lengths must be a non-empty list of positive integers")
    if arr.size > MAX_SEQUENCES:
        raise UploadError(f"at most {MAX_SEQUENCES} sequences here, got {arr.size}")
    return arr


def trace_from_upload(value) -> tuple:
    """``("trace", arrival_s, prompt_len, output_len)`` from parsed CSV or JSON (a list of objects)."""
    df = value if isinstance(value, pd.DataFrame) else pd.DataFrame(value if isinstance(value, list) else [])
    need = ("arrival_s", "prompt_len", "output_len")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UploadError(f"trace: needs columns {', '.join(need)}; missing {', '.join(missing)}")
    if len(df) > MAX_REQUESTS:
        raise UploadError(f"trace: at most {MAX_REQUESTS:,} requests here, got {len(df):,}")
    try:
        cols = [tuple(pd.to_numeric(df[c], errors="raise").tolist()) for c in need]
    except (TypeError, ValueError):
        raise UploadError("trace: arrival_s, prompt_len and output_len must be numbers") from None
    return ("trace", *cols)
