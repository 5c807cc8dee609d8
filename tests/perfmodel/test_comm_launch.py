"""Collective terms per way of issuing them (``collective_launch`` in a profile)."""

import pytest

from perfmodel.hw import load_gpu
from perfmodel.calibration import profile_from_dict
from perfmodel.costs.collectives import collective_cost, collective_time
from perfmodel.costs import op_cost
from perfmodel.errors import ProfileError
from perfmodel.layers import model_ops
from perfmodel.models import load_model
from perfmodel.ops import Collective, CollectiveLaunch, OpKind, Phase, default_collective_launch

H200 = load_gpu("h200-sxm-141gb")
BURST = {"latency_s": 2.3e-05, "memory_eff": 0.49, "overlap": 1.0}
GRAPH = {"latency_s": 4.0e-06, "memory_eff": 0.49, "overlap": 0.0}


def _profile(**extra):
    return profile_from_dict({"gpu": H200.name, "classes": {"all_reduce": BURST}, **extra})


def test_the_way_picks_its_terms_else_the_class():
    prof = _profile(collective_launch={"graph": {"all_reduce": GRAPH}})
    b = 64 * 1024
    base = float(collective_time(OpKind.ALL_REDUCE, b, 2, H200, prof).total_s)
    burst = float(
        collective_time(OpKind.ALL_REDUCE, b, 2, H200, prof, launch=CollectiveLaunch.EAGER_BURST).total_s
    )
    graph = float(collective_time(OpKind.ALL_REDUCE, b, 2, H200, prof, launch="graph").total_s)
    assert burst == base  # no eager_burst terms: the class's
    assert graph < 0.5 * base
    op = Collective(OpKind.ALL_REDUCE, b, 2, launch=CollectiveLaunch.GRAPH)
    assert float(collective_cost(op, H200, prof).total_s) == graph
    # a class the way has no terms for keeps its own
    ag = float(collective_time(OpKind.ALL_GATHER, b, 2, H200, prof, launch="graph").total_s)
    assert ag == float(collective_time(OpKind.ALL_GATHER, b, 2, H200, prof).total_s)


def test_profile_round_trip_and_bad_input():
    prof = _profile(collective_launch={"graph": {"all_reduce": GRAPH}})
    again = profile_from_dict(prof.to_dict())
    assert again.collective_launch[CollectiveLaunch.GRAPH] == prof.collective_launch[CollectiveLaunch.GRAPH]
    with pytest.raises(ProfileError, match="unknown way"):
        _profile(collective_launch={"captured": {"all_reduce": GRAPH}})
    with pytest.raises(ProfileError, match="not a collective class"):
        _profile(collective_launch={"graph": {"gemm": GRAPH}})


def test_decode_collectives_are_priced_in_graph_and_prefill_back_to_back():
    assert default_collective_launch(Phase.DECODE) is CollectiveLaunch.GRAPH
    assert default_collective_launch(Phase.PREFILL) is CollectiveLaunch.EAGER_BURST
    m = load_model("llama-3-8b")
    for phase, q, way in (
        (Phase.DECODE, 1, CollectiveLaunch.GRAPH),
        (Phase.PREFILL, 512, CollectiveLaunch.EAGER_BURST),
    ):
        colls = [o for _, o, _ in model_ops(m, phase, 4, q, 1024, tp=2) if isinstance(o, Collective)]
        assert colls and all(o.launch is way for o in colls)
    prof = _profile(collective_launch={"graph": {"all_reduce": GRAPH}})
    plain = _profile()

    def coll_s(p, phase, q):
        return sum(
            float(op_cost(o, H200, p).total_s) * c
            for _, o, c in model_ops(m, phase, 4, q, 1024, tp=2)
            if isinstance(o, Collective) and o.op is OpKind.ALL_REDUCE
        )

    assert coll_s(prof, Phase.DECODE, 1) < 0.5 * coll_s(plain, Phase.DECODE, 1)
    assert coll_s(prof, Phase.PREFILL, 512) == coll_s(plain, Phase.PREFILL, 512)
