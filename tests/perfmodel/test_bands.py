"""Error bands: the profile's ``bands`` object, per-op bands, their sum over a phase, analyze and sweep."""

import json
import math

import numpy as np
import pytest

from perfmodel.hw.loader import load_gpu
from perfmodel.analyze import analyze
from perfmodel.calibration import (
    OpClass,
    Profile,
    Mode,
    load_profile_file,
    profile_from_dict,
    shipped_profile_path,
)
from perfmodel.costs import op_cost, size_class_of
from perfmodel.errors import ProfileError
from perfmodel.ops import Gemm
from perfmodel.sweep import sweep

H100 = "h100-sxm-80gb"


def _bands(**groups):
    return {"classes": {"gemm": {"compute_eff": 0.8}}, "bands": groups}


def test_bands_validated():
    ok = profile_from_dict(_bands(measured={"gemm": {"q10": -0.1, "q90": 0.05, "n": 10}}, source="x"))
    assert ok.band_of(OpClass.GEMM, ("gemm",)) == (-0.1, 0.05)
    assert profile_from_dict(ok.to_dict()).bands["measured"]["gemm"]["n"] == 10  # round trip
    for bad in (
        {"measured": {"gemm": {"q10": 0.1, "q90": 0.05}}},  # q10 > q90
        {"measured": {"gemm": {"q10": float("nan"), "q90": 0.05}}},
        {"measured": {"gemm": {"q10": -0.1}}},
        {"measured": []},
        {"guessed": {}},
    ):
        with pytest.raises(ProfileError):
            profile_from_dict(_bands(**bad))


def test_band_of_falls_back_to_the_pooled_row_and_the_provenance_group():
    p = profile_from_dict(
        _bands(measured={"*": {"q10": -0.2, "q90": 0.1}}, datasheet={"*": {"q10": -1.0, "q90": -0.1}})
    )
    assert p.band_of(OpClass.GEMM, ("gemm",)) == (-0.2, 0.1)
    assert p.band_of(OpClass.MEMCPY_D2D) == (-1.0, -0.1)  # no curve: datasheet provenance


def test_op_band_brackets_the_value_and_sums_linearly():
    g = load_gpu(H100)
    p = profile_from_dict(_bands(measured={"gemm": {"q10": -0.1, "q90": 0.2}}))
    c = op_cost(Gemm(m=4096, n=4096, k=4096), g, p)
    assert math.isclose(c.low_s, c.total_s * math.exp(-0.2)) and math.isclose(
        c.high_s, c.total_s * math.exp(0.1)
    )
    two = c + c.scale(3)
    assert math.isclose(two.high_s - two.total_s, 4 * (c.high_s - c.total_s))
    bare = op_cost(Gemm(m=4096, n=4096, k=4096), g, Profile(H100, Mode.CALIBRATED, classes=p.classes))
    assert bare.low_s == bare.total_s == bare.high_s


def test_combination_factors_scale_a_phase_band_not_an_op_band():
    import dataclasses

    from perfmodel.models import load_model
    from perfmodel.phases import decode_step_cost

    shipped = load_profile_file(shipped_profile_path(H100))
    k_lo, k_hi = shipped.band_combination
    assert 0.3 < k_lo < 1.0 and 0.3 < k_hi < 1.0 and shipped.bands["combination"]["n"] > 100
    linear = dataclasses.replace(
        shipped, bands={g: t for g, t in shipped.bands.items() if g != "combination"}
    )
    assert linear.band_combination == (1.0, 1.0)
    for field in ("decode_s_per_token", "prefill_s"):
        a = analyze(
            "llama-3-8b", H100, context_len=8192, batch=16, output_tokens=250, profile=shipped
        ).to_dict()
        b = analyze(
            "llama-3-8b", H100, context_len=8192, batch=16, output_tokens=250, profile=linear
        ).to_dict()
        assert a[field] == b[field]
        for end, k in (("_low", k_lo), ("_high", k_hi)):
            assert math.isclose(a[field + end] - a[field], k * (b[field + end] - b[field]), rel_tol=1e-9)
    # the phase functions return the linear sum (analyze and sweep scale the finished phase once)
    step = decode_step_cost(load_model("llama-3-8b"), load_gpu(H100), shipped, 8192, 16)
    plain = decode_step_cost(load_model("llama-3-8b"), load_gpu(H100), linear, 8192, 16)
    assert step.band_hi_s == plain.band_hi_s > 0
    g = load_gpu(H100)
    one = op_cost(Gemm(m=16, n=4096, k=4096), g, shipped)
    assert one.high_s == op_cost(Gemm(m=16, n=4096, k=4096), g, linear).high_s  # an op keeps its own band
    df = sweep("llama-3-8b", H100, context_len=[8192], batch=[16], output_tokens=[250], profile=shipped)
    assert math.isclose(float(df["decode_s_per_token_high"][0]), a["decode_s_per_token_high"], rel_tol=1e-9)
    for bad in (0.0, -1.0, float("nan"), 5.0, "x"):
        with pytest.raises(ProfileError, match="combination"):
            profile_from_dict(
                _bands(
                    measured={"*": {"q10": -0.1, "q90": 0.1}},
                    combination={"factor_low": 0.5, "factor_high": bad},
                )
            )
    with pytest.raises(ProfileError, match="factor_low"):
        profile_from_dict(_bands(measured={"*": {"q10": -0.1, "q90": 0.1}}, combination={"factor": 0.5}))
    rt = profile_from_dict(
        _bands(measured={"*": {"q10": -0.1, "q90": 0.1}}, combination={"factor_low": 0.5, "factor_high": 0.7})
    )
    assert profile_from_dict(rt.to_dict()).band_combination == (0.5, 0.7)


def test_shipped_profiles_carry_bands():
    for gpu in (H100, "h200-sxm-141gb"):
        b = load_profile_file(shipped_profile_path(gpu)).bands
        assert {"measured", "transferred", "datasheet"} <= set(b)
        assert b["measured"]["gemm"]["n"] > 50 and b["measured"]["*"]["q10"] < 0 < b["measured"]["*"]["q90"]


def test_analyze_band_peak_none_calibrated_brackets():
    peak = analyze("llama-3-8b", H100, 8192, 64, mode="peak").to_dict()
    for k in ("prefill_s", "decode_s_per_token", "decode_s"):
        assert peak[f"{k}_low"] == peak[k] == peak[f"{k}_high"]
    cal = analyze("llama-3-8b", H100, 8192, 64, mode="calibrated").to_dict()
    for k in ("prefill_s", "decode_s_per_token", "decode_s"):
        assert cal[f"{k}_low"] < cal[k] < cal[f"{k}_high"]


def test_transferred_band_is_wider_than_measured():
    own = analyze("llama-3-8b", H100, 8192, 64, mode="calibrated").to_dict()
    carried = analyze("llama-3-8b", "h100-pcie-80gb", 8192, 64, mode="calibrated").to_dict()
    assert carried["provenance"]["gemm"].startswith("transferred")
    for k in ("prefill_s", "decode_s_per_token"):
        width = lambda d: (d[f"{k}_high"] - d[f"{k}_low"]) / d[k]
        assert width(carried) > width(own)


def test_sweep_has_band_columns():
    df = sweep(
        "llama-3-8b",
        H100,
        context_len=[1024, 8192, 32768],
        batch=[1, 4],
        output_tokens=[64],
        mode="calibrated",
    )
    for k in ("prefill_s", "decode_s_per_token", "decode_s"):
        assert np.all(df[f"{k}_low"] <= df[k]) and np.all(df[k] <= df[f"{k}_high"])
        assert np.all(df[f"{k}_high"] > df[f"{k}_low"])


def test_regime_of_a_cost():
    from perfmodel.costs import OpCost, regime_of

    assert regime_of(OpCost(compute_s=3.0, memory_s=1.0)) == "compute"
    assert regime_of(OpCost(compute_s=1.0, memory_s=3.0)) == "memory"
    assert regime_of(OpCost(memory_s=0.5, comm_s=1.0)) == "memory"  # a collective moves data
    assert regime_of(OpCost(compute_s=1.0, latency_s=1.0)) == "latency"  # fixed costs half the time or more
    arr = regime_of(
        OpCost(
            compute_s=np.array([3.0, 1.0, 0.1]),
            memory_s=np.array([1.0, 3.0, 0.1]),
            latency_s=np.array([0.0, 0.0, 1.0]),
        )
    )
    assert list(arr) == ["compute", "memory", "latency"]


def test_band_of_prefers_the_regime_row_then_the_key():
    p = profile_from_dict(
        _bands(
            measured={
                "gemm": {"q10": -0.1, "q90": 0.1},
                "gemm|memory": {"q10": -0.3, "q90": 0.05},
                "*|latency": {"q10": -0.5, "q90": 0.5},
                "*": {"q10": -0.2, "q90": 0.2},
            }
        )
    )
    assert p.band_of(OpClass.GEMM, ("gemm",), "memory") == (-0.3, 0.05)
    assert p.band_of(OpClass.GEMM, ("gemm",), "compute") == (-0.1, 0.1)  # no gemm|compute row: the key's
    assert p.band_of(OpClass.GEMM, ("gemm",), "latency") == (
        -0.1,
        0.1,
    )  # the key before the pooled regime row
    pooled = profile_from_dict(
        _bands(measured={"*|latency": {"q10": -0.5, "q90": 0.5}, "*": {"q10": -0.2, "q90": 0.2}})
    )
    assert pooled.band_of(OpClass.GEMM, ("gemm",), "latency") == (-0.5, 0.5)
    assert pooled.band_of(OpClass.GEMM, ("gemm",), "memory") == (-0.2, 0.2)
    assert p.band_of(OpClass.GEMM, ("gemm",)) == (-0.1, 0.1)  # no regime: as before
    g = load_gpu(H100)
    big, small = Gemm(m=8192, n=8192, k=8192), Gemm(m=1, n=8192, k=8192)  # compute- and memory-bound
    for op, q90 in ((big, 0.1), (small, 0.05)):
        c = op_cost(op, g, p)
        assert math.isclose(c.low_s, c.total_s * math.exp(-q90))


def test_shipped_bands_have_size_and_regime_rows_and_finite_sample_quantiles():
    from perfmodel.validation.bands import MIN_FAMILIES, MIN_N_CELL, _q

    for gpu in (H100, "h200-sxm-141gb"):
        m = load_profile_file(shipped_profile_path(gpu)).bands["measured"]
        rows = [k for k in m if "|" in k]
        assert {"gemm|compute", "gemm|under_10us", "*|memory", "*|latency", "*|over_100us"} <= set(rows)
        assert all(m[k]["n"] >= MIN_N_CELL for k in rows)
    raw = json.loads(shipped_profile_path(H100).read_text())["bands"]["measured"]
    assert all(v["families"] >= MIN_FAMILIES and 0.8 <= v["level"] <= 0.99 for v in raw.values())
    # of 9 sorted residuals: the 1st and the 9th (plain percentiles would interpolate inward)
    assert _q(np.arange(9.0), 80) == (0.0, 8.0)
    assert _q(np.arange(99.0), 80) == (9.0, 89.0)
    assert _q(np.arange(99.0), 90) == (4.0, 94.0)


def test_band_of_prefers_the_size_row_then_the_regime_row():
    p = profile_from_dict(
        _bands(
            measured={
                "gemm": {"q10": -0.1, "q90": 0.1},
                "gemm|memory": {"q10": -0.3, "q90": 0.05},
                "gemm|under_10us": {"q10": -0.4, "q90": 0.2},
            }
        )
    )
    assert p.band_of(OpClass.GEMM, ("gemm",), "memory", "under_10us") == (-0.4, 0.2)
    assert p.band_of(OpClass.GEMM, ("gemm",), "memory", "over_100us") == (-0.3, 0.05)
    g = load_gpu(H100)
    tiny, big = Gemm(m=1, n=64, k=64), Gemm(m=8192, n=8192, k=8192)  # a few microseconds; milliseconds
    assert size_class_of(op_cost(tiny, g, p).total_s) == "under_10us"
    assert math.isclose(op_cost(tiny, g, p).low_s, op_cost(tiny, g, p).total_s * math.exp(-0.2))
    assert math.isclose(op_cost(big, g, p).low_s, op_cost(big, g, p).total_s * math.exp(-0.1))
    # arrays: each point its own cell
    arr = op_cost(Gemm(m=np.array([1, 8192]), n=np.array([64, 8192]), k=np.array([64, 8192])), g, p)
    assert np.allclose(arr.low_s, arr.total_s * np.exp([-0.2, -0.1]))
    assert list(size_class_of(np.array([1e-6, 1e-5, 5e-5, 1e-4, 1.0]))) == [
        "under_10us",
        "10us_to_100us",
        "10us_to_100us",
        "over_100us",
        "over_100us",
    ]


def test_cell_code_matches_regime_and_size_class():
    """The one-pass cell code of an array cost is the regime times the size classes plus the size class, NaN
    and ties included."""
    from perfmodel.costs.base import OpCost
    from perfmodel.costs.bands import REGIMES, SIZE_CLASSES, _cell_code, regime_of

    rng = np.random.default_rng(0)
    comp, mem, lat = (rng.choice([0.0, 1e-6, 5e-6, 3e-5, 2e-4, np.nan], (40, 1, 3)) for _ in range(3))
    c = OpCost(compute_s=comp, memory_s=np.broadcast_to(mem, (40, 5, 3)), latency_s=lat, comm_s=0.0)
    code = _cell_code(c, c.total_s)
    assert code.shape == (40, 5, 3)
    names = np.asarray(REGIMES)[code // len(SIZE_CLASSES)], np.asarray(SIZE_CLASSES)[code % len(SIZE_CLASSES)]
    assert np.array_equal(names[0], regime_of(c))
    assert np.array_equal(names[1], size_class_of(c.total_s))
