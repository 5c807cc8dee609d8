"""Grouped-GEMM (MoE experts) measurement cases, their builder on a CPU, and the fit of the class."""

import json

import numpy as np
import pytest

from perfmodel.calibration import Mode, OpClass, Profile
from perfmodel.costs.grouped_gemm import GroupedGemmParams
from perfmodel.ops import GroupedGemm, op_from_dict
from perfmodel.validation.cases import MOE_MODELS, cases, grouped_gemm_cases, route_counts
from perfmodel.validation.fit import ProfileFitter
from perfmodel.validation.records import class_key

H100 = "h100-sxm-80gb"


def test_routing_counts_rows_and_skew():
    u = route_counts(256, 128, 8, "uniform", 1)
    z = route_counts(256, 128, 8, "zipf", 1)
    assert sum(u) == sum(z) == 256 * 8 and len(u) == 128
    assert max(u) <= 256 and max(z) <= 256  # top-k picks distinct experts per token
    assert max(z) > 3 * max(u)  # a few hot experts
    assert route_counts(256, 128, 8, "uniform", 1) == u  # deterministic
    with pytest.raises(ValueError, match="routing"):
        route_counts(4, 8, 2, "hot", 0)


@pytest.mark.parametrize("size", ["smoke", "quick", "full"])
def test_grouped_cases_are_valid_descriptors_with_their_counts(size):
    cs = grouped_gemm_cases(size)
    assert cs == [c for c in cases(size, ("grouped_gemm",))]
    for c in cs:
        op = op_from_dict(c.desc)
        assert isinstance(op, GroupedGemm)
        counts = c.args["counts"]
        assert op.groups == len(counts) and op.m == sum(counts) == c.args["tokens"] * c.args["top_k"]
        assert min(counts) >= 1 and (op.n, op.k) == (c.args["n"], c.args["k"])
        assert c.impl in ("grouped_mm", "loop") and c.family.startswith("grouped_gemm/")
        json.dumps(c.args)
    if size != "smoke":
        assert {c.args["routing"] for c in cs} == {"uniform", "zipf"}
        assert {c.args["model"] for c in cs} == {m.name for m in MOE_MODELS}
        toks = {c.args["tokens"] for c in cs}
        assert min(toks) == 1 and max(toks) >= 8192
        assert any(c.impl == "loop" for c in cs)


def test_quick_set_is_sized_for_about_a_minute():
    assert 60 <= len(grouped_gemm_cases("quick")) <= 120


def test_loop_records_are_their_own_report_row():
    c = [c for c in grouped_gemm_cases("smoke") if c.impl == "loop"][0]
    assert class_key({**c.desc, "impl": "loop"}) == "grouped_gemm[loop]"
    assert class_key({**c.desc, "impl": "grouped_mm"}) == "grouped_gemm"


def test_builder_runs_on_cpu_and_matches_the_per_expert_loop():
    torch = pytest.importorskip("torch")
    from perfmodel.validation import bench

    case = [c for c in grouped_gemm_cases("smoke") if c.args["tokens"] == 7][0]
    built = bench.build(case, torch.device("cpu"), l2_bytes=1e9)
    assert built.impl(case.impl) in ("grouped_mm", "loop")
    t, _, method = bench.time_cpu(built.fns, max_time_s=0.0)
    assert t > 0 and method == "host_clock"
    out = built.fns[0]()
    loop_case = type(case)(case.section, "loop", case.family, case.desc, case.args)
    torch.manual_seed(0)
    ref = bench.build(loop_case, torch.device("cpu"), l2_bytes=1e9)
    assert ref.impl("loop") == "loop" and out.shape == (case.desc["m"], case.desc["n"])


def test_builder_falls_back_to_the_loop_where_grouped_mm_does_not_run(monkeypatch):
    torch = pytest.importorskip("torch")
    from perfmodel.validation import bench

    def broken(*a, **k):
        raise RuntimeError("grouped_mm: not supported on this device")

    monkeypatch.setattr(torch, "_grouped_mm", broken, raising=False)
    case = grouped_gemm_cases("smoke")[1]
    built = bench.build(case, torch.device("cpu"), l2_bytes=1e9)
    assert built.impl(case.impl) == "loop"
    assert built.fns[0]().shape == (case.desc["m"], case.desc["n"])


def test_grouped_mm_equals_the_loop_on_cpu():
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("no torch._grouped_mm")
    counts = [3, 1, 4]
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    w = torch.randn(3, 32, 64, dtype=torch.bfloat16)
    offs = torch.tensor(counts, dtype=torch.int32).cumsum(0).to(torch.int32)
    try:
        y = torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)
    except (RuntimeError, NotImplementedError):
        pytest.skip("torch._grouped_mm does not run on this build")
    ref = torch.cat([x[0:3] @ w[0].t(), x[3:4] @ w[1].t(), x[4:8] @ w[2].t()])
    assert torch.allclose(y.float(), ref.float(), atol=1e-2, rtol=1e-2)


def test_fit_recovers_the_grouped_class_from_synthetic_records(synthetic_records):
    # a 128-row tile pads the prefill groups of 192 rows (DeepSeek-V2-Lite shape, 2048 tokens) to 256: visible
    truth = GroupedGemmParams(compute_eff=0.6, memory_eff=0.85, latency_s=6e-6, tile_m=128)
    true = Profile(H100, Mode.CALIBRATED, {OpClass.GROUPED_GEMM: truth})
    recs = synthetic_records(("grouped_gemm",), true, keep=lambda c: c.impl == "grouped_mm", noise=0.01)
    p = ProfileFitter(H100).fit(recs).profile_.params(OpClass.GROUPED_GEMM)
    assert p.tile_m == 128
    assert p.compute_eff == pytest.approx(0.6, rel=0.03)
    assert p.memory_eff == pytest.approx(0.85, rel=0.03)
    assert p.latency_s == pytest.approx(6e-6, rel=0.05)


def test_dry_run_measures_the_grouped_section(tmp_path, monkeypatch, invoke):
    pytest.importorskip("torch")
    from perfmodel.validation.records import check_record
    from perfmodel.validation.run import main

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    res = invoke(main, ["--out", str(tmp_path), "--dry-run", "--sections", "grouped_gemm", "--name", "dry"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (tmp_path / "dry.jsonl").read_text().splitlines()]
    assert len(recs) == len(grouped_gemm_cases("smoke"))
    for r in recs:
        check_record(r, "dry")
        assert r["impl"] in ("grouped_mm", "loop") and "counts" in r["params"] and r["kernels"] == []
    assert np.all([r["groups"] == len(r["params"]["counts"]) for r in recs])
