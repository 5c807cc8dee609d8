"""The soft norm-row knee and the whole-working-set cache term of elementwise kernels."""

from types import MappingProxyType

import numpy as np
import pytest

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import Mode, OpClass, Profile
from perfmodel.costs.elementwise import ElementwiseParams
from perfmodel.costs import op_cost
from perfmodel.costs.elementwise import row_memory_eff
from perfmodel.errors import OpDescriptorError, ProfileError
from perfmodel.ops import Elementwise

G = load_gpu("h100-sxm-80gb")


def _prof(name, p):
    return Profile(G.name, Mode.CALIBRATED, elementwise=MappingProxyType({name: p}))


def test_row_knee_width_ramps_the_time_per_byte_between_head_and_tail():
    p = ElementwiseParams(
        memory_eff=0.8, row_knee_bytes=8192.0, row_tail_memory_eff=0.5, row_knee_width_bytes=8192.0
    )
    eff = row_memory_eff(np.array([4096.0, 8192.0, 12288.0, 16384.0, 65536.0]), p)
    # time per byte: head, head, half-way, tail, tail
    want = 1.0 / np.array([1 / 0.8, 1 / 0.8, 0.5 / 0.8 + 0.5 / 0.5, 1 / 0.5, 1 / 0.5])
    assert np.allclose(eff, want)


def test_row_knee_without_width_is_a_step():
    p = ElementwiseParams(memory_eff=0.8, row_knee_bytes=8192.0, row_tail_memory_eff=0.5)
    assert np.allclose(row_memory_eff(np.array([8192.0, 8193.0]), p), [0.8, 0.5])


def test_rmsnorm_rows_just_past_the_knee_cost_between_head_and_tail():
    step = ElementwiseParams(memory_eff=0.8, row_knee_bytes=8192.0, row_tail_memory_eff=0.5)
    ramp = ElementwiseParams(**{**step.__dict__, "row_knee_width_bytes": 8192.0})
    t, h = 16384, 6144.0  # 12 KB rows in bf16
    op = Elementwise("rmsnorm", bytes=(2 * t + 1) * h * 2, flops=4 * t * h)
    head = (2 * t + 1) * h * 2 / (G.hbm_bytes_per_s * 0.8)
    got_step = op_cost(op, G, _prof("rmsnorm", step)).memory_s
    got_ramp = op_cost(op, G, _prof("rmsnorm", ramp)).memory_s
    assert head < got_ramp < got_step


def test_cache_bytes_streams_small_working_sets_at_the_cache_rate():
    p = ElementwiseParams(memory_eff=0.9, cache_bytes=4e6, cache_memory_eff=1.8)
    by = np.array([3e6, 5e6])
    op = Elementwise("residual_add", bytes=by, flops=by / 6)
    got = op_cost(op, G, _prof("residual_add", p)).memory_s
    assert np.allclose(got, by / (G.hbm_bytes_per_s * np.array([1.8, 0.9])))
    # past the cache the whole op misses it: a step up in time, not a continuation
    assert got[1] > got[0] * 5 / 3


def test_cache_bytes_off_by_default():
    p = ElementwiseParams(memory_eff=0.9)
    op = Elementwise("residual_add", bytes=3e6, flops=5e5)
    assert op_cost(op, G, _prof("residual_add", p)).memory_s == pytest.approx(3e6 / (G.hbm_bytes_per_s * 0.9))


@pytest.mark.parametrize(
    "raw",
    [
        {"cache_memory_eff": 5.0},
        {"cache_memory_eff": -1.0},
        {"cache_bytes": -1.0},
        {"row_knee_width_bytes": -1.0},
        {"row_knee_width_bytes": float("inf")},
    ],
)
def test_new_fields_are_validated(raw):
    with pytest.raises(ProfileError):
        ElementwiseParams.from_dict(raw, "test")


def test_serial_steps_add_their_seconds_as_latency():
    from perfmodel.ops import op_from_dict, op_to_dict

    prof = Profile(
        G.name,
        Mode.CALIBRATED,
        {OpClass.ELEMENTWISE: ElementwiseParams(memory_eff=0.8, latency_s=1e-6)},
        elementwise={"moe_combine": ElementwiseParams(memory_eff=0.8, latency_s=1e-6, step_s=0.2e-6)},
    )
    steps = np.array([0.0, 2.0, 8.0])
    c = op_cost(Elementwise("moe_combine", bytes=1e6, serial_steps=steps), G, prof)
    assert c.latency_s == pytest.approx(1e-6 + 0.2e-6 * steps)
    # no steps, or a curve without step_s: the latency alone
    assert op_cost(Elementwise("moe_combine", bytes=1e6), G, prof).latency_s == pytest.approx(1e-6)
    assert op_cost(Elementwise("gelu", bytes=1e6, serial_steps=8), G, prof).latency_s == pytest.approx(1e-6)
    # the descriptor carries them
    op = op_from_dict({"op": "elementwise", "name": "moe_combine", "bytes": 1000, "serial_steps": 6})
    assert op.serial_steps == 6 and op_to_dict(op)["serial_steps"] == 6
    assert "serial_steps" not in op_to_dict(Elementwise("gelu", bytes=10))
    with pytest.raises(OpDescriptorError, match="serial_steps"):
        op_from_dict({"op": "elementwise", "name": "x", "bytes": 10, "serial_steps": -1})


def test_moe_gather_loops_over_its_rows_only_in_pytorchs_small_index_kernel():
    from perfmodel.layers import TORCH_SMALL_INDEX, moe_routing_ops

    assert TORCH_SMALL_INDEX == 16
    tokens = np.array([1, 2, 4, 8, 128])
    ops = moe_routing_ops(tokens, 64, 4, 2048, 2)
    # 4, 8, 16 rows: the small-index kernel's threads loop over them; 32 and more: the vectorized gather
    assert ops["permute"].serial_steps.tolist() == [4, 8, 16, 0, 0]
    assert ops["combine"].serial_steps == 4  # each token sums its k expert rows
    assert moe_routing_ops(3, 64, 6, 2048, 2)["permute"].serial_steps == 0  # 18 rows
