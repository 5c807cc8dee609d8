"""``analyze``: the four long-context metrics of one deployment scenario."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from perfmodel.hw.spec import GPU
from perfmodel.calibration import Launch, Mode, Profile
from perfmodel.ops import DEFAULT_ATTENTION_IMPL, AttentionImpl
from perfmodel.comm import DEFAULT_NODE_GPUS
from perfmodel.costs import Bound, OpCost
from perfmodel.costs.bands import phase_band
from perfmodel.degrees import group_world
from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.metrics import bound_of
from perfmodel.knobs import COST_NOT_QUALITY, Knobs
from perfmodel.layers import Precision, check_tp
from perfmodel.models import ModelSpec
from perfmodel.scenario import Scenario
from perfmodel.phases import (
    DEFAULT_PREFILL_CHUNK_TOKENS,
    DEFAULT_RESERVE_FRACTION,
    ContextSwitch,
    MemoryBudget,
    context_switch,
    decode_cost,
    decode_step_cost,
    memory_budget,
    prefill_cost,
)

#: The metrics shown with and without the knobs (``to_dict`` keys).
KNOB_METRICS = (
    "prefill_s",
    "decode_s_per_token",
    "decode_s",
    "max_concurrency",
    "context_switch_s",
    "kv_cache_bytes",
    "session_throughput_tokens_per_s",
)


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
    attention_dp: int = 1  # data-parallel attention groups (perfmodel.parallel.attention_groups)
    prefill_comm_s: float = 0.0  # communication on the critical path (hidden Ring transfers excluded)
    decode_step_comm_s: float = 0.0
    parallel: dict = field(default_factory=dict)  # bubble share, Ring overlap, EP imbalance ...
    attention_impl: AttentionImpl = DEFAULT_ATTENTION_IMPL
    launch: Launch = Launch.GRAPH
    #: Where each op class's curve comes from (:meth:`perfmodel.calibration.Profile.provenance_map`):
    #: ``measured``, ``transferred from <gpu>`` or ``datasheet``, keyed by op class.
    provenance: dict = field(default_factory=dict)
    provenance_summary: str = ""
    scenario: "Scenario | None" = None  # the checked scenario this analysis priced
    #: A ragged batch (``Scenario.batch_lengths``): the lengths, and the padded prefill beside ``prefill``.
    prefill_padded: "OpCost | None" = None

    @property
    def session_throughput_tokens_per_s(self) -> float:
        """Output tokens per second of a batch served start to end: prefill, then decode together."""
        total = self.prefill.total_s + self.decode.total_s
        return self.batch * self.output_tokens / total if total > 0 else 0.0

    @property
    def bottleneck(self) -> dict[str, str]:
        return {
            "prefill": bound_of(self.prefill),
            "decode": bound_of(self.decode_step),
            "concurrency": Bound.HBM_CAPACITY.value,
            "context_switch": bound_of(self.switch.swap_out),
        }

    def metrics(self) -> dict[str, Any]:
        """The output metrics (:func:`perfmodel.metrics.scenario_metrics`, the function ``sweep`` uses).

        Returns
        -------
        dict of str to float or int
            Metric name to value; each name carries its unit (``prefill_s``, ``decode_s_per_token``,
            ``kv_cache_bytes``, ``tokens_per_s`` ...).
        """
        from perfmodel.metrics import scenario_metrics

        return scenario_metrics(
            self.model,
            self.precision,
            self.knobs,
            self.context_len,
            self.output_tokens,
            self.batch,
            self.memory,
            self.prefill,
            self.decode_step,
            self.decode,
            self.switch,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (enums as their values); :func:`perfmodel.jsonout.dumps` writes it.

        Returns
        -------
        dict of str to JSON values
            The scenario (model, GPU, layout, dtypes), memory per GPU (bytes), the phase times (seconds) with
            their bands, and the metrics; names carry their units.
        """
        from perfmodel.jsonout import jsonable

        mem = self.memory
        met = self.metrics()
        return jsonable(
            {
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
                "weight_bytes": met["weight_bytes"],
                "weight_bytes_per_gpu": int(round(mem.weight_bytes)),
                "kv_bytes_per_token": met["kv_bytes_per_token"],
                "kv_cache_bytes": met["kv_cache_bytes"],
                "hbm_capacity_bytes_per_gpu": int(mem.capacity_bytes),
                "activation_bytes_per_gpu": int(round(mem.activation_bytes)),
                "reserve_bytes_per_gpu": int(round(mem.reserve_bytes)),
                "prefill_s": met["prefill_s"],
                "prefill_s_low": met["prefill_s_low"],
                "prefill_s_high": met["prefill_s_high"],
                "prefill_flops_per_gpu": float(self.prefill.flops),
                "decode_s_per_token": met["decode_s_per_token"],
                "decode_s_per_token_low": met["decode_s_per_token_low"],
                "decode_s_per_token_high": met["decode_s_per_token_high"],
                "decode_s": met["decode_s"],
                "decode_s_low": met["decode_s_low"],
                "decode_s_high": met["decode_s_high"],
                "max_concurrency": met["max_concurrency"],
                "context_switch_s": met["context_switch_s"],
                "context_switch_duplex_s": met["context_switch_duplex_s"],
                "session_throughput_tokens_per_s": met["session_throughput_tokens_per_s"],
                "bottleneck": self.bottleneck,
                "comm_s": {
                    "prefill": float(self.prefill.comm_s),
                    "decode_per_token": float(self.decode_step.comm_s),
                },
                "pp": self.pp,
                "sp": self.sp,
                "sp_kind": self.sp_kind,
                "ep": self.ep,
                "attention_dp": self.attention_dp,
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
            }
            | self._knob_comparison()
            | self._ragged()
        )

    def _ragged(self) -> dict[str, Any]:
        """``batch_lengths``: a ragged batch's prefill (``prefill_s``, unpadded) beside the padded one."""
        if self.prefill_padded is None or self.scenario is None or self.scenario.batch_lengths is None:
            return {}
        lens = self.scenario.batch_lengths
        ragged, pad = float(self.prefill.total_s), float(self.prefill_padded.total_s)
        return {
            "batch_lengths": {
                "lengths": list(lens),
                "tokens": sum(lens),
                "padded_tokens": len(lens) * max(lens),
                "prefill_s": ragged,
                "prefill_flops_per_gpu": float(self.prefill.flops),
                "padded_prefill_s": pad,
                "padded_prefill_flops_per_gpu": float(self.prefill_padded.flops),
                "padded_over_ragged": pad / ragged if ragged > 0 else None,
            }
        }

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
        """The metrics of :data:`KNOB_METRICS`.

        Returns
        -------
        dict of str to float
            Metric name to value (seconds, bytes, tokens/s as each name says).
        """
        met = self.metrics()
        return {k: met[k] for k in KNOB_METRICS}


def _kv_tokens(model: ModelSpec, tokens: int) -> float:
    return model.kv_tokens(tokens)


def _share(part: float, total: Any) -> float:
    return float(part) / float(total) if float(total) > 0 else 0.0


def _beyond_node(scn: Scenario, tp: int | None) -> str:
    """Where to price a suggested TP degree whose layout exceeds the default node (no system named)."""
    lay = scn.layout
    if tp is None or lay.topology:
        return ""
    from perfmodel.comm import larger_system_hint

    world = int(group_world(tp, lay.pp, lay.sp, lay.ep, lay.attention_dp))
    if world <= DEFAULT_NODE_GPUS:
        return ""
    return f" ({world} GPUs, more than one node: {larger_system_hint(scn.gpu, world)})"


def _layout_label(pp: int, sp: int, ep: int, attention_dp: int = 1) -> str:
    """``, pp=2, ep=4``: the degrees beyond TP that are not 1."""
    return "".join(
        f", {k}={v}" for k, v in (("pp", pp), ("sp", sp), ("ep", ep), ("attention_dp", attention_dp)) if v > 1
    )


def suggest_tp(
    model: ModelSpec,
    gpu: GPU,
    context_len: int,
    output_tokens: int,
    batch: int,
    precision: Precision,
    pp: int = 1,
    sp: int = 1,
    ep: int = 1,
    topology: str | None = None,
    attention_dp: int = 1,
    **kw,
) -> int | None:
    """Smallest power-of-two TP degree (valid for the heads, <= 64, within the system ``topology``
    describes) at which ``batch`` users fit, with the ``pp``, ``sp`` and ``ep`` degrees kept as given."""
    from perfmodel.scenario import check_world

    tp = 1
    while tp <= 64:
        if topology:
            try:
                check_world(gpu, [tp], pp, sp, ep, topology, attention_dp)
            except InvalidInputError:
                return None
        try:
            check_tp(model, tp)
            if attention_dp > 1:
                from perfmodel.parallel import check_attention_dp

                check_attention_dp(model, attention_dp, tp, sp, ep)
        except InvalidInputError:
            tp *= 2
            continue
        mem = memory_budget(model, gpu, context_len, output_tokens, precision, tp, batch=batch, **kw)
        if pp > 1 or sp > 1 or ep > 1 or attention_dp > 1:
            from perfmodel.parallel import parallel_memory

            mem = parallel_memory(mem, model, precision, tp, pp, sp, ep, attention_dp)
        if mem.max_concurrency >= batch:
            return tp
        tp *= 2
    return None


def analyze(
    model: "str | ModelSpec | Scenario" = "yi-34b",
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
    moe_placement=None,
    attention_dp: int = 1,
    batch_lengths=None,
) -> Analysis:
    """Prefill, decode, concurrency and context switch of one scenario.

    ``model`` may be a :class:`perfmodel.scenario.Scenario` (the other arguments are then not read);
    otherwise the arguments build one (:meth:`Scenario.make <perfmodel.scenario.Scenario.make>`, the
    one validation every command shares).

    ``pp``, ``sp`` (``sp_kind`` ulysses, ring, hybrid or tokenring) and ``ep`` add pipeline, sequence
    (prefill) and expert parallelism (:mod:`perfmodel.parallel`); ``topology`` names a system
    in ``hw/data/systems`` (default: one NVLink node of up to 8 GPUs, else the smallest shipped system of
    the GPU that holds the layout, named in the notes; :func:`perfmodel.comm.default_topology`).

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

    ``attention_dp`` (MoE models) runs attention data-parallel over that many groups of ``tp`` GPUs, each
    holding only its own requests' KV, with the MoE layers over all of them: expert-parallel with
    ``ep = attention_dp * tp``, else tensor-parallel between an all-gather and a reduce-scatter (DeepSeek's
    serving layout; :func:`perfmodel.parallel.check_attention_dp`).  ``ep`` wider than ``tp * sp`` is the
    same layout over ``ep // (tp * sp)`` groups (:func:`perfmodel.degrees.attention_groups`), for time and
    memory alike.  The result's ``attention_dp`` is that number of groups; with more than one,
    ``parallel`` reports it, the KV bytes per rank and the gather/scatter time.

    ``moe_placement`` (a ``plan moe --json`` file or per-layer, per-GPU expert lists; MoE models with
    ``ep`` > 1) prices each MoE layer's dispatch and combine all-to-all from the GPU-to-GPU traffic its placement
    implies (:func:`perfmodel.ep_route.layer_route_time`) instead of the busiest GPU's load.

    ``batch_lengths`` (each prompt's tokens; one TP group, no knobs) prices a ragged batch: ``prefill`` is one
    pass without padding (:func:`perfmodel.phases.ragged_prefill_cost`), ``prefill_padded`` the same batch
    padded to the longest prompt, ``to_dict()["batch_lengths"]`` both; ``batch`` and ``context_len`` become
    the count and the longest, and decode and memory are priced at that padded shape.

    Parameters
    ----------
    model : str, ModelSpec or Scenario
        A shipped model's name, a ``config.json`` path, a spec, or a checked scenario.
    gpu : str or GPU
        A shipped GPU's name or alias, or the path of a GPU YAML file.
    context_len : int, tokens
        Prompt length of each request.
    output_tokens : int, tokens
        Tokens generated per request (0 allowed).
    batch : int, requests
        Concurrent requests priced together.
    tp, pp, sp, ep, attention_dp : int, GPUs
        Tensor, pipeline, sequence, expert and data-parallel-attention degrees.
    mode : Mode or str
        ``calibrated`` (default) or ``peak``.
    weight_dtype, kv_dtype, activation_dtype : str or None
        Precisions (``bf16``, ``fp8``, ``int4`` ...); None: the model's.
    chunk_tokens : int or None, tokens
        Chunked-prefill chunk; None: one pass.
    reserve_fraction : float, fraction of HBM
        Memory held back from the KV cache.
    profile : Profile, str or None
        An explicit calibration profile (object or path); None: the GPU's.

    Returns
    -------
    Analysis
        Prefill, decode step and total decode costs (seconds), the memory budget (bytes), the context
        switch, notes and provenance; ``to_dict()`` is the ``--json`` output (``prefill_s``,
        ``decode_s_per_token``, ... in seconds, bytes in ``*_bytes``).

    Raises
    ------
    DoesNotFitError
        When the weights plus ``batch`` users' KV cache exceed device memory
        (the message gives both byte counts and a TP degree that fits).
    InvalidInputError
        For non-positive sizes, a degree that does not divide what it splits, a layout beyond its
        system, or an unknown mode.
    """
    if isinstance(model, Scenario):
        return analyze_scenario(model)
    return analyze_scenario(
        Scenario.make(
            model,
            gpu,
            context_len,
            output_tokens,
            batch,
            tp,
            mode,
            weight_dtype,
            kv_dtype,
            activation_dtype,
            chunk_tokens,
            reserve_fraction,
            profile,
            knobs,
            pp,
            sp,
            sp_kind,
            ep,
            topology,
            attention_impl,
            launch,
            moe_placement=moe_placement,
            attention_dp=attention_dp,
            batch_lengths=batch_lengths,
        )
    )


def analyze_scenario(scn: Scenario) -> Analysis:
    """:func:`analyze` of a checked :class:`~perfmodel.scenario.Scenario`."""
    m, g, prof, knobs = scn.priced_model, scn.gpu, scn.profile, scn.knobs
    prec = scn.priced_precision
    context_len, output_tokens, batch = scn.context_len, scn.output_tokens, scn.batch
    lay = scn.layout
    tp, pp, sp, sp_kind, ep, dp = lay.tp, lay.pp, lay.sp, lay.sp_kind, lay.ep, lay.attention_dp
    chunk_tokens, reserve_fraction = scn.chunk_tokens, scn.reserve_fraction
    notes = list(scn.notes)
    if lay.multi:
        from perfmodel import parallel as par
    mem = memory_budget(
        m, g, context_len, output_tokens, prec, tp, chunk_tokens, reserve_fraction, batch=batch, knobs=knobs
    )
    if lay.multi:
        mem = par.parallel_memory(mem, m, prec, tp, pp, sp, ep, dp)
    if mem.max_concurrency < batch:
        _does_not_fit(scn, mem)
    par_details: dict = {}
    if lay.multi:
        ring_overlap = par.ring_step_model(prof)
        if ring_overlap is None:
            ring_overlap = 1.0
            if prof.mode is Mode.CALIBRATED and sp > 1 and sp_kind != "ulysses":
                notes.append(
                    f"no Ring-attention step measured for {g.name}: ideal compute/transfer overlap assumed"
                )
        ph = par.parallel_phases(
            m,
            g,
            prof,
            context_len,
            output_tokens,
            batch,
            prec,
            tp,
            pp,
            sp,
            sp_kind,
            ep,
            chunk_tokens,
            lay.topology,
            ring_overlap,
            knobs=knobs,
            moe_placement=scn.moe_placement,
            attention_dp=dp,
        )
        pre, step, dec = ph.prefill, ph.decode_step, ph.decode
        pre_comm, step_comm, par_details = ph.prefill_comm_s, ph.decode_step_comm_s, ph.details
    else:
        pre = prefill_cost(m, g, prof, context_len, batch, prec, tp, chunk_tokens, knobs=knobs)
        step = decode_step_cost(m, g, prof, context_len, batch, prec, tp, knobs=knobs)
        dec = decode_cost(m, g, prof, context_len, output_tokens, batch, prec, tp, knobs=knobs)
        pre_comm, step_comm = _tp_comm_s(m, g, prof, context_len, batch, prec, tp, chunk_tokens)
    padded = None
    if scn.batch_lengths is not None:  # one unpadded pass, the padded one beside it
        from perfmodel.ops import Phase
        from perfmodel.parallel import comm_seconds
        from perfmodel.phases import ragged_prefill_cost

        pre = ragged_prefill_cost(m, g, prof, scn.batch_lengths, prec, tp)
        padded = ragged_prefill_cost(m, g, prof, scn.batch_lengths, prec, tp, padded=True)
        tokens = sum(scn.batch_lengths)
        pre_comm = comm_seconds(m, g, prof, Phase.PREFILL, 1, tokens, tokens, prec, tp) if tp > 1 else 0.0
        notes.append(
            f"ragged batch of {batch} prompts ({tokens:,} tokens): prefill priced as one unpadded pass; "
            f"decode and memory at the padded shape ({context_len:,} tokens each)"
        )
    # each phase's band: its ops' bands summed, each end scaled by the profile's combination factors
    pre, step, dec = (phase_band(c, prof) for c in (pre, step, dec))
    if padded is not None:
        padded = phase_band(padded, prof)
    sw = context_switch(g, prof, mem.kv_bytes_per_user, knobs=knobs)
    baseline = None
    if knobs is not None:
        notes.append(COST_NOT_QUALITY)
        try:
            baseline = analyze_scenario(
                scn.replace(knobs=None, profile=prof, attention_impl=prof.attention_impl)
            )
        except DoesNotFitError as exc:
            notes.append(f"without the knobs: {exc}")
        except InvalidInputError as exc:  # e.g. a TP degree only the knobs' KV heads allow
            notes.append(f"without the knobs: {exc}")
    return Analysis(
        model=m,
        gpu=g,
        tp=tp,
        mode=prof.mode,
        context_len=context_len,
        output_tokens=output_tokens,
        batch=batch,
        precision=prec,
        prefill=pre,
        decode_step=step,
        decode=dec,
        memory=mem,
        switch=sw,
        notes=tuple(notes),
        knobs=knobs,
        baseline=baseline,
        pp=pp,
        sp=sp,
        sp_kind=str(sp_kind),
        ep=ep,
        attention_dp=lay.attention_groups,
        prefill_comm_s=pre_comm,
        decode_step_comm_s=step_comm,
        parallel=par_details,
        attention_impl=prof.attention_impl,
        launch=prof.launch,
        provenance=prof.provenance_map(),
        provenance_summary=prof.provenance_summary(),
        scenario=scn,
        prefill_padded=padded,
    )


def _does_not_fit(scn: Scenario, mem: MemoryBudget) -> None:
    """Raise :class:`DoesNotFitError` for ``scn``, whose budget ``mem`` holds fewer users than its batch."""
    m, g, lay, batch = scn.priced_model, scn.gpu, scn.layout, scn.batch
    pp, sp, ep, dp = lay.pp, lay.sp, lay.ep, lay.attention_dp
    per_gpu = math.ceil(batch / mem.dp_ranks)  # users one GPU holds: its attention group's
    act = mem.activation_bytes if mem.activation_at is None else mem.activation_at(per_gpu)
    need = mem.weight_bytes + act + mem.reserve_bytes + per_gpu * mem.kv_bytes_per_user + mem.shared_kv_bytes
    hint = suggest_tp(
        m,
        g,
        scn.context_len,
        scn.output_tokens,
        batch,
        scn.priced_precision,
        pp,
        sp,
        ep,
        lay.topology,
        dp,
        chunk_tokens=scn.chunk_tokens,
        reserve_fraction=scn.reserve_fraction,
        knobs=scn.knobs,
    )
    what = (
        "the weights alone do not fit"
        if mem.free_for_kv_bytes <= 0
        else f"{batch} user(s)' KV cache does not fit"
    )
    raise DoesNotFitError(
        f"{m.name} on {g.name} (tp={lay.tp}{_layout_label(pp, sp, ep, dp)}): {what}: needs {need / 2**30:.1f} GiB per "
        f"GPU ({int(need):,} bytes), has {mem.capacity_bytes / 2**30:.1f} GiB ({int(mem.capacity_bytes):,} bytes)"
        + (f"; tp={hint}{_layout_label(pp, sp, ep, dp)} fits" if hint else "; no TP degree up to 64 fits")
        + _beyond_node(scn, hint),
        needed_bytes=int(need),
        available_bytes=int(mem.capacity_bytes),
        suggested_tp=hint,
    )


def _tp_comm_s(
    m: ModelSpec,
    g: GPU,
    prof: Profile,
    context_len: int,
    batch: int,
    prec: Precision,
    tp: int,
    chunk_tokens: int | None,
) -> tuple[float, float]:
    """TP collective time of the prefill and of one decode step, seconds."""
    if tp == 1:
        return 0.0, 0.0
    from perfmodel.ops import Phase
    from perfmodel.parallel import comm_seconds

    n = math.ceil(context_len / chunk_tokens) if chunk_tokens else 1
    q = context_len / n
    pre = n * comm_seconds(m, g, prof, Phase.PREFILL, batch, q, q * (n + 1) / 2.0, prec, tp)
    return pre, comm_seconds(m, g, prof, Phase.DECODE, batch, 1, context_len, prec, tp)
