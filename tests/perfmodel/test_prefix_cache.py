"""Prefix caching with a load cost (perfmodel.prefix_cache): hit against miss, tiers, overlap, hit rate."""

import json

import pytest

from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.prefix_cache import prefix_cache
from tests.conftest import run_perfmodel

KW = dict(model="llama-3-8b", gpu="a100", prefix_tokens=32_768, suffix_tokens=256, mode="peak")


def test_load_time_is_the_prefix_kv_over_the_tier_rate():
    r = prefix_cache(**KW, tier="ssd:7e9")
    assert r.prefix_kv_bytes_per_gpu == 32_768 * 131_072  # 2 x 32 layers x 8 KV heads x 128 x 2 B per token
    assert r.load_s == pytest.approx(r.prefix_kv_bytes_per_gpu / 7e9)
    assert prefix_cache(**KW, tier="hbm").load_s == 0.0
    host = prefix_cache(**KW)  # the GPU's PCIe rate
    assert host.tier_bytes_per_s == pytest.approx(32e9, rel=0.05)


def test_hit_beats_miss_by_less_as_the_tier_slows_and_serial_loading_adds():
    hbm, host, ssd = (prefix_cache(**KW, tier=t) for t in ("hbm", "host", "ssd:2e9"))
    assert hbm.hit_ttft_s == pytest.approx(hbm.suffix_prefill_s)
    assert hbm.hit_speedup > host.hit_speedup > ssd.hit_speedup
    assert hbm.miss_ttft_s == host.miss_ttft_s == ssd.miss_ttft_s
    serial = prefix_cache(**KW, tier="host", overlap=False)
    assert serial.hit_ttft_s == pytest.approx(serial.load_s + serial.suffix_prefill_s)
    assert host.hit_ttft_s == pytest.approx(
        max(host.load_s, host.suffix_prefill_s) + min(host.load_s, host.suffix_prefill_s) / 32
    )
    # the whole prompt costs about the prefix plus the suffix attending to it (chunked prefill)
    assert host.miss_ttft_s == pytest.approx(host.prefix_prefill_s + host.suffix_prefill_s, rel=0.05)


def test_break_even_rate_and_hit_rate():
    r = prefix_cache(**KW, tier="host", overlap=False)
    be = r.break_even_bytes_per_s
    slow = prefix_cache(**KW, tier=f"ssd:{be * 0.9}", overlap=False)
    fast = prefix_cache(**KW, tier=f"ssd:{be * 1.1}", overlap=False)
    assert slow.hit_ttft_s > slow.miss_ttft_s and fast.hit_ttft_s < fast.miss_ttft_s
    half = prefix_cache(**KW, hit_rate=0.5)
    assert half.expected_ttft_s == pytest.approx((half.hit_ttft_s + half.miss_ttft_s) / 2)


def test_bad_input_and_what_does_not_fit():
    for bad in ("disk", "hbm:1e9", "ssd", "host:0", "host:x"):
        with pytest.raises(InvalidInputError, match="tier"):
            prefix_cache(**KW, tier=bad)
    with pytest.raises(InvalidInputError, match="hit_rate"):
        prefix_cache(**KW, hit_rate=1.5)
    with pytest.raises(DoesNotFitError, match="a hit needs the prefix KV in HBM"):
        prefix_cache("llama-3-70b", "a100", 10_000_000, 10)


def test_cli():
    res = run_perfmodel(
        "prefix",
        "--model",
        "llama-3-8b",
        "--gpu",
        "a100",
        "--mode",
        "peak",
        "--prefix-tokens",
        "4096",
        "--tier",
        "ssd:7e9",
        "--hit-rate",
        "0.8",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["tier"] == "ssd" and d["hit_rate"] == 0.8 and d["hit_ttft_s"] < d["miss_ttft_s"]
    bad = run_perfmodel("prefix", "--prefix-tokens", "10", "--tier", "ssd")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "ssd:BYTES_PER_S" in bad.stderr
