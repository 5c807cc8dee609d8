"""The sweep: shape, agreement with analyze, knobs and knob axes, bad axes."""

import numpy as np
import pandas as pd
import pytest

from perfmodel.analyze import analyze
from perfmodel.errors import InvalidInputError
from perfmodel.knobs import Knobs, KnobError
from perfmodel.sweep import sweep


def test_product_of_axes_and_columns():
    df = sweep(
        "llama-3-8b",
        "a100",
        context_len=[1000, 8000, 32000],
        batch=[1, 4],
        tp=[1, 2],
        output_tokens=[10, 100],
    )
    assert len(df) == 3 * 2 * 2 * 2
    for col in (
        "prefill_s",
        "decode_s_per_token",
        "max_concurrency",
        "context_switch_s",
        "fits",
        "prefill_bound",
        "decode_bound",
        "kv_cache_bytes",
    ):
        assert col in df
    assert set(df["prefill_bound"].astype(str)) <= {"compute", "hbm_bandwidth", "latency", "interconnect"}
    assert (df["model"] == "llama-3-8b").all()


@pytest.mark.parametrize(
    "knobs", [None, Knobs(kv_dtype="fp8", kv_keep_ratio=0.5), Knobs(attention_every=4, attention_density=0.3)]
)
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


@pytest.mark.parametrize("knobs", [None, Knobs(kv_dtype="fp8")])
def test_contexts_where_nothing_fits_beside_ones_that_do(knobs):
    """The decode is priced only for the contexts and batch sizes with a point that fits: in one block with
    contexts and a batch size where nothing fits, the others still equal analyze (decode, its band,
    throughput) and the rest are NaN, their bounds shown."""
    df = sweep(
        "yi-34b",
        "a100",
        context_len=[4000, 200_000, 30000, 600_000],
        batch=[1, 64, 2],
        output_tokens=[10, 250],
        knobs=knobs,
    )
    assert df["fits"].any() and not df["fits"].all()
    assert set(df.loc[~df["fits"], "context_len"]) >= {200_000, 600_000}
    assert not df.loc[df["batch"] == 64, "fits"].any()
    for row in df.itertuples():
        if not row.fits:
            assert np.isnan([row.decode_s, row.decode_s_low, row.session_throughput_tokens_per_s]).all()
            assert str(row.decode_bound) in {"compute", "hbm_bandwidth", "latency", "interconnect"}
            continue
        a = analyze(
            "yi-34b", "a100", int(row.context_len), int(row.output_tokens), int(row.batch), knobs=knobs
        ).to_dict()
        for key in ("decode_s", "decode_s_low", "decode_s_high", "session_throughput_tokens_per_s"):
            assert getattr(row, key) == pytest.approx(a[key], rel=1e-12), key


def test_does_not_fit_gives_nan_times():
    df = sweep("yi-34b", "a100", context_len=[200_000], batch=[4])
    assert not df["fits"].any() and df["prefill_s"].isna().all()


def test_knob_axes_are_a_tidy_product():
    df = sweep(
        "llama-3-8b",
        "h100",
        context_len=[8000, 64000],
        batch=[1],
        knob_axes={"kv_dtype": ["bf16", "fp8"], "kv_keep_ratio": [1.0, 0.5, 0.25]},
    )
    assert len(df) == 2 * 2 * 3
    assert set(df["kv_dtype"]) == {"bf16", "fp8"} and set(df["kv_keep_ratio"]) == {1.0, 0.5, 0.25}
    g = df[df.context_len == 64000].set_index(["kv_dtype", "kv_keep_ratio"])["kv_cache_bytes"]
    assert g[("fp8", 1.0)] == g[("bf16", 1.0)] // 2
    assert g[("fp8", 0.25)] == pytest.approx(g[("bf16", 1.0)] / 8, rel=1e-3)
    dec = df[df.context_len == 64000].set_index(["kv_dtype", "kv_keep_ratio"])["decode_s_per_token"]
    assert dec[("bf16", 0.25)] < dec[("bf16", 0.5)] < dec[("bf16", 1.0)]


def test_knob_axes_on_top_of_fixed_knobs():
    df = sweep(
        "llama-3-8b",
        "h100",
        context_len=[16000],
        knobs=Knobs(kv_dtype="fp8"),
        knob_axes={"attention_density": [1.0, 0.5]},
    )
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
    df = sweep(
        "yi-34b",
        "a100",
        context_len=np.arange(1, 101) * 1000,
        batch=np.arange(1, 101),
        output_tokens=np.arange(1, 11) * 100,
        knobs=Knobs(kv_dtype="fp8"),
    )
    assert len(df) == 100_000
    fits = df[df.fits]
    assert np.isfinite(fits[["prefill_s", "decode_s", "context_switch_s"]].to_numpy()).all()
    assert isinstance(df["decode_bound"].dtype, pd.CategoricalDtype)


# ---- multi-GPU layouts ---------------------------------------------------------------------------------------
_COMPARED = [
    "prefill_s",
    "decode_s_per_token",
    "decode_s",
    "max_concurrency",
    "context_switch_s",
    "context_switch_duplex_s",
    "session_throughput_tokens_per_s",
    "kv_cache_bytes",
    "fits",
]


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
@pytest.mark.parametrize("knobs", [None, Knobs(kv_dtype="fp8"), Knobs(kv_keep_ratio=0.5, prune_prefill=True)])
def test_a_topology_at_degree_one_sweeps_as_one_tp_group(mode, knobs):
    kw = dict(context_len=[1000, 6000, 32000], batch=[1, 4], tp=[1, 2], mode=mode, knobs=knobs)
    one = sweep("llama-3-8b", "h100-sxm-80gb", **kw)
    multi = sweep("llama-3-8b", "h100-sxm-80gb", topology="dgx-h100", **kw)
    assert (multi[["pp", "sp", "ep"]].to_numpy() == 1).all() and (multi["world"] == multi["tp"]).all()
    for col in _COMPARED:
        np.testing.assert_allclose(
            multi[col].to_numpy(dtype=float), one[col].to_numpy(dtype=float), rtol=1e-9
        )
    for col in ("prefill_bound", "decode_bound"):
        assert (multi[col].astype(str).to_numpy() == one[col].astype(str).to_numpy()).all()


@pytest.mark.parametrize("layout", [dict(pp=2, sp=2), dict(sp=4, sp_kind="ulysses"), dict(pp=4)])
def test_layout_points_equal_analyze(layout):
    knobs = Knobs(kv_dtype="fp8")
    df = sweep(
        "llama-3-8b",
        "h200-sxm-141gb",
        context_len=[8192, 65536],
        batch=[2, 64],
        mode="calibrated",
        knobs=knobs,
        **layout,
    )
    assert (df["world"] == np.prod(list(v for k, v in layout.items() if k in ("pp", "sp")))).all()
    for row in df.itertuples():
        if not row.fits:
            assert np.isnan(row.prefill_s) and np.isnan(row.decode_s_per_token)
            continue
        d = analyze(
            "llama-3-8b",
            "h200-sxm-141gb",
            row.context_len,
            250,
            batch=row.batch,
            mode="calibrated",
            knobs=knobs,
            **layout,
        ).to_dict()
        assert row.prefill_s == pytest.approx(d["prefill_s"], rel=1e-9)
        assert row.decode_s_per_token == pytest.approx(d["decode_s_per_token"], rel=1e-9)
        assert row.max_concurrency == d["max_concurrency"]
        assert row.context_switch_s == pytest.approx(d["context_switch_s"], rel=1e-9)


def test_layout_points_that_do_not_fit_are_marked():
    df = sweep(
        "llama-3-70b", "h100-sxm-80gb", context_len=[4000], batch=[1, 64], tp=[1], pp=2, output_tokens=[250]
    )
    assert list(df["fits"]) == [True, False]
    assert np.isnan(df["prefill_s"].iloc[1]) and np.isfinite(df["prefill_s"].iloc[0])


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(pp=7), "pp=7"),
        (dict(ep=2), "ep=2"),
        (dict(sp=2, sp_kind="star"), "sp_kind"),
        (dict(sp=2, knobs=Knobs(sliding_window=1000)), "sliding_window"),
        (dict(pp=2, knobs=Knobs(shared_prefix_tokens=100)), "shared_prefix_tokens"),
    ],
)
def test_bad_layouts_are_refused(kw, needle):
    with pytest.raises(InvalidInputError, match=needle):
        sweep("llama-3-8b", "h200-sxm-141gb", context_len=[4096], **kw)


def test_cli_sweep_with_a_layout(capsys):
    from perfmodel.cli import main

    assert (
        main(
            [
                "sweep",
                "--model",
                "llama-3-8b",
                "--gpu",
                "h200",
                "--context",
                "8000,64000",
                "--pp",
                "2",
                "--sp",
                "2",
                "--json",
            ]
        )
        == 0
    )
    import json

    rows = json.loads(capsys.readouterr().out)
    assert [(r["pp"], r["sp"], r["world"]) for r in rows] == [(2, 2, 4), (2, 2, 4)]
    assert rows[1]["prefill_s"] > rows[0]["prefill_s"]


def test_sweep_parquet_without_pyarrow_says_what_to_install(tmp_path, perfmodel_cli):
    """With no Parquet engine importable, one line naming the package, and no file."""
    stubs = tmp_path / "stubs"
    for name in ("pyarrow", "fastparquet"):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    out = tmp_path / "x.parquet"
    p = perfmodel_cli("sweep", "--context", "4000", "--out", out, pythonpath=[stubs])
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == [
        "perfmodel: error: writing .parquet needs pyarrow: pip install pyarrow (or write a .csv path)"
    ]
    assert not out.exists()
