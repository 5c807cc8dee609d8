"""``predict``: the time of one op descriptor (or a JSONL file of them) on a GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from perfmodel.checks import finite_json_loads
from perfmodel.hw.loader import load_gpu
from perfmodel.hw.spec import GPU
from perfmodel.calibration import Mode, Profile, resolve_profile
from perfmodel.costs import Bound, OpCost, op_cost
from perfmodel.errors import OpDescriptorError
from perfmodel.ops import Op, op_from_dict


def predict_cost(
    op: "Op | dict",
    gpu: "str | GPU",
    mode: "Mode | str" = Mode.CALIBRATED,
    profile: "Profile | str | None" = None,
    attention_impl: str | None = None,
    launch: str | None = None,
) -> OpCost:
    """The cost breakdown of one op (a descriptor dict or an op dataclass).

    An attention op's own ``impl`` wins; ``attention_impl`` prices the attention of ops that name none
    (default ``sdpa``).

    Parameters
    ----------
    op : Op or dict
        An op of :mod:`perfmodel.ops` or its descriptor (``docs/ops.md``).
    gpu : str or GPU
        The accelerator.
    mode : Mode or str
        ``calibrated`` (default) or ``peak``.
    profile : Profile, str or None
        An explicit profile (object or path); None: the GPU's.
    attention_impl : str or None
        The attention implementation for ops that name none.
    launch : str or None
        ``graph`` (default) or ``eager``.

    Returns
    -------
    OpCost
        Compute, memory, latency and communication seconds, FLOPs, bytes and the bound.

    Raises
    ------
    OpDescriptorError
        For a descriptor the schema refuses.
    """
    g = load_gpu(gpu)
    o = op_from_dict(op) if isinstance(op, dict) else op
    return op_cost(o, g, resolve_profile(g, Mode(mode), profile, attention_impl, launch))


def predict(
    op: "Op | dict",
    gpu: "str | GPU",
    mode: "Mode | str" = Mode.CALIBRATED,
    profile: "Profile | str | None" = None,
    attention_impl: str | None = None,
    launch: str | None = None,
) -> float:
    """Predicted seconds for one op on ``gpu`` (calibrated by default; ``launch`` graph or eager).

    Parameters
    ----------
    op, gpu, mode, profile, attention_impl, launch
        As in :func:`predict_cost`.

    Returns
    -------
    float, seconds
        The op's predicted time (``predict_cost(...).total_s``).
    """
    return float(predict_cost(op, gpu, mode, profile, attention_impl, launch).total_s)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise OpDescriptorError(f"input file not found: {path}") from None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield i, finite_json_loads(line)
        except json.JSONDecodeError as exc:
            raise OpDescriptorError(f"{path}: line {i}: not valid JSON ({exc.msg})") from None


def predict_records(
    records: list[dict[str, Any]],
    gpu: "str | GPU",
    mode: "Mode | str" = Mode.CALIBRATED,
    profile: "Profile | str | None" = None,
    where: str = "",
    attention_impl: str | None = None,
    launch: str | None = None,
) -> list[dict[str, Any]]:
    """Each record with ``predicted_s`` and ``predicted_bound`` added (input keys kept)."""
    g = load_gpu(gpu)
    prof = resolve_profile(g, Mode(mode), profile, attention_impl, launch)
    return [_predicted(rec, g, prof, f"{where}line {i}: ") for i, rec in enumerate(records, start=1)]


def _predicted(rec: dict[str, Any], g: GPU, prof: Profile, where: str) -> dict[str, Any]:
    """``rec`` with ``predicted_s`` and ``predicted_bound`` added; ``where`` prefixes descriptor errors."""
    cost = op_cost(op_from_dict(rec, where=where), g, prof)
    b = cost.bound
    return {
        **rec,
        "predicted_s": float(cost.total_s),
        "predicted_bound": b.value if isinstance(b, Bound) else str(b),
    }


def predict_file(
    in_path: "str | Path",
    out_path: "str | Path",
    gpu: "str | GPU",
    mode: "Mode | str" = Mode.CALIBRATED,
    profile: "Profile | str | None" = None,
    attention_impl: str | None = None,
    launch: str | None = None,
) -> int:
    """Read op descriptors (JSONL), write them back with ``predicted_s``; returns the count.

    Parameters
    ----------
    in_path : str or Path
        JSONL file, one op descriptor per line.
    out_path : str or Path
        JSONL file written: each descriptor with ``predicted_s`` (seconds).
    gpu, mode, profile, attention_impl, launch
        As in :func:`predict_cost`.

    Returns
    -------
    int
        The number of ops predicted.
    """
    in_path = Path(in_path)
    g = load_gpu(gpu)
    prof = resolve_profile(g, Mode(mode), profile, attention_impl, launch)
    rows = [_predicted(rec, g, prof, f"{in_path}: line {lineno}: ") for lineno, rec in _read_jsonl(in_path)]
    from perfmodel.jsonout import dumps

    text = "".join(dumps(r, what=f"{in_path}: prediction {i + 1}") + "\n" for i, r in enumerate(rows))
    Path(out_path).write_text(text)
    return len(rows)
