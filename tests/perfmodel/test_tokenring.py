"""TokenRing: queries and block outputs both ways round the SP ring, priced in the Ring step code."""

import json

import pytest

from perfmodel.hw import load_gpu
from perfmodel.analyze import analyze
from perfmodel.calibration import peak_profile
from perfmodel.models import load_model
from perfmodel.parallel import SpKind, sp_prefill, split_sp, tokenring_block_bytes
from tests.conftest import run_perfmodel

LLAMA2 = load_model("llama-2-7b")


def test_tokenring_is_a_ring_of_the_whole_group():
    assert split_sp(LLAMA2, 8, SpKind.TOKENRING) == (1, 8)


def test_each_direction_carries_about_half_of_rings_kv_for_mha():
    tokens, h, d, a = 1024, 32, 128, 2
    q, o = tokenring_block_bytes(tokens, h, d, d, a)
    ring_kv = tokens * 2 * h * d * a  # K and V of an MHA block
    assert q == ring_kv / 2 and ring_kv / 2 < o < 0.52 * ring_kv  # outputs carry a fp32 log-sum-exp too


def test_tokenring_hides_what_ring_exposes_and_pays_the_last_return():
    g = load_gpu("a100")
    prof = peak_profile(g)
    short_ring, short_tr = (sp_prefill(LLAMA2, g, prof, 8192, 8, k) for k in ("ring", "tokenring"))
    assert short_tr.comm_s < short_ring.comm_s / 2
    long_ring, long_tr = (sp_prefill(LLAMA2, g, prof, 65536, 8, k) for k in ("ring", "tokenring"))
    assert (
        long_ring.comm_s == 0
        and long_tr.comm_s == pytest.approx(long_tr.ring_tail_s)
        and long_tr.ring_tail_s > 0
    )


def test_gqa_queries_outweigh_the_kv():
    g = load_gpu("h100")
    m = load_model("llama-3-8b")
    q, _ = tokenring_block_bytes(1024, m.q_heads, m.head_dim, m.head_dim, 2)
    assert q > 1024 * 2 * m.kv_heads * m.head_dim * 2
    ring, tr = (
        sp_prefill(m, g, peak_profile(g), 16384, 8, k).ring_steps.comm_s for k in ("ring", "tokenring")
    )
    assert tr > ring


def test_sweep_prices_tokenring_as_analyze():
    from perfmodel.sweep import sweep

    df = sweep(
        "llama-2-7b",
        "a100",
        context_len=[8192, 16384],
        batch=[1, 2],
        output_tokens=[1],
        mode="peak",
        sp=8,
        sp_kind="tokenring",
    )
    for _, row in df.iterrows():
        a = analyze(
            "llama-2-7b",
            "a100",
            int(row.context_len),
            1,
            batch=int(row.batch),
            mode="peak",
            sp=8,
            sp_kind="tokenring",
        )
        assert row.prefill_s == pytest.approx(a.prefill.total_s, rel=1e-9)


def test_plan_sp_considers_tokenring():
    from perfmodel.planners.sp_cost import SpCostModel
    from perfmodel.planners.sp_cost import SpKind as PlanKind

    g = load_gpu("a100")
    auto = SpCostModel(LLAMA2, g, peak_profile(g), PlanKind.AUTO)
    assert PlanKind.TOKENRING in auto.kinds(8)
    tr = SpCostModel(LLAMA2, g, peak_profile(g), PlanKind.TOKENRING)
    ring = SpCostModel(LLAMA2, g, peak_profile(g), PlanKind.RING)
    assert tr.comm_s([8192], 8)[0] < ring.comm_s([8192], 8)[0]


def test_cli_sp_kind_tokenring():
    r = run_perfmodel(
        "analyze",
        "--model",
        "llama-2-7b",
        "--gpu",
        "a100",
        "--mode",
        "peak",
        "--context",
        "8192",
        "--output-tokens",
        "1",
        "--sp",
        "8",
        "--sp-kind",
        "tokenring",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (
        d["sp_kind"] == "tokenring"
        and d["parallel"]["sp_ring"] == 8
        and 0 < d["parallel"]["ring_hidden_fraction"] <= 1
    )
