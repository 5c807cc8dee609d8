"""Error bands of the calibrated model: quantiles of held-out log(predicted / measured) per band key.

A profile's ``bands`` object (:func:`perfmodel.calibration.bands_from_dict`; ``docs/calibration.md``,
"Error bands") has three groups, each mapping band keys to the 10% and 90% quantiles ``q10``, ``q90``
of r = log(predicted / measured) and their count ``n``:

- ``measured``: the profile fitted on the training families of :func:`validation.records.split_by_family`
  predicting the held-out families (the report's held-out fit);
- ``transferred``: this GPU's full fit carried by the transfer rule to the other measured GPU,
  predicting all of that GPU's records (used when a profile is transferred *from* this GPU);
- ``datasheet``: the peak model (datasheet roofline) on all of this GPU's records (used for classes
  priced at the datasheet).

Band keys: the profile's curve names, ``gemm``, ``attention_prefill[sdpa]`` (attention always with the impl
whose curve priced it), ``elementwise:rmsnorm`` and the pooled ``elementwise``, ``memcpy_d2d``, ...; ``*``:
all the group's ops. The measured time then lies in ``[t exp(-q90), t exp(-q10)]`` for 80% of the ops.
Decoder layers are never keys (a layer's band is the sum of its parts'); nor is ``grouped_gemm[loop]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Sequence

import numpy as np

from hw.loader import load_gpu
from perfmodel.calibration import Profile, bands_from_dict, peak_profile
from perfmodel.costs import op_cost
from perfmodel.ops import AttentionImpl, Phase
from validation.fit import ProfileFitter, _stack, ops_of, predict_ops
from validation.records import class_key, split_by_family

#: Fewest records for a key of its own (fewer: the pooled class or ``*`` prices it).
MIN_N = 8
LOW_Q, HIGH_Q = 10.0, 90.0


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
    lo, hi = np.percentile(r, [LOW_Q, HIGH_Q])
    return {"q10": round(float(lo), 4), "q90": round(float(hi), 4), "n": int(len(r))}


def band_table(records: Sequence[dict[str, Any]], predicted: np.ndarray) -> dict[str, dict[str, Any]]:
    """Quantiles of log(predicted / measured) per band key (keys of at least :data:`MIN_N` records), per base
    class of pooled keys (``elementwise``, ``attention_decode``), and ``*`` over all records with a key."""
    keys = [band_key(r) for r in records]
    meas = np.array([r["measured_s"] for r in records])
    r = np.log(np.asarray(predicted) / meas)
    sel = np.array([k is not None for k in keys])
    out: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is None:
            continue
        groups.setdefault(k, []).append(i)
        base = k.split(":")[0].split("[")[0]
        if base != k:
            groups.setdefault(base, []).append(i)
    for k in sorted(groups):
        if len(groups[k]) >= MIN_N:
            out[k] = _q(r[groups[k]])
    if sel.any():
        out["*"] = _q(r[sel])
    return out


def measured_bands(records: list[dict[str, Any]], gpu: str) -> tuple[dict, ProfileFitter, list[dict], np.ndarray]:
    """The ``measured`` group from the held-out split; also the split's fitter, held-out records and predictions."""
    train, test = split_by_family(records)
    fitter = ProfileFitter(gpu).fit(train)
    pred = fitter.predict_records(test)
    return band_table(test, pred), fitter, test, pred


def datasheet_bands(records: Sequence[dict[str, Any]], gpu: str) -> dict:
    """The ``datasheet`` group: the peak model on all records."""
    recs = [r for r in records if band_key(r) is not None]
    return band_table(recs, predict_ops(ops_of(recs), load_gpu(gpu), peak_profile(gpu)))


def transferred_bands(full: ProfileFitter, dst_records: list[dict[str, Any]], dst_gpu: str) -> dict:
    """The ``transferred`` group: ``full`` (fitted on all of its GPU's records) carried to ``dst_gpu``,
    predicting ``dst_records`` (rows it cannot price are left out)."""
    from validation.report import transfer

    recs = [r for r in dst_records if band_key(r) is not None]
    idx, pred, _ = transfer([], full.gpu, recs, dst_gpu, full)
    return band_table([recs[i] for i in idx], pred)


def fit_bands(records: list[dict[str, Any]], gpu: str, full: ProfileFitter,
              other: tuple[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The profile's ``bands`` object: ``measured`` (held-out split), ``datasheet`` and, with ``other`` =
    (GPU, its records), ``transferred`` (``full``, this GPU's fit on all records, carried there)."""
    meas, *_ = measured_bands(records, gpu)
    out: dict[str, Any] = {"measured": meas}
    src = f"validation.bands: measured: held-out families of validation.records.split_by_family; datasheet: peak model on all {len(records)} records"
    if other is not None:
        out["transferred"] = transferred_bands(full, other[1], other[0])
        src += f"; transferred: the full fit carried to {other[0]}, on its {len(other[1])} records"
    out["datasheet"] = datasheet_bands(records, gpu)
    out["source"] = src + f"; q10/q90: {LOW_Q:g}% and {HIGH_Q:g}% quantiles of log(predicted / measured)"
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


def coverage(records: list[dict[str, Any]], gpu: str, bands: dict[str, Any], offset: int = 2) -> list[Coverage]:
    """Share of held-out records inside their band: the model fitted on another split's training families
    (:func:`validation.records.split_by_family` with ``offset``; the bands come from ``offset`` 1), its
    ``measured`` bands ``bands``, pricing that split's held-out records; decoder layers by the sum of their parts'
    bands (the combination rule). Per report row, then all decoder layers, all ops, everything."""
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
    out += [of("ALL decoder layers", layers), of("ALL ops (no layers)", ~layers), of("ALL held-out records",
                                                                                    np.ones(len(keys), bool))]
    return out
