"""ILP planners on top of the analytical core (PuLP + HiGHS, CBC selectable).

- :func:`planners.moe.plan_moe`: MoE expert placement with redundant replicas and
  inter-layer affinity, beside contiguous, round-robin, greedy-LPT and EPLB-style baselines.
- :func:`planners.sp.plan_sp`: sequence-parallel groups for a batch of prompts
  (FlexSP's bucketed MILP), beside every static degree and a lower bound.
"""

from planners.errors import InfeasibleError, PlannerError
from planners.solver import SolverName, SolverOptions, SolveStatus

__all__ = ["InfeasibleError", "PlannerError", "SolveStatus", "SolverName", "SolverOptions"]
