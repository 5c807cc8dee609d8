"""Every shipped GPU prices in both modes; transferred profiles and their provenance."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest

import perfmodel
from perfmodel.hw.loader import list_gpus, load_gpu
from perfmodel import transfer
from perfmodel.analyze import analyze
from perfmodel.calibration import (
    Mode,
    OpClass,
    Profile,
    load_profile_file,
    resolve_profile,
    shipped_profile_path,
)
from perfmodel.costs.copies import CopyParams
from perfmodel.costs.elementwise import ElementwiseParams
from perfmodel.costs.gemm import GemmParams
from perfmodel.sweep import sweep

OPS = [
    {"op": "gemm", "m": 4096, "n": 4096, "k": 4096, "dtype": "bf16"},
    {"op": "gemm", "m": 8, "n": 1000, "k": 3000, "dtype": "fp8"},
    {
        "op": "attention",
        "phase": "prefill",
        "batch": 1,
        "q_len": 4096,
        "kv_len": 4096,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "causal": True,
        "dtype": "bf16",
    },
    {
        "op": "attention",
        "phase": "decode",
        "batch": 16,
        "q_len": 1,
        "kv_len": 8192,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "causal": True,
        "dtype": "bf16",
    },
    {"op": "grouped_gemm", "groups": 8, "m": 128, "n": 1536, "k": 2048, "dtype": "bf16"},
    {"op": "memcpy", "bytes": 1 << 26, "src": "device", "dst": "host_pinned"},
    {"op": "memcpy", "bytes": 1 << 20, "src": "host_pageable", "dst": "device"},
    {"op": "memcpy", "bytes": 1 << 24, "src": "device", "dst": "device"},
    {"op": "elementwise", "name": "rmsnorm", "bytes": 1 << 22, "flops": 1 << 21},
    {"op": "all_reduce", "bytes": 1 << 24, "world": 8, "dtype": "bf16"},
    {
        "op": "decoder_layer",
        "phase": "decode",
        "batch": 8,
        "q_len": 1,
        "kv_len": 4096,
        "hidden": 4096,
        "intermediate": 14336,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "mlp": "gated_silu",
        "dtype": "bf16",
        "attention_impl": "flash2",
    },  # a layer names its impl (default sdpa), which the H200 has not measured
]


def _finite_positive(x) -> bool:
    x = np.asarray(x, dtype=np.float64)
    return bool(np.all(np.isfinite(x)) and np.all(x > 0))


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
@pytest.mark.parametrize("gpu", list_gpus())
def test_every_shipped_gpu_prices_every_op_kind(gpu, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: every GPU has a profile (own or transferred)
        for op in OPS:
            t = perfmodel.predict(op, gpu, mode=mode)
            assert _finite_positive(t), (gpu, mode, op["op"], t)


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
@pytest.mark.parametrize("gpu", list_gpus())
def test_every_shipped_gpu_analyzes_and_sweeps(gpu, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = analyze("llama-3-8b", gpu, context_len=4000, output_tokens=100, batch=2, tp=2, mode=mode)
        d = a.to_dict()
        for k in ("prefill_s", "decode_s_per_token", "decode_s", "context_switch_s"):
            assert _finite_positive(d[k]), (gpu, mode, k, d[k])
        assert set(d["provenance"]) == {c.value for c in OpClass}
        df = sweep("llama-3-8b", gpu, context_len=[1000, 8000], batch=[1, 4], tp=[1, 2], mode=mode)
    assert len(df) == 8
    for k in ("prefill_s", "decode_s_per_token", "decode_s"):
        assert _finite_positive(df[k].to_numpy()), (gpu, mode, k)
    assert df["provenance"].nunique() == 1 and df["provenance"].iloc[0]
    if mode == "peak":
        assert set(d["provenance"].values()) == {"datasheet"}


def test_provenance_of_measured_transferred_and_other_vendor_gpus():
    h100 = resolve_profile(load_gpu("h100-sxm-80gb"))
    assert h100.provenance_of(OpClass.GEMM) == "measured"
    assert h100.provenance_of(OpClass.ALL_REDUCE) == "transferred from h200-sxm-141gb"
    h200 = resolve_profile(load_gpu("h200-sxm-141gb"))
    assert h200.provenance_of(OpClass.ALL_REDUCE) == "measured"
    assert h200.provenance_of(OpClass.GROUPED_GEMM) == "measured"  # its own grouped records
    a100 = resolve_profile(load_gpu("a100-sxm-80gb"))
    assert a100.transferred_from == "h100-sxm-80gb"
    assert a100.provenance_of(OpClass.ATTENTION_PREFILL) == "transferred from h100-sxm-80gb"
    mi = resolve_profile(load_gpu("mi300x"))
    assert mi.provenance_of(OpClass.GEMM) == "datasheet"
    assert (
        mi.provenance_of(OpClass.ELEMENTWISE) == "transferred from h200-sxm-141gb (family-independent part)"
    )
    assert (
        mi.provenance_of(OpClass.ALL_REDUCE) == "datasheet"
    )  # Infinity Fabric: no measured GPU of that link
    assert resolve_profile(load_gpu("l40s")).provenance_of(OpClass.ALL_REDUCE) == "datasheet"  # PCIe
    assert resolve_profile(load_gpu("h100-sxm-80gb"), Mode.PEAK).provenance_of(OpClass.GEMM) == "datasheet"


def test_measured_profile_takes_the_curves_it_lacks_from_its_source():
    from types import MappingProxyType

    from perfmodel.calibration import measured_profiles
    from perfmodel.ops import AttentionImpl

    h100, h200 = load_gpu("h100-sxm-80gb"), load_gpu("h200-sxm-141gb")
    shipped = load_profile_file(shipped_profile_path(h200), h200)
    assert OpClass.GROUPED_GEMM in shipped.classes and OpClass.ATTENTION_PREFILL in shipped.classes
    # the H200 as it was measured with flash-only SDPA and without grouped records: its gaps are carried
    gone = (OpClass.GROUPED_GEMM, OpClass.ATTENTION_PREFILL, OpClass.ATTENTION_DECODE)
    own = dataclasses.replace(
        shipped,
        classes=MappingProxyType({c: v for c, v in shipped.classes.items() if c not in gone}),
        attention_impl=AttentionImpl.FLASH2,
    )
    p = transfer.with_transferred_gaps(own, h200, measured_profiles())
    src = load_profile_file(shipped_profile_path(h100), h100)
    assert p.attention_impl.value == "sdpa"  # the default impl, carried from the H100
    assert p.provenance_of(OpClass.ATTENTION_PREFILL) == "transferred from h100-sxm-80gb"
    assert p.provenance_of(OpClass.ATTENTION_DECODE) == "transferred from h100-sxm-80gb"
    assert p.provenance_of(OpClass.GROUPED_GEMM) == "transferred from h100-sxm-80gb"
    assert p.classes[OpClass.GROUPED_GEMM] != shipped.classes[OpClass.GROUPED_GEMM]
    # its own flash2 curves stay its own
    f2 = p.with_attention_impl(AttentionImpl.FLASH2)
    assert f2.provenance_of(OpClass.ATTENTION_PREFILL) == "measured"
    assert f2.attention_params(OpClass.ATTENTION_PREFILL) == own.attention_params(OpClass.ATTENTION_PREFILL)
    # named kernels it lacks come along (fractions unchanged), its own stay
    for name in src.elementwise:
        if name not in own.elementwise:
            assert p.elementwise[name].memory_eff == src.elementwise[name].memory_eff
        else:
            assert p.elementwise[name] == own.elementwise[name]
    assert p.classes[OpClass.GEMM] == own.classes[OpClass.GEMM]
    # the shipped H200 keeps its own sdpa and grouped curves
    r = resolve_profile(h200)
    assert r.provenance_of(OpClass.ATTENTION_PREFILL) == r.provenance_of(OpClass.GROUPED_GEMM) == "measured"


def _sdpa_backend_rows(path):
    """(q/kv heads, length, backend, ms) rows of ``validation/data/sdpa_backends_h200.md``."""
    out = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and "/" in cells[0] and cells[1].isdigit():
            out.append((tuple(map(int, cells[0].split("/"))), int(cells[1]), cells[2], float(cells[3])))
    return out


def test_h200_default_sdpa_priced_by_the_carried_and_own_curves_matches_its_measurement():
    from pathlib import Path

    from perfmodel.costs import op_cost
    from perfmodel.ops import Attention, Phase

    gpu = load_gpu("h200-sxm-141gb")
    rows = _sdpa_backend_rows(
        Path(perfmodel.__file__).resolve().parents[1] / "validation/data/sdpa_backends_h200.md"
    )
    assert sum(r[2] == "default" for r in rows) >= 5 and sum(r[2] == "flash" for r in rows) >= 5
    from types import MappingProxyType

    from perfmodel.calibration import measured_profiles
    from perfmodel.ops import AttentionImpl

    # the H100's sdpa curve carried to an H200 profile without sdpa curves of its own
    shipped = load_profile_file(shipped_profile_path(gpu), gpu)
    attn = (OpClass.ATTENTION_PREFILL, OpClass.ATTENTION_DECODE)
    flash_only = dataclasses.replace(
        shipped,
        classes=MappingProxyType({c: v for c, v in shipped.classes.items() if c not in attn}),
        attention_impl=AttentionImpl.FLASH2,
    )
    carried = transfer.with_transferred_gaps(flash_only, gpu, measured_profiles())
    assert carried.provenance_of(OpClass.ATTENTION_PREFILL) == "transferred from h100-sxm-80gb"
    cases = (
        (carried, ("default",), 0.06),  # the carried sdpa curve
        (resolve_profile(gpu, attention_impl="flash2"), ("flash",), 0.06),  # its own flash2 curve
        (resolve_profile(gpu), ("default",), 0.08),  # its own sdpa curve, fitted on causal and decode records
    )
    for prof, backends, rel in cases:
        for (hq, hkv), n, backend, ms in rows:
            if backend in backends:
                t = float(
                    op_cost(Attention(Phase.PREFILL, 1, n, n, hq, hkv, 128, causal=False), gpu, prof).total_s
                )
                assert t * 1e3 == pytest.approx(ms, rel=rel), (backends, hq, hkv, n)


@pytest.mark.parametrize(
    "target,source",
    [
        ("h100-pcie-80gb", "h100-sxm-80gb"),
        ("a100-sxm-80gb", "h100-sxm-80gb"),
        ("a100-sxm-40gb", "h100-sxm-80gb"),
        ("b200", "h200-sxm-141gb"),
        ("gb200", "h200-sxm-141gb"),
        ("l40s", "h100-sxm-80gb"),
        ("mi300x", "h200-sxm-141gb"),
        ("gaudi3", "h100-sxm-80gb"),
        ("h200-sxm-141gb", "h100-sxm-80gb"),
    ],
)
def test_source_choice_rule(target, source):
    measured = [load_gpu("h100-sxm-80gb"), load_gpu("h200-sxm-141gb")]
    assert transfer.choose_source(load_gpu(target), measured).name == source


def test_source_choice_prefers_vendor_then_architecture():
    h100, h200 = load_gpu("h100-sxm-80gb"), load_gpu("h200-sxm-141gb")
    far_amd = dataclasses.replace(load_gpu("mi300x"), hbm_bytes_per_s=h100.hbm_bytes_per_s)
    # an AMD part with the H100's bandwidth is no candidate ahead of an NVIDIA part of the same architecture
    assert transfer.choose_source(load_gpu("h100-pcie-80gb"), [far_amd, h200]).name == h200.name
    assert transfer.choose_source(h100, [h100]) is None


def test_carry_rules_scale_fill_times_and_cache_sizes():
    src, dst = load_gpu("h100-sxm-80gb"), load_gpu("b200")
    kw = dict(
        compute_eff=0.7,
        memory_eff=0.9,
        latency_s=5e-6,
        tile_m=128,
        tile_n=256,
        ramp_bytes=1e6,
        ramp_flops=1e9,
        knee_bytes=3e7,
        cache_bytes=4e6,
        row_knee_bytes=8192.0,
        unit_step_s=1e-7,
    )
    p = lambda kind: kind(
        **{k: v for k, v in kw.items() if k in kind.field_names()}
    )  # the fields of its class
    g = transfer.carry_params(p(GemmParams), OpClass.GEMM, src, dst)
    assert (g.compute_eff, g.memory_eff, g.latency_s, g.tile_m, g.tile_n) == (0.7, 0.9, 5e-6, 128, 256)
    assert g.ramp_bytes == pytest.approx(1e6 * dst.hbm_bytes_per_s / src.hbm_bytes_per_s)
    assert g.ramp_flops == pytest.approx(1e9 * dst.flops_for("bf16") / src.flops_for("bf16"))
    assert g.knee_bytes == 3e7  # a GEMM's knee does not model the L2
    e = transfer.carry_params(p(ElementwiseParams), OpClass.ELEMENTWISE, src, dst)
    assert e.knee_bytes == pytest.approx(3e7 * dst.l2_bytes / src.l2_bytes)
    assert e.cache_bytes == pytest.approx(4e6 * dst.l2_bytes / src.l2_bytes)
    h = transfer.carry_params(p(CopyParams), OpClass.MEMCPY_H2D_PAGEABLE, src, dst)
    assert h.knee_bytes == 3e7  # host caches: unchanged
    assert h.ramp_bytes == pytest.approx(
        1e6 * dst.pcie_bytes_per_s_per_direction / src.pcie_bytes_per_s_per_direction
    )


def test_other_vendor_gets_only_the_family_independent_fields():
    src = load_gpu("h200-sxm-141gb")
    prof = load_profile_file(shipped_profile_path(src), src)
    out = transfer.transfer_profile(prof, src, load_gpu("mi300x"))
    assert set(out.classes) <= set(transfer.FAMILY_INDEPENDENT_CLASSES)
    assert not out.implementations
    for p in [*out.classes.values(), *out.elementwise.values()]:
        nonpeak = {f.name for f in dataclasses.fields(p) if getattr(p, f.name) != getattr(type(p)(), f.name)}
        assert nonpeak <= set(transfer.FAMILY_INDEPENDENT_FIELDS)
    assert out.classes[OpClass.MEMCPY_D2D].memory_eff == prof.classes[OpClass.MEMCPY_D2D].memory_eff


def test_same_vendor_transfer_keeps_fractions_and_names_its_source():
    src, dst = load_gpu("h100-sxm-80gb"), load_gpu("a100-sxm-80gb")
    prof = load_profile_file(shipped_profile_path(src), src)
    out = transfer.transfer_profile(prof, src, dst)
    assert out.gpu == dst.name and out.mode is Mode.CALIBRATED and out.transferred_from == src.name
    assert out.classes[OpClass.GEMM].compute_eff == prof.classes[OpClass.GEMM].compute_eff
    assert set(out.implementations) == set(prof.implementations)
    assert not out.sustained  # the board's power limit does not carry
    assert out.provenance[OpClass.GEMM] == "transferred from h100-sxm-80gb"


def test_profile_constructed_with_keywords_still_works():
    p = Profile(gpu="x", mode=Mode.CALIBRATED, classes={OpClass.GEMM: GemmParams(compute_eff=0.5)})
    assert p.provenance_of(OpClass.GEMM) == "measured" and p.provenance_of(OpClass.MEMCPY_D2D) == "datasheet"


def test_tp8_collectives_are_priced_alike_on_h100_and_h200():
    """Both take NVLink collective curves (the H200's measured ones); the H200, with more bandwidth, is not slower."""
    kw = dict(context_len=4000, batch=16, tp=8, mode="calibrated")
    h100 = analyze("llama-3-70b", "h100", **kw)
    h200 = analyze("llama-3-70b", "h200", **kw)
    assert h200.decode_step.total_s <= h100.decode_step.total_s
    assert h100.provenance["all_reduce"] == "transferred from h200-sxm-141gb"
    assert h200.provenance["all_reduce"] == "measured"
    assert math.isclose(h100.decode_step_comm_s, h200.decode_step_comm_s, rel_tol=0.05)


def test_cli_analyze_prints_provenance_and_json_has_it(perfmodel_cli):
    r = perfmodel_cli(
        "analyze", "--model", "llama-3-8b", "--gpu", "gaudi3", "--context", "4000", "--mode", "calibrated"
    )
    assert r.returncode == 0, r.stderr
    assert "provenance:" in r.stdout and "family-independent part" in " ".join(r.stdout.split())


def test_capacity_plan_labels_each_gpus_provenance():
    from perfmodel.planners.capacity import gpu_provenance

    out = gpu_provenance(["h100-sxm-80gb", "mi300x"], "calibrated")
    assert out["h100-sxm-80gb"].startswith("measured")
    assert "family-independent part" in out["mi300x"]
    assert gpu_provenance(["b200"], "peak") == {"b200": "datasheet (every op class)"}


def test_sweep_over_every_shipped_gpu_labels_each_row(perfmodel_cli):
    """``perfmodel sweep --gpu all`` (calibrated, the default) runs on every shipped GPU; each row names its
    provenance: measured, transferred from a measured GPU, or datasheet."""
    import io

    import pandas as pd

    res = perfmodel_cli(
        "sweep", "--model", "llama-3-8b", "--gpu", "all", "--context", "2000", "--output-tokens", "8"
    )
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(io.StringIO(res.stdout))
    assert sorted(df["gpu"]) == sorted(list_gpus()) and set(df["mode"]) == {"calibrated"}
    prov = dict(zip(df["gpu"], df["provenance"]))
    assert prov["h100-sxm-80gb"].startswith("measured:") and prov["h200-sxm-141gb"].startswith("measured")
    assert prov["b200"].startswith("transferred from h200-sxm-141gb")
    assert prov["a100-sxm-80gb"].startswith("transferred from h100-sxm-80gb:")
    assert prov["mi300x"].startswith("datasheet:") and "(family-independent part)" in prov["mi300x"]
    assert (df["decode_s_per_token_high"] > df["decode_s_per_token_low"]).all()
