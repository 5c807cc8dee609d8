"""Shared pieces of the dashboard pages: cached calls into the public API, input lists, formatting.

Everything here either asks ``perfmodel`` / ``hw`` for numbers or formats them for display;
no performance modelling happens in the dashboard.  Cached functions return plain, picklable
values (dicts and DataFrames) because ``st.cache_data`` stores copies.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

import perfmodel
from perfmodel import tables
from perfmodel.layers import Precision, model_ops
from perfmodel.ops import Phase
from perfmodel.phases import DEFAULT_PREFILL_CHUNK_TOKENS

GIB = 2**30
#: Storage formats offered for weights and the KV cache.
DTYPES = ("bf16", "fp16", "fp8", "int8", "int4")
MODES = ("calibrated", "peak")  # the best estimate first; the datasheet bound second
#: Context lengths of the sweep charts: 1K to 1M tokens, 16 points per decade.
SWEEP_CONTEXT_LENS = tuple(int(x) for x in np.unique(np.round(np.logspace(3, 6, 49)).astype(np.int64)))
#: Largest file accepted by the upload widgets, bytes.
MAX_UPLOAD_BYTES = 2_000_000

BOUND_LABELS = {
    "compute": "compute",
    "hbm_bandwidth": "HBM bandwidth",
    "hbm_capacity": "HBM capacity",
    "latency": "launch latency",
    "pcie": "PCIe",
    "interconnect": "GPU interconnect",
}


def bound_label(value: Any) -> str:
    """Readable name of a :class:`perfmodel.Bound` value."""
    v = getattr(value, "value", value)
    return BOUND_LABELS.get(str(v), str(v))


@st.cache_data(show_spinner=False)
def gpu_names() -> list[str]:
    return list(perfmodel.list_gpus())


@st.cache_data(show_spinner=False)
def gpu_labels() -> dict[str, str]:
    """Canonical GPU name -> display name."""
    out = {}
    for name in perfmodel.list_gpus():
        g = perfmodel.load_gpu(name)
        out[name] = g.display_name or name
    return out


@st.cache_data(show_spinner=False)
def model_names() -> list[str]:
    return list(perfmodel.list_models())


@st.cache_data(show_spinner=False)
def model_facts(model: str) -> dict[str, Any]:
    """A few properties of a shipped model for captions."""
    m = perfmodel.load_model(model)
    return {
        "params": int(m.param_count()),
        "active_params": int(m.param_count(active=True)),
        "layers": m.num_layers,
        "q_heads": m.q_heads,
        "kv_heads": m.kv_heads,
        "max_context": m.max_context,
        "moe": m.moe is not None,
        "mla": m.mla is not None,
    }


def make_knobs(items: tuple):
    """A :class:`perfmodel.knobs.Knobs` from ``(field, value)`` pairs; ``("kv_tiers", "ddr")`` adds host DDR.

    Raises the knobs' own ``KnobError`` (a ``ValueError``) for invalid values.
    """
    from perfmodel.knobs import Knobs, KvTier, TierKind

    kw = dict(items)
    if "kv_tiers" in kw:
        kw["kv_tiers"] = tuple(KvTier(TierKind(t)) for t in str(kw["kv_tiers"]).split("+") if t)
    return Knobs(**kw)


@st.cache_data(show_spinner=False, max_entries=256)
def analysis_view(
    model: str,
    gpu: str,
    context_len: int,
    output_tokens: int,
    batch: int,
    tp: int,
    mode: str,
    weight_dtype: str,
    kv_dtype: str,
    extra: tuple = (),
    knob_items: tuple = (),
) -> dict[str, Any]:
    """``perfmodel.analyze(...).to_dict()`` plus the per-GPU memory terms the breakdown chart needs.

    ``extra`` holds further keyword arguments of ``analyze`` as ``(name, value)`` pairs;
    ``knob_items`` the KV-cache knobs (see :func:`make_knobs`).
    Raises the API's ``ValueError`` subclasses unchanged (they are not cached).
    """
    kw = dict(extra)
    if knob_items:
        kw["knobs"] = make_knobs(knob_items)
    scn = perfmodel.Scenario.make(
        model,
        gpu,
        context_len=context_len,
        output_tokens=output_tokens,
        batch=batch,
        tp=tp,
        mode=mode,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        **kw,
    )
    a = perfmodel.analyze(scn)
    d = a.to_dict()
    mem = a.memory
    users = -(-a.batch // mem.dp_ranks)  # a GPU holds its attention group's users only
    d["memory_per_gpu"] = {
        "capacity_bytes": float(mem.capacity_bytes),
        "weight_bytes": float(mem.weight_bytes),
        "kv_bytes": float(mem.kv_bytes_per_user) * users,
        "activation_bytes": float(mem.activation_bytes),
        "reserve_bytes": float(mem.reserve_bytes),
        "kv_bytes_per_user": float(mem.kv_bytes_per_user),
        "users_per_gpu": users,
        "free_bytes": float(mem.free_for_kv_bytes) - float(mem.kv_bytes_per_user) * users,
    }
    d["provenance_summary"] = a.provenance_summary
    if a.mode is perfmodel.Mode.CALIBRATED:  # the datasheet bound shown beside the estimate
        p = perfmodel.analyze(
            model,
            gpu,
            context_len=context_len,
            output_tokens=output_tokens,
            batch=batch,
            tp=tp,
            mode="peak",
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            **kw,
        )
        d["peak_bound"] = {
            "prefill_s": float(p.prefill.total_s),
            "decode_s_per_token": float(p.decode_step.total_s),
            "decode_s": float(p.decode.total_s),
        }
    return d


def provenance_kinds(provenance: dict[str, str]) -> str:
    """``measured (10 op classes) · transferred from h200-sxm-141gb (5)``: each provenance of an ``analyze``
    result's ``provenance`` map with the number of op classes it prices."""
    counts: dict[str, int] = {}
    for label in provenance.values():
        counts[label] = counts.get(label, 0) + 1
    return " · ".join(
        f"{label} ({n}{' op classes' if i == 0 else ''})" for i, (label, n) in enumerate(counts.items())
    )


def band_text(result: dict[str, Any], key: str) -> str:
    """``80% band 11.8-13.9 ms · peak bound 9.1 ms`` for a time metric of an ``analysis_view`` result."""
    parts = []
    lo, hi = result.get(f"{key}_low"), result.get(f"{key}_high")
    if lo is not None and hi is not None and hi > lo:
        parts.append(f"80% band {fmt_seconds(lo)} – {fmt_seconds(hi)}")
    peak = (result.get("peak_bound") or {}).get(key)
    if peak is not None:
        parts.append(f"peak bound {fmt_seconds(peak)}")
    return " · ".join(parts)


@st.cache_data(show_spinner=False, max_entries=64)
def sweep_view(
    model: str,
    gpu: str,
    output_tokens: int,
    batch: int,
    tp: int,
    mode: str,
    weight_dtype: str,
    kv_dtype: str,
    context_lens: tuple[int, ...] = SWEEP_CONTEXT_LENS,
    extra: tuple = (),
    knob_items: tuple = (),
) -> pd.DataFrame:
    """``perfmodel.sweep`` over ``context_lens`` at one batch and TP degree (with knobs, if any)."""
    kw = dict(extra)
    if knob_items:
        kw["knobs"] = make_knobs(knob_items)
    scn = perfmodel.Scenario.make(
        model,
        gpu,
        context_len=max(context_lens),
        output_tokens=output_tokens,
        batch=batch,
        tp=tp,
        mode=mode,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        **kw,
    )
    return perfmodel.sweep(scn, context_len=list(context_lens))


@st.cache_data(show_spinner=False, max_entries=64)
def roofline_view(
    model: str,
    gpu: str,
    phase: str,
    context_len: int,
    batch: int,
    tp: int,
    mode: str,
    weight_dtype: str,
    kv_dtype: str,
) -> dict[str, Any]:
    """One decoder pass's ops placed on the GPU's roofline.

    For each op of :func:`perfmodel.layers.model_ops` the cost comes from
    :func:`perfmodel.op_cost`; the chart's coordinates are its arithmetic
    intensity (FLOPs / bytes) and the FLOP rate the cost implies (FLOPs / time).
    ``phase`` ``"decode"`` is one decode step at ``context_len`` keys;
    ``"prefill"`` is the last prefill chunk (``min(context_len, 8192)`` new
    tokens attending to ``context_len`` keys).
    """
    m = perfmodel.load_model(model)
    g = perfmodel.load_gpu(gpu)
    prec = Precision.of(weight_dtype, "bf16", kv_dtype)
    prof = perfmodel.resolve_profile(g, perfmodel.Mode(mode))
    if phase == "decode":
        ops = model_ops(m, Phase.DECODE, batch, 1, context_len, prec, tp)
    else:
        q = min(context_len, DEFAULT_PREFILL_CHUNK_TOKENS)
        ops = model_ops(m, Phase.PREFILL, batch, q, context_len, prec, tp, lm_head_rows=batch)
    rows, skipped = [], []
    for name, op, count in ops:
        c = perfmodel.op_cost(op, g, prof)
        fl, by, t = float(np.sum(c.flops)), float(np.sum(c.bytes)), float(np.sum(c.total_s))
        if fl <= 0 or by <= 0 or t <= 0:
            skipped.append(name)
            continue
        rows.append(
            {
                "op": name,
                "kind": type(op).__name__.lower(),
                "count_per_pass": float(np.sum(count)),
                "flops": fl,
                "bytes": by,
                "time_s": t,
                "intensity_flops_per_byte": fl / by,
                "achieved_flops_per_s": fl / t,
                "bound": bound_label(c.bound),
                "share_of_pass": 0.0,
            }
        )
        rows[-1]["_total_s"] = t * float(np.sum(count))
    df = pd.DataFrame(rows)
    if len(df):
        df["share_of_pass"] = df["_total_s"] / df["_total_s"].sum()
        df = df.drop(columns="_total_s")
    return {
        "ops": df,
        "skipped": skipped,
        "peak_flops_per_s": float(g.flops_for(prec.math)),
        "peak_dtype": prec.math.value,
        "fp32_flops_per_s": float(g.flops_for("fp32")),
        "hbm_bytes_per_s": float(g.hbm_bytes_per_s),
    }


#: Attention implementations the sidebar offers (``perfmodel.AttentionImpl``)
ATTENTION_IMPLS = ("default",) + tuple(i.value for i in perfmodel.AttentionImpl)

#: Session-state keys of the scenario widgets shared by the pages.
SCENARIO_KEYS = (
    "model",
    "gpu",
    "context_len",
    "output_tokens",
    "batch",
    "tp",
    "weight_dtype",
    "kv_dtype",
    "mode",
    "attention_impl",
    "compare_gpu",
    "pp",
    "sp",
    "sp_kind",
    "ep",
    "topology",
)


def keep_scenario() -> None:
    """Keep the scenario widgets' values when the user moves between pages.

    Streamlit drops a widget's state once a run does not draw it; writing the
    value back under its key at the top of each run keeps it.
    """
    for k in SCENARIO_KEYS:
        if k in st.session_state:
            st.session_state[k] = st.session_state[k]


#: Default scenario: the running example of the long-context analysis.
DEFAULT_TOPOLOGY = "(one NVLink node of the GPU)"
SCENARIO_DEFAULTS = {
    "model": "yi-34b",
    "gpu": "a100-sxm-80gb",
    "context_len": 50_000,
    "output_tokens": 250,
    "batch": 1,
    "tp": 1,
    "weight_dtype": "bf16",
    "kv_dtype": "bf16",
    "mode": "calibrated",
    "attention_impl": "default",
    "pp": 1,
    "sp": 1,
    "sp_kind": "ring",
    "ep": 1,
    "topology": DEFAULT_TOPOLOGY,
}


def scenario_inputs(header: str = "Scenario") -> dict[str, Any]:
    """Sidebar widgets of one deployment scenario; returns the keyword arguments of ``analysis_view``.

    Defaults go into the session state (not the widgets) so that values kept
    across pages by :func:`keep_scenario` never clash with a widget default.
    """
    gpus, labels, models = gpu_names(), gpu_labels(), model_names()
    for k, v in SCENARIO_DEFAULTS.items():
        st.session_state.setdefault(k, v)
    with st.sidebar:
        st.header(header)
        model = st.selectbox("Model", models, key="model")
        gpu = st.selectbox("GPU", gpus, format_func=lambda g: labels.get(g, g), key="gpu")
        context_len = st.number_input(
            "Context length (tokens)", min_value=1, max_value=10_000_000, step=1000, key="context_len"
        )
        output_tokens = st.number_input(
            "Output tokens", min_value=0, max_value=1_000_000, step=50, key="output_tokens"
        )
        batch = st.number_input("Batch (concurrent users)", min_value=1, max_value=4096, step=1, key="batch")
        tp = st.number_input(
            "Tensor parallel (TP)",
            min_value=1,
            max_value=64,
            step=1,
            key="tp",
            help="GPUs in the tensor-parallel group; must divide the query heads.",
        )
        c1, c2 = st.columns(2)
        weight_dtype = c1.selectbox("Weights", DTYPES, key="weight_dtype")
        kv_dtype = c2.selectbox("KV cache", DTYPES, key="kv_dtype")
        mode = st.radio(
            "Mode",
            MODES,
            horizontal=True,
            key="mode",
            help="calibrated (default): the best estimate, with an 80% error band: fractions measured "
            "on the GPU, or transferred from a measured GPU (the provenance says which). peak: "
            "the datasheet roofline, a bound.",
        )
        impl = st.selectbox(
            "Attention kernel",
            ATTENTION_IMPLS,
            key="attention_impl",
            help="whose measured curves price attention in calibrated mode: default (sdpa where "
            "the GPU's profile has it), sdpa (PyTorch's default, "
            "cuDNN on Hopper; the class of FlashAttention-3 and FlashInfer), flash2 (SDPA's flash "
            "backend), triton (this project's kernels)",
        )
        extra = parallel_inputs() + ((("attention_impl", impl),) if impl != "default" else ())
    return {
        "model": model,
        "gpu": gpu,
        "context_len": int(context_len),
        "output_tokens": int(output_tokens),
        "batch": int(batch),
        "tp": int(tp),
        "mode": mode,
        "weight_dtype": weight_dtype,
        "kv_dtype": kv_dtype,
        "extra": extra,
    }


def analyze_takes(name: str) -> bool:
    """Whether ``perfmodel.analyze`` has the keyword ``name`` in this tree."""
    import inspect

    return name in inspect.signature(perfmodel.analyze).parameters


def parallel_inputs() -> tuple:
    """PP / SP / EP widgets (where ``analyze`` takes them); non-default values as ``(name, value)`` pairs."""
    if not analyze_takes("pp"):
        return ()
    from perfmodel.hw import list_systems

    with st.expander("Parallelism beyond TP"):
        pp = st.number_input(
            "Pipeline parallel (PP)",
            min_value=1,
            max_value=256,
            step=1,
            key="pp",
            help="Pipeline stages; must divide the layers.",
        )
        sp = st.number_input("Sequence parallel (SP, prefill)", min_value=1, max_value=256, step=1, key="sp")
        sp_kind = st.selectbox("SP kind", ("ring", "ulysses", "hybrid"), key="sp_kind")
        ep = st.number_input(
            "Expert parallel (EP)", min_value=1, max_value=256, step=1, key="ep", help="MoE models only."
        )
        systems = [DEFAULT_TOPOLOGY, *list_systems()]
        topology = st.selectbox("Topology", systems, key="topology")
    out = []
    if pp > 1:
        out.append(("pp", int(pp)))
    if sp > 1:
        out += [("sp", int(sp)), ("sp_kind", sp_kind)]
    if ep > 1:
        out.append(("ep", int(ep)))
    if topology != DEFAULT_TOPOLOGY:
        out.append(("topology", topology))
    return tuple(out)


def show_error(exc: BaseException, what: str = "") -> None:
    """Render an API input error as one ``st.error`` line (never a traceback)."""
    prefix = f"{what}: " if what else ""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, perfmodel.DoesNotFitError) and exc.needed_bytes:
        msg += (
            f"  \nNeeded per GPU {exc.needed_bytes / GIB:,.1f} GiB, available "
            f"{exc.available_bytes / GIB:,.1f} GiB."
        )
    st.error(prefix + msg, icon=":material/error:")


fmt_seconds = tables.fmt_seconds  # one time formatter for every table (perfmodel.tables)
fmt_gib = tables.fmt_bytes  # and one byte formatter


def fmt_tokens(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}K"
    return f"{n:,}"


class UploadError(ValueError):
    """An uploaded file that is too large, of the wrong type, or not parseable."""


def parse_upload(name: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> Any:
    """Parse an uploaded file as JSON (``.json``) or CSV (``.csv``), nothing else.

    Returns the decoded JSON value, or a DataFrame for CSV.  Nothing is executed
    or unpickled.  Raises :class:`UploadError` with one readable line.
    """
    if len(data) > max_bytes:
        raise UploadError(f"{name}: {len(data):,} bytes is over the {max_bytes:,}-byte limit")
    lower = name.lower()
    if not lower.endswith((".json", ".csv")):
        raise UploadError(f"{name}: only .json and .csv files are accepted")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadError(f"{name}: not UTF-8 text") from None
    if lower.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise UploadError(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if lower.endswith(".csv"):
        try:
            sniff_rows = list(csv.reader(io.StringIO(text)))
        except csv.Error as e:
            raise UploadError(f"{name}: invalid CSV: {e}") from None
        if not sniff_rows:
            raise UploadError(f"{name}: empty CSV")
        try:
            return pd.read_csv(io.StringIO(text))
        except (ValueError, pd.errors.ParserError) as e:
            raise UploadError(f"{name}: invalid CSV: {str(e).splitlines()[0]}") from None
