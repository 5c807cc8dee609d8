"""Upload parsing, formatting and the cached views of dashboard/common.py."""

from __future__ import annotations

import json
import pickle

import pandas as pd
import pytest

pytest.importorskip("streamlit")

import perfmodel
from perfmodel.dashboard import common
from perfmodel.dashboard.common import UploadError, fmt_seconds, parse_upload


def test_parse_json_and_csv():
    assert parse_upload("loads.json", b'{"a": [1, 2]}') == {"a": [1, 2]}
    df = parse_upload("LENGTHS.CSV", b"length\n100\n2000\n")
    assert isinstance(df, pd.DataFrame) and df["length"].tolist() == [100, 2000]


@pytest.mark.parametrize(
    "name, data, words",
    ids=["pickle", "python", "bad-json", "not-utf8", "empty-csv", "bad-csv", "too-large"],
    argvalues=[
        ("x.pkl", pickle.dumps({"a": 1}), "only .json and .csv"),
        ("x.py", b"print(1)", "only .json and .csv"),
        ("x.json", b"{not json", "invalid JSON at line 1"),
        ("x.json", b"\xff\xfe\x00", "not UTF-8"),
        ("x.csv", b"", "empty CSV"),
        ("x.csv", b'a,b\n1,"2\n', "invalid CSV"),
        ("x.json", b"[" + b"1," * 1_100_000 + b"1]", "over the 2,000,000-byte limit"),
    ],
)
def test_parse_rejects_with_one_line(name, data, words):
    with pytest.raises(UploadError) as info:
        parse_upload(name, data)
    assert words in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_size_limit_is_a_parameter():
    with pytest.raises(UploadError, match="10-byte limit"):
        parse_upload("a.json", b"[1,2,3,4,5,6]", max_bytes=10)
    assert parse_upload("a.json", b"[1,2,3]", max_bytes=10) == [1, 2, 3]


@pytest.mark.parametrize(
    "s, text",
    [
        (7200.0, "2.00 h"),
        (90.0, "1.5 min"),
        (1.5, "1.50 s"),
        (0.0123, "12.3 ms"),
        (2.5e-5, "25 µs"),
        (float("nan"), "n/a"),
    ],
)
def test_fmt_seconds(s, text):
    assert fmt_seconds(s) == text


def test_analysis_view_is_the_api_result_plus_memory_terms():
    args = {
        "model": "llama-3-8b",
        "gpu": "h100-sxm-80gb",
        "context_len": 32_000,
        "output_tokens": 100,
        "batch": 3,
        "tp": 1,
        "mode": "peak",
        "weight_dtype": "bf16",
        "kv_dtype": "fp8",
    }
    view = common.analysis_view(**args)
    api = perfmodel.analyze(**args).to_dict()
    mem = view.pop("memory_per_gpu")
    assert (
        view.pop("provenance_summary") == "datasheet (every op class)" and "peak_bound" not in view
    )  # peak mode
    assert json.loads(json.dumps(view)) == json.loads(json.dumps(api))
    cal = common.analysis_view(
        **(args | {"mode": "calibrated"})
    )  # the estimate, and the peak bound beside it
    assert (
        cal["peak_bound"]["prefill_s"] == pytest.approx(api["prefill_s"])
        and api["prefill_s"] < cal["prefill_s"]
    )
    assert cal["provenance_summary"].startswith("measured:")
    parts = (
        mem["weight_bytes"]
        + mem["kv_bytes"]
        + mem["activation_bytes"]
        + mem["reserve_bytes"]
        + mem["free_bytes"]
    )
    assert parts == pytest.approx(mem["capacity_bytes"], rel=1e-12)
    assert mem["kv_bytes"] == pytest.approx(3 * mem["kv_bytes_per_user"])


def test_memory_view_holds_one_attention_groups_users_per_gpu():
    view = common.analysis_view(
        "mixtral-8x7b", "h100-sxm-80gb", 20_000, 250, 10, 1, "peak", "bf16", "bf16", extra=(("ep", 4),)
    )
    mem = view["memory_per_gpu"]
    assert view["attention_dp"] == 4 and mem["users_per_gpu"] == 3  # ceil(10 / 4)
    assert mem["kv_bytes"] == pytest.approx(view["parallel"]["attention_dp_kv_bytes_per_rank"], rel=1e-12)
    parts = (
        mem["weight_bytes"]
        + mem["kv_bytes"]
        + mem["activation_bytes"]
        + mem["reserve_bytes"]
        + mem["free_bytes"]
    )
    assert parts == pytest.approx(mem["capacity_bytes"], rel=1e-12)


def test_roofline_points_are_consistent_with_op_costs():
    rl = common.roofline_view("llama-3-8b", "h100-sxm-80gb", "decode", 32_000, 1, 1, "peak", "bf16", "bf16")
    ops = rl["ops"]
    assert len(ops) > 5
    assert ops["share_of_pass"].sum() == pytest.approx(1.0)
    # no op beats the roofline it runs under (tensor peak for GEMMs/attention, HBM bandwidth everywhere)
    ceiling = ops["intensity_flops_per_byte"] * rl["hbm_bytes_per_s"]
    assert (ops["achieved_flops_per_s"] <= ceiling * (1 + 1e-9)).all()
    assert (ops["achieved_flops_per_s"] <= rl["peak_flops_per_s"] * (1 + 1e-9)).all()
    # batch-1 decode: the GEMMs sit near 1 FLOP/byte (each bf16 weight read once, used for 2 FLOPs)
    gemm = ops[ops["kind"] == "gemm"]
    assert gemm["intensity_flops_per_byte"].between(0.5, 2.0).all()


def test_sweep_view_covers_1k_to_1m():
    df = common.sweep_view("llama-3-8b", "h100-sxm-80gb", 250, 1, 1, "peak", "bf16", "bf16")
    assert df["context_len"].min() == 1000 and df["context_len"].max() == 1_000_000
    assert df["context_len"].is_monotonic_increasing
