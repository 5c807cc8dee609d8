"""``python -m perfmodel.validation.ratios``: does the model rank two GPUs as they measure?

A buyer compares GPUs by the ratio of a phase's time on one to its time on the other. Every decoder
layer measured on both GPUs (same family, phase, batch and lengths; the layers are never fitted) gives a
measured ratio ``t_a / t_b`` and a predicted one from the shipped calibrated profiles; the error is
``predicted ratio / measured ratio - 1``. Scored per phase (prefill, decode): median, p90 and max absolute
error and the median signed error. ``--readme FILE`` writes the table between :data:`START` and
:data:`END`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from perfmodel.validation.records import DATA_DIR, MEASURED_GPUS, RecordError, class_key, read_records

GPUS = MEASURED_GPUS
START, END = "<!-- ratios:start -->", "<!-- ratios:end -->"
#: the fields that name one measured layer shape on any GPU
_SHAPE = ("family", "phase", "batch", "q_len", "kv_len", "impl", "attention_impl")


@dataclass(frozen=True)
class RatioRow:
    """One layer shape measured on both GPUs: measured and predicted seconds on each."""

    shape: tuple
    measured_a_s: float
    measured_b_s: float
    predicted_a_s: float
    predicted_b_s: float

    @property
    def phase(self) -> str:
        return str(self.shape[1])

    @property
    def error(self) -> float:
        """Predicted ratio a/b over the measured ratio a/b, minus 1."""
        return (self.predicted_a_s / self.predicted_b_s) / (self.measured_a_s / self.measured_b_s) - 1.0


def _layers(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if class_key(r).startswith("decoder_layer")]


def ratio_rows(
    records_a: Sequence[dict[str, Any]], gpu_a: str, records_b: Sequence[dict[str, Any]], gpu_b: str
) -> list[RatioRow]:
    """The decoder layers measured on both GPUs, each priced by its GPU's shipped calibrated profile.

    Parameters
    ----------
    records_a, records_b : sequence of dict
        Records of ``gpu_a`` and ``gpu_b`` (``validation/data/<gpu>.jsonl``); only decoder layers are read.
    gpu_a, gpu_b : str
        Their hardware names.

    Returns
    -------
    list of RatioRow
        One per layer shape present on both, in the order of ``records_a``.
    """
    from perfmodel.predict import predict_records

    pa = predict_records(_layers(records_a), gpu_a)
    pb = {tuple(r.get(k) for k in _SHAPE): r for r in predict_records(_layers(records_b), gpu_b)}
    rows = []
    for r in pa:
        key = tuple(r.get(k) for k in _SHAPE)
        o = pb.get(key)
        if o is not None:
            rows.append(RatioRow(key, r["measured_s"], o["measured_s"], r["predicted_s"], o["predicted_s"]))
    return rows


def scores(rows: Sequence[RatioRow]) -> list[dict[str, Any]]:
    """Per phase: rows, median / p90 / max absolute ratio error and the median signed one (fractions)."""
    out = []
    for phase in sorted({r.phase for r in rows}):
        e = np.array([r.error for r in rows if r.phase == phase])
        a = np.abs(e)
        out.append(
            {
                "phase": phase,
                "rows": int(e.size),
                "median_abs_error": float(np.median(a)),
                "p90_abs_error": float(np.percentile(a, 90)),
                "max_abs_error": float(a.max()),
                "median_error": float(np.median(e)),
                "within_5pct": float(np.mean(a <= 0.05)),
            }
        )
    return out


def markdown(gpu_a: str, gpu_b: str, table: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"| {gpu_a} / {gpu_b}, decoder layers | rows | median abs error | p90 | max | median signed | within 5% |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in table:
        lines.append(
            f"| {s['phase']} | {s['rows']} | {100 * s['median_abs_error']:.1f}% | {100 * s['p90_abs_error']:.1f}% | "
            f"{100 * s['max_abs_error']:.1f}% | {100 * s['median_error']:+.1f}% | {100 * s['within_5pct']:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print (``--readme``: write) the ratio table of the committed records; exit 2 on bad input."""
    ap = argparse.ArgumentParser(
        prog="python -m perfmodel.validation.ratios", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--data", type=Path, default=DATA_DIR, help="folder of <gpu>.jsonl (default: %(default)s)"
    )
    ap.add_argument("--readme", type=Path, help=f"write the table into this file between {START} and {END}")
    ap.add_argument(
        "--worst", type=int, default=5, help="layers listed after the table, largest misses first"
    )
    a = ap.parse_args(argv)
    try:
        recs = {g: read_records(a.data / f"{g}.jsonl", g) for g in GPUS}
    except (RecordError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = ratio_rows(recs[GPUS[0]], GPUS[0], recs[GPUS[1]], GPUS[1])
    if not rows:
        print("error: no decoder layer was measured on both GPUs", file=sys.stderr)
        return 2
    body = markdown(GPUS[0], GPUS[1], scores(rows))
    if a.readme is None:
        print(body, end="")
        print(f"largest misses (layer shape: ratio error; each GPU's own error, {GPUS[0]} / {GPUS[1]}):")
        for r in sorted(rows, key=lambda r: -abs(r.error))[: a.worst]:
            print(
                f"  {' '.join(str(x) for x in r.shape[:5])}: {100 * r.error:+.1f}%; "
                f"{100 * (r.predicted_a_s / r.measured_a_s - 1):+.1f}% / {100 * (r.predicted_b_s / r.measured_b_s - 1):+.1f}%"
            )
        return 0
    text = a.readme.read_text()
    if START not in text or END not in text:
        print(f"error: {a.readme} has no {START} ... {END} section", file=sys.stderr)
        return 2
    a.readme.write_text(text[: text.index(START) + len(START)] + "\n" + body + text[text.index(END) :])
    print(f"ratio table written to {a.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
