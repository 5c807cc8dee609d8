"""Profile format: loading, validation, clear errors, peak mode."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import (
    PROFILE_DIR,
    Mode,
    OpClass,
    Profile,
    load_profile_file,
    peak_profile,
    profile_from_dict,
    resolve_profile,
)
from perfmodel.costs.elementwise import ElementwiseParams
from perfmodel.costs.gemm import GemmParams
from perfmodel.errors import ProfileError
from perfmodel.ops import AttentionImpl


def _write(tmp_path, data, name="p.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def test_peak_profile_is_efficiency_one_latency_zero():
    prof = peak_profile("h100-sxm-80gb")
    assert prof.is_peak and prof.mode is Mode.PEAK
    for oc in OpClass:
        p = prof.params(oc)
        peak = {"compute_eff": 1.0, "memory_eff": 1.0, "latency_s": 0.0, "tile_m": 0, "tile_overhead_s": 0.0}
        have = {k: v for k, v in peak.items() if k in p.field_names()}  # the fields of the class's own type
        assert {k: getattr(p, k) for k in have} == have and {"memory_eff", "latency_s"} <= set(have)
    assert prof.elementwise_params("rmsnorm") == ElementwiseParams()


def test_missing_profile_names_the_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(ProfileError, match="nope.json"):
        load_profile_file(path)


def test_corrupt_profile_names_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ProfileError, match="corrupt.*bad.json"):
        load_profile_file(p)


def test_profile_for_another_gpu_is_refused(tmp_path):
    p = _write(tmp_path, {"schema_version": 1, "gpu": "h200-sxm-141gb", "classes": {}})
    with pytest.raises(ProfileError, match="h200-sxm-141gb.*not 'h100-sxm-80gb'"):
        load_profile_file(p, "h100-sxm-80gb")


@pytest.mark.parametrize(
    "classes, match",
    [
        ({"gemm": {"compute_eff": 0}}, "compute_eff"),
        ({"gemm": {"compute_eff": "fast"}}, "non-numeric"),
        ({"gemm": {"wave_quant": 2}}, "wave_quant"),
        ({"gemm": {"tile_m": -1}}, "tile_m"),
        ({"gemm": {"bogus": 1}}, "unknown field"),
        ({"warp_drive": {}}, "unknown op class"),
        ({"gemm": 3}, "must be an object"),
        ({"attention_decode": {"split_rule": 7}}, "split_rule"),
        ({"attention_decode": {"split_memory_eff": 2}}, "split_memory_eff"),
        ({"attention_decode": {"units_per_sm": -1}}, "units_per_sm"),
        ({"memcpy_h2d_pageable": {"knee_bytes": float("nan")}}, "knee_bytes"),
        ({"attention_prefill": {"unit_compute_eff": 2}}, "unit_compute_eff"),
        ({"attention_decode": {"reduce_bytes_eff": -0.1}}, "reduce_bytes_eff"),
        ({"attention_decode": {"reduce_row_s": -1e-7}}, "reduce_row_s"),
        ({"attention_decode": {"split_rule": 4}}, "split_rule"),
    ],
)
def test_bad_class_values_are_refused(classes, match):
    with pytest.raises(ProfileError, match=match):
        profile_from_dict({"schema_version": 1, "gpu": "x", "classes": classes})


def test_bad_elementwise_kernel_is_refused():
    with pytest.raises(ProfileError, match="elementwise kernel 'rmsnorm'.*memory_eff"):
        profile_from_dict({"gpu": "x", "classes": {}, "elementwise_kernels": {"rmsnorm": {"memory_eff": 9}}})


def test_round_trip_keeps_new_fields():
    prof = Profile(
        "h100-sxm-80gb",
        Mode.CALIBRATED,
        {OpClass.GEMM: GemmParams(0.8, 0.9, 4e-6, 128, 256, 16, 0.4, 1e-6, 0.7, 1e9, 1e6)},
        elementwise={"rmsnorm": ElementwiseParams(memory_eff=0.6, latency_s=3e-6)},
    )
    back = profile_from_dict(json.loads(json.dumps(prof.to_dict())))
    assert back.params(OpClass.GEMM) == prof.params(OpClass.GEMM)
    assert back.elementwise_params("rmsnorm") == prof.elementwise_params("rmsnorm")
    # an unnamed kernel falls back to the elementwise class
    assert back.elementwise_params("gelu") == back.params(OpClass.ELEMENTWISE)


@settings(max_examples=30, deadline=None)
@given(eff=st.floats(0.01, 1.5), lat=st.floats(0, 1e-3), wq=st.floats(0, 1))
def test_valid_params_round_trip(eff, lat, wq):
    raw = {
        "gpu": "g",
        "classes": {"attention_decode": {"memory_eff": eff, "latency_s": lat, "wave_quant": wq}},
    }
    p = profile_from_dict(raw).params(OpClass.ATTENTION_DECODE)
    assert (p.memory_eff, p.latency_s, p.wave_quant) == (eff, lat, wq)


@pytest.mark.parametrize("gpu", ["h100-sxm-80gb", "h200-sxm-141gb"])
def test_shipped_profiles_load_and_are_calibrated(gpu):
    path = PROFILE_DIR / f"{gpu}.json"
    prof = load_profile_file(path, gpu)
    assert prof.gpu == gpu and not prof.is_peak
    for oc in (OpClass.GEMM, OpClass.ELEMENTWISE, OpClass.MEMCPY_D2D, OpClass.MEMCPY_H2D):
        assert oc in prof.classes, oc
    for oc in (OpClass.ATTENTION_PREFILL, OpClass.ATTENTION_DECODE):  # attention: a curve per implementation
        assert AttentionImpl.FLASH2 in prof.attention_impls(oc), oc
        assert prof.default_attention_impl() in prof.attention_impls(oc)
    # a fitted profile is slower than the datasheet: efficiencies at most ~1
    assert 0.3 < prof.params(OpClass.GEMM).compute_eff <= 1.0
    assert prof.measured_on.get("driver")
    resolved = resolve_profile(load_gpu(gpu))  # collectives it lacks come from a GPU with the same link
    assert {c: p for c, p in resolved.classes.items() if resolved.provenance_of(c) == "measured"} == dict(
        prof.classes
    )
    assert resolve_profile(load_gpu(gpu), Mode.PEAK).is_peak


def test_calibrated_mode_without_profile_warns_and_falls_back(tmp_path, monkeypatch):
    import perfmodel.calibration as cal

    monkeypatch.setattr(cal, "PROFILE_DIR", tmp_path)
    with pytest.warns(UserWarning, match="no calibration profile"):
        prof = resolve_profile(load_gpu("h100-sxm-80gb"))
    assert prof.is_peak


def test_explicit_corrupt_profile_is_an_error_not_a_fallback(tmp_path):
    p = tmp_path / "h100.json"
    p.write_text("[]")
    with pytest.raises(ProfileError, match="h100.json"):
        resolve_profile(load_gpu("h100-sxm-80gb"), profile=p)
