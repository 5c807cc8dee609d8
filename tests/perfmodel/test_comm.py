"""Topology-aware collectives: volume factors, paths, hierarchy, calibration against the NCCL data, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel.hw import UnknownHardwareError, load_gpu
from perfmodel.calibration import Mode, OpClass, Profile, peak_profile, resolve_profile
from perfmodel.comm import CommTopologyError, GroupTooLargeError, place, resolve_topology
from perfmodel.costs.collectives import AllReduceAlgorithm, bandwidth_only_time, collective_time
from perfmodel.costs import Bound, op_cost
from perfmodel.ops import Collective, OpKind, op_from_dict

H200 = load_gpu("h200-sxm-141gb")
PEAK = peak_profile(H200)
# calibrated mode with nothing fitted: datasheet bandwidths and the links' latencies from hw/
DATASHEET = Profile(gpu=H200.name, mode=Mode.CALIBRATED)
DATA = Path(__file__).resolve().parents[2] / "validation" / "data" / "collectives_h200x2.jsonl"
GB = 1e9


def t(kind, nbytes, world, topology=None, prof=DATASHEET, **kw):
    return float(collective_time(kind, nbytes, world, H200, prof, topology, **kw).total_s)


@pytest.mark.parametrize(
    "kind,factor,steps",
    [
        (OpKind.ALL_REDUCE, 2 * 3 / 4, 6),
        (OpKind.ALL_GATHER, 3 / 4, 3),
        (OpKind.REDUCE_SCATTER, 3 / 4, 3),
        (OpKind.ALL_TO_ALL, 3 / 4, 3),
        (OpKind.SEND_RECV, 1.0, 1),
    ],
)
def test_volume_factor_and_steps_on_one_nvlink_node(kind, factor, steps):
    b = 1 << 30
    c = collective_time(kind, b, 4, H200, DATASHEET, algorithm=AllReduceAlgorithm.RING)
    assert c.comm_s == pytest.approx(factor * b / 450e9)
    assert c.latency_s == pytest.approx(steps * H200.fabric_latency_s)
    assert c.memory_bound is Bound.INTERCONNECT
    peak = collective_time(kind, b, 4, H200, PEAK, algorithm=AllReduceAlgorithm.RING)
    assert peak.comm_s == pytest.approx(c.comm_s)
    assert peak.latency_s == 0.0  # the theoretical-peak mode has no latencies


def test_world_one_costs_nothing():
    assert t(OpKind.ALL_REDUCE, 1 << 20, 1) == 0.0


def test_tree_has_fewer_steps_and_auto_picks_the_faster():
    small, big = 4096, 1 << 30
    ring_s = t(OpKind.ALL_REDUCE, small, 8, algorithm="ring")
    tree_s = t(OpKind.ALL_REDUCE, small, 8, algorithm="tree")
    assert tree_s < ring_s
    assert t(OpKind.ALL_REDUCE, small, 8) == pytest.approx(tree_s)
    assert t(OpKind.ALL_REDUCE, big, 8) == pytest.approx(t(OpKind.ALL_REDUCE, big, 8, algorithm="ring"))


def test_pcie_node_without_nvlink_uses_the_pcie_path():
    l40s = load_gpu("l40s")
    c = collective_time(OpKind.ALL_REDUCE, 1 << 30, 4, l40s, peak_profile(l40s), "pcie-l40s-x4")
    assert c.memory_bound is Bound.PCIE
    assert c.comm_s == pytest.approx(1.5 * (1 << 30) / 32e9)
    # the default topology of a GPU without NVLink is its PCIe link too
    d = collective_time(OpKind.ALL_REDUCE, 1 << 30, 4, l40s, peak_profile(l40s))
    assert d.memory_bound is Bound.PCIE


def test_hierarchical_all_reduce_over_two_nodes():
    b = 1 << 30
    two = collective_time(OpKind.ALL_REDUCE, b, 16, H200, PEAK, "hgx-h200-x2", algorithm="ring")
    # intra reduce-scatter + all-gather of b over 8 GPUs, then a ring all-reduce of b/8 over 2 nodes' NICs
    want = 2 * (7 / 8) * b / 450e9 + (b / 8) / 50e9
    assert two.comm_s == pytest.approx(want)
    assert float(two.total_s) > t(OpKind.ALL_REDUCE, b, 8, "hgx-h200")


def test_strided_group_spans_nodes():
    topo = resolve_topology("hgx-h200-x2", H200, 16)
    assert place(topo, 8).nodes == 1
    pl = place(topo, 8, stride=2)
    assert (pl.per_node, pl.nodes) == (4, 2)
    # a ring of sends that crosses nodes goes at NIC speed
    cross = collective_time(OpKind.SEND_RECV, 1 << 28, 8, H200, PEAK, "hgx-h200-x2", stride=2)
    assert cross.comm_s == pytest.approx((1 << 28) / 50e9)


@pytest.mark.parametrize(
    "world,topology,err",
    [
        (5, "h200-x4", GroupTooLargeError),
        (32, "hgx-h200-x2", GroupTooLargeError),
        (12, "hgx-h200-x2", CommTopologyError),
        (0, None, CommTopologyError),
        (2, "dgx-h100", CommTopologyError),
        (2, "no-such-system", UnknownHardwareError),
    ],
)
def test_bad_groups_raise_value_errors_naming_the_value(world, topology, err):
    with pytest.raises(err) as exc:
        collective_time(OpKind.ALL_REDUCE, 1 << 20, world, H200, PEAK, topology)
    assert isinstance(exc.value, ValueError)
    assert str(world) in str(exc.value) or (topology or "") in str(exc.value)


def test_op_descriptor_with_topology_is_priced_through_op_cost():
    op = op_from_dict({"op": "all_gather", "bytes": 1 << 26, "world": 16, "topology": "hgx-h200-x2"})
    assert isinstance(op, Collective)
    c = op_cost(op, H200, PEAK)
    assert float(c.total_s) == pytest.approx(t(OpKind.ALL_GATHER, 1 << 26, 16, "hgx-h200-x2", prof=PEAK))
    assert float(c.total_s) > t(OpKind.ALL_GATHER, 1 << 26, 8)


def test_calibrated_profile_meets_the_targets_on_the_measured_data():
    """The shipped H200 collective classes against the NCCL measurements (64 KiB .. 1 GiB, 2 GPUs)."""
    prof = resolve_profile(H200, "calibrated")
    rows = [json.loads(x) for x in DATA.read_text().splitlines()]
    rows = [r for r in rows if 64 * 1024 <= r["bytes"] <= 2**30]
    pred = np.array([t(OpKind(r["op"]), r["bytes"], r["world"], prof=prof) for r in rows])
    base = np.array([float(bandwidth_only_time(OpKind(r["op"]), r["bytes"], r["world"], H200)) for r in rows])
    meas = np.array([r["time_s"] for r in rows])
    ape = np.abs(pred - meas) / meas
    assert len(rows) >= 100
    assert np.median(ape) < 0.10 and np.percentile(ape, 90) < 0.25
    assert np.median(np.abs(base - meas) / meas) > 0.5  # the datasheet-only model is far off


def test_calibration_applies_only_to_nvlink_paths():
    prof = resolve_profile(H200, "calibrated")
    b = 1 << 30
    cal = collective_time(OpKind.ALL_REDUCE, b, 16, H200, prof, "hgx-h200-x2", algorithm="ring")
    peak = collective_time(OpKind.ALL_REDUCE, b, 16, H200, PEAK, "hgx-h200-x2", algorithm="ring")
    nic = (b / 8) / 50e9
    assert cal.comm_s - nic > peak.comm_s - nic  # intra-node part slowed by the measured efficiency

    def intra(cls):  # bytes up to the knee at memory_eff, the rest at tail_memory_eff of 450 GB/s
        p = prof.params(cls)
        k = p.knee_bytes if p.knee_bytes > 0 else b
        return (7 / 8) * (
            min(b, k) / (450e9 * p.memory_eff) + max(b - k, 0) / (450e9 * (p.tail_memory_eff or p.memory_eff))
        )

    assert cal.comm_s - nic == pytest.approx(intra(OpClass.REDUCE_SCATTER) + intra(OpClass.ALL_GATHER))


def test_knee_raises_the_marginal_bandwidth_and_peak_ignores_it():
    prof = resolve_profile(H200, "calibrated")
    p = prof.params(OpClass.REDUCE_SCATTER)
    assert p.knee_bytes > 0 and p.tail_memory_eff > p.memory_eff  # fitted on the NCCL data
    k = p.knee_bytes
    below = t(OpKind.REDUCE_SCATTER, k, 2, prof=prof) - t(OpKind.REDUCE_SCATTER, k / 2, 2, prof=prof)
    above = t(OpKind.REDUCE_SCATTER, 1.5 * k, 2, prof=prof) - t(OpKind.REDUCE_SCATTER, k, 2, prof=prof)
    assert above < below  # the same k / 2 bytes cost less beyond the knee
    assert t(OpKind.REDUCE_SCATTER, 1 << 30, 2, prof=PEAK) == pytest.approx(0.5 * 2**30 / 450e9)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(list(OpKind)[5:]),
    st.integers(1, 2**31),
    st.integers(1, 2**31),
    st.sampled_from([2, 4, 8]),
)
def test_time_grows_with_bytes(kind, a, b, world):
    lo, hi = sorted((a, b))
    for prof in (PEAK, resolve_profile(H200, "calibrated")):
        assert t(kind, lo, world, prof=prof) <= t(kind, hi, world, prof=prof) + 1e-15


def test_array_bytes_broadcast():
    b = np.array([1 << 16, 1 << 24, 1 << 30])
    c = collective_time(OpKind.ALL_REDUCE, b, 8, H200, PEAK)
    assert np.shape(c.total_s) == (3,)
    assert np.all(np.diff(c.total_s) > 0)
