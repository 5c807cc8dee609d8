"""Every JSON the CLI prints parses, with plain values and finite numbers."""

import json
import math

import pytest

from perfmodel.errors import NonFiniteError
from perfmodel.jsonout import dumps, jsonable
from perfmodel.knobs import AttentionOffload, Knobs, KvTier, TierKind


def _finite_everywhere(x):
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, dict):
        return all(_finite_everywhere(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite_everywhere(v) for v in x)
    return True


def test_analyze_match_context_json_through_the_cli(perfmodel_cli):
    p = perfmodel_cli("analyze", "--match-context", "4000", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    tiers = [r for r in d["match"]["knobs"] if r["knob"] == "kv_tiers"]
    assert tiers and all(isinstance(r["setting"], (list, type(None))) for r in tiers)
    assert _finite_everywhere(d)


def test_knobs_to_dict_gives_numbers_and_plain_values():
    from perfmodel.hw import load_gpu

    k = Knobs(
        kv_dtype="fp8",
        kv_layers=15,
        kv_keep_ratio=0.5,
        prune_prefill=True,
        kv_tiers=(KvTier(TierKind.HOST_DDR), KvTier("cxl", 4e12, 7e9)),
    )
    d = k.to_dict()
    assert (
        d["kv_dtype"] == "fp8"
        and d["kv_layers"] == 15
        and d["kv_keep_ratio"] == 0.5
        and d["prune_prefill"] is True
    )
    assert d["kv_tiers"][1] == {"kind": "cxl", "capacity_bytes": 4e12, "bytes_per_s": 7e9, "gpus_per_host": 8}
    off = Knobs(offload=AttentionOffload(load_gpu("h100-sxm"), 50e9)).to_dict()["offload"]
    assert off["pool_gpu"] == load_gpu("h100-sxm").name and off["link_bytes_per_s"] == 50e9
    json.dumps(d, allow_nan=False)


def test_dumps_refuses_non_finite_and_names_where():
    assert json.loads(dumps({"a": TierKind.CXL, "b": (1, 2)})) == {"a": "cxl", "b": [1, 2]}
    with pytest.raises(NonFiniteError, match=r"x\.y\[1\] is nan"):
        dumps({"x": {"y": [1.0, float("nan")]}})
    with pytest.raises(NonFiniteError, match="inf"):
        dumps({"rate": float("inf")})
    assert jsonable({1: (TierKind.HOST_DDR,)}) == {"1": ["ddr"]}
