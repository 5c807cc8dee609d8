"""The sustained-clock and eager-launch terms fitted from their measurements; benchmarks/sustained.py's output."""

import json
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import Mode, OpClass, Profile
from perfmodel.costs.gemm import GemmParams
from perfmodel.costs import op_cost
from perfmodel.ops import Gemm, op_to_dict
from perfmodel.validation.fit import SUSTAINED_OPS, launch_terms, sustained_terms
from perfmodel.validation.records import RecordError

H100 = "h100-sxm-80gb"
ROOT = Path(__file__).resolve().parents[2]
PROF = Profile(
    H100, Mode.CALIBRATED, MappingProxyType({OpClass.GEMM: GemmParams(compute_eff=0.8, latency_s=3e-6)})
)


def _result(ratio: float) -> dict:
    from perfmodel.ops import op_from_dict

    g, ops = load_gpu(H100), {}
    for name, desc in SUSTAINED_OPS.items():
        op = op_from_dict(desc)
        rate = 2.0 * 8192**3 / op_cost(op, g, PROF).total_s if desc["op"] == "gemm" else 1e15
        work = 2.0 * 8192**3 if desc["op"] == "gemm" else float(op_cost(op, g, PROF).flops)
        if desc["op"] != "gemm":
            rate = work / op_cost(op, g, PROF).total_s
        ops[name] = {
            "kind": "compute",
            "work": work,
            "burst_rate": rate,
            "sustained_rate": rate * ratio,
            "ratio": ratio,
            "settled_after_s": 1.5,
            "sm_clock_mhz_settled": 1400,
            "power_w_settled": 699,
        }
    return {
        "gpu": "NVIDIA H100 80GB HBM3",
        "driver": "580",
        "torch": "2.11",
        "date": "2026-12-07",
        "ops": ops,
    }


def test_sustained_terms_are_the_settled_rate_over_the_profiles_rate():
    terms = sustained_terms(_result(0.87), PROF)
    assert terms["compute_ratio"] == pytest.approx(0.87, abs=1e-3) and terms["settle_s"] == 1.5
    assert sustained_terms(_result(1.2), PROF)["compute_ratio"] == 1.0  # never faster than the profile
    with pytest.raises(RecordError, match="dry-run"):
        sustained_terms({**_result(0.9), "dry_run": True}, PROF)
    with pytest.raises(RecordError, match="none of the ops"):
        sustained_terms({"ops": {}}, PROF)


def test_launch_terms_recover_the_host_issue_time_and_the_gap():
    g = load_gpu(H100)
    recs = []
    for m in (1, 4, 16, 64, 128, 256, 1024, 4096):
        for n in (1024, 4096, 8192):
            op = Gemm(m, n, 4096)
            t = max(float(op_cost(op, g, PROF).total_s) + 1.2e-6, 7.5e-6)
            recs.append({**op_to_dict(op), "measured_s": t, "launch": "eager", "gpu_model": H100})
    terms = launch_terms(recs, PROF)
    assert terms["issue_s"] == pytest.approx(7.5e-6, abs=0.15e-6) and terms["gap_s"] == pytest.approx(
        1.2e-6, abs=0.1e-6
    )
    with pytest.raises(RecordError, match="no records timed with --launch eager"):
        launch_terms([{**r, "launch": "graph"} for r in recs], PROF)


def test_sustained_benchmark_dry_run_writes_its_result(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "sustained.py"),
            "--out",
            str(tmp_path),
            "--dry-run",
            "--seconds",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "sustained_cpu.json").read_text())
    assert data["dry_run"] is True and set(data["ops"]) == {*SUSTAINED_OPS, "memcpy_d2d_1gib"}
    for v in data["ops"].values():
        assert np.isfinite(v["burst_rate"]) and v["burst_rate"] > 0
    assert "burst" in r.stdout and "sustained" in r.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sustained.py"), "--out", str(tmp_path), "--seconds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def test_shipped_ramp_is_the_committed_sustained_series_read_by_the_rule():
    import dataclasses
    import json
    from pathlib import Path
    from types import MappingProxyType

    from perfmodel.calibration import load_profile_file, shipped_profile_path
    from perfmodel.validation.fit import RAMP_GRID_S, ramp_table

    gpu = "h100-sxm-80gb"
    prof = load_profile_file(shipped_profile_path(gpu), gpu)
    result = json.loads(
        (Path(__file__).resolve().parents[2] / "validation" / "data" / f"sustained_{gpu}.json").read_text()
    )
    ramp = ramp_table(result, dataclasses.replace(prof, sustained=MappingProxyType({})))
    assert [list(p) for p in prof.sustained["ramp"]] == ramp
    assert [t for t, _ in ramp] == list(RAMP_GRID_S[: len(ramp)]) and all(0 < r <= 1 for _, r in ramp)
    # the board slows within the first half second, before the power limit's settling time
    assert min(r for t, r in ramp if t <= 0.5) < 0.97 and prof.sustained["settle_s"] > 0.5
