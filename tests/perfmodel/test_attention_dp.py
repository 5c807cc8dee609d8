"""DeepSeek's serving layout: data-parallel attention with the MoE layers over all ranks."""

import json
import math

import pytest

from perfmodel.hw import load_gpu
from perfmodel.analyze import analyze
from perfmodel.calibration import peak_profile
from perfmodel.costs.collectives import collective_time
from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.models import load_model
from perfmodel.ops import OpKind
from tests.conftest import run_perfmodel

KW = dict(mode="peak", weight_dtype="fp8", kv_dtype="fp8")


def test_each_rank_holds_its_own_requests_latent_kv():
    tp = analyze("deepseek-v2", "h100", 2048, 512, tp=8, **KW)
    dp = analyze("deepseek-v2", "h100", 2048, 512, attention_dp=8, ep=8, **KW)
    # MLA's latent is not split by heads: under TP every GPU stores every request's; under DP only its own
    assert dp.memory.max_concurrency > 5 * tp.memory.max_concurrency
    assert dp.memory.max_concurrency % 8 == 0
    n = int(dp.memory.max_concurrency)
    analyze("deepseek-v2", "h100", 2048, 512, attention_dp=8, ep=8, batch=n, **KW)
    with pytest.raises(DoesNotFitError):
        analyze("deepseek-v2", "h100", 2048, 512, attention_dp=8, ep=8, batch=n + 1, **KW)
    d = analyze("deepseek-v2", "h100", 2048, 512, attention_dp=8, ep=8, batch=20, **KW).to_dict()
    m = load_model("deepseek-v2")
    per_user = m.num_layers * (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * 1 * (2048 + 512)  # fp8
    assert d["parallel"]["attention_dp_kv_bytes_per_rank"] == pytest.approx(math.ceil(20 / 8) * per_user)
    assert d["attention_dp"] == 8 and d["parallel"]["attention_dp_comm_s"]["decode_per_token"] == 0


def test_tensor_parallel_moe_pays_a_gather_and_a_scatter_per_layer():
    g = load_gpu("h100")
    m = load_model("deepseek-v2")
    d = analyze("deepseek-v2", "h100", 1024, 8, attention_dp=8, batch=64, **KW).to_dict()
    nbytes = 64 * m.hidden * 2  # every rank's hidden state of one decode step, bf16
    one = (
        collective_time(OpKind.ALL_GATHER, nbytes, 8, g, peak_profile(g))
        + collective_time(OpKind.REDUCE_SCATTER, nbytes, 8, g, peak_profile(g))
    ).total_s
    assert d["parallel"]["attention_dp_comm_s"]["decode_per_token"] == pytest.approx(one * m.num_moe_layers)
    assert (
        d["communication"]["decode_per_token_s"] >= d["parallel"]["attention_dp_comm_s"]["decode_per_token"]
    )


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(model="llama-3-8b", attention_dp=4), "dense"),
        (dict(attention_dp=8, ep=4), "ep must be 1"),
        (dict(attention_dp=2, sp=2, ep=1), "sp=2"),
    ],
)
def test_attention_dp_refusals(kw, msg):
    kw = dict(dict(model="deepseek-v2"), **kw)
    with pytest.raises(InvalidInputError, match=msg):
        analyze(kw.pop("model"), "h100", 4096, 8, **kw)


def test_cli_attention_dp():
    r = run_perfmodel(
        "analyze",
        "--model",
        "deepseek-v2",
        "--gpu",
        "h100",
        "--mode",
        "peak",
        "--context",
        "2048",
        "--output-tokens",
        "64",
        "--attention-dp",
        "8",
        "--ep",
        "8",
        "--weight-dtype",
        "fp8",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["attention_dp"] == 8 and d["parallel"]["world"] == 8
    assert d["parallel"]["attention_dp_kv_bytes_per_rank"] > 0
    r = run_perfmodel("analyze", "--model", "llama-3-8b", "--gpu", "h100", "--attention-dp", "2")
    assert r.returncode != 0 and len([x for x in r.stderr.splitlines() if x.strip()]) == 1


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
@pytest.mark.parametrize("ep", [8, 1])
def test_sweep_rows_equal_analyze_with_attention_dp(mode, ep):
    from perfmodel.sweep import sweep

    kw = dict(KW, mode=mode)
    df = sweep(
        "deepseek-v2",
        "h100",
        context_len=[2048, 16384],
        batch=[8, 64],
        output_tokens=[64],
        attention_dp=8,
        ep=ep,
        **kw,
    )
    assert (df["attention_dp"] == 8).all() and (df["world"] == 8).all()
    assert df["fits"].any()
    for row in df.itertuples():
        if not row.fits:
            continue
        d = analyze(
            "deepseek-v2", "h100", row.context_len, 64, batch=row.batch, attention_dp=8, ep=ep, **kw
        ).to_dict()
        for key in ("prefill_s", "decode_s_per_token", "decode_s", "context_switch_s", "kv_cache_bytes"):
            assert getattr(row, key) == pytest.approx(d[key], rel=1e-9), key
        assert row.max_concurrency == d["max_concurrency"]
    plain = sweep("deepseek-v2", "h100", context_len=[2048], batch=[8], output_tokens=[64], tp=8, **kw)
    assert int(df["max_concurrency"].iloc[0]) > int(plain["max_concurrency"].iloc[0])


def test_sweep_takes_attention_dp_from_a_scenario_and_refuses_it_for_a_dense_model():
    from perfmodel.scenario import Layout, Scenario
    from perfmodel.sweep import sweep

    scn = Scenario.make(
        "deepseek-v2",
        "h100",
        context_len=2048,
        output_tokens=64,
        batch=16,
        layout=Layout(attention_dp=8, ep=8),
        **KW,
    )
    row = sweep(scn).iloc[0]
    assert row["attention_dp"] == 8
    assert row["decode_s_per_token"] == pytest.approx(analyze(scn).to_dict()["decode_s_per_token"], rel=1e-9)
    with pytest.raises(InvalidInputError, match="dense"):
        sweep("llama-3-8b", "h100", context_len=[4096], attention_dp=4)


def test_cli_sweep_attention_dp():
    r = run_perfmodel(
        "sweep",
        "--model",
        "deepseek-v2",
        "--gpu",
        "h100",
        "--mode",
        "peak",
        "--context",
        "2048",
        "--batch",
        "16",
        "--output-tokens",
        "64",
        "--attention-dp",
        "8",
        "--ep",
        "8",
        "--weight-dtype",
        "fp8",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    d = analyze(
        "deepseek-v2", "h100", 2048, 64, batch=16, attention_dp=8, ep=8, mode="peak", weight_dtype="fp8"
    ).to_dict()
    assert row["attention_dp"] == 8 and row["world"] == 8
    assert row["decode_s_per_token"] == pytest.approx(
        d["decode_s_per_token"], rel=1e-8
    )  # JSON keeps 10 digits
    r = run_perfmodel(
        "sweep", "--model", "llama-3-8b", "--gpu", "h100", "--context", "4096", "--attention-dp", "2"
    )
    assert r.returncode != 0 and len([x for x in r.stderr.splitlines() if x.strip()]) == 1
