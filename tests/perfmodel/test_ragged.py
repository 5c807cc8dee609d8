"""Ragged (unpadded) batches: the attention / decoder_layer ``seq_lens`` field, ``analyze --batch-lengths``,
and the simulator's prefill batches on real token counts."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfmodel
from perfmodel.errors import InvalidInputError, OpDescriptorError
from perfmodel.ops import Attention, Phase, bytes_moved, flops, op_from_dict, op_to_dict, padded, visible_keys
from tests.conftest import run_perfmodel

HEADS = dict(q_heads=32, kv_heads=8, head_dim=128)


def _ragged(lens, **kw):
    top = max(lens)
    return Attention(Phase.PREFILL, len(lens), top, top, seq_lens=tuple(lens), **(HEADS | kw))


def test_counts_are_each_sequences_own():
    op = _ragged([1000, 4000, 32000])
    pairs = sum(n * (n + 1) / 2 for n in (1000, 4000, 32000))
    assert flops(op) == pytest.approx(2 * 32 * 256 * pairs)
    kv = sum(8 * n * 256 * 2 for n in (1000, 4000, 32000))
    qo = sum(32 * n * 256 * 2 for n in (1000, 4000, 32000))
    assert bytes_moved(op) == pytest.approx(kv + qo)
    pad = padded(op)
    assert pad.seq_lens is None and flops(pad) == pytest.approx(
        2 * 3 * 32 * 256 * visible_keys(32000, 32000, True)
    )


def test_json_round_trip_and_defaults():
    d = {"op": "attention", "phase": "prefill", "seq_lens": [100, 700], **HEADS}
    op = op_from_dict(d)
    assert (op.batch, op.q_len, op.kv_len, op.seq_lens) == (2, 700, 700, (100, 700))
    back = json.loads(json.dumps(op_to_dict(op)))
    assert back["seq_lens"] == [100, 700] and op_from_dict(back) == op
    layer = op_from_dict(
        {
            "op": "decoder_layer",
            "phase": "prefill",
            "seq_lens": [5, 9],
            "hidden": 512,
            "intermediate": 1024,
            **HEADS,
        }
    )
    assert op_from_dict(json.loads(json.dumps(op_to_dict(layer)))) == layer


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"seq_lens": []}, "non-empty"),
        ({"seq_lens": [3, 0]}, ">= 1"),
        ({"seq_lens": [3, 4], "batch": 3}, "2 lengths but batch is 3"),
        ({"seq_lens": [3, 4], "kv_len": 9}, "must equal kv_len"),
    ],
)
def test_bad_lengths_are_one_line(bad, match):
    with pytest.raises(OpDescriptorError, match=match):
        op_from_dict({"op": "attention", "phase": "prefill", **HEADS} | bad, where="line 2: ")


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
def test_ragged_costs_the_real_work(mode):
    op = _ragged([1000, 4000, 32000])
    ragged, pad = perfmodel.predict(op, "h100", mode=mode), perfmodel.predict(padded(op), "h100", mode=mode)
    assert ragged < 0.5 * pad
    # equal lengths: the padded batch
    same = _ragged([2048] * 4)
    assert perfmodel.predict(same, "h100", mode=mode) == pytest.approx(
        perfmodel.predict(padded(same), "h100", mode=mode)
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 20_000), min_size=1, max_size=6), st.sampled_from(["peak", "calibrated"]))
def test_ragged_never_costs_more_than_padded(lens, mode):
    op = _ragged(lens)
    assert flops(op) <= flops(padded(op)) * (1 + 1e-12)
    assert perfmodel.predict(op, "h100", mode=mode) <= perfmodel.predict(padded(op), "h100", mode=mode) * (
        1 + 1e-9
    )


def test_decoder_layer_gemms_run_on_the_total_tokens():
    from perfmodel.ops import decoder_layer_parts

    layer = op_from_dict(
        {
            "op": "decoder_layer",
            "phase": "prefill",
            "seq_lens": [100, 300],
            "hidden": 512,
            "intermediate": 1024,
            **HEADS,
        }
    )
    parts = {name: o for name, o, _ in decoder_layer_parts(layer)}
    assert parts["qkv_proj"].m == 400 and parts["attention"].seq_lens == (100, 300)
    assert perfmodel.predict(layer, "h100", mode="peak") < perfmodel.predict(
        padded(layer), "h100", mode="peak"
    )


def test_analyze_batch_lengths():
    a = perfmodel.analyze(
        "llama-3-8b", "h100", mode="peak", batch_lengths=[1000, 4000, 8000], output_tokens=16
    )
    d = a.to_dict()
    assert (d["batch"], d["context_len"]) == (3, 8000)
    r = d["batch_lengths"]
    assert r["tokens"] == 13_000 and r["padded_tokens"] == 24_000
    assert r["prefill_s"] == d["prefill_s"] < r["padded_prefill_s"]
    assert r["padded_over_ragged"] == pytest.approx(r["padded_prefill_s"] / r["prefill_s"])
    # equal lengths: the same pass padded or not
    eq = perfmodel.analyze("llama-3-8b", "h100", mode="peak", batch_lengths=[4000, 4000]).to_dict()[
        "batch_lengths"
    ]
    assert eq["prefill_s"] == pytest.approx(eq["padded_prefill_s"])
    with pytest.raises(InvalidInputError, match="one TP group"):
        perfmodel.analyze("llama-3-8b", "h100", batch_lengths=[10, 20], pp=2)
    with pytest.raises(InvalidInputError, match="batch_lengths"):
        perfmodel.analyze("llama-3-8b", "h100", batch_lengths=[10, 0])


def test_cli_batch_lengths():
    r = run_perfmodel(
        "analyze",
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
        "--mode",
        "peak",
        "--batch-lengths",
        "1000,4000,8000",
        "--output-tokens",
        "4",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["batch_lengths"]["lengths"] == [1000, 4000, 8000] and d["batch"] == 3
    t = run_perfmodel(
        "analyze",
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
        "--mode",
        "peak",
        "--batch-lengths",
        "1000,4000,8000",
        "--output-tokens",
        "4",
    )
    assert t.returncode == 0 and "prefill, padded" in t.stdout
    bad = run_perfmodel("analyze", "--batch-lengths", "1000,x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_simulator_prefill_batch_is_priced_on_real_tokens():
    """A pass holding prefill chunks of different lengths costs the dense ops of their total tokens plus each
    chunk's own attention (no padding to the longest)."""
    from perfmodel.serving.timing import IterationTimer

    dep = perfmodel.Deployment.make("llama-3-8b", "h100", mode="peak")
    assert dep.token_budget >= 3 * 2048
    it = IterationTimer(dep, 8192, 8)
    chunks = [(256, 256), (1024, 1024), (2048, 2048)]
    attn = sum(it.attn_prefill_s(c, e) for c, e in chunks)
    ragged = it.iteration_s(0, 0.0, sum(c for c, _ in chunks), len(chunks), attn)
    pad = it.iteration_s(0, 0.0, 3 * 2048, 3, 3 * it.attn_prefill_s(2048, 2048))
    assert ragged == pytest.approx(it.dense_prefill[3328] + it.head[3] + attn)
    assert ragged < pad
