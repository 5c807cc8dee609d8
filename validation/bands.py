"""Error bands of the calibrated model: quantiles of held-out log(predicted / measured) per band key.

A profile's ``bands`` object (:func:`perfmodel.calibration.bands_from_dict`; ``docs/calibration.md``,
"Error bands") has three groups, each mapping band keys to the 10% and 90% quantiles ``q10``, ``q90``
of r = log(predicted / measured) and their count ``n``:

- ``measured``: the profile fitted on the training families of :func:`perfmodel.validation.records.split_by_family`
  predicting the held-out families, pooled over the splits of :data:`BAND_OFFSETS` (0 and 1; split 2 is
  left for the coverage check, :func:`coverage`);
- ``transferred``: this GPU's full fit carried by the transfer rule to the other measured GPU,
  predicting all of that GPU's records (used when a profile is transferred *from* this GPU);
- ``datasheet``: the peak model (datasheet roofline) on all of this GPU's records (used for classes
  priced at the datasheet).

Band keys: the profile's curve names, ``gemm``, ``attention_prefill[sdpa]`` (attention always with the impl
whose curve priced it), ``elementwise:rmsnorm`` and the pooled ``elementwise``, ``memcpy_d2d``, ...; ``*``:
all the group's ops. The measured time then lies in ``[t exp(-q90), t exp(-q10)]`` for 80% of the ops.
Decoder layers are never keys (a layer's band is the sum of its parts'); nor is ``grouped_gemm[loop]``.

Regimes: each key (``*`` too) also has a row per regime of the op's predicted cost, ``gemm|compute``,
``attention_decode[sdpa]|memory``, ``elementwise|latency`` (:func:`perfmodel.costs.regime_of`), when at least
:data:`MIN_N_REGIME` records fall in it; an op takes its key's regime row first, then the key's row.

Quantiles are finite-sample (split-conformal) order statistics: of n sorted residuals the
``floor(0.1 (n + 1))``-th and ``ceil(0.9 (n + 1))``-th (clamped to 1..n), which widen the band of a small key
where plain percentiles would under-cover new records.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Sequence

import numpy as np

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import Profile, bands_from_dict, peak_profile
from perfmodel.costs import op_cost, regime_of
from perfmodel.ops import AttentionImpl, Phase
from perfmodel.validation.fit import ProfileFitter, _stack, ops_of, predict_ops
from perfmodel.validation.records import class_key, split_by_family

#: Fewest records for a key of its own (fewer: the pooled class or ``*`` prices it).
MIN_N = 8
#: Fewest records for a regime row ``<key>|<regime>`` (fewer: the key's row prices the regime).
MIN_N_REGIME = 30
LOW_Q, HIGH_Q = 10.0, 90.0
#: The held-out splits (``split_by_family(offset=...)``) whose residuals make the ``measured`` group.
BAND_OFFSETS: tuple[int, ...] = (0, 1)
#: The held-out split the coverage check scores (never in :data:`BAND_OFFSETS`).
COVERAGE_OFFSET = 2


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


def _q(r: np.ndarray) -> dict[str, Any]:
    """Finite-sample quantiles (module docstring) of the residuals ``r``."""
    x = np.sort(np.asarray(r, dtype=np.float64))
    n = len(x)
    k_lo = min(max(int(np.floor(LOW_Q / 100 * (n + 1))), 1), n)
    k_hi = min(max(int(np.ceil(HIGH_Q / 100 * (n + 1))), 1), n)
    return {"q10": round(float(x[k_lo - 1]), 4), "q90": round(float(x[k_hi - 1]), 4), "n": int(n)}


def band_table(records: Sequence[dict[str, Any]], predicted: np.ndarray,
               regimes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Quantiles of log(predicted / measured) per band key (keys of at least :data:`MIN_N` records), per base
    class of pooled keys (``elementwise``, ``attention_decode``), and ``*`` over all records with a key; with
    ``regimes`` (each record's :func:`perfmodel.costs.regime_of`), also ``<key>|<regime>`` rows of at least
    :data:`MIN_N_REGIME` records."""
    keys = [band_key(r) for r in records]
    meas = np.array([r["measured_s"] for r in records])
    r = np.log(np.asarray(predicted) / meas)
    out: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is None:
            continue
        base = k.split(":")[0].split("[")[0]
        for g in dict.fromkeys((k, base, "*")):
            groups.setdefault(g, []).append(i)
            if regimes is not None:
                groups.setdefault(f"{g}|{regimes[i]}", []).append(i)
    for k in sorted(groups, key=lambda g: (g.split("|")[0] == "*", g)):
        if len(groups[k]) >= (MIN_N_REGIME if "|" in k else MIN_N):
            out[k] = _q(r[groups[k]])
    return out


def regimes_of(ops: list, gpu: str, profile: Profile) -> np.ndarray:
    """:func:`perfmodel.costs.regime_of` of each op's cost under ``profile``."""
    g = load_gpu(gpu)
    out = np.empty(len(ops), dtype=object)
    for op, idx in _stack(ops):
        out[idx] = np.broadcast_to(np.asarray(regime_of(op_cost(op, g, profile)), dtype=object), idx.shape)
    return out


def measured_bands(records: list[dict[str, Any]], gpu: str, offsets: Sequence[int] = BAND_OFFSETS) -> dict:
    """The ``measured`` group: held-out residuals (and regimes) of each split of ``offsets``, pooled; one fit
    per split on its training families."""
    recs, pred, reg = [], [], []
    for off in offsets:
        train, test = split_by_family(records, offset=off)
        fitter = ProfileFitter(gpu).fit(train)
        test = [r for r in test if band_key(r) is not None]
        recs += test
        pred.append(fitter.predict_records(test))
        reg.append(regimes_of(ops_of(test), gpu, fitter.profile_))
    return band_table(recs, np.concatenate(pred), np.concatenate(reg))


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
    return band_table(priced, pred, regimes_of(ops_of(priced), dst_gpu, transferred_fitter(full, dst_gpu).profile_))


def fit_bands(records: list[dict[str, Any]], gpu: str, full: ProfileFitter,
              other: tuple[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The profile's ``bands`` object: ``measured`` (held-out split), ``datasheet`` and, with ``other`` =
    (GPU, its records), ``transferred`` (``full``, this GPU's fit on all records, carried there)."""
    out: dict[str, Any] = {"measured": measured_bands(records, gpu)}
    src = (f"perfmodel.validation.bands: measured: held-out families of validation.records.split_by_family, offsets "
           f"{', '.join(map(str, BAND_OFFSETS))} pooled; datasheet: peak model on all {len(records)} records")
    if other is not None:
        out["transferred"] = transferred_bands(full, other[1], other[0])
        src += f"; transferred: the full fit carried to {other[0]}, on its {len(other[1])} records"
    out["datasheet"] = datasheet_bands(records, gpu)
    out["source"] = src + (f"; q10/q90: finite-sample {LOW_Q:g}% and {HIGH_Q:g}% quantiles of log(predicted / "
                           f"measured), per key and per key and regime (compute / memory / latency bound)")
    return out


def with_bands(profile: Profile, bands: dict[str, Any]) -> Profile:
    return replace(profile, bands=MappingProxyType(bands_from_dict(bands, "bands")))


def predict_band(ops: list, gpu: str, profile: Profile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted, low, high) seconds of each op under ``profile`` (with its ``bands``)."""
    g = load_gpu(gpu)
    out = np.empty((3, len(ops)))
    for op, idx in _stack(ops):
        c = op_cost(op, g, profile)
        out[:, idx] = [np.broadcast_to(np.asarray(x, dtype=np.float64), idx.shape) for x in (c.total_s, c.low_s, c.high_s)]
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class Coverage:
    key: str
    n: int
    covered: float  # share of records with low <= measured <= high
    below: float  # share measured below the band (the model was too slow)
    above: float


def coverage(records: list[dict[str, Any]], gpu: str, bands: dict[str, Any],
             offset: int = COVERAGE_OFFSET) -> list[Coverage]:
    """Share of held-out records inside their band: the model fitted on another split's training families
    (:func:`perfmodel.validation.records.split_by_family` with ``offset``; the bands come from :data:`BAND_OFFSETS`), its
    ``measured`` bands ``bands``, pricing that split's held-out records; decoder layers by the sum of their parts'
    bands (the combination rule). Per report row, then per op class (``class: gemm``, attention over its
    implementations), per regime (``regime: memory``), all decoder layers, all ops, everything."""
    train, test = split_by_family(records, offset=offset)
    test = [r for r in test if not ("[" in class_key(r) and band_key(r) is None and not class_key(r).startswith("decoder"))]
    fitter = ProfileFitter(gpu).fit(train)
    prof = with_bands(fitter.profile_, {"measured": bands["measured"]})
    _, lo, hi = predict_band(ops_of(test), gpu, prof)
    meas = np.array([r["measured_s"] for r in test])
    keys = np.array([class_key(r) for r in test])

    def of(k: str, sel: np.ndarray) -> Coverage:
        n = int(sel.sum())
        if not n:
            return Coverage(k, 0, float("nan"), float("nan"), float("nan"))
        m, a, b = meas[sel], lo[sel], hi[sel]
        return Coverage(k, n, float(np.mean((m >= a) & (m <= b))), float(np.mean(m < a)), float(np.mean(m > b)))

    layers = np.char.startswith(keys.astype(str), "decoder_layer")
    out = [of(k, keys == k) for k in sorted(set(keys))]
    bases = np.array([k.split("[")[0].split(":")[0] for k in keys])
    out += [of(f"class: {b}", (bases == b) & ~layers) for b in sorted(set(bases[~layers]))
            if ((bases == b) & ~layers).sum() > (keys == b).sum()]  # classes of several rows
    regs = regimes_of(ops_of(test), gpu, prof)
    out += [of(f"regime: {r}", (regs == r) & ~layers) for r in ("compute", "memory", "latency")]
    out += [of("ALL decoder layers", layers), of("ALL ops (no layers)", ~layers), of("ALL held-out records",
                                                                                    np.ones(len(keys), bool))]
    return out


def refresh_profile_bands(gpu: str, data_dir: Path, profile_path: Path | None = None) -> dict[str, Any]:
    """Recompute the ``bands`` object of ``gpu``'s shipped profile from ``data_dir/<gpu>.jsonl`` (and the other
    measured GPU's records for the ``transferred`` group) and write it into the profile file; the curves are
    left as they are (the ``transferred`` group carries the file's own curves, the full fit)."""
    import json

    from perfmodel.calibration import load_profile_file, shipped_profile_path
    from perfmodel.validation.fit import _BAND_GPUS
    from perfmodel.validation.records import read_records

    path = Path(profile_path or shipped_profile_path(gpu))
    full = ProfileFitter(gpu)
    full.profile_, full.extra_ = replace(load_profile_file(path, gpu), bands=MappingProxyType({})), {}
    recs = read_records(data_dir / f"{gpu}.jsonl", gpu)
    others = [g for g in _BAND_GPUS if g != gpu and (data_dir / f"{g}.jsonl").exists()]
    other = (others[0], read_records(data_dir / f"{others[0]}.jsonl", others[0])) if others else None
    bands = fit_bands(recs, gpu, full, other)
    bands_from_dict(bands, "bands")  # refuse to write a table that would not load
    data = json.loads(path.read_text())
    data["bands"] = bands
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return bands


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the error bands of shipped profiles from the committed records (curves unchanged)."""
    import argparse

    from perfmodel.validation.fit import _BAND_GPUS

    ap = argparse.ArgumentParser(prog="python -m perfmodel.validation.bands", description=main.__doc__)
    ap.add_argument("--gpu", action="append", default=None, help=f"GPU (repeatable; default: {', '.join(_BAND_GPUS)})")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data", help="folder of <gpu>.jsonl")
    a = ap.parse_args(argv)
    for gpu in a.gpu or _BAND_GPUS:
        b = refresh_profile_bands(gpu, a.data)
        print(f"{gpu}: bands rewritten ({len(b['measured'])} measured keys, {len(b.get('transferred', {}))} "
              f"transferred, {len(b['datasheet'])} datasheet)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
