"""Command-line pieces of the KV-cache knobs: tables, ``--match-context``, ``--knob-axis``.

``perfmodel.cli`` adds the knob flags (:func:`perfmodel.knobs.add_knob_args`)
to ``analyze`` and ``sweep`` and calls the functions here; :func:`register`
adds the ``knobs`` subcommand, which lists the knobs and what they stand for.
"""

from __future__ import annotations

import argparse
from typing import Any

from perfmodel.knobs import Knobs, KnobError
from perfmodel.tables import fmt_bytes, fmt_seconds

#: Knob -> (published technique, accuracy caveat); docs/knobs.md has the long form.
TECHNIQUES = {
    "kv_dtype": (
        "KV quantisation (FP8 KV in vLLM/TensorRT-LLM; KIVI, KVQuant for int4/2-bit)",
        "small formats lose accuracy; int4 and below need per-channel key scales and outlier handling",
    ),
    "kv_layers": (
        "cross-layer KV sharing (CLA, Brandon et al. 2024), layer-condensed KV (Wu & Tu 2024), YOCO",
        "needs (re)training; quality falls as fewer layers keep KV",
    ),
    "kv_heads": (
        "GQA/MQA (Ainslie et al. 2023; Shazeer 2019) by uptraining from MHA",
        "needs uptraining; MQA loses more than GQA",
    ),
    "kv_keep_ratio": (
        "KV eviction (H2O, Scissorhands, SnapKV)",
        "task-dependent; retrieval of evicted facts fails",
    ),
    "kv_budget_tokens": (
        "fixed-budget KV (StreamingLLM attention sinks + recent window, budgeted eviction)",
        "fluent but forgets everything outside the budget",
    ),
    "keep_schedule": (
        "per-layer keep fractions: progressive token pruning (LazyLLM, Fu et al. 2024), "
        "layer-wise KV budgets (PyramidKV)",
        "task-dependent; LazyLLM revives pruned tokens when later steps need them, which is not priced",
    ),
    "prune_prefill": (
        "prompt compression / dynamic token pruning (LLMLingua, LazyLLM)",
        "dropped tokens are never seen by the model",
    ),
    "sliding_window": (
        "sliding-window attention (Longformer, Mistral)",
        "long-range dependencies must pass through layers; a trained model needs it from training",
    ),
    "attention_density": (
        "block-sparse attention (MInference prefill, Quest decode, NSA)",
        "selection can miss relevant blocks; the safe density depends on the method and task",
    ),
    "shared_prefix_tokens": (
        "prefix caching (vLLM APC, SGLang RadixAttention) with prefix-aware kernels "
        "(Hydragen, cascade inference)",
        "exact: no accuracy change",
    ),
    "attention_every": (
        "hybrid attention/recurrent stacks (Jamba, Samba, Zamba; Mamba-2, GLA layers)",
        "a different architecture: needs training; recall-heavy tasks suffer",
    ),
    "kv_tiers": (
        "KV offloading to host DDR, CXL or NVMe (FlexGen, InfiniGen, LMCache)",
        "exact; cost is the link bandwidth",
    ),
    "offload": (
        "attention offloading to a memory pool (Lamina, Chen et al. 2024)",
        "exact; cost is the network",
    ),
}


def knob_table(results: list[Any]) -> Any:
    """The metrics with and without the knobs, and their ratio, per context (a rich Table)."""
    from rich.table import Table

    first = results[0]
    t = Table(title="with the knobs: " + ", ".join(first.knobs.describe()))
    t.add_column("metric")
    for r in results:
        t.add_column(f"{r.context_len:,} without", justify="right")
        t.add_column(f"{r.context_len:,} with", justify="right")
        t.add_column("ratio", justify="right")
    rows = [
        ("prefill", "prefill_s", fmt_seconds),
        ("decode / token", "decode_s_per_token", fmt_seconds),
        ("max concurrency (users)", "max_concurrency", lambda v: f"{int(v)}"),
        ("context switch (serial)", "context_switch_s", fmt_seconds),
        ("KV cache (all users)", "kv_cache_bytes", fmt_bytes),
        ("session throughput", "session_throughput_tokens_per_s", lambda v: f"{v:,.1f} tok/s"),
    ]
    for label, key, fmt in rows:
        cells = []
        for r in results:
            mine = r.to_dict_metrics()[key]
            if r.baseline is None:
                cells += ["does not fit", fmt(mine), "-"]
                continue
            base = r.baseline.to_dict_metrics()[key]
            cells += [fmt(base), fmt(mine), f"{mine / base:.3g}x" if base else "-"]
        t.add_row(label, *cells)
    return t


def run_match(args: argparse.Namespace, knobs: Knobs, context_len: int):
    """``--match-context``: the :class:`perfmodel.match.MatchResult` of the analyze flags."""
    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import Mode, resolve_profile
    from perfmodel.layers import Precision
    from perfmodel.match import match_context
    from perfmodel.models import load_model, weights_dtype

    g = load_gpu(args.gpu)
    return match_context(
        load_model(args.model),
        g,
        resolve_profile(g, Mode(args.mode), None, args.attention_impl, args.launch),
        context_len,
        args.match_context,
        output_tokens=args.output_tokens,
        batch=args.batch,
        precision=Precision.of(weights_dtype(load_model(args.model), args.weight_dtype)),
        tp=args.tp,
        chunk_tokens=args.chunk_tokens,
        knobs=knobs,
        pp=args.pp,
        sp=args.sp,
        sp_kind=args.sp_kind,
        ep=args.ep,
        topology=args.topology,
    )


def match_table(result) -> Any:
    from rich.table import Table

    t = Table(
        title=f"knob setting at which {result.context_len:,} tokens cost no more than "
        f"{result.match_context:,} tokens (cost only, not quality)"
    )
    t.add_column("knob")
    metrics = list(result.targets)
    for m in metrics:
        t.add_column(f"{m}\n(target {_fmt_metric(m, result.targets[m])})", justify="right")
    knobs = list(dict.fromkeys(r.knob for r in result.rows))
    for k in knobs:
        cells = []
        for m in metrics:
            row = next((r for r in result.rows if r.knob == k and r.metric == m), None)
            if row is None:
                cells.append("-")
            elif row.setting is None:
                cells.append("no setting")
            else:
                cells.append(_fmt_setting(k, row.setting))
        t.add_row(k, *cells)
    return t


def match_reasons(result) -> list[str]:
    return [f"{r.knob} / {r.metric}: {r.reason}" for r in result.rows if r.setting is None and r.reason]


def _fmt_metric(m: str, v: float) -> str:
    return f"{int(v)}" if m == "max_concurrency" else fmt_seconds(v)


def _fmt_setting(knob: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if knob == "kv_tiers":
        return "+".join(t.kind.value for t in v)
    if hasattr(v, "value"):
        return v.value
    if isinstance(v, float):
        return f"{v:.4g} (1/{1 / v:.3g})" if "ratio" in knob or "density" in knob else f"{v:.4g}"
    return str(v)


def parse_knob_axes(items: list[str] | None) -> dict[str, list]:
    """``--knob-axis kv_keep_ratio=1,0.5,0.25`` (repeatable) -> ``{"kv_keep_ratio": [1.0, 0.5, 0.25]}``."""
    out: dict[str, list] = {}
    for item in items or ():
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values:
            raise KnobError(f"--knob-axis wants NAME=V1,V2,..., got {item!r}")
        if name not in Knobs.__dataclass_fields__ or name in ("kv_tiers", "offload"):
            raise KnobError(f"--knob-axis: unknown or unsupported knob {name!r}")
        out[name] = [_value(name, v.strip()) for v in values.split(",")]
    return out


def _value(name: str, text: str) -> Any:
    if name == "kv_dtype":
        return text
    if name in ("prune_prefill", "prefix_aware_kernel", "prefetch"):
        if text.lower() not in ("true", "false", "1", "0"):
            raise KnobError(f"--knob-axis {name}: expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    try:
        v = float(text)
    except ValueError:
        raise KnobError(f"--knob-axis {name}: not a number: {text!r}") from None
    return int(v) if v == int(v) and name not in ("kv_keep_ratio", "attention_density") else v


def register(sub) -> None:
    """Add ``perfmodel knobs``: the knobs, the technique each stands for, and its caveat."""
    p = sub.add_parser("knobs", help="list the KV-cache what-if knobs and the techniques they stand for")
    p.set_defaults(func=_cmd_knobs)


def _cmd_knobs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="KV-cache knobs (cost only; see docs/knobs.md)")
    t.add_column("knob")
    t.add_column("stands for")
    t.add_column("accuracy caveat")
    for k, (tech, caveat) in TECHNIQUES.items():
        t.add_row(k, tech, caveat)
    Console().print(t)
    return 0
