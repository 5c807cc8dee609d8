"""Altair chart builders of the dashboard (display only: unit conversions and layout)."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

GIB = 2**30

MEMORY_COLORS = {
    "weights": "#4c78a8",
    "KV cache": "#f58518",
    "activations": "#54a24b",
    "reserve": "#9d755d",
    "free": "#d3d3d3",
}
BOUND_COLORS = {
    "compute": "#e45756",
    "HBM bandwidth": "#4c78a8",
    "launch latency": "#b279a2",
    "GPU interconnect": "#72b7b2",
    "PCIe": "#eeca3b",
}


def memory_bar(mem: dict[str, float], title: str = "") -> alt.Chart:
    """Horizontal stacked bar of one GPU's memory (GiB)."""
    parts = [
        ("weights", mem["weight_bytes"]),
        ("KV cache", mem["kv_bytes"]),
        ("activations", mem["activation_bytes"]),
        ("reserve", mem["reserve_bytes"]),
        ("free", max(mem["free_bytes"], 0.0)),
    ]
    df = pd.DataFrame(
        {
            "part": [p for p, _ in parts],
            "GiB": [b / GIB for _, b in parts],
            "order": list(range(len(parts))),
            "gpu": title or "per GPU",
        }
    )
    df["label"] = df["GiB"].map(lambda x: f"{x:,.1f}")
    cap = mem["capacity_bytes"] / GIB
    bar = (
        alt.Chart(df)
        .mark_bar(height=34)
        .encode(
            x=alt.X(
                "sum(GiB):Q", title=f"GiB per GPU (usable {cap:,.1f} GiB)", scale=alt.Scale(domain=[0, cap])
            ),
            y=alt.Y("gpu:N", title=None, axis=None),
            color=alt.Color(
                "part:N",
                scale=alt.Scale(domain=list(MEMORY_COLORS), range=list(MEMORY_COLORS.values())),
                legend=alt.Legend(orient="top", title=None, direction="horizontal"),
            ),
            order=alt.Order("order:Q"),
            tooltip=[alt.Tooltip("part:N"), alt.Tooltip("GiB:Q", format=",.2f")],
        )
    )
    return bar.properties(height=110)


def _context_axis() -> alt.X:
    """The sweep charts' x axis: context length on a log scale, 1K to 1M tokens."""
    return alt.X(
        "context_len:Q",
        title="context length (tokens, log scale)",
        scale=alt.Scale(type="log", domain=[1000, 1_000_000]),
        axis=alt.Axis(values=[1000, 10_000, 100_000, 1_000_000], format="~s"),
    )


def _context_rule(context_len: int) -> alt.Chart:
    """A dashed vertical rule at the scenario's context length."""
    return (
        alt.Chart(pd.DataFrame({"context_len": [context_len]}))
        .mark_rule(color="#888", strokeDash=[4, 4])
        .encode(x="context_len:Q")
    )


def sweep_charts(df: pd.DataFrame, context_len: int) -> tuple[alt.Chart, alt.Chart]:
    """Decode time per token and max concurrency against context length (log x axis)."""
    band = "decode_s_per_token_low" in df and bool(
        (df["decode_s_per_token_high"] > df["decode_s_per_token_low"]).any()
    )
    cols = ["context_len", "decode_s_per_token", "max_concurrency", "fits"]
    d = df[cols + (["decode_s_per_token_low", "decode_s_per_token_high"] if band else [])].copy()
    d["decode_ms_per_token"] = d["decode_s_per_token"] * 1e3
    x = _context_axis()
    rule = _context_rule(context_len)
    dec = (
        alt.Chart(d.dropna(subset=["decode_ms_per_token"]))
        .mark_line(strokeWidth=2.5)
        .encode(
            x=x,
            y=alt.Y("decode_ms_per_token:Q", title="decode time per token (ms)"),
            tooltip=[
                alt.Tooltip("context_len:Q", format=","),
                alt.Tooltip("decode_ms_per_token:Q", format=".2f"),
            ],
        )
    )
    conc = (
        alt.Chart(d)
        .mark_line(strokeWidth=2.5, color="#f58518")
        .encode(
            x=x,
            y=alt.Y("max_concurrency:Q", title="max concurrent users (whole KV resident)"),
            tooltip=[alt.Tooltip("context_len:Q", format=","), alt.Tooltip("max_concurrency:Q", format=",")],
        )
    )
    if band:  # the 80% error band, shaded under the line
        d["low_ms"], d["high_ms"] = d["decode_s_per_token_low"] * 1e3, d["decode_s_per_token_high"] * 1e3
        area = (
            alt.Chart(d.dropna(subset=["decode_ms_per_token"]))
            .mark_area(opacity=0.25, color="#4c78a8")
            .encode(
                x=x,
                y=alt.Y("low_ms:Q", title="decode time per token (ms)"),
                y2="high_ms:Q",
                tooltip=[
                    alt.Tooltip("context_len:Q", format=","),
                    alt.Tooltip("low_ms:Q", format=".2f", title="80% band low"),
                    alt.Tooltip("high_ms:Q", format=".2f", title="80% band high"),
                ],
            )
        )
        dec = area + dec
    return (dec + rule).properties(height=300), (conc + rule).properties(height=300)


def roofline_chart(rl: dict[str, Any]) -> alt.Chart:
    """Log-log roofline (peak tensor FLOP/s, fp32 FLOP/s, HBM bandwidth) with the ops as points (TFLOP/s)."""
    ops = rl["ops"].copy()
    bw, peak, fp32 = rl["hbm_bytes_per_s"], rl["peak_flops_per_s"], rl["fp32_flops_per_s"]
    lo = min(0.05, float(ops["intensity_flops_per_byte"].min()) / 2) if len(ops) else 0.05
    hi = max(1e4, float(ops["intensity_flops_per_byte"].max()) * 2) if len(ops) else 1e4

    def ceiling(top: float, name: str) -> pd.DataFrame:  # three points: slope, ridge, flat
        xs = np.array([lo, min(max(top / bw, lo), hi), hi])
        return pd.DataFrame({"intensity": xs, "TFLOP/s": np.minimum(top, bw * xs) / 1e12, "ceiling": name})

    lines = pd.concat(
        [
            ceiling(peak, f"{rl['peak_dtype']} tensor peak / HBM"),
            ceiling(fp32, "fp32 peak / HBM (element-wise ops)"),
        ]
    )
    ceil = (
        alt.Chart(lines)
        .mark_line(strokeWidth=2)
        .encode(
            x=alt.X("intensity:Q", scale=alt.Scale(type="log"), title="arithmetic intensity (FLOP / byte)"),
            y=alt.Y("TFLOP/s:Q", scale=alt.Scale(type="log"), title="achieved TFLOP/s"),
            strokeDash=alt.StrokeDash(
                "ceiling:N",
                legend=alt.Legend(
                    orient="top-left", title=None, fillColor="white", labelLimit=400, padding=6
                ),
            ),
            color=alt.value("#444"),
        )
    )
    ops["TFLOP/s"] = ops["achieved_flops_per_s"] / 1e12
    ops["time_us"] = ops["time_s"] * 1e6
    pts = (
        alt.Chart(ops)
        .mark_circle(opacity=0.8)
        .encode(
            size=alt.Size("share_of_pass:Q", scale=alt.Scale(range=[40, 600]), legend=None),
            x=alt.X("intensity_flops_per_byte:Q", scale=alt.Scale(type="log")),
            y=alt.Y("TFLOP/s:Q", scale=alt.Scale(type="log")),
            color=alt.Color(
                "bound:N",
                scale=alt.Scale(domain=list(BOUND_COLORS), range=list(BOUND_COLORS.values())),
                legend=alt.Legend(orient="bottom-right", title="bound", fillColor="white", padding=6),
            ),
            tooltip=[
                alt.Tooltip("op:N"),
                alt.Tooltip("intensity_flops_per_byte:Q", format=".3g", title="FLOP/byte"),
                alt.Tooltip("TFLOP/s:Q", format=".3g"),
                alt.Tooltip("time_us:Q", format=".3g", title="µs per call"),
                alt.Tooltip("count_per_pass:Q", format=".3g", title="calls per pass"),
                alt.Tooltip("share_of_pass:Q", format=".1%", title="share of pass time"),
                alt.Tooltip("bound:N"),
            ],
        )
    )
    text = (
        alt.Chart(_label_groups(ops))
        .mark_text(align="left", dx=9, dy=-8, fontSize=11, color="#333")
        .encode(
            x=alt.X("x:Q", scale=alt.Scale(type="log")),
            y=alt.Y("y:Q", scale=alt.Scale(type="log")),
            text="label:N",
        )
    )
    return alt.layer(ceil, pts, text).resolve_scale(color="independent").properties(height=440)


def _label_groups(ops: pd.DataFrame, max_names: int = 3) -> pd.DataFrame:
    """One label per cluster of points that would overlap (same place within ~12 % on both log axes)."""
    if not len(ops):
        return pd.DataFrame({"x": [], "y": [], "label": []})
    d = ops.assign(
        gx=np.round(np.log10(ops["intensity_flops_per_byte"]) * 20),
        gy=np.round(np.log10(ops["TFLOP/s"]) * 20),
    )
    rows = []
    for _, g in d.sort_values("share_of_pass", ascending=False).groupby(["gx", "gy"], sort=False):
        names = [n.split(".")[-1] for n in g["op"]]
        label = ", ".join(names[:max_names]) + (
            f" +{len(names) - max_names}" if len(names) > max_names else ""
        )
        rows.append(
            {
                "x": float(g["intensity_flops_per_byte"].iloc[0]),
                "y": float(g["TFLOP/s"].iloc[0]),
                "label": label,
            }
        )
    return pd.DataFrame(rows)


def comparison_chart(rows: pd.DataFrame) -> alt.Chart:
    """Grouped bars of each metric relative to the first GPU (ratio, log scale)."""
    return (
        alt.Chart(rows)
        .mark_bar()
        .encode(
            y=alt.Y("metric:N", title=None),
            x=alt.X("ratio:Q", title="relative to the first GPU (x)", scale=alt.Scale(type="log")),
            color=alt.Color("gpu:N", legend=alt.Legend(orient="bottom", title=None)),
            yOffset="gpu:N",
            tooltip=["metric:N", "gpu:N", alt.Tooltip("ratio:Q", format=".2f"), "value:N"],
        )
        .properties(height=220)
    )


def sweep_compare_charts(frames: dict[str, pd.DataFrame], context_len: int) -> tuple[alt.Chart, alt.Chart]:
    """Decode time per token and max concurrency against context length, one line per labelled sweep."""
    d = pd.concat(
        [
            f[["context_len", "decode_s_per_token", "max_concurrency"]].assign(case=name)
            for name, f in frames.items()
        ],
        ignore_index=True,
    )
    d["decode_ms_per_token"] = d["decode_s_per_token"] * 1e3
    x = _context_axis()
    color = alt.Color("case:N", legend=alt.Legend(orient="top", title=None))
    rule = _context_rule(context_len)
    dec = (
        alt.Chart(d.dropna(subset=["decode_ms_per_token"]))
        .mark_line(strokeWidth=2.5)
        .encode(
            x=x,
            y=alt.Y("decode_ms_per_token:Q", title="decode time per token (ms)"),
            color=color,
            tooltip=[
                "case:N",
                alt.Tooltip("context_len:Q", format=","),
                alt.Tooltip("decode_ms_per_token:Q", format=".2f"),
            ],
        )
    )
    conc = (
        alt.Chart(d)
        .mark_line(strokeWidth=2.5)
        .encode(
            x=x,
            y=alt.Y("max_concurrency:Q", title="max concurrent users"),
            color=color,
            tooltip=[
                "case:N",
                alt.Tooltip("context_len:Q", format=","),
                alt.Tooltip("max_concurrency:Q", format=","),
            ],
        )
    )
    return (dec + rule).properties(height=300), (conc + rule).properties(height=300)
