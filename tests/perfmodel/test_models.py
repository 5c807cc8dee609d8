"""Model specs from config.json keys: exact parameter counts and KV bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.errors import ModelConfigError, UnknownModelError
from perfmodel.models import (
    CONFIG_DIR,
    AttentionKind,
    MlpKind,
    ModelSpec,
    list_models,
    load_model,
    spec_from_config,
)

REQUIRED = [
    "llama-2-7b",
    "llama-2-70b",
    "llama-3-8b",
    "llama-3-70b",
    "llama-3.1-405b",
    "mistral-7b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "yi-34b",
    "qwen2.5-72b",
    "deepseek-v2",
    "deepseek-v3",
    "gpt-3-175b",
]

# Published exact counts (safetensors metadata of the Hugging Face checkpoints).
EXACT = {
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2.5-72b": 72_706_203_648,
    "yi-34b": 34_388_917_248,
    "deepseek-v3": 671_026_419_200,  # without the multi-token-prediction module
}


def test_all_required_models_shipped():
    assert set(REQUIRED) <= set(list_models())


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_param_counts(name):
    assert load_model(name).param_count() == EXACT[name]


@pytest.mark.parametrize("name", list_models())
def test_every_config_has_a_source(name):
    cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    assert len(cfg.get("_source", "")) > 10


def test_llama_2_70b_hand_count():
    h, i, layers, kvd, v = 8192, 28672, 80, 8 * 128, 32000
    per_layer = 2 * h * h + 2 * h * kvd + 3 * h * i + 2 * h
    assert load_model("llama-2-70b").param_count() == layers * per_layer + 2 * v * h + h


def test_moe_active_counts():
    mix = load_model("mixtral-8x7b")
    assert mix.param_count(active=True) == pytest.approx(12.9e9, rel=0.01)
    assert mix.num_moe_layers == 32
    v3 = load_model("deepseek-v3")
    assert v3.param_count(active=True) == pytest.approx(37e9, rel=0.02)
    assert v3.num_moe_layers == 58 and not v3.is_moe_layer(2) and v3.is_moe_layer(3)
    v2 = load_model("deepseek-v2")
    assert v2.param_count() == pytest.approx(235.7e9, rel=0.001)
    assert v2.param_count(active=True) == pytest.approx(21e9, rel=0.03)
    assert v2.num_moe_layers == 59


def test_deepseek_v3_router_bias_is_counted():
    v3 = load_model("deepseek-v3")
    assert v3.moe.router_bias
    no_bias = v3.with_overrides(moe=v3.moe.__class__(**{**v3.moe.__dict__, "router_bias": False}))
    assert v3.param_count() - no_bias.param_count() == 58 * 256


def test_gpt3_about_175b():
    g = load_model("gpt-3-175b")
    assert g.param_count() == pytest.approx(175e9, rel=0.005)
    assert g.mlp is MlpKind.PLAIN and g.tied_embeddings and g.learned_positions
    assert g.attention_kind is AttentionKind.MHA


def test_mixtral_8x22b_about_141b():
    assert load_model("mixtral-8x22b").param_count() == pytest.approx(141e9, rel=0.005)
    assert load_model("mixtral-8x22b").param_count(active=True) == pytest.approx(39e9, rel=0.01)


def test_kv_bytes_per_token():
    assert load_model("yi-34b").kv_bytes_per_token("bf16") == 245_760
    assert load_model("deepseek-v2").kv_bytes_per_token("bf16") == 69_120
    assert load_model("mixtral-8x7b").kv_bytes_per_token("bf16") == 131_072
    assert load_model("yi-34b").kv_bytes_per_token("fp8") == 122_880
    assert load_model("yi-34b").kv_bytes_per_token("int4") == 61_440
    assert load_model("deepseek-v2").kv_elements_per_token == 60 * (512 + 64)


def test_weight_bytes_per_dtype():
    m = load_model("llama-2-7b")
    assert m.weight_bytes("bf16") == 2 * 6_738_415_616
    assert m.weight_bytes("fp8") == 6_738_415_616
    assert m.weight_bytes("int4") == 6_738_415_616 // 2


def test_structure_flags():
    assert load_model("mistral-7b").sliding_window == 4096
    assert load_model("mixtral-8x7b").sliding_window == 0  # null in config
    assert load_model("qwen2.5-72b").sliding_window == 0  # use_sliding_window: false
    q = load_model("qwen2.5-72b")
    assert q.attention_bias and not q.output_bias and not q.tied_embeddings
    assert load_model("deepseek-v2").attention_kind is AttentionKind.MLA
    assert load_model("llama-3-8b").attention_kind is AttentionKind.GQA


def test_llama_attention_bias_covers_output_projection():
    base = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
    }
    plain = spec_from_config(base).param_count()
    biased = spec_from_config({**base, "attention_bias": True}).param_count()
    assert biased - plain == 2 * (64 + 2 * 32 + 64)  # q, k, v and o biases per layer
    mlp_b = spec_from_config({**base, "mlp_bias": True}).param_count()
    assert mlp_b - plain == 2 * (2 * 128 + 64)


def test_user_config_path(tmp_path):
    cfg = json.loads((CONFIG_DIR / "llama-3-8b.json").read_text())
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    m = load_model(str(d / "config.json"))
    assert m.name == "my-model" and m.param_count() == EXACT["llama-3-8b"]


def test_unknown_model_lists_known():
    with pytest.raises(UnknownModelError) as info:
        load_model("llama-9-1t")
    assert "yi-34b" in str(info.value) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"hidden_size": -4}, "hidden_size"),
        ({"hidden_size": 7.5}, "hidden_size"),
        ({"num_hidden_layers": float("nan")}, "num_hidden_layers"),
        ({"num_hidden_layers": float("inf")}, "num_hidden_layers"),
        ({"num_key_value_heads": 3}, "divisible"),
        ({"vocab_size": None}, "vocab_size"),
        ({"sliding_window": -1}, "sliding_window"),
        ({"num_local_experts": 4, "num_experts_per_tok": 8}, "exceeds"),
        ({"num_local_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": -1}, "n_shared_experts"),
        ({"num_hidden_layers": True}, "num_hidden_layers"),
    ],
)
def test_bad_configs_raise_typed_error(patch, match):
    cfg = json.loads((CONFIG_DIR / "llama-2-7b.json").read_text())
    cfg.update(patch)
    with pytest.raises(ModelConfigError, match=match):
        spec_from_config(cfg, "bad")


def test_bad_json_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{ not json")
    with pytest.raises(ModelConfigError, match="broken.json"):
        load_model(str(p))
    with pytest.raises(ModelConfigError):
        spec_from_config([1, 2, 3])


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 8),
    heads=st.sampled_from([4, 8, 16]),
    group=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([16, 32, 64]),
    inter=st.integers(1, 512),
    vocab=st.integers(1, 1000),
)
def test_counts_grow_with_size(layers, heads, group, head_dim, inter, vocab):
    cfg = {
        "hidden_size": heads * head_dim,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads // group,
        "vocab_size": vocab,
    }
    m = spec_from_config(cfg)
    more = spec_from_config({**cfg, "num_hidden_layers": layers + 1})
    assert more.param_count() > m.param_count() > 0
    assert more.kv_elements_per_token > m.kv_elements_per_token
    assert m.kv_elements_per_token == 2 * layers * (heads // group) * head_dim
    assert isinstance(m, ModelSpec) and m.param_count(active=True) == m.param_count()
