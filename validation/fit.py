"""Fit a calibration profile from measurement records.

Each op class gets the physical curve of its parameter type (:data:`perfmodel.costs.PARAMS_TYPES`: achieved
fractions of peak FLOP/s and bandwidth, a per-kernel latency, ramps for small sizes, tile and
wave quantization over the SM count).  The continuous parameters are fitted by robust least
squares on log(predicted / measured), i.e. on relative error; the tile sizes by a small grid
search.  Predictions go through :func:`perfmodel.costs.op_cost` itself, so the fitted numbers
mean exactly what the core computes with them.  Decoder layers are never fitted: they are
predicted as the sum of their parts.

Use :class:`ProfileFitter` (``fit(records)`` then ``predict(ops)``) or :func:`fit_profile`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from perfmodel.hw.loader import load_gpu
from perfmodel.hw.spec import GPU, Dtype
from perfmodel.calibration import (
    parse_curve_key,
    Mode,
    OpClass,
    Profile,
    profile_from_dict,
)
from perfmodel.costs import PARAMS_TYPES, op_cost
from perfmodel.costs.attention import SplitRule
from perfmodel.costs.base import CurveParams
from perfmodel.costs.collectives import COLLECTIVE_CLASSES
from perfmodel.errors import ProfileError
from perfmodel.ops import (
    DEFAULT_ATTENTION_IMPL,
    Attention,
    Elementwise,
    Gemm,
    GroupedGemm,
    Memcpy,
    Op,
    Phase,
    op_from_dict,
)
from perfmodel.decode_schedule import runs_general
from perfmodel.validation.records import (
    MEASURED_GPUS,
    NON_DEFAULT_IMPLS,
    RecordError,
    class_key,
    refuse_other_gpu,
)


@dataclass(frozen=True)
class Param:
    """A fitted field: ``scale`` maps the optimizer's variable to the field (``log10`` or a factor)."""

    name: str
    lo: float
    hi: float
    init: float
    log10: bool = False
    factor: float = 1.0

    def value(self, x: float) -> float:
        return 10.0**x if self.log10 else x * self.factor


_EFF = lambda name, init: Param(name, 0.05, 1.0, init)
_LAT = Param("latency_s", 0.0, 200.0, 3.0, factor=1e-6)
_RAMP_B = Param("ramp_bytes", 0.0, 10.0, 5.0, log10=True)
_RAMP_F = Param("ramp_flops", 0.0, 13.0, 8.0, log10=True)
_TILE_OH = Param("tile_overhead_s", 0.0, 50.0, 1.0, factor=1e-6)
_WAVE = Param("wave_quant", 0.0, 1.0, 0.5)
_OVERLAP = Param("overlap", 0.0, 1.0, 0.8)

# x / (x + half) ramps make time = (x + half) / rate: a fixed fill time in work units.  The memory
# ramp is kept for compute-capable classes (it overlaps with compute, the latency does not);
# for memory-only classes it would duplicate latency_s and is left out.
_COMPUTE_SPEC = (_EFF("compute_eff", 0.75), _EFF("memory_eff", 0.8), _LAT, _TILE_OH, _WAVE, _OVERLAP, _RAMP_B)
_MEMORY_SPEC = (_EFF("memory_eff", 0.8), _LAT)

# occupancy (work units in flight), split-KV and host-cache terms (``docs/calibration.md``)
_UNIT_OH = Param("unit_overhead_s", 0.0, 50.0, 2.0, factor=1e-6)
_UNIT_BW = Param("unit_memory_eff", -2.0, 2.0, 0.0, log10=True)
_SPLIT_LAT = Param("split_latency_s", 0.0, 50.0, 2.0, factor=1e-6)
_SPLIT_EFF = _EFF("split_memory_eff", 0.9)
_SPLIT_PIECE = Param("split_piece_s", 0.0, 2.0, 0.1, factor=1e-6)
_UNIT_STEP = Param("unit_step_s", 0.0, 5.0, 0.1, factor=1e-6)
_KNEE = Param("knee_bytes", 4.0, 9.5, 7.0, log10=True)
_TAIL_EFF = Param("tail_memory_eff", 0.02, 1.5, 0.2)
_PAGEABLE_SPEC = (_EFF("memory_eff", 0.3), _LAT, _KNEE, _TAIL_EFF)
# device copies, pinned copies and elementwise kernels: the first ``knee_bytes`` stream at ``memory_eff`` (above 1
# where the write-back L2 absorbs the output; below the tail where too few blocks fill the GPU), the rest at
# ``tail_memory_eff`` (HBM, or the steady PCIe rate)
_SIZE_KNEE_SPEC = (
    Param("memory_eff", 0.05, 1.5, 1.0),
    _LAT,
    Param("knee_bytes", 5.0, 8.5, 6.5, log10=True),
    _TAIL_EFF,
)
# the MoE routing index kernels (top-k + softmax; align: atomic counting and placement): their time is launches,
# selection passes and atomic round trips, and their bytes (logits, ids, slots) understate that work by one to
# three orders of magnitude, so their efficiencies reach down to 0.0005 and their knee to 1 KB
_ATOMIC_SPEC = (
    Param("memory_eff", 0.0005, 1.5, 0.01),
    _LAT,
    Param("knee_bytes", 3.0, 8.5, 4.5, log10=True),
    Param("tail_memory_eff", 0.0005, 1.5, 0.05),
)
# seconds of each serial step of a thread (``Elementwise.serial_steps``: a small index_select's rows, a combine's k)
_STEP = Param("step_s", 0.0, 2.0, 0.2, factor=1e-6)
_ROW_SPEC = (
    _EFF("memory_eff", 0.8),
    Param("latency_s", 0.0, 200.0, 1.0, factor=1e-6),
    _UNIT_OH,
    _UNIT_BW,
    _WAVE,
)

# discrete choices per class: dicts of fixed fields
_GEMM_TILES = tuple(
    {"tile_m": tm, "tile_n": tn, "tile_m_min": mn}
    for tm, tn, mn in itertools.product((64, 128, 256), (64, 128, 256), (16, 64))
    if tm * tn <= 32768
)
# or the fastest of the candidate tiles (``costs.GEMM_CANDIDATE_TILES``), as a heuristic library picks
_GEMM_TILES += tuple({"tile_m": 128, "tile_n": 256, "tile_m_min": mn, "tile_choice": 1} for mn in (16, 64))
# up to how many rows cuBLAS splits K of a square-ish weight at a cost (``costs.gemm.gemm_split_k``; 0: never)
_SPLIT_K_ROWS = (0, 8, 16, 32, 64)
_SPLIT_K = Param("split_k_s", 0.0, 10.0, 2.0, factor=1e-6)
_SMALL_TILE = Param("small_tile_eff", 0.5, 1.0, 0.95)
# cuBLAS fills the SMs with smaller tiles when the fitted tile leaves them idle (its kernel names show tiles
# such as 96x128 or 128x80 there): a grid of fewer tiles than SMs runs as one wave at a fitted rate per
# halving of the tile area; rows off the 128-byte lines compute at a fitted rate (1: no loss)
_FILL_TILE = Param("fill_tile_eff", 0.5, 1.0, 0.9)
_MISALIGNED = Param("misaligned_eff", 0.3, 1.0, 0.9)
# ... and their bytes stream at a fitted fraction of ``memory_eff`` (whole 128-byte lines cannot be loaded)
_MISALIGNED_MEM = Param("misaligned_memory_eff", 0.3, 1.0, 0.9)
# norms: rows longer than a knee (activation bytes per row; grid) stream at their own efficiency
_ROW_KNEES = (0.0, 4096.0, 6144.0, 8192.0, 12288.0, 16384.0)
_ROW_TAIL = _EFF("row_tail_memory_eff", 0.6)
# the knee as a ramp over a fitted width of row bytes (0: a step)
_ROW_WIDTH = Param("row_knee_width_bytes", 0.0, 32.0, 4.0, factor=1024.0)
# elementwise ops whose whole working set stays in L2 between runs (0: none); their rate
_CACHE_BYTES = (0.0, 1.0e6, 2.0e6, 4.0e6, 8.0e6)
_CACHE_EFF = Param("cache_memory_eff", 0.05, 4.0, 1.5)
_ATTN_TILES = tuple({"tile_m": tm} for tm in (0, 64, 128))
_DECODE_TILES = ({}, {"tile_m": 16}, {"tile_m": 64}, {"tile_m": 128})
# how each attention implementation splits the KV axis (``AttentionParams.split_rule``), the candidates the fit
# tries: SDPA restricted to flash runs flash-attention (its heuristic); SDPA's own choice (``sdpa``: cuDNN on
# Hopper for prefill) may or may not split, so both are tried; our Triton decode kernels fill 2 x SMs
# programs or run stream-K; our Triton prefill kernel does not split.
_SPLIT_OF_IMPL = {
    "": (SplitRule.FLASH, SplitRule.NONE),
    "[flash2]": (SplitRule.FLASH,),
    "[split_kv]": (SplitRule.FILL,),
    "[stream_k]": (SplitRule.STREAM_K,),
    "[triton]": (SplitRule.NONE,),
}
# prefill attention as scheduled (sequence, head, query tile) programs (``costs.attention.prefill_schedule_s``)
_PREFILL_SPEC = (
    _EFF("memory_eff", 0.8),
    _LAT,
    _OVERLAP,
    _UNIT_OH,
    Param("unit_compute_eff", 0.05, 1.5, 0.4),
    _WAVE,
    Param("score_flops", 0.0, 1000.0, 50.0),
    Param("unit_share", 0.0, 1.0, 0.5),
)
_PREFILL_TILES = tuple({"tile_m": tm} for tm in (64, 128))
# the combine kernel of our Triton decode kernels: fp32 partials streamed at a fraction of HBM
_REDUCE_EFF = Param("reduce_bytes_eff", 0.02, 1.5, 0.3)
# ... and its time per output row (one program each) and SM
_REDUCE_ROW = Param("reduce_row_s", 0.0, 2.0, 0.05, factor=1e-6)
# stream-K at one wave merges in its own kernel: the last program of a split pair, a latency and a time per load
# of the pair's partials (blocks of pieces)
_MERGE_LAT = Param("merge_latency_s", 0.0, 10.0, 1.0, factor=1e-6)
_MERGE_STEP = Param("merge_step_s", 0.0, 10.0, 0.5, factor=1e-6)
_UNITS_PER_SM = (1.0, 2.0, 4.0)
# grouped GEMM (MoE experts in one kernel): one launch, the touched weights at memory_eff, the math over each
# group's rows padded to the kernel's M tile (a grid choice; 0: no padding)
# (and a tile's fixed prologue and epilogue as extra reduction steps per output element), compute and memory overlapped
# by a fitted share
# and the output tiles in waves over the SMs (a grid choice of the column tile; 0: no wave term)
_GROUPED_SPEC = (
    _EFF("compute_eff", 0.75),
    _EFF("memory_eff", 0.8),
    _LAT,
    _OVERLAP,
    Param("k_overhead", 0.0, 4096.0, 256.0),
    _WAVE,
)
_GROUPED_TILES = tuple({"tile_m": tm, "tile_n": tn} for tm in (0, 16, 32, 64, 128) for tn in (0, 128, 256))


def _choices(tiles, rules: tuple[int, ...]):
    return tuple(
        {**t, "split_rule": r, "units_per_sm": u} for r in rules for t in tiles for u in _UNITS_PER_SM
    )


def _spec(key: str):
    """(continuous params, discrete choices) of a report row."""
    base = key.split("[")[0]
    impl = key[len(base) :]
    rules = _SPLIT_OF_IMPL.get(impl, (SplitRule.NONE,))
    splits = any(r != SplitRule.NONE for r in rules)
    occupancy = (_UNIT_OH, _UNIT_BW) + ((_SPLIT_LAT, _SPLIT_EFF, _SPLIT_PIECE) if splits else ())
    if base == "gemm":
        return _COMPUTE_SPEC + (_SMALL_TILE, _FILL_TILE, _MISALIGNED, _MISALIGNED_MEM, _SPLIT_K), tuple(
            {**t, "split_k_rows": r} for t in _GEMM_TILES for r in _SPLIT_K_ROWS
        )
    if base == "grouped_gemm":
        return _GROUPED_SPEC, _GROUPED_TILES
    if base == "attention_prefill":
        return _PREFILL_SPEC + ((_SPLIT_LAT,) if splits else ()), _choices(_PREFILL_TILES, rules)
    if base == "attention_decode":  # rows of a KV head's query group, padded to the kernel's tile
        extra = (
            (_REDUCE_EFF, _REDUCE_ROW)
            if any(r in (SplitRule.FILL, SplitRule.STREAM_K) for r in rules)
            else ()
        )
        extra += (_MERGE_LAT, _MERGE_STEP) if SplitRule.STREAM_K in rules else ()
        return _COMPUTE_SPEC + occupancy + (_UNIT_STEP,) + extra, _choices(_DECODE_TILES, rules)
    if base == "elementwise:rmsnorm":  # one block per row: the row count sets the occupancy
        return _ROW_SPEC + (_ROW_TAIL, _ROW_WIDTH), tuple(
            {"units_per_sm": u, "row_knee_bytes": kb} for u in (1.0, 2.0, 4.0, 8.0, 16.0) for kb in _ROW_KNEES
        )
    if base in ("elementwise:moe_permute", "elementwise:moe_combine"):  # plus a chain of serial steps
        return _SIZE_KNEE_SPEC + (_STEP,), ({},)
    if base in ("elementwise:moe_align", "elementwise:moe_route"):
        return _ATOMIC_SPEC, ({},)
    if base in ("memcpy_h2d_pageable", "memcpy_d2h_pageable"):  # staged through host caches
        return _PAGEABLE_SPEC, ({},)
    if base == "elementwise:residual_add":  # plus a whole working set held in L2 (grid of cache sizes)
        return _SIZE_KNEE_SPEC + (_CACHE_EFF,), tuple({"cache_bytes": c} for c in _CACHE_BYTES)
    if base.startswith("memcpy") or base.startswith("elementwise"):  # two size regimes (L2 / grid fill)
        return _SIZE_KNEE_SPEC, ({},)
    return _MEMORY_SPEC, ({},)


def ops_of(records: Sequence[dict[str, Any]]) -> list[Op]:
    return [op_from_dict(r) for r in records]


def _stack(ops: list[Op]) -> list[tuple[Op, np.ndarray]]:
    """Group ops of one type into array-valued ops (one op_cost call per group)."""
    groups: dict[tuple, list[int]] = {}
    for i, op in enumerate(ops):
        if isinstance(op, Gemm):
            key = ("gemm", op.dtype, op.b_dtype)
        elif isinstance(op, GroupedGemm):
            key = ("grouped_gemm", op.dtype, op.b_dtype)
        elif isinstance(op, Attention):
            # decodes that run the general Triton kernel price by their own head size's tile: never stacked
            # with the split-KV / stream-K ones
            general = op.phase is Phase.DECODE and runs_general(
                op.head_dim, op.v_head_dim or op.head_dim, op.kv_dtype is Dtype.FP8, op.kv_shared
            )
            key = (
                "attn",
                op.phase,
                op.causal,
                op.dtype,
                op.window,
                op.v_head_dim,
                op.kv_shared,
                op.kv_dtype,
                op.impl,
                op.head_dim if general else None,
            )
        elif isinstance(op, Memcpy):
            key = ("memcpy", op.src, op.dst)
        elif isinstance(op, Elementwise):
            key = ("ew", op.name)
        else:
            key = ("one", i)
        groups.setdefault(key, []).append(i)
    out = []
    for key, idx in groups.items():
        first = ops[idx[0]]
        if key[0] == "one" or len(idx) == 1:
            out += [(ops[i], np.array([i])) for i in idx]
            continue
        arrays = {}
        for f in dataclasses.fields(first):
            vals = [getattr(ops[i], f.name) for i in idx]
            if (
                isinstance(vals[0], (int, float))
                and not isinstance(vals[0], bool)
                and f.name not in ("window", "v_head_dim")
            ):
                arrays[f.name] = np.asarray(vals, dtype=np.float64)
        out.append((dataclasses.replace(first, **arrays), np.asarray(idx)))
    return out


def predict_ops(ops: list[Op], gpu: GPU, profile: Profile) -> np.ndarray:
    """Predicted seconds of each op (vectorised per op type)."""
    out = np.empty(len(ops))
    for op, idx in _stack(ops):
        out[idx] = op_cost(op, gpu, profile).total_s
    return out


def params_type_of(key: str) -> type[CurveParams]:
    """The curve parameter type of a report row (``gemm``, ``attention_decode[stream_k]``, ``elementwise:rmsnorm``)."""
    return PARAMS_TYPES[OpClass(key.split("[")[0].split(":")[0])]


def _profile_with(gpu: GPU, key: str, p: CurveParams) -> Profile:
    base = key.split("[")[0]
    if base.startswith("elementwise:"):
        return Profile(gpu.name, Mode.CALIBRATED, elementwise=MappingProxyType({base.split(":", 1)[1]: p}))
    if "[" in key and base.startswith("attention"):  # an attention implementation's own curve
        return Profile(
            gpu.name, Mode.CALIBRATED, implementations=MappingProxyType({parse_curve_key(key, "fit"): p})
        )
    return Profile(gpu.name, Mode.CALIBRATED, classes=MappingProxyType({OpClass(base): p}))


def attention_kernels(records: Sequence[dict[str, Any]], limit: int = 8) -> dict[str, tuple[str, ...]]:
    """Per attention curve key, the distinct CUDA kernels its records ran (most frequent first, at
    most ``limit``), from the records' ``kernels`` lists."""
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        if r.get("op") != "attention" or not r.get("kernels"):
            continue
        k = class_key(r)
        key = k if "[" in k else f"{k}[{DEFAULT_ATTENTION_IMPL.value}]"
        for name in dict.fromkeys(r["kernels"]):
            counts.setdefault(key, {})[name] = counts.setdefault(key, {}).get(name, 0) + 1
    return {k: tuple(sorted(c, key=lambda n: (-c[n], n))[:limit]) for k, c in sorted(counts.items())}


def fit_class(key: str, ops: list[Op], measured: np.ndarray, gpu: GPU) -> tuple[CurveParams, float]:
    """Fit one row's curve; returns the parameters and the median APE on its own records."""
    spec, choices = _spec(key)
    groups = _stack(ops)
    logm = np.log(measured)

    def predict(p: CurveParams) -> np.ndarray:
        prof = _profile_with(gpu, key, p)
        out = np.empty(len(ops))
        for op, idx in groups:
            out[idx] = op_cost(op, gpu, prof).total_s
        return out

    kind = params_type_of(key)

    def make(x, fixed) -> CurveParams:
        return kind(**fixed, **{s.name: s.value(v) for s, v in zip(spec, x)})

    best = None
    lo = np.array([s.lo for s in spec])
    hi = np.array([s.hi for s in spec])
    starts = [np.array([s.init for s in spec])]
    if spec[: len(_COMPUTE_SPEC)] == _COMPUTE_SPEC:  # a second start for the plain compute curves
        alt = np.array([s.init for s in spec])
        alt[: len(_COMPUTE_SPEC)] = [0.5, 0.6, 5.0, 0.5, 0.8, 1.0, 6.0]
        starts.append(np.clip(alt, lo, hi))
    for fixed in choices:
        for x0 in starts:

            def resid(x, fixed=fixed):
                pred = predict(make(x, fixed))
                return np.log(np.maximum(pred, 1e-12)) - logm

            try:
                sol = least_squares(
                    resid, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.05, max_nfev=300, x_scale="jac"
                )
            except ValueError:
                continue
            cost = float(np.sum(np.log1p((sol.fun / 0.05) ** 2)))
            if best is None or cost < best[0]:
                best = (cost, make(sol.x, fixed))
    p = best[1]
    if getattr(p, "split_k_rows", None) == 0:  # no split taken: its seconds were never fitted
        p = dataclasses.replace(p, split_k_s=0.0)
    ape = np.abs(predict(p) / measured - 1.0)
    return p, float(np.median(ape))


#: fits kept in one process, keyed by (GPU, digest of the records): the report, the bands and the dashboard
#: fit the same record sets
FIT_MEMO_SIZE = 16
_FIT_MEMO: dict[tuple[str, str], tuple] = {}


@dataclass
class ProfileFitter:
    """sklearn-style: ``fit(records)`` sets ``profile_`` (and ``extra_`` rows), ``predict(ops)`` gives seconds.

    Parameters
    ----------
    gpu : str
        Canonical hw name; records of another GPU are refused.
    """

    gpu: str
    profile_: Profile | None = None
    extra_: dict[str, CurveParams] | None = None
    train_ape_: dict[str, float] | None = None

    def fit(self, records: Sequence[dict[str, Any]]) -> ProfileFitter:
        """Fit every class on ``records``.  The fit is a pure function of the GPU and the records, so a
        repeated fit of the same records in one process reuses the first one's result."""
        if not records:
            raise RecordError("no records to fit")
        refuse_other_gpu(records, self.gpu)
        if any(r.get("dry_run") for r in records):
            raise RecordError("records from a --dry-run (CPU) cannot calibrate a GPU profile")
        key = (
            self.gpu,
            hashlib.sha256(json.dumps(list(records), sort_keys=True, default=str).encode()).hexdigest(),
        )
        if key in _FIT_MEMO:
            profile, extra, apes = _FIT_MEMO[key]
            self.profile_, self.extra_, self.train_ape_ = profile, dict(extra), dict(apes)
            return self
        self._fit(records)
        if len(_FIT_MEMO) >= FIT_MEMO_SIZE:
            _FIT_MEMO.pop(next(iter(_FIT_MEMO)))
        _FIT_MEMO[key] = (self.profile_, dict(self.extra_), dict(self.train_ape_))
        return self

    def _fit(self, records: Sequence[dict[str, Any]]) -> None:
        g = load_gpu(self.gpu)
        rows: dict[str, list[dict]] = {}
        for r in records:
            k = class_key(r)
            if not k.startswith("decoder_layer"):
                rows.setdefault(k, []).append(r)
        # the generic elementwise curve: the elementwise records pooled, but for the MoE routing steps
        # (sorts, top-k, gathers: their own curves, not a generic kernel's)
        ew_all = [
            r
            for k, rs in rows.items()
            if k.startswith("elementwise:") and not k.startswith("elementwise:moe_")
            for r in rs
        ]
        classes, named, extra, apes, impls = {}, {}, {}, {}, {}
        for k in sorted(rows):
            p, ape = fit_class(k, ops_of(rows[k]), np.array([r["measured_s"] for r in rows[k]]), g)
            apes[k] = ape
            if "[" in k:
                extra[k] = p
                if k.startswith("attention"):
                    impls[parse_curve_key(k, "fit")] = p
            elif k.startswith("elementwise:"):
                named[k.split(":", 1)[1]] = p
            else:
                classes[OpClass(k)] = p
        if ew_all:
            p, _ = fit_class("elementwise", ops_of(ew_all), np.array([r["measured_s"] for r in ew_all]), g)
            classes[OpClass.ELEMENTWISE] = p
        meta = records[0]
        measured_on = {k: meta.get(k) for k in ("gpu", "driver", "torch", "triton", "cuda")}
        measured_on["dates"] = sorted({r["date"] for r in records})
        measured_on["records"] = len(records)
        self.profile_ = Profile(
            self.gpu,
            Mode.CALIBRATED,
            MappingProxyType(classes),
            MappingProxyType(measured_on),
            elementwise=MappingProxyType(named),
            implementations=MappingProxyType(impls),
            attention_kernels=MappingProxyType(attention_kernels(records)),
        )
        self.extra_, self.train_ape_ = extra, apes

    def predict(self, ops: Sequence[Op | dict], gpu: str | GPU | None = None) -> np.ndarray:
        """Seconds per op under the fitted profile (on ``gpu``'s datasheet figures if given)."""
        if self.profile_ is None:
            raise ProfileError("ProfileFitter.predict called before fit")
        g = load_gpu(gpu or self.gpu)
        parsed = [op_from_dict(o) if isinstance(o, dict) else o for o in ops]
        return predict_ops(parsed, g, self.profile_)

    def predict_records(self, records: Sequence[dict[str, Any]], gpu: str | None = None) -> np.ndarray:
        """Like :meth:`predict`; an attention record (or a layer's attention) is priced with the curve of
        the implementation it ran (its ``impl``), which the fitted profile must have; other rows of a
        non-default implementation (``grouped_gemm[loop]``) with their own fitted curve."""
        g = load_gpu(gpu or self.gpu)
        ops = ops_of(records)
        out = np.empty(len(records))
        by: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            k = class_key(r)
            own = "[" in k and not k.startswith("attention") and k in (self.extra_ or {})
            by.setdefault(k if own else "", []).append(i)
        for k, idx in by.items():
            prof = self.profile_ if not k else _profile_with(g, k, self.extra_[k])
            out[idx] = predict_ops([ops[i] for i in idx], g, prof)
        return out


#: the compute-bound ops of ``benchmarks/sustained.py``, as op descriptors (to price them with the profile)
SUSTAINED_OPS = {
    "gemm_bf16_8192": {"op": "gemm", "m": 8192, "n": 8192, "k": 8192, "dtype": "bf16"},
    "attention_prefill_sdpa_16k": {
        "op": "attention",
        "phase": "prefill",
        "batch": 1,
        "q_len": 16384,
        "kv_len": 16384,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "impl": "sdpa",
    },
}


def settle_time_s(op_result: dict[str, Any], share: float = 0.97) -> float | None:
    """When a sustained series settled: the first sample whose power draw reaches ``share`` of the
    settled power (the median of the series' second half), or, without power readings, whose rate
    comes within ``1 - share`` of the settled rate; ``None`` without a series."""
    rows = op_result.get("series") or []
    if not rows:
        return op_result.get("settled_after_s")
    half = rows[len(rows) // 2 :]
    powers = [x["power_w"] for x in half if x.get("power_w") is not None]
    if powers:
        target = share * float(np.median(powers))
        hit = [x["t_s"] for x in rows if x.get("power_w") is not None and x["power_w"] >= target]
    else:
        settled = float(np.median([x["rate"] for x in half]))
        hit = [x["t_s"] for x in rows if abs(x["rate"] / settled - 1.0) <= 1.0 - share]
    return float(hit[0]) if hit else None


def sustained_terms(result: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """The profile's ``sustained`` object from a ``benchmarks/sustained.py`` result.

    ``compute_ratio``: the median over the compute-bound ops of their settled rate over the rate
    ``profile`` predicts for the op (at most 1); ``settle_s``: the median over those ops of
    :func:`settle_time_s` (when the board reached its power limit).  Raises :class:`RecordError` for a dry run or a result without those ops.
    """
    if result.get("dry_run"):
        raise RecordError("a --dry-run sustained result cannot calibrate a GPU profile")
    g = load_gpu(profile.gpu)
    ratios, settle, used = [], [], {}
    for name, desc in SUSTAINED_OPS.items():
        r = result.get("ops", {}).get(name)
        if not r:
            continue
        op = op_from_dict(desc)
        predicted_rate = float(r["work"]) / float(op_cost(op, g, profile).total_s)
        ratio = min(1.0, float(r["sustained_rate"]) / predicted_rate)
        ratios.append(ratio)
        t_settle = settle_time_s(r)
        if t_settle is not None:
            settle.append(t_settle)
        used[name] = {
            "ratio_to_profile": round(ratio, 4),
            "ratio_to_burst": round(float(r["ratio"]), 4),
            "sm_clock_mhz_settled": r.get("sm_clock_mhz_settled"),
            "power_w_settled": r.get("power_w_settled"),
        }
    if not ratios:
        raise RecordError(f"sustained result has none of the ops {', '.join(SUSTAINED_OPS)}")
    out = {
        "compute_ratio": round(float(np.median(ratios)), 4),
        "settle_s": round(float(np.median(settle)) if settle else 0.0, 3),
    }
    ramp = ramp_table(result, profile)
    if ramp:
        out["ramp"] = ramp
    out |= {
        "measured": {
            "gpu": result.get("gpu"),
            "driver": result.get("driver"),
            "torch": result.get("torch"),
            "date": result.get("date"),
            "ops": used,
        }
    }
    return out


#: seconds after an idle start at which the ramp of the ``sustained`` object is tabulated
RAMP_GRID_S = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


def ramp_table(result: dict[str, Any], profile: Profile) -> list[list[float]]:
    """The ``ramp`` of the ``sustained`` object: each compute-bound op's series of rates (back-to-back
    work from an idle GPU, ``benchmarks/sustained.py``) as a fraction of the rate ``profile`` predicts
    for the op; at each time ``g`` of :data:`RAMP_GRID_S` (up to the series' end) the median of the
    samples within ``max(0.05 s, g / 4)`` of it, then the median over the ops, at most 1; ``[]``
    without series."""
    g = load_gpu(profile.gpu)
    curves = []
    for name, desc in SUSTAINED_OPS.items():
        r = result.get("ops", {}).get(name)
        rows = (r or {}).get("series") or []
        if len(rows) < 5:
            continue
        predicted_rate = float(r["work"]) / float(op_cost(op_from_dict(desc), g, profile).total_s)
        t = np.array([x["t_s"] for x in rows], dtype=np.float64)
        ratio = np.array([x["rate"] for x in rows], dtype=np.float64) / predicted_rate
        curves.append(
            [
                float(np.median(ratio[np.abs(t - x) <= max(0.05, x / 4.0)]))
                for x in RAMP_GRID_S
                if x <= t[-1] and np.any(np.abs(t - x) <= max(0.05, x / 4.0))
            ]
        )
    if not curves:
        return []
    n = min(len(c) for c in curves)
    med = np.minimum(np.median(np.stack([c[:n] for c in curves]), axis=0), 1.0)
    return [[float(RAMP_GRID_S[i]), round(float(med[i]), 4)] for i in range(n)]


def launch_terms(records: Sequence[dict[str, Any]], profile: Profile) -> dict[str, Any]:
    """The profile's eager-launch terms from records timed as back-to-back eager calls (``launch``
    ``eager``): ``gap_s`` and ``issue_s`` minimising the log error of ``max(graph_s + gap_s, issue_s)``,
    where ``graph_s`` is what ``profile`` predicts (a grid: 0.05 µs steps of gap, 0.1 µs of issue)."""
    eager = [r for r in records if r.get("launch") == "eager"]
    if not eager:
        raise RecordError("no records timed with --launch eager")
    refuse_other_gpu(eager, profile.gpu)
    graph = ProfileFitter(profile.gpu, profile_=profile).predict(ops_of(eager))
    meas = np.array([r["measured_s"] for r in eager])
    gaps = np.arange(0.0, 5e-6 + 1e-12, 0.05e-6)
    issues = np.arange(0.0, 30e-6 + 1e-12, 0.1e-6)
    pred = np.maximum(graph[None, None, :] + gaps[:, None, None], issues[None, :, None])
    err = np.mean(np.abs(np.log(pred / meas[None, None, :])), axis=2)
    i, j = np.unravel_index(np.argmin(err), err.shape)
    return {
        "issue_s": float(f"{issues[j]:.4g}"),
        "gap_s": float(f"{gaps[i]:.4g}"),
        "source": f"perfmodel.validation.fit on {len(eager)} eager records (mean |log error| {err[i, j]:.3f})",
    }


def fit_profile(records: Sequence[dict[str, Any]], gpu: str) -> Profile:
    """The calibrated profile of ``gpu`` fitted on ``records``."""
    return ProfileFitter(gpu).fit(records).profile_


def write_profile(profile: Profile, path: str | Path, source: str) -> dict:
    """Write ``profile`` as JSON, keeping any collective classes (and unknown top-level keys) of an existing file."""
    path = Path(path)
    data = profile.to_dict()
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ProfileError(f"existing profile is corrupt (not JSON), not overwriting: {path}") from None
        if old.get("gpu") not in (None, profile.gpu):
            raise ProfileError(f"existing profile {path} is for {old.get('gpu')!r}, not {profile.gpu!r}")
        profile_from_dict(old, str(path))  # refuse to merge into a file that does not load
        for name, cls in old.get("classes", {}).items():
            if OpClass(name) in COLLECTIVE_CLASSES:
                data["classes"][name] = cls
        if "collectives" in old.get("measured_on", {}):  # the communication suite's provenance
            data["measured_on"]["collectives"] = old["measured_on"]["collectives"]
        for k, v in old.items():
            if k not in data and k not in ("source", "implementations", "attention_kernels"):
                data[k] = v
    data["source"] = source
    for cls in (*data["classes"].values(), *data.get("elementwise_kernels", {}).values()):
        for k, v in cls.items():
            if isinstance(v, float):
                cls[k] = float(f"{v:.5g}")
    for cls in data.get("implementations", {}).values():
        for k, v in cls.items():
            if isinstance(v, float):
                cls[k] = float(f"{v:.5g}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m perfmodel.validation.fit --gpu NAME [--records FILE] [--out FILE]``: fit on all records, write the profile."""
    import argparse

    from perfmodel.calibration import PROFILE_DIR
    from perfmodel.validation.records import read_records

    ap = argparse.ArgumentParser(prog="python -m perfmodel.validation.fit", description=main.__doc__)
    ap.add_argument("--gpu", required=True, help="canonical hw name, e.g. h100-sxm-80gb")
    ap.add_argument("--records", type=Path, help="JSONL records (default validation/data/<gpu>.jsonl)")
    ap.add_argument("--out", type=Path, help="profile to write (default hw/data/profiles/<gpu>.json)")
    ap.add_argument(
        "--no-bands",
        action="store_true",
        help="skip the error bands (three more fits, one per cross-validation fold)",
    )
    a = ap.parse_args(argv)
    rec_path = a.records or Path(__file__).resolve().parent / "data" / f"{a.gpu}.jsonl"
    out = a.out or PROFILE_DIR / f"{a.gpu}.json"
    try:
        recs = read_records(rec_path, a.gpu)
        fitter = ProfileFitter(a.gpu).fit(recs)
        try:
            src = rec_path.resolve().relative_to(Path(__file__).resolve().parent.parent)
        except ValueError:
            src = rec_path
        prof = fitter.profile_
        sus_path = rec_path.parent / f"sustained_{a.gpu}.json"
        if sus_path.exists():  # the power-capped rate of long phases (benchmarks/sustained.py)
            terms = sustained_terms(json.loads(sus_path.read_text()), prof)
            terms["source"] = f"perfmodel.validation.fit from {sus_path.name} (benchmarks/sustained.py)"
            prof = dataclasses.replace(prof, sustained=MappingProxyType(terms))
        eager_path = rec_path.parent / f"{a.gpu}.eager.jsonl"
        if eager_path.exists():  # eager launches (python -m perfmodel.validation.run --launch eager)
            prof = dataclasses.replace(
                prof, launch_terms=MappingProxyType(launch_terms(read_records(eager_path, a.gpu), prof))
            )
        if not a.no_bands:  # error bands (validation.bands): held-out, transferred and datasheet residuals
            from perfmodel.validation.bands import cross_validate, fit_bands, with_bands, write_cv

            others = [
                (p.name.removesuffix(".jsonl"), p)
                for p in sorted(rec_path.parent.glob("*.jsonl"))
                if p.name.removesuffix(".jsonl") in MEASURED_GPUS and p.name != f"{a.gpu}.jsonl"
            ]
            other = (others[0][0], read_records(others[0][1], others[0][0])) if others else None
            rows = cross_validate(recs, a.gpu)
            write_cv(rows, rec_path, a.gpu)  # <gpu>.cv.jsonl: the residuals the coverage check reads
            prof = with_bands(prof, fit_bands(recs, a.gpu, fitter, other, rows))
        write_profile(prof, out, f"fitted by validation.fit on {len(recs)} records of {src}")
    except (RecordError, ProfileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for k, ape in sorted(fitter.train_ape_.items()):
        print(f"{k:34s} median APE on its own records {100 * ape:5.1f}%")
    print(f"wrote {out}")
    return 0


__all__ = ["NON_DEFAULT_IMPLS", "ProfileFitter", "fit_class", "fit_profile", "predict_ops", "write_profile"]


if __name__ == "__main__":
    sys.exit(main())
