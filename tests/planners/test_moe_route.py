"""All-to-all time of an expert placement, priced from its GPU-to-GPU traffic matrix."""

import json

import numpy as np
import pytest

from perfmodel.calibration import resolve_profile
from perfmodel.comm import Topology, topology_from_system
from perfmodel.costs.collectives import collective_time
from perfmodel.ep_route import (
    busiest_gpu_bound_s,
    layer_route_time,
    read_placement,
    route_time,
    traffic_matrix,
)
from perfmodel.errors import InvalidInputError
from perfmodel.ops import OpKind
from perfmodel.hw.loader import load_gpu, load_system
from perfmodel.planners.synthetic import zipf_loads
from tests.conftest import run_perfmodel

BYTES = 7168 * 2


@pytest.fixture(scope="module")
def links():
    base = topology_from_system(load_system("dgx-h100-x4"))
    topo = Topology("2 x 4", base.gpu_name, 4, 2, base.intra, base.inter)
    gpu = load_gpu(base.gpu_name)
    return topo, resolve_profile(gpu), gpu


def test_traffic_matrix_splits_replicas_evenly():
    t = traffic_matrix([[0, 1], [1, 2]], [4.0, 2.0, 6.0])
    assert t.shape == (2, 2) and np.allclose(t.sum(), 12.0)
    # expert 1's copies go half to each GPU; every source sends the same share
    assert np.allclose(t[0], [(4 + 1) / 2, (1 + 6) / 2])
    with pytest.raises(InvalidInputError):
        traffic_matrix([[0], [1]], [1.0, 1.0, 1.0])  # expert 2 not placed


def test_traffic_kept_inside_nodes_is_faster(links):
    """Same per-GPU loads (every GPU receives the same bytes); one pattern stays in nodes, the other crosses."""
    topo, prof, _ = links
    b = 64e6
    inside = np.zeros((8, 8))
    across = np.zeros((8, 8))
    for s in range(8):
        inside[s, (s // 4) * 4 + (s + 1) % 4] = b  # a peer in the same node
        across[s, (s + 4) % 8] = b  # the same GPU of the other node
    t_in, t_out = route_time(inside, topo, prof), route_time(across, topo, prof)
    assert t_in.inter_bytes == 0 and t_out.intra_bytes == 0
    assert t_in.seconds < t_out.seconds


def test_priced_time_at_least_busiest_gpu_bound(links):
    topo, prof, _ = links
    loads = zipf_loads(16, 3, 1.2, tokens=8192, top_k=4, seed=3)
    contiguous = [list(range(2 * g, 2 * g + 2)) for g in range(8)]
    for w in loads:
        rt = layer_route_time(contiguous, w, BYTES, topo, prof)
        t = traffic_matrix(contiguous, w) * BYTES
        assert rt.seconds >= busiest_gpu_bound_s(t, topo, prof) == rt.bound_s > 0


def test_uniform_matches_collective_time_across_nodes(links):
    """Uniform loads, contiguous experts over nodes: the NIC dominates, as in the hierarchical all-to-all."""
    topo, prof, gpu = links
    w = np.full(16, 4096.0)
    contiguous = [list(range(2 * g, 2 * g + 2)) for g in range(8)]
    rt = layer_route_time(contiguous, w, BYTES, topo, prof)
    ref = collective_time(OpKind.ALL_TO_ALL, w.sum() / 8 * BYTES, 8, gpu, prof, topo)
    assert rt.seconds == pytest.approx(ref.total_s, rel=0.02)


def test_plan_moe_json_reports_all_to_all(tmp_path):
    loads = zipf_loads(8, 2, 1.0, tokens=4000, top_k=2, seed=1)
    (tmp_path / "loads.json").write_text(json.dumps({"loads": loads.tolist()}))
    r = run_perfmodel(
        "plan",
        "moe",
        "--loads",
        tmp_path / "loads.json",
        "--gpus",
        "4",
        "--slots-per-gpu",
        "3",
        "--nodes",
        "2",
        "--time-limit",
        "5",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for layer in out["layers"]:
        assert layer["all_to_all_s"] >= layer["all_to_all_bound_s"] > 0
    assert out["total"]["all_to_all_s"] == pytest.approx(sum(l["all_to_all_s"] for l in out["layers"]))
    for name in ("contiguous", "eplb_hierarchical"):
        b = out["baselines"][name]
        assert b["total"]["all_to_all_s"] > 0 and all("all_to_all_s" in l for l in b["layers"])
    assert out["all_to_all"]["nodes"] == 2 and out["all_to_all"]["bytes_per_token"] == BYTES
    (tmp_path / "plan.json").write_text(r.stdout)
    placement = read_placement(tmp_path / "plan.json")
    assert len(placement) == 2 and len(placement[0]) == 4
