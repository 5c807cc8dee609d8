"""``analyze``: the four long-context metrics of one deployment scenario."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hw.loader import load_gpu
from hw.spec import GPU, Dtype
from perfmodel.calibration import Launch, Mode, Profile, resolve_profile
from perfmodel.ops import DEFAULT_ATTENTION_IMPL, AttentionImpl
from perfmodel.costs import Bound, OpCost
from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.knobs import COST_NOT_QUALITY, Knobs, effective_model
from perfmodel.layers import Precision, apply_knobs, check_tp, kv_bytes_per_token_per_gpu
from perfmodel.models import ModelSpec, load_model, weights_dtype
from perfmodel.phases import (
    DEFAULT_PREFILL_CHUNK_TOKENS,
    DEFAULT_RESERVE_FRACTION,
    ContextSwitch,
    MemoryBudget,
    context_switch,
    decode_cost,
    decode_step_cost,
    kv_cache_bytes_per_gpu,
    memory_budget,
    prefill_cost,
)

#: The metrics shown with and without the knobs (``to_dict`` keys).
KNOB_METRICS = ("prefill_s", "decode_s_per_token", "decode_s", "max_concurrency", "context_switch_s",
                "kv_cache_bytes", "session_throughput_tokens_per_s")


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as int, or raise :class:`InvalidInputError` naming it."""
    from perfmodel.checks import finite_float

    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    finite_float(name, value)  # NaN, infinity, or too large: NonFiniteError naming it
    if float(value) != int(value) or int(value) < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Analysis:
    """Result of :func:`analyze`; ``to_dict()`` gives the JSON form."""

    model: ModelSpec
    gpu: GPU
    tp: int
    mode: Mode
    context_len: int
    output_tokens: int
    batch: int
    precision: Precision
    prefill: OpCost
    decode_step: OpCost
    decode: OpCost
    memory: MemoryBudget
    switch: ContextSwitch
    notes: tuple[str, ...] = field(default_factory=tuple)
    knobs: Knobs | None = None
    baseline: "Analysis | None" = None  # the same scenario without the knobs (None: it does not fit)
    pp: int = 1
    sp: int = 1
    sp_kind: str = "ring"
    ep: int = 1
    prefill_comm_s: float = 0.0  # communication on the critical path (hidden Ring transfers excluded)
    decode_step_comm_s: float = 0.0
    parallel: dict = field(default_factory=dict)  # bubble share, Ring overlap, EP imbalance ...
    attention_impl: AttentionImpl = DEFAULT_ATTENTION_IMPL
    launch: Launch = Launch.GRAPH
    #: Where each op class's curve comes from (:meth:`perfmodel.calibration.Profile.provenance_map`):
    #: ``measured``, ``transferred from <gpu>`` or ``datasheet``, keyed by op class.
    provenance: dict = field(default_factory=dict)
    provenance_summary: str = ""

    @property
    def session_throughput_tokens_per_s(self) -> float:
        """Output tokens per second of a batch served start to end: prefill, then decode together."""
        total = self.prefill.total_s + self.decode.total_s
        return self.batch * self.output_tokens / total if total > 0 else 0.0

    @property
    def bottleneck(self) -> dict[str, str]:
        return {
            "prefill": _bound(self.prefill),
            "decode": _bound(self.decode_step),
            "concurrency": Bound.HBM_CAPACITY.value,
            "context_switch": _bound(self.switch.swap_out),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (enums as their values); :func:`perfmodel.jsonout.dumps` writes it."""
        from perfmodel.jsonout import jsonable

        mem = self.memory
        return jsonable({
            "model": self.model.name,
            "gpu": self.gpu.name,
            "tp": self.tp,
            "mode": self.mode.value,
            "attention_impl": self.attention_impl.value,
            "launch": self.launch.value,
            "context_len": self.context_len,
            "output_tokens": self.output_tokens,
            "batch": self.batch,
            "weight_dtype": self.precision.weights.value,
            "kv_dtype": self.precision.kv.value,
            "weight_bytes": int(self.model.weight_bytes(self.precision.weights)),
            "weight_bytes_per_gpu": int(round(mem.weight_bytes)),
            "kv_bytes_per_token": int(round(kv_bytes_per_token_per_gpu(self.model, 1, self.precision.kv, self.knobs))),
            "kv_cache_bytes": int(round(kv_cache_bytes_per_gpu(self.model, self.context_len, self.output_tokens,
                                                               self.batch, self.precision, 1, self.knobs))),
            "hbm_capacity_bytes_per_gpu": int(mem.capacity_bytes),
            "activation_bytes_per_gpu": int(round(mem.activation_bytes)),
            "reserve_bytes_per_gpu": int(round(mem.reserve_bytes)),
            "prefill_s": float(self.prefill.total_s),
            "prefill_s_low": float(self.prefill.low_s),
            "prefill_s_high": float(self.prefill.high_s),
            "prefill_flops_per_gpu": float(self.prefill.flops),
            "decode_s_per_token": float(self.decode_step.total_s),
            "decode_s_per_token_low": float(self.decode_step.low_s),
            "decode_s_per_token_high": float(self.decode_step.high_s),
            "decode_s": float(self.decode.total_s),
            "decode_s_low": float(self.decode.low_s),
            "decode_s_high": float(self.decode.high_s),
            "max_concurrency": int(mem.max_concurrency),
            "context_switch_s": float(self.switch.serial_s),
            "context_switch_duplex_s": float(self.switch.duplex_s),
            "session_throughput_tokens_per_s": float(self.session_throughput_tokens_per_s),
            "bottleneck": self.bottleneck,
            "comm_s": {"prefill": float(self.prefill.comm_s), "decode_per_token": float(self.decode_step.comm_s)},
            "pp": self.pp, "sp": self.sp, "sp_kind": self.sp_kind, "ep": self.ep,
            "communication": {
                "prefill_s": self.prefill_comm_s,
                "prefill_share": _share(self.prefill_comm_s, self.prefill.total_s),
                "decode_per_token_s": self.decode_step_comm_s,
                "decode_share": _share(self.decode_step_comm_s, self.decode_step.total_s),
            },
            "parallel": dict(self.parallel),
            "provenance": dict(self.provenance),
            "notes": list(self.notes),
            "knobs": self.knobs.to_dict() if self.knobs is not None else {},
        } | self._knob_comparison())

    def _knob_comparison(self) -> dict[str, Any]:
        """``without_knobs`` metrics and ``knob_ratio`` (with / without), when knobs are active."""
        if self.knobs is None:
            return {}
        if self.baseline is None:
            return {"without_knobs": None, "knob_ratio": None}
        mine, base = self.to_dict_metrics(), self.baseline.to_dict_metrics()
        ratio = {k: (mine[k] / base[k] if base[k] else None) for k in KNOB_METRICS}
        return {"without_knobs": base, "knob_ratio": ratio}

    def to_dict_metrics(self) -> dict[str, float]:
        """The metrics of :data:`KNOB_METRICS`."""
        return {
            "prefill_s": float(self.prefill.total_s),
            "decode_s_per_token": float(self.decode_step.total_s),
            "decode_s": float(self.decode.total_s),
            "max_concurrency": int(self.memory.max_concurrency),
            "context_switch_s": float(self.switch.serial_s),
            "kv_cache_bytes": int(round(kv_cache_bytes_per_gpu(self.model, self.context_len, self.output_tokens,
                                                               self.batch, self.precision, 1, self.knobs))),
            "session_throughput_tokens_per_s": float(self.session_throughput_tokens_per_s),
        }


def _kv_tokens(model: ModelSpec, tokens: int) -> float:
    return model.kv_tokens(tokens)


def _share(part: float, total: Any) -> float:
    return float(part) / float(total) if float(total) > 0 else 0.0


def _bound(cost: OpCost) -> str:
    b = cost.bound
    return b.value if isinstance(b, Bound) else str(b)


def _layout_label(pp: int, sp: int, ep: int) -> str:
    """``, pp=2, ep=4``: the degrees beyond TP that are not 1."""
    return "".join(f", {k}={v}" for k, v in (("pp", pp), ("sp", sp), ("ep", ep)) if v > 1)


def suggest_tp(model: ModelSpec, gpu: GPU, context_len: int, output_tokens: int, batch: int,
               precision: Precision, pp: int = 1, sp: int = 1, ep: int = 1, **kw) -> int | None:
    """Smallest power-of-two TP degree (valid for the heads, <= 64) at which ``batch`` users fit, with
    the ``pp``, ``sp`` and ``ep`` degrees kept as given."""
    tp = 1
    while tp <= 64:
        try:
            check_tp(model, tp)
        except InvalidInputError:
            tp *= 2
            continue
        mem = memory_budget(model, gpu, context_len, output_tokens, precision, tp, batch=batch, **kw)
        if pp > 1 or sp > 1 or ep > 1:
            from perfmodel.parallel import parallel_memory

            mem = parallel_memory(mem, model, precision, tp, pp, sp, ep)
        if mem.max_concurrency >= batch:
            return tp
        tp *= 2
    return None


def analyze(
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
    launch: "Launch | str" = Launch.GRAPH,
) -> Analysis:
    """Prefill, decode, concurrency and context switch of one scenario.

    ``pp``, ``sp`` (``sp_kind`` ulysses, ring or hybrid) and ``ep`` add pipeline, sequence
    (prefill) and expert parallelism (:mod:`perfmodel.parallel`); ``topology`` names a system
    in ``hw/data/systems`` (default: one NVLink node of the GPU).

    ``mode``: ``calibrated`` (default), the best estimate with an 80% error band (``prefill.low_s`` /
    ``high_s``, ``to_dict()``'s ``*_low`` / ``*_high``) and its provenance per op class (``provenance``);
    ``peak``, the datasheet roofline, a bound.

    ``attention_impl`` (:class:`perfmodel.ops.AttentionImpl`: ``sdpa``, PyTorch's default and the class of
    serving engines' kernels; ``flash2``; ``triton``) picks the attention kernel whose curves price
    attention in calibrated mode (peak mode prices every impl at the datasheet roofline).  ``None``
    (default): ``sdpa``, or, for a profile without ``sdpa`` curves, the impl it has (named in the notes).  ``launch``
    (``graph``, default, or ``eager``) prices kernels as CUDA-graph replays or one eager launch each.

    ``knobs`` (:class:`perfmodel.knobs.Knobs`) prices KV-cache what-ifs, also with
    ``pp``/``sp``/``ep``/``topology`` (:func:`perfmodel.parallel.check_knobs` names those a
    layout does not model); the result then carries ``baseline``, the same scenario and
    layout without them.

    Raises
    ------
    DoesNotFitError
        When the weights plus ``batch`` users' KV cache exceed device memory
        (the message gives both byte counts and a TP degree that fits).
    InvalidInputError
        For non-positive sizes or a TP degree that does not divide the heads.
    """
    m = load_model(model)
    g = load_gpu(gpu)
    context_len = check_positive_int("context_len", context_len)
    output_tokens = check_positive_int("output_tokens", output_tokens, minimum=0)
    batch = check_positive_int("batch", batch)
    tp = check_positive_int("tp", tp)
    if chunk_tokens is not None:
        chunk_tokens = check_positive_int("chunk_tokens", chunk_tokens)
    if not 0 <= reserve_fraction < 1:
        raise InvalidInputError(f"reserve_fraction must be in [0, 1), got {reserve_fraction}")
    if knobs is not None and not knobs.active:
        knobs = None
    base_model = m
    if knobs is not None:
        m = effective_model(m, knobs)
        knobs.check(m, context_len, batch)
    check_tp(m, tp)
    pp, sp, ep = (check_positive_int(k, v) for k, v in (("pp", pp), ("sp", sp), ("ep", ep)))
    from perfmodel import parallel as par

    lay = par.layout(m, tp, pp, sp, sp_kind, ep, topology, knobs)
    multi = lay is not None
    if multi:
        sp_kind = lay["sp_kind"]
    from perfmodel.scenario import check_mode, window_note

    notes = [n for n in [window_note(m, context_len + output_tokens)] if n]
    if weight_dtype and m.weight_dtype and Dtype.parse(weight_dtype) is not Dtype.parse(m.weight_dtype):
        notes.append(f"the model's config stores its weights as {m.weight_dtype}; {weight_dtype} is priced")
    weight_dtype = weights_dtype(m, weight_dtype)
    prec = apply_knobs(Precision.of(weight_dtype, activation_dtype, kv_dtype), knobs)
    mode = check_mode(mode)
    prof = resolve_profile(g, mode, profile, attention_impl, launch)
    if attention_impl is None and prof.attention_impl is not DEFAULT_ATTENTION_IMPL:
        notes.append(f"no {DEFAULT_ATTENTION_IMPL.value} attention curves measured for {g.name}: attention priced "
                     f"with {prof.attention_impl.value}")
    if mode is Mode.CALIBRATED and prof.is_peak:
        notes.append(f"no calibration profile for {g.name}: peak figures shown")
    mem = memory_budget(m, g, context_len, output_tokens, prec, tp, chunk_tokens, reserve_fraction, batch=batch,
                        knobs=knobs)
    if multi:
        mem = par.parallel_memory(mem, m, prec, tp, pp, sp, ep)
    if mem.max_concurrency < batch:
        need = (mem.weight_bytes + mem.activation_bytes + mem.reserve_bytes + batch * mem.kv_bytes_per_user
                + mem.shared_kv_bytes)
        hint = suggest_tp(m, g, context_len, output_tokens, batch, prec, pp, sp, ep, chunk_tokens=chunk_tokens,
                          reserve_fraction=reserve_fraction, knobs=knobs)
        what = "the weights alone do not fit" if mem.free_for_kv_bytes <= 0 else f"{batch} user(s)' KV cache does not fit"
        raise DoesNotFitError(
            f"{m.name} on {g.name} (tp={tp}{_layout_label(pp, sp, ep)}): {what}: needs {need / 2**30:.1f} GiB per GPU "
            f"({int(need):,} bytes), has {mem.capacity_bytes / 2**30:.1f} GiB ({int(mem.capacity_bytes):,} bytes)"
            + (f"; tp={hint}{_layout_label(pp, sp, ep)} fits" if hint else "; no TP degree up to 64 fits"),
            needed_bytes=int(need), available_bytes=int(mem.capacity_bytes), suggested_tp=hint,
        )
    par_details: dict = {}
    if multi:
        ring_overlap = par.ring_step_model(prof)
        if ring_overlap is None:
            ring_overlap = 1.0
            if mode is Mode.CALIBRATED and sp > 1 and sp_kind != "ulysses":
                notes.append(f"no Ring-attention step measured for {g.name}: ideal compute/transfer overlap assumed")
        ph = par.parallel_phases(m, g, prof, context_len, output_tokens, batch, prec, tp, pp, sp, sp_kind, ep,
                                 chunk_tokens, topology, ring_overlap, knobs=knobs)
        pre, step, dec = ph.prefill, ph.decode_step, ph.decode
        pre_comm, step_comm, par_details = ph.prefill_comm_s, ph.decode_step_comm_s, ph.details
    else:
        pre = prefill_cost(m, g, prof, context_len, batch, prec, tp, chunk_tokens, knobs=knobs)
        step = decode_step_cost(m, g, prof, context_len, batch, prec, tp, knobs=knobs)
        dec = decode_cost(m, g, prof, context_len, output_tokens, batch, prec, tp, knobs=knobs)
        pre_comm, step_comm = _tp_comm_s(m, g, prof, context_len, batch, prec, tp, chunk_tokens)
    sw = context_switch(g, prof, mem.kv_bytes_per_user, knobs=knobs)
    baseline = None
    if knobs is not None:
        notes.append(COST_NOT_QUALITY)
        try:
            baseline = analyze(base_model, g, context_len, output_tokens, batch, tp, mode, weight_dtype, kv_dtype,
                               activation_dtype, chunk_tokens, reserve_fraction, prof, pp=pp, sp=sp, sp_kind=sp_kind,
                               ep=ep, topology=topology, attention_impl=prof.attention_impl, launch=prof.launch)
        except DoesNotFitError as exc:
            notes.append(f"without the knobs: {exc}")
        except InvalidInputError as exc:  # e.g. a TP degree only the knobs' KV heads allow
            notes.append(f"without the knobs: {exc}")
    return Analysis(
        model=m, gpu=g, tp=tp, mode=mode, context_len=context_len, output_tokens=output_tokens, batch=batch,
        precision=prec, prefill=pre, decode_step=step, decode=dec, memory=mem, switch=sw, notes=tuple(notes),
        knobs=knobs, baseline=baseline, pp=pp, sp=sp, sp_kind=str(sp_kind), ep=ep, prefill_comm_s=pre_comm,
        decode_step_comm_s=step_comm, parallel=par_details, attention_impl=prof.attention_impl,
        launch=prof.launch, provenance=prof.provenance_map(), provenance_summary=prof.provenance_summary(),
    )



def _tp_comm_s(m: ModelSpec, g: GPU, prof: Profile, context_len: int, batch: int, prec: Precision, tp: int,
               chunk_tokens: int | None) -> tuple[float, float]:
    """TP collective time of the prefill and of one decode step, seconds."""
    if tp == 1:
        return 0.0, 0.0
    from perfmodel.ops import Phase
    from perfmodel.parallel import comm_seconds

    n = math.ceil(context_len / chunk_tokens) if chunk_tokens else 1
    q = context_len / n
    pre = n * comm_seconds(m, g, prof, Phase.PREFILL, batch, q, q * (n + 1) / 2.0, prec, tp)
    return pre, comm_seconds(m, g, prof, Phase.DECODE, batch, 1, context_len, prec, tp)
