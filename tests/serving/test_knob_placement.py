"""Shared prefixes, KV tiers and attention offloading in the simulator: agreement with the core, capacity,
invariants."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from perfmodel.hw.loader import load_gpu
from perfmodel.knobs import AttentionOffload, Knobs, KvTier
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

H200 = load_gpu("h200-sxm-141gb")
PREFIX = Knobs(shared_prefix_tokens=2000)
DDR = Knobs(kv_tiers=(KvTier("ddr"),))
POOL = Knobs(offload=AttentionOffload(H200, 50e9))


@pytest.mark.parametrize(
    "model,gpu,knobs,prompt,out",
    [
        ("llama-3-8b", "h100-sxm-80gb", PREFIX, 4000, 64),
        (
            "llama-3-8b",
            "h100-sxm-80gb",
            Knobs(shared_prefix_tokens=1000, prefix_aware_kernel=False),
            3000,
            32,
        ),
        # 120K tokens of yi-34b do not fit one A100's HBM: the tail lives in host DDR and streams every step
        ("yi-34b", "a100-sxm-80gb", DDR, 120_000, 16),
        ("yi-34b", "a100-sxm-80gb", DDR.replace(prefetch=False), 120_000, 16),
        ("llama-3-8b", "h100-sxm-80gb", POOL, 4000, 64),
        (
            "yi-34b",
            "a100-sxm-80gb",
            Knobs(offload=AttentionOffload(H200, 25e9, 2.0, 5e-6, False)),
            50_000,
            32,
        ),
    ],
)
def test_one_request_alone_matches_analytical_prefill_plus_decode(model, gpu, knobs, prompt, out):
    dep = Deployment.make(model, gpu, knobs=knobs, mode="peak")
    req = Requests.of([0.0], [prompt], [out])
    res, b = simulate(dep, req), analytic_bounds(dep, req)
    assert res.ttft_s[0] == pytest.approx(b.prefill_s[0], rel=2e-3)
    assert res.e2e_s[0] == pytest.approx(b.alone_e2e_s[0], rel=2e-3)


def test_tier_streaming_costs_every_step_and_prefetch_hides_part_of_it():
    req = Requests.of([0.0], [120_000], [16])
    fetch = simulate(Deployment.make("yi-34b", "a100-sxm-80gb", knobs=DDR), req)
    serial = simulate(Deployment.make("yi-34b", "a100-sxm-80gb", knobs=DDR.replace(prefetch=False)), req)
    with pytest.raises(ValueError):  # without the tier it does not fit at all
        simulate(Deployment.make("yi-34b", "a100-sxm-80gb"), req)
    assert fetch.ttft_s[0] == serial.ttft_s[0]  # prefill streams nothing
    assert fetch.tpot_s[0] < serial.tpot_s[0]


def test_the_shared_prefix_is_prefilled_once_per_replica_and_never_swapped():
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=PREFIX)
    res = simulate(dep, Requests.of([0.0, 0.0, 0.0], [4000, 3000, 2500], [8, 8, 8]))
    assert res.timeline_frame()["prefill_tokens"].sum() == 4000 + 1000 + 500
    alone = analytic_bounds(dep, Requests.of([0.0], [3000], [8]))
    assert res.ttft_s[1] < res.ttft_s[0] + alone.prefill_s[0]  # the second skips the prefix
    mem = replica_memory(dep)
    assert mem.prefix_blocks == 125 and mem.blocks_for(4064) == 129
    assert mem.swap_bytes_per_gpu(4064) == 129 * 16 * mem.kv_bytes_per_token_per_gpu


@pytest.mark.parametrize(
    "knobs,n",
    [
        (PREFIX, 300),
        (Knobs(kv_tiers=(KvTier("nvme", 60e9, 7e9),)), 300),
        (POOL, 400),
    ],
)
def test_saturated_peak_concurrency_follows_the_memory_model(knobs, n):
    # n requests of 4000 + 64 tokens at once: memory, not max_num_seqs, bounds the batch
    reqs = Requests.of([0.0] * n, [4000] * n, [64] * n)
    base_dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_policy="queue")
    base = simulate(base_dep, reqs, record_timeline=False)
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_policy="queue", knobs=knobs)
    res = simulate(dep, reqs, record_timeline=False)
    mc_base = memory_budget(dep.model, dep.gpu, 4000, 64, chunk_tokens=dep.token_budget).max_concurrency
    mc = memory_budget(
        dep.model, dep.gpu, 4000, 64, chunk_tokens=dep.token_budget, knobs=knobs
    ).max_concurrency
    assert mc < n and mc > 1.5 * mc_base
    assert 0.95 * mc <= res.peak_concurrency <= mc
    assert res.peak_concurrency <= analytic_bounds(dep, reqs).max_concurrency
    assert res.peak_concurrency / base.peak_concurrency == pytest.approx(mc / mc_base, rel=0.03)


@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(1, 25),
    seed=st.integers(0, 10_000),
    which=st.sampled_from(["prefix", "ddr", "nvme", "pool"]),
    policy=st.sampled_from(["swap", "recompute", "queue"]),
)
# pipelined offload, a long and a short prompt decoding together: the long one's steps beat a pair of its own
# length, so the TPOT floor must take the shortest partner
@example(n=2, seed=1026, which="pool", policy="swap")
def test_invariants(n, seed, which, policy):
    knobs = {
        "prefix": Knobs(shared_prefix_tokens=500, kv_dtype="fp8"),
        "ddr": DDR,
        "nvme": Knobs(kv_tiers=(KvTier("nvme", 2e9, 5e9),), prefetch=seed % 2 == 0),
        "pool": Knobs(offload=AttentionOffload(H200, 50e9, 0.05, 5e-6, seed % 2 == 0)),
    }[which]
    # a large reserve leaves room for a few requests only: the KV pressure is high
    dep = Deployment.make(
        "llama-3-8b",
        "h100-sxm-80gb",
        kv_policy=policy,
        slice_tokens=8,
        max_num_seqs=16,
        knobs=knobs,
        reserve_fraction=0.7,
    )
    reqs = Workload(
        n, math.inf, LengthDist.parse("uniform:600:8000"), LengthDist.parse("uniform:1:100"), seed=seed
    ).generate()
    reqs = Requests.of(reqs.arrival_s, np.minimum(reqs.prompt_len, 8192 - reqs.output_len), reqs.output_len)
    res, b = simulate(dep, reqs), analytic_bounds(dep, reqs)
    assert np.all(np.isfinite(res.finish_s))
    assert np.all(res.ttft_s >= b.ttft_floor_s * (1 - 1e-3))
    assert np.all(res.e2e_s >= (b.ttft_floor_s + (reqs.output_len - 1) * b.tpot_floor_s) * (1 - 1e-3))
    assert res.swap_in_bytes == res.swap_out_bytes
    assert (res.timeline_frame()["kv_blocks_used"] <= res.capacity_blocks).all()
    assert res.peak_concurrency <= b.max_concurrency
    assert res.throughput_tokens_per_s <= b.throughput_bound_tokens_per_s * (1 + 1e-3)
