"""Serving page: run the serving simulator on a workload; TTFT/TPOT distributions and HBM occupancy over time."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from perfmodel.dashboard import common
from perfmodel.dashboard.common import fmt_seconds
from perfmodel.dashboard.uploads import MAX_REQUESTS, trace_from_upload

#: Timeline rows drawn (the chart keeps every n-th iteration beyond this).
MAX_TIMELINE_POINTS = 3000


@st.cache_data(show_spinner=False, max_entries=8)
def simulate_view(
    model: str,
    gpu: str,
    tp: int,
    replicas: int,
    mode: str,
    weight_dtype: str,
    kv_dtype: str,
    kv_policy: str,
    max_num_seqs: int,
    requests: tuple,
    slo: tuple,
) -> dict:
    """``perfmodel.serving.simulate`` on one deployment; the summary, request table and timeline.

    ``requests`` is ``("workload", n, rate, prompt_spec, output_spec, seed, prefix_specs)`` (cached
    prefixes as ``perfmodel simulate --prefix`` takes them) or ``("trace", arrival_s, prompt_len,
    output_len)`` (tuples of numbers).
    """
    from perfmodel.serving import Deployment, LengthDist, Requests, Slo, Workload, simulate
    from perfmodel.serving.workload import CachedPrefix

    dep = Deployment.make(
        model,
        gpu,
        mode=mode,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        tp=tp,
        replicas=replicas,
        kv_policy=kv_policy,
        max_num_seqs=max_num_seqs,
    )
    if requests[0] == "workload":
        _, n, rate, p_spec, o_spec, seed, prefixes = requests
        reqs = Workload(
            int(n),
            float(rate),
            LengthDist.parse(p_spec, "prompt length"),
            LengthDist.parse(o_spec, "output length"),
            int(seed),
            tuple(CachedPrefix.parse(t) for t in prefixes),
        )
    else:
        reqs = Requests.of(np.asarray(requests[1]), np.asarray(requests[2]), np.asarray(requests[3]))
    res = simulate(dep, reqs)
    s = Slo(ttft_s=slo[0], tpot_s=slo[1]) if any(v is not None for v in slo) else None
    return {
        "summary": res.summary(s),
        "requests": res.requests_frame(),
        "timeline": res.timeline_frame(),
        "hbm_capacity_bytes": float(dep.gpu.hbm_usable_bytes),
        "notes": list(res.notes),
    }


st.title("Serving")
st.caption(
    "Continuous batching with chunked prefill over a paged KV cache, iteration times from the analytical "
    "model; every request runs to completion."
)
models, gpus, labels = common.model_names(), common.gpu_names(), common.gpu_labels()
with st.form("serve_form"):
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox(
        "Model", models, index=models.index("llama-3-8b") if "llama-3-8b" in models else 0, key="serve_model"
    )
    gpu = c1.selectbox(
        "GPU",
        gpus,
        format_func=lambda g: labels.get(g, g),
        key="serve_gpu",
        index=gpus.index("h100-sxm-80gb") if "h100-sxm-80gb" in gpus else 0,
    )
    tp = c1.number_input("TP per replica", 1, 64, 1, key="serve_tp")
    replicas = c1.number_input("Replicas", 1, 64, 1, key="serve_replicas")
    source = c2.radio("Requests", ("generate", "upload trace"), horizontal=True, key="serve_source")
    n = c2.number_input("Requests", 1, MAX_REQUESTS, 300, key="serve_n")
    rate = c2.number_input("Arrival rate (requests/s, 0: all at once)", 0.0, 1e6, 10.0, key="serve_rate")
    prompt = c2.text_input(
        "Prompt length",
        "lognormal:2048:1.0:7000",
        key="serve_prompt",
        help="N, lognormal:MEAN:SIGMA[:CAP] or uniform:LOW:HIGH (tokens).",
    )
    output = c2.text_input(
        "Output length", "128", key="serve_output", help="Same forms; includes the first token."
    )
    prefix_text = c2.text_input(
        "Cached prefixes",
        "",
        key="serve_prefixes",
        help="Comma-separated TOKENS:SHARE[:HIT_RATE[:TIER]], e.g. 4096:0.5:0.9, "
        "16384:0.2:0.7:host: a prefix opening SHARE of the prompts, found cached "
        "at HIT_RATE in hbm (default), host or ssd:BYTES_PER_S.",
    )
    policy = c3.selectbox("When KV does not fit", ("swap", "recompute", "queue"), key="serve_policy")
    max_seqs = c3.number_input("Max resident requests per replica", 1, 8192, 256, key="serve_max_seqs")
    ttft = c3.number_input("TTFT target (s, 0: none)", 0.0, 1e4, 2.0, key="serve_slo_ttft")
    tpot = c3.number_input("TPOT target (s, 0: none)", 0.0, 10.0, 0.05, format="%.3f", key="serve_slo_tpot")
    w1, w2, w3 = st.columns(3)
    weight_dtype = w1.selectbox("Weights", common.DTYPES, key="serve_weight_dtype")
    kv_dtype = w2.selectbox("KV cache", common.DTYPES, key="serve_kv_dtype")
    mode = w3.radio("Mode", common.MODES, horizontal=True, key="serve_mode")
    up = st.file_uploader(
        "Trace: CSV or JSON list with arrival_s, prompt_len, output_len",
        type=["json", "csv"],
        key="serve_upload",
        help=f"JSON or CSV only, at most {common.MAX_UPLOAD_BYTES:,} bytes.",
    )
    st.form_submit_button("Simulate", type="primary")

try:
    if source == "upload trace":
        if up is None:
            st.info("Upload a trace, or generate requests.", icon=":material/upload:")
            st.stop()
        requests = trace_from_upload(common.parse_upload(up.name, up.getvalue()))
    else:
        prefixes = tuple(t.strip() for t in prefix_text.split(",") if t.strip())
        requests = (
            "workload",
            int(n),
            float(rate) if rate > 0 else float("inf"),
            prompt,
            output,
            0,
            prefixes,
        )
    slo = (float(ttft) or None, float(tpot) or None)
    with st.spinner("Simulating..."):
        out = simulate_view(
            model,
            gpu,
            int(tp),
            int(replicas),
            mode,
            weight_dtype,
            kv_dtype,
            policy,
            int(max_seqs),
            requests,
            slo,
        )
except ValueError as exc:
    common.show_error(exc)
    st.stop()

for note in out.get("notes", []):
    st.info(note)
s = out["summary"]
m = st.columns(7)
m[0].metric("TTFT p50", fmt_seconds(s["ttft_s"]["p50"]), help="Time to first token, median.")
m[1].metric("TTFT p90", fmt_seconds(s["ttft_s"]["p90"]))
m[2].metric(
    "TPOT p50", fmt_seconds(s["tpot_s"]["p50"]), help="Time per output token after the first, median."
)
m[3].metric("TPOT p90", fmt_seconds(s["tpot_s"]["p90"]))
m[4].metric("Throughput (tok/s)", f"{s['throughput_tokens_per_s']:,.0f}")
m[5].metric("Peak concurrency", f"{s['peak_concurrency']:,}", help="Requests resident at once on a replica.")
m[6].metric(
    "Preemptions", f"{s['preemptions']:,}", help=f"KV moved out: {s['swap_out_bytes'] / 2**30:,.1f} GiB."
)
if "slo" in s:
    parts = [
        f"{k.upper()} p{v['percentile']:g} {fmt_seconds(v['achieved_s'])} vs {fmt_seconds(v['target_s'])} "
        f"({'met' if v['met'] else 'missed'})"
        for k, v in s["slo"].items()
    ]
    st.caption(f"SLO: {'; '.join(parts)} · goodput {s['goodput_requests_per_s']:,.2f} requests/s")
if "prefix_cache" in s:
    pc = s["prefix_cache"]
    st.caption(
        f"Cached prefixes: {pc['hits']:,} hits of {pc['requests_with_prefix']:,} requests with a prefix, "
        f"{pc['cached_prompt_tokens']:,} prompt tokens from the cache; {pc['loads']:,} loads from host or "
        f"SSD, {pc['load_bytes'] / 2**30:,.1f} GiB in {fmt_seconds(pc['load_s'])}"
    )
st.caption(
    f"{s['deployment']} · {s['completed']:,} requests in {fmt_seconds(s['makespan_s'])} of simulated time, "
    f"{s['iterations']:,} iterations, simulated in {s['sim_wall_s']:.2f} s"
)

req = out["requests"]
dist = pd.concat(
    [
        pd.DataFrame({"metric": "TTFT (ms)", "ms": req["ttft_s"] * 1e3}),
        pd.DataFrame({"metric": "TPOT (ms)", "ms": req["tpot_s"] * 1e3}),
    ]
).dropna()
c1, c2 = st.columns(2)
for col, name in ((c1, "TTFT (ms)"), (c2, "TPOT (ms)")):
    d = dist[dist["metric"] == name]
    col.altair_chart(
        alt.Chart(d)
        .mark_bar(color="#4c78a8")
        .encode(
            x=alt.X("ms:Q", bin=alt.Bin(maxbins=40), title=name),
            y=alt.Y("count():Q", title="requests"),
            tooltip=[alt.Tooltip("count():Q", title="requests")],
        )
        .properties(height=250, title=f"{name.split()[0]} distribution"),
        width="stretch",
    )

tl = out["timeline"]
if len(tl) > MAX_TIMELINE_POINTS:
    tl = tl.iloc[:: int(np.ceil(len(tl) / MAX_TIMELINE_POINTS))]
tl = tl.assign(kv_gib=tl["kv_bytes_per_gpu"] / 2**30, replica=tl["replica"].astype(str))
cap_gib = out["hbm_capacity_bytes"] / 2**30
occ = (
    alt.Chart(tl)
    .mark_line(interpolate="step-after")
    .encode(
        x=alt.X("start_s:Q", title="time (s)"),
        y=alt.Y("kv_gib:Q", title="KV cache in HBM per GPU (GiB)"),
        color=alt.Color(
            "replica:N", legend=alt.Legend(orient="top", title="replica") if int(replicas) > 1 else None
        ),
        tooltip=[
            alt.Tooltip("start_s:Q", format=".2f"),
            alt.Tooltip("kv_gib:Q", format=".2f"),
            "resident_requests:Q",
            "waiting_requests:Q",
        ],
    )
)
st.subheader("HBM occupancy over time")
st.altair_chart(occ.properties(height=280), width="stretch")
st.caption(
    f"The KV cache's share of each GPU's {cap_gib:,.1f} GiB; weights and workspace take the rest. "
    f"Peak {tl['kv_occupancy'].max():.0%} of the KV capacity."
)
st.download_button(
    "Download requests CSV",
    req.to_csv(index=False),
    file_name="requests.csv",
    mime="text/csv",
    key="serve_download",
)
