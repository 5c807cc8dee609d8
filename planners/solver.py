"""One place that runs a PuLP model under a time limit and a gap, and reports honestly.

PuLP 3.3 maps a time-limited HiGHS or CBC run that holds an incumbent to
``LpStatus == "Optimal"``; only ``sol_status == LpSolutionOptimal`` means the
solver proved optimality (within its gap).  :func:`solve` reads that, the
HiGHS dual bound when there is one, and the wall-clock seconds, and returns a
:class:`SolveResult` whose ``status`` says exactly what was proven.

HiGHS through PuLP 3.3 takes no warm start; :class:`_WarmHiGHS` hands the
variables' initial values to ``highspy.Highs.setSolution`` before the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import math
import os
import sys
import time
from dataclasses import dataclass

import pulp

from perfmodel.planners.errors import PlannerError


class SolverName(str, enum.Enum):
    """MILP back ends reachable through PuLP."""

    HIGHS = "highs"
    CBC = "cbc"


class SolveStatus(str, enum.Enum):
    """What is known about a plan."""

    OPTIMAL = "optimal"  # proven within the relative gap
    FEASIBLE = "feasible, not proven optimal"  # solver stopped (time limit) with an incumbent
    HEURISTIC = "heuristic, not proven optimal"  # solver found nothing better: best baseline kept
    INFEASIBLE = "infeasible"


@dataclass(frozen=True)
class SolverOptions:
    """Solver choice and limits.

    Attributes
    ----------
    name : SolverName
    time_limit_s : float, seconds
        Wall-clock budget of the whole plan (all sub-solves together).
    gap_rel : float
        Relative optimality gap at which a solve stops and counts as optimal.
    threads : int
        Solver threads (1 keeps runs deterministic).
    deadline : float or None, seconds of ``time.perf_counter()``
        When the whole command must be done (the CLI sets it when the command
        starts, so reading the inputs counts); None: the planner's start plus
        ``time_limit_s``.  Every solve's limit is cut to what is left before it.
    """

    name: SolverName = SolverName.HIGHS
    time_limit_s: float = 60.0
    gap_rel: float = 1e-3
    threads: int = 1
    deadline: float | None = None

    def deadline_from(self, t0: float) -> float:
        """The deadline of a plan that started at ``t0`` (``time.perf_counter()``)."""
        return self.deadline if self.deadline is not None else t0 + self.time_limit_s

    def __post_init__(self) -> None:
        if not isinstance(self.name, SolverName):
            try:
                object.__setattr__(self, "name", SolverName(str(self.name).lower()))
            except ValueError:
                raise PlannerError(f"unknown solver {self.name!r}; known: highs, cbc") from None
        if not (self.time_limit_s > 0 and math.isfinite(self.time_limit_s)):
            raise PlannerError(f"time limit must be a positive number of seconds, got {self.time_limit_s!r}")
        if not (0 <= self.gap_rel < 1):
            raise PlannerError(f"relative gap must be in [0, 1), got {self.gap_rel!r}")


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one MILP run.

    ``objective`` is None when no solution came back; ``bound`` is the solver's
    proven lower bound of a minimisation (None when the back end does not expose it).
    """

    status: SolveStatus
    objective: float | None
    bound: float | None
    seconds: float


class _WarmHiGHS(pulp.HiGHS):  # type: ignore[misc, valid-type]
    """PuLP's highspy interface plus a MIP start from the variables' initial values."""

    def callSolver(self, lp):
        variables = lp.variables()
        if getattr(self, "_warm", False):
            import highspy

            values = [v.varValue if v.varValue is not None else 0.0 for v in variables]
            sol = highspy.HighsSolution()
            sol.col_value = values
            sol.value_valid = True
            lp.solverModel.setSolution(sol)
        lp.solverModel.run()


def _flush_c_stdio() -> None:
    """``fflush(NULL)``: write out what C code buffered on its ``FILE*`` streams."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # pragma: no cover - no C runtime reachable by name
        pass


@contextlib.contextmanager
def solver_output_to_stderr():
    """Send what C code writes on file descriptor 1 to descriptor 2 while the block runs.

    Solver libraries (HiGHS prints its banner when an instance is made, whatever
    ``output_flag`` says) write from C, below ``sys.stdout``; a command that
    prints JSON must keep stdout for its own output.  Where the descriptors
    cannot be duplicated (no real stdout) the block runs unchanged.
    """
    try:
        out_fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        err_fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        sys.stdout.flush()
        _flush_c_stdio()
        saved = os.dup(out_fd)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        os.dup2(err_fd, out_fd)
        yield
    finally:
        _flush_c_stdio()
        os.dup2(saved, out_fd)
        os.close(saved)


def solve(
    prob: pulp.LpProblem, options: SolverOptions, time_limit_s: float, warm: bool = False
) -> SolveResult:
    """Solve ``prob`` (a minimisation) within ``time_limit_s`` seconds.

    ``warm``: the variables carry initial values (``setInitialValue``) forming a
    feasible solution; both back ends start from it.
    """
    if options.deadline is not None:  # never past the command's deadline
        time_limit_s = min(float(time_limit_s), options.deadline - time.perf_counter())
    limit = max(0.05, float(time_limit_s))
    if options.name is SolverName.HIGHS:
        solver = _WarmHiGHS(msg=False, timeLimit=limit, gapRel=options.gap_rel, threads=options.threads)
        solver._warm = warm
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PuLP 3.3 deprecation notice of the bundled CBC
            solver = pulp.PULP_CBC_CMD(
                msg=False, timeLimit=limit, gapRel=options.gap_rel, threads=options.threads, warmStart=warm
            )
    t0 = time.perf_counter()
    try:
        with solver_output_to_stderr():
            prob.solve(solver)
    except pulp.PulpSolverError as exc:  # pragma: no cover - solver crash
        raise PlannerError(f"{options.name.value} failed: {exc}") from None
    seconds = time.perf_counter() - t0
    obj = pulp.value(prob.objective)
    bound = None
    if options.name is SolverName.HIGHS and getattr(prob, "solverModel", None) is not None:
        info = prob.solverModel.getInfo()
        b = getattr(info, "mip_dual_bound", None)
        if b is not None and math.isfinite(b):
            bound = float(b)
    if prob.sol_status == pulp.LpSolutionOptimal:
        status = SolveStatus.OPTIMAL
        if bound is None and obj is not None:
            bound = float(obj) * (1 - options.gap_rel)
    elif prob.sol_status in (pulp.LpSolutionIntegerFeasible,) and obj is not None:
        status = SolveStatus.FEASIBLE
    elif prob.sol_status == pulp.LpSolutionInfeasible or prob.status == pulp.LpStatusInfeasible:
        status, obj = SolveStatus.INFEASIBLE, None
    else:
        status, obj = SolveStatus.FEASIBLE, None
    return SolveResult(
        status=status, objective=None if obj is None else float(obj), bound=bound, seconds=seconds
    )


MAX_MILP_VARIABLES = 200_000
"""The largest MILP a planner builds (variables); PuLP holds each as a Python object (about 1 KB with its
constraints' terms) and builds them at about 10^4 per second, so beyond this a model alone would outlast
any sensible time limit.  Larger inputs are refused with the count and this bound."""


def check_model_size(variables: int, what: str) -> None:
    """:class:`perfmodel.planners.errors.TooLargeError` naming ``what`` and the count when ``variables > MAX_MILP_VARIABLES``."""
    if variables > MAX_MILP_VARIABLES:
        from perfmodel.planners.errors import TooLargeError

        raise TooLargeError(
            f"{what}: its MILP would have {variables:,} variables, beyond the bound of "
            f"{MAX_MILP_VARIABLES:,} (planners.solver.MAX_MILP_VARIABLES)",
            count=int(variables),
            limit=MAX_MILP_VARIABLES,
        )


def relative_gap(upper: float, lower: float) -> float:
    """``(upper - lower) / upper``, clipped to [0, 1]; 0 when both are 0."""
    if upper <= 0:
        return 0.0
    return min(1.0, max(0.0, (upper - lower) / upper))


def new_var(prob: pulp.LpProblem, name: str, low=None, up=None, cat=pulp.LpContinuous) -> pulp.LpVariable:
    """A variable attached to ``prob`` (``add_variable`` where PuLP has it, else ``LpVariable``)."""
    if hasattr(prob, "add_variable"):
        return prob.add_variable(name, low, up, cat=cat)
    return pulp.LpVariable(name, low, up, cat=cat)  # pragma: no cover - PuLP < 3.3
