"""Validation page: predicted against measured times from the shipped records, per op class, with the error table."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from perfmodel.dashboard import common

DATA_DIR = Path(__file__).resolve().parents[2] / "validation" / "data"


def record_files() -> dict[str, Path]:
    """Shipped op and layer record files by GPU name (``validation/data/<gpu>.jsonl``, ``<gpu>`` a known GPU)."""
    known = set(common.gpu_names())
    return {p.stem: p for p in sorted(DATA_DIR.glob("*.jsonl")) if p.stem in known}


@st.cache_data(show_spinner=False, max_entries=8)
def held_out_view(path: str, gpu: str, mtime_ns: int) -> dict:
    """``perfmodel.validation.report.evaluate`` on one record file: fit on some shape families, score the others.

    Returns the error table (calibrated and peak) and one row per held-out record.
    ``mtime_ns`` only keys the cache to the file's version.
    """
    from perfmodel.hw import load_gpu
    from perfmodel.calibration import peak_profile
    from perfmodel.validation.fit import ops_of, predict_ops
    from perfmodel.validation.records import class_key, read_records
    from perfmodel.validation.report import evaluate

    rep = evaluate(read_records(path, gpu), gpu)
    peak = predict_ops(ops_of(rep.records), load_gpu(gpu), peak_profile(gpu))
    table = pd.DataFrame(
        [
            {
                "op class": c.key,
                "n": c.n,
                "median APE": c.median,
                "p90 APE": c.p90,
                "max APE": c.max,
                "peak-mode median": p.median,
                "peak-mode p90": p.p90,
            }
            for c, p in zip(rep.calibrated, rep.peak)
        ]
    )
    recs = pd.DataFrame(
        {
            "op class": [class_key(r) for r in rep.records],
            "family": [r.get("family", "") for r in rep.records],
            "impl": [r.get("impl", "") for r in rep.records],
            "measured_s": [float(r["measured_s"]) for r in rep.records],
            "calibrated_s": np.asarray(rep.predicted, dtype=float),
            "peak_s": np.asarray(peak, dtype=float),
        }
    )
    m = rep.fitter.profile_.measured_on
    first = rep.records[0]
    meta = {
        "gpu": m.get("gpu") or first.get("gpu"),
        "driver": m.get("driver") or first.get("driver"),
        "torch": m.get("torch") or first.get("torch"),
        "triton": m.get("triton") or first.get("triton"),
        "dates": m.get("dates") or [first.get("date")],
        "n_train": rep.n_train,
        "n_test": rep.n_test,
    }
    return {"table": table, "records": recs, "meta": meta}


st.title("Validation")
st.caption(
    "Predicted against measured kernel and layer times. The profile is fitted on some shape families of "
    "the shipped records and scored on the others (held out), as `python -m perfmodel.validation.report` does; "
    "peak mode is the datasheet roofline on the same records."
)
files = record_files()
if not files:
    st.info("No measurement records in validation/data/.", icon=":material/info:")
    st.stop()
labels = common.gpu_labels()
gpu = st.selectbox("GPU", list(files), format_func=lambda g: labels.get(g, g), key="val_gpu")
path = files[gpu]
try:
    with st.spinner("Fitting on the training families and scoring the held-out ones..."):
        view = held_out_view(str(path), gpu, path.stat().st_mtime_ns)
except ValueError as exc:
    common.show_error(exc)
    st.stop()
meta = view["meta"]
st.caption(
    f"Measured on {meta['gpu']}, driver {meta['driver']}, torch {meta['torch']}, triton {meta['triton']}, "
    f"{', '.join(str(d) for d in meta['dates'])}; fitted on {meta['n_train']:,} records, "
    f"scored on {meta['n_test']:,} held-out records."
)

table = view["table"]
overall = table[table["op class"] == "ALL held-out records"]
if len(overall):
    o = overall.iloc[0]
    c1, c2, c3 = st.columns(3)
    c1.metric("Median error, calibrated", f"{o['median APE']:.1%}")
    c2.metric("p90 error, calibrated", f"{o['p90 APE']:.1%}")
    c3.metric("Median error, peak mode", f"{o['peak-mode median']:.1%}")

recs = view["records"]
classes = sorted(recs["op class"].unique())
c1, c2 = st.columns([2, 1])
chosen = c1.multiselect("Op classes", classes, default=classes, key="val_classes")
mode = c2.radio("Prediction", ("calibrated", "peak"), horizontal=True, key="val_mode")
d = recs[recs["op class"].isin(chosen)].copy()
d["measured_us"] = d["measured_s"] * 1e6
d["predicted_us"] = d[f"{mode}_s"] * 1e6
d["error"] = d[f"{mode}_s"] / d["measured_s"] - 1.0
if len(d):
    lo = float(min(d["measured_us"].min(), d["predicted_us"].min())) / 1.5
    hi = float(max(d["measured_us"].max(), d["predicted_us"].max())) * 1.5
    diag = (
        alt.Chart(pd.DataFrame({"x": [lo, hi]}))
        .mark_line(color="#888", strokeDash=[4, 4])
        .encode(
            x=alt.X("x:Q", scale=alt.Scale(type="log", domain=[lo, hi])),
            y=alt.Y("x:Q", scale=alt.Scale(type="log", domain=[lo, hi])),
        )
    )
    pts = (
        alt.Chart(d)
        .mark_circle(size=36, opacity=0.7)
        .encode(
            x=alt.X(
                "measured_us:Q",
                title="measured (µs, log scale)",
                scale=alt.Scale(type="log", domain=[lo, hi]),
            ),
            y=alt.Y(
                "predicted_us:Q",
                title=f"predicted, {mode} (µs, log scale)",
                scale=alt.Scale(type="log", domain=[lo, hi]),
            ),
            color=alt.Color(
                "op class:N",
                scale=alt.Scale(scheme="tableau20"),
                legend=alt.Legend(orient="right", title=None, labelLimit=260),
            ),
            tooltip=[
                "op class:N",
                "family:N",
                "impl:N",
                alt.Tooltip("measured_us:Q", format=".3g"),
                alt.Tooltip("predicted_us:Q", format=".3g"),
                alt.Tooltip("error:Q", format="+.1%"),
            ],
        )
    )
    st.altair_chart((diag + pts).properties(height=480), width="stretch")
    st.caption("On the dashed line the prediction equals the measurement.")

st.subheader("Error per op class (held-out records)")
pct = {
    c: st.column_config.NumberColumn(c, format="percent")
    for c in ("median APE", "p90 APE", "max APE", "peak-mode median", "peak-mode p90")
}
st.dataframe(table, hide_index=True, width="stretch", column_config=pct, height=35 * (len(table) + 1) + 3)
st.caption(
    "APE: absolute percentage error |predicted / measured - 1|. Decoder layers are never fitted: each is "
    "predicted as the sum of its ops."
)
