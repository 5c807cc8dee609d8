"""Fitting the GEMM fill rate (a grid of fewer tiles than SMs) and the math and streaming rates of rows off the
128-byte lines."""

import numpy as np

from perfmodel.calibration import Mode, OpClass, Profile
from perfmodel.costs.gemm import GemmParams
from perfmodel.validation.fit import ProfileFitter
from perfmodel.validation.records import split_by_family

H100 = "h100-sxm-80gb"


def _true_profile(**terms) -> Profile:
    """The GEMM curve the synthetic records are drawn from: a tiled roofline plus ``terms``."""
    base = dict(
        compute_eff=0.75,
        memory_eff=0.9,
        latency_s=3e-6,
        tile_m=128,
        tile_n=256,
        tile_m_min=16,
        wave_quant=0.3,
        tile_overhead_s=1e-6,
        overlap=0.95,
    )
    return Profile(H100, Mode.CALIBRATED, {OpClass.GEMM: GemmParams(**base, **terms)})


def test_fit_recovers_the_fill_and_both_misaligned_rates_on_held_out_gemms(synthetic_records):
    true = _true_profile(fill_tile_eff=0.65, misaligned_eff=0.85, misaligned_memory_eff=0.8)
    recs = synthetic_records(("gemm",), true, noise=0.01)
    assert any(r["n"] % 64 for r in recs)  # some rows off the lines (1000 x 1000, 5000 x 3000, 6000 x 6000)
    train, test = split_by_family(recs)
    fitter = ProfileFitter(H100).fit(train)
    p = fitter.profile_.params(OpClass.GEMM)
    assert abs(p.fill_tile_eff - 0.65) < 0.05
    assert abs(p.misaligned_eff - 0.85) < 0.05
    assert abs(p.misaligned_memory_eff - 0.8) < 0.05
    ape = np.abs(fitter.predict_records(test) / np.array([r["measured_s"] for r in test]) - 1)
    assert np.median(ape) < 0.02 and np.percentile(ape, 90) < 0.05


def test_fit_recovers_the_split_k_rows_and_seconds(synthetic_records):
    true = _true_profile(split_k_rows=16, split_k_s=2e-6)
    recs = synthetic_records(("gemm",), true, noise=0.01)
    fitter = ProfileFitter(H100).fit(recs)
    p = fitter.profile_.params(OpClass.GEMM)
    assert p.split_k_rows == 16
    assert abs(p.split_k_s - 2e-6) < 0.4e-6
