"""Reading planner inputs: expert loads, routing traces, affinity counts, sequence lengths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from perfmodel.checks import finite_json_loads
from perfmodel.planners.errors import PlannerError


def _read(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise PlannerError(f"{path}: no such file")
    text = p.read_text()
    if p.suffix == ".jsonl":
        try:
            return [finite_json_loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise PlannerError(f"{path}: not JSON lines ({exc.msg} at line {exc.lineno})") from None
    try:
        return finite_json_loads(text)
    except json.JSONDecodeError as exc:
        raise PlannerError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None


def trace_counts(
    routes: list, num_experts: int | None = None, where: str = "trace"
) -> tuple[np.ndarray, np.ndarray]:
    """Loads ``[L, E]`` and affinity ``[L-1, E, E]`` from per-token routes.

    ``routes[t][l]`` lists the experts token ``t`` went to in MoE layer ``l``.
    Each (expert in ``l``, expert in ``l + 1``) pair of a token counts once.
    """
    if not routes:
        raise PlannerError(f"{where}: empty routing trace")
    try:
        layers = len(routes[0])
        flat = [int(e) for tok in routes for lay in tok for e in lay]
    except (TypeError, ValueError):
        raise PlannerError(f"{where}: each token must be a list of per-layer lists of expert ids") from None
    if any(len(tok) != layers for tok in routes):
        raise PlannerError(f"{where}: every token must list the same number of layers ({layers})")
    if not flat or min(flat) < 0:
        raise PlannerError(f"{where}: expert ids must be integers >= 0")
    e = num_experts if num_experts is not None else max(flat) + 1
    if max(flat) >= e:
        raise PlannerError(f"{where}: expert id {max(flat)} >= num_experts {e}")
    loads = np.zeros((layers, e))
    aff = np.zeros((max(layers - 1, 0), e, e))
    for tok in routes:
        for l, lay in enumerate(tok):
            np.add.at(loads[l], np.asarray(lay, dtype=int), 1)
            if l + 1 < layers and lay and tok[l + 1]:
                aff[l][np.ix_(np.asarray(lay, dtype=int), np.asarray(tok[l + 1], dtype=int))] += 1
    return loads, aff


def read_loads(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``{"loads": [[...]]}``, or a routing trace: ``{"trace": [...], "num_experts": E}`` / JSONL of tokens.

    Returns (loads ``[L, E]``, affinity from the trace or None).
    """
    data = _read(path)
    if isinstance(data, list):
        routes = [d["experts"] if isinstance(d, dict) and "experts" in d else d for d in data]
        return trace_counts(routes, where=str(path))
    if not isinstance(data, dict):
        raise PlannerError(f"{path}: expected an object with 'loads' or 'trace'")
    if "loads" in data:
        try:
            loads = np.asarray(data["loads"], dtype=float)
        except (TypeError, ValueError):
            raise PlannerError(f"{path}: 'loads' must be a [layers][experts] table of numbers") from None
        if loads.ndim == 1:
            loads = loads[None, :]
        if loads.ndim != 2:
            raise PlannerError(f"{path}: 'loads' must be a [layers][experts] table (rows of equal length)")
        return loads, None
    if "trace" in data:
        return trace_counts(data["trace"], data.get("num_experts"), where=str(path))
    raise PlannerError(f"{path}: expected a key 'loads' or 'trace'")


def read_affinity(path: str | Path) -> np.ndarray:
    """``{"affinity": R}`` with ``R[l][e1][e2]``, shape ``[layers-1][experts][experts]``."""
    data = _read(path)
    raw = data.get("affinity") if isinstance(data, dict) else data
    try:
        r = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise PlannerError(
            f"{path}: 'affinity' must be a [layers-1][experts][experts] array of numbers"
        ) from None
    if r.ndim != 3:
        raise PlannerError(f"{path}: 'affinity' must be a [layers-1][experts][experts] array")
    return r


def read_lengths(path: str | Path) -> np.ndarray:
    data = _read(path)
    raw = data.get("lengths") if isinstance(data, dict) else data
    if raw is None:
        raise PlannerError(f"{path}: expected a key 'lengths'")
    try:
        s = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise PlannerError(f"{path}: 'lengths' must be a list of integers") from None
    if s.ndim != 1 or s.size == 0:
        raise PlannerError(f"{path}: 'lengths' must be a non-empty list of integers")
    return s
