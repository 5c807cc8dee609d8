"""Typed errors of the planners; every one is a ``ValueError``."""

from __future__ import annotations

from perfmodel.errors import TooLargeError as _TooLarge


class PlannerError(ValueError):
    """Bad planner input (a size, a file, an option)."""


class InfeasibleError(PlannerError):
    """No plan can satisfy the constraints; the message names what cannot fit."""


class TooLargeError(PlannerError, _TooLarge):
    """An input whose model would exceed a documented size bound; ``count`` and ``limit`` name both."""


__all__ = ["InfeasibleError", "PlannerError", "TooLargeError"]
