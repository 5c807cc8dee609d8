"""Model architectures from Hugging Face ``config.json`` keys.

Shipped configs live in ``perfmodel/configs/<name>.json`` (no network access is
ever needed); a user may pass the path of any ``config.json`` instead of a name.
Parameter and byte counts are exact for the architecture the config describes.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from perfmodel.checks import finite_json_loads
from hw.spec import Dtype
from perfmodel.errors import ModelConfigError, UnknownModelError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class MlpKind(str, enum.Enum):
    GATED = "gated"  # SwiGLU/GeGLU: gate, up and down projections
    PLAIN = "plain"  # up and down projections (GPT-style)


class AttentionKind(str, enum.Enum):
    MHA = "mha"
    GQA = "gqa"
    MQA = "mqa"
    MLA = "mla"  # DeepSeek multi-head latent attention


@dataclass(frozen=True)
class MoESpec:
    """Mixture-of-experts feed-forward layers.

    Attributes
    ----------
    num_experts : int
        Routed experts per MoE layer.
    top_k : int
        Routed experts per token.
    expert_intermediate : int
        Intermediate size of one routed expert.
    shared_experts : int
        Always-active experts per MoE layer (DeepSeek); 0 for none.
    shared_intermediate : int
        Intermediate size of one shared expert.
    first_dense_layers : int
        Leading layers that use a dense MLP instead (DeepSeek ``first_k_dense_replace``).
    layer_freq : int
        Every ``layer_freq``-th layer (after the dense ones) is MoE.
    router_bias : bool
        The router has one bias per routed expert (DeepSeek-V3's
        ``e_score_correction_bias``, present when ``topk_method`` is ``noaux_tc``).
    """

    num_experts: int
    top_k: int
    expert_intermediate: int
    shared_experts: int = 0
    shared_intermediate: int = 0
    first_dense_layers: int = 0
    layer_freq: int = 1
    router_bias: bool = False


@dataclass(frozen=True)
class MlaSpec:
    """DeepSeek multi-head latent attention dimensions."""

    kv_lora_rank: int
    q_lora_rank: int  # 0 when queries are projected directly
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer.

    Derived quantities (parameter counts, KV bytes) are properties and methods,
    never stored.
    """

    name: str
    num_layers: int
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    max_context: int = 0
    mlp: MlpKind = MlpKind.GATED
    attention_bias: bool = False  # biases on q, k, v (Qwen2, Llama ``attention_bias``) or all linear layers (GPT)
    linear_bias: bool = False  # biases on every linear layer and LayerNorm (GPT)
    output_bias: bool = False  # bias on the attention output projection (Llama ``attention_bias``)
    mlp_bias: bool = False  # biases on the MLP projections (Llama ``mlp_bias``)
    learned_positions: bool = False
    sliding_window: int = 0  # 0: full attention
    moe: MoESpec | None = None
    mla: MlaSpec | None = None

    # ---- structure -------------------------------------------------------
    @property
    def attention_kind(self) -> AttentionKind:
        if self.mla is not None:
            return AttentionKind.MLA
        if self.kv_heads == self.q_heads:
            return AttentionKind.MHA
        if self.kv_heads == 1:
            return AttentionKind.MQA
        return AttentionKind.GQA

    def is_moe_layer(self, index: int) -> bool:
        m = self.moe
        if m is None:
            return False
        return index >= m.first_dense_layers and (index - m.first_dense_layers) % m.layer_freq == 0

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    # ---- parameter counts --------------------------------------------------
    @property
    def attention_params(self) -> int:
        """Parameters of one attention block (projections, biases)."""
        h = self.hidden
        if self.mla is not None:
            a = self.mla
            qk = a.qk_nope_head_dim + a.qk_rope_head_dim
            if a.q_lora_rank:
                q = h * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * self.q_heads * qk
            else:
                q = h * self.q_heads * qk
            kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
            kv += a.kv_lora_rank * self.q_heads * (a.qk_nope_head_dim + a.v_head_dim)
            o = self.q_heads * a.v_head_dim * h
            return q + kv + o
        qd = self.q_heads * self.head_dim
        kvd = self.kv_heads * self.head_dim
        n = h * qd + 2 * h * kvd + qd * h
        if self.attention_bias or self.linear_bias:
            n += qd + 2 * kvd
        if self.linear_bias or self.output_bias:
            n += h
        return n

    def _mlp_params(self, intermediate: int) -> int:
        h = self.hidden
        if self.mlp is MlpKind.GATED:
            n = 3 * h * intermediate
        else:
            n = 2 * h * intermediate
        if self.linear_bias or self.mlp_bias:
            n += intermediate * (2 if self.mlp is MlpKind.GATED else 1) + h
        return n

    @property
    def dense_mlp_params(self) -> int:
        return self._mlp_params(self.intermediate)

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        if self.moe is None:
            return 0
        return self._mlp_params(self.moe.expert_intermediate)

    def moe_mlp_params(self, active: bool = False) -> int:
        """Parameters of one MoE block: router, routed experts (all or top-k), shared experts."""
        m = self.moe
        if m is None:
            return 0
        experts = m.top_k if active else m.num_experts
        router = self.hidden * m.num_experts + (m.num_experts if m.router_bias else 0)
        shared = m.shared_experts * self._mlp_params(m.shared_intermediate) if m.shared_experts else 0
        return router + experts * self.expert_params + shared

    @property
    def norm_params_per_layer(self) -> int:
        return 2 * self.hidden * (2 if self.linear_bias else 1)

    @property
    def embedding_params(self) -> int:
        n = self.vocab * self.hidden
        if self.learned_positions:
            n += self.max_context * self.hidden
        return n

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    def param_count(self, active: bool = False) -> int:
        """Exact parameter count; ``active`` counts only top-k routed experts."""
        per_layer = self.attention_params + self.norm_params_per_layer
        total = self.num_layers * per_layer
        total += self.num_dense_layers * self.dense_mlp_params
        total += self.num_moe_layers * self.moe_mlp_params(active=active)
        total += self.embedding_params + self.lm_head_params
        total += self.hidden * (2 if self.linear_bias else 1)  # final norm
        return total

    def weight_bytes(self, dtype: Dtype | str = Dtype.BF16) -> int:
        """Bytes of all weights at one storage format (rounded up to a byte)."""
        return math.ceil(self.param_count() * Dtype.parse(dtype).bytes_per_element)

    # ---- KV cache -------------------------------------------------------
    @property
    def kv_elements_per_token(self) -> int:
        """KV-cache elements stored per token over all layers."""
        if self.mla is not None:
            return self.num_layers * (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim)
        return 2 * self.num_layers * self.kv_heads * self.head_dim

    def kv_bytes_per_token(self, dtype: Dtype | str = Dtype.BF16) -> float:
        return self.kv_elements_per_token * Dtype.parse(dtype).bytes_per_element

    def with_overrides(self, **changes: Any) -> ModelSpec:
        return replace(self, **changes)


# ---------------------------------------------------------------------------
# config.json parsing


def _get(cfg: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


def _is_int(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value == int(value)
    )


def _positive_int(name: str, key: str, value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise ModelConfigError(f"model {name}: {key} must be a positive integer, got {value!r}")
    return int(value)


def _nonneg_int(name: str, key: str, value: Any) -> int:
    """A count that may be absent (``None`` reads as 0) or zero."""
    if value is None:
        return 0
    if not _is_int(value) or value < 0:
        raise ModelConfigError(f"model {name}: {key} must be a non-negative integer, got {value!r}")
    return int(value)


def spec_from_config(cfg: dict[str, Any], name: str = "custom") -> ModelSpec:
    """Build a :class:`ModelSpec` from Hugging Face ``config.json`` keys.

    Understands Llama/Mistral/Qwen2/Yi keys, Mixtral and DeepSeek MoE keys,
    DeepSeek MLA keys, ``sliding_window``, and GPT-2/GPT-3 style keys
    (``n_layer``, ``n_embd``, ``n_head``, ``n_inner``).
    """
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"model {name}: config must be a JSON object")
    gpt_style = "n_embd" in cfg
    layers = _positive_int(name, "num_hidden_layers", _get(cfg, "num_hidden_layers", "n_layer"))
    hidden = _positive_int(name, "hidden_size", _get(cfg, "hidden_size", "n_embd"))
    q_heads = _positive_int(name, "num_attention_heads", _get(cfg, "num_attention_heads", "n_head"))
    kv_heads = _positive_int(name, "num_key_value_heads", _get(cfg, "num_key_value_heads", default=q_heads))
    head_dim = _get(cfg, "head_dim", default=None) or hidden // q_heads
    head_dim = _positive_int(name, "head_dim", head_dim)
    vocab = _positive_int(name, "vocab_size", _get(cfg, "vocab_size"))
    if q_heads % kv_heads:
        raise ModelConfigError(f"model {name}: {q_heads} query heads not divisible by {kv_heads} KV heads")
    inter_default = 4 * hidden if gpt_style else None
    intermediate = _positive_int(name, "intermediate_size", _get(cfg, "intermediate_size", "n_inner", default=inter_default))
    max_ctx = _nonneg_int(name, "max_position_embeddings", _get(cfg, "max_position_embeddings", "n_positions", "n_ctx", default=0))
    # Llama-family configs have gated MLPs; GPT-style configs (or gated_mlp: false) plain ones.
    mlp = MlpKind.PLAIN if gpt_style or cfg.get("gated_mlp") is False else MlpKind.GATED
    window = _nonneg_int(name, "sliding_window", _get(cfg, "sliding_window", default=0))
    if cfg.get("use_sliding_window") is False:
        window = 0
    moe = None
    n_experts = _nonneg_int(
        name, "num_local_experts", _get(cfg, "num_local_experts", "n_routed_experts", "num_experts", default=0)
    )
    if n_experts:
        top_k = _positive_int(name, "num_experts_per_tok", _get(cfg, "num_experts_per_tok", default=0))
        if top_k > n_experts:
            raise ModelConfigError(f"model {name}: num_experts_per_tok {top_k} exceeds the {n_experts} experts")
        exp_inter = _positive_int(name, "moe_intermediate_size", _get(cfg, "moe_intermediate_size", default=intermediate))
        n_shared = _nonneg_int(name, "n_shared_experts", _get(cfg, "n_shared_experts", default=0))
        first_dense = _nonneg_int(name, "first_k_dense_replace", _get(cfg, "first_k_dense_replace", default=0))
        if first_dense > layers:
            raise ModelConfigError(f"model {name}: first_k_dense_replace {first_dense} exceeds {layers} layers")
        moe = MoESpec(
            num_experts=n_experts,
            top_k=top_k,
            expert_intermediate=exp_inter,
            shared_experts=n_shared,
            shared_intermediate=exp_inter if n_shared else 0,
            first_dense_layers=first_dense,
            layer_freq=_positive_int(name, "moe_layer_freq", _get(cfg, "moe_layer_freq", default=1)),
            router_bias=cfg.get("topk_method") == "noaux_tc",
        )
    mla = None
    if _get(cfg, "kv_lora_rank", default=None):
        mla = MlaSpec(
            kv_lora_rank=_positive_int(name, "kv_lora_rank", cfg["kv_lora_rank"]),
            q_lora_rank=_nonneg_int(name, "q_lora_rank", _get(cfg, "q_lora_rank", default=0)),
            qk_rope_head_dim=_positive_int(name, "qk_rope_head_dim", cfg.get("qk_rope_head_dim")),
            qk_nope_head_dim=_positive_int(name, "qk_nope_head_dim", cfg.get("qk_nope_head_dim")),
            v_head_dim=_positive_int(name, "v_head_dim", cfg.get("v_head_dim")),
        )
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        kv_heads = q_heads
    # Qwen2 puts biases on q, k and v only; Llama's ``attention_bias`` also
    # covers the output projection.
    qwen2 = cfg.get("model_type") == "qwen2"
    explicit_bias = bool(_get(cfg, "attention_bias", "qkv_bias", default=False))
    qkv_bias = explicit_bias or qwen2
    o_bias = bool(cfg.get("attention_bias", False)) and not qwen2
    return ModelSpec(
        name=name,
        num_layers=layers,
        hidden=hidden,
        q_heads=q_heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=intermediate,
        vocab=vocab,
        tied_embeddings=bool(_get(cfg, "tie_word_embeddings", default=gpt_style)),
        max_context=max_ctx,
        mlp=mlp,
        attention_bias=qkv_bias,
        output_bias=o_bias,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        linear_bias=gpt_style,
        learned_positions=gpt_style,
        sliding_window=int(window),
        moe=moe,
        mla=mla,
    )


def list_models() -> list[str]:
    """Names of the shipped model configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@functools.lru_cache(maxsize=64)
def _load_file(path: str, name: str) -> ModelSpec:
    try:
        cfg = finite_json_loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelConfigError(f"model config not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path}: not valid JSON (line {exc.lineno})") from None
    return spec_from_config(cfg, name)


def load_model(name_or_path: str | Path | ModelSpec) -> ModelSpec:
    """Load a shipped model by name, or any ``config.json`` by path."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    text = str(name_or_path).strip()
    p = Path(text)
    if text.endswith(".json") or p.is_file():
        return _load_file(str(p.resolve()), p.parent.name if p.name == "config.json" else p.stem)
    key = text.lower()
    if key not in list_models():
        raise UnknownModelError(f"unknown model {text!r}; known: {', '.join(list_models())}")
    return _load_file(str(CONFIG_DIR / f"{key}.json"), key)
