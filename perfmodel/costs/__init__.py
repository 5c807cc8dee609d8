"""Cost of one op on one GPU: a roofline with a calibration profile, one module per op class.

``op_cost(op, gpu, profile) -> OpCost`` is a pure function.  Numeric op fields may be numpy arrays; the
result's fields then are arrays of the same shape.  Costs add with ``+`` (use :meth:`OpCost.scale` for
repeated ops).

==========================  ==========================================================================
module                      what it prices, with its curve parameter type
==========================  ==========================================================================
:mod:`.base`                :class:`OpCost`, :class:`Bound`, :class:`OpClass`, the roofline blend, the
                            occupancy and wave terms, :class:`CurveParams` (the types' shared rules)
:mod:`.gemm`                dense GEMMs (``GemmParams``)
:mod:`.grouped_gemm`        a MoE layer's experts in one kernel (``GroupedGemmParams``)
:mod:`.attention`           prefill and decode attention, their kernels' schedules (``AttentionParams``,
                            ``SplitRule``)
:mod:`.copies`              memory copies (``CopyParams``)
:mod:`.elementwise`         elementwise and row kernels (``ElementwiseParams``)
:mod:`.collectives`         collectives over a topology (``CollectiveParams``)
:mod:`.layer`               a whole decoder layer, the sum of its parts
:mod:`.bands`               error bands, regimes and size classes of a predicted cost
:mod:`.registry`            op type -> cost function, op class -> parameter type, :func:`op_cost`
==========================  ==========================================================================
"""

from perfmodel.costs.bands import (
    LATENCY_BOUND_SHARE,
    REGIMES,
    SIZE_CLASSES,
    SIZE_EDGES_S,
    band_keys,
    regime_of,
    size_class_of,
    with_band,
)
from perfmodel.costs.base import ZERO, Bound, OpCost, eager_cost
from perfmodel.costs.copies import memcpy_class
from perfmodel.costs.gemm import GEMM_ALIGN_BYTES, GEMM_CANDIDATE_TILES
from perfmodel.costs.registry import COST_FUNCTIONS, PARAMS_TYPES, op_cost

__all__ = [
    "COST_FUNCTIONS",
    "GEMM_ALIGN_BYTES",
    "GEMM_CANDIDATE_TILES",
    "LATENCY_BOUND_SHARE",
    "PARAMS_TYPES",
    "REGIMES",
    "SIZE_CLASSES",
    "SIZE_EDGES_S",
    "ZERO",
    "Bound",
    "OpCost",
    "band_keys",
    "eager_cost",
    "memcpy_class",
    "op_cost",
    "regime_of",
    "size_class_of",
    "with_band",
]
