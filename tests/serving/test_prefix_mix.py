"""Cached prefixes in the simulator: shares and hit rates drawn per request, HBM-resident or loaded from
host/SSD through perfmodel.prefix_cache, and the metrics they add."""

import json

import numpy as np
import pytest

from perfmodel.errors import InvalidInputError
from perfmodel.knobs import Knobs
from perfmodel.prefix_cache import Tier, hit_s
from perfmodel.serving import Deployment, LengthDist, Requests, Workload, simulate
from perfmodel.serving.deployment import replica_memory
from perfmodel.serving.workload import CachedPrefix
from tests.conftest import run_perfmodel

P = 4096


@pytest.fixture(scope="module")
def dep():
    return Deployment.make("llama-3-8b", "h100", mode="peak")


def _workload(*prefixes, n=120, rate=5.0):
    return Workload(
        n, rate, LengthDist.parse("uniform:200:800"), LengthDist.parse("48"), seed=3, prefixes=prefixes
    )


def _same(a, b):
    for key in ("first_token_s", "finish_s", "prompt_len", "output_len"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


@pytest.mark.parametrize("tier,bw", [(Tier.HBM, None), (Tier.HOST, None), (Tier.SSD, 3e9)])
def test_zero_hit_rate_is_no_prefix_caching(dep, tier, bw):
    """Every request carries the prefix and misses: the same run as prompts of prefix + drawn tokens."""
    with_cache = simulate(dep, _workload(CachedPrefix(P, 1.0, 0.0, tier, bw)))
    plain = _workload().generate()
    without = simulate(dep, Requests.of(plain.arrival_s, plain.prompt_len + P, plain.output_len))
    _same(with_cache, without)
    rep = with_cache.summary()["prefix_cache"]
    assert rep["requests_with_prefix"] == 120 and rep["hits"] == 0 and rep["loads"] == 0


def test_full_hbm_hit_removes_the_prefix_prefill(dep):
    """A hit in HBM prefills only the drawn tokens, attending to the prefix: a request alone takes the
    TTFT of the core's prefill of its own tokens after P cached keys, and the prefix's blocks are held once."""
    hit = _workload(CachedPrefix(P, 1.0, 1.0))
    reqs = hit.generate()
    assert np.all(reqs.prefix_hit) and np.all(reqs.cached_tokens() == P)
    res = simulate(dep, hit)
    none = simulate(dep, _workload(CachedPrefix(P, 1.0, 0.0)))
    assert (
        np.all(res.ttft_s < none.ttft_s) and res.summary()["prefix_cache"]["cached_prompt_tokens"] == 120 * P
    )
    # alone: exactly the forward of the suffix over P + suffix keys
    from perfmodel.ops import Phase
    from perfmodel.phases import forward_cost

    one = Requests.of([0.0], [P + 500], [1], (CachedPrefix(P, 1.0, 1.0),), [0], [True])
    alone = simulate(dep, one)
    fwd = float(
        forward_cost(
            dep.model, dep.gpu, dep.resolved_profile, Phase.PREFILL, 1, 500, P + 500, dep.precision
        ).total_s
    )
    assert alone.ttft_s[0] == pytest.approx(fwd, rel=0.02)
    whole = simulate(dep, Requests.of([0.0], [P + 500], [1]))
    assert whole.ttft_s[0] > 3 * alone.ttft_s[0]
    # the prefix's blocks are reserved once per replica, outside the requests' capacity
    assert (
        replica_memory(dep).capacity_blocks - replica_memory(dep, (P,)).capacity_blocks
        == P // dep.block_tokens
    )


def test_host_and_ssd_hits_pay_the_load_overlapped_with_the_iteration(dep):
    one = lambda tier, bw: Requests.of(
        [0.0], [P + 500], [1], (CachedPrefix(P, 1.0, 1.0, tier, bw),), [0], [True]
    )
    hbm = simulate(dep, one(Tier.HBM, None))
    mem = replica_memory(dep)
    load = P * mem.kv_bytes_per_token_per_gpu / 1e9
    ssd = simulate(dep, one(Tier.SSD, 1e9))
    assert ssd.ttft_s[0] == pytest.approx(hit_s(load, hbm.ttft_s[0], dep.model.num_layers), rel=1e-6)
    rep = ssd.summary()["prefix_cache"]
    assert rep["loads"] == 1 and rep["load_bytes"] == pytest.approx(P * mem.kv_bytes_per_token_per_gpu)
    assert rep["load_s"] == pytest.approx(load)
    host = simulate(dep, one(Tier.HOST, None))
    assert hbm.ttft_s[0] < host.ttft_s[0] < ssd.ttft_s[0]


def test_shares_and_hit_rates_are_drawn_per_request_without_changing_the_lengths():
    w = _workload(CachedPrefix(2048, 0.5, 0.8), CachedPrefix(8192, 0.3, 0.25, Tier.HOST), n=4000)
    r = w.generate()
    plain = _workload(n=4000).generate()
    tokens = np.array([2048, 8192, 0])[r.prefix_id]
    np.testing.assert_array_equal(r.prompt_len - tokens, plain.prompt_len)
    share = [np.mean(r.prefix_id == k) for k in (0, 1, -1)]
    assert share == pytest.approx([0.5, 0.3, 0.2], abs=0.03)
    assert np.mean(r.prefix_hit[r.prefix_id == 0]) == pytest.approx(0.8, abs=0.03)
    assert np.mean(r.prefix_hit[r.prefix_id == 1]) == pytest.approx(0.25, abs=0.04)
    assert not r.prefix_hit[r.prefix_id == -1].any()


def test_bad_prefixes_are_refused(dep):
    for text, match in (
        ("4096", "TOKENS:SHARE"),
        ("4096:0", "share"),
        ("4096:0.5:2", "hit_rate"),
        ("0:0.5", "tokens"),
        ("4096.5:0.5", "tokens"),
        ("4096:0.5:1:ssd", "ssd needs a rate"),
        ("4096:0.5:1:disk", "tier must be one of"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            CachedPrefix.parse(text)
    with pytest.raises(InvalidInputError, match="sum to"):
        _workload(CachedPrefix(100, 0.6), CachedPrefix(200, 0.6))
    knobbed = Deployment.make("llama-3-8b", "h100", mode="peak", knobs=Knobs(shared_prefix_tokens=128))
    with pytest.raises(InvalidInputError, match="shared-prefix-tokens"):
        simulate(knobbed, _workload(CachedPrefix(P, 0.5)))
    with pytest.raises(InvalidInputError, match="longer than its prefix"):
        Requests.of([0.0], [P], [1], (CachedPrefix(P, 1.0),), [0], [True])


def test_cli_prefix_flag_reports_the_cache():
    res = run_perfmodel(
        "simulate",
        "--mode",
        "peak",
        "--requests",
        "60",
        "--arrival-rate",
        "4",
        "--prompt-len",
        "300",
        "--output-len",
        "16",
        "--prefix",
        "2048:0.5:1",
        "--prefix",
        "4096:0.25:1:host",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    pc = json.loads(res.stdout)["prefix_cache"]
    assert 0 < pc["hits"] == pc["requests_with_prefix"] < 60 and pc["loads"] > 0 and pc["load_s"] > 0
    bad = run_perfmodel("simulate", "--requests", "5", "--prefix", "2048:1.5")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "share" in bad.stderr
