"""The multi-GPU measurement code on the CPU: gloo at world 2, tiny sizes, under timeouts."""

import json
import sys

import numpy as np
import pytest

from perfmodel.validation import collectives_launch as CL
from perfmodel.validation import e2e_parallel as EP
from perfmodel.validation.spawn import launch, read_jsonl

H100 = "h100-sxm-80gb"
META_KEYS = ("launch", "world", "bytes", "gpu", "driver", "torch", "cuda", "nccl", "date", "nccl_env")


def test_launch_stops_on_a_failing_rank():
    res = launch(sys.exit, 2, (), timeout_s=60)  # sys.exit(rank, world) raises TypeError: status 1
    assert not res.ok and "status 1" in res.stopped


@pytest.mark.timeout(120)
def test_collectives_three_ways_dry_run(tmp_path):
    fails = CL.measure(tmp_path, [2], ["all_reduce", "send_recv"], [4096], budget_s=100, dry_run=True)
    assert fails == []
    recs = read_jsonl(tmp_path / CL.RECORD_FILE)
    assert sorted((r["op"], r["launch"]) for r in recs) == sorted(
        (op, m) for op in ("all_reduce", "send_recv") for m in CL.METHODS
    )
    for r in recs:
        assert all(k in r for k in META_KEYS) and r["world"] == 2 and r["backend"] == "gloo"
        assert r["nccl_env"]["NCCL_NVLS_ENABLE"] == "0"
        if r["launch"] == "graph":
            assert r["status"] == "skipped" and "GPU" in r["skip_reason"]
        else:
            assert r["status"] == "ok" and r["time_s"] > 0 and len(r["times_s"]) >= 3


def _synthetic(method: str, alpha_s: float, bw: float, world: int = 2) -> list[dict]:
    sizes = [s for s in CL.C.default_sizes() if s >= 65536]
    rng = np.random.default_rng(len(method))
    return [
        {
            "op": "all_reduce",
            "bytes": s,
            "world": world,
            "launch": method,
            "status": "ok",
            "time_s": (2 * alpha_s + s / bw) * float(np.exp(rng.normal(0, 0.02))),
        }
        for s in sizes
    ]


def test_fit_is_per_method(tmp_path, monkeypatch):
    recs = _synthetic("graph", 8e-6, 300e9) + _synthetic("eager_burst", 25e-6, 300e9)
    res = CL.fit(recs, H100)
    g = res["methods"]["graph"]["world_2"]
    e = res["methods"]["eager_burst"]["world_2"]
    assert g["fits"]["all_reduce"]["latency_total_s"] < 0.6 * e["fits"]["all_reduce"]["latency_total_s"]
    assert g["errors_held_out"]["all"]["fitted"]["median_ape"] < CL.TARGET_MEDIAN
    sec = CL.profile_section(res, 2)
    assert set(sec) == {"graph", "eager_burst"} and set(sec["graph"]["all_reduce"]) == set(CL.C.PROFILE_KEYS)
    import perfmodel.calibration as cal

    shipped = json.loads(cal.shipped_profile_path(H100).read_text())
    monkeypatch.setattr(cal, "shipped_profile_path", lambda gpu: tmp_path / f"{gpu}.json")
    (tmp_path / f"{H100}.json").write_text(json.dumps(shipped))
    path = CL.write_profile_section(res, 2, recs, ["x.jsonl"])
    prof = cal.load_profile_file(path, H100)
    assert prof.classes == cal.profile_from_dict(shipped).classes  # only collective_launch was added
    assert prof.collective_launch[cal.CollectiveLaunch.GRAPH][cal.OpClass.ALL_REDUCE].latency_s > 0
    # the fit of one method must not see the other's points
    mixed = CL.fit([{**r, "launch": "graph"} for r in recs], H100)["methods"]["graph"]["world_2"]
    assert mixed["errors"]["all"]["fitted"]["median_ape"] > g["errors"]["all"]["fitted"]["median_ape"]


def test_plan_layouts_and_rows():
    cap = 80e9
    assert {lay.label for _, lay in EP.layouts(8)} == {"tp2", "tp4", "tp8", "pp2", "ep2", "ep4"}
    plans = EP.plan(2, H100, cap, "dry")
    assert {p.layout.label for p in plans} == {"tp2", "pp2", "ep2"}
    for p in plans:
        for r in p.rows:
            if p.layout.pp > 1 and r.phase == "decode" and r.batch > 1:
                assert r.skip_reason and "batch 1" in r.skip_reason
            elif not r.skip_reason:
                assert r.predicted_s > 0 and r.prediction.endswith(p.layout.label)
    tp2 = next(p for p in plans if p.layout.label == "tp2")
    part = EP.shard(tp2.spec, tp2.layout)
    assert part.q_heads * 2 == tp2.spec.q_heads and part.intermediate * 2 == tp2.spec.intermediate
    with pytest.raises(EP.UsageError):
        EP.shard(tp2.spec, EP.Layout(tp=3))


@pytest.mark.timeout(150)
def test_e2e_parallel_dry_run(tmp_path):
    rc = EP.run(tmp_path, 2, H100, 4 * 2**30, "dry", None, 120, True, only="")
    assert rc == 0
    recs = read_jsonl(tmp_path / "e2e_parallel_cpu.jsonl")
    ok = [r for r in recs if r["status"] == "ok"]
    assert {(r["config_label"], r["phase"]) for r in ok} == {
        ("tp2", "prefill"),
        ("tp2", "decode"),
        ("pp2", "prefill"),
        ("ep2", "prefill"),
        ("ep2", "decode"),
    }
    assert any(r["status"] == "skipped" and r["config_label"] == "pp2" for r in recs)
    for r in ok:
        assert r["measured_s"] > 0 and r["predicted_s"] > 0 and r["world"] == 2 and r["dry_run"]
        assert r["error"] == pytest.approx(r["predicted_s"] / r["measured_s"] - 1.0)
    assert json.loads((tmp_path / "e2e_parallel_failures.json").read_text()) == []
    from perfmodel.validation.e2e import score

    assert {s["phase"] for s in score(recs)} == {
        "tp2 prefill",
        "tp2 decode",
        "pp2 prefill",
        "ep2 prefill",
        "ep2 decode",
    }
