"""One scenario type, validated once, and one set of rules for every command.

A :class:`Scenario` (model, GPU, workload, :class:`Layout`, precision, knobs, profile) is built by
:meth:`Scenario.make`, which applies :func:`validate_scenario` once; ``analyze``, ``sweep``, the
simulator's ``Deployment``, the planners and the dashboard accept it.  Each rule is decided here:

- a context (prompt plus output tokens) beyond the model's trained window is priced, with a note
  (:func:`window_note`); it is never an error;
- ``pp`` must divide the model's layers (:func:`perfmodel.parallel.check_pp`), ``tp`` the heads
  (:func:`perfmodel.layers.check_tp`);
- zero output tokens are allowed (a prefill alone); prompts, batches and degrees are >= 1;
- ``mode`` is ``peak`` or ``calibrated``; anything else is :class:`InvalidInputError` naming the choices;
- a layout spans no more GPUs than its system describes (without a system: one node of
  :data:`perfmodel.comm.DEFAULT_NODE_GPUS`); a larger group is :class:`~perfmodel.comm.GroupTooLargeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfmodel.hw.spec import GPU, Dtype
from perfmodel.calibration import Launch, Mode, Profile
from perfmodel.degrees import attention_groups, group_world
from perfmodel.errors import InvalidInputError
from perfmodel.knobs import Knobs
from perfmodel.layers import Precision
from perfmodel.models import ModelSpec
from perfmodel.ops import AttentionImpl
from perfmodel.phases import DEFAULT_PREFILL_CHUNK_TOKENS, DEFAULT_RESERVE_FRACTION


def check_mode(mode: Any) -> Mode:
    """``mode`` as a :class:`Mode`; :class:`InvalidInputError` naming the choices otherwise."""
    if isinstance(mode, Mode):
        return mode
    try:
        return Mode(mode)
    except ValueError:
        raise InvalidInputError(
            f"mode must be one of {', '.join(m.value for m in Mode)}, got {mode!r}"
        ) from None


def window_note(model, tokens: Any) -> str | None:
    """The note for a context of ``tokens`` (prompt + output; the largest of an array) beyond the model's
    trained window, or None."""
    top = int(np.max(tokens))
    if model.max_context and top > model.max_context:
        return f"context {top} exceeds the model's trained window of {model.max_context} tokens"
    return None


def check_ints(name: str, values: Any, minimum: int = 1) -> np.ndarray:
    """``values`` (an int, or an array of them: a sweep's axis) as a flat int64 array; otherwise
    :class:`InvalidInputError` naming ``name`` and the first bad value (:class:`NonFiniteError` for NaN,
    infinity or a number beyond the float range).  The one integer check of every entry point."""
    from perfmodel.checks import finite_float

    arr = np.atleast_1d(np.asarray(values))
    if arr.size == 0:
        raise InvalidInputError(f"{name} is empty")
    flat = arr.ravel()
    if arr.dtype.kind not in "iuf":  # bools, strings, objects (also Python ints beyond int64): one by one
        for v in flat:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {_plain(v)!r}")
            finite_float(name, v)
        flat = flat.astype(np.float64)
    f = flat.astype(np.float64)
    bad = ~np.isfinite(f) | (f < minimum) | (f != np.round(f)) | (f >= 2.0**63)
    if np.any(bad):
        v = _plain(flat[int(np.argmax(bad))])
        finite_float(name, v)
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return flat.astype(np.int64)


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python number it holds (for messages)."""
    return v.item() if isinstance(v, np.generic) else v


@dataclass(frozen=True)
class Layout:
    """How one model instance is split over GPUs.

    Attributes
    ----------
    tp, pp, sp, ep : int
        Tensor-, pipeline-, sequence- (prefill) and expert-parallel degrees.
    sp_kind : str
        ``ulysses``, ``ring``, ``hybrid`` or ``tokenring``.
    topology : str or None
        A system of ``hw/data/systems``; None: :func:`perfmodel.comm.default_topology` (one node of up to 8
        GPUs, else the smallest shipped system that holds them).
    attention_dp : int
        Data-parallel attention groups of ``tp`` GPUs, each serving its own requests, with the MoE layers over
        all of them (:func:`perfmodel.parallel.check_attention_dp`; DeepSeek's serving layout).  With 1 and
        ``ep`` wider than ``tp * sp``, the layout has ``ep // (tp * sp)`` such groups all the same
        (:attr:`attention_groups`); a value above 1 with ``ep`` > 1 must be ``ep / tp``.
    """

    tp: int = 1
    pp: int = 1
    sp: int = 1
    sp_kind: str = "ring"
    ep: int = 1
    topology: str | None = None
    attention_dp: int = 1

    @property
    def multi(self) -> bool:
        """Priced by :mod:`perfmodel.parallel` (beyond one TP group on the default node)."""
        return self.pp > 1 or self.sp > 1 or self.ep > 1 or self.attention_dp > 1 or bool(self.topology)

    @property
    def attention_groups(self) -> int:
        """Data-parallel attention groups per pipeline stage (:func:`perfmodel.degrees.attention_groups`)."""
        return attention_groups(self.tp, self.ep, self.attention_dp, self.sp)

    @property
    def world(self) -> int:
        """GPUs one instance spans (:func:`perfmodel.degrees.group_world`)."""
        return int(group_world(self.tp, self.pp, self.sp, self.ep, self.attention_dp))


def validate_scenario(
    model,
    context_len: Any = None,
    output_tokens: Any = 0,
    tp: Any = None,
    pp: Any = 1,
    mode: Any = None,
    *,
    batch: Any = None,
    sp: Any = 1,
    sp_kind: str = "ring",
    ep: Any = 1,
    topology: str | None = None,
    gpu: GPU | None = None,
    knobs: Knobs | None = None,
    chunk_tokens: Any = None,
    reserve_fraction: Any = None,
    attention_dp: Any = 1,
) -> list[str]:
    """Apply the rules above to a scenario (scalars, or arrays for a sweep's axes); returns its notes and
    raises the typed errors (:mod:`perfmodel.errors`).  The one check behind every entry point.

    Parameters
    ----------
    model : ModelSpec
        As configured (``knobs`` are applied here for the checks that depend on them).
    context_len, output_tokens, batch : int or array of int, tokens / users
        Prompt and generated tokens (the largest sum is checked against the window), users.
    tp : int or array of int, optional
    pp, sp, ep, attention_dp : int
    sp_kind : str
    topology : str, optional
    gpu : GPU, optional
        With it, the layout's GPUs are checked against the system (or the default node).
    mode : str or Mode, optional
    knobs : Knobs, optional
    chunk_tokens : int, optional, tokens
    reserve_fraction : float, optional
    """
    from perfmodel.knobs import effective_model
    from perfmodel.layers import check_tp

    if mode is not None:
        check_mode(mode)
    if knobs is not None and not isinstance(knobs, Knobs):
        raise InvalidInputError(f"knobs must be a Knobs value, got {knobs!r}")
    ctx = check_ints("context_len", context_len, 1) if context_len is not None else None
    out = check_ints("output_tokens", output_tokens if output_tokens is not None else 0, 0)
    if batch is not None:
        check_ints("batch", batch, 1)
    tps = check_ints("tp", tp, 1) if tp is not None else None
    pp, sp, ep, dp = (
        int(check_ints(k, v, 1)[0])
        for k, v in (("pp", pp), ("sp", sp), ("ep", ep), ("attention_dp", attention_dp))
    )
    if chunk_tokens is not None:
        check_ints("chunk_tokens", chunk_tokens, 1)
    if reserve_fraction is not None and not 0 <= reserve_fraction < 1:
        raise InvalidInputError(f"reserve_fraction must be in [0, 1), got {reserve_fraction}")
    kn = knobs if knobs is not None and knobs.active else None
    m = effective_model(model, kn)
    if kn is not None:
        kn.check(m, ctx)
    if tps is not None:
        for t in tps:
            check_tp(m, int(t))
    if (
        pp > 1 or sp > 1 or ep > 1 or dp > 1 or topology
    ):  # one TP group: nothing of perfmodel.parallel to check
        from perfmodel.parallel import check_pp, layout as check_layout

        check_pp(model, pp)
        check_layout(m, tps if tps is not None else 1, pp, sp, sp_kind, ep, topology, kn, dp)
    notes = []
    if gpu is not None:
        n = check_world(gpu, tps if tps is not None else [1], pp, sp, ep, topology, dp)
        if n:
            notes.append(n)
    if ctx is not None:
        n = window_note(m, int(ctx.max()) + int(out.max()))
        if n:
            notes.append(n)
    return notes


def check_world(
    gpu: GPU, tps, pp: int, sp: int, ep: int, topology: str | None, attention_dp: int = 1
) -> str | None:
    """The layout's GPUs fit the system named, or without one the default node or the smallest shipped
    system that holds them (:func:`perfmodel.comm.default_topology`); otherwise
    :class:`~perfmodel.comm.GroupTooLargeError`.  Returns the note naming that shipped system, if one is used."""
    from perfmodel.comm import DEFAULT_NODE_GPUS, place, resolve_topology

    world = max(int(group_world(int(t), pp, sp, ep, attention_dp)) for t in tps)
    topo = resolve_topology(topology, gpu, world)
    place(topo, world)
    if topology or world <= DEFAULT_NODE_GPUS:
        return None
    return (
        f"no system named: the {world} GPUs are priced on {topo.name} ({topo.num_nodes} node(s) of "
        f"{topo.gpus_per_node}), the smallest shipped system that holds them"
    )


@dataclass(frozen=True)
class Scenario:
    """One deployment scenario, checked once by :meth:`make` (:func:`validate_scenario`).

    Attributes
    ----------
    model : ModelSpec
        As configured; ``priced_model`` has the knobs applied.
    gpu : GPU
    context_len, output_tokens : int, tokens
    batch : int, users decoding together
    layout : Layout
    precision : Precision
        Weight, activation and KV formats (before the knobs; ``priced_precision`` after).
    profile : Profile
        The resolved curves: its ``mode``, ``attention_impl`` and ``launch``.
    knobs : Knobs or None
        Active knobs only (None: none).
    chunk_tokens : int or None, tokens
    reserve_fraction : float
    notes : tuple of str
        What the rules noted (a context beyond the trained window, a fallback profile ...).
    """

    model: ModelSpec
    gpu: GPU
    context_len: int
    output_tokens: int
    batch: int
    layout: Layout
    precision: Precision
    profile: Profile
    knobs: Knobs | None = None
    chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS
    reserve_fraction: float = DEFAULT_RESERVE_FRACTION
    notes: tuple[str, ...] = field(default_factory=tuple)
    raw_kv_dtype: str | None = None  # the kv_dtype argument given (the baseline without knobs keeps it)
    moe_placement: Any = None  # perfmodel.ep_route.MoePlacement: prices the EP all-to-all from its traffic
    #: A ragged batch: each prompt's length (``batch`` of them, the longest ``context_len``); its prefill is
    #: one unpadded pass (:func:`perfmodel.phases.ragged_prefill_cost`), the padded pass priced beside it.
    batch_lengths: tuple[int, ...] | None = None

    @property
    def mode(self) -> Mode:
        return self.profile.mode

    @property
    def attention_impl(self) -> AttentionImpl:
        return self.profile.attention_impl

    @property
    def launch(self) -> Launch:
        return self.profile.launch

    @property
    def priced_model(self) -> ModelSpec:
        """``model`` with the knobs that change its config applied."""
        from perfmodel.knobs import effective_model

        return effective_model(self.model, self.knobs)

    @property
    def priced_precision(self) -> Precision:
        """``precision`` with the knobs' KV format."""
        from perfmodel.layers import apply_knobs

        return apply_knobs(self.precision, self.knobs)

    @classmethod
    def make(
        cls,
        model: "str | ModelSpec" = "yi-34b",
        gpu: "str | GPU" = "a100-sxm-80gb",
        context_len: int = 50_000,
        output_tokens: int = 250,
        batch: int = 1,
        tp: int = 1,
        mode: "Mode | str" = Mode.CALIBRATED,
        weight_dtype: str | None = None,
        kv_dtype: str | None = None,
        activation_dtype: str = "bf16",
        chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
        reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
        profile: "Profile | str | None" = None,
        knobs: Knobs | None = None,
        pp: int = 1,
        sp: int = 1,
        sp_kind: str = "ring",
        ep: int = 1,
        topology: str | None = None,
        attention_impl: "AttentionImpl | str | None" = None,
        launch: "Launch | str | None" = Launch.GRAPH,
        layout: Layout | None = None,
        moe_placement: Any = None,
        attention_dp: int = 1,
        batch_lengths: Any = None,
    ) -> "Scenario":
        """Load the names, apply :func:`validate_scenario`, resolve the profile; the checked :class:`Scenario`.

        ``layout`` (a :class:`Layout`) replaces ``tp``, ``pp``, ``sp``, ``sp_kind``, ``ep``, ``topology`` and
        ``attention_dp``.
        ``moe_placement`` (a ``plan moe --json`` file, per-layer expert lists or a
        :class:`~perfmodel.ep_route.MoePlacement`) prices the EP all-to-all of each MoE layer from its traffic
        matrix; it needs an MoE model with ``ep`` > 1 and ``ep`` GPUs per layer.
        ``batch_lengths`` (each prompt's tokens) makes a ragged batch: ``batch`` becomes their count and
        ``context_len`` the longest (the decode and memory are those of that padded shape); it needs one TP
        group and no knobs.
        Raises the typed errors of :mod:`perfmodel.errors`.

        Parameters
        ----------
        model, gpu, context_len, output_tokens, batch, tp, mode, weight_dtype, kv_dtype, activation_dtype,
        chunk_tokens, reserve_fraction, profile, knobs, pp, sp, sp_kind, ep, topology, attention_impl, launch,
        attention_dp
            As in :func:`perfmodel.analyze` (tokens, requests, GPUs, fraction of HBM).
        layout : Layout or None
            The parallel layout, in place of the degree keywords.

        Returns
        -------
        Scenario
            Frozen and checked; accepted by :func:`perfmodel.analyze`, :func:`perfmodel.sweep` and
            :meth:`perfmodel.serving.Deployment.from_scenario`.
        """
        from perfmodel.hw.loader import load_gpu
        from perfmodel.calibration import resolve_profile
        from perfmodel.models import load_model, weights_dtype
        from perfmodel.ops import DEFAULT_ATTENTION_IMPL

        if layout is not None:
            if not isinstance(layout, Layout):
                raise InvalidInputError(f"layout must be a Layout, got {layout!r}")
            tp, pp, sp, sp_kind, ep, topology, attention_dp = (
                layout.tp,
                layout.pp,
                layout.sp,
                layout.sp_kind,
                layout.ep,
                layout.topology,
                layout.attention_dp,
            )
        lengths = None
        if batch_lengths is not None:
            lengths = tuple(
                int(v)
                for v in check_ints(
                    "batch_lengths",
                    list(batch_lengths) if not np.ndim(batch_lengths) == 0 else batch_lengths,
                    1,
                )
            )
            if (pp, sp, ep, attention_dp) != (1, 1, 1, 1) or topology:
                raise InvalidInputError(
                    "batch_lengths (a ragged prefill) is priced on one TP group only "
                    "(not with pp, sp, ep, attention_dp or a topology)"
                )
            if knobs is not None and knobs.active:
                raise InvalidInputError("batch_lengths (a ragged prefill) does not combine with the KV knobs")
            batch, context_len = len(lengths), max(lengths)
        m, g = load_model(model), load_gpu(gpu)
        notes = validate_scenario(
            m,
            context_len,
            output_tokens,
            tp,
            pp,
            mode,
            batch=batch,
            sp=sp,
            sp_kind=sp_kind,
            ep=ep,
            topology=topology,
            gpu=g,
            knobs=knobs,
            chunk_tokens=chunk_tokens,
            reserve_fraction=reserve_fraction,
            attention_dp=attention_dp,
        )
        kn = knobs if knobs is not None and knobs.active else None
        placement = check_placement(m, moe_placement, int(ep))
        if weight_dtype and m.weight_dtype and Dtype.parse(weight_dtype) is not Dtype.parse(m.weight_dtype):
            notes.append(
                f"the model's config stores its weights as {m.weight_dtype}; {weight_dtype} is priced"
            )
        prec = Precision.of(weights_dtype(m, weight_dtype), activation_dtype, kv_dtype)
        mode = check_mode(mode)
        prof = resolve_profile(g, mode, profile, attention_impl, launch)
        if attention_impl is None and prof.attention_impl is not DEFAULT_ATTENTION_IMPL:
            notes.append(
                f"no {DEFAULT_ATTENTION_IMPL.value} attention curves measured for {g.name}: attention "
                f"priced with {prof.attention_impl.value}"
            )
        if mode is Mode.CALIBRATED and prof.is_peak:
            notes.append(f"no calibration profile for {g.name}: peak figures shown")
        lay = Layout(int(tp), int(pp), int(sp), str(sp_kind), int(ep), topology or None, int(attention_dp))
        return cls(
            model=m,
            gpu=g,
            context_len=int(context_len),
            output_tokens=int(output_tokens),
            batch=int(batch),
            layout=lay,
            precision=prec,
            profile=prof,
            knobs=kn,
            chunk_tokens=None if chunk_tokens is None else int(chunk_tokens),
            reserve_fraction=float(reserve_fraction),
            notes=tuple(notes),
            raw_kv_dtype=kv_dtype,
            moe_placement=placement,
            batch_lengths=lengths,
        )

    def replace(self, **changes: Any) -> "Scenario":
        """A copy with ``changes`` (any :meth:`make` argument), checked again.

        Parameters
        ----------
        **changes
            :meth:`make` arguments to change; a layout field (``tp``, ``pp``, ``sp``, ...) replaces the
            layout's.

        Returns
        -------
        Scenario
            The new scenario.

        Raises
        ------
        PerfModelError
            The typed errors of :meth:`make` when the changed scenario is invalid.
        """
        kw = self.make_kwargs()
        kw.update(changes)
        if any(k in changes for k in ("tp", "pp", "sp", "sp_kind", "ep", "topology", "attention_dp")):
            kw.pop("layout", None)
        return Scenario.make(**kw)

    def make_kwargs(self) -> dict[str, Any]:
        """The :meth:`make` arguments that rebuild this scenario.

        Returns
        -------
        dict of str to Any
            Keyword arguments of :meth:`make`.
        """
        return dict(
            model=self.model,
            gpu=self.gpu,
            context_len=self.context_len,
            output_tokens=self.output_tokens,
            batch=self.batch,
            layout=self.layout,
            mode=self.mode,
            weight_dtype=self.precision.weights.value,
            kv_dtype=self.raw_kv_dtype,
            activation_dtype=self.precision.activations.value,
            chunk_tokens=self.chunk_tokens,
            reserve_fraction=self.reserve_fraction,
            profile=self.profile,
            knobs=self.knobs,
            attention_impl=self.attention_impl,
            launch=self.launch,
            moe_placement=self.moe_placement,
            batch_lengths=self.batch_lengths,
        )


def check_placement(model, value: Any, ep: int):
    """``value`` (a ``plan moe --json`` path, per-layer lists or a :class:`~perfmodel.ep_route.MoePlacement`) as a checked :class:`~perfmodel.ep_route.MoePlacement` (None stays None)."""
    if value is None:
        return None
    from perfmodel.ep_route import as_moe_placement

    placement = as_moe_placement(value)
    if placement is None:
        return None
    if model.moe is None:
        raise InvalidInputError(f"an MoE placement needs a mixture-of-experts model; {model.name} is dense")
    if ep <= 1:
        raise InvalidInputError(f"an MoE placement needs expert parallelism (ep > 1); ep={ep}")
    return placement.check(model.moe.num_experts, model.num_moe_layers, ep)


def as_scenario(value: Any = None, **kw: Any) -> Scenario:
    """``value`` when it is a :class:`Scenario` (``kw`` must then be empty or its defaults), else
    :meth:`Scenario.make` of ``value`` (the model) and ``kw``."""
    if isinstance(value, Scenario):
        return value
    return Scenario.make(value, **kw) if value is not None else Scenario.make(**kw)


__all__ = ["Layout", "Scenario", "as_scenario", "check_mode", "validate_scenario", "window_note"]
