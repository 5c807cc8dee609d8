"""Hardware data files and their loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from perfmodel import hw
from perfmodel.hw import Cluster, Dtype, HardwareError, LinkKind, Node, UnknownHardwareError
from perfmodel.hw.loader import _GPU_NUMERIC, GPU_DIR, SYSTEM_DIR

SHIPPED = [
    "a100-sxm-40gb",
    "a100-sxm-80gb",
    "a100-pcie-80gb",
    "h100-sxm-80gb",
    "h100-pcie-80gb",
    "h200-sxm-141gb",
    "b200",
    "gb200",
    "l40s",
    "mi300x",
    "mi325x",
    "gaudi3",
]
GiB = 2**30
MiB = 2**20


def test_every_required_gpu_is_shipped():
    assert set(SHIPPED) <= set(hw.list_gpus())


@pytest.mark.parametrize("name", hw.list_gpus())
def test_gpu_loads_with_positive_rates(name):
    g = hw.load_gpu(name)
    assert g.name == name
    assert g.flops_for(Dtype.BF16) > 0
    assert g.flops_for("fp8") > 0  # a native or fallback rate exists
    assert g.hbm_bytes_per_s > 0
    assert g.pcie_bytes_per_s_per_direction > 0
    assert 0 < g.hbm_usable_bytes <= g.hbm_bytes
    assert g.sm_count > 0 and g.boost_clock_hz > 0


@pytest.mark.parametrize("name", hw.list_gpus())
def test_gpu_file_sources_every_field(name):
    data = yaml.safe_load((GPU_DIR / f"{name}.yaml").read_text())
    covered = {f for s in data["sources"] for f in s["fields"]}
    # latencies are sourced too, although the loader does not insist on it
    assert set(_GPU_NUMERIC) | {"peak_flops"} <= covered
    assert all(len(s["source"]) > 20 for s in data["sources"])


def test_capacity_is_binary_gigabytes():
    assert hw.load_gpu("a100-sxm-80gb").hbm_bytes == 85_899_345_920
    assert hw.load_gpu("h100-sxm-80gb").hbm_bytes == 80 * GiB
    assert hw.load_gpu("a100-sxm-40gb").hbm_bytes == 40 * GiB


def test_usable_bytes_from_nvidia_smi_readings():
    assert hw.load_gpu("h100-sxm-80gb").hbm_usable_bytes == 81559 * MiB
    assert hw.load_gpu("h200-sxm-141gb").hbm_usable_bytes == 143771 * MiB


def test_dense_not_sparse_peaks():
    h100 = hw.load_gpu("h100-sxm-80gb")
    assert h100.flops_for("bf16") == pytest.approx(989.4e12)
    assert h100.flops_for("fp8") == pytest.approx(2 * h100.flops_for("bf16"), rel=1e-3)
    assert hw.load_gpu("h100-pcie-80gb").flops_for("bf16") == pytest.approx(756e12)
    assert hw.load_gpu("a100").flops_for("bf16") == pytest.approx(312e12)


def test_fabric_per_direction_and_none_for_l40s():
    assert hw.load_gpu("h100").nvlink_bytes_per_s_per_direction == pytest.approx(450e9)
    assert hw.load_gpu("a100").nvlink_bytes_per_s_per_direction == pytest.approx(300e9)
    l40s = hw.load_gpu("l40s")
    assert l40s.nvlink_bytes_per_s_per_direction == 0
    assert l40s.fabric_kind is LinkKind.PCIE


def test_a100_has_no_fp8_and_falls_back():
    a100 = hw.load_gpu("a100")
    assert Dtype.FP8 not in a100.peak_flops
    assert a100.flops_for("fp8") == a100.flops_for("fp16")


@pytest.mark.parametrize(
    "alias,canonical",
    [
        ("a100", "a100-sxm-80gb"),
        ("a100-40gb", "a100-sxm-40gb"),
        ("h100", "h100-sxm-80gb"),
        ("h100-pcie", "h100-pcie-80gb"),
        ("H200", "h200-sxm-141gb"),
        ("b200", "b200"),
        ("gb200", "gb200"),
        ("l40s", "l40s"),
        ("mi300x", "mi300x"),
        ("mi325x", "mi325x"),
        ("gaudi3", "gaudi3"),
    ],
)
def test_alias_resolves(alias, canonical):
    assert hw.resolve_gpu_name(alias) == canonical
    assert hw.load_gpu(alias).name == canonical


def test_every_alias_points_at_a_shipped_file():
    known = set(hw.list_gpus())
    for alias, target in hw.list_aliases().items():
        assert target in known, alias


def test_unknown_gpu_lists_known_names():
    with pytest.raises(UnknownHardwareError) as info:
        hw.load_gpu("tpu-v9")
    msg = str(info.value)
    assert "tpu-v9" in msg and "h100-sxm-80gb" in msg and "mi300x" in msg
    assert isinstance(info.value, ValueError)


def _good_dict() -> dict:
    return yaml.safe_load((GPU_DIR / "h100-sxm-80gb.yaml").read_text())


def _write(tmp_path: Path, data, name="my-gpu.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_user_yaml_path_works(tmp_path):
    data = _good_dict()
    data["name"] = "my-h100"
    data["hbm_bytes_per_s"] = 3.0e12
    p = _write(tmp_path, data)
    g = hw.load_gpu(str(p))
    assert g.name == "my-h100" and g.hbm_bytes_per_s == 3.0e12
    assert hw.load_gpu(p).name == "my-h100"


def test_malformed_yaml_names_the_file(tmp_path):
    p = _write(tmp_path, "name: x\npeak_flops: {bf16: [1, 2\n", "broken.yaml")
    with pytest.raises(HardwareError, match="broken.yaml"):
        hw.load_gpu(str(p))


def test_missing_source_names_file_and_field(tmp_path):
    data = _good_dict()
    data["sources"] = [s for s in data["sources"] if "hbm_usable_bytes" not in s["fields"]]
    p = _write(tmp_path, data, "nosource.yaml")
    with pytest.raises(HardwareError, match=r"nosource\.yaml.*hbm_usable_bytes"):
        hw.load_gpu(str(p))


def test_no_sources_at_all(tmp_path):
    data = _good_dict()
    del data["sources"]
    with pytest.raises(HardwareError, match="sources"):
        hw.load_gpu(str(_write(tmp_path, data, "nosrc.yaml")))


@pytest.mark.parametrize(
    "field,value",
    [
        ("hbm_bytes", -1),
        ("hbm_bytes_per_s", "fast"),
        ("sm_count", 1.5),
        ("hbm_bytes_per_s", float("nan")),
        ("hbm_usable_bytes", 10**15),
        ("fabric_kind", "carrier-pigeon"),
    ],
)
def test_bad_field_values(tmp_path, field, value):
    data = _good_dict()
    data[field] = value
    with pytest.raises(HardwareError, match="bad.yaml"):
        hw.load_gpu(str(_write(tmp_path, data, "bad.yaml")))


def test_missing_field_and_unknown_dtype(tmp_path):
    data = _good_dict()
    del data["l2_bytes"]
    with pytest.raises(HardwareError, match="l2_bytes"):
        hw.load_gpu(str(_write(tmp_path, data, "a.yaml")))
    data = _good_dict()
    data["peak_flops"]["fp3"] = 1e15
    with pytest.raises(HardwareError, match="fp3"):
        hw.load_gpu(str(_write(tmp_path, data, "b.yaml")))


def test_missing_file_is_hardware_error(tmp_path):
    with pytest.raises(HardwareError, match="not found"):
        hw.load_gpu(str(tmp_path / "nope.yaml"))


# ---- systems -------------------------------------------------------------

REQUIRED_SYSTEMS = [
    "dgx-a100",
    "dgx-h100",
    "hgx-h200",
    "h200-x2",
    "h200-x4",
    "pcie-l40s-x4",
    "mi300x-8",
    "dgx-h100-x4",
]


def test_required_systems_shipped():
    assert set(REQUIRED_SYSTEMS) <= set(hw.list_systems())


@pytest.mark.parametrize("name", hw.list_systems())
def test_system_loads(name):
    s = hw.load_system(name)
    node = s.node if isinstance(s, Cluster) else s
    assert isinstance(node, Node)
    assert node.gpus_per_node >= 1
    assert node.host_link.bytes_per_s_per_direction > 0
    assert node.host_ddr_bytes > 0 and node.host_ddr_bytes_per_s > 0
    assert node.sources
    if isinstance(s, Cluster):
        assert s.inter_node.kind is LinkKind.INFINIBAND
        assert s.inter_node.bytes_per_s_per_direction > 0
        assert s.world_size == s.num_nodes * node.gpus_per_node


def test_system_shapes():
    dgx = hw.load_system("dgx-h100")
    assert dgx.gpus_per_node == 8 and dgx.intra_node.kind is LinkKind.NVSWITCH
    assert dgx.intra_node.bytes_per_s_per_direction == pytest.approx(450e9)
    assert hw.load_system("h200-x4").gpus_per_node == 4
    assert hw.load_system("h200-x2").host_ddr_bytes == 256 * GiB
    pcie = hw.load_system("pcie-l40s-x4")
    assert pcie.intra_node.kind is LinkKind.PCIE
    assert hw.load_system("mi300x-8").intra_node.kind is LinkKind.INFINITY_FABRIC
    cl = hw.load_system("dgx-h100-x4")
    assert cl.world_size == 32 and cl.inter_node.bytes_per_s_per_direction == pytest.approx(50e9)


def test_unknown_system_lists_known():
    with pytest.raises(UnknownHardwareError, match="dgx-h100"):
        hw.load_system("dgx-z9000")


def _node_dict() -> dict:
    return yaml.safe_load((SYSTEM_DIR / "dgx-h100.yaml").read_text())


def test_user_system_file_and_cluster_of_it(tmp_path):
    node = _node_dict()
    node["gpus_per_node"] = 4
    np_ = _write(tmp_path, node, "mynode.yaml")
    n = hw.load_system(str(np_))
    assert n.gpus_per_node == 4
    cl = {
        "kind": "cluster",
        "node": str(np_),
        "num_nodes": 3,
        "inter_node": {"kind": "infiniband", "bytes_per_s_per_direction": 25e9, "latency_s": 5e-6},
        "sources": [{"fields": ["num_nodes", "inter_node.bytes_per_s_per_direction"], "source": "test"}],
    }
    c = hw.load_system(str(_write(tmp_path, cl, "mycl.yaml")))
    assert c.world_size == 12


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.pop("gpu"), "gpu"),
        (lambda d: d.update(gpus_per_node=0), "gpus_per_node"),
        (lambda d: d.update(kind="rack"), "kind"),
        (lambda d: d.pop("sources"), "sources"),
        (lambda d: d["intra_node"].update(kind="smoke-signal"), "intra_node"),
        (lambda d: d.update(gpu="no-such-gpu"), "no-such-gpu"),
    ],
)
def test_bad_system_file(tmp_path, mutate, match):
    d = _node_dict()
    mutate(d)
    with pytest.raises(HardwareError, match=match):
        hw.load_system(str(_write(tmp_path, d, "badnode.yaml")))


@pytest.mark.parametrize("name", hw.list_gpus())
def test_every_math_format_resolves_at_load_time(name):
    g = hw.load_gpu(name)
    for dt in Dtype:
        assert g.flops_for(dt) > 0
    assert g.architecture  # what perfmodel.transfer matches


def test_a_gpu_without_an_fp32_figure_is_refused_at_load_time(tmp_path):
    data = yaml.safe_load((GPU_DIR / "h100-sxm-80gb.yaml").read_text())
    data["peak_flops"] = {"bf16": 1e15}
    with pytest.raises(HardwareError, match=r"peak_flops\.fp32"):
        hw.loader.gpu_from_dict(data, tmp_path / "x.yaml")
