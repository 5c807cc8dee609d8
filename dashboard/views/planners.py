"""Planners page: MoE expert placement and sequence-parallel split, each beside its baselines."""

from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from perfmodel.dashboard import common
from perfmodel.dashboard.common import UploadError, fmt_seconds
from perfmodel.dashboard.uploads import (
    MAX_EXPERTS,
    MAX_LAYERS,
    MAX_SEQUENCES,
    lengths_from_upload,
    loads_from_upload,
)


@st.cache_data(show_spinner=False, max_entries=16)
def moe_view(
    loads: np.ndarray, gpus: int, slots: int, nodes: int, affinity: np.ndarray | None, time_limit_s: float
) -> dict:
    """``perfmodel.planners.moe.plan_moe`` as a dict, plus each layer's placement and baseline placements."""
    from perfmodel.planners import moe_baselines as mb
    from perfmodel.planners.moe import MoEProblem, plan_moe
    from perfmodel.planners.solver import SolverOptions

    problem = MoEProblem(loads, gpus, slots, nodes, affinity)
    plan = plan_moe(problem, SolverOptions(time_limit_s=time_limit_s))
    out = plan.to_dict()
    out["shares"] = [mb.share_matrix(p, problem.num_experts) for p in plan.placements]
    out["baseline_gpu_loads"] = [
        {
            name: mb.gpu_loads(p, problem.loads[l])
            for name, p in mb.baselines(problem.loads[l], gpus, slots, nodes).items()
        }
        for l in range(problem.num_layers)
    ]
    out["plan_gpu_loads"] = [mb.gpu_loads(p, problem.loads[l]) for l, p in enumerate(plan.placements)]
    return out


@st.cache_data(show_spinner=False, max_entries=16)
def sp_view(
    lengths: np.ndarray, gpus: int, model: str, gpu: str, kind: str, mode: str, time_limit_s: float
) -> dict:
    """``perfmodel.planners.sp.plan_sp`` for one batch of sequence lengths, as a dict."""
    import perfmodel
    from perfmodel.planners.solver import SolverOptions
    from perfmodel.planners.sp import build_instance, plan_sp
    from perfmodel.planners.sp_cost import SpCostModel, SpKind

    scn = perfmodel.Scenario.make(
        model, gpu, context_len=int(max(lengths)), output_tokens=0, mode=mode, sp_kind=kind
    )
    cost = SpCostModel.from_scenario(scn, SpKind(kind))
    return plan_sp(build_instance(lengths, gpus, cost), SolverOptions(time_limit_s=time_limit_s)).to_dict()


def uploaded(label: str, key: str):
    """A JSON/CSV upload widget; returns the parsed content, or None (errors shown)."""
    f = st.file_uploader(
        label,
        type=["json", "csv"],
        key=key,
        help=f"JSON or CSV only, at most {common.MAX_UPLOAD_BYTES:,} bytes.",
    )
    if f is None:
        return None
    try:
        return common.parse_upload(f.name, f.getvalue())
    except UploadError as exc:
        common.show_error(exc)
        return None


def moe_section() -> None:
    from perfmodel.planners.synthetic import markov_affinity, zipf_loads

    st.caption(
        "Expert placement per MoE layer: an ILP balances the most loaded GPU (replicating hot experts "
        "into spare slots), then maps GPUs to cut cross-layer traffic when routing affinity is given."
    )
    with st.form("moe_form"):
        c1, c2, c3 = st.columns(3)
        source = c1.radio("Loads", ("generate (Zipf)", "upload"), key="moe_source")
        experts = c1.number_input("Experts", 2, MAX_EXPERTS, 32, key="moe_experts")
        layers = c1.number_input("MoE layers", 1, MAX_LAYERS, 4, key="moe_layers")
        alpha = c2.slider(
            "Zipf skew α",
            0.0,
            2.0,
            1.2,
            0.01,
            key="moe_alpha",
            help="0: balanced; 1.01 estimated for DeepSeek-V3/R1; 1.2 for Qwen3-235B.",
        )
        top_k = c2.number_input("Experts per token (top-k)", 1, 64, 4, key="moe_top_k")
        affinity = c2.checkbox(
            "Synthetic inter-layer affinity",
            key="moe_affinity",
            help="Sticky Markov routing between consecutive layers; enables the traffic stage.",
        )
        gpus = c3.number_input("GPUs", 1, 256, 8, key="moe_gpus")
        slots = c3.number_input(
            "Expert slots per GPU",
            1,
            1024,
            5,
            key="moe_slots",
            help="GPUs x slots must cover the experts; spare slots hold replicas.",
        )
        nodes = c3.number_input("Nodes", 1, 64, 1, key="moe_nodes")
        limit = c3.slider("Solver time limit (s)", 1, 30, 3, key="moe_time_limit")
        up = uploaded(
            'Expert loads: JSON {"loads": [[...], ...]} or a routing trace, or CSV '
            "(one row per layer, one column per expert, with a header row)",
            "moe_upload",
        )
        st.form_submit_button("Plan", type="primary")
    try:
        if source == "upload":
            if up is None:
                st.info("Upload a loads file, or generate loads.", icon=":material/upload:")
                return
            loads = loads_from_upload(up)
        else:
            loads = zipf_loads(int(experts), int(layers), float(alpha), top_k=min(int(top_k), int(experts)))
        aff = markov_affinity(loads) if affinity and loads.shape[0] > 1 else None
        with st.spinner("Solving the placement ILP..."):
            out = moe_view(loads, int(gpus), int(slots), int(nodes), aff, float(limit))
    except ValueError as exc:
        common.show_error(exc)
        return
    solver = out["solver"]
    best_name, best = min(out["baselines"].items(), key=lambda kv: kv[1]["total"]["max_gpu_load"])
    plan_total = out["total"]["max_gpu_load"]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(
        "Max GPU load, plan",
        f"{plan_total:,.0f}",
        help="Tokens on the most loaded GPU, summed over the layers.",
    )
    m2.metric(
        f"Best baseline ({best_name})",
        f"{best['total']['max_gpu_load']:,.0f}",
        delta=f"plan is {plan_total / best['total']['max_gpu_load']:.3f}×",
        delta_color="off",
        delta_arrow="off",
    )
    m3.metric("Lower bound", f"{out['total']['lower_bound']:,.0f}")
    m4.metric(
        "Solver",
        solver["status"],
        delta=f"gap {solver['gap']:.2%}, {solver['seconds']:.1f} s",
        delta_color="off",
        delta_arrow="off",
    )
    rows = [{"placement": "plan (ILP)", **out["total"]}] + [
        {"placement": name, **b["total"]} for name, b in out["baselines"].items()
    ]
    table = pd.DataFrame(rows).drop(columns=["lower_bound"]).set_index("placement")
    table = table.dropna(axis=1, how="all")
    st.dataframe(table.style.format("{:,.0f}"), width="stretch")
    layer = st.number_input("Layer to show", 0, loads.shape[0] - 1, 0, key="moe_layer_shown")
    share = out["shares"][layer]
    e, g = share.shape
    heat = pd.DataFrame(
        {
            "expert": np.repeat(np.arange(e), g),
            "GPU": np.tile(np.arange(g), e),
            "tokens": (loads[layer][:, None] * share).ravel(),
        }
    )
    heat = heat[heat["tokens"] > 0]
    c1, c2 = st.columns([3, 2])
    c1.altair_chart(
        alt.Chart(heat)
        .mark_rect()
        .encode(
            x=alt.X(
                "expert:O",
                title="expert",
                axis=alt.Axis(labelAngle=0, values=list(range(0, e, max(1, e // 16)))),
            ),
            y=alt.Y("GPU:O", title="GPU"),
            color=alt.Color("tokens:Q", title="tokens served", scale=alt.Scale(scheme="blues")),
            tooltip=["GPU:O", "expert:O", alt.Tooltip("tokens:Q", format=",.0f")],
        )
        .properties(height=alt.Step(24), title=f"Plan, layer {layer}: tokens each GPU serves per expert"),
        width="stretch",
    )
    per_gpu = pd.concat(
        [
            pd.DataFrame(
                {"GPU": np.arange(g), "tokens": out["plan_gpu_loads"][layer], "placement": "plan (ILP)"}
            )
        ]
        + [
            pd.DataFrame({"GPU": np.arange(g), "tokens": v, "placement": name})
            for name, v in out["baseline_gpu_loads"][layer].items()
        ]
    )
    c2.altair_chart(
        alt.Chart(per_gpu)
        .mark_bar()
        .encode(
            x=alt.X("max(tokens):Q", title="most loaded GPU (tokens)"),
            y=alt.Y("placement:N", title=None, sort="x"),
            color=alt.condition(alt.datum.placement == "plan (ILP)", alt.value("#4c78a8"), alt.value("#bbb")),
            tooltip=["placement:N", alt.Tooltip("max(tokens):Q", format=",.0f")],
        )
        .properties(height=alt.Step(28), title=f"Layer {layer}: max GPU load"),
        width="stretch",
    )
    st.download_button(
        "Download plan JSON",
        json.dumps(
            {k: v for k, v in out.items() if k not in ("shares", "baseline_gpu_loads", "plan_gpu_loads")},
            indent=1,
        ),
        file_name="moe_plan.json",
        mime="application/json",
        key="moe_download",
    )


def sp_section() -> None:
    from perfmodel.planners.synthetic import lognormal_lengths

    st.caption(
        "Sequence-parallel groups for one batch of prompts: a MILP chooses group sizes and which "
        "sequences each group prefills, minimising the batch's makespan, beside every static degree."
    )
    models, gpus_all, labels = common.model_names(), common.gpu_names(), common.gpu_labels()
    with st.form("sp_form"):
        c1, c2, c3 = st.columns(3)
        source = c1.radio("Lengths", ("generate (log-normal)", "upload"), key="sp_source")
        n = c1.number_input("Sequences", 1, MAX_SEQUENCES, 64, key="sp_n")
        max_len = c1.number_input(
            "Longest sequence (tokens)", 16, 10_000_000, 131_072, step=1024, key="sp_max_len"
        )
        model = c2.selectbox(
            "Model", models, index=models.index("llama-3-8b") if "llama-3-8b" in models else 0, key="sp_model"
        )
        gpu = c2.selectbox(
            "GPU",
            gpus_all,
            format_func=lambda x: labels.get(x, x),
            key="sp_gpu",
            index=gpus_all.index("h100-sxm-80gb") if "h100-sxm-80gb" in gpus_all else 0,
        )
        kind = c2.selectbox("SP kind", ("ulysses", "ring", "hybrid", "tokenring"), key="sp_kind")
        gpus = c3.number_input("GPUs", 1, 1024, 16, key="sp_gpus")
        mode = c3.radio("Mode", common.MODES, horizontal=True, key="sp_mode")
        limit = c3.slider("Solver time limit (s)", 1, 30, 3, key="sp_time_limit")
        up = uploaded("Lengths: JSON {\"lengths\": [...]} or CSV with a 'length' column", "sp_upload")
        st.form_submit_button("Plan", type="primary")
    try:
        if source == "upload":
            if up is None:
                st.info("Upload a lengths file, or generate lengths.", icon=":material/upload:")
                return
            lengths = lengths_from_upload(up)
        else:
            lengths = lognormal_lengths(int(n), max_len=int(max_len))
        with st.spinner("Solving the split MILP..."):
            out = sp_view(lengths, int(gpus), model, gpu, kind, mode, float(limit))
    except ValueError as exc:
        common.show_error(exc)
        return
    statics = {k: v for k, v in out["baselines"].items() if v is not None}
    best_name = min(statics, key=statics.get) if statics else None
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Makespan, plan", fmt_seconds(out["makespan_s"]))
    if best_name:
        m2.metric(
            f"Best static ({best_name.replace('static_sp_', 'SP=')})",
            fmt_seconds(statics[best_name]),
            delta=f"plan is {out['makespan_s'] / statics[best_name]:.3f}×",
            delta_color="off",
            delta_arrow="off",
        )
    m3.metric("Lower bound", fmt_seconds(out["lower_bound_s"]))
    m4.metric(
        "Solver",
        out["solver"]["status"],
        delta=f"gap {out['solver']['gap']:.2%}, {out['solver']['seconds']:.1f} s",
        delta_color="off",
        delta_arrow="off",
    )
    bars = pd.DataFrame(
        [{"strategy": "plan (MILP)", "makespan_ms": out["makespan_s"] * 1e3}]
        + [
            {"strategy": k.replace("static_sp_", "static SP="), "makespan_ms": v * 1e3}
            for k, v in statics.items()
        ]
        + [{"strategy": "lower bound", "makespan_ms": out["lower_bound_s"] * 1e3}]
    )
    groups = pd.DataFrame(
        [
            {
                "group": i,
                "degree": g["degree"],
                "GPUs": ", ".join(map(str, g["gpus"])),
                "sequences": len(g["sequences"]),
                "tokens": int(sum(lengths[j] for j in g["sequences"])),
                "time_ms": g["time_s"] * 1e3,
            }
            for i, g in enumerate(out["groups"])
        ]
    )
    c1, c2 = st.columns(2)
    c1.altair_chart(
        alt.Chart(bars)
        .mark_bar()
        .encode(
            x=alt.X("makespan_ms:Q", title="batch makespan (ms)"),
            y=alt.Y("strategy:N", title=None, sort=None),
            color=alt.condition(alt.datum.strategy == "plan (MILP)", alt.value("#4c78a8"), alt.value("#bbb")),
            tooltip=["strategy:N", alt.Tooltip("makespan_ms:Q", format=",.2f")],
        )
        .properties(height=alt.Step(28), title="Plan, static degrees and the lower bound"),
        width="stretch",
    )
    c2.altair_chart(
        alt.Chart(groups)
        .mark_bar()
        .encode(
            x=alt.X("time_ms:Q", title="group busy time (ms)"),
            y=alt.Y("group:O", title="SP group"),
            color=alt.Color("degree:O", title="degree"),
            tooltip=[
                "group:O",
                "degree:O",
                "GPUs:N",
                "sequences:Q",
                alt.Tooltip("tokens:Q", format=","),
                alt.Tooltip("time_ms:Q", format=",.2f"),
            ],
        )
        .properties(height=200, title="Groups of the plan"),
        width="stretch",
    )
    st.dataframe(groups, hide_index=True, width="stretch")
    st.download_button(
        "Download plan JSON",
        json.dumps(out, indent=1),
        file_name="sp_plan.json",
        mime="application/json",
        key="sp_download",
    )


st.title("Planners")
planner = st.radio("Planner", ("MoE placement", "SP split"), horizontal=True, key="planner")
if planner == "MoE placement":
    moe_section()
else:
    sp_section()
