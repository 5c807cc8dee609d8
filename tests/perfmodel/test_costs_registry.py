"""The cost registries: every op type has a cost function, every profile class a parameter type, each type's
fields a range rule; shipped profiles load and save unchanged; communication placement imports no costs."""

import ast
import json
from dataclasses import fields
from pathlib import Path

import pytest

import perfmodel
from perfmodel.calibration import PROFILE_DIR, Mode, OpClass, Profile, profile_from_dict
from perfmodel.costs import COST_FUNCTIONS, PARAMS_TYPES, op_cost
from perfmodel.costs.attention import AttentionParams
from perfmodel.costs.base import FIELD_RULES, CurveParams
from perfmodel.costs.collectives import COLLECTIVE_CLASSES, CollectiveParams
from perfmodel.costs.elementwise import ElementwiseParams
from perfmodel.errors import ProfileError
from perfmodel.hw.loader import load_gpu
from perfmodel.ops import OpKind, op_from_dict

SHIPPED = sorted(PROFILE_DIR.glob("*.json"))


def test_every_op_type_has_a_cost_function():
    assert set(COST_FUNCTIONS) == set(OpKind)


def test_every_op_class_has_a_parameter_type_whose_fields_all_have_a_range_rule():
    assert set(PARAMS_TYPES) == set(OpClass)
    ruled = {n for names, _, _ in FIELD_RULES for n in names}
    for oc, kind in PARAMS_TYPES.items():
        assert issubclass(kind, CurveParams) and kind is not CurveParams
        own = {f.name for f in fields(kind)} - {"split_rule"}  # the split rule is checked by its enum
        assert own <= ruled, (oc, own - ruled)
    assert PARAMS_TYPES[OpClass.ATTENTION_DECODE] is AttentionParams
    assert {PARAMS_TYPES[c] for c in COLLECTIVE_CLASSES} == {CollectiveParams}


def test_types_hold_only_their_class_fields():
    # a GEMM tile is no field of a copy, a split rule none of a GEMM, a cache size none of attention
    assert "tile_m" not in PARAMS_TYPES[OpClass.MEMCPY_D2D].field_names()
    assert "split_rule" not in PARAMS_TYPES[OpClass.GEMM].field_names()
    assert "cache_bytes" not in AttentionParams.field_names()
    assert "compute_eff" not in CollectiveParams.field_names()
    with pytest.raises(ProfileError, match="unknown field.*tile_m"):
        profile_from_dict({"gpu": "x", "classes": {"memcpy_d2d": {"tile_m": 128}}})


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_class_key_has_its_type_and_the_profile_round_trips(path: Path):
    data = json.loads(path.read_text())
    prof = profile_from_dict(data, str(path))
    for name, raw in data["classes"].items():
        kind = PARAMS_TYPES[OpClass(name)]
        assert set(raw) <= kind.field_names()
        assert type(prof.classes[OpClass(name)]) is kind
    assert all(type(p) is ElementwiseParams for p in prof.elementwise.values())
    assert all(type(p) is AttentionParams for p in prof.implementations.values())
    # saving writes every curve's fields back unchanged, except those at their peak value (a curve names only
    # what differs from peak); the other sections come back as they are (``source`` is the fit's note, and a
    # band row keeps its quantiles and count)
    out = json.loads(json.dumps(prof.to_dict()))
    curves = {
        "classes": lambda k: PARAMS_TYPES[OpClass(k)],
        "elementwise_kernels": lambda k: ElementwiseParams,
        "implementations": lambda k: AttentionParams,
    }
    assert set(out) == set(data) - {"source"}
    for section, value in data.items():
        if section in curves:
            assert out[section] == {
                k: {f: v for f, v in raw.items() if v != getattr(curves[section](k)(), f)}
                for k, raw in value.items()
            }
        elif section == "bands":
            for group, rows in value.items():
                assert out[section][group] == (
                    rows
                    if not isinstance(rows, dict) or group == "combination"
                    else {
                        k: {q: r[q] for q in ("q10", "q90", "n", "families", "level") if q in r}
                        for k, r in rows.items()
                    }
                )
        elif section != "source":
            assert out[section] == value, section
    again = profile_from_dict(out, "again")
    assert again.to_dict() == prof.to_dict() and again.classes == prof.classes
    assert again.implementations == prof.implementations and again.elementwise == prof.elementwise


def test_registry_prices_what_the_public_function_prices():
    gpu = load_gpu("h100-sxm-80gb")
    prof = Profile(gpu.name, Mode.PEAK)
    op = op_from_dict({"op": "gemm", "m": 64, "n": 4096, "k": 4096, "dtype": "bf16"})
    assert perfmodel.op_cost is op_cost
    assert op_cost(op, gpu, prof).total_s == COST_FUNCTIONS[OpKind.GEMM](op, gpu, prof).total_s > 0
    with pytest.raises(TypeError, match="not an op"):
        op_cost("gemm", gpu, prof)


def test_communication_placement_imports_no_cost_module():
    tree = ast.parse((Path(perfmodel.__file__).parent / "comm.py").read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {n for n in names if n and n.startswith(("perfmodel.costs", "perfmodel.calibration"))}
