"""Attention implementation as an axis: per-impl curves, the op's own impl, the scenario's choice."""

import json
import subprocess
import sys
from types import MappingProxyType

import pytest

from perfmodel.hw.loader import load_gpu
from perfmodel import analyze
from perfmodel.calibration import Mode, OpClass, Profile, peak_profile, profile_from_dict
from perfmodel.costs.attention import AttentionParams
from perfmodel.costs import op_cost
from perfmodel.errors import OpDescriptorError, ProfileError
from perfmodel.ops import (
    AttentionImpl,
    Attention,
    DecoderLayer,
    Phase,
    decoder_layer_parts,
    op_from_dict,
    op_to_dict,
)

H100 = "h100-sxm-80gb"
PRE, DEC = OpClass.ATTENTION_PREFILL, OpClass.ATTENTION_DECODE


def _profile(**extra) -> Profile:
    """sdpa (in classes) at 0.8 of peak FLOP/s, flash2 at 0.5, triton at 0.6; decode sdpa at 0.9 of bandwidth."""
    impls = {
        (PRE, AttentionImpl.FLASH2): AttentionParams(compute_eff=0.5),
        (PRE, AttentionImpl.TRITON): AttentionParams(compute_eff=0.6),
        (DEC, AttentionImpl.FLASH2): AttentionParams(memory_eff=0.5),
        (DEC, AttentionImpl.STREAM_K): AttentionParams(memory_eff=0.7),
    }
    return Profile(
        H100,
        Mode.CALIBRATED,
        MappingProxyType({PRE: AttentionParams(compute_eff=0.8), DEC: AttentionParams(memory_eff=0.9)}),
        implementations=MappingProxyType(impls),
        **extra,
    )


PREFILL = Attention(Phase.PREFILL, 1, 16384, 16384, 32, 8, 128)
DECODE = Attention(Phase.DECODE, 8, 1, 65536, 32, 8, 128)


def test_each_impl_is_priced_by_its_own_curve():
    g, prof = load_gpu(H100), _profile()
    t = {
        i: op_cost(Attention(**{**PREFILL.__dict__, "impl": i}), g, prof).compute_s
        for i in (AttentionImpl.SDPA, AttentionImpl.FLASH2, AttentionImpl.TRITON)
    }
    assert t[AttentionImpl.FLASH2] / t[AttentionImpl.SDPA] == pytest.approx(0.8 / 0.5)
    assert t[AttentionImpl.TRITON] / t[AttentionImpl.SDPA] == pytest.approx(0.8 / 0.6)
    # the Triton decode schedules share the Triton prefill curve; triton decodes with stream-K
    assert (
        op_cost(Attention(**{**PREFILL.__dict__, "impl": AttentionImpl.SPLIT_KV}), g, prof).compute_s
        == t[AttentionImpl.TRITON]
    )
    assert (
        op_cost(Attention(**{**DECODE.__dict__, "impl": AttentionImpl.TRITON}), g, prof).memory_s
        == op_cost(Attention(**{**DECODE.__dict__, "impl": AttentionImpl.STREAM_K}), g, prof).memory_s
    )


def test_ops_without_impl_take_the_scenarios_choice():
    g, prof = load_gpu(H100), _profile()
    default = op_cost(PREFILL, g, prof).compute_s
    assert (
        default == op_cost(Attention(**{**PREFILL.__dict__, "impl": AttentionImpl.SDPA}), g, prof).compute_s
    )
    flash = prof.with_attention_impl("flash2")
    assert op_cost(PREFILL, g, flash).compute_s == pytest.approx(default * 0.8 / 0.5)
    # an op's own impl wins over the scenario's
    assert (
        op_cost(Attention(**{**PREFILL.__dict__, "impl": AttentionImpl.SDPA}), g, flash).compute_s == default
    )


def test_a_missing_curve_is_refused_by_name_and_peak_prices_every_impl_alike():
    prof = _profile()
    with pytest.raises(
        ProfileError,
        match=r"no attention_decode curve for attention implementation 'split_kv' "
        r"\(measured: sdpa, flash2, stream_k\)",
    ):
        prof.with_attention_impl("split_kv")
    g, peak = load_gpu(H100), peak_profile(H100)
    times = {op_cost(Attention(**{**PREFILL.__dict__, "impl": i}), g, peak).total_s for i in AttentionImpl}
    assert len(times) == 1
    with pytest.raises(OpDescriptorError, match="unknown attention implementation 'fa9'"):
        AttentionImpl.parse("fa9")


def test_profile_json_round_trip_keeps_curves_and_kernel_names():
    prof = _profile(attention_kernels=MappingProxyType({"attention_prefill[sdpa]": ("cudnn_sm90_fprop",)}))
    back = profile_from_dict(json.loads(json.dumps(prof.to_dict())))
    assert back.implementations == prof.implementations
    assert back.attention_kernels == prof.attention_kernels
    assert back.attention_params(PRE, AttentionImpl.FLASH2).compute_eff == 0.5
    bad = prof.to_dict() | {"implementations": {"attention_prefill[fa9]": {}}}
    with pytest.raises(ProfileError, match="implementations key 'attention_prefill\\[fa9\\]'"):
        profile_from_dict(bad)


def test_descriptors_carry_the_impl_and_layers_pass_theirs_to_attention():
    op = op_from_dict({**op_to_dict(PREFILL), "impl": "flash2"})
    assert op.impl is AttentionImpl.FLASH2
    with pytest.raises(OpDescriptorError, match="field 'impl' has unknown value 'cudnn'"):
        op_from_dict({**op_to_dict(PREFILL), "impl": "cudnn"})
    layer = op_from_dict(
        {
            "op": "decoder_layer",
            "phase": "prefill",
            "batch": 1,
            "q_len": 512,
            "kv_len": 512,
            "hidden": 4096,
            "intermediate": 14336,
            "q_heads": 32,
            "kv_heads": 8,
            "head_dim": 128,
            "attention_impl": "flash2",
        }
    )
    assert isinstance(layer, DecoderLayer) and layer.attention_impl is AttentionImpl.FLASH2
    attn = [o for n, o, _ in decoder_layer_parts(layer) if n == "attention"][0]
    assert attn.impl is AttentionImpl.FLASH2
    g, prof = load_gpu(H100), _profile()
    sdpa_layer = op_cost(DecoderLayer(**{**layer.__dict__, "attention_impl": AttentionImpl.SDPA}), g, prof)
    assert op_cost(layer, g, prof).total_s > sdpa_layer.total_s


def test_analyze_prices_the_chosen_impl_and_says_which():
    kw = dict(context_len=32000, output_tokens=16, mode="calibrated", profile=_profile())
    sdpa = analyze("llama-3-8b", H100, **kw)
    flash = analyze("llama-3-8b", H100, attention_impl="flash2", **kw)
    assert flash.prefill.total_s > sdpa.prefill.total_s
    assert sdpa.to_dict()["attention_impl"] == "sdpa" and flash.to_dict()["attention_impl"] == "flash2"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["analyze", "--attention-impl", "cudnn"], "invalid choice: 'cudnn'"),
        (["sweep", "--attention-impl", "fa3"], "invalid choice: 'fa3'"),
    ],
)
def test_cli_refuses_an_unknown_impl_in_one_line(argv, needle):
    r = subprocess.run([sys.executable, "-m", "perfmodel.cli", *argv], capture_output=True, text=True)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
