"""Communication costs of collectives.

The alpha-beta ring model over the GPU's own fabric lives in
:func:`perfmodel.costs.collective_cost_simple`; this module is the single
entry point the cost model calls, so that topology-aware models slot in here.
"""

from __future__ import annotations

from hw.spec import GPU
from perfmodel.calibration import Profile
from perfmodel.costs import OpCost, collective_cost_simple
from perfmodel.ops import Collective


def collective_cost(op: Collective, gpu: GPU, profile: Profile) -> OpCost:
    """Cost of a collective on ``gpu``'s fabric under ``profile``."""
    return collective_cost_simple(op, gpu, profile)
