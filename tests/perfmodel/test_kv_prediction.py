"""KV Prediction (perfmodel.kv_prediction): the auxiliary prefill, the KV projection and the base model's first
token, against the base model's own prefill."""

import json

import pytest

from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.kv_prediction import kv_prediction
from tests.conftest import run_perfmodel

AUX = "docs/seeds/llama-3.2-1b.json"
KW = dict(model="llama-3-8b", predictor=AUX, gpu="h100", context_len=4096, mode="peak")


def test_ttft_is_the_sum_of_its_parts_and_beats_the_base_prefill():
    r = kv_prediction(**KW)
    assert r.ttft_s == pytest.approx(r.predictor_prefill_s + r.projection_s + r.first_token_s)
    assert r.ttft_s < r.base_prefill_s and r.ttft_speedup == pytest.approx(r.base_prefill_s / r.ttft_s)
    assert r.ttft_flops_per_gpu < r.base_prefill_flops_per_gpu


def test_projection_flops_are_two_gemms_per_base_layer():
    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import peak_profile
    from perfmodel.models import load_model
    from perfmodel.phases import decode_step_cost, prefill_cost

    r = kv_prediction(**KW, batch=2)
    g = load_gpu("h100")
    prof = peak_profile(g)
    aux, base = load_model(AUX), load_model("llama-3-8b")
    proj = 2 * base.num_layers * 2.0 * (2 * 4096) * (8 * 128) * (8 * 64)
    want = prefill_cost(aux, g, prof, 4096, 2).flops + proj + decode_step_cost(base, g, prof, 4097, 2).flops
    assert r.ttft_flops_per_gpu == pytest.approx(want)


def test_a_predictor_as_large_as_the_base_buys_nothing():
    same = kv_prediction(**(KW | {"predictor": "llama-3-8b"}))
    assert same.ttft_speedup < 1


def test_bad_input_and_memory():
    with pytest.raises(InvalidInputError, match="MLA"):
        kv_prediction(**(KW | {"model": "deepseek-v2"}))
    with pytest.raises(InvalidInputError, match="context_len"):
        kv_prediction(**(KW | {"context_len": 0}))
    with pytest.raises(DoesNotFitError, match="both models"):
        kv_prediction(**(KW | {"batch": 10_000}))


def test_cli_kv_predict():
    r = run_perfmodel(
        "kv-predict",
        "--model",
        "llama-3-8b",
        "--predictor",
        AUX,
        "--gpu",
        "h100",
        "--mode",
        "peak",
        "--context",
        "2048",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["predictor"] == "llama-3.2-1b" and d["ttft_speedup"] > 1
    t = run_perfmodel("kv-predict", "--predictor", AUX, "--gpu", "h100", "--mode", "peak")
    assert t.returncode == 0 and "time to first token" in t.stdout
    bad = run_perfmodel("kv-predict", "--model", "deepseek-v2", "--predictor", AUX)
    assert bad.returncode == 1 and "MLA" in bad.stderr and "Traceback" not in bad.stderr
