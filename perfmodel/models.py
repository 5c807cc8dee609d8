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

import numpy as np

from perfmodel.checks import finite_json_loads
from perfmodel.hw.spec import Dtype
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
    NONE = "none"  # a pure state-space stack (Mamba): no attention layer


class SsmKind(str, enum.Enum):
    """The state-space mixer of a Mamba stack."""

    MAMBA = "mamba"  # selective scan, one state of ``d_state`` per channel (Gu & Dao, arXiv 2312.00752)
    MAMBA2 = "mamba2"  # SSD: scalar decay per head, ``head_dim x d_state`` state per head (arXiv 2405.21060)


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
    shared_gate: bool = False  # a ``hidden x 1`` sigmoid gate on the shared expert (Qwen2-MoE)


@dataclass(frozen=True)
class MlaSpec:
    """DeepSeek multi-head latent attention dimensions."""

    kv_lora_rank: int
    q_lora_rank: int  # 0 when queries are projected directly
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class SsmSpec:
    """The mixer of every layer of a pure state-space stack (Mamba, Mamba-2).

    Attributes
    ----------
    kind : SsmKind
    d_inner : int
        Channels of the mixer (``expand * hidden``).
    d_state : int
        State size per channel (Mamba) or per head dimension (Mamba-2), the config's ``state_size``.
    d_conv : int
        Width of the causal depthwise convolution (``conv_kernel``).
    num_heads : int
        Mamba-2 heads (``d_inner / head_dim``); Mamba: ``d_inner`` (every channel its own recurrence).
    head_dim : int
        Channels per head (Mamba: 1).
    n_groups : int
        Mamba-2 groups sharing ``B`` and ``C`` (Mamba: 1).
    dt_rank : int
        Rank of Mamba's time-step projection (Mamba-2: 0, one time step per head).
    chunk_tokens : int
        Mamba-2's SSD chunk length (``chunk_size``); Mamba: 0.
    proj_bias, conv_bias : bool
        Biases on the in/out projections (``use_bias``) and on the convolution (``use_conv_bias``).
    """

    kind: SsmKind
    d_inner: int
    d_state: int
    d_conv: int
    num_heads: int
    head_dim: int
    n_groups: int = 1
    dt_rank: int = 0
    chunk_tokens: int = 0
    proj_bias: bool = False
    conv_bias: bool = True

    def conv_channels(self, tp: int = 1) -> int:
        """Channels the convolution runs over on one GPU of ``tp``: x (Mamba), or x, B and C (Mamba-2;
        groups fewer than ``tp`` are replicated)."""
        if self.kind is SsmKind.MAMBA:
            return self.d_inner // tp
        return self.d_inner // tp + 2 * self.groups_per_gpu(tp) * self.d_state

    def groups_per_gpu(self, tp: int = 1) -> int:
        """Mamba-2 ``B``/``C`` groups one GPU of ``tp`` holds (replicated when ``tp`` exceeds them)."""
        return -(-self.n_groups // tp)

    def mixer_params(self, hidden: int) -> int:
        """Parameters of one mixer (projections, convolution, ``A``, ``D``, time-step terms, Mamba-2's norm)."""
        di, n = self.d_inner, self.d_state
        conv = self.conv_channels()
        conv_params = conv * self.d_conv + (conv if self.conv_bias else 0)
        out = di * hidden + (hidden if self.proj_bias else 0)
        if self.kind is SsmKind.MAMBA:
            in_proj = hidden * 2 * di + (2 * di if self.proj_bias else 0)
            x_proj = di * (self.dt_rank + 2 * n)
            dt_proj = self.dt_rank * di + di
            return in_proj + conv_params + x_proj + dt_proj + di * n + di + out
        width = 2 * di + 2 * self.n_groups * n + self.num_heads
        in_proj = hidden * width + (width if self.proj_bias else 0)
        return in_proj + conv_params + 3 * self.num_heads + di + out  # dt_bias, A_log, D; the gated norm

    def state_bytes(self, tp: int = 1, dtype: "Dtype | str" = Dtype.BF16) -> float:
        """Recurrent state of one layer for one sequence on one GPU of ``tp``: the convolution's last
        ``d_conv`` inputs and the SSM state, bytes (stored in the model's format, as the reference
        implementations' inference caches are)."""
        return self.conv_state_bytes(tp, dtype) + self.ssm_state_bytes(tp, dtype)

    def conv_state_bytes(self, tp: int = 1, dtype: "Dtype | str" = Dtype.BF16) -> float:
        """The convolution's last ``d_conv`` inputs of one layer and sequence on one GPU, bytes."""
        return float(self.conv_channels(tp) * self.d_conv * Dtype.parse(dtype).bytes_per_element)

    def ssm_state_bytes(self, tp: int = 1, dtype: "Dtype | str" = Dtype.BF16) -> float:
        """The SSM state of one layer and sequence on one GPU (``d_inner / tp x d_state`` values), bytes."""
        return float(self.d_inner // tp * self.d_state * Dtype.parse(dtype).bytes_per_element)


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
    attention_bias: bool = (
        False  # biases on q, k, v (Qwen2, Llama ``attention_bias``) or all linear layers (GPT)
    )
    linear_bias: bool = False  # biases on every linear layer and LayerNorm (GPT)
    output_bias: bool = False  # bias on the attention output projection (Llama ``attention_bias``)
    mlp_bias: bool = False  # biases on the MLP projections (Llama ``mlp_bias``)
    learned_positions: bool = False
    sliding_window: int = 0  # 0: full attention
    moe: MoESpec | None = None
    mla: MlaSpec | None = None
    sliding_layers: int | None = None  # layers using ``sliding_window``; None: all (the rest keep every key)
    norms_per_layer: int = 2  # RMSNorms per decoder layer (Gemma-2/3: 4)
    qk_norm: bool = False  # RMSNorm of ``head_dim`` on queries and keys (Gemma-3)
    activation: str = ""  # the config's ``hidden_act`` / ``hidden_activation``, as read
    weight_dtype: str | None = (
        None  # the weights' storage format the config declares (``quantization_config``)
    )
    ssm: SsmSpec | None = None  # a pure state-space stack: every layer a Mamba mixer, no attention, no MLP

    # ---- structure -------------------------------------------------------
    @property
    def attention_kind(self) -> AttentionKind:
        if self.ssm is not None:
            return AttentionKind.NONE
        if self.mla is not None:
            return AttentionKind.MLA
        if self.kv_heads == self.q_heads:
            return AttentionKind.MHA
        if self.kv_heads == 1:
            return AttentionKind.MQA
        return AttentionKind.GQA

    def is_moe_layer(self, index: int) -> bool:
        """Whether decoder layer ``index`` (0-based) is an MoE layer (False for a dense model).

        Parameters
        ----------
        index : int
            The layer's 0-based index.

        Returns
        -------
        bool
            True for an MoE layer.
        """
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

    @property
    def num_attention_layers(self) -> int:
        """Layers with attention (and a KV cache): all of them, none in a state-space stack."""
        return 0 if self.ssm is not None else self.num_layers

    @property
    def has_mlp(self) -> bool:
        """Layers carry a feed-forward block (a Mamba stack's layers are its mixer alone)."""
        return self.intermediate > 0 or self.moe is not None

    # ---- parameter counts --------------------------------------------------
    @property
    def attention_params(self) -> int:
        """Parameters of one attention block (projections, biases); a state-space stack's mixer."""
        h = self.hidden
        if self.ssm is not None:
            return self.ssm.mixer_params(h)
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
        return self._mlp_params(self.intermediate) if self.intermediate else 0

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        if self.moe is None:
            return 0
        return self._mlp_params(self.moe.expert_intermediate)

    def moe_mlp_params(self, active: bool = False) -> int:
        """Parameters of one MoE block: router, routed experts (all or top-k), shared experts.

        Parameters
        ----------
        active : bool, default False
            Count only the ``top_k`` routed experts a token uses.

        Returns
        -------
        int
            Parameter count (0 for a dense model).
        """
        m = self.moe
        if m is None:
            return 0
        experts = m.top_k if active else m.num_experts
        router = self.hidden * m.num_experts + (m.num_experts if m.router_bias else 0)
        shared = m.shared_experts * self._mlp_params(m.shared_intermediate) if m.shared_experts else 0
        if m.shared_gate:
            shared += self.hidden
        return router + experts * self.expert_params + shared

    @property
    def norm_params_per_layer(self) -> int:
        n = self.norms_per_layer * self.hidden * (2 if self.linear_bias else 1)
        return n + (2 * self.head_dim if self.qk_norm else 0)

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
        """Exact parameter count; ``active`` counts only top-k routed experts.

        Parameters
        ----------
        active : bool, default False
            Count only the ``top_k`` routed experts a token uses.

        Returns
        -------
        int
            Parameter count of the whole model (embeddings and LM head included).
        """
        per_layer = self.attention_params + self.norm_params_per_layer
        total = self.num_layers * per_layer
        total += self.num_dense_layers * self.dense_mlp_params
        total += self.num_moe_layers * self.moe_mlp_params(active=active)
        total += self.embedding_params + self.lm_head_params
        total += self.hidden * (2 if self.linear_bias else 1)  # final norm
        return total

    def weight_bytes(self, dtype: Dtype | str = Dtype.BF16) -> int:
        """Bytes of all weights at one storage format (rounded up to a byte).

        Parameters
        ----------
        dtype : Dtype or str, default ``bf16``
            Storage format of the weights.

        Returns
        -------
        int, bytes
            Size of all weights.
        """
        return math.ceil(self.param_count() * Dtype.parse(dtype).bytes_per_element)

    # ---- KV cache -------------------------------------------------------
    @property
    def kv_elements_per_token(self) -> int:
        """KV-cache elements stored per token over all layers (0 for a state-space stack)."""
        if self.ssm is not None:
            return 0
        if self.mla is not None:
            return self.num_layers * (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim)
        return 2 * self.num_layers * self.kv_heads * self.head_dim

    def kv_bytes_per_token(self, dtype: Dtype | str = Dtype.BF16) -> float:
        """KV-cache bytes one token takes over all layers in ``dtype``.

        Parameters
        ----------
        dtype : Dtype or str
            The KV cache's element format.

        Returns
        -------
        float, bytes
        """
        return self.kv_elements_per_token * Dtype.parse(dtype).bytes_per_element

    @property
    def num_sliding_layers(self) -> int:
        """Layers that keep only the last ``sliding_window`` keys (0 without a window)."""
        if self.sliding_window <= 0:
            return 0
        return self.num_layers if self.sliding_layers is None else min(self.sliding_layers, self.num_layers)

    def kv_tokens(self, tokens):
        """Tokens of KV one sequence keeps, averaged over layers.

        Sliding-window layers keep the last ``sliding_window`` tokens, global layers all of them, so
        ``kv_bytes_per_token() * kv_tokens(t)`` is the sequence's KV bytes. Works on arrays.

        Parameters
        ----------
        tokens : int or numpy.ndarray
            The sequence's length, tokens.

        Returns
        -------
        int or float or numpy.ndarray
            Tokens of KV kept, layer average (float where layers differ); same shape as ``tokens``.
        """
        w = self.sliding_window
        if w <= 0:
            return tokens
        capped = np.minimum(tokens, w)
        s = self.num_sliding_layers
        if s >= self.num_layers:
            return capped
        return (s * capped + (self.num_layers - s) * np.asarray(tokens, dtype=np.float64)) / self.num_layers

    def with_overrides(self, **changes: Any) -> ModelSpec:
        """A copy with the given fields replaced (``dataclasses.replace``).

        Parameters
        ----------
        **changes
            Field names and their new values.

        Returns
        -------
        ModelSpec
            The modified copy.
        """
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


_BOOL_KEYS = (
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "qkv_bias",
    "use_sliding_window",
    "gated_mlp",
)

# Activations of the MLPs that are modelled (their cost is elementwise; counts do not depend on them).
_ACTIVATIONS = frozenset(
    {
        "silu",
        "swish",
        "gelu",
        "gelu_new",
        "gelu_fast",
        "gelu_pytorch_tanh",
        "gelu_python",
        "gelu_accurate",
        "quick_gelu",
        "relu",
    }
)

# ``model_type`` values whose layers this module counts; transformers knows many more.
MODELLED_TYPES = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "phi3",
        "deepseek_v2",
        "deepseek_v3",
        "gpt2",
        "yi",
        "mamba",
        "mamba2",
    }
)

#: ``config.json`` keys of the reference Mamba code (state-spaces ``MambaConfig`` and its ``ssm_cfg``) and
#: the Hugging Face keys they stand for.
_SSM_ALIASES = {
    "d_model": "hidden_size",
    "n_layer": "num_hidden_layers",
    "d_state": "state_size",
    "d_conv": "conv_kernel",
    "headdim": "head_dim",
    "ngroups": "n_groups",
    "dt_rank": "time_step_rank",
    "tie_embeddings": "tie_word_embeddings",
    "conv_bias": "use_conv_bias",
    "bias": "use_bias",
}
#: The reference code's defaults for the mixer it names in ``ssm_cfg["layer"]`` (``Mamba1`` when absent).
_SSM_DEFAULTS = {
    "mamba": {"state_size": 16, "conv_kernel": 4, "expand": 2},
    "mamba2": {
        "state_size": 128,
        "conv_kernel": 4,
        "expand": 2,
        "head_dim": 64,
        "n_groups": 1,
        "chunk_size": 256,
    },
}


def _as_bool(name: str, key: str, value: Any) -> Any:
    """``"true"``/``"false"`` strings (any case) as booleans; other strings are refused."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "1", "yes"):
            return True
        if v in ("false", "0", "no", ""):
            return False
        raise ModelConfigError(f"model {name}: {key} must be true or false, got {value!r}")
    return value


def _parse_bools(cfg: dict, name: str) -> dict:
    out = dict(cfg)
    for k in _BOOL_KEYS:
        if k in out:
            out[k] = _as_bool(name, k, out[k])
    if isinstance(out.get("text_config"), dict):
        out["text_config"] = _parse_bools(out["text_config"], name)
    return out


def _shield_kernels_name() -> None:
    """Keep transformers from taking this repository's ``kernels`` package for Hugging Face's.

    transformers imports ``kernels`` (the Hub kernels library) when a distribution of that name is
    installed; with this repository on ``sys.path`` the name resolves to our own package, and that
    import fails. Only then is transformers told the Hub library is unavailable.
    """
    import importlib.util
    import sys

    if "transformers.integrations.hub_kernels" in sys.modules:
        return
    spec = importlib.util.find_spec("kernels")
    ours = Path(__file__).resolve().parent.parent / "kernels"
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent != ours:
        return
    from transformers.utils import import_utils

    import_utils.is_kernels_available = lambda *a, **k: False


class _TransformersRefused(ModelConfigError):
    """transformers' configuration class rejected the config (our own checks name the key first)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text)[:300] if text else type(exc).__name__


def normalise_config(cfg: dict[str, Any], name: str = "custom") -> dict[str, Any]:
    """The config as the model's own code reads it: defaults filled, nested text config taken.

    A ``model_type`` that transformers knows is built with its configuration class
    (``AutoConfig.for_model``; transformers is imported here, not with the package), and the text
    model's keys are returned with ``model_type`` and ``quantization_config`` carried over. A config
    without a ``model_type``, or with one transformers does not know, is returned as is (read as
    Llama-like or GPT-style keys). A ``model_type`` transformers knows but this module does not count
    raises :class:`ModelConfigError`.
    """
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"model {name}: config must be a JSON object")
    cfg = _ssm_keys(_parse_bools(cfg, name), name)
    mt = cfg.get("model_type")
    if not isinstance(mt, str) or not mt:
        return cfg
    try:
        _shield_kernels_name()
        from transformers import CONFIG_MAPPING, AutoConfig
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return cfg
    if mt not in CONFIG_MAPPING:
        return cfg
    if mt not in MODELLED_TYPES:
        raise ModelConfigError(
            f"model {name}: model_type {mt!r} is not modelled (its layers cannot be counted); "
            f"modelled: {', '.join(sorted(MODELLED_TYPES))}"
        )
    kwargs = {k: v for k, v in cfg.items() if k != "model_type" and not k.startswith("_")}
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        conf = AutoConfig.for_model(mt, **kwargs)
        text = conf.get_text_config() if hasattr(conf, "get_text_config") else conf
        out = text.to_dict()
    except Exception as exc:  # transformers validates types and values
        raise _TransformersRefused(
            f"model {name}: transformers cannot read this {mt} config: {_first_line(exc)}"
        ) from None
    finally:
        hf_logging.set_verbosity(level)
    out["model_type"] = getattr(text, "model_type", mt) or mt
    if "quantization_config" in cfg and not out.get("quantization_config"):
        out["quantization_config"] = cfg["quantization_config"]
    return _parse_bools(out, name)


def _is_ssm_config(cfg: dict) -> bool:
    return cfg.get("model_type") in ("mamba", "mamba2") or isinstance(cfg.get("ssm_cfg"), dict)


def _ssm_keys(cfg: dict, name: str) -> dict:
    """A Mamba config in Hugging Face keys: the reference code's keys (``d_model``, ``n_layer``, ``ssm_cfg``
    with its mixer's keys, ``pad_vocab_size_multiple``) renamed and its defaults filled; others unchanged.

    A stack the reference code builds with attention layers (``attn_layer_idx``) or MLPs
    (``d_intermediate``) is refused: it is not a pure state-space stack.
    """
    if not _is_ssm_config(cfg):
        return cfg
    out = dict(cfg)
    inner = out.pop("ssm_cfg", None) or {}
    if not isinstance(inner, dict):
        raise ModelConfigError(f"model {name}: ssm_cfg must be an object")
    layer = inner.get("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise ModelConfigError(
            f"model {name}: ssm_cfg layer {layer!r} is not modelled (Mamba1 and Mamba2 are)"
        )
    if out.get("attn_layer_idx") or _get(out, "d_intermediate", default=0):
        raise ModelConfigError(
            f"model {name}: attention layers (attn_layer_idx) or MLPs (d_intermediate) in a Mamba "
            "stack are not modelled; only pure state-space stacks are"
        )
    if "model_type" not in out or "ssm_cfg" in cfg:
        out["model_type"] = "mamba2" if layer == "Mamba2" else out.get("model_type", "mamba")
    for src in (inner, dict(out)):
        for k, v in src.items():
            key = _SSM_ALIASES.get(k, k)
            if key not in out or src is inner:
                out[key] = v
    for k in list(_SSM_ALIASES):
        out.pop(k, None)
    for k, v in _SSM_DEFAULTS[out["model_type"]].items():
        out.setdefault(k, v)
    if out["model_type"] == "mamba2" and "num_heads" not in out:
        hidden = _positive_int(name, "hidden_size", out.get("hidden_size"))
        out["num_heads"] = (
            _positive_int(name, "expand", out["expand"])
            * hidden
            // _positive_int(name, "head_dim", out["head_dim"])
        )
    pad = out.pop("pad_vocab_size_multiple", None)
    if pad is not None and "vocab_size" in out:
        p, v = (
            _positive_int(name, "pad_vocab_size_multiple", pad),
            _positive_int(name, "vocab_size", out["vocab_size"]),
        )
        out["vocab_size"] = -(-v // p) * p
    return out


def _build_ssm_spec(cfg: dict[str, Any], name: str) -> ModelSpec:
    """A pure Mamba or Mamba-2 stack from Hugging Face ``mamba`` / ``mamba2`` keys."""
    kind = SsmKind.MAMBA2 if cfg.get("model_type") == "mamba2" else SsmKind.MAMBA
    d = _SSM_DEFAULTS[kind.value]
    layers = _positive_int(name, "num_hidden_layers", _get(cfg, "num_hidden_layers"))
    hidden = _positive_int(name, "hidden_size", _get(cfg, "hidden_size"))
    vocab = _positive_int(name, "vocab_size", _get(cfg, "vocab_size"))
    expand = _positive_int(name, "expand", _get(cfg, "expand", default=d["expand"]))
    d_inner = _positive_int(
        name, "intermediate_size", _get(cfg, "intermediate_size", default=expand * hidden)
    )
    d_state = _positive_int(name, "state_size", _get(cfg, "state_size", default=d["state_size"]))
    d_conv = _positive_int(name, "conv_kernel", _get(cfg, "conv_kernel", default=d["conv_kernel"]))
    act = _get(cfg, "hidden_act", default="silu")
    if not isinstance(act, str) or act.lower() not in _ACTIVATIONS:
        raise ModelConfigError(
            f"model {name}: hidden_act {act!r} not modelled ({', '.join(sorted(_ACTIVATIONS))} are)"
        )
    if kind is SsmKind.MAMBA:
        rank = _get(cfg, "time_step_rank", default="auto")
        rank = math.ceil(hidden / 16) if rank == "auto" else _positive_int(name, "time_step_rank", rank)
        ssm = SsmSpec(
            kind,
            d_inner,
            d_state,
            d_conv,
            num_heads=d_inner,
            head_dim=1,
            dt_rank=rank,
            proj_bias=bool(cfg.get("use_bias", False)),
            conv_bias=bool(cfg.get("use_conv_bias", True)),
        )
    else:
        head_dim = _positive_int(name, "head_dim", _get(cfg, "head_dim", default=d["head_dim"]))
        heads = _positive_int(name, "num_heads", _get(cfg, "num_heads", default=d_inner // head_dim))
        groups = _positive_int(name, "n_groups", _get(cfg, "n_groups", default=d["n_groups"]))
        if heads * head_dim != d_inner:
            raise ModelConfigError(
                f"model {name}: num_heads {heads} x head_dim {head_dim} must equal the mixer's "
                f"{d_inner} channels (expand x hidden_size)"
            )
        if heads % groups:
            raise ModelConfigError(f"model {name}: n_groups {groups} does not divide the {heads} heads")
        chunk = _positive_int(name, "chunk_size", _get(cfg, "chunk_size", default=d["chunk_size"]))
        ssm = SsmSpec(
            kind,
            d_inner,
            d_state,
            d_conv,
            num_heads=heads,
            head_dim=head_dim,
            n_groups=groups,
            chunk_tokens=chunk,
            proj_bias=bool(cfg.get("use_bias", False)),
            conv_bias=bool(cfg.get("use_conv_bias", True)),
        )
    return ModelSpec(
        name=name,
        num_layers=layers,
        hidden=hidden,
        q_heads=ssm.num_heads,
        kv_heads=ssm.num_heads,
        head_dim=ssm.head_dim,
        intermediate=0,
        vocab=vocab,
        tied_embeddings=bool(_get(cfg, "tie_word_embeddings", default=True)),
        max_context=0,
        norms_per_layer=1,
        activation=act.lower(),
        weight_dtype=_quant_dtype(name, cfg.get("quantization_config")),
        ssm=ssm,
    )


def _quant_dtype(name: str, q: Any) -> str | None:
    """The weights' storage format a ``quantization_config`` declares."""
    if not q:
        return None
    if not isinstance(q, dict):
        raise ModelConfigError(f"model {name}: quantization_config must be an object")
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        return "fp8"
    if method in ("gptq", "awq"):
        bits = q.get("bits", q.get("w_bit"))
        if bits in (4, 8):
            return "int4" if bits == 4 else "int8"
        raise ModelConfigError(
            f"model {name}: quantization_config {method} with {bits!r} bits is not modelled"
        )
    raise ModelConfigError(
        f"model {name}: quantization_config quant_method {method or None!r} is not modelled "
        f"(fp8, gptq and awq are)"
    )


def _sliding_layers(name: str, cfg: dict, layers: int) -> int | None:
    """How many layers use the sliding window: from ``layer_types`` or ``sliding_window_pattern``."""
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            raise ModelConfigError(f"model {name}: layer_types must list one kind per layer ({layers})")
        unknown = sorted({str(t) for t in types} - {"sliding_attention", "full_attention"})
        if unknown:
            raise ModelConfigError(
                f"model {name}: layer_types {', '.join(unknown)} not modelled "
                f"(sliding_attention and full_attention are)"
            )
        return sum(t == "sliding_attention" for t in types)
    pattern = cfg.get("sliding_window_pattern")
    if pattern is not None:
        p = _positive_int(name, "sliding_window_pattern", pattern)
        return sum((i + 1) % p != 0 for i in range(layers))
    return None


def spec_from_config(cfg: dict[str, Any], name: str = "custom") -> ModelSpec:
    """Build a :class:`ModelSpec` from Hugging Face ``config.json`` keys.

    The config is first normalised with :func:`normalise_config` (transformers' configuration
    class for its ``model_type``); the keys are then counted here. Understands Llama/Mistral/Qwen2/Yi
    keys, Gemma-1/2/3 (4 norms per layer, per-layer sliding/global attention), Phi-3, Mixtral,
    Qwen2-MoE (shared expert) and DeepSeek MoE keys, DeepSeek MLA keys, ``sliding_window``,
    ``quantization_config``, and GPT-2/GPT-3 style keys (``n_layer``, ``n_embd``, ``n_head``, ``n_inner``).
    """
    try:
        norm = normalise_config(cfg, name)
    except _TransformersRefused as exc:
        _build_spec(
            _parse_bools(cfg, name), name
        )  # our own one-line message naming the key, where there is one
        raise ModelConfigError(str(exc)) from None
    return _build_spec(norm, name)


def _build_spec(cfg: dict[str, Any], name: str) -> ModelSpec:
    if _is_ssm_config(cfg):
        return _build_ssm_spec(_ssm_keys(cfg, name), name)
    mt = cfg.get("model_type")
    gpt_style = "n_embd" in cfg
    if "num_hidden_layers" not in cfg and "n_layer" not in cfg and mt is not None:
        raise ModelConfigError(
            f"model {name}: unknown architecture model_type {mt!r}: no num_hidden_layers "
            f"or n_layer to read (and transformers does not know it)"
        )
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
    intermediate = _positive_int(
        name, "intermediate_size", _get(cfg, "intermediate_size", "n_inner", default=inter_default)
    )
    max_ctx = _nonneg_int(
        name,
        "max_position_embeddings",
        _get(cfg, "max_position_embeddings", "n_positions", "n_ctx", default=0),
    )
    # Llama-family configs have gated MLPs; GPT-style configs (or gated_mlp: false) plain ones.
    mlp = MlpKind.PLAIN if gpt_style or cfg.get("gated_mlp") is False else MlpKind.GATED
    act = _get(cfg, "hidden_activation", "hidden_act", "activation_function", default="")
    if not isinstance(act, str) or (act and act.lower() not in _ACTIVATIONS):
        raise ModelConfigError(
            f"model {name}: hidden_act {act!r} not modelled ({', '.join(sorted(_ACTIVATIONS))} are)"
        )
    window = _nonneg_int(name, "sliding_window", _get(cfg, "sliding_window", default=0))
    if cfg.get("use_sliding_window") is False:
        window = 0
    sliding = _sliding_layers(name, cfg, layers) if window else None
    if sliding == 0:
        window, sliding = 0, None
    elif sliding == layers:
        sliding = None
    moe = None
    n_experts = _nonneg_int(
        name,
        "num_local_experts",
        _get(cfg, "num_local_experts", "n_routed_experts", "num_experts", default=0),
    )
    if n_experts:
        top_k = _positive_int(name, "num_experts_per_tok", _get(cfg, "num_experts_per_tok", default=0))
        if top_k > n_experts:
            raise ModelConfigError(
                f"model {name}: num_experts_per_tok {top_k} exceeds the {n_experts} experts"
            )
        exp_inter = _positive_int(
            name, "moe_intermediate_size", _get(cfg, "moe_intermediate_size", default=intermediate)
        )
        n_shared = _nonneg_int(name, "n_shared_experts", _get(cfg, "n_shared_experts", default=0))
        shared_inter = exp_inter if n_shared else 0
        shared_gate = False
        if mt == "qwen2_moe":
            shared_inter = _nonneg_int(
                name, "shared_expert_intermediate_size", cfg.get("shared_expert_intermediate_size")
            )
            n_shared, shared_gate = (1, True) if shared_inter else (0, False)
        first_dense = _nonneg_int(
            name, "first_k_dense_replace", _get(cfg, "first_k_dense_replace", default=0)
        )
        if first_dense > layers:
            raise ModelConfigError(
                f"model {name}: first_k_dense_replace {first_dense} exceeds {layers} layers"
            )
        freq = _positive_int(name, "moe_layer_freq", _get(cfg, "moe_layer_freq", default=1))
        if mt in ("qwen2_moe", "qwen3_moe"):
            step = _positive_int(name, "decoder_sparse_step", _get(cfg, "decoder_sparse_step", default=1))
            if step != 1 or cfg.get("mlp_only_layers"):
                raise ModelConfigError(
                    f"model {name}: decoder_sparse_step {step} / mlp_only_layers "
                    f"{cfg.get('mlp_only_layers')} not modelled (only every layer MoE is)"
                )
        moe = MoESpec(
            num_experts=n_experts,
            top_k=top_k,
            expert_intermediate=exp_inter,
            shared_experts=n_shared,
            shared_intermediate=shared_inter,
            first_dense_layers=first_dense,
            layer_freq=freq,
            router_bias=cfg.get("topk_method") == "noaux_tc",
            shared_gate=shared_gate,
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
    # Qwen2 (and Qwen2-MoE) put biases on q, k and v only; Llama's ``attention_bias`` also
    # covers the output projection.
    qwen2 = mt in ("qwen2", "qwen2_moe")
    explicit_bias = bool(_get(cfg, "attention_bias", "qkv_bias", default=False))
    qkv_bias = explicit_bias or (qwen2 and cfg.get("qkv_bias") is not False)
    o_bias = bool(cfg.get("attention_bias", False)) and not qwen2
    gemma_norms = mt in ("gemma2", "gemma3", "gemma3_text")
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
        sliding_layers=sliding,
        norms_per_layer=4 if gemma_norms else 2,
        qk_norm=mt in ("gemma3", "gemma3_text"),
        activation=act.lower(),
        weight_dtype=_quant_dtype(name, cfg.get("quantization_config")),
    )


def weights_dtype(model: ModelSpec, requested: str | None = None) -> str:
    """The weights' storage format to price: the one asked for, else the config's
    (``quantization_config``), else bf16."""
    return requested or model.weight_dtype or "bf16"


def list_models() -> list[str]:
    """Names of the shipped model configs.

    Returns
    -------
    list of str
        Sorted model names.
    """
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@functools.lru_cache(maxsize=64)
def _load_file(path: str, name: str, shipped: bool = False) -> ModelSpec:
    try:
        cfg = finite_json_loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelConfigError(f"model config not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path}: not valid JSON (line {exc.lineno})") from None
    if shipped:
        # shipped configs are read without transformers' configuration classes (a ~2 s import): a test
        # checks that they give the same spec either way
        if not isinstance(cfg, dict):
            raise ModelConfigError(f"model {name}: config must be a JSON object")
        return _build_spec(_parse_bools(cfg, name), name)
    return spec_from_config(cfg, name)


def load_model(name_or_path: str | Path | ModelSpec) -> ModelSpec:
    """Load a shipped model by name, or any ``config.json`` by path.

    Parameters
    ----------
    name_or_path : str, Path or ModelSpec
        A shipped model's name (``llama-3-8b``), the path of a Hugging Face ``config.json``, or a spec
        (returned as it is).

    Returns
    -------
    ModelSpec
        Layers, heads, sizes; parameter, weight and KV byte counts derive from it.

    Raises
    ------
    UnknownModelError
        For a name that is not shipped (the message lists the known ones).
    ModelConfigError
        For a ``config.json`` that lacks or contradicts a needed key.
    """
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    text = str(name_or_path).strip()
    p = Path(text)
    if text.endswith(".json") or p.is_file():
        return _load_file(str(p.resolve()), p.parent.name if p.name == "config.json" else p.stem)
    key = text.lower()
    if key not in list_models():
        raise UnknownModelError(f"unknown model {text!r}; known: {', '.join(list_models())}")
    return _load_file(str(CONFIG_DIR / f"{key}.json"), key, shipped=True)
