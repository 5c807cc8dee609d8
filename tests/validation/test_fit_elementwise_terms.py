"""The fit recovers the elementwise cache and row-knee-width terms from synthetic records."""

import numpy as np

from perfmodel.hw.loader import load_gpu
from perfmodel.costs.elementwise import ElementwiseParams
from perfmodel.ops import Elementwise
from perfmodel.validation.fit import _profile_with, fit_class, predict_ops

G = load_gpu("h100-sxm-80gb")


def test_fit_finds_the_residual_add_cache_size():
    true = ElementwiseParams(
        memory_eff=0.9,
        latency_s=1.2e-6,
        knee_bytes=2e7,
        tail_memory_eff=0.85,
        cache_bytes=4e6,
        cache_memory_eff=1.7,
    )
    by = 6.0 * np.array([2**k for k in range(10, 26)], dtype=float)
    ops = [Elementwise("residual_add", bytes=b, flops=b / 6) for b in by]
    meas = predict_ops(ops, G, _profile_with(G, "elementwise:residual_add", true))
    p, ape = fit_class("elementwise:residual_add", ops, meas, G)
    assert p.cache_bytes == 4e6
    assert ape < 0.02


def test_fit_uses_the_row_knee_width_when_rows_ramp():
    true = ElementwiseParams(
        memory_eff=0.8,
        latency_s=1.5e-6,
        units_per_sm=16.0,
        unit_overhead_s=1e-7,
        unit_memory_eff=0.07,
        wave_quant=0.2,
        row_knee_bytes=8192.0,
        row_tail_memory_eff=0.55,
        row_knee_width_bytes=8192.0,
    )
    ops = [
        Elementwise("rmsnorm", bytes=(2 * t + 1) * h * 2, flops=4 * t * h)
        for h in (1024, 2048, 4096, 5120, 6144, 7168, 8192, 16384)
        for t in (1, 64, 2048, 16384)
    ]
    meas = predict_ops(ops, G, _profile_with(G, "elementwise:rmsnorm", true))
    p, ape = fit_class("elementwise:rmsnorm", ops, meas, G)
    assert p.row_knee_width_bytes > 1024.0
    assert ape < 0.02
