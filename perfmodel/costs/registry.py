"""The registries of the cost model: op type -> cost function, op class -> curve parameter type, and
:func:`op_cost`, which dispatches through the first and adds the launch and band terms every op shares."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from perfmodel.hw.spec import GPU
from perfmodel.costs.attention import AttentionParams, attention_cost
from perfmodel.costs.bands import with_band
from perfmodel.costs.base import CurveParams, Launch, OpClass, OpCost, eager_cost
from perfmodel.costs.collectives import CollectiveParams, collective_cost
from perfmodel.costs.copies import CopyParams, memcpy_cost
from perfmodel.costs.elementwise import ElementwiseParams, elementwise_cost
from perfmodel.costs.gemm import GemmParams, gemm_cost
from perfmodel.costs.grouped_gemm import GroupedGemmParams, grouped_gemm_cost
from perfmodel.costs.layer import decoder_layer_cost
from perfmodel.ops import COLLECTIVE_KINDS, Collective, DecoderLayer, Op, OpKind

if TYPE_CHECKING:
    from perfmodel.calibration import Profile

#: The curve parameter type of each op class (the loader builds it from a profile's keys).
PARAMS_TYPES: Mapping[OpClass, type[CurveParams]] = MappingProxyType(
    {
        OpClass.GEMM: GemmParams,
        OpClass.GROUPED_GEMM: GroupedGemmParams,
        OpClass.ATTENTION_PREFILL: AttentionParams,
        OpClass.ATTENTION_DECODE: AttentionParams,
        OpClass.ELEMENTWISE: ElementwiseParams,
        OpClass.MEMCPY_D2D: CopyParams,
        OpClass.MEMCPY_H2D: CopyParams,
        OpClass.MEMCPY_D2H: CopyParams,
        OpClass.MEMCPY_H2D_PAGEABLE: CopyParams,
        OpClass.MEMCPY_D2H_PAGEABLE: CopyParams,
        OpClass.ALL_REDUCE: CollectiveParams,
        OpClass.ALL_GATHER: CollectiveParams,
        OpClass.REDUCE_SCATTER: CollectiveParams,
        OpClass.ALL_TO_ALL: CollectiveParams,
        OpClass.SEND_RECV: CollectiveParams,
    }
)

#: The peak curve (every efficiency 1, every latency 0) of each op class.
PEAK_PARAMS: Mapping[OpClass, CurveParams] = MappingProxyType({c: t() for c, t in PARAMS_TYPES.items()})


def params_type(op_class: OpClass) -> type[CurveParams]:
    """The curve parameter type of ``op_class``."""
    return PARAMS_TYPES[op_class]


CostFunction = Callable[[Op, GPU, "Profile"], OpCost]


def op_cost(op: Op, gpu: GPU, profile: Profile) -> OpCost:
    """Predicted cost of ``op`` on ``gpu`` under ``profile`` (peak or calibrated).

    The op's type picks its cost function (:data:`COST_FUNCTIONS`).  Under eager launch
    (``profile.launch``) a kernel takes its graph-replay time plus ``gap_s``, and at least the host's
    ``issue_s`` per launch (:func:`perfmodel.costs.base.eager_cost`); with the profile's error bands,
    the op's band (:func:`perfmodel.costs.bands.with_band`; a layer's band is the sum of its parts').

    Parameters
    ----------
    op : Op, numeric fields may be numpy arrays (broadcast together)
    gpu : GPU
    profile : Profile

    Returns
    -------
    OpCost, seconds (fields of the ops' broadcast shape for array ops)
    """
    try:
        price = COST_FUNCTIONS[op.kind]
    except (AttributeError, KeyError):
        raise TypeError(f"not an op: {op!r}") from None
    c = price(op, gpu, profile)
    if (
        profile.launch is Launch.EAGER
        and profile.launch_terms
        and not isinstance(op, (DecoderLayer, Collective))
    ):
        c = eager_cost(c, profile.launch_terms)
    if profile.bands and not isinstance(op, DecoderLayer):  # a layer's band is the sum of its parts'
        c = with_band(c, op, profile)
    return c


#: The cost function of each op type (``op.kind``): ``f(op, gpu, profile) -> OpCost``.
COST_FUNCTIONS: Mapping[OpKind, CostFunction] = MappingProxyType(
    {
        OpKind.GEMM: gemm_cost,
        OpKind.GROUPED_GEMM: grouped_gemm_cost,
        OpKind.ATTENTION: attention_cost,
        OpKind.MEMCPY: memcpy_cost,
        OpKind.ELEMENTWISE: elementwise_cost,
        OpKind.DECODER_LAYER: functools.partial(decoder_layer_cost, part_cost=op_cost),
        **{k: collective_cost for k in COLLECTIVE_KINDS},
    }
)
