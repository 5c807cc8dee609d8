"""The sweep: shape, agreement with analyze, knobs and knob axes, bad axes."""

import numpy as np
import pandas as pd
import pytest

from perfmodel.analyze import analyze
from perfmodel.errors import InvalidInputError
from perfmodel.knobs import Knobs, KnobError
from perfmodel.sweep import sweep


def test_product_of_axes_and_columns():
    df = sweep("llama-3-8b", "a100", context_len=[1000, 8000, 32000], batch=[1, 4], tp=[1, 2], output_tokens=[10, 100])
    assert len(df) == 3 * 2 * 2 * 2
    for col in ("prefill_s", "decode_s_per_token", "max_concurrency", "context_switch_s", "fits",
                "prefill_bound", "decode_bound", "kv_cache_bytes"):
        assert col in df
    assert set(df["prefill_bound"].astype(str)) <= {"compute", "hbm_bandwidth", "latency", "interconnect"}
    assert (df["model"] == "llama-3-8b").all()


@pytest.mark.parametrize("knobs", [None, Knobs(kv_dtype="fp8", kv_keep_ratio=0.5),
                                   Knobs(attention_every=4, attention_density=0.3)])
def test_points_equal_analyze(knobs):
    df = sweep("yi-34b", "a100", context_len=[4000, 30000], batch=[1, 2], output_tokens=[250], knobs=knobs)
    for row in df.itertuples():
        if not row.fits:
            assert np.isnan(row.prefill_s)
            continue
        a = analyze("yi-34b", "a100", int(row.context_len), 250, int(row.batch), knobs=knobs).to_dict()
        for key in ("prefill_s", "decode_s_per_token", "decode_s", "context_switch_s"):
            assert getattr(row, key) == pytest.approx(a[key], rel=1e-9), key
        assert row.max_concurrency == a["max_concurrency"]
        assert row.kv_cache_bytes == a["kv_cache_bytes"]
        assert row.kv_bytes_per_token == a["kv_bytes_per_token"]


def test_does_not_fit_gives_nan_times():
    df = sweep("yi-34b", "a100", context_len=[200_000], batch=[4])
    assert not df["fits"].any() and df["prefill_s"].isna().all()


def test_knob_axes_are_a_tidy_product():
    df = sweep("llama-3-8b", "h100", context_len=[8000, 64000], batch=[1],
               knob_axes={"kv_dtype": ["bf16", "fp8"], "kv_keep_ratio": [1.0, 0.5, 0.25]})
    assert len(df) == 2 * 2 * 3
    assert set(df["kv_dtype"]) == {"bf16", "fp8"} and set(df["kv_keep_ratio"]) == {1.0, 0.5, 0.25}
    g = df[df.context_len == 64000].set_index(["kv_dtype", "kv_keep_ratio"])["kv_cache_bytes"]
    assert g[("fp8", 1.0)] == g[("bf16", 1.0)] // 2
    assert g[("fp8", 0.25)] == pytest.approx(g[("bf16", 1.0)] / 8, rel=1e-3)
    dec = df[df.context_len == 64000].set_index(["kv_dtype", "kv_keep_ratio"])["decode_s_per_token"]
    assert dec[("bf16", 0.25)] < dec[("bf16", 0.5)] < dec[("bf16", 1.0)]


def test_knob_axes_on_top_of_fixed_knobs():
    df = sweep("llama-3-8b", "h100", context_len=[16000], knobs=Knobs(kv_dtype="fp8"),
               knob_axes={"attention_density": [1.0, 0.5]})
    assert len(df) == 2 and (df["kv_bytes_per_token"] == 131072 // 2).all()


def test_bad_axes():
    with pytest.raises(KnobError, match="unknown knob axis"):
        sweep("llama-3-8b", "h100", knob_axes={"kv_speed": [1]})
    with pytest.raises(KnobError, match="kv_keep_ratio"):
        sweep("llama-3-8b", "h100", knob_axes={"kv_keep_ratio": [0.5, 0.0]})
    with pytest.raises(KnobError, match="longer than the context"):
        sweep("llama-3-8b", "h100", context_len=[1000, 8000], knobs=Knobs(sliding_window=4096))
    with pytest.raises(InvalidInputError, match="context_len"):
        sweep("llama-3-8b", "h100", context_len=[0])
    with pytest.raises(InvalidInputError, match="Knobs"):
        sweep("llama-3-8b", "h100", knobs={"kv_dtype": "fp8"})


def test_arrays_of_a_hundred_thousand_points_run():
    df = sweep("yi-34b", "a100", context_len=np.arange(1, 101) * 1000, batch=np.arange(1, 101),
               output_tokens=np.arange(1, 11) * 100, knobs=Knobs(kv_dtype="fp8"))
    assert len(df) == 100_000
    fits = df[df.fits]
    assert np.isfinite(fits[["prefill_s", "decode_s", "context_switch_s"]].to_numpy()).all()
    assert isinstance(df["decode_bound"].dtype, pd.CategoricalDtype)
