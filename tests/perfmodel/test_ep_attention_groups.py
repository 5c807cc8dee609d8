"""Expert parallelism wider than the attention group: data-parallel attention groups for time and memory."""

import json
import math

import pytest

from perfmodel.analyze import analyze
from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.parallel import attention_groups
from perfmodel.serving import Deployment
from perfmodel.serving.deployment import replica_memory
from tests.conftest import run_perfmodel

MODEL, GPU = "mixtral-8x7b", "h100"  # 8 experts, 8 KV heads


@pytest.mark.parametrize(
    "tp,ep,sp,dp,groups",
    [
        (1, 4, 1, 1, 4),
        (2, 4, 1, 1, 2),
        (4, 4, 1, 1, 1),
        (4, 2, 1, 1, 1),
        (1, 2, 2, 1, 1),
        (1, 4, 2, 1, 2),
        (2, 4, 1, 2, 2),
        (1, 1, 1, 8, 8),
    ],
)
def test_attention_groups_rule(tp, ep, sp, dp, groups):
    assert attention_groups(tp, ep, dp, sp) == groups


@pytest.mark.parametrize("tp,ep", [(1, 4), (2, 4), (1, 8)])
def test_wide_ep_is_the_attention_dp_layout(tp, ep):
    kw = dict(context_len=20_000, output_tokens=250, batch=24, tp=tp, ep=ep, mode="peak")
    alone = analyze(MODEL, GPU, **kw).to_dict()
    explicit = analyze(MODEL, GPU, attention_dp=ep // tp, **kw).to_dict()
    assert alone == explicit
    groups = ep // tp
    assert alone["attention_dp"] == alone["parallel"]["attention_dp"] == groups
    # each GPU holds its group's users' KV, split tp ways (8 KV heads): kv_cache_bytes is every user's
    per_rank = alone["kv_cache_bytes"] / 24 * math.ceil(24 / groups) / tp
    assert alone["parallel"]["attention_dp_kv_bytes_per_rank"] == pytest.approx(per_rank, rel=1e-12)


def test_the_example_fits_and_max_concurrency_is_the_boundary():
    r = run_perfmodel(
        "analyze",
        "--model",
        MODEL,
        "--gpu",
        GPU,
        "--ep",
        "4",
        "--batch",
        "64",
        "--context",
        "20000",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["attention_dp"] == 4 and d["max_concurrency"] >= 64
    n = d["max_concurrency"]
    kw = dict(context_len=20_000, output_tokens=250, ep=4)
    analyze(MODEL, GPU, batch=n, **kw)
    with pytest.raises(DoesNotFitError) as exc:
        analyze(MODEL, GPU, batch=n + 1, **kw)
    # the refusal counts one group's users per GPU: the KV part of what it needs is theirs alone
    per_gpu_kv = math.ceil((n + 1) / 4) * d["kv_cache_bytes"] / 64
    assert exc.value.needed_bytes > per_gpu_kv
    assert (
        exc.value.needed_bytes
        < per_gpu_kv
        + d["weight_bytes_per_gpu"]
        + 2 * d["reserve_bytes_per_gpu"]
        + d["activation_bytes_per_gpu"]
    )
    # the same four GPUs under TP 4 hold every user's KV split four ways: fewer users than EP 4's
    # groups, whose GPUs hold a quarter of the experts each too (close, not equal)
    tp4 = analyze(
        MODEL, GPU, batch=1, context_len=20_000, output_tokens=250, tp=4, ep=4
    ).memory.max_concurrency
    assert abs(n - tp4) <= 0.1 * tp4


@pytest.mark.parametrize("tp,ep", [(1, 4), (2, 4), (1, 8), (4, 4), (1, 2)])
@pytest.mark.parametrize("prompt,out", [(20_000, 250), (3_001, 64)])
def test_max_concurrency_equals_the_simulators_replica(tp, ep, prompt, out):
    dep = Deployment.make(MODEL, GPU, tp=tp, ep=ep)
    mem = replica_memory(dep)
    sim = mem.ranks * (mem.rank_blocks // mem.blocks_for(prompt + out))

    def concurrency(prompt_len):
        return int(
            analyze(
                MODEL,
                GPU,
                context_len=prompt_len,
                output_tokens=out,
                tp=tp,
                ep=ep,
                chunk_tokens=dep.token_budget,
            ).memory.max_concurrency
        )

    assert mem.ranks == attention_groups(tp, ep)
    # the simulator pages KV in blocks: between analyze's count at the request's length and at that
    # length rounded up to whole blocks
    padded = -(-(prompt + out) // dep.block_tokens) * dep.block_tokens - out
    assert concurrency(padded) <= sim <= concurrency(prompt)


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
def test_sweep_rows_equal_analyze_with_wide_ep(mode):
    from perfmodel.sweep import sweep

    df = sweep(
        MODEL,
        GPU,
        context_len=[4_000, 20_000],
        batch=[8, 64],
        output_tokens=[250],
        tp=[1, 2],
        ep=4,
        mode=mode,
    )
    assert list(df.groupby("tp")["attention_dp"].first()) == [4, 2]
    assert bool(df[(df["tp"] == 1) & (df["context_len"] == 20_000) & (df["batch"] == 64)]["fits"].iloc[0])
    for row in df.itertuples():
        if not row.fits:
            continue
        d = analyze(MODEL, GPU, row.context_len, 250, batch=row.batch, tp=row.tp, ep=4, mode=mode).to_dict()
        for key in ("prefill_s", "decode_s_per_token", "decode_s", "context_switch_s", "kv_cache_bytes"):
            assert getattr(row, key) == pytest.approx(d[key], rel=1e-9), key
        assert row.max_concurrency == d["max_concurrency"] and row.attention_dp == d["attention_dp"]


def test_simulator_takes_the_equivalent_attention_dp_layout():
    from perfmodel.scenario import Layout, Scenario

    one = Deployment.from_scenario(Scenario.make(MODEL, GPU, layout=Layout(ep=4)))
    two = Deployment.from_scenario(Scenario.make(MODEL, GPU, layout=Layout(ep=4, attention_dp=4)))
    assert one == two and two.attention_ranks == 4
    with pytest.raises(InvalidInputError, match="attention_dp=4"):
        Deployment.from_scenario(Scenario.make(MODEL, GPU, layout=Layout(attention_dp=4)))


def test_cli_refuses_attention_dp_that_disagrees_with_ep_in_one_line():
    r = run_perfmodel("analyze", "--model", MODEL, "--gpu", GPU, "--ep", "4", "--attention-dp", "2")
    assert r.returncode == 1 and r.stdout == ""
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert (
        len(lines) == 1 and "ep=4 alone runs 4 attention groups" in lines[0] and "Traceback" not in r.stderr
    )


def test_sequence_parallel_groups_under_wider_ep():
    kw = dict(context_len=20_000, output_tokens=250, batch=8, mode="peak")
    sp = analyze(MODEL, GPU, sp=2, ep=4, **kw).to_dict()
    flat = analyze(MODEL, GPU, ep=4, **kw).to_dict()
    assert sp["attention_dp"] == 2 and sp["parallel"]["world"] == 4
    # two SP pairs, each holding half of its 4 users' KV: per GPU what EP 4 over four single-GPU groups holds
    assert sp["parallel"]["attention_dp_kv_bytes_per_rank"] == pytest.approx(
        flat["parallel"]["attention_dp_kv_bytes_per_rank"], rel=1e-12
    )
    assert sp["max_concurrency"] == flat["max_concurrency"]
    one = analyze(MODEL, GPU, sp=2, ep=2, **kw).to_dict()
    assert one["attention_dp"] == 1 and "attention_dp" not in one["parallel"]
