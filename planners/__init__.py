"""ILP planners on top of the analytical core (PuLP + HiGHS, CBC selectable).

- :func:`perfmodel.planners.moe.plan_moe`: MoE expert placement with redundant replicas and
  inter-layer affinity, beside contiguous, round-robin, greedy-LPT and EPLB-style baselines.
- :func:`perfmodel.planners.sp.plan_sp`: sequence-parallel groups for a batch of prompts
  (FlexSP's bucketed MILP), beside every static degree and a lower bound.
- :func:`perfmodel.planners.capacity.plan_capacity`: the cheapest deployment meeting latency SLOs.

The solver names are imported on first use, so importing the package (``perfmodel``'s command
line registers ``plan`` through it) loads no solver.
"""

from typing import Any

from perfmodel.planners.errors import InfeasibleError, PlannerError

__all__ = ["InfeasibleError", "PlannerError", "SolveStatus", "SolverName", "SolverOptions"]


def __getattr__(name: str) -> Any:
    if name in ("SolverName", "SolverOptions", "SolveStatus"):
        from perfmodel.planners import solver

        return getattr(solver, name)
    raise AttributeError(f"module 'planners' has no attribute {name!r}")
