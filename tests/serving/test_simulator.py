"""Agreement of the simulator with the analytical core, and scheduler invariants."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.phases import memory_budget
from perfmodel.serving import Deployment, LengthDist, Requests, Slo, Workload, analytic_bounds, simulate


@pytest.fixture(scope="module")
def llama():
    return Deployment.make("llama-3-8b", "h100-sxm-80gb")


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
@pytest.mark.parametrize(
    "model,gpu,tp,prompt,out",
    [
        ("llama-3-8b", "h100-sxm-80gb", 1, 2048, 128),
        ("llama-3-8b", "h100-sxm-80gb", 2, 7000, 300),
        ("yi-34b", "a100-sxm-80gb", 1, 50_000, 250),
        ("mixtral-8x7b", "h100-sxm-80gb", 2, 3000, 64),
    ],
)
def test_one_request_alone_matches_analytical_prefill_plus_decode(model, gpu, tp, prompt, out, mode):
    dep = Deployment.make(model, gpu, tp=tp, mode=mode)
    req = Requests.of([0.0], [prompt], [out])
    res = simulate(dep, req)
    b = analytic_bounds(dep, req)
    assert res.ttft_s[0] == pytest.approx(b.prefill_s[0], rel=2e-3)
    assert res.e2e_s[0] == pytest.approx(b.alone_e2e_s[0], rel=2e-3)
    assert res.tpot_s[0] >= b.tpot_floor_s[0] * (1 - 1e-9)


def _synthetic_profile(gpu):
    """A non-trivial profile (efficiencies, ramps, latencies, tiles), so the tables meet real curves."""
    from perfmodel.calibration import profile_from_dict

    c = {
        "compute_eff": 0.7,
        "memory_eff": 0.8,
        "latency_s": 4e-6,
        "ramp_flops": 2e9,
        "ramp_bytes": 4e6,
        "overlap": 0.6,
    }
    return profile_from_dict(
        {
            "gpu": gpu,
            "classes": {
                "gemm": c | {"tile_m": 128, "tile_n": 128, "tile_m_min": 16},
                "attention_prefill": c | {"tile_m": 128},
                "attention_decode": c,
                "elementwise": c,
                "memcpy_d2h": c,
                "memcpy_h2d": c,
            },
        }
    )


@pytest.mark.parametrize(
    "model,prompt,out", [("llama-3-8b", 4000, 64), ("llama-3.1-405b", 20_000, 16), ("llama-3-8b", 300, 200)]
)
def test_calibrated_profile_one_request_matches(model, prompt, out):
    tp = 8 if "405b" in model else 1
    dep = Deployment.make(
        model, "h200-sxm-141gb", tp=tp, weight_dtype="fp8", profile=_synthetic_profile("h200-sxm-141gb")
    )
    req = Requests.of([0.0], [prompt], [out])
    res, b = simulate(dep, req), analytic_bounds(dep, req)
    assert res.ttft_s[0] == pytest.approx(b.prefill_s[0], rel=1e-2)
    assert res.e2e_s[0] == pytest.approx(b.alone_e2e_s[0], rel=1e-2)


@pytest.mark.parametrize(
    "prompt,out,policy",
    [(2048, 128, "queue"), (256, 1024, "queue"), (2048, 512, "swap"), (1000, 400, "recompute")],
)
def test_saturated_throughput_and_concurrency_within_analytical_bounds(llama, prompt, out, policy):
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_policy=policy, slice_tokens=64)
    w = Workload(1500, math.inf, LengthDist.parse(prompt), LengthDist.parse(out))
    reqs = w.generate()
    res = simulate(dep, reqs)
    b = analytic_bounds(dep, reqs)
    assert res.summary()["completed"] == len(reqs)
    assert res.throughput_tokens_per_s <= b.throughput_bound_tokens_per_s
    mc = memory_budget(dep.model, dep.gpu, prompt, out, chunk_tokens=dep.token_budget).max_concurrency
    assert res.peak_concurrency <= mc
    # saturated: the batch really filled up to what memory allows (within paging)
    assert res.peak_concurrency >= 0.95 * min(mc, dep.max_num_seqs)


def test_paper_example_holds_one_request_and_swaps_when_time_sliced():
    dep = Deployment.make("yi-34b", "a100-sxm-80gb", kv_policy="swap", slice_tokens=50)
    assert memory_budget(dep.model, dep.gpu, 50_000, 250).max_concurrency == 1
    res = simulate(dep, Requests.of([0.0, 0.0, 0.0], [50_000] * 3, [250] * 3))
    tl = res.timeline_frame()
    assert res.peak_concurrency == 1
    assert tl["resident_requests"].max() == 1
    kv_one = 50_250 * dep.model.kv_bytes_per_token(dep.precision.kv)
    assert tl["kv_bytes_per_gpu"].max() <= kv_one + 16 * dep.model.kv_bytes_per_token(dep.precision.kv)
    assert res.swap_out_bytes > 0 and res.swap_out_bytes == res.swap_in_bytes
    assert res.preemptions.sum() > 0
    # each swap moves one user's KV (prompt + tokens so far)
    assert res.swap_out_bytes / res.preemptions.sum() == pytest.approx(kv_one, rel=0.01)
    q = simulate(
        Deployment.make("yi-34b", "a100-sxm-80gb", kv_policy="queue"),
        Requests.of([0.0] * 3, [50_000] * 3, [250] * 3),
    )
    assert q.swap_out_bytes == 0 and q.preemptions.sum() == 0
    # time slicing trades the last user's wait for the first users' latency, and costs the swaps
    assert res.ttft_s.max() < q.ttft_s.max()
    assert res.makespan_s > q.makespan_s


def test_recompute_reprefills_and_costs_more_than_swap():
    args = {"slice_tokens": 50}
    reqs = Requests.of([0.0] * 3, [50_000] * 3, [250] * 3)
    sw = simulate(Deployment.make("yi-34b", "a100-sxm-80gb", kv_policy="swap", **args), reqs)
    rc = simulate(Deployment.make("yi-34b", "a100-sxm-80gb", kv_policy="recompute", **args), reqs)
    assert rc.preemptions.sum() > 0 and rc.swap_out_bytes == 0
    assert rc.makespan_s > sw.makespan_s


def test_host_capacity_bounds_swapping():
    reqs = Requests.of([0.0] * 3, [50_000] * 3, [250] * 3)
    res = simulate(
        Deployment.make("yi-34b", "a100-sxm-80gb", kv_policy="swap", slice_tokens=50, host_kv_bytes=0), reqs
    )
    assert res.swap_out_bytes == 0 and res.preemptions.sum() == 0


def test_replicas_and_routers(llama):
    w = Workload(400, 50.0, LengthDist.parse("uniform:100:3000"), LengthDist.parse("uniform:2:200"), seed=3)
    one = simulate(llama, w)
    for router in ("round-robin", "least-loaded"):
        dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", replicas=3, router=router)
        res = simulate(dep, w)
        counts = np.bincount(res.replica, minlength=3)
        assert counts.sum() == 400 and counts.min() > 80
        assert res.ttft_s.mean() < one.ttft_s.mean()
    rr = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", replicas=3, router="round-robin"), w)
    assert list(np.bincount(rr.replica)) == [134, 133, 133]


def test_pipeline_parallel_adds_memory_not_speed():
    reqs = Requests.of([0.0], [4000], [32])
    a = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb"), reqs)
    b = simulate(Deployment.make("llama-3-8b", "h100-sxm-80gb", pp=2), reqs)
    assert b.capacity_blocks > 1.9 * a.capacity_blocks
    assert b.e2e_s[0] >= a.e2e_s[0]


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 40),
    rate=st.sampled_from([0.5, 5.0, 50.0, math.inf]),
    seed=st.integers(0, 10_000),
    policy=st.sampled_from(["swap", "recompute", "queue"]),
)
def test_invariants_random_workloads(llama, n, rate, seed, policy):
    dep = Deployment.make(
        "llama-3-8b", "h100-sxm-80gb", kv_policy=policy, slice_tokens=8, max_num_seqs=16, mode="peak"
    )
    w = Workload(n, rate, LengthDist.parse("uniform:1:6000"), LengthDist.parse("uniform:1:100"), seed=seed)
    reqs = w.generate()
    res = simulate(dep, reqs)
    b = analytic_bounds(dep, reqs)
    assert np.all(np.isfinite(res.finish_s))
    assert np.all(res.ttft_s >= b.prefill_s * (1 - 1e-3))
    assert np.all(res.e2e_s >= b.alone_e2e_s * (1 - 1e-3))
    assert np.all(res.finish_s >= res.first_token_s)
    assert res.peak_concurrency <= 16
    assert res.swap_in_bytes == res.swap_out_bytes
    tl = res.timeline_frame()
    assert (tl["kv_blocks_used"] <= res.capacity_blocks).all()
    assert (tl["decode_batch"] + tl["prefill_tokens"] <= dep.token_budget).all()
    assert tl["decode_batch"].sum() + tl["prefills_done"].sum() >= reqs.output_len.sum()


def test_goodput_and_slo_report(llama):
    w = Workload(300, 30.0, LengthDist.parse(2048), LengthDist.parse(64))
    res = simulate(llama, w)
    loose, tight = Slo(ttft_s=1e3, tpot_s=1e3), Slo(ttft_s=1e-6)
    assert res.goodput_requests_per_s(loose) == pytest.approx(300 / res.makespan_s)
    assert res.goodput_requests_per_s(tight) == 0
    rep = res.slo_report(tight)["ttft"]
    assert not rep["met"] and rep["ratio"] > 1
    s = res.summary(loose)
    for key in (
        "completed",
        "ttft_s",
        "tpot_s",
        "e2e_s",
        "throughput_tokens_per_s",
        "peak_concurrency",
        "swap_out_bytes",
        "swap_in_bytes",
        "preemptions",
        "goodput_requests_per_s",
    ):
        assert key in s
    assert set(s["ttft_s"]) >= {"p50", "p90", "p99"}


def test_does_not_fit_and_context_window_errors(llama):
    # beyond the trained window: simulated, with analyze's note (perfmodel.scenario)
    res = simulate(llama, Requests.of([0.0], [9000], [10]))
    assert res.notes and "trained window" in res.notes[0]
    with pytest.raises(DoesNotFitError, match="GiB of KV"):
        simulate(Deployment.make("yi-34b", "a100-sxm-80gb"), Requests.of([0.0], [150_000], [10]))
    with pytest.raises(DoesNotFitError, match="raise tp or pp"):
        simulate(Deployment.make("llama-3-70b", "a100-sxm-80gb"), Requests.of([0.0], [100], [10]))
    with pytest.raises(InvalidInputError):
        Deployment.make("llama-3-8b", "h100-sxm-80gb", max_num_seqs=10_000)
    with pytest.raises(InvalidInputError):
        Deployment.make("llama-3-8b", "h100-sxm-80gb", kv_policy="evict")
