"""Measurement records: one JSON object per line, the op descriptor plus the measurement.

A record is an op descriptor of the core's schema (``docs/ops.md``) with these keys added:

- ``measured_s``: median time of one op, seconds;
- ``impl``: what ran (``cublas``, ``torch``, ``copy_engine``, ``cuda_graph_layer``; for attention the
  :class:`perfmodel.ops.AttentionImpl`: ``sdpa`` (PyTorch's own backend choice), ``flash2`` (SDPA
  restricted to flash), ``triton``, ``split_kv``, ``stream_k``), and for decoder layers
  ``attention_impl``, the attention their SDPA ran; for grouped GEMMs ``grouped_mm`` or ``loop`` (one
  matmul per expert);
- ``kernels`` (attention and layers; others with ``--kernel-names``): the CUDA kernels one call
  launched, as ``torch.profiler`` names them;
- ``family``: the shape family the record belongs to (held-out splits are by family);
- ``gpu`` (name as the driver reports it), ``gpu_model`` (canonical ``hw`` name or null),
  ``driver``, ``torch``, ``triton``, ``cuda``, ``date``;
- ``method`` (``cuda_graph`` or ``events``), ``reps`` (ops per timed region), ``rotate`` (input sets
  rotated to defeat the L2 cache), ``params`` (the shape arguments the op was built from).

Nothing here imports torch: the fit, the report and CI read records with numpy only.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from perfmodel.calibration import OpClass
from perfmodel.costs import memcpy_class
from perfmodel.errors import PerfModelError
from perfmodel.ops import (
    DEFAULT_ATTENTION_IMPL,
    Attention,
    DecoderLayer,
    Elementwise,
    Gemm,
    Memcpy,
    Op,
    Phase,
    op_from_dict,
)


#: The folder of the committed record files (``<gpu>.jsonl``) the fit reads.
DATA_DIR = Path(__file__).resolve().parent / "data"
#: The GPUs with committed records and a fitted, shipped profile (the two measured GPUs).
MEASURED_GPUS = ("h100-sxm-80gb", "h200-sxm-141gb")


class RecordError(PerfModelError):
    """A measurement record file that is missing, corrupt, or for another GPU."""


# Driver-reported names -> canonical hw names.  First match wins.
_GPU_PATTERNS = (
    (re.compile(r"H100.*(PCIe|NVL)", re.I), "h100-pcie-80gb"),
    (re.compile(r"H100", re.I), "h100-sxm-80gb"),
    (re.compile(r"H200", re.I), "h200-sxm-141gb"),
    (re.compile(r"A100.*PCIE", re.I), "a100-pcie-80gb"),
    (re.compile(r"A100.*40GB", re.I), "a100-sxm-40gb"),
    (re.compile(r"A100", re.I), "a100-sxm-80gb"),
    (re.compile(r"L40S", re.I), "l40s"),
)

REQUIRED_KEYS = ("op", "measured_s", "impl", "family", "gpu", "gpu_model", "driver", "torch", "date")


def canonical_gpu(reported: str) -> str | None:
    """The ``hw`` name of a driver-reported GPU name (``NVIDIA H100 80GB HBM3`` -> ``h100-sxm-80gb``)."""
    for pat, name in _GPU_PATTERNS:
        if pat.search(reported or ""):
            return name
    return None


def op_class_of(op: Op) -> OpClass | None:
    """The profile class whose curve prices ``op`` (None for a decoder layer: it is a sum)."""
    if isinstance(op, Gemm):
        return OpClass.GEMM
    if isinstance(op, Attention):
        return OpClass.ATTENTION_PREFILL if op.phase is Phase.PREFILL else OpClass.ATTENTION_DECODE
    if isinstance(op, Memcpy):
        return memcpy_class(op)
    if isinstance(op, Elementwise):
        return OpClass.ELEMENTWISE
    if isinstance(op, DecoderLayer):
        return None
    return OpClass(op.kind.value)


def class_key(rec: dict[str, Any]) -> str:
    """Report row of a record: ``gemm``, ``elementwise:rmsnorm``, ``attention_decode[split_kv]``, ..."""
    op = op_from_dict(rec)
    oc = op_class_of(op)
    if oc is None:
        impl = (op.attention_impl or DEFAULT_ATTENTION_IMPL).value
        return f"decoder_layer:{op.phase.value}" + (f"[{impl}]" if impl in NON_DEFAULT_IMPLS else "")
    key = oc.value
    if isinstance(op, Elementwise):
        key += f":{op.name}"
    impl = rec.get("impl", "")
    if impl in NON_DEFAULT_IMPLS:
        key += f"[{impl}]"
    return key


# Implementations fitted and scored on their own rows: attention implementations other than the default
# (``sdpa``), written into the profile's ``implementations``; ``loop`` (one matmul per expert), never written.
NON_DEFAULT_IMPLS = frozenset({"flash2", "triton", "split_kv", "stream_k", "loop"})


def check_record(rec: Any, where: str) -> dict[str, Any]:
    """Validate one record (descriptor parses, keys present, time positive and finite)."""
    if not isinstance(rec, dict):
        raise RecordError(f"{where}: a record must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise RecordError(f"{where}: record lacks {', '.join(missing)}")
    t = rec["measured_s"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise RecordError(f"{where}: measured_s must be a positive number, got {t!r}")
    try:
        op_from_dict(rec, where=f"{where}: ")
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    return rec


def read_records(path: str | Path, gpu: str | None = None) -> list[dict[str, Any]]:
    """Read a JSONL record file; with ``gpu``, refuse records of any other GPU.

    Raises
    ------
    RecordError
        The file is missing, a line is not JSON or not a valid record, or a record names another GPU.
    """
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError:
        raise RecordError(f"record file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"record file cannot be read: {p} ({exc.__class__.__name__})") from None
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{p}: line {i}: not valid JSON ({exc.msg})") from None
        out.append(check_record(rec, f"{p}: line {i}"))
    if not out:
        raise RecordError(f"record file is empty: {p}")
    if gpu is not None:
        refuse_other_gpu(out, gpu, str(p))
    return out


def refuse_other_gpu(records: Iterable[dict[str, Any]], gpu: str, where: str = "records") -> None:
    """Raise :class:`RecordError` if any record was measured on another GPU than ``gpu``."""
    others = sorted({str(r.get("gpu_model")) for r in records if r.get("gpu_model") != gpu})
    if others:
        raise RecordError(
            f"{where}: measured on {', '.join(others)}, not {gpu!r}; refusing to fit {gpu} on them"
        )


def write_record(fh, rec: dict[str, Any]) -> None:
    """Append one record and flush, so an interrupted run keeps what it measured."""
    fh.write(json.dumps(rec, sort_keys=False) + "\n")
    fh.flush()


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    for line in Path(path).read_text().splitlines():
        if line.strip():
            yield json.loads(line)


def split_by_family(records: list[dict[str, Any]], every: int = 3, offset: int = 1) -> tuple[list, list]:
    """Deterministic held-out split by shape family.

    Within each report row (class and implementation), the sorted families with index
    ``i % every == offset`` go to the test part; decoder layers are never fitted, so they all go
    to the test part.  A row with a single family keeps it in training (nothing to hold out).
    """
    by_key: dict[str, list[str]] = {}
    for r in records:
        k = class_key(r)
        by_key.setdefault(k, [])
        if r["family"] not in by_key[k]:
            by_key[k].append(r["family"])
    held = set()
    for k, fams in by_key.items():
        if k.startswith("decoder_layer"):
            held.update((k, f) for f in fams)
            continue
        fams = sorted(fams, key=_family_sort_key)
        if len(fams) < 2:
            continue
        held.update((k, f) for i, f in enumerate(fams) if i % every == offset)
    train, test = [], []
    for r in records:
        (test if (class_key(r), r["family"]) in held else train).append(r)
    return train, test


def _family_sort_key(f: str):
    # numbers inside the family name sort numerically so that held-out sizes interleave
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f)]


def replace_impl_records(
    old: list[dict[str, Any]], new: list[dict[str, Any]], impls: Iterable[str]
) -> list[dict[str, Any]]:
    """``old`` without its records of implementations ``impls``, followed by ``new``.

    Used when a kernel changed and its records were measured again: every record of those
    implementations must then come from the new run (one kernel version per implementation).

    Raises
    ------
    RecordError
        ``new`` holds a record of another implementation, or of another GPU than ``old``.
    """
    wanted = set(impls)
    stray = sorted({str(r.get("impl")) for r in new} - wanted)
    if stray:
        raise RecordError(f"new records of implementation(s) {', '.join(stray)} not named for replacement")
    gpus = {r.get("gpu_model") for r in old}
    if len(gpus) == 1:
        refuse_other_gpu(new, next(iter(gpus)), "new records")
    return [r for r in old if r.get("impl") not in wanted] + list(new)


def main(argv: list[str] | None = None) -> int:
    """``python -m perfmodel.validation.records replace DATA NEW --impls split_kv,stream_k``: rewrite DATA with
    its records of those implementations replaced by the records of NEW (JSONL files)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m perfmodel.validation.records", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("replace", help="replace the records of some implementations by a new run's")
    rp.add_argument("data", type=Path)
    rp.add_argument("new", type=Path, nargs="+")
    rp.add_argument("--impls", required=True, help="comma-separated implementations, e.g. split_kv,stream_k")
    args = ap.parse_args(argv)
    try:
        old = read_records(args.data)
        new = [r for path in args.new for r in read_records(path)]
        out = replace_impl_records(old, new, [i.strip() for i in args.impls.split(",") if i.strip()])
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.data.write_text("".join(json.dumps(r, sort_keys=False) + "\n" for r in out))
    removed = len(old) - (len(out) - len(new))
    print(f"{args.data}: {len(old)} records -> {len(out)} ({removed} removed, {len(new)} added)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
