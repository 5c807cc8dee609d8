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
    one = (collective_time(OpKind.ALL_GATHER, nbytes, 8, g, peak_profile(g))
           + collective_time(OpKind.REDUCE_SCATTER, nbytes, 8, g, peak_profile(g))).total_s
    assert d["parallel"]["attention_dp_comm_s"]["decode_per_token"] == pytest.approx(one * m.num_moe_layers)
    assert d["communication"]["decode_per_token_s"] >= d["parallel"]["attention_dp_comm_s"]["decode_per_token"]


@pytest.mark.parametrize("kw,msg", [
    (dict(model="llama-3-8b", attention_dp=4), "dense"),
    (dict(attention_dp=8, ep=4), "ep must be 1"),
    (dict(attention_dp=2, sp=2, ep=1), "sp=2"),
])
def test_attention_dp_refusals(kw, msg):
    kw = dict(dict(model="deepseek-v2"), **kw)
    with pytest.raises(InvalidInputError, match=msg):
        analyze(kw.pop("model"), "h100", 4096, 8, **kw)


def test_cli_attention_dp():
    r = run_perfmodel("analyze", "--model", "deepseek-v2", "--gpu", "h100", "--mode", "peak", "--context", "2048",
                      "--output-tokens", "64", "--attention-dp", "8", "--ep", "8", "--weight-dtype", "fp8", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["attention_dp"] == 8 and d["parallel"]["world"] == 8
    assert d["parallel"]["attention_dp_kv_bytes_per_rank"] > 0
    r = run_perfmodel("analyze", "--model", "llama-3-8b", "--gpu", "h100", "--attention-dp", "2")
    assert r.returncode != 0 and len([x for x in r.stderr.splitlines() if x.strip()]) == 1
