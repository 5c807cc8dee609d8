"""Cost of a whole decoder layer (:class:`perfmodel.ops.DecoderLayer`): the sum of its parts' costs, each
priced as an op of its own (its band included); the layer's band is the sum of its parts', each end scaled by
the profile's combination factors (:func:`perfmodel.costs.bands.phase_band`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from perfmodel.hw.spec import GPU
from perfmodel.costs.bands import phase_band
from perfmodel.costs.base import ZERO, OpCost
from perfmodel.ops import DecoderLayer, Op, decoder_layer_parts

if TYPE_CHECKING:
    from perfmodel.calibration import Profile


def decoder_layer_cost(
    op: DecoderLayer, gpu: GPU, prof: Profile, part_cost: Callable[[Op, GPU, Profile], OpCost]
) -> OpCost:
    """The layer's parts (:func:`perfmodel.ops.decoder_layer_parts`), each priced by ``part_cost`` (the
    registry's :func:`perfmodel.costs.op_cost`) and counted as often as the layer runs it, seconds."""
    return phase_band(
        sum((part_cost(o, gpu, prof).scale(c) for _, o, c in decoder_layer_parts(op)), ZERO), prof
    )
