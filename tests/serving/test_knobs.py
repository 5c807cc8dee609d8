"""KV-cache what-if knobs in the serving simulator: capacity, swap bytes, agreement with the core, bad input."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.hw.spec import Dtype
from perfmodel.knobs import KnobError, Knobs, KvTier
from perfmodel.layers import kv_bytes_per_token_per_gpu
from perfmodel.phases import memory_budget
from perfmodel.serving import (
    Deployment,
    LengthDist,
    Requests,
    Workload,
    analytic_bounds,
    replica_memory,
    simulate,
)

FP8 = Knobs(kv_dtype="fp8")
HALF = Knobs(kv_keep_ratio=0.5)


def test_no_knobs_and_default_knobs_are_the_same_deployment():
    base = Deployment.make("llama-3-8b", "h100-sxm-80gb")
    assert Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs()) == base
    assert Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs()).knobs is None


@pytest.mark.parametrize("knobs", [FP8, HALF, Knobs(kv_layers=8, kv_heads=4), Knobs(attention_every=4)])
def test_replica_memory_is_the_core_memory_model(knobs):
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=knobs)
    mem = replica_memory(dep)
    core = memory_budget(
        dep.model, dep.gpu, dep.token_budget, 0, dep.precision, chunk_tokens=dep.token_budget, knobs=knobs
    )
    assert mem.free_for_kv_bytes_per_gpu == pytest.approx(float(core.free_for_kv_bytes))
    assert mem.kv_bytes_per_token_per_gpu == kv_bytes_per_token_per_gpu(dep.model, 1, Dtype.BF16, knobs)


@pytest.mark.parametrize("knobs", [FP8, HALF])
def test_saturated_peak_concurrency_doubles_when_the_kv_halves(knobs):
    # 300 requests at once; 4000 + 64 tokens each: memory, not max_num_seqs, bounds the batch
    reqs = Requests.of([0.0] * 300, [4000] * 300, [64] * 300)
    base = simulate(
        Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_policy="queue"), reqs, record_timeline=False
    )
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_policy="queue", knobs=knobs)
    res = simulate(dep, reqs, record_timeline=False)
    mc_base = memory_budget(dep.model, dep.gpu, 4000, 64, chunk_tokens=dep.token_budget).max_concurrency
    mc = memory_budget(
        dep.model, dep.gpu, 4000, 64, chunk_tokens=dep.token_budget, knobs=knobs
    ).max_concurrency
    assert 0.95 * mc_base <= base.peak_concurrency <= mc_base < 150
    assert 0.95 * mc <= res.peak_concurrency <= mc
    assert res.peak_concurrency / base.peak_concurrency == pytest.approx(2.0, rel=0.03)
    # fewer, cheaper steps for the same work; never above the analytical bound with the same knobs
    assert res.makespan_s < base.makespan_s
    assert res.throughput_tokens_per_s <= analytic_bounds(dep, reqs).throughput_bound_tokens_per_s


@pytest.mark.parametrize("knobs", [FP8, HALF])
def test_swap_bytes_per_preemption_halve(knobs):
    reqs = Requests.of([0.0] * 3, [50_000] * 3, [250] * 3)
    kw = {"kv_policy": "swap", "slice_tokens": 50}
    base = simulate(Deployment.make("yi-34b", "a100-sxm-80gb", **kw), reqs, record_timeline=False)
    dep = Deployment.make("yi-34b", "a100-sxm-80gb", knobs=knobs, **kw)
    res = simulate(dep, reqs, record_timeline=False)
    assert base.preemptions.sum() > 0 and res.preemptions.sum() > 0
    assert res.swap_in_bytes == res.swap_out_bytes
    per_base = base.swap_out_bytes / base.preemptions.sum()
    per = res.swap_out_bytes / res.preemptions.sum()
    assert per / per_base == pytest.approx(0.5, rel=0.01)
    # one user's kept KV (prompt + some output tokens) at the knobs' bytes per token
    kv_tok = kv_bytes_per_token_per_gpu(dep.model, 1, Dtype.BF16, knobs)
    kept = dep.kept_tokens(50_250)
    assert per == pytest.approx(kept * kv_tok, rel=0.01)


@pytest.mark.parametrize(
    "knobs,prompt,out",
    [
        (FP8, 7000, 200),
        (HALF, 6000, 100),
        (Knobs(kv_budget_tokens=1024), 5000, 100),
        (Knobs(kv_keep_ratio=0.25, prune_prefill=True), 6000, 64),
        (Knobs(kv_layers=8, kv_heads=4, kv_dtype="int4"), 3000, 128),
        (Knobs(attention_density=0.5), 8000, 64),
        (Knobs(sliding_window=2048), 6000, 100),
        (Knobs(attention_every=4), 4000, 64),
    ],
)
def test_one_request_alone_matches_analytical_prefill_plus_decode_with_knobs(knobs, prompt, out):
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=knobs, mode="peak")
    req = Requests.of([0.0], [prompt], [out])
    res, b = simulate(dep, req), analytic_bounds(dep, req)
    assert res.ttft_s[0] == pytest.approx(b.prefill_s[0], rel=2e-3)
    assert res.e2e_s[0] == pytest.approx(b.alone_e2e_s[0], rel=2e-3)
    base = analytic_bounds(Deployment.make("llama-3-8b", "h100-sxm-80gb", mode="peak"), req)
    assert b.alone_e2e_s[0] != base.alone_e2e_s[0]  # the knobs reach the costs


def test_pruned_prefill_runs_the_kept_tokens_only():
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs(kv_keep_ratio=0.25, prune_prefill=True))
    res = simulate(dep, Requests.of([0.0, 0.0], [6000, 801], [8, 8]))
    assert res.timeline_frame()["prefill_tokens"].sum() == 1500 + 201


@pytest.mark.parametrize(
    "make",
    [
        lambda: Deployment.make("llama-3-8b", "h100-sxm-80gb", pp=2, knobs=Knobs(kv_tiers=(KvTier("ddr"),))),
        lambda: simulate(
            Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs(shared_prefix_tokens=3000)),
            Requests.of([0.0, 0.0], [5000, 3000], [4, 4]),
        ),
        lambda: Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs(kv_layers=40)),
        lambda: Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs(kv_heads=3)),
        lambda: Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs="fp8"),
        lambda: Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs(kv_keep_ratio=0.0)),
        lambda: simulate(
            Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs(sliding_window=4096)),
            Requests.of([0.0, 0.0], [5000, 3000], [4, 4]),
        ),
    ],
)
def test_bad_knobs_raise_a_typed_error(make):
    with pytest.raises(KnobError):
        make()
    assert issubclass(KnobError, ValueError)


@settings(max_examples=10, deadline=None)
@given(
    n=st.integers(1, 30),
    seed=st.integers(0, 10_000),
    ratio=st.sampled_from([1.0, 0.7, 0.3]),
    dtype=st.sampled_from([None, "fp8", "int4"]),
    policy=st.sampled_from(["swap", "recompute", "queue"]),
)
def test_invariants_with_knobs(n, seed, ratio, dtype, policy):
    knobs = Knobs(kv_dtype=dtype, kv_keep_ratio=ratio)
    dep = Deployment.make(
        "llama-3-8b", "h100-sxm-80gb", kv_policy=policy, slice_tokens=8, max_num_seqs=16, knobs=knobs
    )
    reqs = Workload(
        n, math.inf, LengthDist.parse("uniform:1:6000"), LengthDist.parse("uniform:1:100"), seed=seed
    ).generate()
    res, b = simulate(dep, reqs), analytic_bounds(dep, reqs)
    assert np.all(np.isfinite(res.finish_s))
    assert np.all(res.ttft_s >= b.prefill_s * (1 - 1e-3))
    assert np.all(res.e2e_s >= b.alone_e2e_s * (1 - 1e-3))
    assert res.swap_in_bytes == res.swap_out_bytes
    assert (res.timeline_frame()["kv_blocks_used"] <= res.capacity_blocks).all()
    # a knob that shrinks the KV never fits fewer users of a given length
    base = replica_memory(Deployment.make("llama-3-8b", "h100-sxm-80gb"))
    mem = replica_memory(dep)
    for tokens in (1000, 6100):
        assert mem.capacity_blocks // mem.blocks_for(
            dep.kept_tokens(tokens)
        ) >= base.capacity_blocks // base.blocks_for(tokens)


def test_fp8_knob_and_fp8_precision_serve_alike():
    # the dequantisation pass depends on the keys read, so it sits in the attention tables either way
    reqs = Requests.of([0.0, 0.1, 0.2], [7000, 300, 2500], [200, 50, 90])
    a = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_dtype="fp8"), reqs)
    b = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=FP8), reqs)
    assert a.capacity_blocks == b.capacity_blocks
    np.testing.assert_allclose(a.finish_s, b.finish_s, rtol=1e-12)
    one = Requests.of([0.0], [7000], [200])
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_dtype="fp8")
    assert simulate(dep, one).e2e_s[0] == pytest.approx(analytic_bounds(dep, one).alone_e2e_s[0], rel=2e-3)
