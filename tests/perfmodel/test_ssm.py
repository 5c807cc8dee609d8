"""Pure state-space stacks (Mamba, Mamba-2): read from their configs, no KV cache, constant state per sequence."""

import json

import pytest

from perfmodel.analyze import analyze
from perfmodel.errors import InvalidInputError, ModelConfigError
from perfmodel.models import AttentionKind, SsmKind, load_model, spec_from_config
from tests.conftest import run_perfmodel


def _mamba1_params(h, di, n, conv, rank, layers, vocab):
    """Hand count of the Hugging Face MambaForCausalLM weights (no projection biases, conv bias, tied head)."""
    mixer = h * 2 * di + (di * conv + di) + di * (rank + 2 * n) + (rank * di + di) + di * n + di + di * h
    return layers * (mixer + h) + vocab * h + h


def _mamba2_params(h, di, n, conv, heads, groups, layers, vocab):
    width = 2 * di + 2 * groups * n + heads
    conv_ch = di + 2 * groups * n
    mixer = h * width + (conv_ch * conv + conv_ch) + 3 * heads + di + di * h
    return layers * (mixer + h) + vocab * h + h


def test_shipped_mamba_configs_count_their_weights_and_state():
    m1, m2 = load_model("mamba-2.8b"), load_model("mamba2-2.7b")
    assert m1.ssm.kind is SsmKind.MAMBA and m2.ssm.kind is SsmKind.MAMBA2
    assert m1.attention_kind is AttentionKind.NONE and m1.kv_bytes_per_token() == 0
    assert m1.param_count() == _mamba1_params(2560, 5120, 16, 4, 160, 64, 50280)
    assert m2.param_count() == _mamba2_params(2560, 5120, 128, 4, 80, 1, 64, 50288)
    # state per layer and sequence, bf16: the conv window over its channels plus the SSM state
    assert m1.ssm.state_bytes() == (5120 * 4 + 5120 * 16) * 2
    assert m2.ssm.state_bytes() == ((5120 + 2 * 128) * 4 + 80 * 64 * 128) * 2
    assert m2.ssm.state_bytes(tp=2) == ((2560 + 2 * 128) * 4 + 40 * 64 * 128) * 2  # one group, replicated


def test_reference_code_keys_read_as_the_hugging_face_ones():
    ref = {
        "d_model": 2560,
        "d_intermediate": 0,
        "n_layer": 64,
        "vocab_size": 50277,
        "ssm_cfg": {"layer": "Mamba2"},
        "attn_layer_idx": [],
        "pad_vocab_size_multiple": 16,
        "tie_embeddings": True,
    }
    assert spec_from_config(ref, "mamba2-2.7b") == load_model("mamba2-2.7b")
    with pytest.raises(ModelConfigError, match="attn_layer_idx"):
        spec_from_config(dict(ref, attn_layer_idx=[9, 18]), "x")
    with pytest.raises(ModelConfigError, match="num_heads 60 x head_dim 64"):
        spec_from_config(
            {
                "model_type": "mamba2",
                "hidden_size": 2560,
                "num_hidden_layers": 2,
                "num_heads": 60,
                "head_dim": 64,
                "vocab_size": 100,
            },
            "x",
        )


def test_decode_and_concurrency_do_not_depend_on_context_prefill_is_linear():
    short = analyze("mamba-2.8b", "h100", 4_000, 64, mode="peak")
    long = analyze("mamba-2.8b", "h100", 400_000, 64, mode="peak")
    assert long.decode_step.total_s == pytest.approx(short.decode_step.total_s)
    assert long.memory.max_concurrency == short.memory.max_concurrency > 1000
    assert (
        long.memory.kv_bytes_per_user
        == short.memory.kv_bytes_per_user
        == 64 * load_model("mamba-2.8b").ssm.state_bytes()
    )
    ratio = long.prefill.total_s / short.prefill.total_s
    assert 90 < ratio < 110  # linear in the prompt, not quadratic
    # a transformer's decode step grows with the context
    t_short, t_long = (
        analyze("llama-2-7b", "h100", c, 64, mode="peak").decode_step.total_s for c in (4_000, 40_000)
    )
    assert t_long > 1.5 * t_short


def test_mamba2_decode_reads_and_writes_its_state():
    one = analyze("mamba2-2.7b", "h100", 1000, 16, mode="peak", batch=1)
    many = analyze("mamba2-2.7b", "h100", 1000, 16, mode="peak", batch=256)
    state = load_model("mamba2-2.7b").num_layers * load_model("mamba2-2.7b").ssm.state_bytes()
    extra = many.decode_step.bytes - one.decode_step.bytes
    assert extra >= 2 * 255 * state  # each more sequence: its state read and written once per step


def test_tensor_parallel_splits_heads_and_ssm_refusals():
    assert analyze("mamba2-2.7b", "h100", 8000, 16, mode="peak", tp=2).memory.max_concurrency > 0
    with pytest.raises(InvalidInputError, match="tp=3"):
        analyze("mamba2-2.7b", "h100", 8000, 16, tp=3)
    with pytest.raises(InvalidInputError, match="state-space"):
        analyze("mamba-2.8b", "h100", 8000, 16, sp=2)
    from perfmodel.knobs import Knobs

    with pytest.raises(InvalidInputError, match="attention_every"):
        analyze("mamba-2.8b", "h100", 8000, 16, knobs=Knobs(attention_every=4))


def test_cli_analyze_and_models_list_mamba():
    r = run_perfmodel("analyze", "--model", "mamba-2.8b", "--gpu", "h100", "--context", "100000", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["kv_bytes_per_token"] == 0 and d["kv_cache_bytes"] == 64 * (5120 * 4 + 5120 * 16) * 2
    r = run_perfmodel("models", "--json")
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert rows["mamba-2.8b"]["attention"] == "none" and "mamba2-2.7b" in rows


def test_cli_simulates_a_state_space_stack():
    r = run_perfmodel(
        "simulate",
        "--model",
        "mamba-2.8b",
        "--gpu",
        "h100",
        "--requests",
        "5",
        "--arrival-rate",
        "1",
        "--prompt-len",
        "128",
        "--output-len",
        "8",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (
        d["completed"] == 5
        and d["kv_capacity_blocks_per_replica"]
        == analyze("mamba-2.8b", "h100", 128, 8).memory.max_concurrency
    )
