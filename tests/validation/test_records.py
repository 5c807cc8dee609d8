"""Record files: schema checks, GPU refusal, held-out split by family."""

import json

import pytest

from perfmodel.validation.cases import cases
from perfmodel.validation.records import (
    RecordError,
    canonical_gpu,
    class_key,
    read_records,
    refuse_other_gpu,
    split_by_family,
)


def _rec(**kw):
    base = {
        "op": "gemm",
        "m": 16,
        "n": 4096,
        "k": 4096,
        "measured_s": 1e-5,
        "impl": "cublas",
        "family": "gemm/n4096_k4096",
        "gpu": "NVIDIA H100 80GB HBM3",
        "gpu_model": "h100-sxm-80gb",
        "driver": "580",
        "torch": "2.11",
        "date": "2026-11-22",
    }
    base.update(kw)
    return base


def _write(tmp_path, recs, name="r.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


@pytest.mark.parametrize(
    "reported, name",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm-80gb"),
        ("NVIDIA H200", "h200-sxm-141gb"),
        ("NVIDIA H100 PCIe", "h100-pcie-80gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
        ("cpu", None),
    ],
)
def test_canonical_gpu(reported, name):
    assert canonical_gpu(reported) == name


def test_records_of_another_gpu_are_refused(tmp_path):
    p = _write(tmp_path, [_rec(), _rec(gpu="NVIDIA H200", gpu_model="h200-sxm-141gb")])
    with pytest.raises(RecordError, match="h200-sxm-141gb.*not 'h100-sxm-80gb'"):
        read_records(p, "h100-sxm-80gb")
    assert len(read_records(p)) == 2
    with pytest.raises(RecordError, match="refusing"):
        refuse_other_gpu([_rec()], "h200-sxm-141gb")


@pytest.mark.parametrize(
    "line, match",
    [
        ("{oops", "line 1: not valid JSON"),
        (json.dumps(_rec(measured_s=0)), "measured_s must be a positive"),
        (json.dumps(_rec(measured_s=float("nan"))), "measured_s"),
        (json.dumps({"op": "gemm"}), "lacks"),
        (json.dumps(_rec(op="teleport")), "unknown value 'teleport'"),
        (json.dumps(_rec(m=0)), "'m' must be >= 1"),
    ],
)
def test_bad_record_lines_give_one_clear_error(tmp_path, line, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(RecordError, match=match):
        read_records(p)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(RecordError, match="not found"):
        read_records(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(RecordError, match="empty"):
        read_records(tmp_path / "e.jsonl")


def test_class_keys():
    assert class_key(_rec()) == "gemm"
    assert class_key(_rec(op="elementwise", name="rmsnorm", bytes=100)) == "elementwise:rmsnorm"
    att = dict(
        op="attention", phase="decode", batch=1, q_len=1, kv_len=64, q_heads=8, kv_heads=2, head_dim=64
    )
    assert class_key(_rec(**att, impl="split_kv")) == "attention_decode[split_kv]"
    assert class_key(_rec(**att, impl="sdpa")) == "attention_decode"
    assert class_key(_rec(op="memcpy", bytes=10, src="host_pinned", dst="device")) == "memcpy_h2d"


def test_split_holds_out_whole_families_and_all_layers():
    recs = [_rec(family=f"gemm/n{n}_k4096", n=n, m=m) for n in (1024, 2048, 4096, 8192) for m in (1, 64)]
    layer = _rec(
        op="decoder_layer",
        phase="decode",
        batch=1,
        q_len=1,
        kv_len=16,
        hidden=64,
        intermediate=128,
        q_heads=4,
        kv_heads=2,
        head_dim=16,
        family="decoder_layer/x",
        impl="cuda_graph_layer",
    )
    train, test = split_by_family(recs + [layer])
    fam_tr, fam_te = {r["family"] for r in train}, {r["family"] for r in test}
    assert fam_tr and fam_te and not fam_tr & fam_te
    assert layer in test
    # numeric sort: 1024, 2048, 4096, 8192 -> index 1 (2048) is held out
    assert "gemm/n2048_k4096" in fam_te


def test_every_quick_case_is_a_valid_descriptor_with_a_family():
    from perfmodel.ops import op_from_dict

    cs = cases("quick")
    assert len(cs) > 500
    for c in cs:
        op_from_dict(c.desc)
        assert c.family and c.impl
    # GEMMs span M 1..16K; layers cover prefill and decode of several models
    ms = {c.args["m"] for c in cs if c.section == "gemm"}
    assert min(ms) == 1 and max(ms) == 16384
    layers = [c for c in cs if c.section == "layer"]
    assert {c.desc["phase"] for c in layers} == {"prefill", "decode"}
    assert len({c.family for c in layers}) >= 4


def test_replace_impl_records_swaps_one_implementation(tmp_path, capsys):
    from perfmodel.validation.records import main, replace_impl_records

    old = [_rec(), _rec(impl="stream_k", m=1), _rec(impl="stream_k", m=2), _rec(impl="split_kv", m=3)]
    new = [_rec(impl="stream_k", m=7)]
    out = replace_impl_records(old, new, ["stream_k"])
    assert [(r["impl"], r["m"]) for r in out] == [("cublas", 16), ("split_kv", 3), ("stream_k", 7)]
    with pytest.raises(RecordError, match="split_kv"):
        replace_impl_records(old, [_rec(impl="split_kv")], ["stream_k"])
    with pytest.raises(RecordError, match="refusing"):
        replace_impl_records(
            old, [_rec(impl="stream_k", gpu="NVIDIA H200", gpu_model="h200-sxm-141gb")], ["stream_k"]
        )
    data, fresh = _write(tmp_path, old, "data.jsonl"), _write(tmp_path, new, "new.jsonl")
    assert main(["replace", str(data), str(fresh), "--impls", "stream_k"]) == 0
    assert len(read_records(data)) == 3 and "2 removed, 1 added" in capsys.readouterr().out
    assert main(["replace", str(data), str(fresh), "--impls", "split_kv"]) == 1  # stream_k not named
    assert "not named" in capsys.readouterr().err
