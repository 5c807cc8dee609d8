"""What-if knobs on the KV cache and the attention architecture.

A :class:`Knobs` value describes one way (or several combined) of shrinking,
thinning or moving the KV cache.  It is a plain frozen dataclass: the layer,
phase, analysis and sweep functions take it as ``knobs=`` and price its effect
on every op, on memory and on the context switch.  ``Knobs()`` (all defaults)
changes nothing.

The model prices **cost, not quality**: every knob stands for a published
technique whose accuracy depends on the model and the task (see
``docs/knobs.md``, which names the technique and its caveat for each knob).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from perfmodel.hw.spec import GPU, Dtype
from perfmodel.errors import InvalidInputError

if TYPE_CHECKING:
    import argparse

#: Note shown whenever a knob is active.
COST_NOT_QUALITY = (
    "the knobs change cost, not quality: the model does not predict the accuracy loss of the techniques "
    "they stand for (see docs/knobs.md)"
)

#: FLOPs per KV element to dequantise it in decode attention (convert and scale;
#: int4 also unpacks and subtracts a zero point).  An estimate of the
#: instruction count of a fused dequantising kernel, not a measurement.
DEQUANT_FLOPS_PER_ELEMENT = {Dtype.FP8: 2.0, Dtype.INT8: 2.0, Dtype.INT4: 4.0}

#: Chunk length of chunked linear-attention / SSD prefill kernels (GLA, Mamba-2 use 64 or 256).
LINEAR_ATTENTION_CHUNK_TOKENS = 64


class KnobError(InvalidInputError):
    """A knob value outside its valid range, or a combination that cannot be priced."""


class TierKind(str, enum.Enum):
    """Memory tiers below HBM that can hold KV."""

    HOST_DDR = "ddr"
    CXL = "cxl"
    NVME = "nvme"


@dataclass(frozen=True)
class KvTier:
    """A tier that holds the KV which does not fit in HBM.

    Attributes
    ----------
    kind : TierKind
    capacity_bytes : float or None, bytes
        Capacity available to one GPU.  ``None`` (host DDR only): the GPU's
        ``host_ddr_bytes`` divided by ``gpus_per_host``.
    bytes_per_s : float or None, bytes/s
        Bandwidth from the tier to one GPU (the GPU's host link caps it).
        ``None`` (host DDR only): min(PCIe per direction, DDR bandwidth / gpus_per_host).
    gpus_per_host : int
        GPUs that share the host's memory (8 on DGX/HGX nodes).
    """

    kind: TierKind
    capacity_bytes: float | None = None
    bytes_per_s: float | None = None
    gpus_per_host: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TierKind(self.kind))
        if self.kind is not TierKind.HOST_DDR and (self.capacity_bytes is None or self.bytes_per_s is None):
            raise KnobError(
                f"KV tier {self.kind.value}: give capacity and bandwidth (e.g. {self.kind.value}:4e12:7e9)"
            )
        for name in ("capacity_bytes", "bytes_per_s"):
            v = getattr(self, name)
            if v is not None and (not _finite(v) or v <= 0):
                raise KnobError(f"KV tier {self.kind.value}: {name} must be a positive number, got {v!r}")
        if not _is_int(self.gpus_per_host) or self.gpus_per_host < 1:
            raise KnobError(f"KV tier gpus_per_host must be a positive integer, got {self.gpus_per_host!r}")

    def capacity_for(self, gpu: GPU) -> float:
        """Bytes of this tier one GPU may use."""
        if self.capacity_bytes is not None:
            return float(self.capacity_bytes)
        return gpu.host_ddr_bytes / self.gpus_per_host

    def bandwidth_for(self, gpu: GPU) -> float:
        """Bytes/s from the tier into one GPU: the tier's bandwidth capped by the GPU's host link."""
        bw = (
            self.bytes_per_s
            if self.bytes_per_s is not None
            else gpu.host_ddr_bytes_per_s / self.gpus_per_host
        )
        return min(float(bw), gpu.pcie_bytes_per_s_per_direction)


@dataclass(frozen=True)
class AttentionOffload:
    """Decode attention on a pool of memory-rich devices (Lamina-style attention offloading).

    Attributes
    ----------
    pool_gpu : GPU
        The device the pool is made of (its HBM bandwidth, capacity and FLOP/s are used).
    pool_devices_per_gpu : float
        Pool devices serving one compute GPU of the TP group.
    link_bytes_per_s : float, bytes/s
        Per-direction bandwidth of the link between one compute GPU and its pool.
    link_latency_s : float, seconds
        Latency per message on that link (two messages per attention layer and step).
    pipelined : bool
        Two micro-batches alternate between the devices, so GPU work, pool
        attention and link transfers overlap (needs a batch of at least 2).
    """

    pool_gpu: GPU
    link_bytes_per_s: float
    pool_devices_per_gpu: float = 1.0
    link_latency_s: float = 0.0
    pipelined: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.pool_gpu, GPU):
            raise KnobError(f"attention offload pool_gpu must be a GPU, got {self.pool_gpu!r}")
        if not _finite(self.link_bytes_per_s) or self.link_bytes_per_s <= 0:
            raise KnobError(
                f"attention offload link bandwidth must be > 0 bytes/s, got {self.link_bytes_per_s!r}"
            )
        if not _finite(self.pool_devices_per_gpu) or self.pool_devices_per_gpu <= 0:
            raise KnobError(
                f"attention offload pool_devices_per_gpu must be > 0, got {self.pool_devices_per_gpu!r}"
            )
        if not _finite(self.link_latency_s) or self.link_latency_s < 0:
            raise KnobError(f"attention offload link latency must be >= 0 s, got {self.link_latency_s!r}")


def _finite(v: Any) -> bool:
    from perfmodel.checks import is_finite_number

    return is_finite_number(v)


def _is_int(v: Any) -> bool:
    return _finite(v) and float(v) == int(v)


@dataclass(frozen=True)
class Knobs:
    """KV-cache and attention what-if knobs; the defaults change nothing.

    Attributes
    ----------
    kv_dtype : Dtype or None
        Storage format of the KV cache (KIVI, KVQuant, FP8 KV in vLLM/TensorRT-LLM).
        Narrower than the activations adds a dequantisation pass in decode attention.
    kv_layers : int or None
        Layers that keep their own KV; the other attention layers reuse one of
        them (cross-layer attention, layer-condensed KV, YOCO).  Cuts storage and
        K/V projections; every attention layer still reads the KV it uses.
    kv_heads : int or None
        KV heads (MHA -> GQA -> MQA uptraining); must divide the query heads.
    kv_keep_ratio : float in (0, 1]
        Fraction of tokens whose KV is kept (H2O, SnapKV, Scissorhands eviction).
    kv_budget_tokens : int or None
        At most this many tokens' KV per sequence (StreamingLLM sinks + window,
        fixed-budget eviction).
    keep_schedule : tuple of (int, float)
        Per-layer keep fractions: ``(first_layer, fraction)`` pairs, starting at layer 0, layers
        increasing, fractions in (0, 1] non-increasing; each fraction holds from its layer to the
        next pair's (progressive pruning, LazyLLM; layer-wise KV budgets, PyramidKV).  Layer ``l``
        keeps ``ceil(f_l n)`` of a sequence's ``n`` tokens' KV (decode reads them); with
        ``prune_prefill`` it also prefills only ``f_l`` of the prompt.  ``kv_keep_ratio`` ``r`` is
        the one-pair schedule ``((0, r),)`` (:meth:`layer_keep`); the two are not given together.
    prune_prefill : bool
        The eviction also skips the dropped prompt tokens at prefill (prompt
        compression such as LLMLingua, dynamic pruning such as LazyLLM), so
        prefill cost falls too; with a ``keep_schedule``, each layer runs on its kept tokens.
    sliding_window : int or None
        Each query attends to the last ``sliding_window`` keys only (replaces the
        model's own window).
    attention_density : float in (0, 1]
        Fraction of query-key blocks computed in prefill and read in decode
        (block-sparse attention: MInference, Quest, NSA-style selection).
    shared_prefix_tokens : int
        Leading tokens common to every sequence of the batch: their KV is stored
        once and prefilled once (prefix caching).
    prefix_aware_kernel : bool
        With a shared prefix, decode attention reads the prefix KV once per batch
        (Hydragen, cascade inference) instead of once per sequence.
    attention_every : int
        Hybrid stack: one attention layer in ``attention_every``; the others are
        linear-attention / state-space layers with a constant-size state (Jamba,
        Samba, Zamba use ratios around 1:6 to 1:8).
    recurrent_state_bytes : float or None, bytes
        State of one recurrent layer for one sequence; ``None``: ``q_heads *
        head_dim**2`` fp32 values (a linear-attention state per head).
    kv_tiers : tuple of KvTier
        Tiers below HBM, filled in order, that hold the KV which does not fit
        (FlexGen, InfiniGen, LMCache-style offloading).
    prefetch : bool
        The next layer's KV is fetched from the tiers while this layer computes.
    offload : AttentionOffload or None
        Decode attention runs on a separate memory pool (Lamina).
    """

    kv_dtype: Dtype | None = None
    kv_layers: int | None = None
    kv_heads: int | None = None
    kv_keep_ratio: float = 1.0
    kv_budget_tokens: int | None = None
    keep_schedule: tuple[tuple[int, float], ...] = ()
    prune_prefill: bool = False
    sliding_window: int | None = None
    attention_density: float = 1.0
    shared_prefix_tokens: int = 0
    prefix_aware_kernel: bool = True
    attention_every: int = 1
    recurrent_state_bytes: float | None = None
    kv_tiers: tuple[KvTier, ...] = ()
    prefetch: bool = True
    offload: AttentionOffload | None = None

    def __post_init__(self) -> None:
        if self.kv_dtype is not None:
            try:
                object.__setattr__(self, "kv_dtype", Dtype.parse(self.kv_dtype))
            except ValueError as exc:
                raise KnobError(f"kv_dtype: {exc}") from None
        for name in ("kv_layers", "kv_heads", "kv_budget_tokens", "sliding_window"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise KnobError(f"{name} must be a positive integer, got {v!r}")
        if not _is_int(self.attention_every) or self.attention_every < 1:
            raise KnobError(f"attention_every must be a positive integer, got {self.attention_every!r}")
        if not _is_int(self.shared_prefix_tokens) or self.shared_prefix_tokens < 0:
            raise KnobError(
                f"shared_prefix_tokens must be an integer >= 0, got {self.shared_prefix_tokens!r}"
            )
        if not _finite(self.kv_keep_ratio) or not 0 < self.kv_keep_ratio <= 1:
            raise KnobError(f"kv_keep_ratio must be in (0, 1], got {self.kv_keep_ratio!r}")
        object.__setattr__(self, "keep_schedule", _check_schedule(self.keep_schedule))
        if self.keep_schedule and self.kv_keep_ratio < 1:
            raise KnobError(
                "give kv_keep_ratio or keep_schedule, not both (a ratio r is the schedule 1 pair r@0)"
            )
        if not _finite(self.attention_density) or not 0 < self.attention_density <= 1:
            raise KnobError(f"attention_density must be in (0, 1], got {self.attention_density!r}")
        if self.recurrent_state_bytes is not None and (
            not _finite(self.recurrent_state_bytes) or self.recurrent_state_bytes <= 0
        ):
            raise KnobError(f"recurrent_state_bytes must be > 0, got {self.recurrent_state_bytes!r}")
        tiers = tuple(self.kv_tiers)
        if not all(isinstance(t, KvTier) for t in tiers):
            raise KnobError("kv_tiers must hold KvTier values")
        object.__setattr__(self, "kv_tiers", tiers)
        if self.offload is not None and not isinstance(self.offload, AttentionOffload):
            raise KnobError("offload must be an AttentionOffload")
        if self.offload is not None and tiers:
            raise KnobError("attention offloading and KV tiers cannot be combined (the KV lives in the pool)")
        evicts = (
            self.kv_keep_ratio < 1
            or bool(self.keep_schedule)
            or self.kv_budget_tokens is not None
            or self.sliding_window is not None
        )
        if self.shared_prefix_tokens and evicts:
            raise KnobError(
                "a shared prefix cannot be combined with token eviction or a sliding window "
                "(per-sequence eviction un-shares the prefix)"
            )
        if self.prune_prefill and not (
            self.kv_keep_ratio < 1 or self.keep_schedule or self.kv_budget_tokens is not None
        ):
            raise KnobError("prune_prefill needs kv_keep_ratio < 1, keep_schedule or kv_budget_tokens")

    # ---- queries -----------------------------------------------------------
    @property
    def active(self) -> bool:
        """True when any knob differs from its default."""
        return self != Knobs()

    def replace(self, **changes: Any) -> "Knobs":
        return dataclasses.replace(self, **changes)

    def check(self, model, context_len=None, batch=None) -> None:
        """Raise :class:`KnobError` when a knob does not fit ``model`` or the scenario.

        ``context_len`` may be an array (its smallest value is checked).
        """
        n_attn = attention_layer_count(model, self)
        if self.kv_layers is not None and self.kv_layers > n_attn:
            raise KnobError(
                f"kv_layers={self.kv_layers} exceeds the {n_attn} attention layers of {model.name}"
                + (f" (1 in {self.attention_every})" if self.attention_every > 1 else "")
            )
        if self.attention_every > 1 and getattr(model, "ssm", None) is not None:
            raise KnobError(
                f"attention_every cannot be set on {model.name}: it is a state-space stack with no "
                "attention layer"
            )
        if self.attention_every > model.num_layers:
            raise KnobError(
                f"attention_every={self.attention_every} exceeds the {model.num_layers} layers of {model.name}"
            )
        if self.keep_schedule and self.keep_schedule[-1][0] >= model.num_layers:
            raise KnobError(
                f"keep_schedule starts a fraction at layer {self.keep_schedule[-1][0]}; "
                f"{model.name} has layers 0 to {model.num_layers - 1}"
            )
        if self.kv_heads is not None:
            if model.mla is not None:
                raise KnobError(
                    f"kv_heads cannot be set on {model.name}: its MLA latent cache has no KV heads"
                )
            if self.kv_heads > model.q_heads or model.q_heads % self.kv_heads:
                raise KnobError(
                    f"kv_heads={self.kv_heads} must divide the {model.q_heads} query heads of {model.name}"
                )
        if context_len is not None:
            c = float(np.min(context_len))
            if self.sliding_window is not None and self.sliding_window > c:
                raise KnobError(
                    f"sliding_window={self.sliding_window} is longer than the context ({int(c)} tokens)"
                )
            if self.shared_prefix_tokens and self.shared_prefix_tokens >= c:
                raise KnobError(
                    f"shared_prefix_tokens={self.shared_prefix_tokens} must be shorter than the "
                    f"context ({int(c)} tokens)"
                )

    def layer_keep(self, num_layers: int) -> tuple[tuple[int, float], ...]:
        """``(layers, fraction)`` per run of layers that keep the same fraction of tokens, in layer order:
        the ``keep_schedule`` cut at ``num_layers``, or all layers at ``kv_keep_ratio``."""
        if not self.keep_schedule:
            return ((int(num_layers), float(self.kv_keep_ratio)),)
        starts = [lay for lay, _ in self.keep_schedule if lay < num_layers]
        ends = starts[1:] + [int(num_layers)]
        return tuple((e - s, f) for s, e, (_, f) in zip(starts, ends, self.keep_schedule))

    def kept_tokens(self, tokens, num_layers: int | None = None):
        """Tokens whose KV a sequence of ``tokens`` tokens keeps (ratio, budget, window); with a
        ``keep_schedule``, the mean over the ``num_layers`` layers of each layer's kept tokens (KV bytes
        and decode reads are linear in it)."""
        if not self.keep_schedule:
            return self.kept_at(tokens, self.kv_keep_ratio)
        if num_layers is None:
            raise KnobError("a keep_schedule needs the model's layer count to average its kept tokens")
        segs = self.layer_keep(num_layers)
        k = sum(n * np.asarray(self.kept_at(tokens, f), dtype=np.float64) for n, f in segs) / float(
            num_layers
        )
        return k if np.ndim(k) else float(k)

    def prefill_tokens(self, tokens):
        """Prompt tokens the first layer runs on under ``prune_prefill`` (the first fraction of the schedule,
        or the ratio, then the budget and window); later layers of a schedule run on ``f_l / f_0`` of them."""
        first = self.keep_schedule[0][1] if self.keep_schedule else self.kv_keep_ratio
        return self.kept_at(tokens, first)

    def kept_at(self, tokens, ratio: float):
        """Tokens of ``tokens`` kept at keep fraction ``ratio``, then within the budget and the window."""
        t = np.asarray(tokens, dtype=np.float64)
        k = t
        if ratio < 1:
            k = np.minimum(np.ceil(ratio * t), t)
        if self.kv_budget_tokens is not None:
            k = np.minimum(k, self.kv_budget_tokens)
        if self.sliding_window is not None:
            k = np.minimum(k, self.sliding_window)
        return k if np.ndim(k) else float(k)

    def describe(self) -> list[str]:
        """One short phrase per active knob (for tables and notes)."""
        d = Knobs()
        out = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v == getattr(d, f.name):
                continue
            if f.name == "kv_tiers":
                v = "+".join(t.kind.value for t in v)
            elif f.name == "keep_schedule":
                v = format_schedule(v)
            elif f.name == "offload":
                v = f"{v.pool_gpu.name} x{v.pool_devices_per_gpu:g} over {v.link_bytes_per_s / 1e9:g} GB/s"
            elif isinstance(v, enum.Enum):
                v = v.value
            out.append(f"{f.name}={v}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The knobs that differ from their defaults, as JSON values: numbers stay numbers, a dtype is its
        name, ``kv_tiers`` a list of ``{kind, capacity_bytes, bytes_per_s, gpus_per_host}`` and ``offload``
        ``{pool_gpu (name), link_bytes_per_s, pool_devices_per_gpu, link_latency_s, pipelined}``."""
        from perfmodel.jsonout import jsonable

        d = Knobs()
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v == getattr(d, f.name):
                continue
            if f.name == "kv_dtype":
                v = v.value
            elif f.name == "kv_tiers":
                v = [dataclasses.asdict(t) for t in v]
            elif f.name == "keep_schedule":
                v = [[lay, frac] for lay, frac in v]
            elif f.name == "offload":
                v = {
                    g.name: (v.pool_gpu.name if g.name == "pool_gpu" else getattr(v, g.name))
                    for g in dataclasses.fields(v)
                }
            out[f.name] = jsonable(v)
        return out


def _check_schedule(value: Any) -> tuple[tuple[int, float], ...]:
    """``value`` (pairs of first layer and keep fraction) as a checked tuple; :class:`KnobError` otherwise."""
    try:
        pairs = [tuple(p) for p in (value or ())]
    except TypeError:
        raise KnobError(f"keep_schedule must be (first_layer, fraction) pairs, got {value!r}") from None
    out: list[tuple[int, float]] = []
    for p in pairs:
        if len(p) != 2 or not _is_int(p[0]) or isinstance(p[0], bool) or not _finite(p[1]):
            raise KnobError(f"keep_schedule: each entry is (first_layer, fraction), got {p!r}")
        lay, frac = int(p[0]), float(p[1])
        if not 0 < frac <= 1:
            raise KnobError(f"keep_schedule: fraction must be in (0, 1], got {frac!r} at layer {lay}")
        if out and lay <= out[-1][0]:
            raise KnobError(f"keep_schedule: layers must increase, got {lay} after {out[-1][0]}")
        if out and frac > out[-1][1]:
            raise KnobError(
                f"keep_schedule: fractions must not increase, got {frac:g} at layer {lay} after "
                f"{out[-1][1]:g}"
            )
        out.append((lay, frac))
    if out and out[0][0] != 0:
        raise KnobError(f"keep_schedule must start at layer 0, got {out[0][0]}")
    return tuple(out)


def format_schedule(schedule) -> str:
    """``1@0,0.5@8``: each fraction at its first layer (the ``--keep-schedule`` form)."""
    return ",".join(f"{frac:g}@{lay}" for lay, frac in schedule)


def parse_schedule(text: str) -> tuple[tuple[int, float], ...]:
    """``FRACTION@LAYER,...`` (``1.0@0,0.5@8,0.3@20``) or the path of a JSON file holding ``[[layer, fraction],
    ...]`` or ``[{"layer": L, "keep": F}, ...]``; checked (:class:`KnobError`)."""
    import json
    import os

    text = str(text).strip()
    if text.endswith(".json") or os.path.isfile(text):
        try:
            with open(text) as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise KnobError(f"keep_schedule file {text!r}: {exc}") from None
        if not isinstance(data, list):
            raise KnobError(f"keep_schedule file {text!r}: expected a list of [layer, fraction] pairs")
        pairs = [(d.get("layer"), d.get("keep")) if isinstance(d, dict) else d for d in data]
        return _check_schedule(pairs)
    pairs = []
    for part in text.split(","):
        frac, sep, lay = part.strip().partition("@")
        try:
            pairs.append((int(lay), float(frac)))
        except ValueError:
            raise KnobError(
                f"keep_schedule: expected FRACTION@LAYER (e.g. 0.5@8), got {part.strip()!r}"
            ) from None
        if not sep:
            raise KnobError(f"keep_schedule: expected FRACTION@LAYER (e.g. 0.5@8), got {part.strip()!r}")
    return _check_schedule(pairs)


NO_KNOBS = Knobs()


def attention_layer_count(model, knobs: Knobs | None) -> int:
    """Attention layers of the stack: layer ``i`` is attention when ``i % N == N - 1`` (at least one);
    none in a state-space stack (``model.ssm``)."""
    n = 1 if knobs is None else knobs.attention_every
    return model.num_attention_layers if n == 1 else max(1, model.num_layers // n)


def kv_layer_count(model, knobs: Knobs | None) -> int:
    """Layers that store KV."""
    n_attn = attention_layer_count(model, knobs)
    if knobs is None or knobs.kv_layers is None:
        return n_attn
    return min(knobs.kv_layers, n_attn)


def effective_model(model, knobs: Knobs | None):
    """``model`` with the knobs that change its config applied (KV heads, sliding window)."""
    if knobs is None:
        return model
    changes = {}
    if knobs.kv_heads is not None and knobs.kv_heads != model.kv_heads:
        changes["kv_heads"] = int(knobs.kv_heads)
    if knobs.sliding_window is not None:
        changes["sliding_window"] = int(knobs.sliding_window)
        changes["sliding_layers"] = None  # the knob windows every layer
    return model.with_overrides(**changes) if changes else model


# ---------------------------------------------------------------------------
# command line


def _arg_error(message: str) -> Exception:
    """argparse's error for a bad value (argparse is imported only by the CLI that parses)."""
    import argparse

    return argparse.ArgumentTypeError(message)


def _parse_tier(text: str) -> KvTier:
    """``ddr``, ``ddr:CAPACITY_BYTES:BYTES_PER_S``, ``cxl:CAP:BW`` or ``nvme:CAP:BW``."""
    bits = text.strip().lower().split(":")
    try:
        kind = TierKind(bits[0])
    except ValueError:
        raise _arg_error(
            f"unknown KV tier {bits[0]!r}; known: {', '.join(k.value for k in TierKind)}"
        ) from None
    if len(bits) not in (1, 3):
        raise _arg_error(f"a KV tier is KIND or KIND:CAPACITY_BYTES:BYTES_PER_S, got {text!r}")
    try:
        cap, bw = (float(bits[1]), float(bits[2])) if len(bits) == 3 else (None, None)
        return KvTier(kind, cap, bw)
    except ValueError as exc:
        raise _arg_error(str(exc)) from None


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _arg_error(f"expected a number in (0, 1], got {text!r}") from None


def _schedule(text: str) -> tuple[tuple[int, float], ...]:
    try:
        return parse_schedule(text)
    except KnobError as exc:
        raise _arg_error(str(exc)) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _arg_error(f"expected an integer, got {text!r}") from None


def add_knob_args(parser: "argparse.ArgumentParser") -> None:
    """Add the KV-cache knob flags (``--kv-dtype`` comes from the scenario flags)."""
    g = parser.add_argument_group("KV-cache knobs (what-if; cost only, not quality)")
    g.add_argument(
        "--kv-layers", type=_int, default=None, help="layers that keep their own KV (cross-layer sharing)"
    )
    g.add_argument("--kv-heads", type=_int, default=None, help="override the KV heads (GQA/MQA)")
    g.add_argument(
        "--kv-keep-ratio", type=_ratio, default=1.0, help="fraction of tokens whose KV is kept (eviction)"
    )
    g.add_argument("--kv-budget-tokens", type=_int, default=None, help="at most N tokens' KV per sequence")
    g.add_argument(
        "--keep-schedule",
        type=_schedule,
        default=(),
        metavar="F@LAYER,...",
        help="per-layer keep fractions, e.g. 1.0@0,0.5@8,0.3@20 (or a JSON file of [layer, fraction] pairs)",
    )
    g.add_argument(
        "--prune-prefill", action="store_true", help="evicted prompt tokens are skipped at prefill too"
    )
    g.add_argument("--sliding-window", type=_int, default=None, help="attend to the last N keys only")
    g.add_argument(
        "--attention-density", type=_ratio, default=1.0, help="fraction of attention blocks computed"
    )
    g.add_argument(
        "--shared-prefix-tokens", type=_int, default=0, help="prompt tokens shared by the whole batch"
    )
    g.add_argument(
        "--no-prefix-kernel",
        action="store_true",
        help="with a shared prefix, each sequence still reads the prefix KV",
    )
    g.add_argument(
        "--attention-every",
        type=_int,
        default=1,
        help="hybrid stack: 1 attention layer in N, the others recurrent",
    )
    g.add_argument(
        "--recurrent-state-bytes", type=float, default=None, help="state of one recurrent layer per sequence"
    )
    g.add_argument(
        "--kv-tier",
        type=_parse_tier,
        action="append",
        default=None,
        metavar="KIND[:CAP:BW]",
        help="KV tier below HBM: ddr (from the GPU's data), or ddr|cxl|nvme:CAPACITY_BYTES:BYTES_PER_S "
        "(repeat for several, fastest first)",
    )
    g.add_argument("--no-prefetch", action="store_true", help="do not overlap tier transfers with compute")
    g.add_argument(
        "--offload-attention",
        default=None,
        metavar="GPU[:N]",
        help="run decode attention on a pool of N (default 1) GPUs of this kind per compute GPU",
    )
    g.add_argument(
        "--offload-link-bytes-per-s",
        type=float,
        default=50e9,
        help="per-direction link bandwidth to the pool (default 50e9, one 400 Gb/s NIC)",
    )
    g.add_argument(
        "--offload-link-latency-s", type=float, default=5e-6, help="latency per message to the pool"
    )
    g.add_argument("--offload-serial", action="store_true", help="no pipelining between GPU and pool")


def knobs_from_args(args: "argparse.Namespace") -> Knobs:
    """Build :class:`Knobs` from the flags of :func:`add_knob_args` (and ``--kv-dtype``)."""
    offload = None
    spec = getattr(args, "offload_attention", None)
    if spec:
        from perfmodel.hw.loader import load_gpu

        name, _, count = spec.partition(":")
        try:
            n = float(count) if count else 1.0
        except ValueError:
            raise KnobError(f"--offload-attention: pool size must be a number, got {count!r}") from None
        offload = AttentionOffload(
            load_gpu(name),
            float(args.offload_link_bytes_per_s),
            n,
            float(args.offload_link_latency_s),
            not args.offload_serial,
        )
    return Knobs(
        kv_dtype=getattr(args, "kv_dtype", None),
        kv_layers=args.kv_layers,
        kv_heads=args.kv_heads,
        kv_keep_ratio=args.kv_keep_ratio,
        kv_budget_tokens=args.kv_budget_tokens,
        keep_schedule=getattr(args, "keep_schedule", ()),
        prune_prefill=args.prune_prefill,
        sliding_window=args.sliding_window,
        attention_density=args.attention_density,
        shared_prefix_tokens=args.shared_prefix_tokens,
        prefix_aware_kernel=not args.no_prefix_kernel,
        attention_every=args.attention_every,
        recurrent_state_bytes=args.recurrent_state_bytes,
        kv_tiers=tuple(args.kv_tier or ()),
        prefetch=not args.no_prefetch,
        offload=offload,
    )
