"""Transferred calibration profiles: a measured profile carried to a GPU that was not measured.

A profile holds fractions of the datasheet figures (efficiencies), seconds (latencies) and shape
parameters (tiles, split rules, knees), so most of it carries to another GPU by pricing the same
fractions against the target's own datasheet (``hw/data/gpus/<gpu>.yaml``).  The rules
(``docs/calibration.md``, "Transferred profiles"):

Source GPU (:func:`choose_source`)
    Among the GPUs with a shipped (measured) profile: the same vendor first, then the nearest
    architecture generation (:data:`ARCH_GENERATION`; Hopper for Hopper, Ampere and Blackwell
    one generation away, Ada 0.1), then the nearest datasheet HBM bandwidth (log ratio), then the
    name.  With the shipped H100 SXM and H200 profiles: H100 PCIe and the A100s take the H100,
    B200 and GB200 the H200; L40S the H100; MI300X/MI325X the H200 and Gaudi 3 the H100 (both
    other vendors: family-independent part only, below).

Same vendor: every class, named elementwise kernel and attention implementation carries, field
by field (:func:`carry_params`):
    - efficiencies (``*_eff``), ``overlap``, ``wave_quant``, ``unit_share``: fractions, unchanged;
    - latencies and per-unit seconds (``latency_s``, ``tile_overhead_s``, ``unit_overhead_s``,
      ``split_*_s``, ``reduce_row_s``, ``merge_*_s``, ``unit_step_s``): seconds, unchanged (kernel
      launch and fixed costs of the same driver and libraries);
    - tiles, ``tile_m_min``, ``units_per_sm``, ``split_rule``, ``tile_choice``, ``score_flops``:
      kept; waves, programs in flight and split counts are computed on the target's SM count by
      the cost functions themselves;
    - ``ramp_bytes`` / ``ramp_flops`` (a fill time of the pipe, ``x / (x + ramp)``): scaled by the
      target's rate over the source's (bandwidth of the class's path, bf16 peak), so the fill time
      in seconds carries;
    - ``knee_bytes`` and ``cache_bytes`` of on-device memory classes (device copies, elementwise
      kernels), which model the write-back L2: scaled by the L2 ratio; ``row_knee_bytes`` and
      ``row_knee_width_bytes`` (a norm row kept on chip): by the shared memory per SM ratio; knees
      of host copies (host caches) and collectives (NCCL protocol switch): unchanged;
    - ``bandwidth_bytes_per_s`` (an absolute rate replacing the datasheet): scaled by the path's
      datasheet ratio;
    - the eager-launch terms carry (host and driver); the sustained-clock terms do not (board power
      limit); nor do ``attention_kernels`` (names of the source's kernels).

Another vendor: only the family-independent part, :data:`FAMILY_INDEPENDENT_FIELDS` of the classes
in :data:`FAMILY_INDEPENDENT_CLASSES` (how much of the datasheet bandwidth a streaming kernel and a
host copy reach, and where the size knee sits); GEMM, attention, tiles, latencies and collectives
are priced at the datasheet, and the provenance says ``(family-independent part)``.

Collectives (:func:`with_transferred_collectives`): a GPU whose profile has no collective classes
takes those of a measured GPU with the same kind of link (NVLink and NVSwitch are one kind), with
the same field rules; without one the link's datasheet bandwidth and per-message latency price
them (never zero latency: :func:`perfmodel.costs.collectives.path_rate`).

Pure functions of :class:`perfmodel.calibration.Profile` and :class:`perfmodel.hw.spec.GPU`; no torch.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from perfmodel.hw.spec import GPU, Dtype, LinkKind
from perfmodel.calibration import ATTENTION_CLASSES, Mode, OpClass, Profile
from perfmodel.ops import DEFAULT_ATTENTION_IMPL
from perfmodel.costs.base import CurveParams
from perfmodel.costs.collectives import COLLECTIVE_CLASSES

#: Architecture generations of the shipped GPUs (NVIDIA: CUDA compute capability).
ARCH_GENERATION: Mapping[str, float] = MappingProxyType(
    {
        "ampere": 8.0,
        "ada": 8.9,
        "hopper": 9.0,
        "blackwell": 10.0,
    }
)

HOST_COPY_CLASSES: tuple[OpClass, ...] = (
    OpClass.MEMCPY_H2D,
    OpClass.MEMCPY_D2H,
    OpClass.MEMCPY_H2D_PAGEABLE,
    OpClass.MEMCPY_D2H_PAGEABLE,
)
#: Classes whose ``knee_bytes`` / ``cache_bytes`` model the L2 (scaled by the L2 ratio).
L2_CLASSES: tuple[OpClass, ...] = (OpClass.MEMCPY_D2D, OpClass.ELEMENTWISE)
#: What another vendor's GPU takes from a measured profile: streaming and host-copy rates.
FAMILY_INDEPENDENT_CLASSES: tuple[OpClass, ...] = (
    OpClass.MEMCPY_D2D,
    OpClass.ELEMENTWISE,
    *HOST_COPY_CLASSES,
)
FAMILY_INDEPENDENT_FIELDS: tuple[str, ...] = ("memory_eff", "tail_memory_eff", "knee_bytes")
NVLINK_KINDS = frozenset({LinkKind.NVLINK, LinkKind.NVSWITCH})
PARTIAL_SUFFIX = " (family-independent part)"


class ProvenanceKind(str, enum.Enum):
    """Where the curve pricing an op class comes from."""

    MEASURED = "measured"
    TRANSFERRED = "transferred"
    DATASHEET = "datasheet"


def provenance_label(kind: ProvenanceKind, source: str = "", partial: bool = False) -> str:
    """``measured``, ``datasheet`` or ``transferred from <gpu>`` (``(family-independent part)`` if ``partial``)."""
    if kind is ProvenanceKind.TRANSFERRED:
        return f"transferred from {source}" + (PARTIAL_SUFFIX if partial else "")
    return kind.value


def link_kind_group(kind: LinkKind) -> frozenset[LinkKind]:
    """The link kinds a collective curve carries between (NVLink and NVSwitch are one)."""
    return NVLINK_KINDS if kind in NVLINK_KINDS else frozenset({kind})


def _log_ratio(a: float, b: float) -> float:
    return abs(math.log(a / b)) if a > 0 and b > 0 else math.inf


def _arch_distance(a: GPU, b: GPU) -> float:
    ga, gb = ARCH_GENERATION.get(a.architecture), ARCH_GENERATION.get(b.architecture)
    if a.architecture and a.architecture == b.architecture:
        return 0.0
    return abs(ga - gb) if ga is not None and gb is not None else math.inf


def source_key(target: GPU, source: GPU) -> tuple:
    """Sort key of a candidate source: vendor, architecture generation, HBM bandwidth, name."""
    return (
        source.vendor != target.vendor,
        _arch_distance(target, source),
        _log_ratio(target.hbm_bytes_per_s, source.hbm_bytes_per_s),
        source.name,
    )


def choose_source(target: GPU, candidates: Sequence[GPU]) -> GPU | None:
    """The measured GPU whose profile ``target`` takes (module docstring); ``None`` without candidates."""
    others = [c for c in candidates if c.name != target.name]
    return min(others, key=lambda c: source_key(target, c)) if others else None


def choose_link_source(target: GPU, candidates: Sequence[GPU]) -> GPU | None:
    """The measured GPU with collective curves and the same kind of link as ``target`` (nearest link bandwidth)."""
    group = link_kind_group(target.fabric_kind)
    same = [c for c in candidates if c.name != target.name and c.fabric_kind in group]
    return (
        min(
            same,
            key=lambda c: (
                _log_ratio(target.nvlink_bytes_per_s_per_direction, c.nvlink_bytes_per_s_per_direction),
                c.name,
            ),
        )
        if same
        else None
    )


def _path_bytes_per_s(gpu: GPU, op_class: OpClass) -> float:
    if op_class in HOST_COPY_CLASSES:
        return gpu.pcie_bytes_per_s_per_direction
    if op_class in COLLECTIVE_CLASSES:
        return gpu.nvlink_bytes_per_s_per_direction or gpu.pcie_bytes_per_s_per_direction
    return gpu.hbm_bytes_per_s


def _ratio(target: float, source: float) -> float:
    return target / source if source > 0 and target > 0 else 1.0


def carry_params(p: CurveParams, op_class: OpClass, source: GPU, target: GPU) -> CurveParams:
    """``p`` (fitted on ``source``) for ``target`` of the same vendor: the field rules of the module docstring
    (for the fields ``p``'s class has), the same parameter type."""
    bw = _ratio(_path_bytes_per_s(target, op_class), _path_bytes_per_s(source, op_class))
    factors = {
        "ramp_bytes": bw,
        "bandwidth_bytes_per_s": bw,
        "ramp_flops": _ratio(target.flops_for(Dtype.BF16), source.flops_for(Dtype.BF16)),
    }
    if op_class in L2_CLASSES:
        l2 = _ratio(target.l2_bytes, source.l2_bytes)
        factors |= {"knee_bytes": l2, "cache_bytes": l2}
    smem = _ratio(target.smem_bytes_per_sm, source.smem_bytes_per_sm)
    factors |= {"row_knee_bytes": smem, "row_knee_width_bytes": smem}
    have = p.field_names()
    return dataclasses.replace(p, **{k: getattr(p, k) * f for k, f in factors.items() if k in have})


def family_independent_params(p: CurveParams, op_class: OpClass, source: GPU, target: GPU) -> CurveParams:
    """Only :data:`FAMILY_INDEPENDENT_FIELDS` of ``p`` (knee scaled as :func:`carry_params` does); the rest peak."""
    carried = carry_params(p, op_class, source, target)
    out = type(p)().replace_fields({f: getattr(carried, f) for f in FAMILY_INDEPENDENT_FIELDS})
    return out if out.memory_eff <= 1.5 else dataclasses.replace(out, memory_eff=1.5)


def _has_curve(profile: Profile, op_class: OpClass) -> bool:
    if op_class in ATTENTION_CLASSES:
        return bool(profile.attention_impls(op_class))
    return op_class in profile.classes


def transfer_profile(source: Profile, source_gpu: GPU, target: GPU) -> Profile:
    """``source`` (measured on ``source_gpu``) carried to ``target``, with its provenance per op class.

    Raises nothing for a valid ``source``; the result is a calibrated profile whose ``gpu`` is
    ``target.name`` and whose ``provenance`` names ``source_gpu`` for every class it carries.
    """
    same = source_gpu.vendor == target.vendor
    label = provenance_label(ProvenanceKind.TRANSFERRED, source_gpu.name, partial=not same)
    if same:
        classes = {c: carry_params(p, c, source_gpu, target) for c, p in source.classes.items()}
        named = {
            n: carry_params(p, OpClass.ELEMENTWISE, source_gpu, target) for n, p in source.elementwise.items()
        }
        impls = {k: carry_params(p, k[0], source_gpu, target) for k, p in source.implementations.items()}
    else:
        classes = {
            c: family_independent_params(p, c, source_gpu, target)
            for c, p in source.classes.items()
            if c in FAMILY_INDEPENDENT_CLASSES
        }
        named = {
            n: family_independent_params(p, OpClass.ELEMENTWISE, source_gpu, target)
            for n, p in source.elementwise.items()
        }
        impls = {}
    out = Profile(
        gpu=target.name,
        mode=Mode.CALIBRATED,
        classes=MappingProxyType(classes),
        measured_on=MappingProxyType({"transferred_from": source_gpu.name, **dict(source.measured_on)}),
        source_path=source.source_path,
        elementwise=MappingProxyType(named),
        implementations=MappingProxyType(impls),
        launch_terms=source.launch_terms if same else MappingProxyType({}),
        transferred_from=source_gpu.name,
        bands=source.bands,  # the source's transferred and datasheet bands price the carried classes
    )
    prov = {c: label if _has_curve(out, c) else ProvenanceKind.DATASHEET.value for c in OpClass}
    return dataclasses.replace(out, provenance=MappingProxyType(prov))


def with_transferred_gaps(profile: Profile, gpu: GPU, measured: Mapping[str, tuple[GPU, Profile]]) -> Profile:
    """``profile`` (measured on ``gpu``) with the curves it lacks carried from a measured GPU of the same vendor.

    The source is :func:`choose_source` among the other measured GPUs of ``gpu``'s vendor.  Carried
    (:func:`carry_params`), each only where ``profile`` has none of its own: op classes other than
    the collectives (:func:`with_transferred_collectives` takes those by link kind), attention
    implementations per attention class (e.g. ``sdpa`` for a GPU measured with ``flash2`` only),
    and named elementwise kernels.  A carried class says ``transferred from <gpu>`` in
    ``provenance``, a carried implementation in ``impl_provenance``.  Unchanged without a source.
    """
    src = choose_source(gpu, [g for g, _ in measured.values() if g.vendor == gpu.vendor])
    if src is None:
        return profile
    sp = measured[src.name][1]
    label = provenance_label(ProvenanceKind.TRANSFERRED, src.name)
    classes, prov = dict(profile.classes), dict(profile.provenance)
    impls, impl_prov = dict(profile.implementations), dict(profile.impl_provenance)
    for c, p in sp.classes.items():
        if c in classes or c in COLLECTIVE_CLASSES:
            continue
        if c in ATTENTION_CLASSES:  # a class's own curve is its default implementation's (``sdpa``)
            if (c, DEFAULT_ATTENTION_IMPL) not in impls:
                classes[c] = carry_params(p, c, src, gpu)
                impl_prov[(c, DEFAULT_ATTENTION_IMPL)] = label
            continue
        classes[c] = carry_params(p, c, src, gpu)
        prov[c] = label
    for (c, impl), p in sp.implementations.items():
        if (c, impl) not in impls:
            impls[(c, impl)] = carry_params(p, c, src, gpu)
            impl_prov[(c, impl)] = label
    named = dict(profile.elementwise)
    for n, p in sp.elementwise.items():
        if n not in named:
            named[n] = carry_params(p, OpClass.ELEMENTWISE, src, gpu)
    if (
        len(classes) == len(profile.classes)
        and len(impls) == len(profile.implementations)
        and len(named) == len(profile.elementwise)
    ):
        return profile
    return dataclasses.replace(
        profile,
        classes=MappingProxyType(classes),
        provenance=MappingProxyType(prov),
        implementations=MappingProxyType(impls),
        impl_provenance=MappingProxyType(impl_prov),
        elementwise=MappingProxyType(named),
        attention_impl=None,
    )


def completed_profile(profile: Profile, gpu: GPU, measured: Mapping[str, tuple[GPU, Profile]]) -> Profile:
    """A shipped ``profile`` of ``gpu`` with what it lacks carried from the measured GPUs: its missing curves
    (:func:`with_transferred_gaps`), then its missing collectives (:func:`with_transferred_collectives`)."""
    return with_transferred_collectives(with_transferred_gaps(profile, gpu, measured), gpu, measured)


def with_transferred_collectives(
    profile: Profile, gpu: GPU, measured: Mapping[str, tuple[GPU, Profile]]
) -> Profile:
    """``profile`` with the collective classes it lacks taken from a measured GPU with the same kind of link.

    ``measured`` maps GPU names to (GPU, profile) of the measured profiles.  The classes come from
    :func:`choose_link_source` among those that have all of them; a profile that has any collective
    class of its own, or a GPU with no such source, is returned unchanged (datasheet link figures).
    """
    if any(c in profile.classes for c in COLLECTIVE_CLASSES):
        return profile
    have = [g for g, p in measured.values() if any(c in p.classes for c in COLLECTIVE_CLASSES)]
    src = choose_link_source(gpu, have)
    if src is None:
        return profile
    src_prof = measured[src.name][1]
    label = provenance_label(ProvenanceKind.TRANSFERRED, src.name)
    classes = dict(profile.classes)
    prov = dict(profile.provenance)
    for c in COLLECTIVE_CLASSES:
        if c in src_prof.classes:
            classes[c] = carry_params(src_prof.classes[c], c, src, gpu)
            prov[c] = label
    return dataclasses.replace(profile, classes=MappingProxyType(classes), provenance=MappingProxyType(prov))
