"""Sustained clocks (perfmodel.clocks) and eager launches (costs.eager_cost): the rules and their plumbing."""

import dataclasses
from types import MappingProxyType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import Launch, Mode, OpClass, Profile, profile_from_dict
from perfmodel.costs.gemm import GemmParams
from perfmodel.clocks import sustained_from_dict, sustained_phase
from perfmodel.costs import OpCost, eager_cost, op_cost
from perfmodel.errors import ProfileError
from perfmodel.models import load_model
from perfmodel.ops import Gemm
from perfmodel.phases import decode_step_cost, prefill_cost

H100 = "h100-sxm-80gb"
SUS = {"compute_ratio": 0.85, "settle_s": 1.0}


def test_a_phase_shorter_than_the_settling_time_keeps_the_burst_rate():
    c = OpCost(compute_s=0.5, memory_s=0.1)
    assert sustained_phase(c, SUS) == c
    assert sustained_phase(c, {}) == c


def test_a_long_phase_pays_the_sustained_rate_after_settling():
    c = OpCost(compute_s=10.0, memory_s=1.0)
    out = sustained_phase(c, SUS)
    assert out.total_s - c.total_s == pytest.approx(10.0 * (1 - 1.0 / 11.0) * (1 / 0.85 - 1))
    # arrays: each point by its own length
    arr = sustained_phase(OpCost(compute_s=np.array([0.1, 10.0]), memory_s=np.array([0.0, 1.0])), SUS)
    assert arr.compute_s[0] == 0.1 and arr.compute_s[1] == pytest.approx(out.compute_s)


@given(st.floats(1e-4, 1e3), st.floats(0.0, 1e3), st.floats(0.3, 1.0), st.floats(0.0, 5.0))
def test_the_rule_only_slows_and_never_beyond_the_sustained_rate(compute_s, memory_s, ratio, settle_s):
    c = OpCost(compute_s=compute_s, memory_s=memory_s)
    out = sustained_phase(c, {"compute_ratio": ratio, "settle_s": settle_s})
    assert c.total_s <= out.total_s <= c.total_s + min(compute_s, c.total_s) * (1 / ratio - 1) + 1e-12
    assert np.isfinite(out.total_s)


@pytest.mark.parametrize(
    "raw,needle",
    [
        ({"compute_ratio": 1.2, "settle_s": 1}, "compute_ratio must be in"),
        ({"compute_ratio": 0.9}, "settle_s is missing"),
        ({"compute_ratio": 0.9, "settle_s": -1}, "settle_s must be >= 0"),
        ({"compute_ratio": 0.9, "settle_s": 1, "fudge": 2}, "unknown field"),
    ],
)
def test_bad_sustained_terms_are_refused_by_name(raw, needle):
    with pytest.raises(ProfileError, match=needle):
        sustained_from_dict(raw, "p.json")


def test_prefill_pays_the_sustained_rate_and_decode_does_not():
    m, g = load_model("llama-3-8b"), load_gpu(H100)
    base = Profile(H100, Mode.CALIBRATED, MappingProxyType({OpClass.GEMM: GemmParams(compute_eff=0.8)}))
    hot = dataclasses.replace(base, sustained=MappingProxyType(SUS))
    assert prefill_cost(m, g, hot, 128_000).total_s > prefill_cost(m, g, base, 128_000).total_s
    assert (
        prefill_cost(m, g, hot, 500).total_s == prefill_cost(m, g, base, 500).total_s
    )  # milliseconds: burst
    assert decode_step_cost(m, g, hot, 128_000, 8).total_s == decode_step_cost(m, g, base, 128_000, 8).total_s
    back = profile_from_dict(hot.to_dict())
    assert dict(back.sustained) == SUS


def test_eager_launch_waits_for_the_host_on_short_kernels_only():
    terms = {"issue_s": 6e-6, "gap_s": 1e-6}
    short, long = OpCost(latency_s=3e-6), OpCost(compute_s=1e-3)
    assert eager_cost(short, terms).total_s == pytest.approx(6e-6)
    assert eager_cost(long, terms).total_s == pytest.approx(1e-3 + 1e-6)
    g = load_gpu(H100)
    prof = Profile(
        H100,
        Mode.CALIBRATED,
        MappingProxyType({OpClass.GEMM: GemmParams(latency_s=3e-6)}),
        launch_terms=MappingProxyType(terms),
    )
    op = Gemm(16, 1024, 1024)
    assert op_cost(op, g, prof.with_launch("eager")).total_s >= op_cost(op, g, prof).total_s + 1e-6
    with pytest.raises(ProfileError, match="no eager-launch terms"):
        dataclasses.replace(prof, launch_terms=MappingProxyType({})).with_launch(Launch.EAGER)
    with pytest.raises(ProfileError, match="launch must be graph or eager"):
        prof.with_launch("lazy")


def _cost(compute_s, total_s):
    from perfmodel.costs import OpCost

    return OpCost(compute_s=compute_s, memory_s=total_s - compute_s, overlap_s=0.0)


def test_a_flat_ramp_is_the_settled_rate_from_the_start():
    from perfmodel.clocks import sustained_phase

    flat = {"compute_ratio": 0.8, "settle_s": 1.0, "ramp": ((0.0, 0.8), (1.0, 0.8))}
    for t in (0.01, 0.5, 3.0):
        out = sustained_phase(_cost(t, t), flat)
        assert float(out.compute_s) == pytest.approx(t / 0.8)


def test_a_ramp_slows_a_phase_by_the_mean_inverse_rate_over_its_run():
    from perfmodel.clocks import sustained_phase

    ramp = {"compute_ratio": 0.5, "settle_s": 1.0, "ramp": ((0.0, 1.0), (1.0, 0.5))}
    # 1/r over [0, 1] with r linear from 1 to 0.5: mean = 2 ln 2
    out = sustained_phase(_cost(1.0, 1.0), ramp)
    assert float(out.compute_s) == pytest.approx(2 * np.log(2), rel=1e-3)
    # beyond the ramp, the settled rate; shorter phases pay less; array phases price as scalars
    times = np.array([0.05, 0.5, 1.0, 4.0])
    arr = sustained_phase(_cost(times, times), ramp)
    one = [float(sustained_phase(_cost(t, t), ramp).compute_s) for t in times]
    assert np.allclose(arr.compute_s, one) and np.all(np.diff(np.asarray(arr.compute_s) / times) > 0)


def test_after_busy_shifts_the_ramp_and_the_settling_time():
    from perfmodel.clocks import after_busy, sustained_phase

    ramp = {"compute_ratio": 0.5, "settle_s": 1.0, "ramp": ((0.0, 1.0), (1.0, 0.5))}
    late = after_busy(ramp, 0.5)
    assert late["settle_s"] == pytest.approx(0.5) and late["ramp"][0] == (0.0, pytest.approx(0.75))
    # a phase 2 s into the work sees the settled rate only
    settled = after_busy(ramp, 2.0)
    assert float(sustained_phase(_cost(0.1, 0.1), settled).compute_s) == pytest.approx(0.2)
    assert after_busy(ramp, 0.0) == ramp
    step = {"compute_ratio": 0.5, "settle_s": 1.0}
    assert after_busy(step, 0.25) == {"compute_ratio": 0.5, "settle_s": 0.75}


@pytest.mark.parametrize(
    "bad", [[[0.1, 1.0], [1.0, 0.9]], [[0.0, 1.0], [0.0, 0.9]], [[0.0, 1.2], [1.0, 0.9]], "x", [[0.0, 1.0]]]
)
def test_bad_ramps_are_refused_by_name(bad):
    from perfmodel.clocks import sustained_from_dict
    from perfmodel.errors import ProfileError

    with pytest.raises(ProfileError, match="ramp"):
        sustained_from_dict({"compute_ratio": 0.9, "settle_s": 1.0, "ramp": bad}, "p.json")
