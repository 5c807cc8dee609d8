"""perfmodel.predict on single ops, in peak mode, against the roofline by hand."""

import json
import warnings

import pytest

import perfmodel
from perfmodel.hw import load_gpu


def test_gemm_peak_is_compute_bound_roofline():
    g = load_gpu("h100-sxm-80gb")
    t = perfmodel.predict({"op": "gemm", "m": 8192, "n": 8192, "k": 8192, "dtype": "bf16"}, g, mode="peak")
    assert t == pytest.approx(2 * 8192**3 / g.flops_for("bf16"))


def test_decode_attention_peak_is_bandwidth_bound():
    g = load_gpu("h100-sxm-80gb")
    d = {
        "op": "attention",
        "phase": "decode",
        "batch": 8,
        "q_len": 1,
        "kv_len": 32768,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "causal": True,
        "dtype": "bf16",
    }
    cost = perfmodel.predict_cost(d, g, mode="peak")
    assert cost.bound is perfmodel.Bound.HBM_BANDWIDTH
    kv = 8 * 8 * 32768 * 2 * 128 * 2
    assert cost.total_s == pytest.approx((kv + 8 * 32 * 2 * 128 * 2) / g.hbm_bytes_per_s)


def test_pinned_copy_uses_pcie():
    g = load_gpu("a100-sxm-80gb")
    t = perfmodel.predict(
        {"op": "memcpy", "bytes": 10**9, "src": "device", "dst": "host_pinned"}, g, mode="peak"
    )
    assert t == pytest.approx(1e9 / g.pcie_bytes_per_s_per_direction)


def test_time_grows_with_size_and_falls_with_bandwidth():
    g = load_gpu("h100-sxm-80gb")
    small = perfmodel.predict({"op": "memcpy", "bytes": 10**6}, g, mode="peak")
    big = perfmodel.predict({"op": "memcpy", "bytes": 10**8}, g, mode="peak")
    assert big > small
    fast = g.with_overrides(hbm_bytes_per_s=2 * g.hbm_bytes_per_s)
    assert perfmodel.predict({"op": "memcpy", "bytes": 10**8}, fast, mode="peak") < big


def test_calibrated_without_own_profile_uses_a_transferred_one(tmp_path):
    g = load_gpu("l40s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to peak: the H100 profile carries to the L40S
        t = perfmodel.predict({"op": "gemm", "m": 64, "n": 64, "k": 64}, g, mode="calibrated")
        assert t > perfmodel.predict({"op": "gemm", "m": 64, "n": 64, "k": 64}, g, mode="peak")


def test_predict_file_writes_predicted_s(tmp_path):
    src = tmp_path / "ops.jsonl"
    src.write_text(
        json.dumps({"op": "gemm", "m": 16, "n": 16, "k": 16, "tag": "x"})
        + "\n\n"
        + json.dumps({"op": "memcpy", "bytes": 4096})
        + "\n"
    )
    out = tmp_path / "preds.jsonl"
    assert perfmodel.predict_file(src, out, "h100", mode="peak") == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["tag"] == "x" and rows[0]["predicted_s"] > 0
    assert rows[1]["predicted_bound"] == "hbm_bandwidth"


def test_predict_file_names_bad_line(tmp_path):
    src = tmp_path / "ops.jsonl"
    src.write_text(json.dumps({"op": "gemm", "m": 16, "n": 16, "k": 16}) + "\n" + '{"op": "gemm", "m": 2}\n')
    with pytest.raises(perfmodel.OpDescriptorError, match=r"line 2: field 'n' is missing"):
        perfmodel.predict_file(src, tmp_path / "o.jsonl", "h100", mode="peak")
    src.write_text("not json\n")
    with pytest.raises(perfmodel.OpDescriptorError, match="line 1: not valid JSON"):
        perfmodel.predict_file(src, tmp_path / "o.jsonl", "h100", mode="peak")
