"""PP bubble, SP (Ulysses, Ring, hybrid) prefill, EP dispatch with an expert-load vector, analyze/CLI wiring."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.hw import load_gpu
from perfmodel.analyze import analyze
from perfmodel.calibration import peak_profile
from perfmodel.cli import main
from perfmodel.comm import GroupTooLargeError
from perfmodel.models import load_model
from perfmodel.parallel import (
    measured_ring_step,
    ParallelConfigError,
    RingStepModel,
    SpKind,
    ep_moe_layer,
    pipeline_time,
    ring_step_overlap,
    sp_prefill,
    split_sp,
)

H200 = load_gpu("h200-sxm-141gb")


def _h200_ring_step():
    from perfmodel.calibration import load_profile_file, shipped_profile_path

    step = measured_ring_step(load_profile_file(shipped_profile_path(H200.name), H200.name))
    assert step is not None  # the shipped H200 profile carries the measured Ring step
    return step


MEASURED_RING_STEP = _h200_ring_step()
PEAK = peak_profile(H200)
LLAMA = load_model("llama-3-8b")
MIXTRAL = load_model("mixtral-8x7b")


def test_pipeline_bubble():
    p = pipeline_time(1.0, 4, 8, 0.1)
    assert p.total_s == pytest.approx(11 * 1.1)
    assert p.bubble_s == pytest.approx(3 * 1.1)
    assert p.bubble_fraction == pytest.approx(3 / 11)
    assert pipeline_time(1.0, 1, 5, 0.1).total_s == pytest.approx(5.0)  # no hop without stages


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 1), st.floats(1e-6, 1), st.floats(1e-6, 1))
def test_ring_step_between_max_and_sum(eta, c, m):
    o = ring_step_overlap(c, m, eta)
    assert max(c, m) - 1e-12 <= o.step_s <= c + m + 1e-12
    assert 0 <= o.hidden_fraction <= 1


def test_ring_overlap_fails_for_small_blocks():
    big = ring_step_overlap(1e-3, 1e-4)
    small = ring_step_overlap(1e-5, 1e-4)
    assert big.hidden_fraction == 1.0 and big.exposed_comm_s == 0.0
    assert small.hidden_fraction == pytest.approx(0.1)
    assert small.exposed_comm_s == pytest.approx(9e-5)


RING_DATA = Path(__file__).resolve().parents[2] / "validation" / "data" / "collectives_h200x2_ring.jsonl"


@settings(max_examples=30, deadline=None)
@given(
    st.floats(0, 1),
    st.floats(1e-6, 1e-2),
    st.floats(1e-6, 1e-2),
    st.floats(0, 1e-4),
    st.floats(0, 1e-4),
    st.floats(0, 1e-4),
)
def test_ring_step_with_host_costs_is_the_longer_of_gpu_and_host(eta, c, m, hc, hm, hs):
    o = ring_step_overlap(c, m, RingStepModel(eta, hc, hm, hs))
    assert o.step_s >= max(c, m) - 1e-15 and o.step_s >= o.host_s - 1e-15
    assert o.step_s <= c + m + hc + hm + hs + 1e-15
    assert o.step_s == pytest.approx(c + m - o.hidden_s, abs=1e-15)
    assert o.stall_s == 0.0 or o.hidden_fraction < 1.0


def test_ring_overlap_fails_below_the_host_cost_and_not_above():
    rs = RingStepModel(0.3, 30e-6, 95e-6, 60e-6)
    small = ring_step_overlap(30e-6, 100e-6, rs)  # host: 30 + 95 + 60 us > c + m
    big = ring_step_overlap(7e-3, 0.9e-3, rs)
    assert small.hidden_fraction < 0 and small.step_s > small.compute_s + small.comm_s
    assert small.step_s == pytest.approx(185e-6)
    assert big.stall_s == 0 and big.hidden_fraction == pytest.approx(0.3)
    arr = ring_step_overlap(np.array([30e-6, 7e-3]), np.array([100e-6, 0.9e-3]), rs)  # arrays broadcast
    assert np.allclose(arr.step_s, [small.step_s, big.step_s])
    with pytest.raises(ValueError, match="overlap"):
        RingStepModel(1.5)
    with pytest.raises(ValueError, match="sync_s"):
        RingStepModel(0.3, sync_s=-1.0)
    with pytest.raises(ValueError, match="compute_s"):
        ring_step_overlap(-1.0, 1e-4)


def test_measured_ring_step_model_on_the_recorded_steps():
    rows = [json.loads(x) for x in RING_DATA.read_text().splitlines() if x.strip()]
    c, m, both = (np.array([r[k] for r in rows]) for k in ("compute_s", "comm_s", "both_s"))
    blocks = np.array([r["block_tokens"] for r in rows])
    from perfmodel.calibration import OpClass, load_profile_file, shipped_profile_path

    h_m = load_profile_file(shipped_profile_path(H200.name), H200.name).params(OpClass.SEND_RECV).latency_s
    rs = RingStepModel(
        MEASURED_RING_STEP.overlap, MEASURED_RING_STEP.compute_issue_s, h_m, MEASURED_RING_STEP.sync_s
    )
    pred = ring_step_overlap(c, m, rs)
    err = np.abs(pred.step_s / both - 1)
    assert np.median(err) < 0.05 and err[blocks >= 2048].max() < 0.05
    # small blocks: measured and predicted steps are longer than compute and transfer apart
    small = blocks <= 1024
    assert np.all((c + m - both)[small] < 0) and np.all(np.asarray(pred.hidden_fraction)[small] < 0)
    ideal = np.abs(ring_step_overlap(c, m, 1.0).step_s / both - 1)
    assert np.median(ideal) > 0.2  # the ideal rule is far off: the fit is doing real work


def test_sp_prefill_ring_host_bound_in_calibrated_mode_and_ideal_in_peak():
    from perfmodel.calibration import load_profile_file, shipped_profile_path

    cal = load_profile_file(shipped_profile_path(H200.name), H200.name)
    short = sp_prefill(LLAMA, H200, cal, 2048, 2, SpKind.RING, overlap=MEASURED_RING_STEP)
    long = sp_prefill(LLAMA, H200, cal, 131_072, 2, SpKind.RING, overlap=MEASURED_RING_STEP)
    assert short.ring_steps.stall_s > 0 and short.ring_steps.hidden_fraction < 0
    assert long.ring_steps.stall_s == 0 and long.ring_steps.hidden_fraction > 0
    assert float(short.cost.total_s) > float(sp_prefill(LLAMA, H200, cal, 2048, 2, SpKind.RING).cost.total_s)
    peak = sp_prefill(LLAMA, H200, PEAK, 2048, 2, SpKind.RING)
    s = peak.ring_steps
    assert s.step_s == max(s.compute_s, s.comm_s) and s.stall_s == 0 and peak.ring_launch_s == 0


def test_ring_hidden_at_long_context_exposed_at_short():
    long = sp_prefill(LLAMA, H200, PEAK, 262_144, 4, SpKind.RING)
    short = sp_prefill(LLAMA, H200, PEAK, 2048, 8, SpKind.RING)
    assert long.ring_steps.hidden_fraction == 1.0
    assert short.ring_steps.hidden_fraction < 1.0
    assert short.comm_s > 0 and long.comm_s == pytest.approx(0.0, abs=1e-12)


def test_ulysses_comm_per_gpu_falls_with_degree_and_ring_transfer_does_not():
    u2 = sp_prefill(LLAMA, H200, PEAK, 131_072, 2, "ulysses").a2a.comm_s
    u8 = sp_prefill(LLAMA, H200, PEAK, 131_072, 8, "ulysses").a2a.comm_s
    assert float(u8) < float(u2) / 2
    r2 = sp_prefill(LLAMA, H200, PEAK, 131_072, 2, "ring")
    r8 = sp_prefill(LLAMA, H200, PEAK, 131_072, 8, "ring")
    # total Ring traffic per GPU, (r - 1) blocks of N / r tokens, is nearly constant in r
    assert r8.ring_comm_s == pytest.approx(r2.ring_comm_s * (7 / 8) / (1 / 2), rel=0.05)


def test_sp_splits_the_prefill_compute():
    one = sp_prefill(LLAMA, H200, PEAK, 131_072, 1, "ring").compute.total_s
    four = sp_prefill(LLAMA, H200, PEAK, 131_072, 4, "ring").compute.total_s
    assert float(four) == pytest.approx(float(one) / 4, rel=0.1)


def test_split_sp_and_its_errors():
    assert split_sp(LLAMA, 8, SpKind.ULYSSES) == (8, 1)
    assert split_sp(LLAMA, 16, SpKind.HYBRID, gpus_per_node=8) == (8, 2)
    u, r = split_sp(LLAMA, 12, SpKind.HYBRID)
    assert u * r == 12
    with pytest.raises(ParallelConfigError, match="sp=3"):
        split_sp(LLAMA, 3, SpKind.ULYSSES)
    with pytest.raises(ValueError):
        split_sp(LLAMA, 4, "zigzag")


def test_ep_load_vector_slows_the_hot_gpu():
    uni = ep_moe_layer(MIXTRAL, H200, PEAK, 8192, 4)
    hot = ep_moe_layer(MIXTRAL, H200, PEAK, 8192, 4, expert_load=[8, 1, 1, 1, 1, 1, 1, 1])
    assert uni.imbalance == pytest.approx(1.0)
    assert hot.imbalance == pytest.approx(4 * 9 / 15)
    assert float(hot.dispatch.total_s) > float(uni.dispatch.total_s)
    assert float(hot.experts.total_s) > float(uni.experts.total_s)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(ep=3), "ep=3"),
        (dict(expert_load=[1, 2]), "expert_load"),
        (dict(expert_load=[-1] + [1] * 7), "expert_load"),
    ],
)
def test_ep_errors(kw, msg):
    with pytest.raises(ParallelConfigError, match=msg):
        ep_moe_layer(MIXTRAL, H200, PEAK, 1024, kw.pop("ep", 4), **kw)
    with pytest.raises(ParallelConfigError, match="dense"):
        ep_moe_layer(LLAMA, H200, PEAK, 1024, 2)


def test_analyze_reports_communication_and_parallel_speedups():
    base = analyze("llama-3-8b", "h200", 65_536, 100, mode="calibrated").to_dict()
    tp2 = analyze("llama-3-8b", "h200", 65_536, 100, tp=2, mode="calibrated").to_dict()
    sp4 = analyze("llama-3-8b", "h200", 65_536, 100, sp=4, sp_kind="ring", mode="calibrated").to_dict()
    pp2 = analyze("llama-3-8b", "h200", 65_536, 100, pp=2, mode="calibrated").to_dict()
    assert base["communication"]["prefill_s"] == 0.0 and "comm_s" in base and "prefill_s" in base
    assert 0 < tp2["communication"]["decode_share"] < 1
    assert sp4["prefill_s"] < base["prefill_s"] / 3
    assert pp2["prefill_s"] < base["prefill_s"] and pp2["parallel"]["pp_bubble_fraction_prefill"] > 0
    assert pp2["weight_bytes_per_gpu"] == pytest.approx(base["weight_bytes_per_gpu"] / 2, rel=1e-6)
    ep = analyze("mixtral-8x7b", "h200", 8192, 10, batch=8, ep=8, mode="calibrated").to_dict()
    assert ep["communication"]["prefill_s"] > 0 and ep["parallel"]["ep_imbalance"] == pytest.approx(1.0)


def test_analyze_rejects_groups_larger_than_the_system():
    with pytest.raises(GroupTooLargeError, match="h200-x2"):
        analyze("llama-3-8b", "h200", 8192, 10, sp=4, topology="h200-x2")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--pp", "5"], "pp=5"),
        (["--sp", "3", "--sp-kind", "ulysses"], "sp=3"),
        (["--ep", "2"], "ep=2"),
        (["--sp", "4", "--topology", "h200-x2"], "h200-x2"),
    ],
)
def test_cli_bad_degrees_are_one_line(args, needle, capsys):
    assert main(["analyze", "--model", "llama-3-8b", "--gpu", "h200", "--context", "4096", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_cli_sp_runs(capsys):
    assert (
        main(
            [
                "analyze",
                "--model",
                "llama-3-8b",
                "--gpu",
                "h200",
                "--context",
                "65536",
                "--sp",
                "2",
                "--sp-kind",
                "hybrid",
                "--json",
            ]
        )
        == 0
    )
    assert '"sp_kind": "hybrid"' in capsys.readouterr().out


def test_ring_step_comes_from_the_profile_and_is_absent_elsewhere():
    from perfmodel.calibration import Mode, Profile, ProfileError, profile_from_dict

    assert measured_ring_step(Profile(gpu="x", mode=Mode.CALIBRATED)) is None
    assert 0 < MEASURED_RING_STEP.overlap < 1 and MEASURED_RING_STEP.sync_s > 0
    with pytest.raises(ProfileError, match="ring_attention_step.overlap"):
        profile_from_dict({"classes": {}, "ring_attention_step": {"overlap": 2.0}})
    with pytest.raises(ProfileError, match="unknown field"):
        profile_from_dict({"classes": {}, "ring_attention_step": {"wobble": 1.0}})
