"""Op descriptors: one schema for prediction, measurement, reports and planners.

An op is a frozen dataclass; its JSON form is a flat object with an ``"op"``
key (see ``docs/ops.md``).  Numeric fields may be numpy arrays of one common
shape, so that the same cost code evaluates one op or a million (the sweep).

FLOP and byte counts are pure functions of the op: :func:`flops` and
:func:`bytes_moved`.  FLOPs count 2 per multiply-add.  Bytes are the fewest
that must cross device memory: each input read once, each output written once.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from perfmodel.hw.spec import Dtype
from perfmodel.errors import OpDescriptorError

Num = Union[int, float, np.ndarray]


class OpKind(str, enum.Enum):
    GEMM = "gemm"
    ATTENTION = "attention"
    MEMCPY = "memcpy"
    ELEMENTWISE = "elementwise"
    DECODER_LAYER = "decoder_layer"
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_TO_ALL = "all_to_all"
    SEND_RECV = "send_recv"
    GROUPED_GEMM = "grouped_gemm"


COLLECTIVE_KINDS = frozenset(
    {OpKind.ALL_REDUCE, OpKind.ALL_GATHER, OpKind.REDUCE_SCATTER, OpKind.ALL_TO_ALL, OpKind.SEND_RECV}
)


class Phase(str, enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


class MemLocation(str, enum.Enum):
    DEVICE = "device"
    HOST_PINNED = "host_pinned"
    HOST_PAGEABLE = "host_pageable"


class MlpType(str, enum.Enum):
    GATED_SILU = "gated_silu"


class AttentionImpl(str, enum.Enum):
    """Which attention kernel runs: each has its own fitted curves in a calibration profile.

    - ``sdpa``: PyTorch's ``scaled_dot_product_attention`` with its own backend choice (cuDNN's
      fused attention for prefill on Hopper with torch 2.11; the profile records the kernel names
      that ran). What a plain PyTorch model runs, and the class of FlashAttention-3 and FlashInfer
      that serving engines run: the default.
    - ``flash2``: SDPA restricted to its flash backend (FlashAttention-2).
    - ``triton``: this project's Triton kernels (``kernels/``): causal flash prefill, and decode with
      the stream-K schedule.
    - ``split_kv``, ``stream_k``: the Triton decode kernel with that schedule (prefill: ``triton``).
    """

    SDPA = "sdpa"
    FLASH2 = "flash2"
    TRITON = "triton"
    SPLIT_KV = "split_kv"
    STREAM_K = "stream_k"

    @classmethod
    def parse(cls, value: "AttentionImpl | str") -> "AttentionImpl":
        """The impl named ``value``; :class:`~perfmodel.errors.OpDescriptorError` names the known ones.

        Parameters
        ----------
        value : AttentionImpl or str
            The name (case and surrounding space ignored) or an impl, returned as is.

        Returns
        -------
        AttentionImpl
            The implementation.

        Raises
        ------
        OpDescriptorError
            When ``value`` names no known implementation.
        """
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            known = ", ".join(e.value for e in cls)
            raise OpDescriptorError(f"unknown attention implementation {value!r}; known: {known}") from None

    def curve(self, phase: "Phase") -> "AttentionImpl":
        """The impl whose curve prices this phase: the Triton decode schedules share the Triton
        prefill kernel, and ``triton`` decodes with stream-K.

        Parameters
        ----------
        phase : Phase
            Prefill or decode.

        Returns
        -------
        AttentionImpl
            The impl whose calibrated curve is used.
        """
        if phase is Phase.PREFILL and self in (AttentionImpl.SPLIT_KV, AttentionImpl.STREAM_K):
            return AttentionImpl.TRITON
        if phase is Phase.DECODE and self is AttentionImpl.TRITON:
            return AttentionImpl.STREAM_K
        return self


#: The attention implementation priced when a scenario names none.
DEFAULT_ATTENTION_IMPL = AttentionImpl.SDPA


@dataclass(frozen=True)
class Gemm:
    """``[m, k] @ [k, n]``; ``b_dtype`` is the weight operand's storage format, ``out_dtype`` the
    output's (both default to ``dtype``)."""

    m: Num
    n: Num
    k: Num
    dtype: Dtype = Dtype.BF16
    b_dtype: Dtype | None = None
    out_dtype: Dtype | None = None
    kind = OpKind.GEMM


@dataclass(frozen=True)
class Attention:
    """Scaled-dot-product attention of ``q_len`` new queries over ``kv_len`` keys.

    ``kv_len`` includes the new tokens.  ``window`` > 0 limits each query to the
    last ``window`` keys.  ``v_head_dim`` defaults to ``head_dim``.
    ``kv_shared``: V is a slice of the stored K (MLA latent), so the cache holds
    ``head_dim`` elements per token and head, not ``head_dim + v_head_dim``.  An MLA decode
    (DeepSeek-V2/V3, weight-absorbed) is ``kv_heads=1``, ``head_dim = kv_lora_rank +
    qk_rope_head_dim`` (576), ``v_head_dim = kv_lora_rank`` (512), ``kv_shared``.
    ``kv_dtype`` defaults to ``dtype``.
    ``impl``: the kernel that runs (:class:`AttentionImpl`); ``None`` prices the profile's
    attention implementation (the scenario's choice, ``sdpa`` unless set).
    ``seq_lens``: a ragged (variable-length, unpadded) batch: each sequence's key count, ``batch`` of
    them, the longest equal to ``kv_len``; sequence ``i`` has ``min(q_len, seq_lens[i])`` new queries
    (:func:`ragged_lengths`).  Without it every sequence is ``q_len`` queries over ``kv_len`` keys (a
    padded batch).
    """

    phase: Phase
    batch: Num
    q_len: Num
    kv_len: Num
    q_heads: int
    kv_heads: int
    head_dim: int
    causal: bool = True
    dtype: Dtype = Dtype.BF16
    v_head_dim: int = 0
    window: int = 0
    kv_shared: bool = False
    kv_dtype: Dtype | None = None
    impl: AttentionImpl | None = None
    seq_lens: tuple[int, ...] | None = None
    kind = OpKind.ATTENTION

    def __post_init__(self) -> None:
        if self.seq_lens is not None:
            object.__setattr__(self, "seq_lens", check_seq_lens(self.seq_lens, self.batch, self.kv_len))


@dataclass(frozen=True)
class Memcpy:
    bytes: Num
    src: MemLocation = MemLocation.DEVICE
    dst: MemLocation = MemLocation.DEVICE
    kind = OpKind.MEMCPY


@dataclass(frozen=True)
class Elementwise:
    """A memory-bound kernel (norm, activation, residual add, RoPE, KV append).

    ``name`` identifies it in reports; ``bytes`` and ``flops`` are given.  ``serial_steps``: dependent
    steps of one thread that the kernel's parallelism does not hide (a loop over the indices of a small
    ``index_select``, the ``k`` expert rows a MoE combine reads per token); None: none.
    """

    name: str
    bytes: Num
    flops: Num = 0
    serial_steps: Num | None = None
    kind = OpKind.ELEMENTWISE


@dataclass(frozen=True)
class DecoderLayer:
    """One Llama-style decoder layer as a plain PyTorch implementation runs it.

    ``attention_impl``: the attention kernel the layer runs; ``None`` prices the profile's attention
    implementation (the scenario's choice, ``sdpa`` unless set), as for :class:`Attention`.
    ``seq_lens``: a ragged batch, as for :class:`Attention`: the GEMMs and elementwise kernels run on
    the real tokens (the sum of each sequence's new tokens), the attention on each sequence's own length.
    """

    phase: Phase
    batch: Num
    q_len: Num
    kv_len: Num
    hidden: int
    intermediate: int
    q_heads: int
    kv_heads: int
    head_dim: int
    mlp: MlpType = MlpType.GATED_SILU
    dtype: Dtype = Dtype.BF16
    attention_impl: AttentionImpl | None = None
    seq_lens: tuple[int, ...] | None = None
    kind = OpKind.DECODER_LAYER

    def __post_init__(self) -> None:
        if self.seq_lens is not None:
            object.__setattr__(self, "seq_lens", check_seq_lens(self.seq_lens, self.batch, self.kv_len))


class CollectiveLaunch(str, enum.Enum):
    """How a collective is issued (``validation/collectives_launch.py`` measures each way):
    ``eager_single`` one eager call on an idle stream, ``eager_burst`` eager calls back to back,
    ``graph`` calls inside a replayed CUDA graph."""

    EAGER_SINGLE = "eager_single"
    EAGER_BURST = "eager_burst"
    GRAPH = "graph"


def default_collective_launch(phase: "Phase") -> CollectiveLaunch:
    """The way a phase's collectives are priced: in a CUDA graph for decode (serving engines capture
    decode steps), back to back for prefill (eager passes)."""
    return CollectiveLaunch.GRAPH if Phase(phase) is Phase.DECODE else CollectiveLaunch.EAGER_BURST


@dataclass(frozen=True)
class Collective:
    """A collective (or point-to-point) operation; ``bytes`` is per rank.

    ``launch`` says how it is issued (:class:`CollectiveLaunch`): a profile with terms for that way
    (``collective_launch``) prices it with them; None, or a way without terms, uses the class's.
    """

    op: OpKind
    bytes: Num
    world: int
    dtype: Dtype = Dtype.BF16
    topology: str = ""
    launch: "CollectiveLaunch | None" = None

    @property
    def kind(self) -> OpKind:
        return self.op


@dataclass(frozen=True)
class GroupedGemm:
    """``groups`` GEMMs of one kernel (a MoE layer's experts): ``m`` rows in all, sorted by group,
    each group's rows times its own ``[k, n]`` weight (``b_dtype``: the weights' storage format).

    ``groups`` counts the groups that receive rows (the experts touched); ``m`` the token-expert
    pairs.  Only the touched groups' weights are read.
    """

    groups: Num
    m: Num
    n: Num
    k: Num
    dtype: Dtype = Dtype.BF16
    b_dtype: Dtype | None = None
    kind = OpKind.GROUPED_GEMM


Op = Union[Gemm, Attention, Memcpy, Elementwise, DecoderLayer, Collective, GroupedGemm]


# ---------------------------------------------------------------------------
# counting


def _b(dtype: Dtype | None, default: Dtype) -> float:
    return (dtype or default).bytes_per_element


def check_seq_lens(seq_lens: Any, batch: Any, kv_len: Any) -> tuple[int, ...]:
    """``seq_lens`` as a tuple of ints >= 1, ``batch`` of them, the longest ``kv_len``; otherwise
    :class:`OpDescriptorError` naming the mismatch."""
    from perfmodel.checks import is_finite_number

    try:
        lens = list(seq_lens)
    except TypeError:
        raise OpDescriptorError(f"field 'seq_lens' must be a list of integers, got {seq_lens!r}") from None
    if not lens:
        raise OpDescriptorError("field 'seq_lens' is empty")
    for v in lens:
        if isinstance(v, bool) or not is_finite_number(v) or v != int(v) or v < 1:
            raise OpDescriptorError(
                f"field 'seq_lens' holds {_shown(v)}; each length must be an integer >= 1"
            )
    out = tuple(int(v) for v in lens)
    if np.ndim(batch) or np.ndim(kv_len):
        raise OpDescriptorError("field 'seq_lens' needs a scalar batch and kv_len")
    if len(out) != batch:
        raise OpDescriptorError(f"field 'seq_lens' has {len(out)} lengths but batch is {batch}")
    if max(out) != kv_len:
        raise OpDescriptorError(
            f"field 'seq_lens': the longest length ({max(out)}) must equal kv_len ({kv_len})"
        )
    return out


def ragged_lengths(op: "Attention | DecoderLayer") -> tuple[np.ndarray, np.ndarray]:
    """``(q, kv)``: each sequence's new queries and keys (arrays of ``batch``); a padded op gives
    ``batch`` copies of ``(q_len, kv_len)``."""
    if op.seq_lens is None:
        n = int(op.batch)
        return np.full(n, float(op.q_len)), np.full(n, float(op.kv_len))
    kv = np.asarray(op.seq_lens, dtype=np.float64)
    return np.minimum(float(op.q_len), kv), kv


def padded(op: "Attention | DecoderLayer") -> "Attention | DecoderLayer":
    """``op`` without its ``seq_lens``: every sequence padded to ``q_len`` queries over ``kv_len`` keys."""
    return dataclasses.replace(op, seq_lens=None) if op.seq_lens is not None else op


def visible_keys(q_len: Num, kv_len: Num, causal: bool, window: int = 0) -> Num:
    """Number of (query, key) pairs computed, summed over the ``q_len`` queries.

    The queries sit at positions ``kv_len - q_len .. kv_len - 1``; causally a
    query at position ``p`` sees ``p + 1`` keys, capped at ``window``.
    """
    q = np.asarray(q_len, dtype=np.float64)
    kv = np.asarray(kv_len, dtype=np.float64)
    if not causal:
        pairs = q * (kv if window <= 0 else np.minimum(kv, window))
        return pairs if pairs.ndim else float(pairs)
    start = kv - q + 1  # keys seen by the first query
    end = kv  # keys seen by the last query
    full = q * (start + end) / 2.0
    if window > 0:
        # queries seeing more than `window` keys are capped: count the excess
        lo = np.maximum(start, window + 1)
        n_over = np.maximum(end - lo + 1, 0.0)
        excess = n_over * ((lo + end) / 2.0 - window)
        full = full - excess
    return full if np.ndim(full) else float(full)


def window_keys(kv_len: Num, window: int, rows: Num = 1) -> Num:
    """Keys that ``rows`` consecutive queries read together (a decode step's new tokens, a prefill
    tile): all ``kv_len`` without a window, else the last ``window + rows - 1`` of them at most."""
    if window <= 0:
        return kv_len
    out = np.minimum(np.asarray(kv_len, dtype=np.float64), window + np.asarray(rows, dtype=np.float64) - 1.0)
    return out if out.ndim else float(out)


def flops(op: Op) -> Num:
    """Floating-point operations (2 per multiply-add)."""
    if isinstance(op, Gemm):
        return 2.0 * op.m * op.n * op.k
    if isinstance(op, GroupedGemm):
        return 2.0 * op.m * op.n * op.k
    if isinstance(op, Attention):
        dv = op.v_head_dim or op.head_dim
        if op.seq_lens is not None:  # each sequence's own pairs
            q, kv = ragged_lengths(op)
            return (
                2.0
                * op.q_heads
                * (op.head_dim + dv)
                * float(np.sum(visible_keys(q, kv, op.causal, op.window)))
            )
        pairs = visible_keys(op.q_len, op.kv_len, op.causal, op.window)
        return 2.0 * op.batch * op.q_heads * (op.head_dim + dv) * pairs
    if isinstance(op, Elementwise):
        return op.flops
    if isinstance(op, DecoderLayer):
        return sum(flops(o) * c for _, o, c in decoder_layer_parts(op))
    if isinstance(op, Collective):
        if op.op in (OpKind.ALL_REDUCE, OpKind.REDUCE_SCATTER):
            return op.bytes / op.dtype.bytes_per_element * (op.world - 1) / op.world
        return 0.0
    return 0.0


def bytes_moved(op: Op) -> Num:
    """Fewest device-memory bytes read plus written."""
    if isinstance(op, Gemm):
        a = op.dtype.bytes_per_element
        return (
            op.m * op.k * a
            + op.k * op.n * _b(op.b_dtype, op.dtype)
            + op.m * op.n * _b(op.out_dtype, op.dtype)
        )
    if isinstance(op, GroupedGemm):
        # the touched groups' weights once, every row in and out once
        a = op.dtype.bytes_per_element
        return op.groups * op.k * op.n * _b(op.b_dtype, op.dtype) + op.m * (op.k + op.n) * a
    if isinstance(op, Attention):
        a = op.dtype.bytes_per_element
        kvb = _b(op.kv_dtype, op.dtype)
        dv = op.v_head_dim or op.head_dim
        kv_width = op.head_dim if op.kv_shared else op.head_dim + dv
        if op.seq_lens is not None:  # each sequence's own keys and queries
            q, kv_len = ragged_lengths(op)
            keys = window_keys(kv_len, op.window, q)
            return float(
                np.sum(op.kv_heads * keys * kv_width * kvb + op.q_heads * q * (op.head_dim + dv) * a)
            )
        keys = window_keys(op.kv_len, op.window, op.q_len)
        kv = op.batch * op.kv_heads * keys * kv_width * kvb
        qo = op.batch * op.q_heads * op.q_len * (op.head_dim + dv) * a
        return kv + qo
    if isinstance(op, Memcpy):
        # a device-to-device copy reads and writes; a host transfer crosses the link once
        both_device = op.src is MemLocation.DEVICE and op.dst is MemLocation.DEVICE
        return 2 * op.bytes if both_device else op.bytes
    if isinstance(op, Elementwise):
        return op.bytes
    if isinstance(op, DecoderLayer):
        return sum(bytes_moved(o) * c for _, o, c in decoder_layer_parts(op))
    if isinstance(op, Collective):
        return op.bytes
    raise OpDescriptorError(f"unknown op {op!r}")


def decoder_layer_parts(op: DecoderLayer) -> list[tuple[str, Op, int]]:
    """The kernels a plain PyTorch Llama-style layer launches, with counts.

    RMSNorm, fused QKV GEMM, KV append, attention (``op.attention_impl``, GQA), O GEMM + residual,
    RMSNorm, fused gate/up GEMM, SiLU*mul, down GEMM + residual.
    """
    a = op.dtype.bytes_per_element
    tokens = op.batch * op.q_len if op.seq_lens is None else int(np.sum(ragged_lengths(op)[0]))
    h, d = op.hidden, op.head_dim
    qkv_out = (op.q_heads + 2 * op.kv_heads) * d
    act = tokens * h * a  # one activation tensor
    norm = Elementwise("rmsnorm", bytes=2 * act + h * a, flops=4 * tokens * h)
    residual = Elementwise("residual_add", bytes=3 * act, flops=tokens * h)
    kv_append = Elementwise("kv_append", bytes=2 * 2 * tokens * op.kv_heads * d * a)
    silu = Elementwise("silu_mul", bytes=3 * tokens * op.intermediate * a, flops=5 * tokens * op.intermediate)
    attn = Attention(
        phase=op.phase,
        batch=op.batch,
        q_len=op.q_len,
        kv_len=op.kv_len,
        q_heads=op.q_heads,
        kv_heads=op.kv_heads,
        head_dim=d,
        causal=True,
        dtype=op.dtype,
        impl=op.attention_impl,
        seq_lens=op.seq_lens,
    )
    return [
        ("input_norm", norm, 1),
        ("qkv_proj", Gemm(tokens, qkv_out, h, op.dtype), 1),
        ("kv_append", kv_append, 1),
        ("attention", attn, 1),
        ("o_proj", Gemm(tokens, h, op.q_heads * d, op.dtype), 1),
        ("attn_residual", residual, 1),
        ("post_norm", norm, 1),
        ("gate_up_proj", Gemm(tokens, 2 * op.intermediate, h, op.dtype), 1),
        ("silu_mul", silu, 1),
        ("down_proj", Gemm(tokens, h, op.intermediate, op.dtype), 1),
        ("mlp_residual", residual, 1),
    ]


# ---------------------------------------------------------------------------
# JSON <-> dataclass

_INT_FIELDS = {
    OpKind.GEMM: ("m", "n", "k"),
    OpKind.ATTENTION: ("batch", "q_len", "kv_len", "q_heads", "kv_heads", "head_dim"),
    OpKind.DECODER_LAYER: (
        "batch",
        "q_len",
        "kv_len",
        "hidden",
        "intermediate",
        "q_heads",
        "kv_heads",
        "head_dim",
    ),
    OpKind.MEMCPY: ("bytes",),
    OpKind.ELEMENTWISE: ("bytes",),
}
_OPTIONAL_INT = {OpKind.ATTENTION: ("v_head_dim", "window")}
_COLLECTIVE_INT = ("bytes", "world")


def _need(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise OpDescriptorError(f"{where}field {key!r} is missing")
    return d[key]


def _int(d: dict, key: str, where: str, minimum: int = 1) -> int:
    from perfmodel.checks import is_finite_number

    v = _need(d, key, where)
    if not is_finite_number(v) or v != int(v):
        raise OpDescriptorError(f"{where}field {key!r} must be a finite integer, got {_shown(v)}")
    if v < minimum:
        raise OpDescriptorError(f"{where}field {key!r} must be >= {minimum}, got {v!r}")
    return int(v)


def _shown(v: Any) -> str:
    """``repr(v)``, shortened for an integer of hundreds of digits."""
    s = repr(v)
    return f"{s[:20]}... ({len(s)} digits)" if isinstance(v, int) and len(s) > 24 else s


def _enum(cls, d: dict, key: str, where: str, default=None):
    v = d.get(key, default) if default is not None else _need(d, key, where)
    try:
        return cls.parse(v) if cls is Dtype else cls(v)
    except ValueError:
        known = ", ".join(e.value for e in cls)
        raise OpDescriptorError(f"{where}field {key!r} has unknown value {v!r}; known: {known}") from None


def op_from_dict(d: dict[str, Any], where: str = "") -> Op:
    """Parse one op descriptor.  ``where`` prefixes error messages (``"line 3: "``).

    Parameters
    ----------
    d : dict
        A descriptor (``docs/ops.md``): ``op`` and its fields, sizes in elements or bytes as named.
    where : str
        Prefix of error messages.

    Returns
    -------
    Op

    Raises
    ------
    OpDescriptorError
        For an unknown op, a missing or bad field (one line naming it).
    """
    if not isinstance(d, dict):
        raise OpDescriptorError(f"{where}an op descriptor must be a JSON object")
    raw_kind = _need(d, "op", where)
    try:
        kind = OpKind(raw_kind)
    except ValueError:
        known = ", ".join(k.value for k in OpKind)
        raise OpDescriptorError(f"{where}field 'op' has unknown value {d['op']!r}; known: {known}") from None
    if kind in COLLECTIVE_KINDS:
        world = _int(d, "world", where, minimum=1)
        return Collective(
            op=kind,
            bytes=_int(d, "bytes", where, minimum=0),
            world=world,
            dtype=_enum(Dtype, d, "dtype", where, default="bf16"),
            topology=str(d.get("topology", "")),
        )
    if kind is OpKind.GROUPED_GEMM:
        return _grouped_gemm_from_dict(d, where)
    seq_lens = None
    if kind in (OpKind.ATTENTION, OpKind.DECODER_LAYER) and d.get("seq_lens") is not None:
        d, seq_lens = _ragged_defaults(d, where)
    ints = {k: _int(d, k, where, minimum=0 if k == "bytes" else 1) for k in _INT_FIELDS.get(kind, ())}
    for k in _OPTIONAL_INT.get(kind, ()):
        if k in d:
            ints[k] = _int(d, k, where, minimum=0)
    if kind is OpKind.GEMM:
        b = _enum(Dtype, d, "b_dtype", where, default=d.get("dtype", "bf16")) if "b_dtype" in d else None
        out = _enum(Dtype, d, "out_dtype", where) if "out_dtype" in d else None
        return Gemm(dtype=_enum(Dtype, d, "dtype", where, default="bf16"), b_dtype=b, out_dtype=out, **ints)
    if kind is OpKind.ATTENTION:
        if ints["q_heads"] % ints["kv_heads"]:
            raise OpDescriptorError(
                f"{where}field 'q_heads' ({ints['q_heads']}) is not a multiple of kv_heads ({ints['kv_heads']})"
            )
        if ints["q_len"] > ints["kv_len"]:
            raise OpDescriptorError(
                f"{where}field 'q_len' ({ints['q_len']}) exceeds kv_len ({ints['kv_len']})"
            )
        causal = d.get("causal", True)
        if not isinstance(causal, bool):
            raise OpDescriptorError(f"{where}field 'causal' must be true or false")
        kv_shared = d.get("kv_shared", False)
        if not isinstance(kv_shared, bool):
            raise OpDescriptorError(f"{where}field 'kv_shared' must be true or false")
        if kv_shared and ints.get("v_head_dim", 0) > ints["head_dim"]:
            raise OpDescriptorError(
                f"{where}field 'v_head_dim' ({ints['v_head_dim']}) exceeds head_dim "
                f"({ints['head_dim']}): with kv_shared V is a slice of the stored K"
            )
        kv_dtype = _enum(Dtype, d, "kv_dtype", where, default="bf16") if "kv_dtype" in d else None
        impl = _enum(AttentionImpl, d, "impl", where) if d.get("impl") is not None else None
        return Attention(
            phase=_enum(Phase, d, "phase", where),
            causal=causal,
            dtype=_enum(Dtype, d, "dtype", where, default="bf16"),
            kv_dtype=kv_dtype,
            kv_shared=kv_shared,
            impl=impl,
            seq_lens=_with_where(seq_lens, ints, where),
            **ints,
        )
    if kind is OpKind.MEMCPY:
        return Memcpy(
            src=_enum(MemLocation, d, "src", where, default="device"),
            dst=_enum(MemLocation, d, "dst", where, default="device"),
            **ints,
        )
    if kind is OpKind.ELEMENTWISE:
        from perfmodel.checks import is_finite_number

        fl = d.get("flops", 0)
        if not is_finite_number(fl) or fl < 0:
            raise OpDescriptorError(f"{where}field 'flops' must be a finite number >= 0, got {_shown(fl)}")
        steps = d.get("serial_steps")
        if steps is not None and (not is_finite_number(steps) or steps < 0):
            raise OpDescriptorError(
                f"{where}field 'serial_steps' must be a finite number >= 0, got {_shown(steps)}"
            )
        return Elementwise(name=str(d.get("name", "elementwise")), flops=fl, serial_steps=steps, **ints)
    if kind is OpKind.DECODER_LAYER:
        if ints["q_heads"] % ints["kv_heads"]:
            raise OpDescriptorError(
                f"{where}field 'q_heads' ({ints['q_heads']}) is not a multiple of kv_heads ({ints['kv_heads']})"
            )
        if ints["q_len"] > ints["kv_len"]:
            raise OpDescriptorError(
                f"{where}field 'q_len' ({ints['q_len']}) exceeds kv_len ({ints['kv_len']})"
            )
        return DecoderLayer(
            phase=_enum(Phase, d, "phase", where),
            mlp=_enum(MlpType, d, "mlp", where, default="gated_silu"),
            dtype=_enum(Dtype, d, "dtype", where, default="bf16"),
            attention_impl=_enum(AttentionImpl, d, "attention_impl", where)
            if d.get("attention_impl") is not None
            else None,
            seq_lens=_with_where(seq_lens, ints, where),
            **ints,
        )
    raise OpDescriptorError(f"{where}op {kind.value!r} is not supported")  # pragma: no cover


def _ragged_defaults(d: dict[str, Any], where: str) -> tuple[dict[str, Any], list]:
    """``d`` with ``batch``, ``kv_len`` and ``q_len`` defaulted from its ``seq_lens`` (their count, the
    longest, and the longest again: every token of every sequence is new, a prefill)."""
    lens = d["seq_lens"]
    if not isinstance(lens, list) or not lens:
        raise OpDescriptorError(f"{where}field 'seq_lens' must be a non-empty list of integers")
    try:
        top = max(lens)
    except TypeError:
        raise OpDescriptorError(f"{where}field 'seq_lens' must be a list of integers") from None
    d = {"batch": len(lens), "kv_len": top, "q_len": d.get("kv_len", top)} | d
    return d, lens


def _with_where(seq_lens: Any, ints: dict, where: str) -> tuple[int, ...] | None:
    """``seq_lens`` checked against the parsed sizes, the error prefixed with ``where``."""
    if seq_lens is None:
        return None
    try:
        return check_seq_lens(seq_lens, ints["batch"], ints["kv_len"])
    except OpDescriptorError as exc:
        raise OpDescriptorError(f"{where}{exc}") from None


def _grouped_gemm_from_dict(d: dict[str, Any], where: str) -> GroupedGemm:
    """``{"op": "grouped_gemm", "groups", "m", "n", "k", "dtype", "b_dtype"}``; every touched group holds a row."""
    ints = {k: _int(d, k, where, minimum=1) for k in ("groups", "m", "n", "k")}
    if ints["groups"] > ints["m"]:
        raise OpDescriptorError(
            f"{where}field 'groups' ({ints['groups']}) exceeds m ({ints['m']}): "
            f"every group counted holds at least one row"
        )
    b = _enum(Dtype, d, "b_dtype", where, default=d.get("dtype", "bf16")) if "b_dtype" in d else None
    return GroupedGemm(dtype=_enum(Dtype, d, "dtype", where, default="bf16"), b_dtype=b, **ints)


def op_to_dict(op: Op) -> dict[str, Any]:
    """The JSON form of an op (scalar fields only).

    Parameters
    ----------
    op : Op

    Returns
    -------
    dict
        The descriptor :func:`op_from_dict` reads back.
    """
    out: dict[str, Any] = {"op": op.kind.value}
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if f.name == "op":
            continue
        if v is None:
            continue
        if isinstance(v, enum.Enum):
            v = v.value
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.generic):
            v = v.item()
        out[f.name] = v
    return out
