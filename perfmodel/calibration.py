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

Each class's curve is its own parameter type (:data:`perfmodel.costs.PARAMS_TYPES`: ``GemmParams``,
``AttentionParams``, ``CopyParams``, ...; named elementwise kernels ``ElementwiseParams``, implementations
``AttentionParams``, ``collective_launch`` entries ``CollectiveParams``), built from the same keys.  Every
field is optional and defaults to the peak value (efficiency 1, latency 0, no tile quantization), so a
profile names only what was fitted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any


from perfmodel.hw.loader import DATA_DIR
from perfmodel.hw.spec import GPU
from perfmodel.clocks import sustained_from_dict
from perfmodel.costs.attention import ATTENTION_CLASSES, AttentionParams, curve_key
from perfmodel.costs.base import CurveParams, Launch, Mode, OpClass
from perfmodel.costs.collectives import COLLECTIVE_CLASSES, CollectiveParams, PeerAllReduce
from perfmodel.costs.elementwise import ElementwiseParams
from perfmodel.costs.registry import PEAK_PARAMS, PARAMS_TYPES
from perfmodel.errors import ProfileError
from perfmodel.ops import DEFAULT_ATTENTION_IMPL, AttentionImpl, CollectiveLaunch, Phase

PROFILE_DIR = DATA_DIR / "profiles"
SCHEMA_VERSION = 1


def parse_curve_key(key: str, where: str) -> tuple[OpClass, AttentionImpl]:
    """``attention_decode[stream_k]`` -> (class, impl); a ProfileError names a malformed key."""
    base, _, rest = key.partition("[")
    try:
        oc = OpClass(base)
        impl = AttentionImpl(rest.rstrip("]"))
    except ValueError:
        oc = impl = None
    if oc not in ATTENTION_CLASSES or impl is None or not rest.endswith("]"):
        raise ProfileError(
            f"{where}: implementations key {key!r} is not attention_prefill[<impl>] or "
            f"attention_decode[<impl>] with impl one of {', '.join(i.value for i in AttentionImpl)}"
        )
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
    classes: Mapping[OpClass, CurveParams] = field(default_factory=lambda: MappingProxyType({}))
    measured_on: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source_path: str = ""
    elementwise: Mapping[str, ElementwiseParams] = field(default_factory=lambda: MappingProxyType({}))
    #: Measured Ring-attention step terms (``overlap``, ``compute_issue_s``, ``comm_issue_s``,
    #: ``sync_s``; see :class:`perfmodel.parallel.RingStepModel`); empty when not measured.
    ring_attention_step: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    implementations: Mapping[tuple[OpClass, AttentionImpl], AttentionParams] = field(
        default_factory=lambda: MappingProxyType({})
    )
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
    collective_launch: Mapping[CollectiveLaunch, Mapping[OpClass, CollectiveParams]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: Where each op class's curve comes from (``measured``, ``transferred from <gpu>``, ``datasheet``;
    #: :mod:`perfmodel.transfer`); a class not listed: :meth:`provenance_of` infers it.
    provenance: Mapping[OpClass, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Where an attention implementation's curve comes from when it is not this GPU's own measurement
    #: (``transferred from <gpu>``, :func:`perfmodel.transfer.with_transferred_gaps`); keyed by (class, impl).
    impl_provenance: Mapping[tuple[OpClass, AttentionImpl], str] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: The measured GPU this whole profile was carried from (:func:`perfmodel.transfer.transfer_profile`); empty: own.
    transferred_from: str = ""
    #: Error bands (``docs/calibration.md``, "Error bands"): ``{"measured" | "transferred" | "datasheet": {key:
    #: {"q10", "q90", "n"}}, "source": ...}``, quantiles of log(predicted / measured) per band key (``gemm``,
    #: ``attention_decode[sdpa]``, ``elementwise:rmsnorm``, ``*`` for all held-out ops); empty: no band.
    bands: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: An engine's peer all-reduce (:class:`perfmodel.costs.collectives.PeerAllReduce`), priced for every
    #: all-reduce it takes instead of the NCCL classes; None: NCCL only.  Set by
    #: :meth:`with_peer_all_reduce` (a serving engine's file), never read from a profile file.
    peer_all_reduce: PeerAllReduce | None = None

    def band_of(
        self,
        op_class: OpClass,
        keys: tuple[str, ...] = (),
        regime: str | None = None,
        size: str | None = None,
    ) -> tuple[float, float]:
        """(q10, q90) of log(predicted / measured) for an op of ``op_class`` in ``regime`` (``compute``, ``memory``,
        ``latency``) and size class ``size`` (``under_10us`` ...: :func:`perfmodel.costs.size_class_of`): the band
        group of its provenance (``measured``, ``transferred``, ``datasheet``), its first row by :func:`band_row`
        (``keys``, then ``op_class``, then ``*``); (0, 0) in peak mode or without one.  A transferred class takes
        the envelope of its ``transferred`` and ``measured`` rows: the measured band widened by the measured
        transfer error.

        Parameters
        ----------
        op_class : OpClass
            The op's class.
        keys : tuple of str, optional
            Finer band keys tried before ``op_class`` (e.g. the elementwise kernel's name).
        regime : str, optional
            ``compute``, ``memory`` or ``latency``: which bound the op's time has.
        size : str, optional
            The op's size class (``under_10us`` ...).

        Returns
        -------
        tuple of float
            (q10, q90) of log(predicted / measured), dimensionless; (0, 0) when there is no band.
        """
        if self.mode is Mode.PEAK or not self.bands:
            return 0.0, 0.0
        label = self.provenance_of(op_class)
        group = (
            "measured"
            if label.startswith("measured")
            else "transferred"
            if label.startswith("transferred")
            else "datasheet"
        )
        groups = (group, "measured") if group == "transferred" else (group,)
        rows = [band_row(self.bands.get(g) or {}, (*keys, op_class.value), regime, size) for g in groups]
        rows = [r for r in rows if r is not None]
        return (min(r[0] for r in rows), max(r[1] for r in rows)) if rows else (0.0, 0.0)

    @property
    def band_combination(self) -> tuple[float, float]:
        """The factors a phase's summed op bands are scaled by, low end and high end
        (``bands.combination.factor_low``, ``factor_high``; 1 and 1 without them): the errors of a pass's ops
        partly cancel, so the sum of their bands over-covers (:func:`perfmodel.costs.bands.phase_band`,
        ``docs/calibration.md``, "Combining into a phase")."""
        comb = self.bands.get("combination") if self.bands else None
        return (float(comb["factor_low"]), float(comb["factor_high"])) if comb else (1.0, 1.0)

    def band_cells(
        self, op_class: OpClass, keys: tuple[str, ...], regimes: tuple[str, ...], sizes: tuple[str, ...]
    ) -> tuple[tuple[float, float], ...]:
        """:meth:`band_of` of every (regime, size class) cell, regimes outer: looked up once per profile, class and
        keys (a sweep prices the same ops chunk after chunk).

        Parameters
        ----------
        op_class : OpClass
            The op class of the band rows.
        keys : tuple of str
            Band keys to try, most specific first (as :meth:`band_of` takes them).
        regimes : tuple of str
            Regimes (compute, memory, latency bound) of the cells.
        sizes : tuple of str
            Size classes (of the predicted time) of the cells.

        Returns
        -------
        tuple of (float, float)
            ``(q10, q90)`` of log(predicted / measured) per cell, ``len(regimes) * len(sizes)`` of them.
        """
        key = (op_class, keys, regimes, sizes)
        cells = self._band_memo.get(key)
        if cells is None:
            cells = self._band_memo[key] = tuple(
                self.band_of(op_class, keys, r, z) for r in regimes for z in sizes
            )
        return cells

    @functools.cached_property
    def _band_memo(self) -> dict:
        """:meth:`band_cells`'s look-ups (a memo of this profile's immutable fields; not a field itself)."""
        return {}

    def __post_init__(self) -> None:
        if self.attention_impl is None:  # the scenario named none: sdpa, or the impl the profile has
            object.__setattr__(self, "attention_impl", self.default_attention_impl())

    def provenance_of(self, op_class: OpClass) -> str:
        """``measured``, ``transferred from <gpu>`` or ``datasheet``: where ``op_class``'s curve comes from.

        A peak profile is ``datasheet`` throughout; a class without a curve of its own is ``datasheet``,
        except a grouped GEMM priced with the ``gemm`` curve (:mod:`perfmodel.costs.grouped_gemm`), which
        says so: ``measured (gemm curve)``.

        Parameters
        ----------
        op_class : OpClass
            The op class.

        Returns
        -------
        str
            The provenance label.
        """
        if self.mode is Mode.PEAK:
            return "datasheet"
        if op_class in ATTENTION_CLASSES and self.impl_provenance:
            phase = Phase.PREFILL if op_class is OpClass.ATTENTION_PREFILL else Phase.DECODE
            label = self.impl_provenance.get(
                (op_class, (self.attention_impl or DEFAULT_ATTENTION_IMPL).curve(phase))
            )
            if label is not None:
                return label
        if op_class in self.provenance:
            label = self.provenance[op_class]
        elif self.attention_impls(op_class) if op_class in ATTENTION_CLASSES else op_class in self.classes:
            label = "measured"
        else:
            label = "datasheet"
        if op_class is OpClass.GROUPED_GEMM and label == "datasheet" and OpClass.GEMM in self.classes:
            return f"{self.provenance_of(OpClass.GEMM)} (gemm curve)"
        return label

    def provenance_map(self) -> dict[str, str]:
        """:meth:`provenance_of` for every op class, keyed by the class's value (the JSON form).

        Returns
        -------
        dict of str to str
            Op class value to its provenance label.
        """
        return {c.value: self.provenance_of(c) for c in OpClass}

    def provenance_summary(self) -> str:
        """One line: each provenance followed by its classes (``measured: gemm, ...; datasheet: ...``).

        Returns
        -------
        str
            The summary line; ``<label> (every op class)`` when all classes share one provenance.
        """
        groups: dict[str, list[str]] = {}
        for c, label in self.provenance_map().items():
            groups.setdefault(label, []).append(c)
        if len(groups) == 1:
            return f"{next(iter(groups))} (every op class)"
        return "; ".join(f"{label}: {', '.join(cs)}" for label, cs in groups.items())

    def params(self, op_class: OpClass) -> CurveParams:
        """The curve of ``op_class`` (its own parameter type, :data:`perfmodel.costs.PARAMS_TYPES`); the peak
        curve of the class when the profile has none; attention: :meth:`attention_params` of the profile's impl.

        Parameters
        ----------
        op_class : OpClass
            The op class to price.

        Returns
        -------
        CurveParams
            The class's curve (efficiencies, bytes/s and FLOP/s ceilings, latency in seconds).

        Raises
        ------
        ProfileError
            For an attention class, as :meth:`attention_params`.
        """
        if op_class in ATTENTION_CLASSES:
            return self.attention_params(op_class)
        return self.classes.get(op_class, PEAK_PARAMS[op_class])

    def attention_impls(self, op_class: OpClass) -> tuple[AttentionImpl, ...]:
        """The implementations this profile has a curve for in ``op_class``.

        Parameters
        ----------
        op_class : OpClass
            An attention class (``attention_prefill`` or ``attention_decode``).

        Returns
        -------
        tuple of AttentionImpl
            The implementations with a curve, in the enum's order; empty when the profile fits none.
        """
        have = {i for c, i in self.implementations if c is op_class}
        if op_class in self.classes:
            have.add(DEFAULT_ATTENTION_IMPL)
        return tuple(i for i in AttentionImpl if i in have)

    def attention_params(self, op_class: OpClass, impl: AttentionImpl | None = None) -> AttentionParams:
        """The curve of ``impl`` (default: :attr:`attention_impl`) in an attention class.

        Peak profiles (and profiles with no curve in ``op_class``) price every impl at the datasheet
        roofline.  A calibrated profile with curves of other impls but not this one raises :class:`~perfmodel.errors.ProfileError` naming the curves it has
        (never a silent fallback to another kernel's rates).

        Parameters
        ----------
        op_class : OpClass
            An attention class (``attention_prefill`` or ``attention_decode``).
        impl : AttentionImpl, optional
            The implementation to price; default: the profile's :attr:`attention_impl`.

        Returns
        -------
        AttentionParams
            The curve (efficiencies, bytes/s and FLOP/s ceilings, latency in seconds).

        Raises
        ------
        ProfileError
            When the profile has curves of other impls in ``op_class`` but not of ``impl``.
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
            return PEAK_PARAMS[op_class]
        raise ProfileError(
            f"calibration profile of {self.gpu} has no {op_class.value} curve for attention "
            f"implementation {impl.value!r} (measured: {have})"
        )

    def with_peer_all_reduce(self, peer: PeerAllReduce | None) -> "Profile":
        """This profile pricing eligible all-reduces with ``peer`` (None: unchanged).

        Parameters
        ----------
        peer : PeerAllReduce or None
            The peer all-reduce terms; ``None``: unchanged.

        Returns
        -------
        Profile
            A copy with ``peer`` (this profile when unchanged).
        """
        if peer is None or peer == self.peer_all_reduce:
            return self
        return dataclasses.replace(self, peer_all_reduce=peer)

    def with_launch(self, launch: "Launch | str | None") -> "Profile":
        """This profile pricing ``launch`` (``graph`` or ``eager``); a calibrated profile without eager
        terms refuses ``eager``.

        Parameters
        ----------
        launch : Launch or str or None
            ``graph`` or ``eager``; ``None``: unchanged.

        Returns
        -------
        Profile
            A copy pricing ``launch`` (this profile when ``launch`` is ``None``).

        Raises
        ------
        ProfileError
            When ``launch`` is not ``graph`` or ``eager``, or is ``eager`` for a calibrated profile without
            eager terms.
        """
        if launch is None:
            return self
        try:
            launch = Launch(launch)
        except ValueError:
            raise ProfileError(f"launch must be graph or eager, got {launch!r}") from None
        if launch is Launch.EAGER and not self.is_peak and not self.launch_terms:
            raise ProfileError(
                f"calibration profile of {self.gpu} has no eager-launch terms (measured: graph only)"
            )
        return dataclasses.replace(self, launch=launch)

    def default_attention_impl(self) -> AttentionImpl:
        """The impl priced when a scenario names none: ``sdpa``, or, in a profile that has curves but no
        ``sdpa`` curve in both attention classes, the first of ``flash2``, ``triton`` it has in both
        (:func:`perfmodel.analyze` says so in its notes).

        Returns
        -------
        AttentionImpl
            The implementation priced by default.
        """
        have = [set(self.attention_impls(oc)) for oc in ATTENTION_CLASSES]
        if not any(have) or all(DEFAULT_ATTENTION_IMPL in h for h in have if h):
            return DEFAULT_ATTENTION_IMPL
        for impl in (AttentionImpl.FLASH2, AttentionImpl.TRITON):
            if all(impl.curve(ph) in h for ph, h in zip((Phase.PREFILL, Phase.DECODE), have) if h):
                return impl
        return DEFAULT_ATTENTION_IMPL

    def with_attention_impl(self, impl: AttentionImpl | str | None) -> "Profile":
        """This profile pricing attention ops that name no impl with ``impl`` (checked for both phases);
        ``None``: :meth:`default_attention_impl`.

        Parameters
        ----------
        impl : AttentionImpl or str or None
            The implementation (or its name); ``None``: the profile's default.

        Returns
        -------
        Profile
            A copy pricing ``impl``.

        Raises
        ------
        ProfileError
            When the profile has no curve of ``impl`` in an attention class it fits.
        OpDescriptorError
            When ``impl`` names no known implementation.
        """
        impl = self.default_attention_impl() if impl is None else AttentionImpl.parse(impl)
        out = self if impl is self.attention_impl else dataclasses.replace(self, attention_impl=impl)
        for oc in ATTENTION_CLASSES:
            out.attention_params(oc)
        return out

    def elementwise_params(self, name: str) -> ElementwiseParams:
        """The curve of the elementwise kernel ``name`` (the class curve if it has none).

        Parameters
        ----------
        name : str
            The elementwise kernel's name (e.g. ``rmsnorm``).

        Returns
        -------
        ElementwiseParams
            The kernel's curve (bytes/s ceiling, latency in seconds), or the class curve.
        """
        p = self.elementwise.get(name)
        return p if p is not None else self.params(OpClass.ELEMENTWISE)

    @property
    def is_peak(self) -> bool:
        return not self.classes and not self.elementwise and not self.implementations

    def to_dict(self) -> dict[str, Any]:
        """The profile file's JSON form (``docs/calibration.md``, "Format").

        Returns
        -------
        dict of str to JSON values
            The file's content (rates in bytes/s and FLOP/s, latencies in seconds); :func:`load_profile_file`
            reads it back.
        """
        out = {
            "schema_version": SCHEMA_VERSION,
            "gpu": self.gpu,
            "measured_on": dict(self.measured_on),
            "classes": {c.value: p.to_dict() for c, p in self.classes.items()},
        }
        if self.elementwise:
            out["elementwise_kernels"] = {n: p.to_dict() for n, p in self.elementwise.items()}
        if self.ring_attention_step:
            out["ring_attention_step"] = dict(self.ring_attention_step)
        if self.implementations:
            out["implementations"] = {
                curve_key(c, i): p.to_dict()
                for (c, i), p in sorted(self.implementations.items(), key=lambda kv: curve_key(*kv[0]))
            }
        if self.sustained:
            out["sustained"] = dict(self.sustained)
        if self.launch_terms:
            out["launch"] = dict(self.launch_terms)
        if self.attention_kernels:
            out["attention_kernels"] = {k: list(v) for k, v in sorted(self.attention_kernels.items())}
        if self.bands:
            out["bands"] = {
                g: (
                    {k: dict(v) if isinstance(v, Mapping) else v for k, v in t.items()}
                    if isinstance(t, Mapping)
                    else t
                )
                for g, t in self.bands.items()
            }
        if self.collective_launch:
            out["collective_launch"] = {
                w.value: {c.value: p.to_dict() for c, p in per.items()}
                for w, per in self.collective_launch.items()
            }
        return out


def peak_profile(gpu: GPU | str) -> Profile:
    """The theoretical-peak model: every efficiency 1, every latency 0.

    Parameters
    ----------
    gpu : GPU or str
        The accelerator.

    Returns
    -------
    Profile
        The datasheet roofline (a bound): efficiencies 1, latencies 0 s.
    """
    return Profile(gpu=gpu if isinstance(gpu, str) else gpu.name, mode=Mode.PEAK)


def params_from_dict(raw: Any, where: str, op_class: OpClass) -> CurveParams:
    """Parse and validate one curve of ``op_class`` (its parameter type, :data:`perfmodel.costs.PARAMS_TYPES`);
    ``where`` names it in errors."""
    return PARAMS_TYPES[op_class].from_dict(raw, where)


def profile_from_dict(data: Any, where: str = "<dict>") -> Profile:
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise ProfileError(f"{where}: a profile needs a 'classes' object")
    if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ProfileError(
            f"{where}: schema_version {data.get('schema_version')} unsupported (want {SCHEMA_VERSION})"
        )
    classes = {}
    for name, raw in data["classes"].items():
        try:
            oc = OpClass(name)
        except ValueError:
            raise ProfileError(
                f"{where}: unknown op class {name!r}; known: {', '.join(c.value for c in OpClass)}"
            ) from None
        classes[oc] = params_from_dict(raw, f"{where}: class {name!r}", oc)
    ew = data.get("elementwise_kernels", {})
    if not isinstance(ew, dict):
        raise ProfileError(f"{where}: 'elementwise_kernels' must be an object")
    named = {
        str(n): ElementwiseParams.from_dict(raw, f"{where}: elementwise kernel {n!r}")
        for n, raw in ew.items()
    }
    ring = _ring_step_from_dict(data.get("ring_attention_step", {}), where)
    impls_raw = data.get("implementations", {})
    if not isinstance(impls_raw, dict):
        raise ProfileError(f"{where}: 'implementations' must be an object")
    impls = {
        parse_curve_key(k, where): AttentionParams.from_dict(raw, f"{where}: implementation {k!r}")
        for k, raw in impls_raw.items()
    }
    kern_raw = data.get("attention_kernels", {})
    if not isinstance(kern_raw, dict) or not all(
        isinstance(v, list) and all(isinstance(n, str) for n in v) for v in kern_raw.values()
    ):
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
        sustained=MappingProxyType(
            sustained_from_dict(data["sustained"], where) if "sustained" in data else {}
        ),
        launch_terms=MappingProxyType(_launch_from_dict(data.get("launch", {}), where)),
        bands=MappingProxyType(bands_from_dict(data.get("bands", {}), where)),
        collective_launch=MappingProxyType(
            _collective_launch_from_dict(data.get("collective_launch", {}), where)
        ),
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
            raise ProfileError(
                f"{where}: collective_launch has unknown way {way!r}; known: "
                f"{', '.join(x.value for x in CollectiveLaunch)}"
            ) from None
        if not isinstance(per, dict):
            raise ProfileError(f"{where}: collective_launch.{way} must be an object")
        classes = {}
        for name, p in per.items():
            if name not in _COLLECTIVE_CLASS_NAMES:
                raise ProfileError(
                    f"{where}: collective_launch.{way} has {name!r}, not a collective class; known: "
                    f"{', '.join(sorted(_COLLECTIVE_CLASS_NAMES))}"
                )
            classes[OpClass(name)] = CollectiveParams.from_dict(p, f"{where}: collective_launch.{way}.{name}")
        out[w] = MappingProxyType(classes)
    return out


_COLLECTIVE_CLASS_NAMES = frozenset(c.value for c in COLLECTIVE_CLASSES)


BAND_GROUPS = ("measured", "transferred", "datasheet")


def band_lookup(key: str, regime: str | None = None, size: str | None = None) -> tuple[str, ...]:
    """The rows of band key ``key`` an op of ``regime`` and size class ``size`` looks up, in order:
    ``<key>|<size>``, ``<key>|<regime>``, ``<key>`` (``docs/calibration.md``, "Error bands")."""
    return (*((f"{key}|{size}",) if size else ()), *((f"{key}|{regime}",) if regime else ()), key)


def band_row(
    table: Mapping[str, Any], keys: tuple[str, ...], regime: str | None = None, size: str | None = None
) -> tuple[float, float] | None:
    """(q10, q90) of the first row of ``table`` an op looks up: each of ``keys`` (most specific first, e.g.
    ``attention_decode[stream_k]``, ``attention_decode``), then ``*``, each by :func:`band_lookup`; None when the
    table has none of them."""
    for k in dict.fromkeys((*keys, "*")):
        for key in band_lookup(k, regime, size):
            if key in table:
                return table[key]["q10"], table[key]["q90"]
    return None


def bands_from_dict(raw: Any, where: str) -> dict[str, Any]:
    """Validate the optional ``bands`` object: groups of :data:`BAND_GROUPS`, each mapping band keys to
    ``{"q10", "q90"}`` (finite, q10 <= q90; optional ``n``, a count, ``families``, the shape families the
    residuals came from, and ``level``, the central share of the quantiles), plus ``source`` and ``coverage``
    notes; a profile saved again keeps them."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: 'bands' must be an object")
    extra = set(raw) - set(BAND_GROUPS) - {"source", "coverage", "combination"}
    if extra:
        raise ProfileError(
            f"{where}: bands has unknown group(s) {', '.join(sorted(extra))}; known: {', '.join(BAND_GROUPS)}"
        )
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
            if not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (q, h)
            ):
                raise ProfileError(f"{where}: bands.{g}.{k} needs finite numbers q10 and q90")
            if q > h:
                raise ProfileError(f"{where}: bands.{g}.{k}: q10 {q} > q90 {h}")
            entry = {"q10": float(q), "q90": float(h)}
            if "n" in v:
                entry["n"] = int(v["n"])
            if "families" in v:  # the shape families the row's residuals come from
                entry["families"] = int(v["families"])
            if "level" in v:  # the central share the row's quantiles were taken at
                entry["level"] = float(v["level"])
            table[str(k)] = MappingProxyType(entry)
        out[g] = MappingProxyType(table)
    for k in ("source", "coverage"):
        if k in raw:
            out[k] = raw[k] if isinstance(raw[k], (int, float, str)) else str(raw[k])
    if "combination" in raw:
        comb = raw["combination"] if isinstance(raw["combination"], dict) else {}
        for side in ("factor_low", "factor_high"):
            f = comb.get(side)
            if not (
                isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and 0 < f <= 4
            ):
                raise ProfileError(f"{where}: bands.combination needs {side} in (0, 4], got {f!r}")
        out["combination"] = MappingProxyType(
            {**comb, "factor_low": float(comb["factor_low"]), "factor_high": float(comb["factor_high"])}
        )
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
    """Load a profile file; refuse one written for another GPU than ``gpu``.

    Parameters
    ----------
    path : str or Path
        A profile JSON file (``hw/data/profiles/<gpu>.json`` schema).
    gpu : GPU, str or None
        The GPU it must be written for; None: not checked.

    Returns
    -------
    Profile

    Raises
    ------
    ProfileError
        When the file is missing, not JSON, out of range, or for another GPU.
    """
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


def resolve_profile(
    gpu: GPU,
    mode: Mode | str = Mode.CALIBRATED,
    profile: Profile | str | Path | None = None,
    attention_impl: AttentionImpl | str | None = None,
    launch: Launch | str | None = None,
) -> Profile:
    """The profile to use for ``gpu`` in ``mode``, pricing attention with ``attention_impl``.

    In calibrated mode without a shipped profile, a profile transferred from a measured GPU
    (:func:`perfmodel.transfer.transfer_profile`, the source chosen by
    :func:`perfmodel.transfer.choose_source`); a shipped profile without collective classes takes
    those of a measured GPU with the same kind of link.  Only when no GPU has a shipped profile
    does it fall back to peak, with a ``UserWarning`` saying so.  Each result names its
    provenance per op class (:meth:`Profile.provenance_of`).  An explicit ``profile`` (object or
    path) wins and is used as it is.
    ``attention_impl`` (default: the profile's, ``sdpa``) must have curves in a calibrated profile.

    Parameters
    ----------
    gpu : GPU
        The accelerator.
    mode : Mode or str
        ``calibrated`` (default) or ``peak``.
    profile : Profile, str, Path or None
        An explicit profile (object or path), used as it is.
    attention_impl : AttentionImpl, str or None
        The attention implementation whose curves price attention.
    launch : Launch, str or None
        ``graph`` (default) or ``eager``.

    Returns
    -------
    Profile

    Raises
    ------
    ProfileError
        When an explicit profile cannot be read or has no curves for ``attention_impl`` or
        ``launch``.
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
    shipped = tuple(p for _, p in measured.values())
    done = _RESOLVED.get(gpu.name)
    if (
        done is not None
        and done[0] == gpu
        and len(done[1]) == len(shipped)
        and all(a is b for a, b in zip(done[1], shipped))
    ):
        return done[2]  # the same GPU and the same shipped profiles: the same result
    if gpu.name in measured and measured[gpu.name][0] == gpu:
        out = transfer.completed_profile(measured[gpu.name][1], gpu, measured)
    elif shipped_profile_path(gpu).exists():  # a shipped profile of a GPU changed by what-if overrides
        return transfer.completed_profile(load_profile_file(shipped_profile_path(gpu), gpu), gpu, measured)
    else:
        src = transfer.choose_source(gpu, [g for g, _ in measured.values()])
        if src is None:
            warnings.warn(
                f"no calibration profile for {gpu.name} and none to transfer; using the theoretical-peak model "
                f"(efficiency 1, latency 0)",
                UserWarning,
                stacklevel=3,
            )
            return peak_profile(gpu)
        out = transfer.with_transferred_collectives(
            transfer.transfer_profile(measured[src.name][1], src, gpu), gpu, measured
        )
    _RESOLVED[gpu.name] = (gpu, shipped, out)
    return out


#: The last calibrated profile resolved for each GPU name: (GPU, the shipped profiles it was resolved from, profile).
#: A GPU or a shipped profile file that changed resolves again (profiles are read per file version).
_RESOLVED: dict[str, tuple[GPU, tuple[Profile, ...], Profile]] = {}


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
