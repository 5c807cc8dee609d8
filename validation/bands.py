"""Error bands of the calibrated model: quantiles of out-of-sample log(predicted / measured) per band row.

A profile's ``bands`` object (:func:`perfmodel.calibration.bands_from_dict`; ``docs/calibration.md``,
"Error bands") has three groups, each mapping band rows to the quantiles ``q10``, ``q90`` of
r = log(predicted / measured), their count ``n``, the shape families ``families`` and the central ``level``
they were taken at:

- ``measured``: cross-validation over shape families: the three splits of
  :func:`perfmodel.validation.records.split_by_family` (``every=3``, offsets :data:`FOLDS`) hold out each family once;
  each split's profile, fitted on its training families, predicts its held-out families, and the residuals of
  all three are pooled (one per held-out record). The residuals are committed (:func:`write_cv`,
  ``validation/data/<gpu>.cv.jsonl``) so that the coverage check (:func:`coverage`) reads them without refitting;
- ``transferred``: this GPU's full fit carried by the transfer rule to the other measured GPU,
  predicting all of that GPU's records (used when a profile is transferred *from* this GPU);
- ``datasheet``: the peak model (datasheet roofline) on all of this GPU's records (used for classes
  priced at the datasheet).

Rows (:func:`band_table`): each band key (the profile's curve names, ``gemm``, ``attention_prefill[sdpa]``,
``elementwise:rmsnorm``), its op class (``elementwise``, ``attention_decode``) and ``*`` (all ops), each also
per size class of the predicted time (``gemm|under_10us``, :func:`perfmodel.costs.size_class_of`) and per regime
(``gemm|latency``, :func:`perfmodel.costs.regime_of`). An op takes the first row that exists of: its key by size,
by regime, alone; its class by size, by regime, alone; ``*`` likewise (:func:`perfmodel.calibration.band_row`).
A row needs :data:`MIN_N` records (:data:`MIN_N_CELL` by size or regime) from :data:`MIN_FAMILIES` shape families.

Quantiles (:data:`FAMILY`, the shipped rule): the residuals of one shape family are alike (one kernel choice,
one extrapolation), so a row's 10%/90% quantiles, taken over few families, under-cover new families. The
central level of each row is therefore chosen by leave-one-family-out: the smallest of 80%, 81%, ... 99% whose
band, taken over the row's other families, covers at least 80% of the records of the family left out, pooled
over its families (:func:`family_level`); the band is then the finite-sample (split-conformal) order statistics
of all the row's residuals at that level. :data:`PLAIN` is the rule it replaced (80% always, no size rows, no
family count), kept to report coverage before and after.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Sequence

import numpy as np

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import Profile, band_row, bands_from_dict, peak_profile
from perfmodel.costs import REGIMES, SIZE_CLASSES, op_cost, regime_of, size_class_of
from perfmodel.ops import AttentionImpl, Phase
from perfmodel.validation.fit import ProfileFitter, _stack, ops_of, predict_ops
from perfmodel.validation.records import DATA_DIR, MEASURED_GPUS, RecordError, class_key, split_by_family

#: Fewest records for a row of a key, class or ``*`` alone.
MIN_N = 8
#: Fewest records for a row by size class or regime (``<key>|<size>``, ``<key>|<regime>``).
MIN_N_CELL = 30
#: Fewest shape families for a row (family-level rule only): leave-one-family-out needs several.
MIN_FAMILIES = 3
#: The band's nominal central coverage; the family-level rule widens a row's level up to the last of
#: :data:`LEVELS_PCT` until leave-one-family-out covers this share.
CENTRAL = 0.80
LEVELS_PCT: tuple[int, ...] = tuple(range(80, 100))
#: Cross-validation folds: offsets of :func:`perfmodel.validation.records.split_by_family` with ``every=len(FOLDS)``.
FOLDS: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class BandRule:
    """How band rows are cut and their quantiles taken.

    Parameters
    ----------
    name : str
        Its name in the committed cross-validation file and the coverage tables.
    sizes : bool
        Rows by size class of the predicted time (``<key>|<size>``).
    family_level : bool
        Central level chosen by leave-one-family-out (:func:`family_level`); rows need :data:`MIN_FAMILIES`.
        Otherwise 80% always.
    """

    name: str
    sizes: bool
    family_level: bool


FAMILY = BandRule("family", sizes=True, family_level=True)
PLAIN = BandRule("plain", sizes=False, family_level=False)
RULES: tuple[BandRule, ...] = (PLAIN, FAMILY)


def band_key(rec: dict[str, Any]) -> str | None:
    """The band key of a record (None: a decoder layer or ``grouped_gemm[loop]``)."""
    k = class_key(rec)
    if k.startswith("decoder_layer"):
        return None
    base, _, impl = k.partition("[")
    if base.startswith("attention"):
        phase = Phase.PREFILL if base == "attention_prefill" else Phase.DECODE
        impl = AttentionImpl(impl.rstrip("]") or "sdpa").curve(phase)
        return f"{base}[{impl.value}]"
    return None if impl else k


def _class_of(key: str) -> str:
    """The op class of a band key: ``attention_decode[split_kv]`` -> ``attention_decode``."""
    return key.split(":")[0].split("[")[0]


def _order_stats(n: int, level_pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of the finite-sample lower and upper bounds of a central ``level_pct``% band over ``n``
    sorted values: ``floor(a (n + 1))`` and ``ceil((1 - a) (n + 1))``, a = (1 - level) / 2, clamped to 1..n
    (integer arithmetic: no rounding at the edges)."""
    p = np.asarray(level_pct, dtype=np.int64)
    lo = ((100 - p) * (n + 1)) // 200
    hi = -((-(100 + p) * (n + 1)) // 200)
    return np.clip(lo, 1, n), np.clip(hi, 1, n)


def family_level(r: np.ndarray, families: np.ndarray) -> int:
    """The central level (percent, one of :data:`LEVELS_PCT`) of the family-level rule: the smallest whose
    finite-sample band over all families but one covers at least :data:`CENTRAL` of the records of the family
    left out, pooled over the families; the last level when none does."""
    levels = np.asarray(LEVELS_PCT)
    covered = np.zeros(len(levels))
    for f in np.unique(families):
        out = families == f
        rest = np.sort(r[~out])
        lo, hi = _order_stats(len(rest), levels)
        x = r[out][:, None]
        covered += np.sum((x >= rest[lo - 1]) & (x <= rest[hi - 1]), axis=0)
    ok = covered / len(r) >= CENTRAL
    return int(levels[np.argmax(ok)] if ok.any() else levels[-1])


def _q(r: np.ndarray, level_pct: int) -> tuple[float, float]:
    x = np.sort(np.asarray(r, dtype=np.float64))
    lo, hi = _order_stats(len(x), np.array([level_pct]))
    return float(x[lo[0] - 1]), float(x[hi[0] - 1])


def band_table(
    records: Sequence[dict[str, Any]],
    predicted: np.ndarray,
    regimes: Sequence[str] | None = None,
    rule: BandRule = FAMILY,
) -> dict[str, dict[str, Any]]:
    """Band rows (module docstring) from the residuals log(``predicted`` / measured) of ``records`` (rows of
    records without a band key are left out); ``regimes``: each record's :func:`perfmodel.costs.regime_of`
    (None: no regime rows)."""
    pred = np.asarray(predicted, dtype=np.float64)
    keys = [band_key(r) for r in records]
    r = np.log(pred / np.array([x["measured_s"] for x in records], dtype=np.float64))
    fams = np.array([f"{k}/{x['family']}" for k, x in zip(keys, records)])
    sizes = size_class_of(pred) if rule.sizes and len(pred) else None
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is None:
            continue
        for g in dict.fromkeys((k, _class_of(k), "*")):
            groups.setdefault(g, []).append(i)
            if sizes is not None:
                groups.setdefault(f"{g}|{sizes[i]}", []).append(i)
            if regimes is not None:
                groups.setdefault(f"{g}|{regimes[i]}", []).append(i)
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(groups, key=lambda g: (g.split("|")[0] == "*", g)):
        idx = np.array(groups[g])
        m = len(set(fams[idx]))
        if len(idx) < (MIN_N_CELL if "|" in g else MIN_N) or (rule.family_level and m < MIN_FAMILIES):
            continue
        level = family_level(r[idx], fams[idx]) if rule.family_level else round(100 * CENTRAL)
        q10, q90 = _q(r[idx], level)
        out[g] = {
            "q10": round(q10, 4),
            "q90": round(q90, 4),
            "n": len(idx),
            "families": m,
            "level": level / 100,
        }
    return out


def regimes_of(ops: list, gpu: str, profile: Profile) -> np.ndarray:
    """:func:`perfmodel.costs.regime_of` of each op's cost under ``profile``."""
    g = load_gpu(gpu)
    out = np.empty(len(ops), dtype=object)
    for op, idx in _stack(ops):
        out[idx] = np.broadcast_to(np.asarray(regime_of(op_cost(op, g, profile)), dtype=object), idx.shape)
    return out


def with_bands(profile: Profile, bands: dict[str, Any]) -> Profile:
    return replace(profile, bands=MappingProxyType(bands_from_dict(bands, "bands")))


def predict_band(ops: list, gpu: str, profile: Profile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted, low, high) seconds of each op under ``profile`` (with its ``bands``)."""
    g = load_gpu(gpu)
    out = np.empty((3, len(ops)))
    for op, idx in _stack(ops):
        c = op_cost(op, g, profile)
        out[:, idx] = [
            np.broadcast_to(np.asarray(x, dtype=np.float64), idx.shape)
            for x in (c.total_s, c.low_s, c.high_s)
        ]
    return out[0], out[1], out[2]


# ---- cross-validation over shape families -----------------------------------------------------------------


def _scored(rec: dict[str, Any]) -> bool:
    """Held-out records the bands speak for: ops with a band key and decoder layers (not ``grouped_gemm[loop]``)."""
    return band_key(rec) is not None or class_key(rec).startswith("decoder_layer")


def cross_validate(records: list[dict[str, Any]], gpu: str) -> list[dict[str, Any]]:
    """Rows of the cross-validation file: for each fold of :data:`FOLDS`, the profile fitted on that split's
    training families predicting its held-out records: ``{"fold", "line", "predicted_s", "regime"}`` per op (``line``:
    the record's index in ``records``); per decoder layer also ``"band_s": {rule: [low, high]}``, the sum of its
    parts' bands under each rule of :data:`RULES` with the band rows of the *other* folds' op residuals."""
    line_of = {id(r): i for i, r in enumerate(records)}
    rows: list[dict[str, Any]] = []
    fits: dict[int, tuple[Profile, list[int]]] = {}
    for f in FOLDS:
        train, test = split_by_family(records, every=len(FOLDS), offset=f)
        fitter = ProfileFitter(gpu).fit(train)
        ops = [r for r in test if band_key(r) is not None]
        pred = fitter.predict_records(ops)
        reg = regimes_of(ops_of(ops), gpu, fitter.profile_)
        rows += [
            {"fold": f, "line": line_of[id(r)], "predicted_s": float(p), "regime": str(g)}
            for r, p, g in zip(ops, pred, reg)
        ]
        fits[f] = (
            fitter.profile_,
            [line_of[id(r)] for r in test if class_key(r).startswith("decoder_layer")],
        )
    for f, (profile, lines) in fits.items():
        layers = [records[i] for i in lines]
        out = [{"fold": f, "line": i, "band_s": {}} for i in lines]
        for rule in RULES:
            others = [x for x in rows if x["fold"] != f and "band_s" not in x]
            table = band_table(
                [records[x["line"]] for x in others],
                np.array([x["predicted_s"] for x in others]),
                [x["regime"] for x in others],
                rule,
            )
            pred, lo, hi = predict_band(ops_of(layers), gpu, with_bands(profile, {"measured": table}))
            for o, p, a, b in zip(out, pred, lo, hi):
                o["predicted_s"] = float(p)
                o["band_s"][rule.name] = [float(a), float(b)]
        rows += out
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cv_path(records_path: Path) -> Path:
    """The cross-validation file of a record file: ``<gpu>.jsonl`` -> ``<gpu>.cv.jsonl``."""
    return records_path.with_name(records_path.name.removesuffix(".jsonl") + ".cv.jsonl")


def write_cv(rows: list[dict[str, Any]], records_path: Path, gpu: str) -> Path:
    """Write ``rows`` (:func:`cross_validate`) beside ``records_path``, headed by the records' SHA-256."""
    path = cv_path(records_path)
    head = {
        "gpu": gpu,
        "records": records_path.name,
        "records_sha256": _sha256(records_path),
        "folds": list(FOLDS),
        "source": "python -m perfmodel.validation.bands: split_by_family(every=3, offset=fold); the fold's fit predicts "
        "its held-out records",
    }
    path.write_text("\n".join(json.dumps(x) for x in [head, *rows]) + "\n")
    return path


def read_cv(records_path: Path) -> list[dict[str, Any]]:
    """The rows of the cross-validation file of ``records_path``.

    Raises
    ------
    RecordError
        The file is missing, or was computed from other records (run ``python -m perfmodel.validation.bands``).
    """
    path = cv_path(records_path)
    if not path.exists():
        raise RecordError(f"{path} missing: run python -m perfmodel.validation.bands")
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    if head.get("records_sha256") != _sha256(records_path):
        raise RecordError(
            f"{path} was computed from other records than {records_path.name}: "
            f"run python -m perfmodel.validation.bands"
        )
    return [json.loads(x) for x in lines[1:]]


def cv_table(
    records: list[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    rule: BandRule = FAMILY,
    folds: Sequence[int] = FOLDS,
) -> dict[str, dict[str, Any]]:
    """:func:`band_table` of the op residuals of ``rows`` in ``folds``."""
    ops = [x for x in rows if "band_s" not in x and x["fold"] in folds]
    return band_table(
        [records[x["line"]] for x in ops],
        np.array([x["predicted_s"] for x in ops]),
        [x["regime"] for x in ops],
        rule,
    )


# ---- combining op bands into a pass -------------------------------------------------------------------------


def layer_kappas(
    records: list[dict[str, Any]], rows: Sequence[dict[str, Any]], rule: BandRule = FAMILY
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per held-out decoder layer of ``rows`` (one per fold): the smallest factors of the low and of the high
    side of its summed op band (``band_s`` under ``rule``) that cover the measured time, and the layer's model
    (its record's family). A layer measured below its prediction needs ``(measured - predicted) / (low -
    predicted)`` of the low side and nothing of the high side (0), one above it the reverse; infinite where
    the band is empty on that side."""
    lo, hi, models = [], [], []
    for x in rows:
        if "band_s" not in x:
            continue
        rec = records[x["line"]]
        p, m = x["predicted_s"], rec["measured_s"]
        a, b = x["band_s"][rule.name]
        lo.append(0.0 if m >= p else ((m - p) / (a - p) if a != p else np.inf))
        hi.append(0.0 if m <= p else ((m - p) / (b - p) if b != p else np.inf))
        models.append(str(rec.get("family", "")))
    return (
        np.asarray(lo, dtype=np.float64),
        np.asarray(hi, dtype=np.float64),
        np.asarray(models, dtype=object),
    )


def combination_factor(kappas: np.ndarray) -> float:
    """The factor of one side of summed op bands that leaves :math:`(1 - CENTRAL) / 2` (10%) of the layers
    beyond that side: the finite-sample (split-conformal) upper order statistic of the layers' one-sided
    covering factors (:func:`layer_kappas`), the ``ceil((1 + CENTRAL) / 2 (n + 1))``-th smallest, clamped to
    ``n`` and to at most 4; 1 without layers."""
    k = np.sort(np.asarray(kappas, dtype=np.float64))
    if not k.size:
        return 1.0
    rank = min(int(np.ceil((1 + CENTRAL) / 2 * (k.size + 1))), k.size)
    return float(min(k[rank - 1], 4.0))


def combination_bands(records: list[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``bands.combination`` object of a profile: :func:`combination_factor` of each side over all
    held-out decoder layers of the cross-validation rows (:data:`FAMILY` rule)."""
    lo, hi, models = layer_kappas(records, rows)
    return {
        "factor_low": combination_factor(lo),
        "factor_high": combination_factor(hi),
        "n": int(lo.size),
        "models": int(len(set(models))),
        "source": "perfmodel.validation.bands.combination_factor: held-out decoder layers (graph replays), the "
        "smallest factor of each side of the sum of their ops' out-of-fold bands covering each, upper "
        f"finite-sample order statistic leaving {(1 - CENTRAL) / 2:.0%} beyond each side",
    }


# ---- coverage ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    key: str
    n: int
    covered: float  # share of records with low <= measured <= high
    below: float  # share measured below the band (the model was too slow)
    above: float


def coverage(
    records: list[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    rule: BandRule = FAMILY,
    folds: Sequence[int] = FOLDS,
) -> list[Coverage]:
    """Share of held-out records inside their band, each fold of ``folds`` scored with the band rows of the
    *other* folds' residuals (``rule``), so that no band saw the records it is scored on; decoder layers by the sum
    of their parts' bands scaled by the combination factor (:func:`combination_factor`) fitted on the layers of
    the other models (a layer is held out in every fold, so counted once per fold).
    Per report row, then per op class (classes of several rows), per regime and size class (ops), all decoder
    layers, all ops, everything."""
    meas, lo, hi, keys, regs, sizes = [], [], [], [], [], []
    k_lo, k_hi, models = layer_kappas(records, rows, rule)
    factor = {  # each model's layers scored with the factors of the other models' layers
        m: (combination_factor(k_lo[models != m]), combination_factor(k_hi[models != m])) for m in set(models)
    }
    for f in folds:
        table = cv_table(records, rows, rule, [g for g in FOLDS if g != f])
        for x in (x for x in rows if x["fold"] == f):
            rec = records[x["line"]]
            if "band_s" in x:  # the summed op bands scaled by the factor fitted on the other models' layers
                a, b = x["band_s"][rule.name]
                (f_lo, f_hi), p = factor[str(rec.get("family", ""))], x["predicted_s"]
                a, b = p + f_lo * (a - p), p + f_hi * (b - p)
            else:
                k = band_key(rec)
                z = str(size_class_of(x["predicted_s"]))
                q10, q90 = band_row(table, (k, _class_of(k)), x["regime"], z if rule.sizes else None) or (
                    0.0,
                    0.0,
                )
                a, b = x["predicted_s"] * np.exp(-q90), x["predicted_s"] * np.exp(-q10)
            meas.append(rec["measured_s"])
            lo.append(a)
            hi.append(b)
            keys.append(class_key(rec))
            regs.append(x.get("regime", ""))
            sizes.append(str(size_class_of(x["predicted_s"])))
    meas, lo, hi = np.array(meas), np.array(lo), np.array(hi)
    keys, regs, sizes = (
        np.array(keys, dtype=object),
        np.array(regs, dtype=object),
        np.array(sizes, dtype=object),
    )

    def of(k: str, sel: np.ndarray) -> Coverage:
        n = int(sel.sum())
        if not n:
            return Coverage(k, 0, float("nan"), float("nan"), float("nan"))
        m, a, b = meas[sel], lo[sel], hi[sel]
        return Coverage(
            k, n, float(np.mean((m >= a) & (m <= b))), float(np.mean(m < a)), float(np.mean(m > b))
        )

    layers = np.array([k.startswith("decoder_layer") for k in keys], dtype=bool)
    out = [of(k, keys == k) for k in sorted(set(keys))]
    bases = np.array([k.split("[")[0].split(":")[0] for k in keys], dtype=object)
    out += [
        of(f"class: {b}", (bases == b) & ~layers)
        for b in sorted(set(bases[~layers]))
        if ((bases == b) & ~layers).sum() > (keys == b).sum()
    ]  # classes of several rows
    out += [of(f"regime: {g}", (regs == g) & ~layers) for g in REGIMES]
    out += [of(f"size: {z}", (sizes == z) & ~layers) for z in SIZE_CLASSES]
    out += [
        of("ALL decoder layers", layers),
        of("ALL ops (no layers)", ~layers),
        of("ALL held-out records", np.ones(len(keys), bool)),
    ]
    return out


def _pct(c: Coverage) -> str:
    return "-" if not c.n else f"{100 * c.covered:.1f}%"


def coverage_markdown(data_dir: Path, gpus: Sequence[str]) -> str:
    """Coverage per GPU and class, before (:data:`PLAIN`: on split 2 alone, the check it had, and on all folds)
    and after (:data:`FAMILY`, all folds), from the committed cross-validation files: one markdown table per GPU."""
    from perfmodel.validation.records import read_records

    parts = []
    for gpu in gpus:
        path = data_dir / f"{gpu}.jsonl"
        recs = read_records(path, gpu)
        rows = read_cv(path)
        cols = [coverage(recs, rows, PLAIN, (2,)), coverage(recs, rows, PLAIN), coverage(recs, rows, FAMILY)]
        parts += [
            f"**{gpu}** (target 80%, 75-85%; n: records scored, split 2 / all folds)",
            "",
            "| rows | n | plain, split 2 | plain, 3 folds | family-level, 3 folds | below / above (family-level) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for a, b, c in zip(*cols):
            bold = "**" if c.key.startswith("ALL") else ""
            parts.append(
                f"| {bold}{c.key}{bold} | {a.n} / {c.n} | {_pct(a)} | {_pct(b)} | {_pct(c)} | "
                f"{100 * c.below:.1f}% / {100 * c.above:.1f}% |"
                if c.n
                else f"| {c.key} | {a.n} / {c.n} | {_pct(a)} | {_pct(b)} | {_pct(c)} | - |"
            )
        parts.append("")
    return "\n".join(parts)


# ---- the profile's bands ----------------------------------------------------------------------------------


def datasheet_bands(records: Sequence[dict[str, Any]], gpu: str) -> dict:
    """The ``datasheet`` group: the peak model on all records."""
    recs = [r for r in records if band_key(r) is not None]
    ops, peak = ops_of(recs), peak_profile(gpu)
    return band_table(recs, predict_ops(ops, load_gpu(gpu), peak), regimes_of(ops, gpu, peak))


def transferred_bands(full: ProfileFitter, dst_records: list[dict[str, Any]], dst_gpu: str) -> dict:
    """The ``transferred`` group: ``full`` (fitted on all of its GPU's records) carried to ``dst_gpu``,
    predicting ``dst_records`` (rows it cannot price are left out)."""
    from perfmodel.validation.report import transfer, transferred_fitter

    recs = [r for r in dst_records if band_key(r) is not None]
    idx, pred, _ = transfer([], full.gpu, recs, dst_gpu, full)
    priced = [recs[i] for i in idx]
    return band_table(
        priced, pred, regimes_of(ops_of(priced), dst_gpu, transferred_fitter(full, dst_gpu).profile_)
    )


def fit_bands(
    records: list[dict[str, Any]],
    gpu: str,
    full: ProfileFitter,
    other: tuple[str, list[dict[str, Any]]] | None = None,
    cv_rows: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The profile's ``bands`` object: ``measured`` (cross-validation rows ``cv_rows``, computed when None),
    ``datasheet`` and, with ``other`` = (GPU, its records), ``transferred`` (``full``, this GPU's fit on all
    records, carried there)."""
    rows = cross_validate(records, gpu) if cv_rows is None else cv_rows
    out: dict[str, Any] = {"measured": cv_table(records, rows)}
    src = (
        f"perfmodel.validation.bands: measured: {len(FOLDS)}-fold cross-validation over shape families "
        f"(validation.records.split_by_family, every={len(FOLDS)}), out-of-fold residuals pooled; datasheet: "
        f"peak model on all {len(records)} records"
    )
    if other is not None:
        out["transferred"] = transferred_bands(full, other[1], other[0])
        src += f"; transferred: the full fit carried to {other[0]}, on its {len(other[1])} records"
    out["datasheet"] = datasheet_bands(records, gpu)
    if any("band_s" in x for x in rows):
        out["combination"] = combination_bands(records, rows)
    out["source"] = src + (
        "; q10/q90: finite-sample quantiles of log(predicted / measured) at each row's central "
        "level (leave-one-family-out: the smallest of 80-99% covering 80% of a family left out), "
        "per key, class and all ops, by size class and by regime"
    )
    return out


def refresh_profile_bands(gpu: str, data_dir: Path, profile_path: Path | None = None) -> dict[str, Any]:
    """Cross-validate ``gpu`` on ``data_dir/<gpu>.jsonl`` (writing ``<gpu>.cv.jsonl``), recompute the ``bands``
    object of its shipped profile (the other measured GPU's records give the ``transferred`` group) and write it
    into the profile file; the curves are left as they are (the ``transferred`` group carries the file's own
    curves, the full fit)."""
    from perfmodel.calibration import load_profile_file, shipped_profile_path
    from perfmodel.validation.records import read_records

    path = Path(profile_path or shipped_profile_path(gpu))
    full = ProfileFitter(gpu)
    full.profile_, full.extra_ = replace(load_profile_file(path, gpu), bands=MappingProxyType({})), {}
    rec_path = data_dir / f"{gpu}.jsonl"
    recs = read_records(rec_path, gpu)
    rows = cross_validate(recs, gpu)
    write_cv(rows, rec_path, gpu)
    others = [g for g in MEASURED_GPUS if g != gpu and (data_dir / f"{g}.jsonl").exists()]
    other = (others[0], read_records(data_dir / f"{others[0]}.jsonl", others[0])) if others else None
    bands = fit_bands(recs, gpu, full, other, rows)
    bands_from_dict(bands, "bands")  # refuse to write a table that would not load
    data = json.loads(path.read_text())
    data["bands"] = bands
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return bands


DOC_START, DOC_END = "<!-- bands-coverage:start -->", "<!-- bands-coverage:end -->"


def main(argv: Sequence[str] | None = None) -> int:
    """Cross-validate the committed records and rewrite the error bands of shipped profiles (curves unchanged);
    ``--report``: print the coverage tables from the committed cross-validation files (no fit)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m perfmodel.validation.bands", description=main.__doc__)
    ap.add_argument(
        "--gpu", action="append", default=None, help=f"GPU (repeatable; default: {', '.join(MEASURED_GPUS)})"
    )
    ap.add_argument("--data", type=Path, default=DATA_DIR, help="folder of <gpu>.jsonl")
    ap.add_argument("--report", action="store_true", help="print the coverage per GPU and class (no fit)")
    ap.add_argument(
        "--doc",
        type=Path,
        help=f"with --report: write the tables into this file between {DOC_START} and {DOC_END}",
    )
    a = ap.parse_args(argv)
    gpus = a.gpu or list(MEASURED_GPUS)
    try:
        if a.report:
            body = coverage_markdown(a.data, gpus)
            if a.doc is None:
                print(body)
                return 0
            text = a.doc.read_text()
            if DOC_START not in text or DOC_END not in text:
                print(f"error: {a.doc} has no {DOC_START} ... {DOC_END} section", file=sys.stderr)
                return 2
            a.doc.write_text(
                text[: text.index(DOC_START) + len(DOC_START)]
                + "\n"
                + body
                + "\n"
                + text[text.index(DOC_END) :]
            )
            print(f"coverage tables written to {a.doc}")
            return 0
        for gpu in gpus:
            b = refresh_profile_bands(gpu, a.data)
            print(
                f"{gpu}: bands rewritten ({len(b['measured'])} measured rows, {len(b.get('transferred', {}))} "
                f"transferred, {len(b['datasheet'])} datasheet)"
            )
    except (RecordError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
