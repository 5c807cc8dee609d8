"""A model's forward pass as a list of ops, per GPU under tensor parallelism.

``model_ops`` returns ``(name, op, count)`` triples; ``count`` is how many
times the op runs per forward pass (layers of that kind, experts touched).
Sizes (batch, q_len, kv_len) may be numpy arrays: every op field then is an
array of the broadcast shape, and so are the costs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfmodel.hw.spec import Dtype
from perfmodel.errors import InvalidInputError
from perfmodel.knobs import (
    DEQUANT_FLOPS_PER_ELEMENT,
    LINEAR_ATTENTION_CHUNK_TOKENS,
    Knobs,
    attention_layer_count,
    effective_model,
    kv_layer_count,
)
from perfmodel.models import MlpKind, ModelSpec, SsmKind
from perfmodel.ops import (
    Attention,
    Collective,
    Elementwise,
    Gemm,
    GroupedGemm,
    Op,
    OpKind,
    Phase,
    default_collective_launch,
)

OpList = list[tuple[str, Op, Any]]


@dataclass(frozen=True)
class Precision:
    """Storage formats of weights, activations and the KV cache."""

    weights: Dtype = Dtype.BF16
    activations: Dtype = Dtype.BF16
    kv: Dtype = Dtype.BF16

    @classmethod
    def of(cls, weights="bf16", activations="bf16", kv=None) -> "Precision":
        """Precisions from names (``bf16``, ``fp8``, ``int4`` ...); ``kv`` None: the activations'.

        Parameters
        ----------
        weights : str or Dtype, default ``bf16``
            Storage format of the weights.
        activations : str or Dtype, default ``bf16``
            Format of activations and math.
        kv : str or Dtype, optional
            Storage format of the KV cache; default: ``activations``.

        Returns
        -------
        Precision
            The three formats.

        Raises
        ------
        ValueError
            When a name is not a known dtype.
        """
        w = Dtype.parse(weights)
        a = Dtype.parse(activations)
        return cls(weights=w, activations=a, kv=Dtype.parse(kv) if kv is not None else a)

    @property
    def math(self) -> Dtype:
        """Format the tensor units run in: fp8 when weights and activations are fp8, else activations."""
        if self.weights in (Dtype.FP8,) and self.activations in (Dtype.FP8,):
            return Dtype.FP8
        if self.activations in (Dtype.INT8, Dtype.INT4, Dtype.FP8):
            return Dtype.BF16
        return self.activations


def apply_knobs(precision: Precision, knobs: Knobs | None) -> Precision:
    """``precision`` with the KV format of ``knobs`` (if it sets one)."""
    if knobs is None or knobs.kv_dtype is None or knobs.kv_dtype is precision.kv:
        return precision
    return Precision(precision.weights, precision.activations, knobs.kv_dtype)


def check_tp(model: ModelSpec, tp: int) -> None:
    """Raise unless ``tp`` divides the query heads and divides (or is a multiple of) the KV heads."""
    if isinstance(tp, bool) or not isinstance(tp, (int, np.integer)) or tp < 1:
        raise InvalidInputError(f"tp must be a positive integer, got {tp!r}")
    if model.q_heads % tp:
        raise InvalidInputError(
            f"tp={tp} does not divide the {model.q_heads} query heads of {model.name}; "
            f"valid: {', '.join(str(d) for d in range(1, model.q_heads + 1) if model.q_heads % d == 0 and d <= 64)}"
        )
    if model.mla is None and model.kv_heads % tp and tp % model.kv_heads:
        raise InvalidInputError(
            f"tp={tp} neither divides nor is a multiple of the {model.kv_heads} KV heads of {model.name}"
        )


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads each GPU stores (replicated when tp exceeds the KV heads)."""
    return -(-model.kv_heads // tp)


def kv_bytes_per_token_per_gpu(
    model: ModelSpec, tp: int, kv_dtype: Dtype, knobs: Knobs | None = None
) -> float:
    """KV-cache bytes per token on one GPU of a TP group.

    MLA's latent cache is replicated on every GPU (it has no head axis).
    ``knobs`` may change the KV heads, the layers that store KV (cross-layer
    sharing, hybrid stacks) and the KV format (``knobs.kv_dtype`` wins over
    ``kv_dtype``).
    """
    if knobs is None:
        n_kv = model.num_attention_layers
    else:
        model = effective_model(model, knobs)
        n_kv = kv_layer_count(model, knobs)
        kv_dtype = knobs.kv_dtype or kv_dtype
    kv_dtype = Dtype.parse(kv_dtype)
    if model.mla is not None:
        return n_kv * (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * kv_dtype.bytes_per_element
    return 2 * n_kv * kv_heads_per_gpu(model, tp) * model.head_dim * kv_dtype.bytes_per_element


def recurrent_state_bytes_per_gpu(model: ModelSpec, tp: int, knobs: Knobs | None) -> float:
    """State bytes of all recurrent layers of one sequence on one GPU: a state-space stack's every layer
    (:meth:`perfmodel.models.SsmSpec.state_bytes`), a hybrid pattern's recurrent layers, else 0."""
    if model.ssm is not None:
        return float(model.num_layers * model.ssm.state_bytes(tp))
    if knobs is None or knobs.attention_every == 1:
        return 0.0
    n_rec = model.num_layers - attention_layer_count(model, knobs)
    return n_rec * _state_bytes_per_layer(model, knobs) / tp


def _state_bytes_per_layer(model: ModelSpec, knobs: Knobs) -> float:
    if knobs.recurrent_state_bytes is not None:
        return float(knobs.recurrent_state_bytes)
    return model.q_heads * model.head_dim * model.head_dim * Dtype.FP32.bytes_per_element


def _norm(name: str, tokens, h: int, a: float, count=1) -> tuple[str, Op, Any]:
    return (name, Elementwise("rmsnorm", bytes=2 * tokens * h * a + h * a, flops=4 * tokens * h), count)


def _residual(name: str, tokens, h: int, a: float, count=1) -> tuple[str, Op, Any]:
    return (name, Elementwise("residual_add", bytes=3 * tokens * h * a, flops=tokens * h), count)


def _all_reduce(name: str, tokens, h: int, prec: Precision, tp: int) -> list:
    if tp <= 1:
        return []
    return [
        (
            name,
            Collective(
                OpKind.ALL_REDUCE,
                bytes=tokens * h * prec.activations.bytes_per_element,
                world=tp,
                dtype=prec.activations,
            ),
            1,
        )
    ]


def _attention_block(
    model: ModelSpec, phase: Phase, batch, q_len, kv_len, prec: Precision, tp: int, knobs: Knobs | None = None
) -> OpList:
    """Attention sub-block of every layer, counts per forward pass (layers included).

    Without knobs every layer is an attention layer that stores its own KV.
    With knobs, ``n_attn`` layers attend (the rest are recurrent, see
    :func:`_recurrent_ops`), ``n_kv`` of them store and project K/V, decode
    attends to the kept keys, and a shared prefix is read once per batch.
    """
    a = prec.activations.bytes_per_element
    kvb = prec.kv.bytes_per_element
    h, d = model.hidden, model.head_dim
    tokens = batch * q_len
    hq = model.q_heads // tp
    L = model.num_layers
    n_attn = attention_layer_count(model, knobs)
    n_kv = kv_layer_count(model, knobs)
    density = 1.0 if knobs is None else knobs.attention_density
    prefix = 0 if knobs is None or phase is Phase.PREFILL else knobs.shared_prefix_tokens
    decode = phase is Phase.DECODE
    if knobs is None:
        keys, window = kv_len, model.sliding_window
    elif decode:
        keys = model.kv_tokens(
            knobs.kept_tokens(kv_len, model.num_layers)
        )  # window on sliding layers, layer-averaged
        keys, window = keys * density if density < 1 else keys, 0
    else:
        keys, window = kv_len, model.sliding_window
    attn_count = n_attn * density if (knobs is not None and not decode and density < 1) else n_attn
    ops: OpList = [_norm("input_norm", tokens, h, a, L)]
    m = model.mla
    if n_attn == 0:  # a state-space stack: every layer's mixer is recurrent
        pass
    elif m is None:
        hkv = kv_heads_per_gpu(model, tp)
        width = 2 * d
        ops.append(("qkv_proj", Gemm(tokens, (hq + 2 * hkv) * d, h, prec.math, prec.weights), n_kv))
        if n_attn > n_kv:  # layers reusing another layer's KV project queries only
            ops.append(("q_proj", Gemm(tokens, hq * d, h, prec.math, prec.weights), n_attn - n_kv))
        ops += [
            (
                "rope",
                Elementwise("rope", bytes=2 * tokens * (hq + hkv) * d * a, flops=3 * tokens * (hq + hkv) * d),
                n_attn,
            ),
            ("kv_append", Elementwise("kv_append", bytes=2 * tokens * hkv * d * (a + kvb)), n_kv),
        ]
        fields = dict(
            q_heads=hq, kv_heads=hkv, head_dim=d, dtype=prec.activations, window=window, kv_dtype=prec.kv
        )
        n_slide = model.num_sliding_layers
        if window > 0 and 0 < n_slide < L:
            # layers alternate sliding-window and global attention: each kind priced for its share
            share = n_slide / L
            ops += _attention_ops(
                phase, batch, q_len, keys, prefix, knobs, attn_count * share, hkv, width, fields, prec
            )
            ops += _attention_ops(
                phase,
                batch,
                q_len,
                keys,
                prefix,
                knobs,
                attn_count * (1 - share),
                hkv,
                width,
                dict(fields, window=0),
                prec,
            )
        else:
            ops += _attention_ops(
                phase, batch, q_len, keys, prefix, knobs, attn_count, hkv, width, fields, prec
            )
        ops.append(("o_proj", Gemm(tokens, h, hq * d, prec.math, prec.weights), n_attn))
    else:
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        latent = m.kv_lora_rank + m.qk_rope_head_dim
        if m.q_lora_rank:
            ops += [
                ("q_a_proj", Gemm(tokens, m.q_lora_rank, h, prec.math, prec.weights), n_attn),
                ("q_b_proj", Gemm(tokens, hq * qk, m.q_lora_rank, prec.math, prec.weights), n_attn),
            ]
        else:
            ops += [("q_proj", Gemm(tokens, hq * qk, h, prec.math, prec.weights), n_attn)]
        ops += [
            ("kv_a_proj", Gemm(tokens, latent, h, prec.math, prec.weights), n_kv),
            ("kv_append", Elementwise("kv_append", bytes=tokens * latent * (a + kvb)), n_kv),
        ]
        if not decode:
            # materialise per-head K and V from the latent, then ordinary attention
            ops += [
                (
                    "kv_b_proj",
                    Gemm(
                        batch * kv_len,
                        hq * (m.qk_nope_head_dim + m.v_head_dim),
                        m.kv_lora_rank,
                        prec.math,
                        prec.weights,
                    ),
                    n_kv,
                ),
                (
                    "attention",
                    Attention(
                        phase,
                        batch,
                        q_len,
                        kv_len,
                        hq,
                        hq,
                        qk,
                        True,
                        prec.activations,
                        v_head_dim=m.v_head_dim,
                        kv_dtype=prec.activations,
                    ),
                    attn_count,
                ),
            ]
        else:
            # weight-absorbed decode: attention over the shared latent (MQA-like)
            ops.append(
                (
                    "q_absorb",
                    Gemm(tokens, hq * m.kv_lora_rank, m.qk_nope_head_dim, prec.math, prec.weights),
                    n_attn,
                )
            )
            ops += _attention_ops(
                phase,
                batch,
                q_len,
                keys,
                prefix,
                knobs,
                attn_count,
                1,
                latent,
                dict(
                    q_heads=hq,
                    kv_heads=1,
                    head_dim=latent,
                    dtype=prec.activations,
                    v_head_dim=m.kv_lora_rank,
                    kv_shared=True,
                    kv_dtype=prec.kv,
                ),
                prec,
            )
            ops.append(
                ("v_absorb", Gemm(tokens, hq * m.v_head_dim, m.kv_lora_rank, prec.math, prec.weights), n_attn)
            )
        ops.append(("o_proj", Gemm(tokens, h, hq * m.v_head_dim, prec.math, prec.weights), n_attn))
    if n_attn < L:
        ops += _recurrent_ops(model, phase, batch, q_len, kv_len, prec, tp, knobs, L - n_attn)
    ops += [(n, o, c * L) for n, o, c in _all_reduce("attn_all_reduce", tokens, h, prec, tp)]
    ops += [_residual("attn_residual", tokens, h, a, L)]
    return ops


def _attention_ops(
    phase: Phase,
    batch,
    q_len,
    keys,
    prefix: int,
    knobs: Knobs | None,
    count,
    kv_heads: int,
    width: int,
    fields: dict,
    prec: Precision,
) -> OpList:
    """The attention op (or, with a prefix-aware kernel, suffix + prefix ops) and the KV dequantisation.

    ``keys`` are the keys each query reads; ``width`` the KV elements stored per
    key and head (used for the dequantisation count).
    """
    decode = phase is Phase.DECODE
    ops: OpList = []
    if prefix and knobs is not None and knobs.prefix_aware_kernel:
        # all sequences' queries against the prefix KV, read once: a matrix product over the batch;
        # a batch of one gains nothing and runs the ordinary kernel (no split, no partial-output merge)
        split = np.asarray(batch) > 1
        p = np.where(split, prefix * knobs.attention_density, 0.0)
        ops.append(("attention", Attention(phase, batch, q_len, keys - p, **fields), count))
        ops.append(
            (
                "prefix_attention",
                Attention(phase, split.astype(np.float64), batch * q_len, p, causal=False, **fields),
                count,
            )
        )
        read = batch * (keys - p) + p
    else:
        ops.append(("attention", Attention(phase, batch, q_len, keys, **fields), count))
        read = batch * keys
    per_el = DEQUANT_FLOPS_PER_ELEMENT.get(prec.kv, 0.0)
    if decode and per_el and prec.kv.bytes_per_element < prec.activations.bytes_per_element:
        elements = read * kv_heads * width
        ops.append(("kv_dequant", Elementwise("kv_dequant", bytes=0.0, flops=per_el * elements), count))
    return ops


def _recurrent_ops(
    model: ModelSpec, phase: Phase, batch, q_len, kv_len, prec: Precision, tp: int, knobs: Knobs, n_rec: int
) -> OpList:
    """Linear-attention / state-space layers of a hybrid stack, ``n_rec`` of them.

    Each keeps the attention layer's Q/K/V/O projection shapes (gated linear
    attention does) and replaces softmax attention by a per-head ``d x d`` state:
    prefill runs the chunked form (state update and read-out as matrix
    products, plus causal attention inside chunks of
    :data:`LINEAR_ATTENTION_CHUNK_TOKENS`); decode reads and writes the state once
    per step.  A state-space stack (``model.ssm``) runs its own mixer (:func:`_ssm_ops`).
    """
    if model.ssm is not None:
        return _ssm_ops(model, phase, batch, q_len, kv_len, prec, tp, n_rec)
    a = prec.activations.bytes_per_element
    h, d = model.hidden, model.head_dim
    hq = model.q_heads // tp
    tokens = batch * q_len
    state = _state_bytes_per_layer(model, knobs) / tp
    ops: OpList = [("recurrent.qkv_proj", Gemm(tokens, 3 * hq * d, h, prec.math, prec.weights), n_rec)]
    if phase is Phase.PREFILL:
        ops += [
            ("recurrent.state_update", Gemm(tokens, hq * d, d, prec.math, prec.activations), n_rec),
            ("recurrent.state_readout", Gemm(tokens, hq * d, d, prec.math, prec.activations), n_rec),
            (
                "recurrent.chunk_attention",
                Attention(
                    phase,
                    batch,
                    q_len,
                    kv_len,
                    hq,
                    hq,
                    d,
                    True,
                    prec.activations,
                    window=LINEAR_ATTENTION_CHUNK_TOKENS,
                ),
                n_rec,
            ),
        ]
    else:
        ops.append(
            (
                "recurrent.state",
                Elementwise(
                    "recurrent_state",
                    bytes=2 * batch * state + 3 * tokens * hq * d * a,
                    flops=4 * tokens * hq * d * d,
                ),
                n_rec,
            )
        )
    ops.append(("recurrent.o_proj", Gemm(tokens, h, hq * d, prec.math, prec.weights), n_rec))
    return ops


#: FLOPs per (token, channel, state element) of Mamba's selective scan: discretise (a multiply and an
#: exponential), the input term (two multiplies), the state update and the read-out (two multiply-adds).
#: An instruction count of the fused kernel, not a measurement.
SELECTIVE_SCAN_FLOPS_PER_ELEMENT = 9.0


def _ssm_ops(
    model: ModelSpec, phase: Phase, batch, q_len, kv_len, prec: Precision, tp: int, n: int
) -> OpList:
    """The mixer of ``n`` layers of a state-space stack (Mamba, Mamba-2) on one GPU of ``tp``.

    Projections are GEMMs (channels and heads split over ``tp``; Mamba's ``x_proj`` sums its split
    input with an all-reduce), the causal convolution is elementwise.  Prefill: Mamba's selective scan
    is one memory-bound pass (inputs read once, the state kept on chip,
    :data:`SELECTIVE_SCAN_FLOPS_PER_ELEMENT`); Mamba-2's SSD runs in chunks of ``chunk_tokens`` as
    matrix products: causal ``C B^T``-weighted attention inside each chunk (an attention op over
    ``tokens / chunk_tokens`` independent chunks, ``d_state``-wide scores, ``head_dim``-wide values)
    plus each chunk's state update and read-out.  Decode reads and writes the convolution and SSM state once per token, so a
    step costs the same at any context.
    """
    s = model.ssm
    a = prec.activations.bytes_per_element
    w = prec.weights.bytes_per_element
    h, N = model.hidden, s.d_state
    tokens = batch * q_len
    di = s.d_inner // tp
    conv = s.conv_channels(tp)
    decode = phase is Phase.DECODE
    conv_state = 2 * batch * s.conv_state_bytes(tp) if decode else 0.0  # read and write
    ssm_state = 2 * batch * s.ssm_state_bytes(tp) if decode else 0.0
    ops: OpList = []
    if s.kind is SsmKind.MAMBA:
        xw = s.dt_rank + 2 * N
        ops.append(("ssm.in_proj", Gemm(tokens, 2 * di, h, prec.math, prec.weights), n))
        ops.append(
            (
                "ssm.conv1d",
                Elementwise(
                    "causal_conv1d",
                    bytes=2 * tokens * conv * a + conv * s.d_conv * w + conv_state,
                    flops=2 * tokens * conv * s.d_conv,
                ),
                n,
            )
        )
        ops.append(("ssm.x_proj", Gemm(tokens, xw, di, prec.math, prec.weights), n))
        if tp > 1:
            ops.append(
                (
                    "ssm.x_proj_all_reduce",
                    Collective(OpKind.ALL_REDUCE, bytes=tokens * xw * a, world=tp, dtype=prec.activations),
                    n,
                )
            )
        ops.append(("ssm.dt_proj", Gemm(tokens, di, s.dt_rank, prec.math, prec.weights), n))
        # read u, delta, z and B, C; write y; in decode also read and write the state
        scan_bytes = tokens * (4 * di + 2 * N) * a + ssm_state
        ops.append(
            (
                "ssm.scan",
                Elementwise(
                    "selective_scan",
                    bytes=scan_bytes,
                    flops=SELECTIVE_SCAN_FLOPS_PER_ELEMENT * tokens * di * N,
                ),
                n,
            )
        )
    else:
        nh, P, g = s.num_heads // tp, s.head_dim, s.groups_per_gpu(tp)
        ops.append(("ssm.in_proj", Gemm(tokens, 2 * di + 2 * g * N + nh, h, prec.math, prec.weights), n))
        ops.append(
            (
                "ssm.conv1d",
                Elementwise(
                    "causal_conv1d",
                    bytes=2 * tokens * conv * a + conv * s.d_conv * w + conv_state,
                    flops=2 * tokens * conv * s.d_conv,
                ),
                n,
            )
        )
        if decode:
            ops.append(
                (
                    "ssm.state",
                    Elementwise(
                        "ssm_state",
                        bytes=ssm_state + tokens * (2 * di + 2 * g * N) * a,
                        flops=SELECTIVE_SCAN_FLOPS_PER_ELEMENT * tokens * di * N,
                    ),
                    n,
                )
            )
        else:
            # the chunks are independent blocks: causal attention of each chunk over itself
            chunk = np.minimum(q_len, s.chunk_tokens) if np.ndim(q_len) else min(q_len, s.chunk_tokens)
            ops += [
                (
                    "ssm.chunk_scan",
                    Attention(
                        phase, tokens / chunk, chunk, chunk, nh, g, N, True, prec.activations, v_head_dim=P
                    ),
                    n,
                ),
                ("ssm.chunk_state", Gemm(tokens, nh * P, N, prec.math, prec.activations), n),
                ("ssm.state_readout", Gemm(tokens, nh * P, N, prec.math, prec.activations), n),
            ]
        ops.append(
            (
                "ssm.gated_norm",
                Elementwise("gated_rmsnorm", bytes=3 * tokens * di * a, flops=6 * tokens * di),
                n,
            )
        )
    ops.append(("ssm.out_proj", Gemm(tokens, h, di, prec.math, prec.weights), n))
    return ops


def _mlp(prefix: str, tokens, h: int, inter: int, kind: MlpKind, prec: Precision, count=1) -> OpList:
    a = prec.activations.bytes_per_element
    if kind is MlpKind.GATED:
        return [
            (f"{prefix}gate_up_proj", Gemm(tokens, 2 * inter, h, prec.math, prec.weights), count),
            (
                f"{prefix}act_mul",
                Elementwise("silu_mul", bytes=3 * tokens * inter * a, flops=5 * tokens * inter),
                count,
            ),
            (f"{prefix}down_proj", Gemm(tokens, h, inter, prec.math, prec.weights), count),
        ]
    return [
        (f"{prefix}up_proj", Gemm(tokens, inter, h, prec.math, prec.weights), count),
        (f"{prefix}act", Elementwise("gelu", bytes=2 * tokens * inter * a, flops=8 * tokens * inter), count),
        (f"{prefix}down_proj", Gemm(tokens, h, inter, prec.math, prec.weights), count),
    ]


def _grouped_mlp(
    prefix: str, rows, groups, h: int, inter: int, kind: MlpKind, prec: Precision, count=1
) -> OpList:
    """Routed experts as one kernel per projection: ``rows`` token-expert pairs over ``groups``
    touched experts (gate/up fused in one grouped GEMM, the activation over all rows, down)."""
    a = prec.activations.bytes_per_element
    if kind is MlpKind.GATED:
        return [
            (
                f"{prefix}gate_up_proj",
                GroupedGemm(groups, rows, 2 * inter, h, prec.math, prec.weights),
                count,
            ),
            (
                f"{prefix}act_mul",
                Elementwise("silu_mul", bytes=3 * rows * inter * a, flops=5 * rows * inter),
                count,
            ),
            (f"{prefix}down_proj", GroupedGemm(groups, rows, h, inter, prec.math, prec.weights), count),
        ]
    return [
        (f"{prefix}up_proj", GroupedGemm(groups, rows, inter, h, prec.math, prec.weights), count),
        (f"{prefix}act", Elementwise("gelu", bytes=2 * rows * inter * a, flops=8 * rows * inter), count),
        (f"{prefix}down_proj", GroupedGemm(groups, rows, h, inter, prec.math, prec.weights), count),
    ]


#: bytes of one int64 index (expert ids, pair order, token of a pair)
_INDEX_BYTES = 8
#: PyTorch's ``index_select`` on CUDA runs its small-index kernel, whose threads loop over the indices,
#: for at most this many indices, and a vectorized gather above (``aten/src/ATen/native/cuda/Indexing.cu``,
#: ``index_select_out_cuda_impl``: ``numIndices <= 16``; the kernel names of the ``moe_permute`` records
#: show ``indexSelectSmallIndex`` up to 16 rows and ``vectorized_gather_kernel`` from 32)
TORCH_SMALL_INDEX = 16


def moe_routing_ops(
    tokens, num_experts: int, top_k: int, hidden: int, act_bytes: int
) -> dict[str, Elementwise]:
    """The routing steps of a MoE layer around its grouped GEMMs, as named elementwise kernels.

    ``tokens`` tokens, each routed to ``top_k`` of ``num_experts`` experts (``P = tokens * top_k``
    token-expert pairs), over a residual stream of ``hidden`` values of ``act_bytes`` bytes:

    * ``moe_route``: top-k of the router logits ``[T, E]`` and a softmax over the k kept;
    * ``moe_align``: the pairs sorted by expert by counting (a per-expert count, a prefix sum, a slot
      per pair from an atomic cursor: four launches; reads the ``P`` int64 ids twice, writes the token
      of each sorted pair and the slot of each pair);
    * ``moe_permute``: the ``P`` rows of the residual stream gathered in sorted order (``index_select``:
      up to :data:`TORCH_SMALL_INDEX` rows, each thread loops over the rows: ``P`` serial steps);
    * ``moe_combine``: each token's ``k`` expert output rows weighted, summed and written back in
      token order (one read of every pair row, one write of every token row; ``k`` serial steps).

    Their curves come from the profile's named elementwise kernels of the same names (measured as
    :mod:`perfmodel.validation` runs them), else from the elementwise class curve.  Engines that fold
    the gather and the un-permute into their grouped GEMMs (vLLM's ``fused_moe``) save the
    ``moe_permute`` bytes and part of ``moe_combine``'s.
    """
    a = act_bytes
    pairs = tokens * top_k
    return {
        "route": Elementwise(
            "moe_route",
            bytes=tokens * num_experts * a + pairs * (3 * a + _INDEX_BYTES),
            flops=5 * tokens * num_experts,
        ),
        "align": Elementwise("moe_align", bytes=4 * pairs * _INDEX_BYTES + 12 * num_experts),
        "permute": Elementwise(
            "moe_permute",
            bytes=2 * pairs * hidden * a + pairs * _INDEX_BYTES,
            serial_steps=_small_index_steps(pairs),
        ),
        "combine": Elementwise(
            "moe_combine",
            bytes=(pairs + tokens) * hidden * a + pairs * (a + _INDEX_BYTES),
            flops=2 * pairs * hidden,
            serial_steps=top_k,
        ),
    }


def _small_index_steps(indices):
    """Serial steps of an ``index_select`` of ``indices`` rows: the rows where PyTorch runs its small-index
    kernel (:data:`TORCH_SMALL_INDEX`), else 0 (an array for an array)."""
    out = np.where(np.asarray(indices) <= TORCH_SMALL_INDEX, indices, 0)
    return out if out.ndim else int(out)


def experts_touched(tokens, num_experts: int, top_k: int):
    """Expected distinct experts hit by ``tokens`` tokens routed uniformly at random to ``top_k`` of them."""
    t = np.asarray(tokens, dtype=np.float64)
    out = num_experts * (1.0 - (1.0 - top_k / num_experts) ** t)
    return out if out.ndim else float(out)


def _dense_mlp_block(model: ModelSpec, tokens, prec: Precision, tp: int) -> OpList:
    a = prec.activations.bytes_per_element
    ops = [_norm("post_norm", tokens, model.hidden, a)]
    ops += _mlp("", tokens, model.hidden, model.intermediate // tp, model.mlp, prec)
    ops += _all_reduce("mlp_all_reduce", tokens, model.hidden, prec, tp)
    ops += [_residual("mlp_residual", tokens, model.hidden, a)]
    return ops


def _moe_block(model: ModelSpec, tokens, prec: Precision, tp: int) -> OpList:
    """MoE feed-forward with experts sharded by TP and uniform routing.

    The routed experts run as serving engines run them (vLLM ``fused_moe``, SGLang, TensorRT-LLM):
    the token-expert pairs routed and sorted by expert, one grouped GEMM per projection over the
    touched experts (:func:`_grouped_mlp`), not one GEMM per expert, and the weighted sum back in
    token order (:func:`moe_routing_ops`).
    """
    m = model.moe
    a = prec.activations.bytes_per_element
    h = model.hidden
    touched = experts_touched(tokens, m.num_experts, m.top_k)
    route = moe_routing_ops(tokens, m.num_experts, m.top_k, h, a)
    ops: OpList = [
        _norm("post_norm", tokens, h, a),
        ("router", Gemm(tokens, m.num_experts, h, prec.math, prec.weights), 1),
        ("route", route["route"], 1),
        ("align", route["align"], 1),
        ("permute", route["permute"], 1),
    ]
    ops += _grouped_mlp("expert_", tokens * m.top_k, touched, h, m.expert_intermediate // tp, model.mlp, prec)
    ops += [("combine", route["combine"], 1)]
    if m.shared_experts:
        ops += _mlp("shared_", tokens, h, m.shared_experts * m.shared_intermediate // tp, model.mlp, prec)
    ops += _all_reduce("mlp_all_reduce", tokens, h, prec, tp)
    ops += [_residual("mlp_residual", tokens, h, a)]
    return ops


def model_ops(
    model: ModelSpec,
    phase: Phase,
    batch,
    q_len,
    kv_len,
    precision: Precision = Precision(),
    tp: int = 1,
    lm_head_rows=None,
    knobs: Knobs | None = None,
) -> OpList:
    """Ops of one forward pass on one GPU of a ``tp``-way tensor-parallel group.

    Parameters
    ----------
    batch : int or array
        Sequences in the pass.
    q_len : int or array
        New tokens per sequence (1 in decode).
    kv_len : int or array
        Keys each sequence attends to, including the new tokens.
    lm_head_rows : int or array, optional
        Rows the LM head runs on (default: one per sequence, as serving
        engines compute logits only for the last position). 0 skips it.
    knobs : Knobs, optional
        KV-cache what-if knobs (:mod:`perfmodel.knobs`); ``None`` or ``Knobs()``
        changes nothing.  In decode, ``kv_len`` is the sequence length: the
        knobs decide how many of its keys are kept and read.
    """
    if knobs is not None and not knobs.active:
        knobs = None
    if knobs is not None:
        model = effective_model(model, knobs)
        knobs.check(model)
        precision = apply_knobs(precision, knobs)
        if len(knobs.layer_keep(model.num_layers)) > 1:
            return _scheduled_ops(model, phase, batch, q_len, kv_len, precision, tp, lm_head_rows, knobs)
    check_tp(model, tp)
    a = precision.activations.bytes_per_element
    w = precision.weights.bytes_per_element
    h = model.hidden
    tokens = batch * q_len
    rows = batch if lm_head_rows is None else lm_head_rows
    attn = _attention_block(model, phase, batch, q_len, kv_len, precision, tp, knobs)
    ops: OpList = [("embedding", Elementwise("embedding", bytes=tokens * h * (a + w)), 1)]
    n_moe = model.num_moe_layers
    n_dense = model.num_layers - n_moe
    ops += attn
    if n_dense and model.has_mlp:
        ops += [(f"dense.{n}", o, c * n_dense) for n, o, c in _dense_mlp_block(model, tokens, precision, tp)]
    if n_moe:
        ops += [(f"moe.{n}", o, c * n_moe) for n, o, c in _moe_block(model, tokens, precision, tp)]
    if not (np.ndim(rows) == 0 and rows == 0):
        ops += lm_head_ops(model, rows, precision, tp)
    way = default_collective_launch(phase)  # decode: in a CUDA graph; prefill: back to back
    return [
        (n, dataclasses.replace(o, launch=way) if isinstance(o, Collective) and o.launch is None else o, c)
        for n, o, c in ops
    ]


def _scheduled_ops(
    model: ModelSpec,
    phase: Phase,
    batch,
    q_len,
    kv_len,
    precision: Precision,
    tp: int,
    lm_head_rows,
    knobs: Knobs,
) -> OpList:
    """:func:`model_ops` under a per-layer ``keep_schedule``: each run of layers that keeps fraction ``f`` is
    priced as the whole stack at ratio ``f`` (the uniform-ratio ops), its counts scaled by its share of the
    layers.  Decode reads ``ceil(f n)`` keys in those layers; with ``prune_prefill`` a prefill pass runs
    those layers on ``f / f_0`` of its tokens and keys (``f_0``: the first layer's fraction, which
    :meth:`Knobs.prefill_tokens` already applied to the prompt).  The embedding runs once, on the first
    run's tokens; the LM head once."""
    L = model.num_layers
    segs = knobs.layer_keep(L)
    f0 = segs[0][1]
    prune = phase is Phase.PREFILL and knobs.prune_prefill
    ops: OpList = []
    for i, (n, f) in enumerate(segs):
        seg_knobs = knobs.replace(keep_schedule=(), kv_keep_ratio=f, prune_prefill=False)
        scale = f / f0 if prune else 1.0
        q, kv = (q_len * scale, kv_len * scale) if prune else (q_len, kv_len)
        part = model_ops(model, phase, batch, q, kv, precision, tp, 0, seg_knobs)
        ops += [
            (name, o, c if name == "embedding" else c * (n / L))
            for name, o, c in part
            if name != "embedding" or i == 0
        ]
    rows = batch if lm_head_rows is None else lm_head_rows
    if not (np.ndim(rows) == 0 and rows == 0):
        way = default_collective_launch(phase)
        ops += [
            (
                name,
                dataclasses.replace(o, launch=way) if isinstance(o, Collective) and o.launch is None else o,
                c,
            )
            for name, o, c in lm_head_ops(model, rows, precision, tp)
        ]
    return ops


def lm_head_ops(model: ModelSpec, rows, precision: Precision = Precision(), tp: int = 1) -> OpList:
    """Final norm and LM head on ``rows`` positions; vocab-parallel under TP, logits gathered."""
    a = precision.activations.bytes_per_element
    ops: OpList = [
        _norm("final_norm", rows, model.hidden, a),
        ("lm_head", Gemm(rows, -(-model.vocab // tp), model.hidden, precision.math, precision.weights), 1),
    ]
    if tp > 1:
        ops.append(
            (
                "logits_all_gather",
                Collective(OpKind.ALL_GATHER, bytes=rows * model.vocab * 4.0, world=tp, dtype=Dtype.FP32),
                1,
            )
        )
    return ops


def activation_bytes(model: ModelSpec, tokens, precision: Precision, tp: int = 1):
    """Peak activation memory of one forward pass of ``tokens`` tokens on one GPU, bytes.

    Live at once at the MLP, the widest point: the residual stream and its
    normalised copy, the fused gate/up output and the activated product, plus
    fp32 logits for one row per sequence (bounded by the token count).
    """
    a = precision.activations.bytes_per_element
    if model.ssm is not None:  # the mixer's input projection is the widest point
        s = model.ssm
        width = 2 * s.d_inner + 2 * s.n_groups * s.d_state + (s.num_heads if s.kind is SsmKind.MAMBA2 else 0)
        return tokens * (2 * model.hidden + width / tp) * a
    inter = (
        model.intermediate
        if model.moe is None
        else max(
            model.intermediate if model.num_dense_layers else 0,
            model.moe.expert_intermediate * model.moe.top_k
            + model.moe.shared_experts * model.moe.shared_intermediate,
        )
    )
    per_token = (2 * model.hidden + 3 * inter / tp) * a
    qkv = (model.q_heads + 2 * model.kv_heads) * model.head_dim / tp * a + model.hidden * a
    per_token = np.maximum(per_token, qkv)
    return tokens * per_token
