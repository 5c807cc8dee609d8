"""Blockwise attention and feed-forward (perfmodel.blockwise): peak activations, the longest prompt that
fits under each scheme, and the blocked prefill's time beside the whole-sequence pass."""

import json

import pytest

from perfmodel.blockwise import Scheme, blockwise, score_bytes
from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.layers import Precision, activation_bytes
from perfmodel.models import load_model
from tests.conftest import run_perfmodel

KW = dict(model="llama-2-7b", gpu="a100", context_len=16384, block_tokens=2048, mode="peak")


def test_activations_per_scheme_follow_the_layer_workspace():
    r = blockwise(**KW)
    m, prec = load_model("llama-2-7b"), Precision()
    whole = float(activation_bytes(m, 16384, prec))
    assert r.scheme(Scheme.BLOCKWISE).activation_bytes == pytest.approx(
        float(activation_bytes(m, 2048, prec))
    )
    assert r.scheme(Scheme.MEMORY_EFFICIENT).activation_bytes == pytest.approx(whole)
    assert r.scheme("vanilla").activation_bytes == pytest.approx(whole + 32 * 16384**2 * 4)
    assert score_bytes(m, 16384, 2, 2) == 2 * 16 * 16384**2 * 4


def test_longest_prompt_grows_from_vanilla_to_blockwise_and_is_the_edge_of_fitting():
    r = blockwise(**KW)
    v, me, bw = (r.scheme(s).max_context_tokens for s in Scheme)
    assert 0 < v < me < bw
    for s in Scheme:  # one more token does not fit, the longest does
        n = r.scheme(s).max_context_tokens
        assert blockwise(**(KW | {"context_len": n})).scheme(s).fits
        assert not blockwise(**(KW | {"context_len": n + 1})).scheme(s).fits
    # smaller blocks hold less at once, so a (slightly) longer prompt fits
    assert blockwise(**(KW | {"block_tokens": 512})).scheme(Scheme.BLOCKWISE).max_context_tokens > bw


def test_blocked_prefill_time_beside_the_whole_pass():
    peak = blockwise(**KW)
    assert peak.scheme(Scheme.VANILLA).prefill_s is None
    # at the datasheet roofline blocks of 2,048 rows cost what the whole pass does (same FLOPs and pairs)
    assert peak.blockwise_over_whole_prefill == pytest.approx(1.0, abs=0.01)
    # tiny blocks make every GEMM re-read its weights: slower
    tiny = blockwise(**(KW | {"block_tokens": 16}))
    assert tiny.blockwise_over_whole_prefill > 1.5


def test_bad_input_and_what_does_not_fit():
    with pytest.raises(InvalidInputError, match="block_tokens"):
        blockwise(**(KW | {"block_tokens": 0}))
    with pytest.raises(InvalidInputError, match="state-space"):
        blockwise("mamba-2.8b", "h100", 4096)
    with pytest.raises(InvalidInputError, match="mode"):
        blockwise(**(KW | {"mode": "fast"}))
    with pytest.raises(DoesNotFitError, match="raise tp"):
        blockwise("llama-3.1-405b", "a100", 4096)


def test_cli_json_and_table():
    res = run_perfmodel("blockwise", "--model", "llama-2-7b", "--gpu", "a100", "--mode", "peak", "--json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert (
        d["vanilla"]["prefill_s"] is None
        and d["blockwise"]["max_context_tokens"] > d["vanilla"]["max_context_tokens"]
    )
    table = run_perfmodel("blockwise", "--model", "llama-2-7b", "--gpu", "a100", "--mode", "peak")
    assert table.returncode == 0 and "memory_efficient" in table.stdout and "not priced" in table.stdout
    bad = run_perfmodel("blockwise", "--model", "mamba-2.8b")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
