"""The ``perfmodel`` command line: one entry module.

Subcommands of other packages (``plan``, ``simulate`` ...) register
themselves through a ``register(subparsers)`` function in the modules listed
in ``EXTENSIONS``; a module that is absent is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Any, Sequence

EXTENSIONS = (
    "perfmodel.knobs_cli",
    "perfmodel.serving.cli",
    "perfmodel.planners.cli",
    "perfmodel.systems_cli",
)


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default, unless its help already names one or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (
            "default" in text
            or not action.option_strings
            or d is None
            or d is argparse.SUPPRESS
            or isinstance(d, bool)
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _version() -> str:
    """The installed distribution's version (``unknown`` when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perfmodel")
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: looks the installed version up only when asked (the look-up reads package metadata)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(
            option_strings,
            dest=dest,
            default=default,
            nargs=0,
            help=help or "show program's version number and exit",
        )

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(f"perfmodel {_version()}\n")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and exits 2, and shows defaults in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.help is None:  # argparse shows nothing for an option without help: give its default a line
            action.help = _DefaultsHelpFormatter(self.prog)._get_help_string(action) or None
        return action

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"perfmodel: error: {message}\n")
        raise SystemExit(2)


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        from perfmodel.checks import is_finite_number

        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if not is_finite_number(v):
            raise argparse.ArgumentTypeError(
                f"expected {what}, got one of {len(text.strip())} digits (too large)"
            )
        return v

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _lengths(text: str) -> tuple[int, ...]:
    """``1000,4000,32000``: prompt lengths, each an integer >= 1."""
    return tuple(_positive_int(part.strip()) for part in text.split(","))


def _int_list(text: str, minimum: int = 1):
    """``1000,2000`` or a range ``1000:100000:1000`` (start:stop:step, stop inclusive).

    Returns a :class:`perfmodel.sweep.IntRanges`: its length is known without building the values,
    so ``sweep`` can refuse a grid too large before allocating it.
    """
    from perfmodel.sweep import IntRanges

    conv = _positive_int if minimum >= 1 else _nonneg_int
    out: list = []
    for part in text.split(","):
        part = part.strip()
        if ":" in part:
            bits = part.split(":")
            if len(bits) != 3:
                raise argparse.ArgumentTypeError(f"a range is start:stop:step, got {part!r}")
            start, stop = (conv(b) for b in bits[:2])
            step = _positive_int(bits[2])
            out.append(range(start, stop + 1, step))
        else:
            out.append(conv(part))
    ints = IntRanges(out)
    if len(ints) == 0:
        raise argparse.ArgumentTypeError("empty list")
    return ints


def _nonneg_int_list(text: str):
    return _int_list(text, minimum=0)


def _bytes(text: str) -> int:
    """A byte count: ``2147483648``, ``2e9``, or with a unit ``512MiB``, ``2GiB``, ``4GB``."""
    units = {
        "kib": 2**10,
        "mib": 2**20,
        "gib": 2**30,
        "tib": 2**40,
        "kb": 1e3,
        "mb": 1e6,
        "gb": 1e9,
        "tb": 1e12,
        "b": 1,
    }
    t = text.strip().lower()
    mult = 1
    for u, f in units.items():
        if t.endswith(u):
            t, mult = t[: -len(u)].strip(), f
            break
    try:
        v = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a byte count such as 2GiB or 2147483648, got {text!r}"
        ) from None
    if not (v > 0 and v < 2**63):
        raise argparse.ArgumentTypeError(f"byte count must be > 0, got {text!r}")
    return int(v)


def add_attention_impl_arg(p: argparse.ArgumentParser) -> None:
    """``--attention-impl``: which attention kernel's curves price attention (calibrated mode)."""
    from perfmodel.ops import DEFAULT_ATTENTION_IMPL, AttentionImpl

    p.add_argument(
        "--attention-impl",
        choices=[i.value for i in AttentionImpl],
        default=None,
        help="attention kernel priced: sdpa (PyTorch's default choice: cuDNN on Hopper; the class of "
        "FlashAttention-3/FlashInfer), flash2 (SDPA's flash backend), triton (this project's kernels), "
        f"split_kv/stream_k (Triton decode schedules) (default: {DEFAULT_ATTENTION_IMPL.value}, or the "
        "impl a profile without sdpa curves has, named in analyze's notes)",
    )


def add_launch_arg(p: argparse.ArgumentParser) -> None:
    """``--launch graph|eager``: kernels as CUDA-graph replays or one eager host launch each."""
    p.add_argument(
        "--launch",
        choices=["graph", "eager"],
        default="graph",
        help="graph: CUDA-graph replays (serving engines' decode; what the profile is fitted on); eager: one "
        "host launch per kernel, short kernels wait for the host (default: %(default)s)",
    )


def add_scenario_args(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Model, GPU, precision and mode flags shared by analyze and sweep."""
    p.add_argument("--model", default="yi-34b", help="model name or path to a config.json")
    p.add_argument(
        "--gpu",
        default="a100-sxm-80gb",
        help="GPU name, alias or path to a YAML file"
        + ("; a comma-separated list, or all (every shipped GPU)" if sweep else ""),
    )
    p.add_argument(
        "--mode",
        choices=["calibrated", "peak"],
        default="calibrated",
        help="calibrated: the best estimate (the GPU's measured profile, else one transferred from a "
        "measured GPU; provenance per op class); peak: the datasheet roofline, a bound",
    )
    add_attention_impl_arg(p)
    add_launch_arg(p)
    p.add_argument(
        "--weight-dtype",
        default=None,
        help="bf16|fp16|fp8|int8|int4 (default: the config's quantization_config, else bf16)",
    )
    p.add_argument("--kv-dtype", default=None, help="KV-cache format (default: activation format)")
    p.add_argument("--chunk-tokens", type=_positive_int, default=8192, help="prefill chunk (tokens per pass)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_layout_args(p: argparse.ArgumentParser) -> None:
    """Multi-GPU layout flags beyond TP, shared by analyze and sweep."""
    p.add_argument(
        "--pp", type=_positive_int, default=1, help="pipeline-parallel degree (divides the layers)"
    )
    p.add_argument(
        "--sp", type=_positive_int, default=1, help="sequence/context-parallel degree for the prefill"
    )
    p.add_argument(
        "--sp-kind",
        choices=["ulysses", "ring", "hybrid", "tokenring"],
        default="ring",
        help="SP scheme: Ulysses all-to-all, Ring attention, both (hybrid), or TokenRing (queries and block "
        "outputs both ways round the ring) (default ring)",
    )
    p.add_argument(
        "--ep",
        type=_positive_int,
        default=1,
        help="expert-parallel degree (MoE models); wider than --tp (x --sp), attention runs data-parallel "
        "over ep/tp groups, each holding only its own requests' KV (as --attention-dp ep/tp)",
    )
    p.add_argument(
        "--attention-dp",
        type=_positive_int,
        default=1,
        metavar="N",
        help="MoE models: attention data-parallel over N groups of --tp GPUs, each holding only its own "
        "requests' KV, the MoE layers over all N x tp GPUs: expert-parallel with --ep N*tp (the "
        "layout --ep N*tp gives alone), else tensor-parallel between an all-gather and a "
        "reduce-scatter (default 1)",
    )
    p.add_argument(
        "--topology",
        default=None,
        help="system from hw/data/systems the GPUs sit in (default: one NVLink node of up to 8 GPUs, else the "
        "smallest shipped system of the GPU that holds them)",
    )


def add_placement_arg(p: argparse.ArgumentParser) -> None:
    """``--moe-placement``, shared by analyze, sweep and simulate."""
    p.add_argument(
        "--moe-placement",
        default=None,
        metavar="PLAN.json",
        help="a plan moe --json file (ep GPUs, one placement per MoE layer or one for all): prices each MoE "
        "layer's EP all-to-all from the traffic its placement implies and its expert GEMMs on the GPU "
        "it loads most, with the plan's expert loads when it carries them (needs --ep > 1)",
    )


def read_placement_arg(args: argparse.Namespace):
    """``--moe-placement`` read once (None when not given)."""
    if not getattr(args, "moe_placement", None):
        return None
    from perfmodel.ep_route import as_moe_placement

    return as_moe_placement(args.moe_placement)


#: the commands defined here: running one of them loads no extension module (their imports stay unpaid)
CORE_COMMANDS = ("analyze", "predict", "sweep", "gpus", "models", "dashboard")


def _build_parser(extensions: bool = True) -> _Parser:
    parser = _Parser(prog="perfmodel", description="Performance model for long-context LLM inference.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    a = sub.add_parser("analyze", help="the four long-context metrics of one scenario")
    add_scenario_args(a)
    a.add_argument(
        "--context",
        type=_positive_int,
        default=None,
        help="prompt tokens (default 50000, and 4000 beside it)",
    )
    a.add_argument("--output-tokens", type=_nonneg_int, default=250)
    a.add_argument("--batch", type=_positive_int, default=1, help="users decoding together")
    a.add_argument(
        "--batch-lengths",
        type=_lengths,
        default=None,
        metavar="L1,L2,...",
        help="a ragged batch: each prompt's tokens (sets --batch and --context); prefill priced without "
        "padding, the padded prefill beside it",
    )
    a.add_argument("--tp", type=_positive_int, default=1, help="tensor-parallel degree")
    add_layout_args(a)
    from perfmodel.knobs import add_knob_args

    add_knob_args(a)
    add_placement_arg(a)
    a.add_argument(
        "--match-context",
        type=_positive_int,
        default=None,
        metavar="N",
        help="per metric and knob, the setting at which --context costs no more than N tokens",
    )
    a.set_defaults(func=_cmd_analyze)

    pr = sub.add_parser("predict", help="predict the time of each op descriptor in a JSONL file")
    pr.add_argument("--gpu", required=True)
    pr.add_argument("--in", dest="in_path", required=True, help="JSONL op descriptors")
    pr.add_argument("--out", dest="out_path", required=True, help="JSONL with predicted_s added")
    pr.add_argument("--mode", choices=["peak", "calibrated"], default="calibrated")
    add_attention_impl_arg(pr)
    add_launch_arg(pr)
    pr.set_defaults(func=_cmd_predict)

    s = sub.add_parser("sweep", help="evaluate the product of scenario axes (CSV to stdout or --out)")
    add_scenario_args(s, sweep=True)
    s.add_argument(
        "--context", type=_int_list, default=[4000, 50000], help="e.g. 1000,4000 or 1000:100000:1000"
    )
    s.add_argument("--batch", type=_int_list, default=[1])
    s.add_argument("--tp", type=_int_list, default=[1])
    s.add_argument("--output-tokens", type=_nonneg_int_list, default=[250])
    add_layout_args(s)
    add_placement_arg(s)
    s.add_argument("--out", default=None, help="write CSV (or .parquet) here")
    s.add_argument(
        "--max-bytes",
        type=_bytes,
        default=None,
        metavar="BYTES",
        help="largest result built in memory, points x columns x 8 bytes (default 2GiB); beyond it a "
        "CSV --out is written in chunks, anything else is refused with the point count",
    )
    add_knob_args(s)
    s.add_argument(
        "--knob-axis",
        action="append",
        default=None,
        metavar="NAME=V1,V2",
        help="sweep a knob too (repeatable), e.g. kv_keep_ratio=1,0.5,0.25",
    )
    s.set_defaults(func=_cmd_sweep)

    g = sub.add_parser(
        "gpus", help="list the shipped GPUs with memory, bandwidth and FLOP/s, and the aliases"
    )
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.set_defaults(func=_cmd_gpus)
    mo = sub.add_parser("models", help="list the shipped models with parameters, layers and context")
    mo.add_argument("--json", action="store_true", help="print JSON instead of a table")
    mo.set_defaults(func=_cmd_models)
    d = sub.add_parser("dashboard", help="start the what-if dashboard on localhost (needs .[dashboard])")
    d.add_argument(
        "--address",
        default="localhost",
        help="address to listen on (default localhost: this machine only; the dashboard has no login)",
    )
    d.add_argument("--port", type=_positive_int, default=8501)
    d.add_argument("streamlit_args", nargs=argparse.REMAINDER, help="further options passed to streamlit run")
    d.set_defaults(func=_cmd_dashboard)

    for name in EXTENSIONS if extensions else ():
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        mod.register(sub)
    return parser


def _banded(c: Any) -> str:
    """``12.3 ms (11.8-13.9 ms)``: the value and its error band (the central 80% interval; no band: the value)."""
    from perfmodel.tables import fmt_seconds

    t, lo, hi = float(c.total_s), float(c.low_s), float(c.high_s)
    if lo == t == hi:
        return fmt_seconds(t)
    lo_s, hi_s = fmt_seconds(lo), fmt_seconds(hi)
    if lo_s.split(" ")[-1] == hi_s.split(" ")[-1]:
        return f"{fmt_seconds(t)} ({lo_s.split(' ')[0]}-{hi_s})"
    return f"{fmt_seconds(t)} ({lo_s}-{hi_s})"


def _analysis_table(results: list[Any], peaks: list[Any] | None = None) -> Any:
    """The metrics of each context; with ``peaks`` (the same scenarios in peak mode), the datasheet bound of
    the prefill and decode times beside the estimate."""
    from rich.table import Table

    from perfmodel.tables import fmt_bytes, fmt_seconds

    from perfmodel.metrics import bound_of

    first = results[0]
    t = Table(
        title=f"{first.model.name} on {first.gpu.name} x{first.tp * first.pp * first.sp * first.attention_dp} "
        f"({first.mode.value} mode)"
    )
    t.add_column("metric")
    t.add_column("bound")
    for r in results:
        t.add_column(f"{r.context_len:,} ctx", justify="right")
    b = first.bottleneck
    rows = [
        ("prefill", b["prefill"], lambda r: _banded(r.prefill)),
        ("decode / token", b["decode"], lambda r: _banded(r.decode_step)),
        (f"decode ({first.output_tokens} tokens)", b["decode"], lambda r: _banded(r.decode)),
        ("max concurrency (users)", "hbm_capacity", lambda r: f"{int(r.memory.max_concurrency)}"),
        ("context switch (serial)", b["context_switch"], lambda r: fmt_seconds(r.switch.serial_s)),
        ("context switch (duplex)", b["context_switch"], lambda r: fmt_seconds(r.switch.duplex_s)),
        ("KV cache per user", "", lambda r: fmt_bytes(r.to_dict()["kv_cache_bytes"] / r.batch)),
        ("weights", "", lambda r: fmt_bytes(r.model.weight_bytes(r.precision.weights))),
        ("session throughput", "", lambda r: f"{r.session_throughput_tokens_per_s:,.1f} tok/s"),
    ]
    if peaks:
        by_ctx = {p.context_len: p for p in peaks}
        cell = lambda r, f: fmt_seconds(f(by_ctx[r.context_len])) if r.context_len in by_ctx else "-"  # noqa: E731
        rows[3:3] = [
            ("prefill, peak bound", "datasheet", lambda r: cell(r, lambda p: p.prefill.total_s)),
            ("decode / token, peak bound", "datasheet", lambda r: cell(r, lambda p: p.decode_step.total_s)),
            ("decode, peak bound", "datasheet", lambda r: cell(r, lambda p: p.decode.total_s)),
        ]
    if first.prefill_padded is not None:  # a ragged batch: the padded prefill beside the unpadded one
        rows[1:1] = [
            (
                "prefill, padded",
                bound_of(first.prefill_padded),
                lambda r: _banded(r.prefill_padded) if r.prefill_padded is not None else "-",
            )
        ]
    if any(r.tp * r.pp * r.sp * r.ep > 1 for r in results):
        rows += [
            ("communication (prefill)", "", lambda r: _comm_cell(r.prefill_comm_s, r.prefill.total_s)),
            ("communication / token", "", lambda r: _comm_cell(r.decode_step_comm_s, r.decode_step.total_s)),
        ]
    for name, bound, f in rows:
        t.add_row(name, bound, *[f(r) for r in results])
    return t


def _comm_cell(comm_s: float, total_s: float) -> str:
    from perfmodel.tables import fmt_seconds

    share = comm_s / float(total_s) if float(total_s) > 0 else 0.0
    return f"{fmt_seconds(comm_s)} ({share:.0%})"


def _cmd_analyze(args: argparse.Namespace) -> int:
    from perfmodel.analyze import analyze
    from perfmodel.jsonout import dumps

    from perfmodel import knobs_cli
    from perfmodel.knobs import knobs_from_args

    knobs = knobs_from_args(args)  # --kv-dtype is a knob: the comparison shows its effect
    contexts = [args.context] if args.context else [50_000, 4_000]
    if args.match_context:
        contexts = [args.context or 50_000]
    if args.batch_lengths:  # the context and batch come from the lengths
        contexts = [max(args.batch_lengths)]
    kw = dict(
        model=args.model,
        gpu=args.gpu,
        output_tokens=args.output_tokens,
        batch=args.batch,
        tp=args.tp,
        mode=args.mode,
        weight_dtype=args.weight_dtype,
        kv_dtype=None,
        chunk_tokens=args.chunk_tokens,
        knobs=knobs,
        pp=args.pp,
        sp=args.sp,
        sp_kind=args.sp_kind,
        ep=args.ep,
        topology=args.topology,
        attention_impl=args.attention_impl,
        launch=args.launch,
        attention_dp=args.attention_dp,
        batch_lengths=args.batch_lengths,
    )
    if args.moe_placement:
        kw["moe_placement"] = read_placement_arg(args)  # read once
    results = [analyze(context_len=c, **kw) for c in contexts]
    peaks = _peak_bounds(results, kw)
    match = knobs_cli.run_match(args, knobs, contexts[0]) if args.match_context else None
    if args.json:
        dicts = [
            r.to_dict() | ({"peak_bound": _peak_dict(peaks[i])} if peaks else {})
            for i, r in enumerate(results)
        ]
        out = dicts[0] if len(dicts) == 1 else dicts[0] | {"compare": dicts[1:]}
        if match is not None:
            out["match"] = match.to_dict()
        print(dumps(out, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print(_analysis_table(results, peaks))
    if knobs.active:
        console.print(knobs_cli.knob_table(results))
    if match is not None:
        console.print(knobs_cli.match_table(match))
        for line in knobs_cli.match_reasons(match):
            console.print(f"  {line}")
    console.print(f"provenance: {escape(results[0].provenance_summary)}")
    if any(float(r.prefill.high_s) != float(r.prefill.total_s) for r in results):
        console.print(
            "band: (low-high) is the central 80% interval of the measured time (docs/calibration.md, "
            '"Error bands")'
        )
    for note in results[0].notes:
        console.print(f"note: {note}")
    if match is not None and not knobs.active:
        console.print(
            "note: the settings above price cost only; the accuracy of each technique is not modelled"
        )
    return 0


def _peak_bounds(results: list[Any], kw: dict[str, Any]) -> list[Any]:
    """The same scenarios in peak mode (the datasheet bound shown beside a calibrated estimate); [] in peak mode."""
    from perfmodel.analyze import analyze
    from perfmodel.calibration import Mode

    if results[0].mode is not Mode.CALIBRATED:
        return []
    return [analyze(context_len=r.context_len, **(kw | {"mode": Mode.PEAK.value})) for r in results]


def _peak_dict(a: Any) -> dict[str, float]:
    """``peak_bound`` of the JSON: the datasheet-roofline times of the scenario (a lower bound, no band)."""
    return {
        "prefill_s": float(a.prefill.total_s),
        "decode_s_per_token": float(a.decode_step.total_s),
        "decode_s": float(a.decode.total_s),
        "session_throughput_tokens_per_s": float(a.session_throughput_tokens_per_s),
    }


def _cmd_predict(args: argparse.Namespace) -> int:
    from perfmodel.predict import predict_file

    n = predict_file(
        args.in_path,
        args.out_path,
        args.gpu,
        args.mode,
        attention_impl=args.attention_impl,
        launch=args.launch,
    )
    print(f"wrote {n} predictions to {args.out_path}", file=sys.stderr)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from perfmodel.sweep import sweep

    from perfmodel.knobs import knobs_from_args
    from perfmodel.knobs_cli import parse_knob_axes

    from perfmodel.sweep import DEFAULT_MAX_BYTES, CHUNK_FRACTION, check_size, iter_sweep, sweep_size

    knobs = knobs_from_args(args)
    knob_axes = parse_knob_axes(args.knob_axis)
    kw = dict(
        output_tokens=args.output_tokens,
        mode=args.mode,
        weight_dtype=args.weight_dtype,
        kv_dtype=None,
        chunk_tokens=args.chunk_tokens,
        knobs=knobs,
        knob_axes=knob_axes,
        pp=args.pp,
        sp=args.sp,
        sp_kind=args.sp_kind,
        ep=args.ep,
        topology=args.topology,
        attention_impl=args.attention_impl,
        launch=args.launch,
        moe_placement=read_placement_arg(args),
        attention_dp=args.attention_dp,
    )
    max_bytes = DEFAULT_MAX_BYTES if args.max_bytes is None else args.max_bytes
    layout = (
        args.pp != 1
        or args.sp != 1
        or args.ep != 1
        or args.attention_dp != 1
        or args.topology is not None
        or kw["moe_placement"] is not None
    )
    size = sweep_size(args.context, args.batch, args.tp, args.output_tokens, knob_axes, layout)
    gpus = _gpu_list(args.gpu)
    stream = size.bytes * len(gpus) > max_bytes
    if stream:
        if not args.out or str(args.out).endswith(".parquet"):
            check_size(
                size,
                max_bytes,
                " (--max-bytes); write it in chunks with --out FILE.csv, or raise --max-bytes",
            )
        axes_bytes = 8 * sum(len(a) for a in (args.context, args.batch, args.output_tokens))
        if axes_bytes > max_bytes:
            check_size(size, max_bytes, f"; even its axes need {axes_bytes:,} bytes")
    from perfmodel.sweep import sweep_notes

    notes = dict.fromkeys(
        note
        for gpu in gpus
        for note in sweep_notes(
            args.model,
            args.context,
            args.output_tokens,
            gpu,
            args.tp,
            args.pp,
            args.sp,
            args.ep,
            args.topology,
            args.attention_dp,
        )
    )
    for note in notes:
        print(f"perfmodel: note: {note}", file=sys.stderr)
    if knobs.active or args.knob_axis:
        from perfmodel.knobs import COST_NOT_QUALITY

        print(f"perfmodel: note: {COST_NOT_QUALITY}", file=sys.stderr)
    if stream:
        chunk = max(1, int(max_bytes // CHUNK_FRACTION // (size.columns * 8)))
        rows = 0
        with open(args.out, "w", newline="") as f, _progress(size.points * len(gpus), "sweep") as advance:
            for gpu in gpus:
                for df in iter_sweep(
                    args.model, gpu, args.context, args.batch, args.tp, chunk_points=chunk, **kw
                ):
                    df.to_csv(f, index=False, header=(rows == 0))
                    rows += len(df)
                    advance(len(df))
        from perfmodel.tables import fmt_bytes

        print(
            f"wrote {rows} rows to {args.out} in chunks of up to {chunk:,} "
            f"(the whole result, {fmt_bytes(size.bytes)}, is above --max-bytes)",
            file=sys.stderr,
        )
        return 0
    frames = [
        sweep(
            args.model, gpu, context_len=args.context, batch=args.batch, tp=args.tp, max_bytes=max_bytes, **kw
        )
        for gpu in gpus
    ]
    if len(frames) > 1:
        import pandas as pd

        frames = [pd.concat(frames, ignore_index=True)]
    df = frames[0]
    if args.out:
        from perfmodel.tables import write_table

        write_table(df, args.out)
        print(f"wrote {len(df)} rows to {args.out}", file=sys.stderr)
    elif args.json:
        print(df.to_json(orient="records"))
    else:
        print(df.to_csv(index=False), end="")
    return 0


def _gpu_list(text: str) -> list[str]:
    """``--gpu`` of sweep: one GPU, a comma-separated list, or ``all`` (every shipped GPU)."""
    if text.strip().lower() == "all":
        from perfmodel.hw import list_gpus

        return list(list_gpus())
    gpus = [g.strip() for g in text.split(",") if g.strip()] if "," in text else [text]
    if not gpus:
        from perfmodel.errors import InvalidInputError

        raise InvalidInputError(f"--gpu: no GPU named in {text!r}")
    return gpus


def _progress(total: int, what: str):
    """Context manager yielding ``advance(n)``: a rich progress bar on stderr (only on a terminal)."""
    from perfmodel.progress import progress

    return progress(total, what)


def gpu_rows() -> list[dict[str, Any]]:
    """Key specs of each shipped GPU: HBM (bytes), HBM bandwidth (bytes/s), dense FLOP/s per dtype, aliases."""
    from perfmodel.hw import list_aliases, list_gpus, load_gpu

    aliases = list_aliases()
    rows = []
    for name in list_gpus():
        g = load_gpu(name)
        rows.append(
            {
                "name": g.name,
                "display_name": g.display_name,
                "hbm_bytes": int(g.hbm_bytes),
                "hbm_usable_bytes": int(g.hbm_usable_bytes),
                "hbm_bytes_per_s": float(g.hbm_bytes_per_s),
                "peak_flops": {dt.value: float(v) for dt, v in g.peak_flops.items()},
                "pcie_bytes_per_s_per_direction": float(g.pcie_bytes_per_s_per_direction),
                "aliases": sorted(a for a, n in aliases.items() if n == g.name),
            }
        )
    return rows


def model_rows() -> list[dict[str, Any]]:
    """Key specs of each shipped model: parameters (total, active), layers, hidden size, heads, context."""
    from perfmodel.models import list_models, load_model

    rows = []
    for name in list_models():
        m = load_model(name)
        rows.append(
            {
                "name": m.name,
                "params": int(m.param_count()),
                "active_params": int(m.param_count(active=True)),
                "layers": m.num_layers,
                "hidden": m.hidden,
                "q_heads": m.q_heads,
                "kv_heads": m.kv_heads,
                "max_context": m.max_context,
                "attention": m.attention_kind.value,
                "experts": m.moe.num_experts if m.moe else None,
            }
        )
    return rows


def _si(x: float, unit: str) -> str:
    """``3.35e12, "B/s"`` -> ``3.35 TB/s`` (decimal prefixes)."""
    for p, f in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= f:
            return f"{x / f:,.3g} {p}{unit}"
    return f"{x:,.3g} {unit}"


def _cmd_gpus(args: argparse.Namespace) -> int:
    from perfmodel.jsonout import dumps

    rows = gpu_rows()
    if args.json:
        print(dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from perfmodel.tables import fmt_bytes

    t = Table(title="shipped GPUs (dense peak FLOP/s)")
    for c, j in (
        ("name", "left"),
        ("HBM", "right"),
        ("HBM bandwidth", "right"),
        ("BF16", "right"),
        ("FP8", "right"),
        ("aliases", "left"),
    ):
        t.add_column(c, justify=j)
    for r in rows:
        fp8 = r["peak_flops"].get("fp8")
        t.add_row(
            r["name"],
            fmt_bytes(r["hbm_bytes"]),
            _si(r["hbm_bytes_per_s"], "B/s"),
            _si(r["peak_flops"].get("bf16", 0.0), "FLOP/s"),
            _si(fp8, "FLOP/s") if fp8 else "-",
            ", ".join(r["aliases"]),
        )
    Console().print(t)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from perfmodel.jsonout import dumps

    rows = model_rows()
    if args.json:
        print(dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="shipped models")
    for c in ("name", "params", "active", "layers", "heads q/kv", "context", "experts"):
        t.add_column(c, justify="left" if c == "name" else "right")
    for r in rows:
        t.add_row(
            r["name"],
            f"{r['params'] / 1e9:,.1f}B",
            f"{r['active_params'] / 1e9:,.1f}B",
            str(r["layers"]),
            f"{r['q_heads']}/{r['kv_heads']}",
            f"{r['max_context']:,}" if r["max_context"] else "-",
            str(r["experts"] or "-"),
        )
    Console().print(t)
    return 0


def _cmd_dashboard(args) -> int:
    from perfmodel.dashboard.launch import main as launch

    return launch(args.streamlit_args, address=args.address, port=args.port)


#: Commands whose arithmetic is elementwise numpy (no matrix product large enough for BLAS to split).
ELEMENTWISE_COMMANDS = ("analyze", "predict", "sweep", "gpus", "models")
#: Environment variables that set the BLAS thread count (OpenBLAS reads the first it finds as numpy loads).
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _numpy_with_one_blas_thread() -> None:
    """Load numpy with one BLAS thread, unless numpy is loaded or the environment sets a thread count.

    The elementwise commands never call BLAS on a size it would split, and starting its worker threads
    costs tens of milliseconds of each start on a busy machine.  The environment is restored at once:
    processes started later see the caller's settings.
    """
    if "numpy" in sys.modules or any(v in os.environ for v in BLAS_THREAD_VARS):
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 bad input, 2 bad usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["analyze"]
    if argv[0] in ELEMENTWISE_COMMANDS:
        _numpy_with_one_blas_thread()
    parser = _build_parser(extensions=argv[0] not in CORE_COMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (exit 2) and --help (exit 0)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            status = args.func(args)
        except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            sys.stderr.write(f"perfmodel: error: {msg}\n")
            return 1
        except OverflowError as exc:  # a number past the float range that no parser caught
            sys.stderr.write(f"perfmodel: error: a number is too large ({exc})\n")
            return 1
    for msg in dict.fromkeys(str(w.message) for w in caught):
        sys.stderr.write(f"perfmodel: warning: {msg}\n")
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
