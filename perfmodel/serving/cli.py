"""``perfmodel simulate``: serve a workload on a deployment and print the metrics."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from perfmodel.serving.deployment import KvPolicy, Router


def register(subparsers) -> None:
    """Add the ``simulate`` subcommand to the ``perfmodel`` parser."""
    from perfmodel.cli import _positive_int, add_placement_arg, add_scenario_args
    from perfmodel.knobs import add_knob_args

    p = subparsers.add_parser("simulate", help="simulate serving a workload (continuous batching, paged KV)")
    add_scenario_args(p)  # defines --kv-dtype, which knobs_from_args reads as a knob
    add_knob_args(p)
    p.set_defaults(model="llama-3-8b", gpu="h100-sxm-80gb")
    p.add_argument("--tp", type=_positive_int, default=1, help="tensor-parallel degree per replica")
    p.add_argument("--pp", type=_positive_int, default=1, help="pipeline stages per replica")
    p.add_argument(
        "--ep",
        type=_positive_int,
        default=1,
        help="expert-parallel degree per replica (MoE models; ep // tp attention groups share the experts)",
    )
    add_placement_arg(p)
    p.add_argument("--replicas", type=_positive_int, default=1)
    p.add_argument("--router", choices=[r.value for r in Router], default=Router.LEAST_LOADED.value)
    p.add_argument("--requests", type=_positive_int, default=1000, help="requests to generate")
    p.add_argument("--arrival-rate", default="inf", help="Poisson rate in requests/s, or inf (all at once)")
    p.add_argument(
        "--request-rate", dest="arrival_rate", help="the same as --arrival-rate (the engines' name)"
    )
    p.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=None,
        help="closed loop: at most this many requests in flight (vllm bench serve --max-concurrency)",
    )
    p.add_argument(
        "--prompt-len",
        default="2048",
        help="N, lognormal:MEAN:SIGMA, uniform:LOW:HIGH or random:LEN:RATIO (--random-range-ratio)",
    )
    p.add_argument("--output-len", default="128", help="generated tokens incl. the first (same forms)")
    p.add_argument(
        "--trace", default=None, help="JSONL/CSV trace (prompt_len, output_len, optional arrival_s)"
    )
    p.add_argument(
        "--prefix",
        action="append",
        default=None,
        metavar="TOKENS:SHARE[:HIT_RATE[:TIER]]",
        help="a shared prompt prefix (repeatable): its tokens open SHARE of the requests' prompts, and "
        "HIT_RATE of those (default 1) find its KV cached in TIER: hbm (default; held once per "
        "replica), host (PCIe) or host|ssd:BYTES_PER_S (loaded per hit); a miss prefills it",
    )
    p.add_argument(
        "--engine",
        default="none",
        help="engine overheads and defaults from hw/data/engines (vllm, vllm-0.5, sglang) or none",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kv-policy", choices=[k.value for k in KvPolicy], default=KvPolicy.SWAP.value)
    p.add_argument(
        "--slice-tokens",
        type=_positive_int,
        default=128,
        help="decode tokens a request runs before swap/recompute may preempt it",
    )
    p.add_argument("--max-num-seqs", type=_positive_int, default=1024, help="requests resident per replica")
    p.add_argument("--host-kv-gib", type=float, default=None, help="host memory for swapped KV per replica")
    p.add_argument("--slo-ttft", type=float, default=None, help="TTFT target, seconds (for goodput)")
    p.add_argument("--slo-tpot", type=float, default=None, help="TPOT target, seconds (for goodput)")
    p.add_argument("--slo-pct", type=float, default=90.0, help="percentile the SLOs apply at")
    p.add_argument("--out-requests", default=None, help="write the per-request table (.csv or .parquet)")
    p.add_argument("--out-timeline", default=None, help="write the iteration timeline (.csv or .parquet)")
    p.add_argument("--perfetto", default=None, help="write a Chrome/Perfetto trace JSON of the iterations")
    p.set_defaults(func=_cmd_simulate)


def _deployment(args: argparse.Namespace):
    from perfmodel.cli import read_placement_arg
    from perfmodel.errors import InvalidInputError
    from perfmodel.knobs import knobs_from_args
    from perfmodel.serving.deployment import Deployment

    from perfmodel.serving.engine import load_engine

    engine = load_engine(args.engine)
    extra = {}
    if engine is not None:  # the engine's budget, sequences and reserve unless the flags were given
        extra["engine"] = engine
        if args.chunk_tokens == 8192:
            args.chunk_tokens = engine.max_num_batched_tokens
        if args.max_num_seqs == 1024:
            args.max_num_seqs = engine.max_num_seqs
        extra["reserve_fraction"] = engine.reserve_fraction
    host = None
    if args.host_kv_gib is not None:
        if not (math.isfinite(args.host_kv_gib) and args.host_kv_gib >= 0):
            raise InvalidInputError(f"--host-kv-gib must be >= 0, got {args.host_kv_gib}")
        host = args.host_kv_gib * 2**30
    return Deployment.make(
        args.model,
        args.gpu,
        mode=args.mode,
        weight_dtype=args.weight_dtype,
        kv_dtype=None,
        knobs=knobs_from_args(args),
        attention_impl=args.attention_impl,
        launch=args.launch,
        tp=args.tp,
        pp=args.pp,
        ep=args.ep,
        moe_placement=read_placement_arg(args),
        replicas=args.replicas,
        token_budget=args.chunk_tokens,
        max_num_seqs=min(args.max_num_seqs, args.chunk_tokens),
        kv_policy=args.kv_policy,
        slice_tokens=args.slice_tokens,
        router=args.router,
        host_kv_bytes=host,
        **extra,
    )


def _requests(args: argparse.Namespace):
    from perfmodel.serving.workload import LengthDist, Workload, parse_rate, read_trace

    from perfmodel.errors import InvalidInputError
    from perfmodel.serving.workload import CachedPrefix

    if args.trace:
        if args.prefix:
            raise InvalidInputError("--prefix applies to generated workloads, not to a --trace")
        return read_trace(args.trace)
    prefixes = tuple(CachedPrefix.parse(t) for t in args.prefix or ())
    return Workload(
        args.requests,
        parse_rate(args.arrival_rate),
        LengthDist.parse(args.prompt_len, "--prompt-len"),
        LengthDist.parse(args.output_len, "--output-len"),
        seed=args.seed,
        prefixes=prefixes,
    ).generate()


def _progress(enabled: bool):
    if not enabled:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} requests"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("sim", total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def _cmd_simulate(args: argparse.Namespace) -> int:
    from perfmodel.knobs import COST_NOT_QUALITY
    from perfmodel.serving.bounds import analytic_bounds
    from perfmodel.serving.metrics import Slo
    from perfmodel.serving.simulator import simulate
    from perfmodel.serving.trace_export import write_trace_json

    dep = _deployment(args)
    reqs = _requests(args)
    slo = None
    if args.slo_ttft is not None or args.slo_tpot is not None:
        slo = Slo(args.slo_ttft, args.slo_tpot, args.slo_pct, args.slo_pct)
    record = bool(args.out_timeline or args.perfetto)
    bar, update = _progress(not args.json and sys.stderr.isatty() and len(reqs) >= 20_000)
    if bar is not None:
        with bar:
            res = simulate(
                dep, reqs, record_timeline=record, progress=update, max_concurrency=args.max_concurrency
            )
    else:
        res = simulate(dep, reqs, record_timeline=record, max_concurrency=args.max_concurrency)
    out: dict[str, Any] = res.summary(slo)
    b = analytic_bounds(dep, reqs)
    out["knobs"] = dep.knobs.to_dict() if dep.knobs is not None else {}
    out["engine"] = dep.engine.name if dep.engine is not None else None
    out["max_concurrency"] = args.max_concurrency
    prof = dep.resolved_profile
    out["mode"] = prof.mode.value
    out["provenance"] = prof.provenance_map()  # per op class: measured, transferred from <gpu>, datasheet
    out["provenance_summary"] = prof.provenance_summary()
    out["notes"] = list(res.notes) + ([COST_NOT_QUALITY] if dep.knobs is not None else [])
    out["analytic"] = {
        "prefill_alone_s_p50": float(_median(b.prefill_s)),
        "max_concurrency": int(b.max_concurrency),
        "throughput_bound_tokens_per_s": float(b.throughput_bound_tokens_per_s),
    }
    res.write(args.out_requests, args.out_timeline)
    if args.perfetto:
        write_trace_json(res, args.perfetto)
    if args.json:
        from perfmodel.jsonout import dumps

        print(dumps(out, indent=2))
        return 0
    _print_table(out)
    return 0


def _median(x):
    import numpy as np

    return np.median(x)


def _print_table(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from perfmodel.tables import fmt_bytes, fmt_seconds

    t = Table(title=f"{out['deployment']}: {out['completed']} requests")
    t.add_column("metric")
    for c in ("p50", "p90", "p99", "mean"):
        t.add_column(c, justify="right")
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end")):
        t.add_row(
            name,
            *[
                fmt_seconds(out[key][c]) if out[key][c] is not None else "-"
                for c in ("p50", "p90", "p99", "mean")
            ],
        )
    console = Console()
    console.print(t)
    e = Table(title="engine-style (ms)")
    e.add_column("metric")
    stats = ("mean", "median", "p90", "p99")
    for c in stats:
        e.add_column(c, justify="right")
    for key, name in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2EL")):
        e.add_row(
            name,
            *[f"{out[f'{c}_{key}_ms']:,.2f}" if out.get(f"{c}_{key}_ms") is not None else "-" for c in stats],
        )
    console.print(e)
    lines = [
        (
            f"output_throughput: {out['output_throughput'] or 0:,.1f} tok/s, total_token_throughput: "
            f"{out['total_token_throughput'] or 0:,.1f} tok/s, request_throughput: {out['request_throughput'] or 0:,.2f} "
            "req/s"
            + (f" (max concurrency {out['max_concurrency']})" if out["max_concurrency"] else "")
            + (f"; engine {out['engine']}" if out["engine"] else "")
        ),
        (
            f"throughput: {out['throughput_tokens_per_s']:,.1f} output tokens/s "
            f"(analytic bound {out['analytic']['throughput_bound_tokens_per_s']:,.1f})"
        ),
        (
            f"peak concurrency: {out['peak_concurrency']} requests per replica "
            f"(analytic max {out['analytic']['max_concurrency']})"
        ),
        (
            f"swapped out/in: {fmt_bytes(out['swap_out_bytes'])} / {fmt_bytes(out['swap_in_bytes'])}; "
            f"preemptions: {out['preemptions']}"
        ),
    ]
    pc = out.get("prefix_cache")
    if pc is not None:
        lines.append(
            f"cached prefixes: {pc['hits']} hits of {pc['requests_with_prefix']} requests with a prefix, "
            f"{pc['cached_prompt_tokens']:,} prompt tokens from the cache; {pc['loads']} loads from host "
            f"or SSD, {fmt_bytes(pc['load_bytes'])} in {fmt_seconds(pc['load_s'])}"
        )
    if out.get("goodput_requests_per_s") is not None:
        lines.append(f"goodput: {out['goodput_requests_per_s']:,.2f} requests/s meeting the SLOs")
    lines.append(f"simulated {out['iterations']:,} iterations in {out['sim_wall_s']:.2f} s")
    if out["knobs"]:
        lines.append("knobs: " + ", ".join(f"{k}={v}" for k, v in out["knobs"].items()))
    lines += [f"note: {n}" for n in out["notes"]]
    if out.get("provenance_summary"):
        lines.append(f"{out['mode']} mode; provenance: {out['provenance_summary']}")
    for line in lines:
        console.print(line, markup=False)
