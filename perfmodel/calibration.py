"""Calibration profiles: achieved fractions of peak, per op class, as data.

A profile is a JSON file ``hw/data/profiles/<gpu>.json`` written by the
validation suite (``python -m perfmodel.validation.run`` then ``perfmodel.validation.fit``).  The
core only reads it.  Format (see ``docs/calibration.md``)::

    {
      "schema_version": 1,
      "gpu": "h100-sxm-80gb",
      "measured_on": {"gpu": "...", "driver": "...", "torch": "...", "date": "..."},
      "classes": {
        "gemm": {"compute_eff": 0.8, "memory_eff": 0.85, "latency_s": 5e-6,
                 "tile_m": 128, "tile_n": 128, "tile_m_min": 16, "wave_quant": 0.5,
                 "tile_overhead_s": 1e-6, "overlap": 1.0, "ramp_flops": 0.0, "ramp_bytes": 0.0},
        "attention_prefill": {...}, "attention_decode": {...}, "elementwise": {...},
        "memcpy_d2d": {...}, "memcpy_h2d": {...}, "memcpy_d2h": {...},
        "memcpy_h2d_pageable": {...}, "memcpy_d2h_pageable": {...},
        "all_reduce": {...}, "all_gather": {...}, "reduce_scatter": {...},
        "all_to_all": {...}, "send_recv": {...}
      },
      "elementwise_kernels": {"rmsnorm": {...}, "silu_mul": {...}, ...}
    }

Every class field is optional and defaults to the peak value (efficiency 1,
latency 0, no tile quantization), so a profile names only what was fitted.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from perfmodel.hw.loader import DATA_DIR
from perfmodel.hw.spec import GPU
from perfmodel.clocks import sustained_from_dict
from perfmodel.errors import ProfileError
from perfmodel.ops import DEFAULT_ATTENTION_IMPL, AttentionImpl, CollectiveLaunch, Phase

PROFILE_DIR = DATA_DIR / "profiles"
SCHEMA_VERSION = 1


class SplitRule(enum.IntEnum):
    """How an attention kernel splits the KV axis over programs (``ClassParams.split_rule``; stored
    as its number in profiles): no split; the flash-attention heuristic over ``2 * SMs`` slots; our
    split-KV kernel (enough splits to fill ``2 * SMs`` programs); our stream-K kernel (programs
    sharing all KV tiles equally). The Triton kernels' rules live in :mod:`perfmodel.decode_schedule`."""

    NONE = 0
    FLASH = 1
    FILL = 2
    STREAM_K = 3


class Mode(str, enum.Enum):
    PEAK = "peak"
    CALIBRATED = "calibrated"


class Launch(str, enum.Enum):
    """How kernels are launched: ``graph`` (CUDA-graph replays, what serving engines use for decode and
    what the profile's curves are fitted on) or ``eager`` (one host launch per kernel, back to back:
    a short kernel waits for the host; :attr:`Profile.launch_terms`)."""

    GRAPH = "graph"
    EAGER = "eager"


class OpClass(str, enum.Enum):
    """Op classes with their own achieved-fraction curves."""

    GEMM = "gemm"
    ATTENTION_PREFILL = "attention_prefill"
    ATTENTION_DECODE = "attention_decode"
    ELEMENTWISE = "elementwise"
    MEMCPY_D2D = "memcpy_d2d"
    MEMCPY_H2D = "memcpy_h2d"
    MEMCPY_D2H = "memcpy_d2h"
    MEMCPY_H2D_PAGEABLE = "memcpy_h2d_pageable"
    MEMCPY_D2H_PAGEABLE = "memcpy_d2h_pageable"
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_TO_ALL = "all_to_all"
    SEND_RECV = "send_recv"
    GROUPED_GEMM = "grouped_gemm"


@dataclass(frozen=True)
class ClassParams:
    """Achieved-fraction curve of one op class.

    time = blend(compute_s, memory_s, overlap) + waves * tile_overhead_s + latency_s, where

    - compute_s = flops_eff / (peak_flops * compute_eff * flops / (flops + ramp_flops));
    - memory_s = bytes / (bandwidth * memory_eff * bytes / (bytes + ramp_bytes));
    - blend = max(c, m) when overlap = 1, c + m when overlap = 0, linear between.

    Tiles and waves (GEMM and prefill attention; 0 disables them): the work is cut into output
    tiles of ``tile_m`` x ``tile_n`` (attention: blocks of ``tile_m`` queries per head); M
    (and N) are padded to whole tiles, the M tile shrinking to the next power of two of M (at
    least ``tile_m_min``) for skinny problems; the tiles run in ``waves = ceil(tiles / SMs)``.
    ``wave_quant`` in [0, 1] is the share of the partial last wave that costs a full wave
    (1: strict wave quantization; 0: the library spreads the tail, e.g. split-K/stream-K).
    ``tile_overhead_s`` is paid once per wave (pipeline fill, epilogue).

    Attributes
    ----------
    compute_eff : float, fraction of peak FLOP/s in (0, 1.5]
    memory_eff : float, fraction of peak bandwidth in (0, 1.5]
    latency_s : float, seconds added per kernel (launch and fixed cost)
    tile_m, tile_n : int, output tile of the kernel (0: no quantization)
    tile_m_min : int, smallest M tile for skinny problems (0: always ``tile_m``)
    wave_quant : float in [0, 1], weight of the partial-wave penalty
    tile_overhead_s : float, seconds per wave of tiles
    overlap : float in [0, 1]
    ramp_flops : float, FLOPs at which half of ``compute_eff`` is reached (0: none)
    ramp_bytes : float, bytes at which half of ``memory_eff`` is reached (0: none)
    bandwidth_bytes_per_s : float, overrides the datasheet bandwidth of the path (0: datasheet)
    units_per_sm : float, work units (thread blocks: attention programs, norm rows) resident per SM
        at once (0: no occupancy term).  The units run in waves of ``units_per_sm * SMs``; each
        takes ``unit_overhead_s + unit_bytes / (unit_memory_eff * bandwidth / SMs)``, and the
        memory time is at least the waves times that (Little's law: few units in flight cannot
        fill HBM).
    unit_overhead_s : float, fixed seconds of one work unit (prologue, reduction, epilogue)
    unit_memory_eff : float, streaming rate of one work unit as a fraction of the bandwidth per SM
        (above 1 when one SM's share is outrun by one unit; 0: no per-unit byte term)
    split_rule : SplitRule, how an attention kernel splits the KV axis over programs (``NONE`` 0,
        ``FLASH`` 1, ``FILL`` 2, ``STREAM_K`` 3; :class:`SplitRule`)
    split_latency_s : float, seconds added when the KV axis is split (the combine kernel)
    split_memory_eff : float, memory efficiency of the split-KV path (0: ``memory_eff``)
    knee_bytes : float, size above which ``tail_memory_eff`` applies to the extra bytes (0: none)
    tail_memory_eff : float, memory efficiency of the bytes beyond ``knee_bytes`` (0: ``memory_eff``)
    unit_compute_eff : float, prefill attention scheduled as work units (0: off): math rate of one
        (sequence, head, query tile) program as a fraction of one SM's peak FLOP/s; the compute
        time is then the makespan of the programs over ``units_per_sm * SMs`` slots (each program
        ``unit_overhead_s`` plus its keys' math; causal tiles see different key counts)
    reduce_bytes_eff : float, Triton split/stream decode (0: off): the combine kernel's partial
        results (fp32, one row per query head and KV piece) stream at this fraction of the bandwidth
    reduce_row_s : float, Triton split/stream decode (0: off): seconds per output row (a query head
        of a sequence; the combine kernel runs one program per row) and SM: the combine kernel's
        programs are short and latency-bound, so its time grows with their count over the SMs
    merge_latency_s : float, Triton stream-K decode at one wave (programs no more than the SMs): it
        launches no combine kernel; where a (sequence, kv head) pair is split, the last of its
        programs takes an atomic and merges the pair's pieces after its own tiles, costing this
        latency ...
    merge_step_s : float, ... plus this per load of the pair's partials: the program loads them in
        blocks of ``perfmodel.attention_costs.STREAM_K_MERGE_ROWS // next_pow2(group)`` pieces (all
        query heads of a piece in one row), one dependent round trip each (0: free)
    tile_choice : int, GEMM (0: the fitted ``tile_m`` x ``tile_n`` tile; 1: the fastest of
        ``perfmodel.costs.GEMM_CANDIDATE_TILES``, each with its own waves, as a heuristic library picks;
        ``tile_m``/``tile_n`` must still be non-zero to switch tiling on)
    small_tile_eff : float in [0, 1], GEMM candidate tiles: math-rate factor per halving of the tile
        area below 128 x 256 (0: the same rate for every tile)
    row_knee_bytes : float, row kernels (norms): rows of more activation bytes than this no longer stay
        on chip between the kernel's passes over the row and stream at ``row_tail_memory_eff`` (0: off)
    row_tail_memory_eff : float, memory efficiency of rows longer than ``row_knee_bytes`` (0: ``memory_eff``)
    row_knee_width_bytes : float, row kernels: the knee is a ramp of this many row bytes instead of a step (0: a
        step): a row of ``row_knee_bytes + f * row_knee_width_bytes`` bytes (f in [0, 1]) pays the share ``f`` of
        the tail's extra time per byte (rows just past the knee still keep part of the row on chip)
    cache_bytes : float, elementwise kernels: an op of at most this many bytes streams all of them at
        ``cache_memory_eff`` (its working set stays in L2 between runs); a larger one misses the cache
        as a whole (cyclic reuse evicts what the next run needs) and follows the knee form (0: off)
    cache_memory_eff : float in [0, 4], rate of the bytes of an op within ``cache_bytes``, as a fraction of
        the HBM bandwidth (above 1: L2) (0: ``memory_eff``)
    score_flops : float, scheduled prefill attention: math per attention score outside the tensor-core matmuls
        (the softmax: max, exp, rescale), in FLOPs at the programs' rate; a program's key costs
        ``tile_m * (4 * head_dim + score_flops)`` (0: none), so small heads cost more per FLOP
    split_piece_s : float, split decode attention: seconds the combine kernel adds per KV split (per piece for
        our Triton kernels): its few blocks read every split's partial row in turn (0: none)
    unit_step_s : float, decode attention with an occupancy term: seconds one work unit spends per KV
        tile it walks that its byte stream does not hide (a load round trip per tile; Little's law
        with one tile in flight), so a unit of ``n`` tiles takes ``unit_overhead_s + n * unit_step_s +
        bytes / rate``; smaller heads move fewer bytes per tile and lose more to it (0: none)
    fill_tile_eff : float in [0, 1], GEMM: a grid of fewer tiles than SMs runs as one full wave of smaller tiles
        (the library shrinks the tile until the grid fills the SMs), at this math-rate factor per halving of the
        tile area, ``log2(SMs / tiles)`` halvings, instead of paying ``wave_quant`` of the idle SMs (0: off)
    misaligned_eff : float in [0, 1], GEMM: math-rate factor when a row of N or K elements of either operand is not
        a multiple of 128 bytes (``perfmodel.costs.GEMM_ALIGN_BYTES``): tile loads then start mid cache line
        (0: off)
    misaligned_memory_eff : float in [0, 1], GEMM: factor on ``memory_eff`` for the same misaligned rows: their
        loads cannot move whole 128-byte lines (each row touches one more line, the TMA copies split), so the
        byte stream of a weight-streaming (small-M) GEMM runs slower too (0: off)
    unit_share : float in [0, 1], scheduled prefill attention: the largest share of its SM's math rate
        one program reaches once the shorter programs beside it have finished; the longest program
        then takes at most its keys' math at that rate (causal tiles differ in length, so a causal
        wave ends sooner than a non-causal one of the same longest program; 0: off)
    """

    compute_eff: float = 1.0
    memory_eff: float = 1.0
    latency_s: float = 0.0
    tile_m: int = 0
    tile_n: int = 0
    tile_m_min: int = 0
    wave_quant: float = 1.0
    tile_overhead_s: float = 0.0
    overlap: float = 1.0
    ramp_flops: float = 0.0
    ramp_bytes: float = 0.0
    bandwidth_bytes_per_s: float = 0.0
    units_per_sm: float = 0.0
    unit_overhead_s: float = 0.0
    unit_memory_eff: float = 0.0
    split_rule: SplitRule = SplitRule.NONE
    split_latency_s: float = 0.0
    split_memory_eff: float = 0.0
    knee_bytes: float = 0.0
    tail_memory_eff: float = 0.0
    unit_compute_eff: float = 0.0
    reduce_bytes_eff: float = 0.0
    reduce_row_s: float = 0.0
    merge_latency_s: float = 0.0
    merge_step_s: float = 0.0
    tile_choice: int = 0
    small_tile_eff: float = 0.0
    row_knee_bytes: float = 0.0
    row_tail_memory_eff: float = 0.0
    score_flops: float = 0.0
    split_piece_s: float = 0.0
    unit_step_s: float = 0.0
    unit_share: float = 0.0
    fill_tile_eff: float = 0.0
    misaligned_eff: float = 0.0
    row_knee_width_bytes: float = 0.0
    cache_bytes: float = 0.0
    cache_memory_eff: float = 0.0
    misaligned_memory_eff: float = 0.0

    def __post_init__(self) -> None:
        # a profile stores the split rule as its number; an unknown number is left for validate()
        if not isinstance(self.split_rule, SplitRule) and self.split_rule in set(SplitRule):
            object.__setattr__(self, "split_rule", SplitRule(self.split_rule))

    def validate(self, where: str) -> None:
        for name in ("compute_eff", "memory_eff"):
            v = getattr(self, name)
            if not (0 < v <= 1.5) or not math.isfinite(v):
                raise ProfileError(f"{where}: {name} must be in (0, 1.5], got {v}")
        if self.tile_choice not in (0, 1):
            raise ProfileError(f"{where}: tile_choice must be 0 or 1, got {self.tile_choice}")
        for name in ("small_tile_eff", "fill_tile_eff", "misaligned_eff", "misaligned_memory_eff"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ProfileError(f"{where}: {name} must be in [0, 1] (0: off), got {v}")
        for name in ("split_memory_eff", "tail_memory_eff", "unit_compute_eff", "reduce_bytes_eff", "row_tail_memory_eff"):
            v = getattr(self, name)
            if not (0 <= v <= 1.5) or not math.isfinite(v):
                what = "memory_eff" if name in ("split_memory_eff", "tail_memory_eff", "row_tail_memory_eff") else "off"
                raise ProfileError(f"{where}: {name} must be in [0, 1.5] (0: {what}), got {v}")
        if not 0 <= self.cache_memory_eff <= 4 or not math.isfinite(self.cache_memory_eff):
            raise ProfileError(f"{where}: cache_memory_eff must be in [0, 4] (0: memory_eff), got {self.cache_memory_eff}")
        if self.split_rule not in set(SplitRule):
            raise ProfileError(f"{where}: split_rule must be one of {[int(r) for r in SplitRule]}, got {self.split_rule}")
        for name in ("latency_s", "ramp_flops", "ramp_bytes", "bandwidth_bytes_per_s", "tile_m", "tile_n",
                     "tile_m_min", "tile_overhead_s", "units_per_sm", "unit_overhead_s", "unit_memory_eff",
                     "split_latency_s", "knee_bytes", "row_knee_bytes", "row_knee_width_bytes", "cache_bytes", "score_flops", "split_piece_s",
                     "unit_step_s", "reduce_row_s", "merge_latency_s", "merge_step_s"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ProfileError(f"{where}: {name} must be finite and >= 0, got {v}")
        for name in ("overlap", "wave_quant", "unit_share"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ProfileError(f"{where}: {name} must be in [0, 1], got {v}")


_INT_FIELDS = ("tile_m", "tile_n", "tile_m_min", "split_rule", "tile_choice")

PEAK_PARAMS = ClassParams()


ATTENTION_CLASSES = (OpClass.ATTENTION_PREFILL, OpClass.ATTENTION_DECODE)


def attention_class(phase: Phase) -> OpClass:
    return OpClass.ATTENTION_PREFILL if phase is Phase.PREFILL else OpClass.ATTENTION_DECODE


def curve_key(op_class: OpClass, impl: AttentionImpl) -> str:
    """The profile's name of an attention curve: ``attention_prefill[sdpa]``."""
    return f"{op_class.value}[{impl.value}]"


def parse_curve_key(key: str, where: str) -> tuple[OpClass, AttentionImpl]:
    """``attention_decode[stream_k]`` -> (class, impl); a ProfileError names a malformed key."""
    base, _, rest = key.partition("[")
    try:
        oc = OpClass(base)
        impl = AttentionImpl(rest.rstrip("]"))
    except ValueError:
        oc = impl = None
    if oc not in ATTENTION_CLASSES or impl is None or not rest.endswith("]"):
        raise ProfileError(f"{where}: implementations key {key!r} is not attention_prefill[<impl>] or "
                           f"attention_decode[<impl>] with impl one of {', '.join(i.value for i in AttentionImpl)}")
    return oc, impl


@dataclass(frozen=True)
class Profile:
    """Per-class parameters for one GPU (an empty mapping is the peak model).

    ``elementwise`` holds curves of named elementwise kernels (``rmsnorm``, ``silu_mul``, ...);
    an elementwise op whose name has none uses the ``elementwise`` class.

    Attention has one curve per implementation (:class:`perfmodel.ops.AttentionImpl`):
    ``implementations`` maps ``(class, impl)`` to it; a ``classes`` entry of an attention class is
    the curve of the default impl (``sdpa``). ``attention_impl`` is the impl priced for attention
    ops that name none (the scenario's choice); :meth:`with_attention_impl` sets it.
    ``attention_kernels`` lists, per curve key (``attention_prefill[sdpa]``), the CUDA kernels the
    records of that curve ran (``torch.profiler`` names), so a backend change shows as a new name.
    """

    gpu: str
    mode: Mode
    classes: Mapping[OpClass, ClassParams] = field(default_factory=lambda: MappingProxyType({}))
    measured_on: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source_path: str = ""
    elementwise: Mapping[str, ClassParams] = field(default_factory=lambda: MappingProxyType({}))
    #: Measured Ring-attention step terms (``overlap``, ``compute_issue_s``, ``comm_issue_s``,
    #: ``sync_s``; see :class:`perfmodel.parallel.RingStepModel`); empty when not measured.
    ring_attention_step: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    implementations: Mapping[tuple[OpClass, AttentionImpl], ClassParams] = field(
        default_factory=lambda: MappingProxyType({}))
    attention_impl: AttentionImpl | None = None
    attention_kernels: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    #: The sustained-clock terms (``compute_ratio``, ``settle_s``; :mod:`perfmodel.clocks`); empty when not measured.
    sustained: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: Eager-launch terms (``issue_s``: host seconds per eager launch; ``gap_s``: seconds an eager kernel
    #: adds over its graph-replay time), fitted on eager records; empty when not measured.
    launch_terms: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: The launch mode priced (:class:`Launch`); ``eager`` needs ``launch_terms`` in a calibrated profile.
    launch: Launch = Launch.GRAPH
    #: Collective terms per way of issuing them (:class:`perfmodel.ops.CollectiveLaunch`): ``{way: {class:
    #: params}}``; a collective op of that way uses them instead of its class's (:mod:`perfmodel.comm`).
    collective_launch: Mapping[CollectiveLaunch, Mapping[OpClass, ClassParams]] = field(
        default_factory=lambda: MappingProxyType({}))
    #: Where each op class's curve comes from (``measured``, ``transferred from <gpu>``, ``datasheet``;
    #: :mod:`perfmodel.transfer`); a class not listed: :meth:`provenance_of` infers it.
    provenance: Mapping[OpClass, str] = field(default_factory=lambda: MappingProxyType({}))
    #: The measured GPU this whole profile was carried from (:func:`perfmodel.transfer.transfer_profile`); empty: own.
    transferred_from: str = ""
    #: Error bands (``docs/calibration.md``, "Error bands"): ``{"measured" | "transferred" | "datasheet": {key:
    #: {"q10", "q90", "n"}}, "source": ...}``, quantiles of log(predicted / measured) per band key (``gemm``,
    #: ``attention_decode[sdpa]``, ``elementwise:rmsnorm``, ``*`` for all held-out ops); empty: no band.
    bands: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def band_of(self, op_class: OpClass, keys: tuple[str, ...] = (), regime: str | None = None) -> tuple[float, float]:
        """(q10, q90) of log(predicted / measured) for an op of ``op_class`` in ``regime`` (``compute``, ``memory``,
        ``latency``: :func:`perfmodel.costs.regime_of`): the band group of its provenance (``measured``,
        ``transferred``, ``datasheet``), the first of ``keys`` it has (``<key>|<regime>`` before ``<key>``), else
        its ``*`` (all ops); (0, 0) in peak mode or without one.  A transferred class takes the envelope of its
        ``transferred`` and ``measured`` rows: the measured band widened by the measured transfer error."""
        if self.mode is Mode.PEAK or not self.bands:
            return 0.0, 0.0
        label = self.provenance_of(op_class)
        group = "measured" if label.startswith("measured") else "transferred" if label.startswith("transferred") \
            else "datasheet"
        rows = [self._band_row(group, op_class, keys, regime)]
        if group == "transferred":
            rows.append(self._band_row("measured", op_class, keys, regime))
        rows = [r for r in rows if r is not None]
        return (min(r[0] for r in rows), max(r[1] for r in rows)) if rows else (0.0, 0.0)

    def _band_row(self, group: str, op_class: OpClass, keys: tuple[str, ...], regime: str | None):
        table = self.bands.get(group) or {}
        for k in (*keys, op_class.value, "*"):
            for key in ((f"{k}|{regime}", k) if regime else (k,)):
                if key in table:
                    return table[key]["q10"], table[key]["q90"]
        return None

    def __post_init__(self) -> None:
        if self.attention_impl is None:  # the scenario named none: sdpa, or the impl the profile has
            object.__setattr__(self, "attention_impl", self.default_attention_impl())

    def provenance_of(self, op_class: OpClass) -> str:
        """``measured``, ``transferred from <gpu>`` or ``datasheet``: where ``op_class``'s curve comes from.

        A peak profile is ``datasheet`` throughout; a class without a curve of its own is ``datasheet``,
        except a grouped GEMM priced with the ``gemm`` curve (:mod:`perfmodel.costs_grouped`), which
        says so: ``measured (gemm curve)``.
        """
        if self.mode is Mode.PEAK:
            return "datasheet"
        if op_class in self.provenance:
            label = self.provenance[op_class]
        elif (self.attention_impls(op_class) if op_class in ATTENTION_CLASSES else op_class in self.classes):
            label = "measured"
        else:
            label = "datasheet"
        if op_class is OpClass.GROUPED_GEMM and label == "datasheet" and OpClass.GEMM in self.classes:
            return f"{self.provenance_of(OpClass.GEMM)} (gemm curve)"
        return label

    def provenance_map(self) -> dict[str, str]:
        """:meth:`provenance_of` for every op class, keyed by the class's value (the JSON form)."""
        return {c.value: self.provenance_of(c) for c in OpClass}

    def provenance_summary(self) -> str:
        """One line: each provenance followed by its classes (``measured: gemm, ...; datasheet: ...``)."""
        groups: dict[str, list[str]] = {}
        for c, label in self.provenance_map().items():
            groups.setdefault(label, []).append(c)
        if len(groups) == 1:
            return f"{next(iter(groups))} (every op class)"
        return "; ".join(f"{label}: {', '.join(cs)}" for label, cs in groups.items())

    def params(self, op_class: OpClass) -> ClassParams:
        if op_class in ATTENTION_CLASSES:
            return self.attention_params(op_class)
        return self.classes.get(op_class, PEAK_PARAMS)

    def attention_impls(self, op_class: OpClass) -> tuple[AttentionImpl, ...]:
        """The implementations this profile has a curve for in ``op_class``."""
        have = {i for c, i in self.implementations if c is op_class}
        if op_class in self.classes:
            have.add(DEFAULT_ATTENTION_IMPL)
        return tuple(i for i in AttentionImpl if i in have)

    def attention_params(self, op_class: OpClass, impl: AttentionImpl | None = None) -> ClassParams:
        """The curve of ``impl`` (default: :attr:`attention_impl`) in an attention class.

        Peak profiles (and profiles with no curve in ``op_class``) price every impl at the datasheet
        roofline.  A calibrated profile with curves of other impls but not this one raises :class:`~perfmodel.errors.ProfileError` naming the curves it has
        (never a silent fallback to another kernel's rates).
        """
        phase = Phase.PREFILL if op_class is OpClass.ATTENTION_PREFILL else Phase.DECODE
        impl = (impl or self.attention_impl).curve(phase)
        p = self.implementations.get((op_class, impl))
        if p is not None:
            return p
        if impl is DEFAULT_ATTENTION_IMPL and op_class in self.classes:
            return self.classes[op_class]
        have = ", ".join(i.value for i in self.attention_impls(op_class))
        if not have:  # a class the profile does not fit at all is priced at peak, as every class
            return PEAK_PARAMS
        raise ProfileError(f"calibration profile of {self.gpu} has no {op_class.value} curve for attention "
                           f"implementation {impl.value!r} (measured: {have})")

    def with_launch(self, launch: "Launch | str | None") -> "Profile":
        """This profile pricing ``launch`` (``graph`` or ``eager``); a calibrated profile without eager
        terms refuses ``eager``."""
        if launch is None:
            return self
        try:
            launch = Launch(launch)
        except ValueError:
            raise ProfileError(f"launch must be graph or eager, got {launch!r}") from None
        if launch is Launch.EAGER and not self.is_peak and not self.launch_terms:
            raise ProfileError(f"calibration profile of {self.gpu} has no eager-launch terms (measured: graph only)")
        return dataclasses.replace(self, launch=launch)

    def default_attention_impl(self) -> AttentionImpl:
        """The impl priced when a scenario names none: ``sdpa``, or, in a profile that has curves but no
        ``sdpa`` curve in both attention classes, the first of ``flash2``, ``triton`` it has in both
        (:func:`perfmodel.analyze` says so in its notes)."""
        have = [set(self.attention_impls(oc)) for oc in ATTENTION_CLASSES]
        if not any(have) or all(DEFAULT_ATTENTION_IMPL in h for h in have if h):
            return DEFAULT_ATTENTION_IMPL
        for impl in (AttentionImpl.FLASH2, AttentionImpl.TRITON):
            if all(impl.curve(ph) in h for ph, h in zip((Phase.PREFILL, Phase.DECODE), have) if h):
                return impl
        return DEFAULT_ATTENTION_IMPL

    def with_attention_impl(self, impl: AttentionImpl | str | None) -> "Profile":
        """This profile pricing attention ops that name no impl with ``impl`` (checked for both phases);
        ``None``: :meth:`default_attention_impl`."""
        impl = self.default_attention_impl() if impl is None else AttentionImpl.parse(impl)
        out = dataclasses.replace(self, attention_impl=impl)
        for oc in ATTENTION_CLASSES:
            out.attention_params(oc)
        return out

    def elementwise_params(self, name: str) -> ClassParams:
        """The curve of the elementwise kernel ``name`` (the class curve if it has none)."""
        p = self.elementwise.get(name)
        return p if p is not None else self.params(OpClass.ELEMENTWISE)

    @property
    def is_peak(self) -> bool:
        return not self.classes and not self.elementwise and not self.implementations

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema_version": SCHEMA_VERSION,
            "gpu": self.gpu,
            "measured_on": dict(self.measured_on),
            "classes": {c.value: params_to_dict(p) for c, p in self.classes.items()},
        }
        if self.elementwise:
            out["elementwise_kernels"] = {n: params_to_dict(p) for n, p in self.elementwise.items()}
        if self.ring_attention_step:
            out["ring_attention_step"] = dict(self.ring_attention_step)
        if self.implementations:
            out["implementations"] = {curve_key(c, i): params_to_dict(p)
                                      for (c, i), p in sorted(self.implementations.items(), key=lambda kv: curve_key(*kv[0]))}
        if self.sustained:
            out["sustained"] = dict(self.sustained)
        if self.launch_terms:
            out["launch"] = dict(self.launch_terms)
        if self.attention_kernels:
            out["attention_kernels"] = {k: list(v) for k, v in sorted(self.attention_kernels.items())}
        if self.bands:
            out["bands"] = {g: ({k: dict(v) for k, v in t.items()} if isinstance(t, Mapping) else t)
                            for g, t in self.bands.items()}
        if self.collective_launch:
            out["collective_launch"] = {w.value: {c.value: params_to_dict(p) for c, p in per.items()}
                                        for w, per in self.collective_launch.items()}
        return out


def params_to_dict(p: ClassParams) -> dict[str, Any]:
    """The fields of ``p`` that differ from the peak values."""
    return {f.name: getattr(p, f.name) for f in fields(p) if getattr(p, f.name) != getattr(PEAK_PARAMS, f.name)}


def peak_profile(gpu: GPU | str) -> Profile:
    """The theoretical-peak model: every efficiency 1, every latency 0."""
    return Profile(gpu=gpu if isinstance(gpu, str) else gpu.name, mode=Mode.PEAK)


def params_from_dict(raw: Any, where: str) -> ClassParams:
    """Parse and validate one curve; ``where`` names it in errors."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where} must be an object")
    extra = set(raw) - {f.name for f in fields(ClassParams)}
    if extra:
        raise ProfileError(f"{where} has unknown field(s) {', '.join(sorted(extra))}")
    try:
        vals = {}
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError
            vals[k] = int(v) if k in _INT_FIELDS else float(v)
        p = ClassParams(**vals)
    except (TypeError, ValueError, OverflowError):
        raise ProfileError(f"{where} has a non-numeric value") from None
    p.validate(where)
    return p


def profile_from_dict(data: Any, where: str = "<dict>") -> Profile:
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise ProfileError(f"{where}: a profile needs a 'classes' object")
    if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ProfileError(f"{where}: schema_version {data.get('schema_version')} unsupported (want {SCHEMA_VERSION})")
    classes = {}
    for name, raw in data["classes"].items():
        try:
            oc = OpClass(name)
        except ValueError:
            raise ProfileError(f"{where}: unknown op class {name!r}; known: {', '.join(c.value for c in OpClass)}") from None
        classes[oc] = params_from_dict(raw, f"{where}: class {name!r}")
    ew = data.get("elementwise_kernels", {})
    if not isinstance(ew, dict):
        raise ProfileError(f"{where}: 'elementwise_kernels' must be an object")
    named = {str(n): params_from_dict(raw, f"{where}: elementwise kernel {n!r}") for n, raw in ew.items()}
    ring = _ring_step_from_dict(data.get("ring_attention_step", {}), where)
    impls_raw = data.get("implementations", {})
    if not isinstance(impls_raw, dict):
        raise ProfileError(f"{where}: 'implementations' must be an object")
    impls = {parse_curve_key(k, where): params_from_dict(raw, f"{where}: implementation {k!r}")
             for k, raw in impls_raw.items()}
    kern_raw = data.get("attention_kernels", {})
    if not isinstance(kern_raw, dict) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in kern_raw.values()):
        raise ProfileError(f"{where}: 'attention_kernels' must map curve keys to lists of kernel names")
    for k in kern_raw:
        parse_curve_key(k, where)
    return Profile(
        gpu=str(data.get("gpu", "")),
        mode=Mode.CALIBRATED,
        classes=MappingProxyType(classes),
        measured_on=MappingProxyType(dict(data.get("measured_on", {}))),
        source_path=where,
        elementwise=MappingProxyType(named),
        ring_attention_step=MappingProxyType(ring),
        implementations=MappingProxyType(impls),
        attention_kernels=MappingProxyType({k: tuple(v) for k, v in kern_raw.items()}),
        sustained=MappingProxyType(sustained_from_dict(data["sustained"], where) if "sustained" in data else {}),
        launch_terms=MappingProxyType(_launch_from_dict(data.get("launch", {}), where)),
        bands=MappingProxyType(bands_from_dict(data.get("bands", {}), where)),
        collective_launch=MappingProxyType(_collective_launch_from_dict(data.get("collective_launch", {}), where)),
    )


def _collective_launch_from_dict(raw: Any, where: str) -> dict:
    """Validate the optional ``collective_launch`` object: ``{way: {collective class: params}}``."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: 'collective_launch' must be an object")
    out: dict = {}
    for way, per in raw.items():
        try:
            w = CollectiveLaunch(way)
        except ValueError:
            raise ProfileError(f"{where}: collective_launch has unknown way {way!r}; known: "
                               f"{', '.join(x.value for x in CollectiveLaunch)}") from None
        if not isinstance(per, dict):
            raise ProfileError(f"{where}: collective_launch.{way} must be an object")
        classes = {}
        for name, p in per.items():
            if name not in _COLLECTIVE_CLASS_NAMES:
                raise ProfileError(f"{where}: collective_launch.{way} has {name!r}, not a collective class; known: "
                                   f"{', '.join(sorted(_COLLECTIVE_CLASS_NAMES))}")
            classes[OpClass(name)] = params_from_dict(p, f"{where}: collective_launch.{way}.{name}")
        out[w] = MappingProxyType(classes)
    return out


_COLLECTIVE_CLASS_NAMES = frozenset({"all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"})


BAND_GROUPS = ("measured", "transferred", "datasheet")


def bands_from_dict(raw: Any, where: str) -> dict[str, Any]:
    """Validate the optional ``bands`` object: groups of :data:`BAND_GROUPS`, each mapping band keys to
    ``{"q10", "q90"}`` (finite, q10 <= q90; optional ``n``, a count), plus ``source`` and ``coverage`` notes."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: 'bands' must be an object")
    extra = set(raw) - set(BAND_GROUPS) - {"source", "coverage"}
    if extra:
        raise ProfileError(f"{where}: bands has unknown group(s) {', '.join(sorted(extra))}; known: {', '.join(BAND_GROUPS)}")
    out: dict[str, Any] = {}
    for g in BAND_GROUPS:
        if g not in raw:
            continue
        if not isinstance(raw[g], dict):
            raise ProfileError(f"{where}: bands.{g} must be an object")
        table = {}
        for k, v in raw[g].items():
            q = v.get("q10") if isinstance(v, dict) else None
            h = v.get("q90") if isinstance(v, dict) else None
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (q, h)):
                raise ProfileError(f"{where}: bands.{g}.{k} needs finite numbers q10 and q90")
            if q > h:
                raise ProfileError(f"{where}: bands.{g}.{k}: q10 {q} > q90 {h}")
            entry = {"q10": float(q), "q90": float(h)}
            if "n" in v:
                entry["n"] = int(v["n"])
            table[str(k)] = MappingProxyType(entry)
        out[g] = MappingProxyType(table)
    for k in ("source", "coverage"):
        if k in raw:
            out[k] = raw[k] if isinstance(raw[k], (int, float, str)) else str(raw[k])
    return out


def _launch_from_dict(raw: Any, where: str) -> dict[str, Any]:
    """Validate the optional ``launch`` object: ``issue_s`` and ``gap_s``, seconds >= 0."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: 'launch' must be an object")
    extra = set(raw) - {"issue_s", "gap_s", "source"}
    if extra:
        raise ProfileError(f"{where}: launch has unknown field(s) {', '.join(sorted(extra))}")
    out: dict[str, Any] = {}
    for k in ("issue_s", "gap_s"):
        if k in raw:
            v = raw[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ProfileError(f"{where}: launch.{k} must be a number >= 0, got {v!r}")
            out[k] = float(v)
    if out and set(out) != {"issue_s", "gap_s"}:
        raise ProfileError(f"{where}: launch needs both issue_s and gap_s")
    if "source" in raw:
        out["source"] = str(raw["source"])
    return out


_RING_KEYS = ("overlap", "compute_issue_s", "comm_issue_s", "sync_s")


def _ring_step_from_dict(raw: Any, where: str) -> dict[str, Any]:
    """Validate the optional ``ring_attention_step`` object (``comm_issue_s`` may be null)."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: 'ring_attention_step' must be an object")
    extra = set(raw) - set(_RING_KEYS) - {"source"}
    if extra:
        raise ProfileError(f"{where}: ring_attention_step has unknown field(s) {', '.join(sorted(extra))}")
    out: dict[str, Any] = {}
    for k in _RING_KEYS:
        if k not in raw:
            continue
        v = raw[k]
        if v is None and k == "comm_issue_s":
            out[k] = None
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ProfileError(f"{where}: ring_attention_step.{k} must be a number >= 0, got {v!r}")
        out[k] = float(v)
    if "overlap" in out and out["overlap"] > 1:
        raise ProfileError(f"{where}: ring_attention_step.overlap must be in [0, 1], got {out['overlap']}")
    if "source" in raw:
        out["source"] = str(raw["source"])
    return out


def load_profile_file(path: str | Path, gpu: GPU | str | None = None) -> Profile:
    """Load a profile file; refuse one written for another GPU than ``gpu``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ProfileError(f"calibration profile not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProfileError(f"calibration profile is corrupt (not JSON): {p}") from None
    prof = profile_from_dict(data, str(p))
    want = gpu if isinstance(gpu, str) or gpu is None else gpu.name
    if want is not None and prof.gpu != want:
        raise ProfileError(f"calibration profile {p} is for {prof.gpu!r}, not {want!r}")
    return prof


def shipped_profile_path(gpu: GPU | str) -> Path:
    return PROFILE_DIR / f"{gpu if isinstance(gpu, str) else gpu.name}.json"


def resolve_profile(gpu: GPU, mode: Mode | str = Mode.CALIBRATED, profile: Profile | str | Path | None = None,
                    attention_impl: AttentionImpl | str | None = None, launch: Launch | str | None = None) -> Profile:
    """The profile to use for ``gpu`` in ``mode``, pricing attention with ``attention_impl``.

    In calibrated mode without a shipped profile, a profile transferred from a measured GPU
    (:func:`perfmodel.transfer.transfer_profile`, the source chosen by
    :func:`perfmodel.transfer.choose_source`); a shipped profile without collective classes takes
    those of a measured GPU with the same kind of link.  Only when no GPU has a shipped profile
    does it fall back to peak, with a ``UserWarning`` saying so.  Each result names its
    provenance per op class (:meth:`Profile.provenance_of`).  An explicit ``profile`` (object or
    path) wins and is used as it is.
    ``attention_impl`` (default: the profile's, ``sdpa``) must have curves in a calibrated profile.
    """
    return _resolve(gpu, mode, profile).with_attention_impl(attention_impl).with_launch(launch)


def _resolve(gpu: GPU, mode: Mode | str, profile: Profile | str | Path | None) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if profile is not None:
        return load_profile_file(profile, gpu)
    mode = Mode(mode) if not isinstance(mode, Mode) else mode
    if mode is Mode.PEAK:
        return peak_profile(gpu)
    from perfmodel import transfer

    measured = measured_profiles()
    if gpu.name in measured and measured[gpu.name][0] == gpu:
        return transfer.with_transferred_collectives(measured[gpu.name][1], gpu, measured)
    path = shipped_profile_path(gpu)
    if path.exists():  # a shipped profile of a GPU changed by what-if overrides
        return transfer.with_transferred_collectives(load_profile_file(path, gpu), gpu, measured)
    src = transfer.choose_source(gpu, [g for g, _ in measured.values()])
    if src is None:
        warnings.warn(
            f"no calibration profile for {gpu.name} and none to transfer; using the theoretical-peak model "
            f"(efficiency 1, latency 0)",
            UserWarning,
            stacklevel=3,
        )
        return peak_profile(gpu)
    return transfer.with_transferred_collectives(transfer.transfer_profile(measured[src.name][1], src, gpu), gpu,
                                                 measured)


def measured_profiles() -> dict[str, tuple[GPU, Profile]]:
    """The shipped profiles (``PROFILE_DIR/<gpu>.json`` of a shipped GPU), by GPU name, with their GPU."""
    from perfmodel.hw.loader import list_gpus, load_gpu

    known = set(list_gpus())
    out = {}
    for path in sorted(Path(PROFILE_DIR).glob("*.json")):
        if path.stem in known:
            st = path.stat()
            out[path.stem] = (load_gpu(path.stem), _cached_profile(str(path), st.st_mtime_ns, st.st_size))
    return out


@functools.lru_cache(maxsize=16)
def _cached_profile(path: str, mtime_ns: int, size: int) -> Profile:
    return load_profile_file(path, Path(path).stem)


def ramp(x: Any, half: float) -> Any:
    """``x / (x + half)``: 0 at 0, 1/2 at ``half``, 1 as x grows (1 when ``half`` is 0)."""
    if half <= 0:
        return 1.0
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x / (x + half), 1.0)
