"""``perfmodel offload``: serving with weights streamed from host memory or NVMe (see perfmodel.offload)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``offload`` subcommand to the ``perfmodel`` parser."""
    from perfmodel.cli import _nonneg_int, _positive_int

    p = subparsers.add_parser("offload", help="weights in host memory or NVMe, streamed to the GPU per layer")
    p.add_argument("--model", default="llama-3-70b", help="model name or path to a config.json")
    p.add_argument("--gpu", default="a100-sxm-80gb", help="GPU name, alias or path to a YAML file")
    p.add_argument("--mode", choices=["calibrated", "peak"], default="calibrated")
    p.add_argument("--weight-dtype", default=None, help="bf16|fp16|fp8|int8|int4 (default: the config's, else bf16)")
    p.add_argument("--kv-dtype", default=None, help="KV-cache format (default: activation format)")
    p.add_argument("--context", type=_positive_int, default=2048, help="prompt tokens")
    p.add_argument("--output-tokens", type=_nonneg_int, default=128)
    p.add_argument("--batch", type=_positive_int, default=1, help="sequences decoding together")
    p.add_argument("--resident-layers", type=_nonneg_int, default=0, help="decoder layers kept in HBM")
    p.add_argument("--link", default="pcie",
                   help="where streamed weights come from: pcie (the GPU's PCIe rate), or pcie|host|nvme:BYTES_PER_S")
    p.add_argument("--no-prefetch", action="store_true", help="copy each layer only when it is needed (no overlap)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_offload)


def _cmd_offload(args: argparse.Namespace) -> int:
    from perfmodel.offload import offload

    r = offload(args.model, args.gpu, context_len=args.context, output_tokens=args.output_tokens, batch=args.batch,
                resident_layers=args.resident_layers, link=args.link, prefetch=not args.no_prefetch, mode=args.mode,
                weight_dtype=args.weight_dtype, kv_dtype=args.kv_dtype)
    if args.json:
        from perfmodel.jsonout import dumps

        print(dumps(r.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from perfmodel.tables import fmt_seconds

    t = Table(title=f"{r.model} on {r.gpu}, {r.layers - r.resident_layers} of {r.layers} layers streamed over "
                    f"{r.link} at {r.link_bytes_per_s / 1e9:.1f} GB/s ({r.mode} mode)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("weights on GPU / all", f"{r.weight_bytes_on_gpu / 1e9:.1f} / {r.weight_bytes / 1e9:.1f} GB"),
        ("layer copy / layer compute", f"{fmt_seconds(r.link_layer_s)} / {fmt_seconds(r.gpu_layer_s)}"),
        ("decode / token", f"{fmt_seconds(r.decode_s_per_token)} ({r.bound} bound)"),
        ("decode / token, all resident", fmt_seconds(r.resident_decode_s_per_token)),
        ("prefill", fmt_seconds(r.prefill_s)),
        ("batch where decode turns compute-bound", "none that fits" if r.compute_bound_batch is None
         else str(r.compute_bound_batch)),
        ("max concurrency", str(r.max_concurrency)),
        ("throughput", f"{r.throughput_tokens_per_s:.1f} tok/s"),
    ]
    for name, value in rows:
        t.add_row(name, value)
    Console().print(t)
    return 0
