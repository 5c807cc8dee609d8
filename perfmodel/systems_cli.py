"""Subcommands for serving systems priced by their own modules.

``perfmodel offload`` (weights streamed from host memory or NVMe, :mod:`perfmodel.offload`),
``perfmodel prefix`` (a cached prefix's KV loaded from HBM, host or SSD, :mod:`perfmodel.prefix_cache`),
``perfmodel kv-predict`` (a small model's prompt KV projected to the base model's, :mod:`perfmodel.kv_prediction`) and
``perfmodel blockwise`` (a prefill's attention and feed-forward computed per block, :mod:`perfmodel.blockwise`).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``offload``, ``prefix``, ``kv-predict`` and ``blockwise`` subcommands to the ``perfmodel`` parser."""
    _register_offload(subparsers)
    _register_prefix(subparsers)
    _register_kv_predict(subparsers)
    _register_blockwise(subparsers)


def _model_gpu_args(p, model: str) -> None:
    """The flags both commands share: the model, the GPU, the mode and the formats."""
    p.add_argument("--model", default=model, help="model name or path to a config.json")
    p.add_argument("--gpu", default="a100-sxm-80gb", help="GPU name, alias or path to a YAML file")
    p.add_argument("--mode", choices=["calibrated", "peak"], default="calibrated")
    p.add_argument(
        "--weight-dtype", default=None, help="bf16|fp16|fp8|int8|int4 (default: the config's, else bf16)"
    )
    p.add_argument("--kv-dtype", default=None, help="KV-cache format (default: activation format)")


def _register_offload(subparsers) -> None:
    from perfmodel.cli import _nonneg_int, _positive_int

    p = subparsers.add_parser("offload", help="weights in host memory or NVMe, streamed to the GPU per layer")
    _model_gpu_args(p, "llama-3-70b")
    p.add_argument("--context", type=_positive_int, default=2048, help="prompt tokens")
    p.add_argument("--output-tokens", type=_nonneg_int, default=128)
    p.add_argument("--batch", type=_positive_int, default=1, help="sequences decoding together")
    p.add_argument("--resident-layers", type=_nonneg_int, default=0, help="decoder layers kept in HBM")
    p.add_argument(
        "--link",
        default="pcie",
        help="where streamed weights come from: pcie (the GPU's PCIe rate), or pcie|host|nvme:BYTES_PER_S",
    )
    p.add_argument(
        "--no-prefetch", action="store_true", help="copy each layer only when it is needed (no overlap)"
    )
    p.add_argument(
        "--kv-on-host",
        action="store_true",
        help="keep the KV cache in host memory too, streamed per layer with the weights (FlexGen)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_offload)


def _cmd_offload(args: argparse.Namespace) -> int:
    from perfmodel.offload import offload

    r = offload(
        args.model,
        args.gpu,
        context_len=args.context,
        output_tokens=args.output_tokens,
        batch=args.batch,
        resident_layers=args.resident_layers,
        link=args.link,
        prefetch=not args.no_prefetch,
        mode=args.mode,
        weight_dtype=args.weight_dtype,
        kv_dtype=args.kv_dtype,
        kv_on_host=args.kv_on_host,
    )
    if args.json:
        from perfmodel.jsonout import dumps

        print(dumps(r.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from perfmodel.tables import fmt_seconds

    t = Table(
        title=f"{r.model} on {r.gpu}, {r.layers - r.resident_layers} of {r.layers} layers"
        f"{' and the KV cache' if r.kv_on_host else ''} streamed over "
        f"{r.link} at {r.link_bytes_per_s / 1e9:.1f} GB/s ({r.mode} mode)"
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("weights on GPU / all", f"{r.weight_bytes_on_gpu / 1e9:.1f} / {r.weight_bytes / 1e9:.1f} GB"),
        ("layer copy / layer compute", f"{fmt_seconds(r.link_layer_s)} / {fmt_seconds(r.gpu_layer_s)}"),
        ("decode / token", f"{fmt_seconds(r.decode_s_per_token)} ({r.bound} bound)"),
        ("decode / token, all resident", fmt_seconds(r.resident_decode_s_per_token)),
        ("prefill", fmt_seconds(r.prefill_s)),
        (
            "batch where decode turns compute-bound",
            "none that fits" if r.compute_bound_batch is None else str(r.compute_bound_batch),
        ),
        ("max concurrency", str(r.max_concurrency)),
        ("throughput", f"{r.throughput_tokens_per_s:.1f} tok/s"),
    ]
    for name, value in rows:
        t.add_row(name, value)
    Console().print(t)
    return 0


def _register_prefix(subparsers) -> None:
    from perfmodel.cli import _positive_int

    p = subparsers.add_parser(
        "prefix", help="a cached prompt prefix: load its KV (HBM, host, SSD) or recompute it"
    )
    _model_gpu_args(p, "llama-3-8b")
    p.add_argument("--tp", type=_positive_int, default=1, help="tensor-parallel degree")
    p.add_argument("--prefix-tokens", type=_positive_int, required=True, help="cached prompt tokens")
    p.add_argument(
        "--suffix-tokens", type=_positive_int, default=256, help="new prompt tokens after the prefix"
    )
    p.add_argument("--batch", type=_positive_int, default=1, help="prompts, each with its own cached prefix")
    p.add_argument(
        "--tier",
        default="host",
        help="where the prefix KV is cached: hbm, host (the GPU's PCIe rate), or host|ssd:BYTES_PER_S",
    )
    p.add_argument(
        "--hit-rate", type=_unit_float, default=1.0, help="share of prompts whose prefix is cached"
    )
    p.add_argument("--no-overlap", action="store_true", help="load the whole prefix before the suffix runs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_prefix)


def _unit_float(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not math.isfinite(v) or not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def _cmd_prefix(args: argparse.Namespace) -> int:
    from perfmodel.prefix_cache import prefix_cache

    r = prefix_cache(
        args.model,
        args.gpu,
        args.prefix_tokens,
        args.suffix_tokens,
        batch=args.batch,
        tier=args.tier,
        hit_rate=args.hit_rate,
        overlap=not args.no_overlap,
        mode=args.mode,
        tp=args.tp,
        weight_dtype=args.weight_dtype,
        kv_dtype=args.kv_dtype,
    )
    if args.json:
        from perfmodel.jsonout import dumps

        print(dumps(r.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from perfmodel.tables import fmt_seconds

    rate = "resident" if r.tier_bytes_per_s is None else f"{r.tier_bytes_per_s / 1e9:.1f} GB/s"
    t = Table(
        title=f"{r.model} on {r.gpu} x{r.tp}: {r.prefix_tokens:,} cached + {r.suffix_tokens:,} new tokens, "
        f"prefix KV in {r.tier} ({rate}, {r.mode} mode)"
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    be = r.break_even_bytes_per_s
    for name, value in (
        ("prefix KV per GPU", f"{r.prefix_kv_bytes_per_gpu / 1e9:.2f} GB"),
        ("miss: prefill the whole prompt", fmt_seconds(r.miss_ttft_s)),
        ("hit: load the prefix KV", fmt_seconds(r.load_s)),
        ("hit: prefill the suffix", fmt_seconds(r.suffix_prefill_s)),
        (
            "hit: time to first token",
            f"{fmt_seconds(r.hit_ttft_s)} ({r.hit_speedup:.1f}x faster than a miss)",
        ),
        (f"expected at hit rate {r.hit_rate:g}", fmt_seconds(r.expected_ttft_s)),
        ("tier rate where loading beats recomputing", "-" if be is None else f"{be / 1e9:.2f} GB/s"),
    ):
        t.add_row(name, value)
    Console().print(t)
    return 0


def _register_kv_predict(subparsers) -> None:
    from perfmodel.cli import _nonneg_int, _positive_int

    p = subparsers.add_parser(
        "kv-predict",
        help="KV Prediction: a small model's prompt KV projected to the base "
        "model's, against the base model's own prefill",
    )
    _model_gpu_args(p, "llama-3-8b")
    p.add_argument("--predictor", required=True, help="the auxiliary model (name or path to a config.json)")
    p.add_argument("--tp", type=_positive_int, default=1, help="tensor-parallel degree of both models")
    p.add_argument("--context", type=_positive_int, default=4096, help="prompt tokens")
    p.add_argument("--output-tokens", type=_nonneg_int, default=128)
    p.add_argument("--batch", type=_positive_int, default=1, help="prompts")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_kv_predict)


def _cmd_kv_predict(args: argparse.Namespace) -> int:
    from perfmodel.kv_prediction import kv_prediction

    r = kv_prediction(
        args.model,
        args.predictor,
        args.gpu,
        args.context,
        output_tokens=args.output_tokens,
        batch=args.batch,
        mode=args.mode,
        tp=args.tp,
        weight_dtype=args.weight_dtype,
        kv_dtype=args.kv_dtype,
    )
    if args.json:
        from perfmodel.jsonout import dumps

        print(dumps(r.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from perfmodel.tables import fmt_seconds

    t = Table(
        title=f"{r.model} with KV predicted by {r.predictor} on {r.gpu} x{r.tp}: {r.batch} x {r.context_len:,} "
        f"prompt tokens ({r.mode} mode)"
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    for name, value in (
        ("predictor prefill", fmt_seconds(r.predictor_prefill_s)),
        ("KV projection (2 GEMMs per base layer)", fmt_seconds(r.projection_s)),
        ("base model's first token", fmt_seconds(r.first_token_s)),
        ("time to first token", f"{fmt_seconds(r.ttft_s)} ({r.ttft_speedup:.2f}x faster)"),
        ("base model's own prefill", fmt_seconds(r.base_prefill_s)),
        ("TTFT FLOPs / base prefill FLOPs", f"{r.ttft_flops_per_gpu / r.base_prefill_flops_per_gpu:.3f}"),
        (f"decode ({r.output_tokens} tokens)", fmt_seconds(r.decode_s)),
        ("max concurrency", str(r.max_concurrency)),
    ):
        t.add_row(name, value)
    Console().print(t)
    return 0


def _register_blockwise(subparsers) -> None:
    from perfmodel.cli import _positive_int

    p = subparsers.add_parser(
        "blockwise",
        help="a prefill's attention and feed-forward per block (BPT) beside "
        "materialised scores and tiled attention: peak activations, "
        "the longest prompt that fits, prefill time",
    )
    _model_gpu_args(p, "llama-2-7b")
    p.add_argument("--tp", type=_positive_int, default=1, help="tensor-parallel degree")
    p.add_argument("--context", type=_positive_int, default=16384, help="prompt tokens")
    p.add_argument("--block-tokens", type=_positive_int, default=2048, help="query tokens per block")
    p.add_argument("--batch", type=_positive_int, default=1, help="prompts prefilled together")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_blockwise)


def _cmd_blockwise(args: argparse.Namespace) -> int:
    from perfmodel.blockwise import blockwise

    r = blockwise(
        args.model,
        args.gpu,
        args.context,
        block_tokens=args.block_tokens,
        batch=args.batch,
        tp=args.tp,
        mode=args.mode,
        weight_dtype=args.weight_dtype,
        kv_dtype=args.kv_dtype,
    )
    if args.json:
        from perfmodel.jsonout import dumps

        print(dumps(r.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from perfmodel.tables import fmt_bytes, fmt_seconds

    t = Table(
        title=f"{r.model} on {r.gpu} x{r.tp}: prefill of {r.batch} x {r.context_len:,} tokens, blocks of "
        f"{r.block_tokens:,} ({r.mode} mode; KV {fmt_bytes(r.kv_bytes_per_gpu)} per GPU)"
    )
    for c in ("scheme", "peak activations / GPU", "fits", "longest prompt that fits", "prefill"):
        t.add_column(c, justify="left" if c == "scheme" else "right")
    for s in r.schemes:
        t.add_row(
            s.scheme.value,
            fmt_bytes(s.activation_bytes),
            "yes" if s.fits else "no",
            f"{s.max_context_tokens:,}",
            "not priced" if s.prefill_s is None else fmt_seconds(s.prefill_s),
        )
    Console().print(t)
    return 0
