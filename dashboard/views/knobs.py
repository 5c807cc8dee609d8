"""KV-knobs page: the scenario of the sidebar with KV-cache what-if knobs, beside the same without them."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

import perfmodel
from perfmodel.dashboard import charts, common
from perfmodel.dashboard.common import fmt_gib, fmt_seconds, fmt_tokens

scenario = common.scenario_inputs()
facts = common.model_facts(scenario["model"])

st.title("KV-cache knobs")
st.caption(
    f"**{scenario['model']}** on {common.gpu_labels().get(scenario['gpu'], scenario['gpu'])} × {scenario['tp']} · "
    f"{fmt_tokens(scenario['context_len'])} context, {scenario['output_tokens']:,} output tokens, "
    f"batch {scenario['batch']}, {scenario['weight_dtype']} weights, {scenario['kv_dtype']} KV, {scenario['mode']}"
)
if scenario["extra"]:
    st.caption(
        "Parallelism: "
        + ", ".join(f"{k}={v}" for k, v in scenario["extra"])
        + ". The with/without table and the context sweep price this layout."
    )
st.warning(
    "The knobs change cost, not quality: the model does not predict the accuracy loss of the techniques "
    "they stand for (see docs/knobs.md).",
    icon=":material/warning:",
)

OFF = "off"
heads = [h for h in range(1, facts["q_heads"] + 1) if facts["q_heads"] % h == 0 and h < facts["kv_heads"]]
c1, c2, c3 = st.columns(3)
with c1:
    st.markdown("**Storage**")
    kv_fmt = st.selectbox(
        "KV format",
        (OFF, "fp8", "int8", "int4"),
        key="knob_kv_dtype",
        help="Quantised KV cache (KIVI, KVQuant, FP8 KV); adds a dequantisation pass in decode.",
    )
    kv_layers = st.number_input(
        "Layers with their own KV (0: all)",
        min_value=0,
        max_value=facts["layers"],
        value=0,
        step=1,
        key="knob_kv_layers",
        help="Cross-layer KV sharing (CLA, YOCO): the other layers reuse them.",
    )
    kv_heads = st.selectbox(
        "KV heads",
        [OFF] + heads,
        key="knob_kv_heads",
        disabled=facts["mla"] or not heads,
        help="Fewer KV heads (MHA to GQA/MQA uptraining); must divide the query heads.",
    )
    host_tier = st.checkbox(
        "Spill KV to host DDR",
        key="knob_host_ddr",
        help="KV that does not fit in HBM lives in host memory and streams over PCIe.",
    )
with c2:
    st.markdown("**Eviction and sparsity**")
    keep = st.slider(
        "Fraction of tokens kept",
        0.05,
        1.0,
        1.0,
        0.05,
        key="knob_keep_ratio",
        help="Token eviction (H2O, SnapKV).",
    )
    budget = st.number_input(
        "KV budget per sequence (tokens, 0: none)",
        min_value=0,
        max_value=10_000_000,
        value=0,
        step=1024,
        key="knob_budget",
    )
    prune = st.checkbox(
        "Pruned tokens also skip prefill",
        key="knob_prune",
        help="Prompt compression (LLMLingua, LazyLLM); needs eviction.",
    )
    density = st.slider(
        "Attention density",
        0.05,
        1.0,
        1.0,
        0.05,
        key="knob_density",
        help="Fraction of query-key blocks computed (MInference, Quest, NSA).",
    )
with c3:
    st.markdown("**Architecture and sharing**")
    window = st.number_input(
        "Sliding window (tokens, 0: none)",
        min_value=0,
        max_value=10_000_000,
        value=0,
        step=1024,
        key="knob_window",
    )
    attn_every = st.number_input(
        "One attention layer in every N (1: all)",
        min_value=1,
        max_value=facts["layers"],
        value=1,
        step=1,
        key="knob_attention_every",
        help="Hybrid stacks (Jamba, Samba): the others keep a constant-size state.",
    )
    prefix = st.number_input(
        "Shared prefix (tokens)",
        min_value=0,
        max_value=10_000_000,
        value=0,
        step=1024,
        key="knob_prefix",
        help="Prefix caching: stored and prefilled once per batch.",
    )

items = []
if kv_fmt != OFF:
    items.append(("kv_dtype", kv_fmt))
if kv_layers:
    items.append(("kv_layers", int(kv_layers)))
if kv_heads != OFF and not facts["mla"]:
    items.append(("kv_heads", int(kv_heads)))
if host_tier:
    items.append(("kv_tiers", "ddr"))
if keep < 1.0:
    items.append(("kv_keep_ratio", float(keep)))
if budget:
    items.append(("kv_budget_tokens", int(budget)))
if prune:
    items.append(("prune_prefill", True))
if density < 1.0:
    items.append(("attention_density", float(density)))
if window:
    items.append(("sliding_window", int(window)))
if attn_every > 1:
    items.append(("attention_every", int(attn_every)))
if prefix:
    items.append(("shared_prefix_tokens", int(prefix)))
items = tuple(items)

if not items:
    st.info("Set a knob above to compare the scenario with and without it.", icon=":material/info:")

try:
    base = common.analysis_view(**scenario)
except ValueError as exc:
    base = None
    common.show_error(exc, "without the knobs")
try:
    with_k = common.analysis_view(**scenario, knob_items=items) if items else None
except ValueError as exc:
    with_k = None
    common.show_error(exc, "with the knobs")
    if not isinstance(exc, perfmodel.DoesNotFitError):
        st.stop()

ROWS = [
    ("Prefill", "prefill_s", fmt_seconds),
    ("Decode time per token", "decode_s_per_token", fmt_seconds),
    ("Decode, all output tokens", "decode_s", fmt_seconds),
    ("Max concurrency (users)", "max_concurrency", lambda v: f"{v:,}"),
    ("Context switch", "context_switch_s", fmt_seconds),
    ("KV cache of the batch", "kv_cache_bytes", fmt_gib),
    ("Session throughput (tok/s)", "session_throughput_tokens_per_s", lambda v: f"{v:,.1f}"),
]
if with_k is not None:
    for note in with_k["notes"]:
        if not note.startswith("the knobs change cost, not quality"):
            st.info(note, icon=":material/info:")
    cols = st.columns(4)
    for col, (label, key, fmt) in zip(cols, [ROWS[0], ROWS[1], ROWS[3], ROWS[4]]):
        ratio = (with_k.get("knob_ratio") or {}).get(key)
        col.metric(
            label,
            fmt(with_k[key]),
            delta=f"{ratio:.2f}× without the knobs" if ratio is not None else None,
            delta_color="off",
            delta_arrow="off",
        )
    if base is not None:
        table = pd.DataFrame(
            {
                "metric": [r[0] for r in ROWS],
                "without the knobs": [r[2](base[r[1]]) for r in ROWS],
                "with the knobs": [r[2](with_k[r[1]]) for r in ROWS],
                "with / without": [
                    f"{with_k['knob_ratio'][r[1]]:.3g}×"
                    if with_k.get("knob_ratio") and with_k["knob_ratio"].get(r[1]) is not None
                    else "n/a"
                    for r in ROWS
                ],
            }
        ).set_index("metric")
        st.table(table)
    st.caption("Knobs: " + ", ".join(f"{k}={v}" for k, v in with_k["knobs"].items()))

st.subheader("Against context length")
frames = {}
shortest = max(int(window), int(prefix))  # a window or a shared prefix needs a longer context
lens = tuple(c for c in common.SWEEP_CONTEXT_LENS if c > shortest)
try:
    frames["without the knobs"] = common.sweep_view(
        scenario["model"],
        scenario["gpu"],
        scenario["output_tokens"],
        scenario["batch"],
        scenario["tp"],
        scenario["mode"],
        scenario["weight_dtype"],
        scenario["kv_dtype"],
        lens,
        extra=scenario["extra"],
    )
    if items:
        frames["with the knobs"] = common.sweep_view(
            scenario["model"],
            scenario["gpu"],
            scenario["output_tokens"],
            scenario["batch"],
            scenario["tp"],
            scenario["mode"],
            scenario["weight_dtype"],
            scenario["kv_dtype"],
            lens,
            extra=scenario["extra"],
            knob_items=items,
        )
except ValueError as exc:
    common.show_error(exc, "sweep")
if frames and lens:
    dec, conc = charts.sweep_compare_charts(frames, scenario["context_len"])
    a, b = st.columns(2)
    a.altair_chart(dec, width="stretch")
    b.altair_chart(conc, width="stretch")
    st.caption(
        "Decode time is drawn where the batch fits."
        + (f" Contexts start above the window / shared prefix ({shortest:,} tokens)." if shortest else "")
    )

if with_k is not None:
    st.download_button(
        "Download JSON",
        json.dumps({k: v for k, v in with_k.items() if k != "memory_per_gpu"}, indent=2),
        file_name=f"{scenario['model']}_{scenario['gpu']}_knobs.json",
        mime="application/json",
        key="knobs_download",
    )
