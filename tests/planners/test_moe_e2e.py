"""Baselines as placement files (``--moe-placement plan.json:NAME``) and the end-to-end table of docs/planners.md."""

import json

import numpy as np
import pytest

import perfmodel
from perfmodel.comm import resolve_topology
from perfmodel.ep_route import (
    as_moe_placement,
    plan_traffic,
    split_plan_path,
    synthetic_transitions,
    traffic_matrix,
)
from perfmodel.errors import InvalidInputError
from perfmodel.planners import moe_baselines as mb
from perfmodel.planners import moe_e2e
from perfmodel.planners.synthetic import zipf_loads
from tests.conftest import run_perfmodel


@pytest.fixture(scope="module")
def plan_files(tmp_path_factory):
    """``plan moe --json`` for Mixtral's 32 MoE layers x 8 experts on 4 GPUs in 2 nodes: even token sources
    and synthetic affinity 0.5."""
    d = tmp_path_factory.mktemp("plans")
    loads = zipf_loads(8, 32, 1.2, tokens=4000, top_k=2, seed=3)
    (d / "loads.json").write_text(json.dumps({"loads": loads.tolist()}))
    out = {}
    for key, extra in (("even", ()), ("affinity", ("--synthetic-affinity", "0.5"))):
        r = run_perfmodel(
            "plan",
            "moe",
            "--loads",
            d / "loads.json",
            "--gpus",
            "4",
            "--slots-per-gpu",
            "3",
            "--nodes",
            "2",
            "--hidden",
            "4096",
            "--time-limit",
            "2",
            "--json",
            *extra,
        )
        assert r.returncode == 0, r.stderr
        (d / f"{key}.json").write_text(r.stdout)
        out[key] = d / f"{key}.json"
    return loads, out


def test_baselines_carry_their_placements_loads_and_traffic(plan_files):
    loads, files = plan_files
    even, aff = (json.loads(files[k].read_text()) for k in ("even", "affinity"))
    for name in ("contiguous", "round_robin", "greedy_lpt", "eplb_hierarchical", "greedy_replicated"):
        for data in (even, aff):
            layers = data["baselines"][name]["layers"]
            assert len(layers) == 32
            for l, layer in enumerate(layers):
                want = mb.baselines(loads[l], 4, 3, 2)[name]
                assert [tuple(g) for g in layer["placement"]] == list(want)
                assert layer["loads"] == pytest.approx(loads[l].tolist())
        # even sources: no traffic stored, and the plan's stored traffic is what analyze derives itself
        assert not any("traffic" in layer for layer in even["baselines"][name]["layers"])
        # with affinity: the baseline's own traffic under the same token sources
        chosen = [tuple(tuple(g) for g in layer["placement"]) for layer in aff["baselines"][name]["layers"]]
        want = plan_traffic(chosen, loads, synthetic_transitions(loads, 0.5))
        for layer, t in zip(aff["baselines"][name]["layers"], want):
            assert np.allclose(layer["traffic"], t, atol=1e-5)
    for layer, w in zip(even["layers"], loads):
        assert np.allclose(layer["traffic"], traffic_matrix(layer["placement"], w), atol=1e-5)


def test_placement_file_names_a_baseline(plan_files):
    _, files = plan_files
    path = files["affinity"]
    assert split_plan_path(f"{path}:contiguous") == (path, "contiguous")
    assert split_plan_path(path) == (path, None)
    assert split_plan_path(f"{path}:plan") == (path, None)
    contig = as_moe_placement(f"{path}:contiguous")
    assert all(layer == mb.contiguous(8, 4) for layer in contig.layers)
    assert contig.traffic is not None and contig.loads is not None
    plan, same = as_moe_placement(str(path)), as_moe_placement(f"{path}:plan")
    assert (plan.layers, plan.loads, plan.traffic) == (same.layers, same.loads, same.traffic)
    kw = dict(context_len=8192, output_tokens=64, batch=8, ep=4)
    a = {
        n: perfmodel.analyze("mixtral-8x7b", "h100", moe_placement=f"{path}:{n}", **kw).to_dict()
        for n in ("plan", "contiguous")
    }
    b = perfmodel.analyze("mixtral-8x7b", "h100", moe_placement=contig, **kw).to_dict()
    assert a["contiguous"]["prefill_s"] == b["prefill_s"] and a["plan"]["prefill_s"] != b["prefill_s"]
    with pytest.raises(InvalidInputError, match="no baseline 'nope'.*contiguous"):
        as_moe_placement(f"{path}:nope")
    r = run_perfmodel(
        "analyze",
        "--model",
        "mixtral-8x7b",
        "--gpu",
        "h100",
        "--ep",
        "4",
        "--moe-placement",
        f"{path}:nope",
        "--json",
    )
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "eplb_hierarchical" in r.stderr
    old = json.loads(path.read_text())
    for layer in old["baselines"]["contiguous"]["layers"]:
        del layer["placement"]
    stale = path.parent / "stale.json"
    stale.write_text(json.dumps(old))
    with pytest.raises(InvalidInputError, match="lists no placements"):
        as_moe_placement(f"{stale}:contiguous")


def test_docs_table_is_current():
    """The stored plans of docs/planners-moe-e2e.json price to the stored numbers (analyze and simulate, in
    process), the plan loads no GPU more than any baseline, and docs/planners.md shows their rendering."""
    data = moe_e2e.load_data()
    assert set(data) == {s.key for s in moe_e2e.SETTINGS}
    failures = []
    for s in moe_e2e.SETTINGS:
        # simulate takes no topology: its EP group sits on the smallest shipped system that holds it
        assert resolve_topology(None, perfmodel.load_gpu(s.gpu), s.gpus).name == s.system
        entry = data[s.key]
        out = moe_e2e.plan_output(s, entry["placements"])
        for layer in out["layers"]:
            mb.check_placement(
                tuple(tuple(g) for g in layer["placement"]), len(layer["loads"]), s.slots_per_gpu
            )
        for name in moe_e2e.BASELINES:
            assert out["total"]["max_gpu_load"] <= out["baselines"][name]["total"]["max_gpu_load"] * (
                1 + 1e-9
            )
        got = {name: moe_e2e.price(s, out, name) for name in moe_e2e.PLACEMENTS}
        diff = moe_e2e.max_rel_diff(got, entry["numbers"])
        if diff > 1e-6:
            failures.append(f"{s.key}: numbers differ by {diff:.2e}")
    assert not failures, "; ".join(failures) + " (python benchmarks/planners.py --only moe-e2e --write)"
    assert moe_e2e.render(data) in moe_e2e.DOC_MD.read_text(), (
        "docs/planners.md is stale: python benchmarks/planners.py --only moe-e2e --write"
    )
