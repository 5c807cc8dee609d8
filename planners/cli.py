"""``perfmodel plan moe|sp|capacity``: registered into the ``perfmodel`` command."""

from __future__ import annotations

import argparse
import importlib
import math
import time

from perfmodel.jsonout import dumps
from perfmodel.tables import fmt_seconds
from perfmodel.planners.errors import PlannerError

_DEFAULT_SYSTEM = "dgx-h100-x4"


def _time_limit(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"time limit must be > 0 seconds, got {text!r}")
    return v


def _share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"a share is in [0, 1], got {text!r}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def register(subparsers) -> None:
    """Add ``plan`` with its ``moe`` and ``sp`` subcommands (and ``capacity`` when present)."""
    plan = subparsers.add_parser("plan", help="ILP planners: MoE expert placement, sequence-parallel splits")
    sub = plan.add_subparsers(dest="plan_command", parser_class=type(plan))

    m = sub.add_parser("moe", help="place MoE experts (and redundant replicas) on GPUs")
    m.add_argument(
        "--loads", required=True, help='JSON {"loads": [[tokens per expert] per layer]} or a routing trace'
    )
    m.add_argument("--gpus", required=True, type=_int)
    m.add_argument(
        "--slots-per-gpu", required=True, type=_int, help="expert slots per GPU (spare slots: replicas)"
    )
    m.add_argument("--nodes", type=_int, default=1)
    m.add_argument(
        "--affinity", default=None, help='JSON {"affinity": R[l][e1][e2]} inter-layer routing counts'
    )
    m.add_argument(
        "--synthetic-affinity",
        type=_share,
        default=None,
        metavar="F",
        help="without a trace or --affinity: the share F of the copies routed to expert e in layer l+1 "
        "that leave from the GPU where expert e ran in layer l (ExFlow's inter-layer affinity; "
        "experts numbered so that affine pairs share an id), the rest evenly from every GPU",
    )
    m.add_argument(
        "--tie-search",
        action="store_true",
        help="with affinity: swap or move replicas where no layer's largest GPU load grows and the "
        "traffic between layers falls",
    )
    m.add_argument(
        "--system",
        default=_DEFAULT_SYSTEM,
        help=f"hw/ cluster or node whose link bandwidths weigh traffic (default {_DEFAULT_SYSTEM})",
    )
    m.add_argument(
        "--hidden",
        type=_int,
        default=7168,
        help="hidden size: bytes of a routed token for the all-to-all time (default 7168, DeepSeek-V3)",
    )
    m.add_argument(
        "--activation-bytes", type=_int, default=2, help="bytes per activation element (default 2)"
    )
    _solver_args(m)
    m.set_defaults(func=_cmd_moe)

    s = sub.add_parser("sp", help="choose sequence-parallel groups for a batch of prompts")
    s.add_argument("--lengths", required=True, help='JSON {"lengths": [...]}')
    s.add_argument("--gpus", required=True, type=_int)
    s.add_argument("--model", required=True)
    s.add_argument("--gpu", required=True)
    s.add_argument(
        "--sp-kind",
        choices=["ulysses", "ring", "hybrid", "tokenring", "auto"],
        default="ulysses",
        help="ulysses (default), ring, hybrid, tokenring, or auto: per group and sequence the fastest",
    )
    s.add_argument(
        "--micro-batches",
        action="store_true",
        help="a group may run its sequences as several micro-batches (only one's KV resident), "
        "and the batch two rounds with their own groups",
    )
    s.add_argument("--mode", choices=["calibrated", "peak"], default="calibrated")
    s.add_argument("--buckets", type=_int, default=16, help="length buckets of the MILP (default 16)")
    s.add_argument(
        "--topology",
        default=None,
        help="system from hw/data/systems an SP group is placed in (default: one NVLink node of 8 GPUs; "
        "groups never span more GPUs than it has)",
    )
    _solver_args(s)
    s.set_defaults(func=_cmd_sp)

    try:
        capacity = importlib.import_module("perfmodel.planners.capacity")
    except ModuleNotFoundError as exc:
        if exc.name != "perfmodel.planners.capacity":
            raise
    else:
        capacity.register(sub)
    plan.set_defaults(func=lambda args: (plan.print_help(), 2)[1])


def _solver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--time-limit", type=_time_limit, default=60.0, help="seconds for the whole plan (default 60)"
    )
    p.add_argument("--gap", type=float, default=1e-3, help="relative optimality gap (default 0.001)")
    p.add_argument("--solver", choices=["highs", "cbc"], default="highs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _options(args):
    """Solver options whose deadline is the command's start (``args.t0``) plus ``--time-limit``."""
    from perfmodel.planners.solver import SolverOptions

    return SolverOptions(args.solver, args.time_limit, args.gap, deadline=args.t0 + args.time_limit)


def system_bandwidths(system: str) -> tuple[float, float]:
    from perfmodel.hw.loader import load_system
    from perfmodel.hw.spec import Cluster

    sysd = load_system(system)
    if isinstance(sysd, Cluster):
        return sysd.node.intra_node.bytes_per_s_per_direction, sysd.inter_node.bytes_per_s_per_direction
    raise PlannerError(
        f"system {system!r} is a single node; give a cluster (it sets the cross-node bandwidth)"
    )


def _cmd_moe(args) -> int:
    args.t0 = time.perf_counter()
    from perfmodel.planners.inputs import read_affinity, read_loads
    from perfmodel.planners.moe import MoEProblem, plan_moe
    from perfmodel.planners.moe_traffic import add_route_times, route_topology

    loads, trace_aff = read_loads(args.loads)
    aff = read_affinity(args.affinity) if args.affinity else trace_aff
    sources = "even" if aff is None else ("affinity file" if args.affinity else "trace")
    transitions = None
    if args.synthetic_affinity is not None:
        if aff is not None:
            raise PlannerError(f"--synthetic-affinity replaces a missing affinity; the {sources} gives one")
        from perfmodel.ep_route import synthetic_transitions

        if args.synthetic_affinity > 0:
            aff = transitions = synthetic_transitions(loads, args.synthetic_affinity)
        sources = f"synthetic affinity {args.synthetic_affinity:g}"
    if args.tie_search and aff is None:
        raise PlannerError(
            "--tie-search needs inter-layer affinity (a trace, --affinity or --synthetic-affinity > 0)"
        )
    intra, inter = system_bandwidths(args.system)
    problem = MoEProblem(loads, args.gpus, args.slots_per_gpu, args.nodes, aff, intra, inter, transitions)
    if args.hidden < 1 or args.activation_bytes < 1:
        raise PlannerError("--hidden and --activation-bytes must be positive")
    topo, profile = route_topology(args.system, args.gpus, args.nodes)
    plan = plan_moe(problem, _options(args), tie_search=args.tie_search)
    out = plan.to_dict()
    add_route_times(
        out, problem, plan.placements, topo, profile, float(args.hidden * args.activation_bytes), sources
    )
    if args.json:
        print(dumps(out, indent=1))
        return 0
    _print_moe(out)
    return 0


def _print_moe(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="MoE placement: sum over layers (tokens)")
    for c in ("plan", "max GPU load", "vs plan", "cross-GPU tokens", "cross-node tokens", "all-to-all"):
        t.add_column(c, justify="right" if c != "plan" else "left")
    ours = out["total"]["max_gpu_load"]

    def row(name, tot):
        f = lambda v: "-" if v is None else f"{v:,.0f}"
        t.add_row(
            name,
            f(tot["max_gpu_load"]),
            f"{tot['max_gpu_load'] / ours:.3f}x" if ours else "-",
            f(tot["cross_gpu_tokens"]),
            f(tot["cross_node_tokens"]),
            fmt_seconds(tot["all_to_all_s"]) if tot.get("all_to_all_s") is not None else "-",
        )

    row("ILP", out["total"])
    for name, b in out["baselines"].items():
        row(name, b["total"])
    c = Console()
    c.print(t)
    s = out["solver"]
    c.print(
        f"lower bound {out['total']['lower_bound']:,.0f}; solver {s['name']}: {s['status']}, "
        f"max layer gap {s['gap']:.2%}, {s['layers_proven_optimal']}/{s['layers']} layers proven, "
        f"{fmt_seconds(s['seconds'])}"
        + (f"; affinity mapping: {s['affinity_status']}" if "affinity_status" in s else "")
    )
    if "tie_search" in s:
        ts = s["tie_search"]
        c.print(
            f"tie search: {ts['changes']} changes, routed weighted traffic {ts['routed_weighted_traffic_before']:,.0f}"
            f" -> {ts['routed_weighted_traffic_after']:,.0f}"
            + ("" if ts["converged"] else " (stopped at the limit)")
        )
    c.print(f"token sources: {out['all_to_all']['token_sources']}")
    if len(out["layers"]) <= 4:
        for i, layer in enumerate(out["layers"]):
            c.print(f"layer {i}: " + " | ".join(",".join(map(str, g)) for g in layer["placement"]))


def _cmd_sp(args) -> int:
    args.t0 = time.perf_counter()
    from perfmodel.scenario import Scenario
    from perfmodel.planners.inputs import read_lengths
    from perfmodel.planners.sp import build_instance, check_gpus, check_size, plan_sp
    from perfmodel.planners.sp_cost import SpCostModel, SpKind

    lengths = read_lengths(args.lengths)
    check_gpus(args.gpus)
    if args.buckets >= 1:
        check_size(args.gpus, min(args.buckets, len(set(lengths.tolist()))))
    kind = SpKind(args.sp_kind)
    scn = Scenario.make(
        args.model,
        args.gpu,
        context_len=int(lengths.max()),
        output_tokens=0,
        mode=args.mode,
        sp_kind="ring" if kind is SpKind.AUTO else kind.value,
        topology=args.topology,
    )
    cost = SpCostModel.from_scenario(scn, kind)
    plan = plan_sp(build_instance(lengths, args.gpus, cost), _options(args), args.buckets, args.micro_batches)
    out = plan.to_dict()
    if args.json:
        print(dumps(out, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"SP plan: {len(lengths)} sequences on {args.gpus} GPUs ({args.sp_kind})")
    rounds = len({g["round"] for g in out["groups"]}) > 1
    for col in ("round",) * rounds + ("degree", "GPUs", "nodes", "sequences", "time"):
        t.add_column(col, justify="right")
    for g in out["groups"]:
        t.add_row(
            *(str(g["round"]),) * rounds,
            str(g["degree"]),
            f"{g['gpus'][0]}-{g['gpus'][-1]}",
            ",".join(map(str, g["nodes"])),
            str(len(g["sequences"])),
            fmt_seconds(g["time_s"]),
        )
    c = Console()
    c.print(t)
    c.print(
        f"makespan {fmt_seconds(out['makespan_s'])}; lower bound {fmt_seconds(out['lower_bound_s'])}; "
        f"solver {out['solver']['name']}: {out['solver']['status']}, gap {out['solver']['gap']:.2%}, "
        f"{fmt_seconds(out['solver']['seconds'])}"
    )
    c.print(
        "static strategies: "
        + ", ".join(
            f"{k[len('static_sp_') :]}: "
            + ("does not fit" if v is None else f"{fmt_seconds(v)} ({v / out['makespan_s']:.3f}x)")
            for k, v in out["baselines"].items()
        )
    )
    return 0
