"""Fitting the size knee of memory-bound kernels and the per-split combine cost of decode attention."""

import numpy as np

from perfmodel.calibration import Mode, OpClass, Profile
from perfmodel.costs.attention import AttentionParams
from perfmodel.costs.copies import CopyParams
from perfmodel.validation.fit import ProfileFitter
from perfmodel.validation.records import split_by_family

H100 = "h100-sxm-80gb"


def test_fit_recovers_a_size_knee_of_device_copies_on_held_out_sizes(synthetic_records):
    true = Profile(
        H100,
        Mode.CALIBRATED,
        {OpClass.MEMCPY_D2D: CopyParams(memory_eff=1.3, latency_s=6e-6, knee_bytes=2e7, tail_memory_eff=0.9)},
    )
    recs = synthetic_records(("memcpy",), true, lambda c: c.desc["src"] == c.desc["dst"], noise=0.01)
    train, test = split_by_family(recs)
    fitter = ProfileFitter(H100).fit(train)
    ape = np.abs(fitter.predict_records(test) / np.array([r["measured_s"] for r in test]) - 1)
    assert np.max(ape) < 0.05
    p = fitter.profile_.params(OpClass.MEMCPY_D2D)
    assert abs(p.tail_memory_eff - 0.9) < 0.05 and p.memory_eff > 1.0


def test_fit_finds_the_combine_cost_per_split_of_sdpa_decode(synthetic_records):
    true = Profile(
        H100,
        Mode.CALIBRATED,
        {
            OpClass.ATTENTION_DECODE: AttentionParams(
                memory_eff=0.8, latency_s=5e-6, split_rule=1, split_latency_s=1e-6, split_piece_s=0.2e-6
            )
        },
    )
    recs = synthetic_records(
        ("attention",), true, lambda c: c.impl == "sdpa" and c.desc["phase"] == "decode", noise=0.01
    )
    assert recs
    fitter = ProfileFitter(H100).fit(recs)
    ape = np.abs(fitter.predict_records(recs) / np.array([r["measured_s"] for r in recs]) - 1)
    assert np.median(ape) < 0.02
    assert abs(fitter.profile_.params(OpClass.ATTENTION_DECODE).split_piece_s - 0.2e-6) < 0.06e-6
