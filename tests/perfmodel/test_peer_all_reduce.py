"""An engine's peer all-reduce (vLLM's custom all-reduce): its cost against the published kernel timings,
which all-reduces it takes (size, world, fabric), and how an engine file brings it to a deployment."""

import dataclasses

import numpy as np
import pytest

from perfmodel.calibration import resolve_profile
from perfmodel.costs.collectives import PeerAllReduce, collective_time
from perfmodel.errors import InvalidInputError, ProfileError
from perfmodel.hw import load_gpu
from perfmodel.ops import CollectiveLaunch, OpKind
from perfmodel.serving import Deployment
from perfmodel.serving.engine import Engine, load_engine

H100 = load_gpu("h100-sxm-80gb")
NCCL = resolve_profile(H100)
PEER = load_engine("vllm-0.6-multistep").custom_all_reduce
WITH_PEER = NCCL.with_peer_all_reduce(PEER)
MiB = 1 << 20
GRAPH = CollectiveLaunch.GRAPH


def ar(nbytes, world, prof=WITH_PEER, topology=None, launch=GRAPH):
    return collective_time(OpKind.ALL_REDUCE, nbytes, world, H100, prof, topology, launch=launch).total_s


def test_matches_the_published_h100_timings_at_tp4():
    # vLLM PR #24111, H100 TP=4, ca_1stage and ca_2stage forced, ms per call (the engine file's source)
    sizes = np.array([0.5, 1, 1.5, 2, 3, 4]) * MiB
    one = np.array([0.010, 0.015, 0.019, 0.022, 0.030, 0.038]) * 1e-3
    two = np.array([0.017, 0.018, 0.027, 0.027, 0.035, 0.043]) * 1e-3
    one_shot = PEER.one_shot_latency_s + 3 * sizes / (
        PEER.one_shot_link_eff * H100.nvlink_bytes_per_s_per_direction
    )
    assert np.median(np.abs(one_shot / one - 1)) < 0.05
    priced = ar(sizes, 4)  # the kernel's own rule: two-shot from 512 KiB at 4 GPUs
    assert np.median(np.abs(priced / two - 1)) < 0.05 and np.max(np.abs(priced / two - 1)) < 0.15


def test_one_shot_below_the_switch_two_shot_above():
    eff_bw = PEER.one_shot_link_eff * H100.nvlink_bytes_per_s_per_direction
    small = 256 * 1024 - 16
    assert ar(small, 4) == pytest.approx(PEER.one_shot_latency_s + 3 * small / eff_bw)
    assert ar(512 * 1024, 4) >= PEER.two_shot_latency_s
    assert ar(small, 8) == pytest.approx(PEER.one_shot_latency_s + 7 * small / eff_bw)
    assert ar(256 * 1024, 8) >= PEER.two_shot_latency_s
    assert ar(4 * MiB, 2) == pytest.approx(
        PEER.one_shot_latency_s + 4 * MiB / eff_bw
    )  # two GPUs: always one-shot


def test_far_cheaper_than_nccl_for_decode_messages_and_nccl_beyond_its_limit():
    decode = 16 * 8192 * 2  # 16 sequences of Llama-3-70B's hidden size, bf16
    for w in (2, 4, 8):
        assert ar(decode, w) < 0.25 * ar(decode, w, prof=NCCL)
    big = np.array([8 * MiB, 64 * MiB])
    assert np.allclose(ar(big, 4), ar(big, 4, prof=NCCL))  # at max_bytes and above: NCCL's price
    mixed = ar(np.array([decode, 8 * MiB]), 4)
    assert mixed[0] == pytest.approx(ar(decode, 4)) and mixed[1] == pytest.approx(ar(8 * MiB, 4, prof=NCCL))


def test_only_where_the_engine_runs_it():
    decode = 64 * 1024
    assert ar(decode, 3) == ar(decode, 3, prof=NCCL)  # no kernel for 3 GPUs
    pcie = load_gpu("l40s")
    prof = resolve_profile(pcie).with_peer_all_reduce(PEER)
    plain = resolve_profile(pcie)
    f = lambda w, p: (
        collective_time(OpKind.ALL_REDUCE, decode, w, pcie, p, "pcie-l40s-x4", launch=GRAPH).total_s
    )
    assert f(4, prof) == f(4, plain)  # four GPUs without a switch: NCCL
    assert f(2, prof) < f(2, plain)  # two GPUs take it over any peer path
    assert ar(decode, 16, topology="dgx-h100-x4") == ar(
        decode, 16, prof=NCCL, topology="dgx-h100-x4"
    )  # nodes


def test_outside_a_graph_the_input_is_copied_first():
    b = 1 * MiB
    eager = ar(b, 2, launch=CollectiveLaunch.EAGER_BURST)
    assert eager == pytest.approx(ar(b, 2) + 2 * b / H100.hbm_bytes_per_s)


def test_engine_file_sets_it_on_the_deployment_profile():
    dep = Deployment.make("llama-3-70b", "h100-sxm-80gb", tp=4, engine="vllm-0.6-multistep")
    assert dep.resolved_profile.peer_all_reduce == PEER
    assert Deployment.make("llama-3-70b", "h100-sxm-80gb", tp=4).resolved_profile.peer_all_reduce is None
    off = dataclasses.replace(load_engine("vllm-0.6-multistep"), custom_all_reduce=None)
    assert (
        Deployment.make("llama-3-70b", "h100-sxm-80gb", tp=4, engine=off).resolved_profile.peer_all_reduce
        is None
    )


def test_bad_custom_all_reduce_is_one_clear_error():
    good = dataclasses.asdict(PEER)
    with pytest.raises(InvalidInputError, match="custom_all_reduce needs exactly"):
        Engine("x", custom_all_reduce={"max_bytes": 1})
    with pytest.raises(InvalidInputError, match="one_shot_link_eff"):
        Engine("x", custom_all_reduce=good | {"one_shot_link_eff": 0.0})
    with pytest.raises(InvalidInputError, match="mapping or false"):
        Engine("x", custom_all_reduce="yes")
    with pytest.raises(ProfileError, match="latency"):
        PeerAllReduce(**good | {"two_shot_latency_s": float("nan")})
    assert Engine("x", custom_all_reduce=False).custom_all_reduce is None
