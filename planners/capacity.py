"""Capacity planner: the cheapest deployment that serves a workload within its latency SLOs.

1. Shapes: every (GPU kind, TP, PP) whose weights and longest request fit.
2. Prune with the analytical bounds (:func:`perfmodel.serving.analytic_bounds`):
   a shape whose prefill-alone TTFT or batch-1 TPOT already misses an SLO at
   its percentile can never meet it; the replicas needed are at least
   ``rate x mean output / throughput bound per replica``.
3. Exact search over what remains: for each shape, the fewest replicas that
   meet the SLOs in the simulator (doubling, then bisection: latency falls as
   replicas are added), run as independent tasks (on Ray when installed).
   The cheapest shape at its fewest replicas wins; every shape was searched,
   so no cheaper feasible deployment exists among the candidates (up to the
   monotonicity of latency in replicas and the simulated sample).
4. Confirm the winner and runners-up with fresh request samples (other seeds).

The whole search honours a deadline (``--time-limit``): past it no simulation starts and a running
one stops; the plan then holds the cheapest deployment found so far (``complete`` is False), or
:class:`PlannerError` says that none was found in time.

The Pareto front is cost against end-to-end p90 latency over every
deployment simulated that met the SLOs.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from perfmodel.errors import PerfModelError
from perfmodel.layers import check_tp
from perfmodel.serving import Deployment, Requests, Slo, analytic_bounds, simulate
from perfmodel.serving.deployment import check_fits_alone, replica_memory
from perfmodel.serving.parallel import parallel_map
from perfmodel.planners.errors import InfeasibleError, PlannerError

PRICES_PATH = Path(__file__).with_name("data") / "gpu_prices.yaml"

MAX_REQUESTS = 1_000_000
"""requests: the largest sample simulated per candidate deployment."""
MAX_GPUS = 65_536
"""GPUs: the largest ``max_gpus`` a plan may spend."""
DEFAULT_TIME_LIMIT_S = 300.0
"""seconds: the whole ``plan capacity`` command's default limit."""


class _OutOfTime(Exception):
    """The deadline passed during a simulation (caught inside this module)."""


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.time() >= deadline


def _deadline_hook(deadline: float | None):
    """A simulator progress callback that stops the simulation once ``deadline`` (``time.time()``) passes."""
    if deadline is None:
        return None

    def hook(done: int, total: int) -> None:
        if time.time() >= deadline:
            raise _OutOfTime

    return hook


@dataclass(frozen=True)
class Price:
    gpu: str
    usd_per_gpu_hour: float
    source: str
    date: str


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """GPU prices from a YAML file (default: the shipped examples); every entry needs a source and date."""
    p = Path(path) if path else PRICES_PATH
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlannerError(f"cannot read prices {p}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("prices"), dict):
        raise PlannerError(
            f"{p}: expected a 'prices' mapping of GPU name -> {{usd_per_gpu_hour, source, date}}"
        )
    out = {}
    for gpu, e in data["prices"].items():
        if not isinstance(e, dict):
            raise PlannerError(f"{p}: entry {gpu!r} must be a mapping")
        v = e.get("usd_per_gpu_hour")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise PlannerError(f"{p}: {gpu}: usd_per_gpu_hour must be a number > 0, got {v!r}")
        for k in ("source", "date"):
            if not e.get(k):
                raise PlannerError(f"{p}: {gpu}: every price needs a {k}")
        out[str(gpu)] = Price(str(gpu), float(v), str(e["source"]), str(e["date"]))
    return out


@dataclass(frozen=True)
class CapacityQuery:
    """What to serve and the targets.  ``requests`` is a sample of the workload at its rate."""

    model: str
    requests: Requests
    slo: Slo
    gpus: tuple[str, ...]
    tp_options: tuple[int, ...] = (1, 2, 4, 8)
    pp_options: tuple[int, ...] = (1,)
    max_gpus: int = 64
    mode: str = "calibrated"
    weight_dtype: str = "bf16"
    deployment_kw: dict = field(default_factory=dict)
    deadline: float | None = None  # time.time() past which no simulation runs (None: no limit)

    @property
    def rate_per_s(self) -> float:
        a = self.requests.arrival_s
        span = float(a[-1] - a[0])
        return (len(a) - 1) / span if span > 0 else math.inf


@dataclass(frozen=True)
class Shape:
    gpu: str
    tp: int
    pp: int
    min_replicas: int
    usd_per_replica_hour: float
    ttft_floor_s: float
    tpot_floor_s: float


@dataclass(frozen=True)
class Point:
    """One simulated deployment."""

    gpu: str
    tp: int
    pp: int
    replicas: int
    usd_per_hour: float
    ttft_s: float
    tpot_s: float
    e2e_p90_s: float
    meets: bool
    worst_ratio: float
    worst: str

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.replicas


@dataclass(frozen=True)
class CapacityPlan:
    best: Point
    runners_up: tuple[Point, ...]
    confirmed: dict
    points: tuple[Point, ...]
    pruned: tuple[tuple[str, str], ...]
    complete: bool = True  # False: the deadline stopped the search; ``best`` is the cheapest found by then

    def pareto(self) -> list[Point]:
        """Deployments that met the SLOs and that no cheaper, faster (e2e p90) one dominates."""
        ok = sorted((p for p in self.points if p.meets), key=lambda p: (p.usd_per_hour, p.e2e_p90_s))
        front, best_lat = [], math.inf
        for p in ok:
            if p.e2e_p90_s < best_lat:
                front.append(p)
                best_lat = p.e2e_p90_s
        return front

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "gpu": p.gpu,
                "tp": p.tp,
                "pp": p.pp,
                "replicas": p.replicas,
                "gpus": p.gpus,
                "usd_per_hour": round(p.usd_per_hour, 4),
                "ttft_s": p.ttft_s,
                "tpot_s": p.tpot_s,
                "e2e_p90_s": p.e2e_p90_s,
            }
            for p in self.pareto()
        ]


def _dep(q: CapacityQuery, gpu: str, tp: int, pp: int, replicas: int) -> Deployment:
    return Deployment.make(
        q.model,
        gpu,
        mode=q.mode,
        weight_dtype=q.weight_dtype,
        tp=tp,
        pp=pp,
        replicas=replicas,
        **q.deployment_kw,
    )


def shapes(q: CapacityQuery, prices: dict[str, Price]) -> tuple[list[Shape], list[tuple[str, str]]]:
    """Candidate shapes that survive the analytical bounds, and (shape, reason) for the pruned ones."""
    keep, pruned = [], []
    out_mean = float(np.mean(q.requests.output_len))
    rate = q.rate_per_s
    longest = int(np.argmax(q.requests.prompt_len + q.requests.output_len))
    for gpu in q.gpus:
        if gpu not in prices:
            raise PlannerError(
                f"no price for {gpu}; known: {', '.join(sorted(prices))} (or pass --prices FILE)"
            )
        for tp in q.tp_options:
            for pp in q.pp_options:
                name = f"{gpu} tp={tp} pp={pp}"
                if tp * pp > q.max_gpus:
                    pruned.append((name, f"needs {tp * pp} GPUs > max {q.max_gpus}"))
                    continue
                try:
                    dep = _dep(q, gpu, tp, pp, 1)
                    check_tp(dep.model, tp)
                    check_fits_alone(
                        dep,
                        replica_memory(dep),
                        int(q.requests.prompt_len[longest]),
                        int(q.requests.output_len[longest]),
                    )
                except PerfModelError as exc:
                    pruned.append((name, str(exc)))
                    continue
                b = analytic_bounds(dep, q.requests)
                ttft = float(np.percentile(b.prefill_s, q.slo.ttft_pct))
                tpot = float(np.percentile(b.tpot_floor_s, q.slo.tpot_pct))
                if q.slo.ttft_s is not None and ttft > q.slo.ttft_s:
                    pruned.append(
                        (
                            name,
                            (
                                f"TTFT p{q.slo.ttft_pct:g} >= {ttft:.4g} s (prefill alone) > target "
                                f"{q.slo.ttft_s:g} s ({ttft / q.slo.ttft_s:.2f}x)"
                            ),
                        )
                    )
                    continue
                if q.slo.tpot_s is not None and tpot > q.slo.tpot_s:
                    pruned.append(
                        (
                            name,
                            (
                                f"TPOT p{q.slo.tpot_pct:g} >= {tpot:.4g} s (one decode step) > target "
                                f"{q.slo.tpot_s:g} s ({tpot / q.slo.tpot_s:.2f}x)"
                            ),
                        )
                    )
                    continue
                bound = b.throughput_bound_tokens_per_s
                r_min = max(1, math.ceil(rate * out_mean / bound)) if math.isfinite(rate) else 1
                if r_min * tp * pp > q.max_gpus:
                    pruned.append(
                        (
                            name,
                            (
                                f"needs >= {r_min} replicas ({r_min * tp * pp} GPUs) by the throughput "
                                f"bound, max {q.max_gpus} GPUs"
                            ),
                        )
                    )
                    continue
                keep.append(Shape(gpu, tp, pp, r_min, tp * pp * prices[gpu].usd_per_gpu_hour, ttft, tpot))
    return keep, pruned


def _point(q: CapacityQuery, s: Shape, replicas: int, requests: Requests) -> Point:
    if _past(q.deadline):
        raise _OutOfTime
    res = simulate(
        _dep(q, s.gpu, s.tp, s.pp, replicas),
        requests,
        record_timeline=False,
        progress=_deadline_hook(q.deadline),
    )
    rep = res.slo_report(q.slo)
    worst = max(rep.items(), key=lambda kv: kv[1]["ratio"]) if rep else ("none", {"ratio": 0.0})
    return Point(
        s.gpu,
        s.tp,
        s.pp,
        replicas,
        replicas * s.usd_per_replica_hour,
        float(np.nanpercentile(res.ttft_s, q.slo.ttft_pct)),
        float(np.nanpercentile(res.tpot_s, q.slo.tpot_pct)) if np.isfinite(res.tpot_s).any() else 0.0,
        float(np.percentile(res.e2e_s, 90)),
        res.meets_slo(q.slo),
        float(worst[1]["ratio"]),
        worst[0],
    )


def search_shape(job: tuple[CapacityQuery, Shape]) -> list[Point]:
    """Fewest replicas of one shape meeting the SLOs (doubling then bisection); every point simulated.
    Past ``q.deadline`` the search stops with the points simulated by then."""
    q, s = job
    pts: dict[int, Point] = {}
    try:
        _search(q, s, pts)
    except _OutOfTime:
        pass
    return list(pts.values())


def _search(q: CapacityQuery, s: Shape, pts: dict[int, Point]) -> None:
    r_max = q.max_gpus // (s.tp * s.pp)

    def ev(r: int) -> Point:
        if r not in pts:
            pts[r] = _point(q, s, r, q.requests)
        return pts[r]

    lo, hi = s.min_replicas - 1, s.min_replicas
    while not ev(hi).meets:
        if hi >= r_max:
            return
        lo, hi = hi, min(2 * hi, r_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ev(mid).meets else (mid, hi)
    if hi + 1 <= r_max:
        ev(hi + 1)  # one step richer: a point for the Pareto front


def _confirm(job: tuple[CapacityQuery, Point, int]) -> bool | None:
    """Whether ``p`` meets the SLOs on a fresh sample; None when the deadline left no time to check."""
    q, p, seed = job
    reqs = resample(q.requests, seed)
    s = Shape(p.gpu, p.tp, p.pp, p.replicas, p.usd_per_hour / p.replicas, 0.0, 0.0)
    try:
        return _point(q, s, p.replicas, reqs).meets
    except _OutOfTime:
        return None


def resample(requests: Requests, seed: int) -> Requests:
    """Another sample like ``requests``: Poisson gaps at the same mean rate, lengths drawn from the sample."""
    rng = np.random.default_rng(seed)
    n = len(requests)
    a = requests.arrival_s
    span = float(a[-1] - a[0])
    arr = (
        np.zeros(n)
        if span == 0
        else np.concatenate([[0.0], np.cumsum(rng.exponential(span / (n - 1), n - 1))])
    )
    idx = rng.integers(0, n, n)
    return Requests.of(arr, requests.prompt_len[idx], requests.output_len[idx])


RAY_MIN_WORK_S = 30.0
"""seconds: in-process work (one core) beyond which a local Ray instance, which takes seconds to start and
then runs on every core, is used by ``backend="auto"``."""


def choose_backend(jobs_left: int, job_s: float, cores: int | None = None) -> "tuple[Any, str]":
    """``(Backend, reason)`` for ``jobs_left`` more jobs of about ``job_s`` seconds each, Ray installed:
    Ray when ``RAY_ADDRESS`` names a cluster, or when the work is more than :data:`RAY_MIN_WORK_S` seconds
    on one core and this machine has several; otherwise in-process (a local Ray instance costs more to
    start and to ship work to than it saves)."""
    from perfmodel.serving.parallel import Backend

    address = os.environ.get("RAY_ADDRESS")
    if address:
        return Backend.RAY, f"RAY_ADDRESS={address}"
    cores = (os.cpu_count() or 1) if cores is None else cores
    work = jobs_left * job_s
    if cores > 1 and work > RAY_MIN_WORK_S:
        return Backend.RAY, f"about {work:.0f} s of work left for one core; a local instance on {cores} cores"
    return Backend.LOCAL, (
        f"about {work:.1f} s of work left, under the {RAY_MIN_WORK_S:.0f} s a local Ray instance needs to pay"
        if cores > 1
        else "one core"
    )


def plan_capacity(
    q: CapacityQuery,
    prices: dict[str, Price],
    backend: str = "auto",
    confirm_seeds: int = 2,
    runners_up: int = 2,
) -> CapacityPlan:
    """Cheapest deployment meeting ``q.slo``; raises :class:`InfeasibleError` naming the binding constraint."""
    if q.slo.ttft_s is None and q.slo.tpot_s is None:
        raise PlannerError("give at least one SLO (TTFT or TPOT)")
    keep, pruned = shapes(q, prices)
    if not keep:
        raise InfeasibleError(_why_pruned(pruned))
    from perfmodel.progress import progress
    from perfmodel.serving.parallel import Backend, resolve_backend

    jobs = [(q, s) for s in keep]
    chosen = resolve_backend(backend)
    results = []
    with progress(len(jobs), "plan capacity: shapes searched") as advance:
        if Backend(backend) is Backend.AUTO and chosen is Backend.LOCAL:
            print("plan capacity: in-process (Ray not installed)", file=sys.stderr)
        elif Backend(backend) is Backend.AUTO:
            # Ray is installed: it pays for a cluster, or for more work than this process finishes soon
            t0 = time.perf_counter()
            results.append(search_shape(jobs[0]))
            advance(1)
            chosen, why = choose_backend(len(jobs) - 1, time.perf_counter() - t0)
            print(
                f"plan capacity: {'on Ray' if chosen is Backend.RAY else 'in-process'} ({why})",
                file=sys.stderr,
            )
        if chosen is Backend.LOCAL:
            for job in jobs[len(results) :]:
                results.append(search_shape(job))
                advance(1)
        else:
            results += parallel_map(search_shape, jobs[len(results) :], backend=Backend.RAY)
    points = [p for pts in results for p in pts]
    complete = not _past(q.deadline)
    ok = sorted((p for p in points if p.meets), key=lambda p: (p.usd_per_hour, p.e2e_p90_s))
    if not ok:
        if not complete:
            raise PlannerError(
                f"the time limit was reached after simulating {len(points)} deployment(s), none meeting the SLOs; "
                "raise --time-limit, or simulate fewer --requests or candidates"
            )
        close = min(points, key=lambda p: p.worst_ratio)
        raise InfeasibleError(
            f"no deployment within {q.max_gpus} GPUs meets the SLOs; closest: {close.replicas}x {close.gpu} "
            f"tp={close.tp} pp={close.pp} misses {close.worst.upper()} by {close.worst_ratio:.2f}x "
            f"(raise --max-gpus or relax the {close.worst.upper()} target)"
        )
    cheapest_per_shape: dict[tuple, Point] = {}
    for p in ok:
        cheapest_per_shape.setdefault((p.gpu, p.tp, p.pp), p)
    finalists = sorted(cheapest_per_shape.values(), key=lambda p: (p.usd_per_hour, p.e2e_p90_s))[
        : 1 + runners_up
    ]
    jobs = [(q, p, 1000 + k) for p in finalists for k in range(confirm_seeds)]
    verdicts = parallel_map(_confirm, jobs, backend=chosen)
    confirmed = {}
    for (_, p, _), v in zip(jobs, verdicts):
        key = (p.gpu, p.tp, p.pp, p.replicas)
        if v is None:  # no time left to check: not confirmed
            complete = False
        confirmed[key] = confirmed.get(key, True) and bool(v)
    for p in finalists:
        confirmed.setdefault((p.gpu, p.tp, p.pp, p.replicas), confirm_seeds == 0)
    good = [p for p in finalists if confirmed[(p.gpu, p.tp, p.pp, p.replicas)]]
    best = good[0] if good else finalists[0]
    return CapacityPlan(
        best, tuple(p for p in finalists if p is not best), confirmed, tuple(points), tuple(pruned), complete
    )


def _why_pruned(pruned: list[tuple[str, str]]) -> str:
    if not pruned:
        return "no candidate deployments (check --gpus, --tp and --pp)"
    by_ratio = []
    for name, why in pruned:
        if "x)" in why:
            try:
                by_ratio.append((float(why.rsplit("(", 1)[1].rstrip("x)")), name, why))
            except ValueError:
                pass
    if by_ratio:
        _r, name, why = min(by_ratio)
        return f"no candidate can meet the SLOs; the closest, {name}: {why}"
    name, why = pruned[0]
    return f"no candidate can serve the workload: {name}: {why}" + (
        f" (and {len(pruned) - 1} more shapes pruned)" if len(pruned) > 1 else ""
    )


def plot_pareto(plan: CapacityPlan, path: str | Path) -> None:
    """Cost against e2e p90 latency; the Pareto front as a line, the winner marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = [p for p in plan.points if p.meets]
    bad = [p for p in plan.points if not p.meets]
    if bad:
        ax.scatter(
            [p.usd_per_hour for p in bad], [p.e2e_p90_s for p in bad], c="lightgray", s=14, label="misses SLO"
        )
    ax.scatter([p.usd_per_hour for p in ok], [p.e2e_p90_s for p in ok], c="tab:blue", s=18, label="meets SLO")
    front = plan.pareto()
    ax.plot(
        [p.usd_per_hour for p in front],
        [p.e2e_p90_s for p in front],
        "-o",
        c="tab:orange",
        label="Pareto front",
    )
    for p in front:
        ax.annotate(
            f"{p.replicas}x{p.gpu} tp{p.tp}",
            (p.usd_per_hour, p.e2e_p90_s),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    b = plan.best
    ax.scatter([b.usd_per_hour], [b.e2e_p90_s], marker="*", s=180, c="tab:red", label="chosen", zorder=5)
    ax.set_xlabel("cost, USD per hour")
    ax.set_ylabel("end-to-end latency p90, s")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def with_slo(q: CapacityQuery, **kw) -> CapacityQuery:
    return replace(q, slo=replace(q.slo, **kw))


# -- command line ----------------------------------------------------------------------------
def register(plan_subparsers) -> None:
    """Add ``capacity`` to ``perfmodel plan``."""
    p = plan_subparsers.add_parser("capacity", help="cheapest GPU deployment meeting TTFT/TPOT SLOs")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--candidates", default=None, help="GPU kinds, comma-separated (default: every priced GPU)"
    )
    p.add_argument("--rate", required=False, default=None, help="requests per second (Poisson)")
    p.add_argument("--prompt-len", default="2048", help="N, lognormal:MEAN:SIGMA[:CAP] or uniform:LOW:HIGH")
    p.add_argument("--output-len", default="128")
    p.add_argument("--trace", default=None, help="JSONL/CSV trace instead of --rate and lengths")
    p.add_argument("--requests", type=int, default=1000, help="requests simulated per candidate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slo-ttft", type=float, default=None, help="TTFT target, seconds")
    p.add_argument("--slo-tpot", type=float, default=None, help="TPOT target, seconds")
    p.add_argument("--slo-pct", type=float, default=90.0, help="percentile of both targets (default 90)")
    p.add_argument("--tp", default="1,2,4,8", help="TP degrees to consider")
    p.add_argument("--pp", default="1", help="PP degrees to consider")
    p.add_argument("--max-gpus", type=int, default=64)
    p.add_argument("--prices", default=None, help="YAML of usd_per_gpu_hour with source and date per GPU")
    p.add_argument("--mode", choices=["calibrated", "peak"], default="calibrated")
    from perfmodel.cli import add_attention_impl_arg, add_launch_arg

    add_attention_impl_arg(p)
    add_launch_arg(p)
    p.add_argument("--weight-dtype", default="bf16")
    p.add_argument("--kv-policy", choices=["swap", "recompute", "queue"], default="queue")
    p.add_argument(
        "--backend",
        choices=["auto", "ray", "local"],
        default="auto",
        help="auto: in-process, or Ray when installed and RAY_ADDRESS names a cluster or the work "
        "is more than about 30 s on one core (the choice is printed)",
    )
    p.add_argument("--png", default=None, help="write the Pareto front plot here")
    from perfmodel.planners.cli import _time_limit

    p.add_argument(
        "--time-limit",
        type=_time_limit,
        default=DEFAULT_TIME_LIMIT_S,
        help="seconds for the whole plan; past it the cheapest deployment found so far is shown "
        "(default %(default)s)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_capacity)


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise PlannerError(f"{name}: expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise PlannerError(f"{name}: degrees must be >= 1, got {text!r}")
    return vals


def query_from_args(args) -> CapacityQuery:
    from perfmodel.hw.loader import resolve_gpu_name
    from perfmodel.serving import LengthDist, Workload, read_trace
    from perfmodel.serving.workload import parse_rate

    from perfmodel.planners.errors import TooLargeError

    if args.requests < 1:
        raise PlannerError(f"--requests must be >= 1, got {args.requests}")
    if args.requests > MAX_REQUESTS:
        raise TooLargeError(
            f"--requests {args.requests:,} is above the {MAX_REQUESTS:,} simulated per candidate",
            count=args.requests,
            limit=MAX_REQUESTS,
        )
    if args.max_gpus < 1:
        raise PlannerError(f"--max-gpus must be >= 1, got {args.max_gpus}")
    if args.max_gpus > MAX_GPUS:
        raise TooLargeError(
            f"--max-gpus {args.max_gpus:,} is above the {MAX_GPUS:,} a plan may spend",
            count=args.max_gpus,
            limit=MAX_GPUS,
        )
    if args.trace:
        reqs = read_trace(args.trace)
    else:
        if args.rate is None:
            raise PlannerError("give --rate (requests/s) or --trace")
        rate = parse_rate(args.rate)
        if not math.isfinite(rate):
            raise PlannerError(
                f"--rate must be a finite number of requests/s to size a deployment for, got {args.rate!r}"
            )
        reqs = Workload(
            args.requests,
            rate,
            LengthDist.parse(args.prompt_len, "--prompt-len"),
            LengthDist.parse(args.output_len, "--output-len"),
            seed=args.seed,
        ).generate()
    prices = load_prices(args.prices)
    gpus = (
        tuple(resolve_gpu_name(g.strip()) for g in args.candidates.split(","))
        if args.candidates
        else tuple(prices)
    )
    slo = Slo(args.slo_ttft, args.slo_tpot, args.slo_pct, args.slo_pct)
    return CapacityQuery(
        args.model,
        reqs,
        slo,
        gpus,
        _ints(args.tp, "--tp"),
        _ints(args.pp, "--pp"),
        args.max_gpus,
        args.mode,
        args.weight_dtype,
        {"kv_policy": args.kv_policy, "attention_impl": args.attention_impl, "launch": args.launch},
        getattr(args, "t0", time.time()) + getattr(args, "time_limit", DEFAULT_TIME_LIMIT_S),
    )


def _cmd_capacity(args) -> int:
    args.t0 = time.time()
    q = query_from_args(args)
    prices = load_prices(args.prices)
    plan = plan_capacity(q, prices, backend=args.backend)
    if args.png:
        plot_pareto(plan, args.png)
    b = plan.best
    out = {
        "best": {
            "gpu": b.gpu,
            "tp": b.tp,
            "pp": b.pp,
            "replicas": b.replicas,
            "gpus": b.gpus,
            "usd_per_hour": b.usd_per_hour,
            "ttft_s": b.ttft_s,
            "tpot_s": b.tpot_s,
            "e2e_p90_s": b.e2e_p90_s,
            "confirmed": plan.confirmed[(b.gpu, b.tp, b.pp, b.replicas)],
            "price_source": prices[b.gpu].source,
            "price_date": prices[b.gpu].date,
        },
        "runners_up": [
            {
                "gpu": p.gpu,
                "tp": p.tp,
                "pp": p.pp,
                "replicas": p.replicas,
                "usd_per_hour": p.usd_per_hour,
                "confirmed": plan.confirmed[(p.gpu, p.tp, p.pp, p.replicas)],
            }
            for p in plan.runners_up
        ],
        "pareto": plan.table(),
        "pruned": [{"shape": n, "reason": r} for n, r in plan.pruned],
        "simulated": len(plan.points),
        "complete": plan.complete,  # False: --time-limit stopped the search (the cheapest found by then)
        "rate_per_s": q.rate_per_s if math.isfinite(q.rate_per_s) else None,  # a trace arriving all at once
        "provenance": gpu_provenance(q.gpus, q.mode),
    }
    if args.json:
        from perfmodel.jsonout import dumps

        print(dumps(out, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from perfmodel.tables import fmt_seconds

    con = Console()
    con.print(
        f"cheapest: {b.replicas} x {b.gpu} (tp={b.tp}, pp={b.pp}) = {b.gpus} GPUs, ${b.usd_per_hour:,.2f}/h; "
        f"TTFT p{q.slo.ttft_pct:g} {fmt_seconds(b.ttft_s)}, TPOT p{q.slo.tpot_pct:g} {fmt_seconds(b.tpot_s)}"
        f"{'' if out['best']['confirmed'] else ' (NOT confirmed on fresh samples)'}"
    )
    t = Table(title="Pareto front (cost vs end-to-end p90)")
    for c in ("gpu", "tp", "pp", "replicas", "gpus", "$/h", "TTFT", "TPOT", "e2e p90"):
        t.add_column(c, justify="right")
    for r in out["pareto"]:
        t.add_row(
            r["gpu"],
            str(r["tp"]),
            str(r["pp"]),
            str(r["replicas"]),
            str(r["gpus"]),
            f"{r['usd_per_hour']:,.2f}",
            fmt_seconds(r["ttft_s"]),
            fmt_seconds(r["tpot_s"]),
            fmt_seconds(r["e2e_p90_s"]),
        )
    con.print(t)
    con.print(f"{len(plan.points)} deployments simulated, {len(plan.pruned)} shapes pruned analytically")
    if not plan.complete:
        con.print(
            f"note: --time-limit ({args.time_limit:g} s) stopped the search: the cheapest deployment found by "
            "then is shown",
            markup=False,
        )
    for gpu, line in out["provenance"].items():
        con.print(f"provenance {gpu}: {line}", markup=False)
    return 0


def gpu_provenance(gpus, mode: str) -> dict[str, str]:
    """Per GPU, where its curves come from in ``mode`` (:meth:`perfmodel.calibration.Profile.provenance_summary`):
    a ranking may mix measured, transferred and datasheet GPUs, and says so."""
    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import resolve_profile

    return {g: resolve_profile(load_gpu(g), mode).provenance_summary() for g in gpus}
