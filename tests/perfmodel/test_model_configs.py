"""Hugging Face configs read as the model's own code reads them (transformers' configuration classes).

Each config below is written from the published ``config.json`` of the Hugging Face repository named in
its comment (keys that do not change counts, such as token ids, are left out); the expected counts are the
published figures, asserted within 1%, plus the exact count from the config's own arithmetic.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from perfmodel.errors import ModelConfigError
from perfmodel.models import CONFIG_DIR, list_models, load_model, spec_from_config
from tests.conftest import run_perfmodel

# https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}

# https://huggingface.co/google/gemma-2-9b/blob/main/config.json (no tie_word_embeddings key: Gemma ties)
GEMMA_2_9B = {
    "architectures": ["Gemma2ForCausalLM"],
    "attention_bias": False,
    "attn_logit_softcapping": 50.0,
    "cache_implementation": "hybrid",
    "final_logit_softcapping": 30.0,
    "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 3584,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "gemma2",
    "num_attention_heads": 16,
    "num_hidden_layers": 42,
    "num_key_value_heads": 8,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "torch_dtype": "float32",
    "vocab_size": 256000,
}

# https://huggingface.co/Qwen/Qwen1.5-MoE-A2.7B/blob/main/config.json
QWEN15_MOE = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "decoder_sparse_step": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "max_position_embeddings": 8192,
    "max_window_layers": 21,
    "model_type": "qwen2_moe",
    "moe_intermediate_size": 1408,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts": 60,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 24,
    "num_key_value_heads": 16,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "shared_expert_intermediate_size": 5632,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_sliding_window": False,
    "vocab_size": 151936,
}

# https://huggingface.co/google/gemma-3-12b-it/blob/main/config.json (multimodal: the text model is nested)
GEMMA_3_12B = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "hidden_size": 3840,
        "intermediate_size": 15360,
        "model_type": "gemma3_text",
        "num_attention_heads": 16,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16",
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "vision_use_head": False,
    },
}

# https://huggingface.co/microsoft/Phi-3-mini-4k-instruct/blob/main/config.json
PHI_3_MINI = {
    "architectures": ["Phi3ForCausalLM"],
    "attention_bias": False,
    "hidden_act": "silu",
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "max_position_embeddings": 4096,
    "model_type": "phi3",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "original_max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "sliding_window": 2047,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 32064,
}

# https://huggingface.co/Qwen/Qwen2.5-14B/blob/main/config.json
QWEN25_14B = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_act": "silu",
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "max_position_embeddings": 131072,
    "max_window_layers": 48,
    "model_type": "qwen2",
    "num_attention_heads": 40,
    "num_hidden_layers": 48,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_sliding_window": False,
    "vocab_size": 152064,
}

# https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json: the shipped config (without the
# quantization_config) plus the published one
DEEPSEEK_V3_QUANT = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128],
}


def _deepseek_v3() -> dict:
    cfg = json.loads((CONFIG_DIR / "deepseek-v3.json").read_text())
    return dict(cfg, quantization_config=DEEPSEEK_V3_QUANT)


def _mixtral() -> dict:
    return json.loads((CONFIG_DIR / "mixtral-8x7b.json").read_text())


# (name, config, published total, published active or None, exact total from the config's arithmetic)
CASES = [
    ("llama-3.1-8b", lambda: LLAMA_31_8B, 8.03e9, None, 8_030_261_248),
    ("gemma-2-9b", lambda: GEMMA_2_9B, 9.24e9, None, 9_241_705_984),
    ("qwen1.5-moe-a2.7b", lambda: QWEN15_MOE, 14.3e9, 2.7e9, 14_315_784_192),
    ("mixtral-8x7b", _mixtral, 46.7e9, None, 46_702_792_704),
    ("deepseek-v3", _deepseek_v3, 671e9, 37e9, 671_026_419_200),
    ("gemma-3-12b", lambda: GEMMA_3_12B, 11.8e9, None, 11_766_034_176),
    ("phi-3-mini", lambda: PHI_3_MINI, 3.82e9, None, 3_821_079_552),
    ("qwen2.5-14b", lambda: QWEN25_14B, 14.7e9, None, 14_770_033_664),
]


@pytest.mark.parametrize("name,cfg,total,active,exact", CASES, ids=[c[0] for c in CASES])
def test_published_parameter_counts(name, cfg, total, active, exact):
    m = spec_from_config(cfg(), name)
    assert m.param_count() == exact
    assert m.param_count() == pytest.approx(total, rel=0.01)
    if active is not None:
        # DeepSeek-V3's "37B activated" is rounded: the config's arithmetic gives 37,552,297,472 (1.5% above)
        assert m.param_count(active=True) == pytest.approx(
            active, rel=0.02 if name == "deepseek-v3" else 0.01
        )


def test_gemma2_ties_embeddings_and_alternates_sliding_and_global_layers():
    m = spec_from_config(GEMMA_2_9B, "gemma-2-9b")
    assert m.tied_embeddings and m.norms_per_layer == 4
    assert m.sliding_window == 4096 and m.num_sliding_layers == 21
    assert m.activation == "gelu_pytorch_tanh"
    # 21 sliding layers keep 4096 tokens, 21 global layers all 8192: 1.5x the all-sliding figure
    assert m.kv_tokens(8192) == pytest.approx(6144)
    assert m.kv_tokens(2048) == 2048
    all_sliding = m.with_overrides(sliding_layers=None)
    assert m.kv_tokens(8192) / all_sliding.kv_tokens(8192) == pytest.approx(1.5)


def test_gemma2_kv_and_decode_priced_per_layer_kind():
    from perfmodel.analyze import analyze

    m = spec_from_config(GEMMA_2_9B, "gemma-2-9b")
    all_sliding = m.with_overrides(sliding_layers=None)
    r = analyze(m, "h100-sxm-80gb", context_len=8000, output_tokens=192, mode="peak")
    s = analyze(all_sliding, "h100-sxm-80gb", context_len=8000, output_tokens=192, mode="peak")
    assert r.memory.kv_bytes_per_user == pytest.approx(m.kv_bytes_per_token() * m.kv_tokens(8192))
    assert r.memory.kv_bytes_per_user == pytest.approx(1.5 * s.memory.kv_bytes_per_user)
    assert r.decode_step.total_s > s.decode_step.total_s
    assert r.prefill.total_s > s.prefill.total_s


def test_gemma3_nested_text_config_five_sliding_to_one_global():
    m = spec_from_config(GEMMA_3_12B, "gemma-3-12b")
    assert (m.num_layers, m.hidden, m.head_dim, m.vocab) == (48, 3840, 256, 262208)
    assert m.tied_embeddings and m.qk_norm
    assert m.sliding_window == 1024 and m.num_sliding_layers == 40


def test_qwen2_moe_shared_expert_counted():
    m = spec_from_config(QWEN15_MOE, "qwen1.5-moe")
    assert m.moe.shared_experts == 1 and m.moe.shared_intermediate == 5632 and m.moe.shared_gate
    assert m.param_count(active=True) == 2_689_173_504
    assert m.attention_bias and not m.output_bias  # q/k/v biases only
    assert m.sliding_window == 0


def test_fp8_quantization_config_sets_the_weights_dtype():
    from perfmodel.analyze import analyze

    m = spec_from_config(_deepseek_v3(), "deepseek-v3")
    assert m.weight_dtype == "fp8"
    assert load_model("deepseek-v3").weight_dtype is None  # the shipped file carries no quantization_config
    r = analyze(m, "h200-sxm-141gb", context_len=4000, output_tokens=100, tp=16)
    assert r.precision.weights.value == "fp8"
    b = analyze(m, "h200-sxm-141gb", context_len=4000, output_tokens=100, tp=16, weight_dtype="bf16")
    assert b.precision.weights.value == "bf16"
    assert any("fp8" in n and "bf16 is priced" in n for n in b.notes)


@pytest.mark.parametrize("value,tied", [("false", False), ("False", False), ("true", True), (False, False)])
def test_tie_word_embeddings_string_read_as_boolean(value, tied):
    m = spec_from_config(dict(LLAMA_31_8B, tie_word_embeddings=value), "x")
    assert m.tied_embeddings is tied
    # also without a model_type (the Llama-like reader)
    raw = {k: v for k, v in LLAMA_31_8B.items() if k != "model_type"}
    assert spec_from_config(dict(raw, tie_word_embeddings=value), "x").tied_embeddings is tied


def test_tie_word_embeddings_other_string_refused():
    with pytest.raises(ModelConfigError, match="tie_word_embeddings"):
        spec_from_config(dict(LLAMA_31_8B, tie_word_embeddings="maybe"), "x")


def test_unmodelled_activation_refused():
    with pytest.raises(ModelConfigError, match="hidden_act"):
        spec_from_config(dict(LLAMA_31_8B, model_type=None, hidden_act="relu2_glu_custom"), "x")


def test_unmodelled_quantization_refused():
    with pytest.raises(ModelConfigError, match="quant_method"):
        spec_from_config(dict(LLAMA_31_8B, quantization_config={"quant_method": "mystery"}), "x")


def test_known_but_unmodelled_model_type_refused():
    with pytest.raises(ModelConfigError, match="model_type 'rwkv' is not modelled"):
        spec_from_config({"model_type": "rwkv", "hidden_size": 768, "num_hidden_layers": 24}, "x")


def test_unknown_model_type_llama_like_falls_back():
    m = spec_from_config(dict(LLAMA_31_8B, model_type="my_llama_variant"), "x")
    assert m.param_count() == 8_030_261_248


@pytest.mark.parametrize(
    "cfg,match",
    [
        (
            {"model_type": "brand_new_arch", "d_model": 512, "n_blocks": 8},
            "unknown architecture model_type 'brand_new_arch'",
        ),
        (
            {"model_type": "rwkv", "hidden_size": 768, "num_hidden_layers": 24},
            "model_type 'rwkv' is not modelled",
        ),
    ],
)
def test_unknown_architecture_refused_by_cli_in_one_line(tmp_path, cfg, match):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    r = run_perfmodel("analyze", "--model", str(path), "--gpu", "h100-sxm-80gb")
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert match in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", list_models())
def test_shipped_configs_read_the_same_with_and_without_transformers(name):
    cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    assert load_model(name) == spec_from_config(cfg, name)


def test_import_does_not_import_transformers():
    code = "import sys, perfmodel, perfmodel.models, perfmodel.analyze; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
