"""What-if page: one deployment scenario, its four long-context metrics and where the time goes."""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

import perfmodel
from perfmodel.dashboard import charts, common
from perfmodel.dashboard.common import bound_label, fmt_gib, fmt_seconds, fmt_tokens

t_start = time.perf_counter()

gpus = common.gpu_names()
labels = common.gpu_labels()

scenario = common.scenario_inputs()
model, gpu, tp, mode = scenario["model"], scenario["gpu"], scenario["tp"], scenario["mode"]
context_len, output_tokens, batch = scenario["context_len"], scenario["output_tokens"], scenario["batch"]
weight_dtype, kv_dtype = scenario["weight_dtype"], scenario["kv_dtype"]

facts = common.model_facts(model)
st.title("What-if")
st.caption(
    f"**{model}**: {facts['params'] / 1e9:,.1f} B parameters"
    + (f" ({facts['active_params'] / 1e9:,.1f} B active)" if facts["moe"] else "")
    + f", {facts['layers']} layers, {facts['q_heads']} query / {facts['kv_heads']} KV heads"
    + (f", trained context {fmt_tokens(facts['max_context'])}" if facts["max_context"] else "")
    + f" · **{labels.get(gpu, gpu)}** × {tp} · {fmt_tokens(int(context_len))} context, "
    f"{int(output_tokens):,} output tokens, batch {int(batch)}, {weight_dtype} weights, {kv_dtype} KV, {mode}"
)

result = None
try:
    result = common.analysis_view(**scenario)
except perfmodel.DoesNotFitError as exc:  # the sweep and the comparison still say what does fit
    common.show_error(exc)
except ValueError as exc:  # any other typed input error: nothing below can be computed
    common.show_error(exc)
    st.stop()

if result is not None:
    for note in result["notes"]:
        st.info(note, icon=":material/info:")
    b = result["bottleneck"]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(
        "Prefill (time to first token)",
        fmt_seconds(result["prefill_s"]),
        help="All prompt tokens of the batch through the model, chunked prefill.",
    )
    m1.caption(f"bound: **{bound_label(b['prefill'])}**  \n{common.band_text(result, 'prefill_s')}")
    m2.metric(
        "Decode time per token",
        fmt_seconds(result["decode_s_per_token"]),
        help="One decode step of the whole batch at the full context.",
    )
    m2.caption(f"bound: **{bound_label(b['decode'])}**  \n{common.band_text(result, 'decode_s_per_token')}")
    m3.metric(
        "Max concurrency (users)",
        f"{result['max_concurrency']:,}",
        help="Users whose whole KV cache (prompt plus output) fits in device memory at once.",
    )
    m3.caption(f"bound: **{bound_label(b['concurrency'])}**")
    m4.metric(
        "Context switch",
        fmt_seconds(result["context_switch_s"]),
        help="Swap one user's KV cache out to host memory and another's in, one after the other.",
    )
    m4.caption(f"bound: **{bound_label(b['context_switch'])}**")

    s1, s2, s3, s4 = st.columns(4)
    s1.metric("Decode, all output tokens", fmt_seconds(result["decode_s"]))
    s1.caption(common.band_text(result, "decode_s"))
    s2.metric(
        "Session throughput",
        f"{result['session_throughput_tokens_per_s']:,.1f} tok/s",
        help="Output tokens of the batch divided by prefill plus decode time.",
    )
    s3.metric("KV cache per user (per GPU)", fmt_gib(result["memory_per_gpu"]["kv_bytes_per_user"]))
    s4.metric(
        "Context switch, full duplex",
        fmt_seconds(result["context_switch_duplex_s"]),
        help="Swap-out and swap-in overlapped on the two directions of the host link.",
    )
    st.caption(
        f"Provenance ({result['mode']} mode), per op class: {common.provenance_kinds(result['provenance'])}. "
        "80% band: the central 80% interval of the measured time (held-out residuals per op class and regime, "
        "wider for transferred and datasheet curves); peak bound: the datasheet roofline."
    )
    with st.expander("Provenance per op class"):
        st.markdown("\n".join(f"- `{c}`: {label}" for c, label in result["provenance"].items()))
    if result["comm_s"]["prefill"] or result["comm_s"]["decode_per_token"]:
        share = result.get("communication") or {}
        st.caption(
            f"Communication inside these times: prefill {fmt_seconds(result['comm_s']['prefill'])}"
            + (f" ({share['prefill_share']:.0%})" if "prefill_share" in share else "")
            + f", decode {fmt_seconds(result['comm_s']['decode_per_token'])} per token"
            + (f" ({share['decode_share']:.0%})" if "decode_share" in share else "")
            + "."
        )
    if scenario["extra"]:
        st.caption(
            "Parallelism: "
            + ", ".join(f"{k}={v}" for k, v in scenario["extra"])
            + (f" · {result['parallel']['world']} GPUs in all" if result.get("parallel") else "")
            + ". The context sweep prices this layout; the roofline below shows one GPU of the TP group."
        )

    st.subheader("Memory per GPU")
    mem = result["memory_per_gpu"]
    st.altair_chart(charts.memory_bar(mem, labels.get(gpu, gpu)), width="stretch")
    st.caption(
        f"weights {fmt_gib(mem['weight_bytes'])} · KV cache {fmt_gib(mem['kv_bytes'])} "
        f"({mem['users_per_gpu']} × {fmt_gib(mem['kv_bytes_per_user'])}) · activations {fmt_gib(mem['activation_bytes'])} · "
        f"reserve {fmt_gib(mem['reserve_bytes'])} · free {fmt_gib(max(mem['free_bytes'], 0.0))} "
        f"of {fmt_gib(mem['capacity_bytes'])} usable"
    )

st.subheader("Against context length")
try:
    sw = common.sweep_view(
        model,
        gpu,
        int(output_tokens),
        int(batch),
        int(tp),
        mode,
        weight_dtype,
        kv_dtype,
        extra=scenario["extra"],
    )
except ValueError as exc:
    common.show_error(exc, "sweep")
else:
    dec_chart, conc_chart = charts.sweep_charts(sw, int(context_len))
    c1, c2 = st.columns(2)
    c1.altair_chart(dec_chart, width="stretch")
    c2.altair_chart(conc_chart, width="stretch")
    if "provenance" in sw and len(sw):
        st.caption(
            ("Shaded: the 80% error band of the decode time. " if mode == "calibrated" else "")
            + f"Provenance: {sw['provenance'].iloc[0]}."
        )
    fits = sw[sw["fits"]]
    if len(fits) < len(sw):
        limit = int(fits["context_len"].max()) if len(fits) else None
        st.caption(
            f"Batch {int(batch)} fits up to about {fmt_tokens(limit)} tokens of context on this setup; "
            "decode time is not drawn beyond."
            if limit
            else f"Batch {int(batch)} does not fit at any context length from 1K on this setup."
        )

if result is not None:
    st.subheader("Roofline of one forward pass")
    phase = st.radio(
        "Pass",
        ("decode", "prefill"),
        horizontal=True,
        key="roofline_phase",
        format_func=lambda p: "decode step" if p == "decode" else "last prefill chunk",
    )
    rl = common.roofline_view(
        model, gpu, phase, int(context_len), int(batch), int(tp), mode, weight_dtype, kv_dtype
    )
    st.altair_chart(charts.roofline_chart(rl), width="stretch")
    st.caption(
        "Each point is one op of the pass on one GPU: arithmetic intensity (FLOPs / bytes moved) against the "
        "FLOP rate its predicted time implies. "
        + (f"Not drawn (no FLOPs): {', '.join(rl['skipped'])}." if rl["skipped"] else "")
    )
    with st.expander("Ops of the pass"):
        table = rl["ops"].assign(
            time_us=lambda d: d["time_s"] * 1e6,
            gflop=lambda d: d["flops"] / 1e9,
            mb=lambda d: d["bytes"] / 1e6,
        )[
            [
                "op",
                "count_per_pass",
                "gflop",
                "mb",
                "intensity_flops_per_byte",
                "time_us",
                "share_of_pass",
                "bound",
            ]
        ]
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                "count_per_pass": st.column_config.NumberColumn("calls / pass", format="%.3g"),
                "gflop": st.column_config.NumberColumn("GFLOP / call", format="%.4g"),
                "mb": st.column_config.NumberColumn("MB / call", format="%.4g"),
                "intensity_flops_per_byte": st.column_config.NumberColumn("FLOP / byte", format="%.3g"),
                "time_us": st.column_config.NumberColumn("µs / call", format="%.4g"),
                "share_of_pass": st.column_config.NumberColumn("share of pass", format="percent"),
            },
        )

st.subheader("Compare two GPUs")
others = [g for g in gpus if g != gpu]
default_other = "h100-sxm-80gb" if "h100-sxm-80gb" in others else others[0]
if st.session_state.get("compare_gpu") not in others:
    st.session_state["compare_gpu"] = default_other
other = st.selectbox("Compare with GPU", others, format_func=lambda g: labels.get(g, g), key="compare_gpu")
BOUNDS = ("prefill", "decode", "concurrency", "context_switch")


def _banded(res, key):
    band = (
        f" ({fmt_seconds(res[key + '_low'])} – {fmt_seconds(res[key + '_high'])})"
        if res.get(key + "_high", 0) > res.get(key + "_low", 0)
        else ""
    )
    return fmt_seconds(res[key]) + band


ROWS = [
    ("Prefill (80% band)", "prefill_s", lambda res: _banded(res, "prefill_s")),
    ("Decode per token (80% band)", "decode_s_per_token", lambda res: _banded(res, "decode_s_per_token")),
    ("Max concurrency", "max_concurrency", lambda res: f"{res['max_concurrency']:,}"),
    ("Context switch", "context_switch_s", lambda res: fmt_seconds(res["context_switch_s"])),
    (
        "Session throughput (tok/s)",
        "session_throughput_tokens_per_s",
        lambda res: f"{res['session_throughput_tokens_per_s']:,.1f}",
    ),
]
NA = {gpu: "does not fit", other: "does not fit"}
try:
    second = common.analysis_view(**{**scenario, "gpu": other})
except (
    ValueError
) as exc:  # does not fit, or the sidebar's layout does not hold this GPU (a system of another GPU)
    second = None
    common.show_error(exc, labels.get(other, other))
    if not isinstance(exc, perfmodel.DoesNotFitError):
        NA[other] = "not priced (see above)"
table = pd.DataFrame(
    {"metric": [r[0] for r in ROWS] + [f"bound: {k.replace('_', ' ')}" for k in BOUNDS] + ["provenance"]}
)
for g, res in ((gpu, result), (other, second)):
    table[labels.get(g, g)] = (
        [r[2](res) for r in ROWS]
        + [bound_label(res["bottleneck"][k]) for k in BOUNDS]
        + [common.provenance_kinds(res["provenance"])]
        if res
        else [NA[g]] * len(table)
    )
table["second / first"] = (
    [f"{second[r[1]] / result[r[1]]:.2f}×" if result[r[1]] else "n/a" for r in ROWS]
    + [""] * (len(BOUNDS) + 1)
    if result and second
    else [""] * len(table)
)
st.table(table.set_index("metric"))
st.caption(
    "Provenance: where each GPU's curves come from (measured on that GPU, transferred from a measured GPU, "
    "or the datasheet); a comparison across provenances carries the wider band of the transferred one."
)

if result is not None:
    st.subheader("Scenario as JSON")
    payload = {
        k: v for k, v in result.items() if k not in ("memory_per_gpu", "provenance_summary", "peak_bound")
    }
    text = json.dumps(payload, indent=2)
    st.download_button(
        "Download JSON",
        text,
        file_name=f"{model}_{gpu}_tp{tp}_{int(context_len)}.json",
        mime="application/json",
        key="download_json",
    )
    with st.expander("Show JSON"):
        st.code(text, language="json")

st.caption(f"Page computed in {(time.perf_counter() - t_start) * 1e3:.0f} ms on the server.")
