"""``python -m perfmodel.validation.report``: honest accuracy of the calibrated model on held-out shapes.

For each GPU with records in ``validation/data/<gpu>.jsonl``: split the records by shape family
(:func:`perfmodel.validation.records.split_by_family`), fit on one part, predict the other, and print the
median, p90 and max absolute percentage error per op class, next to the peak-mode (datasheet
roofline) error on the same records.  Decoder layers are never fitted: each is predicted as the
sum of its parts.  With records of both GPUs, the profile fitted on all records of one, carried to
the other by the transfer rule (:mod:`perfmodel.transfer`), predicts the other's held-out records,
next to that GPU's own held-out fit (cross-GPU transfer, both directions).
Error bands (:mod:`perfmodel.validation.bands`): the coverage of the 80% band on the committed cross-validation residuals
(``validation/data/<gpu>.cv.jsonl``; each fold scored with the bands of the other folds), decoder layers by the
sum of their parts' bands scaled by the combination factors fitted on the other models' layers.
Writes a log-log plot per GPU and, with ``--readme``, the table into ``validation/README.md``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import OpClass, peak_profile
from perfmodel.errors import ProfileError
from perfmodel.transfer import carry_params, transfer_profile
from perfmodel.validation.fit import ProfileFitter, ops_of, predict_ops
from perfmodel.validation.records import (
    DATA_DIR,
    MEASURED_GPUS,
    RecordError,
    class_key,
    read_records,
    split_by_family,
)

GPUS = MEASURED_GPUS
START, END = "<!-- report:start -->", "<!-- report:end -->"


@dataclass(frozen=True)
class Score:
    key: str
    n: int
    median: float
    p90: float
    max: float

    @staticmethod
    def of(key: str, ape: np.ndarray) -> "Score":
        if len(ape) == 0:
            return Score(key, 0, float("nan"), float("nan"), float("nan"))
        return Score(key, len(ape), float(np.median(ape)), float(np.percentile(ape, 90)), float(np.max(ape)))


def scores(records: Sequence[dict[str, Any]], predicted: np.ndarray) -> list[Score]:
    """Per report row, then all decoder layers, the rows of the profile's classes, and everything."""
    meas = np.array([r["measured_s"] for r in records])
    ape = np.abs(predicted / meas - 1.0)
    keys = np.array([class_key(r) for r in records])
    out = [Score.of(k, ape[keys == k]) for k in sorted(set(keys))]
    layers = np.char.startswith(keys.astype(str), "decoder_layer")
    kernels = np.array(["[" in k for k in keys])
    out.append(Score.of("ALL decoder layers", ape[layers]))
    out.append(Score.of("ALL ops, profile classes (no layers)", ape[~layers & ~kernels]))
    out.append(Score.of("ALL held-out records", ape))
    return out


@dataclass
class GpuReport:
    gpu: str
    n_train: int
    n_test: int
    calibrated: list[Score]
    peak: list[Score]
    records: list[dict]
    predicted: np.ndarray
    fitter: ProfileFitter
    coverage: list | None = None  # validation.bands.Coverage rows


def evaluate(records: list[dict], gpu: str) -> GpuReport:
    """Fit on the training families, score the held-out ones (calibrated and peak)."""
    train, test = split_by_family(records)
    if not test:
        raise RecordError(f"{gpu}: no held-out records (every class has a single family)")
    fitter = ProfileFitter(gpu).fit(train)
    pred = fitter.predict_records(test)
    peak = predict_ops(ops_of(test), load_gpu(gpu), peak_profile(gpu))
    return GpuReport(gpu, len(train), len(test), scores(test, pred), scores(test, peak), test, pred, fitter)


def transferred_fitter(fitter: ProfileFitter, dst_gpu: str) -> ProfileFitter:
    """``fitter``'s profile carried to ``dst_gpu`` by the transfer rule (:func:`perfmodel.transfer.transfer_profile`);
    its extra rows (``grouped_gemm[loop]``) carry by the same field rules."""
    src, dst = load_gpu(fitter.gpu), load_gpu(dst_gpu)
    out = ProfileFitter(dst_gpu)
    out.profile_ = transfer_profile(fitter.profile_, src, dst)
    out.extra_ = {
        k: carry_params(p, OpClass(k.split("[")[0].split(":")[0]), src, dst)
        for k, p in (fitter.extra_ or {}).items()
    }
    return out


def transfer(
    src_records: list[dict],
    src_gpu: str,
    dst_records: list[dict],
    dst_gpu: str,
    fitter: ProfileFitter | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The profile fitted on all ``src`` records (or ``fitter``, already fitted on them), carried to ``dst_gpu``
    by the transfer rule, predicting ``dst_records``.

    Returns the indices of the records it prices, their predicted seconds, and the report rows it
    cannot price (an attention implementation the source did not measure: a curve never comes from
    another kernel).
    """
    fitter = fitter or ProfileFitter(src_gpu).fit(src_records)
    carried = transferred_fitter(fitter, dst_gpu)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(dst_records):
        groups.setdefault(class_key(r), []).append(i)
    idx, pred, skipped = [], [], []
    for key, rows in sorted(groups.items()):
        try:
            pred.append(carried.predict_records([dst_records[i] for i in rows]))
        except ProfileError:
            skipped.append(key)
            continue
        idx += rows
    return np.array(idx, dtype=int), (np.concatenate(pred) if pred else np.empty(0)), skipped


@dataclass(frozen=True)
class Transfer:
    """One direction of the cross-GPU check: ``src``'s full fit, carried to ``dst``, on ``dst``'s held-out records."""

    src: str
    dst: str
    n_src: int
    transferred: list[Score]
    own: list[Score]
    skipped: tuple[str, ...] = ()


def _short(gpu: str) -> str:
    return gpu.split("-")[0].upper()


def _gb_per_s(x: float) -> str:
    return f"{x / 1e12:.2f} TB/s" if x >= 1e12 else f"{x / 1e9:.0f} GB/s"


def _pct(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{100 * x:.1f}%"


def markdown(reports: list[GpuReport], cross: list[Transfer] | None) -> str:
    lines = []
    for rep in reports:
        m = rep.fitter.profile_.measured_on
        lines += [
            f"### {rep.gpu}: fitted on {rep.n_train} records, scored on {rep.n_test} held-out records",
            "",
            f"Measured on {m.get('gpu')}, driver {m.get('driver')}, torch {m.get('torch')}, "
            f"triton {m.get('triton')}, {', '.join(m.get('dates', []))}.",
            "",
            "| op class | n | median APE | p90 APE | max APE | peak-mode median | peak-mode p90 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c, p in zip(rep.calibrated, rep.peak):
            bold = "**" if c.key.startswith("ALL") else ""
            lines.append(
                f"| {bold}{c.key}{bold} | {c.n} | {_pct(c.median)} | {_pct(c.p90)} | {_pct(c.max)} | "
                f"{_pct(p.median)} | {_pct(p.p90)} |"
            )
        lines.append("")
    for rep in reports:
        if not rep.coverage:
            continue
        lines += [
            f"### {rep.gpu}: coverage of the 80% error band",
            "",
            'Bands: the family-level rule of `perfmodel.validation.bands` (`docs/calibration.md`, "Error bands") on '
            "3-fold cross-validation over shape families (`split_by_family(every=3, offset=0|1|2)`, committed "
            "in `validation/data/<gpu>.cv.jsonl` by `python -m perfmodel.validation.bands`): each fold's held-out records, "
            "predicted by the profile fitted on its training families, scored with the bands of the other two "
            "folds' residuals (records no band saw); decoder layers by the sum of their parts' bands scaled by "
            "the combination factors fitted on the other models' layers, once per fold. Target: 80% covered "
            "(75-85%).",
            "",
            "| op class | n | covered | below the band | above the band |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for c in rep.coverage:
            bold = "**" if c.key.startswith("ALL") else ""
            lines.append(
                f"| {bold}{c.key}{bold} | {c.n} | {_pct(c.covered)} | {_pct(c.below)} | {_pct(c.above)} |"
            )
        lines.append("")
    for t in cross or []:
        a, b = load_gpu(t.src), load_gpu(t.dst)
        lines += [
            f"### Cross-GPU transfer: {_short(t.src)} profile (all {t.n_src} {_short(t.src)} records) predicting "
            f"the {_short(t.dst)}'s held-out records",
            "",
            f"Carried by the transfer rule (`perfmodel.transfer`, `docs/calibration.md`): fractions of the "
            f"datasheet kept, fill-time ramps scaled with the rates, L2 knees with the L2 "
            f"(HBM {_gb_per_s(a.hbm_bytes_per_s)} -> {_gb_per_s(b.hbm_bytes_per_s)}, L2 {a.l2_bytes / 2**20:.0f} -> "
            f"{b.l2_bytes / 2**20:.0f} MiB, {a.sm_count} -> {b.sm_count} SMs). Own fit: the {_short(t.dst)} "
            "fitted on its training families (the table above), on the same records."
            + (
                f" Not priced (no {_short(t.src)} curve of that implementation): {', '.join(t.skipped)}."
                if t.skipped
                else ""
            ),
            "",
            "| op class | n | transferred median | transferred p90 | transferred max | own-fit median | own-fit p90 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c, o in zip(t.transferred, t.own):
            bold = "**" if c.key.startswith("ALL") else ""
            lines.append(
                f"| {bold}{c.key}{bold} | {c.n} | {_pct(c.median)} | {_pct(c.p90)} | {_pct(c.max)} | "
                f"{_pct(o.median)} | {_pct(o.p90)} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(rep: GpuReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [class_key(r) for r in rep.records]
    groups = sorted(set(k.split(":")[0].split("[")[0] if not k.startswith("decoder") else k for k in keys))
    cols = 4
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    meas = np.array([r["measured_s"] for r in rep.records])
    for ax, g in zip(axes.flat, groups):
        for k in sorted(set(keys)):
            kg = k.split(":")[0].split("[")[0] if not k.startswith("decoder") else k
            if kg != g:
                continue
            sel = np.array([kk == k for kk in keys])
            ax.scatter(meas[sel] * 1e6, rep.predicted[sel] * 1e6, s=9, alpha=0.7, label=k)
        lo = max(0.5, min(meas.min(), rep.predicted.min()) * 1e6 * 0.8)
        hi = max(meas.max(), rep.predicted.max()) * 1e6 * 1.2
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.fill_between([lo, hi], [lo * 0.88, hi * 0.88], [lo * 1.12, hi * 1.12], color="0.85", zorder=0)
        ax.set(xscale="log", yscale="log", title=g, xlabel="measured (us)", ylabel="predicted (us)")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.suptitle(f"{rep.gpu}: held-out records, calibrated model (band: +/-12%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(console, title: str, rep_scores: list[Score], peak: list[Score] | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    tab = Table(title=title)
    for c in ("op class", "n", "median", "p90", "max") + (("peak median", "peak p90") if peak else ()):
        tab.add_column(c, justify="left" if c == "op class" else "right", no_wrap=c == "op class")
    for i, c in enumerate(rep_scores):
        extra = (_pct(peak[i].median), _pct(peak[i].p90)) if peak else ()
        tab.add_row(escape(c.key), str(c.n), _pct(c.median), _pct(c.p90), _pct(c.max), *extra)
    console.print(tab)


def _coverage_table(console, title: str, rows: list) -> None:
    from rich.markup import escape
    from rich.table import Table

    tab = Table(title=title)
    for c in ("op class", "n", "covered", "below", "above"):
        tab.add_column(c, justify="left" if c == "op class" else "right", no_wrap=c == "op class")
    for c in rows:
        tab.add_row(escape(c.key), str(c.n), _pct(c.covered), _pct(c.below), _pct(c.above))
    console.print(tab)


def replace_section(readme: Path, body: str) -> None:
    text = readme.read_text() if readme.exists() else ""
    block = f"{START}\n{body}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m perfmodel.validation.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DATA_DIR,
        help="folder with <gpu>.jsonl record files (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("validation/report"),
        help="folder for the PNG plots (default: %(default)s)",
    )
    p.add_argument(
        "--readme", type=Path, default=None, help="write the table into this README between report markers"
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--no-coverage", action="store_true", help="skip the error-band coverage (reads <gpu>.cv.jsonl)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Fit on some shape families, score the others, print the table; the exit status (2 on bad input)."""
    a = _parser().parse_args(argv)
    return _report(data=a.data, out=a.out, readme=a.readme, no_plot=a.no_plot, no_coverage=a.no_coverage)


def _report(*, data: Path, out: Path, readme: Path | None, no_plot: bool, no_coverage: bool) -> int:
    """Fit on some shape families, score the others, print the table."""
    from rich.console import Console

    console = Console()
    reports, recs = [], {}
    try:
        for gpu in GPUS:
            path = data / f"{gpu}.jsonl"
            if not path.exists():
                console.print(f"no records for {gpu} ({path}): skipped")
                continue
            recs[gpu] = read_records(path, gpu)
            rep = evaluate(recs[gpu], gpu)
            reports.append(rep)
            _table(
                console,
                f"{gpu}: held-out ({rep.n_test} records; fit on {rep.n_train})",
                rep.calibrated,
                rep.peak,
            )
            if not no_coverage:
                from perfmodel.validation.bands import coverage, read_cv

                rep.coverage = coverage(recs[gpu], read_cv(path))
                _coverage_table(console, f"{gpu}: 80% band coverage, 3-fold cross-validation", rep.coverage)
            if not no_plot:
                out.mkdir(parents=True, exist_ok=True)
                plot(rep, out / f"{gpu}_predicted_vs_measured.png")
        cross = []
        if all(g in recs for g in GPUS):
            full = {g: ProfileFitter(g).fit(recs[g]) for g in GPUS}
            by_gpu = {r.gpu: r for r in reports}
            for src, dst in ((GPUS[0], GPUS[1]), (GPUS[1], GPUS[0])):
                rep = by_gpu[dst]
                idx, pred, skipped = transfer(recs[src], src, rep.records, dst, full[src])
                sub = [rep.records[i] for i in idx]
                t = Transfer(
                    src,
                    dst,
                    len(recs[src]),
                    scores(sub, pred),
                    scores(sub, rep.predicted[idx]),
                    tuple(skipped),
                )
                cross.append(t)
                _table(
                    console, f"cross-GPU: {src} profile carried to {dst}'s held-out records", t.transferred
                )
    except (RecordError, ValueError) as exc:
        console.print(f"error: {exc}")
        return 2
    if not reports:
        console.print(f"error: no record files for {', '.join(GPUS)} in {data}")
        return 2
    if readme is not None:
        replace_section(readme, markdown(reports, cross))
        console.print(f"table written to {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
