"""Weight offload (perfmodel.offload): streamed layers, prefetch overlap, the compute-bound batch, fit."""

import json

import pytest

from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.offload import offload
from tests.conftest import run_perfmodel


def test_all_resident_equals_the_plain_decode_step():
    import perfmodel

    r = offload("llama-3-8b", "a100", context_len=2048, output_tokens=64, resident_layers=32, mode="peak")
    a = perfmodel.analyze("llama-3-8b", "a100", context_len=2048, output_tokens=64, mode="peak")
    assert r.bound == "compute" and r.streamed_bytes_per_pass == 0
    assert r.decode_s_per_token == pytest.approx(r.resident_decode_s_per_token)
    # analyze's decode step is the same forward at the same mean key count (it adds the sampling step)
    assert r.decode_s_per_token == pytest.approx(float(a.to_dict()["decode_s_per_token"]), rel=1e-2)


def test_streamed_step_is_link_bound_at_batch_one_and_prefetch_hides_compute():
    on = offload("llama-3-8b", "a100", mode="peak")
    off = offload("llama-3-8b", "a100", mode="peak", prefetch=False)
    assert on.bound == "link" and on.link_layer_s > on.gpu_layer_s
    # prefetch: L * max(c, t); serial: L * (c + t)
    assert on.decode_s_per_token == pytest.approx(on.layers * on.link_layer_s)
    assert off.decode_s_per_token == pytest.approx(off.layers * (off.gpu_layer_s + off.link_layer_s))
    assert on.link_layer_s == pytest.approx(on.layer_bytes / on.link_bytes_per_s)
    half = offload("llama-3-8b", "a100", mode="peak", resident_layers=16)
    assert on.decode_s_per_token > half.decode_s_per_token > half.resident_decode_s_per_token
    assert half.weight_bytes_on_gpu > on.weight_bytes_on_gpu


def test_compute_bound_batch_is_the_first_batch_whose_layer_outlasts_the_copy():
    # a host link of 450 GB/s (NVLink-C2C class): decode turns compute-bound near FLOP/s / link rate
    kw = dict(context_len=128, output_tokens=16, mode="peak")
    r = offload("llama-3-8b", "h100", link="host:450e9", **kw)
    b = r.compute_bound_batch
    assert b is not None and 1 < b <= r.max_concurrency
    assert offload("llama-3-8b", "h100", link="host:450e9", batch=b, **kw).bound == "compute"
    assert offload("llama-3-8b", "h100", link="host:450e9", batch=b - 1, **kw).bound == "link"
    # a faster link makes it compute-bound sooner; over PCIe no batch that fits gets there
    assert offload("llama-3-8b", "h100", link="host:900e9", **kw).compute_bound_batch < b
    assert offload("llama-3-8b", "h100", **kw).compute_bound_batch is None


def test_offload_serves_a_model_larger_than_hbm_and_refuses_what_does_not_fit():
    r = offload(
        "llama-3.1-405b", "a100-40gb", mode="peak", link="nvme:6.5e9", context_len=1024, output_tokens=16
    )
    assert r.weight_bytes > 10 * r.hbm_capacity_bytes > r.weight_bytes_on_gpu
    with pytest.raises(DoesNotFitError, match="leave room for"):
        offload("llama-3-8b", "a100", batch=100_000, mode="peak")
    with pytest.raises(InvalidInputError, match="exceeds the 32 layers"):
        offload("llama-3-8b", "a100", resident_layers=33)
    for bad in ("nvme", "usb", "pcie:-1", "host:abc", "host:inf"):
        with pytest.raises(InvalidInputError, match="link"):
            offload("llama-3-8b", "a100", link=bad)


def test_cli_json_and_one_line_errors():
    import json

    res = run_perfmodel(
        "offload",
        "--model",
        "llama-3-8b",
        "--gpu",
        "a100",
        "--mode",
        "peak",
        "--resident-layers",
        "8",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["resident_layers"] == 8 and d["bound"] in ("link", "compute") and d["decode_s_per_token"] > 0
    bad = run_perfmodel("offload", "--model", "llama-3-8b", "--link", "nvme")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "nvme:BYTES_PER_S" in bad.stderr


def test_kv_on_host_streams_each_layers_kv_with_its_weights():
    kw = dict(context_len=2048, output_tokens=64, mode="peak")
    w = offload("llama-3-8b", "h100", **kw)
    k = offload("llama-3-8b", "h100", kv_on_host=True, **kw)
    assert w.kv_bytes_per_layer == 0 and not w.kv_on_host
    # one sequence's KV of one layer at the mean key count: 2 x 8 heads x 128 x 2 B per token
    assert k.kv_bytes_per_layer == pytest.approx((2048 + 65 / 2) * 4096)
    assert k.link_layer_s == pytest.approx((k.layer_bytes + k.kv_bytes_per_layer) / k.link_bytes_per_s)
    assert k.decode_s_per_token > w.decode_s_per_token
    # the cache leaves HBM (two layers' buffers stay): far more sequences fit, bounded by host memory
    assert k.max_concurrency > 10 * w.max_concurrency
    big = offload("llama-3-8b", "h100", kv_on_host=True, batch=k.max_concurrency, **kw)
    assert big.bound == "link" and big.compute_bound_batch is None  # each sequence's KV costs more over PCIe
    with pytest.raises(DoesNotFitError):
        offload("llama-3-8b", "h100", kv_on_host=True, batch=k.max_concurrency + 1, **kw)
    # all layers resident, KV on host: only the KV is streamed
    r = offload("llama-3-8b", "h100", kv_on_host=True, resident_layers=32, batch=8, **kw)
    assert r.streamed_bytes_per_pass == 0 and r.link_layer_s == pytest.approx(
        r.kv_bytes_per_layer / r.link_bytes_per_s
    )
    assert r.decode_s_per_token == pytest.approx(32 * max(r.gpu_layer_s, r.link_layer_s))
    with pytest.raises(InvalidInputError, match="no KV cache"):
        offload("mamba-2.8b", "h100", kv_on_host=True)


def test_heterogeneous_placement_interpolates_between_all_streamed_and_all_resident():
    kw = dict(context_len=2048, output_tokens=64, mode="peak")
    steps = [
        offload("llama-3-8b", "a100", resident_layers=n, **kw).decode_s_per_token for n in (0, 8, 16, 24, 32)
    ]
    assert all(a > b for a, b in zip(steps, steps[1:]))
    res = run_perfmodel(
        "offload",
        "--model",
        "llama-3-8b",
        "--gpu",
        "h100",
        "--mode",
        "peak",
        "--kv-on-host",
        "--resident-layers",
        "16",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["kv_on_host"] and d["kv_bytes_per_layer"] > 0 and d["resident_layers"] == 16
