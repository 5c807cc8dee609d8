"""A model's forward pass as a list of ops, per GPU under tensor parallelism.

``model_ops`` returns ``(name, op, count)`` triples; ``count`` is how many
times the op runs per forward pass (layers of that kind, experts touched).
Sizes (batch, q_len, kv_len) may be numpy arrays: every op field then is an
array of the broadcast shape, and so are the costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.spec import Dtype
from perfmodel.errors import InvalidInputError
from perfmodel.models import MlpKind, ModelSpec
from perfmodel.ops import Attention, Collective, Elementwise, Gemm, Op, OpKind, Phase

OpList = list[tuple[str, Op, Any]]


@dataclass(frozen=True)
class Precision:
    """Storage formats of weights, activations and the KV cache."""

    weights: Dtype = Dtype.BF16
    activations: Dtype = Dtype.BF16
    kv: Dtype = Dtype.BF16

    @classmethod
    def of(cls, weights="bf16", activations="bf16", kv=None) -> "Precision":
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


def kv_bytes_per_token_per_gpu(model: ModelSpec, tp: int, kv_dtype: Dtype) -> float:
    """KV-cache bytes per token on one GPU of a TP group.

    MLA's latent cache is replicated on every GPU (it has no head axis).
    """
    if model.mla is not None:
        return model.kv_bytes_per_token(kv_dtype)
    return 2 * model.num_layers * kv_heads_per_gpu(model, tp) * model.head_dim * kv_dtype.bytes_per_element


def _norm(name: str, tokens, h: int, a: float) -> tuple[str, Op, int]:
    return (name, Elementwise("rmsnorm", bytes=2 * tokens * h * a + h * a, flops=4 * tokens * h), 1)


def _residual(name: str, tokens, h: int, a: float) -> tuple[str, Op, int]:
    return (name, Elementwise("residual_add", bytes=3 * tokens * h * a, flops=tokens * h), 1)


def _all_reduce(name: str, tokens, h: int, prec: Precision, tp: int) -> list:
    if tp <= 1:
        return []
    return [(name, Collective(OpKind.ALL_REDUCE, bytes=tokens * h * prec.activations.bytes_per_element, world=tp, dtype=prec.activations), 1)]


def _attention_block(model: ModelSpec, phase: Phase, batch, q_len, kv_len, prec: Precision, tp: int) -> OpList:
    a = prec.activations.bytes_per_element
    kvb = prec.kv.bytes_per_element
    h, d = model.hidden, model.head_dim
    tokens = batch * q_len
    hq = model.q_heads // tp
    ops: OpList = [_norm("input_norm", tokens, h, a)]
    m = model.mla
    if m is None:
        hkv = kv_heads_per_gpu(model, tp)
        ops += [
            ("qkv_proj", Gemm(tokens, (hq + 2 * hkv) * d, h, prec.math, prec.weights), 1),
            ("rope", Elementwise("rope", bytes=2 * tokens * (hq + hkv) * d * a, flops=3 * tokens * (hq + hkv) * d), 1),
            ("kv_append", Elementwise("kv_append", bytes=2 * tokens * hkv * d * (a + kvb)), 1),
            ("attention", Attention(phase, batch, q_len, kv_len, hq, hkv, d, True, prec.activations,
                                    window=model.sliding_window, kv_dtype=prec.kv), 1),
            ("o_proj", Gemm(tokens, h, hq * d, prec.math, prec.weights), 1),
        ]
    else:
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        latent = m.kv_lora_rank + m.qk_rope_head_dim
        if m.q_lora_rank:
            ops += [("q_a_proj", Gemm(tokens, m.q_lora_rank, h, prec.math, prec.weights), 1),
                    ("q_b_proj", Gemm(tokens, hq * qk, m.q_lora_rank, prec.math, prec.weights), 1)]
        else:
            ops += [("q_proj", Gemm(tokens, hq * qk, h, prec.math, prec.weights), 1)]
        ops += [
            ("kv_a_proj", Gemm(tokens, latent, h, prec.math, prec.weights), 1),
            ("kv_append", Elementwise("kv_append", bytes=tokens * latent * (a + kvb)), 1),
        ]
        if phase is Phase.PREFILL:
            # materialise per-head K and V from the latent, then ordinary attention
            ops += [
                ("kv_b_proj", Gemm(batch * kv_len, hq * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank,
                                   prec.math, prec.weights), 1),
                ("attention", Attention(phase, batch, q_len, kv_len, hq, hq, qk, True, prec.activations,
                                        v_head_dim=m.v_head_dim, kv_dtype=prec.activations), 1),
            ]
        else:
            # weight-absorbed decode: attention over the shared latent (MQA-like)
            ops += [
                ("q_absorb", Gemm(tokens, hq * m.kv_lora_rank, m.qk_nope_head_dim, prec.math, prec.weights), 1),
                ("attention", Attention(phase, batch, q_len, kv_len, hq, 1, latent, True, prec.activations,
                                        v_head_dim=m.kv_lora_rank, kv_shared=True, kv_dtype=prec.kv), 1),
                ("v_absorb", Gemm(tokens, hq * m.v_head_dim, m.kv_lora_rank, prec.math, prec.weights), 1),
            ]
        ops += [("o_proj", Gemm(tokens, h, hq * m.v_head_dim, prec.math, prec.weights), 1)]
    ops += _all_reduce("attn_all_reduce", tokens, h, prec, tp)
    ops += [_residual("attn_residual", tokens, h, a)]
    return ops


def _mlp(prefix: str, tokens, h: int, inter: int, kind: MlpKind, prec: Precision, count=1) -> OpList:
    a = prec.activations.bytes_per_element
    if kind is MlpKind.GATED:
        return [
            (f"{prefix}gate_up_proj", Gemm(tokens, 2 * inter, h, prec.math, prec.weights), count),
            (f"{prefix}act_mul", Elementwise("silu_mul", bytes=3 * tokens * inter * a, flops=5 * tokens * inter), count),
            (f"{prefix}down_proj", Gemm(tokens, h, inter, prec.math, prec.weights), count),
        ]
    return [
        (f"{prefix}up_proj", Gemm(tokens, inter, h, prec.math, prec.weights), count),
        (f"{prefix}act", Elementwise("gelu", bytes=2 * tokens * inter * a, flops=8 * tokens * inter), count),
        (f"{prefix}down_proj", Gemm(tokens, h, inter, prec.math, prec.weights), count),
    ]


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
    """MoE feed-forward with experts sharded by TP and uniform routing."""
    m = model.moe
    a = prec.activations.bytes_per_element
    h = model.hidden
    touched = experts_touched(tokens, m.num_experts, m.top_k)
    rows_per_expert = tokens * m.top_k / touched
    ops: OpList = [
        _norm("post_norm", tokens, h, a),
        ("router", Gemm(tokens, m.num_experts, h, prec.math, prec.weights), 1),
    ]
    ops += _mlp("expert_", rows_per_expert, h, m.expert_intermediate // tp, model.mlp, prec, count=touched)
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
    """
    check_tp(model, tp)
    a = precision.activations.bytes_per_element
    w = precision.weights.bytes_per_element
    h = model.hidden
    tokens = batch * q_len
    rows = batch if lm_head_rows is None else lm_head_rows
    attn = _attention_block(model, phase, batch, q_len, kv_len, precision, tp)
    ops: OpList = [("embedding", Elementwise("embedding", bytes=tokens * h * (a + w)), 1)]
    n_moe = model.num_moe_layers
    n_dense = model.num_layers - n_moe
    ops += [(name, op, c * model.num_layers) for name, op, c in attn]
    if n_dense:
        ops += [(f"dense.{n}", o, c * n_dense) for n, o, c in _dense_mlp_block(model, tokens, precision, tp)]
    if n_moe:
        ops += [(f"moe.{n}", o, c * n_moe) for n, o, c in _moe_block(model, tokens, precision, tp)]
    if not (np.ndim(rows) == 0 and rows == 0):
        ops += lm_head_ops(model, rows, precision, tp)
    return ops


def lm_head_ops(model: ModelSpec, rows, precision: Precision = Precision(), tp: int = 1) -> OpList:
    """Final norm and LM head on ``rows`` positions; vocab-parallel under TP, logits gathered."""
    a = precision.activations.bytes_per_element
    ops: OpList = [
        _norm("final_norm", rows, model.hidden, a),
        ("lm_head", Gemm(rows, -(-model.vocab // tp), model.hidden, precision.math, precision.weights), 1),
    ]
    if tp > 1:
        ops.append(("logits_all_gather", Collective(OpKind.ALL_GATHER, bytes=rows * model.vocab * 4.0, world=tp,
                                                    dtype=Dtype.FP32), 1))
    return ops


def activation_bytes(model: ModelSpec, tokens, precision: Precision, tp: int = 1):
    """Peak activation memory of one forward pass of ``tokens`` tokens on one GPU, bytes.

    Live at once at the MLP, the widest point: the residual stream and its
    normalised copy, the fused gate/up output and the activated product, plus
    fp32 logits for one row per sequence (bounded by the token count).
    """
    a = precision.activations.bytes_per_element
    inter = model.intermediate if model.moe is None else max(
        model.intermediate if model.num_dense_layers else 0,
        model.moe.expert_intermediate * model.moe.top_k + model.moe.shared_experts * model.moe.shared_intermediate,
    )
    per_token = (2 * model.hidden + 3 * inter / tp) * a
    qkv = (model.q_heads + 2 * model.kv_heads) * model.head_dim / tp * a + model.hidden * a
    per_token = np.maximum(per_token, qkv)
    return tokens * per_token
