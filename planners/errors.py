"""Typed errors of the planners; every one is a ``ValueError``."""

from __future__ import annotations


class PlannerError(ValueError):
    """Bad planner input (a size, a file, an option)."""


class InfeasibleError(PlannerError):
    """No plan can satisfy the constraints; the message names what cannot fit."""


__all__ = ["InfeasibleError", "PlannerError"]
