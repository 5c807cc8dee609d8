"""Cost of a memory copy (device to device, host to device and back, pinned or pageable) under its
direction's curve (:class:`CopyParams`): a roofline over HBM or the PCIe link, with a knee where the
copy outgrows a cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from perfmodel.hw.spec import GPU
from perfmodel.costs.base import Bound, RooflineParams, OpClass, OpCost, roofline
from perfmodel.errors import OpDescriptorError
from perfmodel.ops import Memcpy, MemLocation, bytes_moved

if TYPE_CHECKING:
    from perfmodel.calibration import Profile


@dataclass(frozen=True)
class CopyParams(RooflineParams):
    """Achieved-fraction curve of one copy direction (``memcpy_d2d``, ``memcpy_h2d``, ...).

    Attributes
    ----------
    compute_eff : float in (0, 1.5], unused by a copy (no math) but part of the roofline
    memory_eff : float, fraction of the path's bandwidth in (0, 1.5]
    latency_s : float, seconds per copy
    overlap : float in [0, 1]
    ramp_flops : float, unused by a copy (no math)
    ramp_bytes : float, bytes at which half of ``memory_eff`` is reached (0: none)
    bandwidth_bytes_per_s : float, overrides the datasheet bandwidth of the path (0: datasheet)
    knee_bytes : float, size above which ``tail_memory_eff`` applies to the extra bytes (0: none)
    tail_memory_eff : float, memory efficiency of the bytes beyond ``knee_bytes`` (0: ``memory_eff``)
    """


_MEMCPY_CLASS = {
    (MemLocation.DEVICE, MemLocation.DEVICE): OpClass.MEMCPY_D2D,
    (MemLocation.HOST_PINNED, MemLocation.DEVICE): OpClass.MEMCPY_H2D,
    (MemLocation.DEVICE, MemLocation.HOST_PINNED): OpClass.MEMCPY_D2H,
    (MemLocation.HOST_PAGEABLE, MemLocation.DEVICE): OpClass.MEMCPY_H2D_PAGEABLE,
    (MemLocation.DEVICE, MemLocation.HOST_PAGEABLE): OpClass.MEMCPY_D2H_PAGEABLE,
}

#: The copy classes (one curve per direction and host-memory kind).
COPY_CLASSES: tuple[OpClass, ...] = tuple(_MEMCPY_CLASS.values())


def memcpy_class(op: Memcpy) -> OpClass:
    """The class of a copy; :class:`~perfmodel.errors.OpDescriptorError` for a direction not modelled."""
    try:
        return _MEMCPY_CLASS[(op.src, op.dst)]
    except KeyError:
        raise OpDescriptorError(f"memcpy from {op.src.value} to {op.dst.value} is not modelled") from None


def memcpy_cost(op: Memcpy, gpu: GPU, prof: Profile) -> OpCost:
    """One copy under its direction's curve: over HBM (device to device) or the PCIe link, seconds."""
    cls = memcpy_class(op)
    if cls is OpClass.MEMCPY_D2D:
        return roofline(0.0, bytes_moved(op), 1.0, gpu.hbm_bytes_per_s, prof.params(cls), Bound.HBM_BANDWIDTH)
    return roofline(
        0.0, bytes_moved(op), 1.0, gpu.pcie_bytes_per_s_per_direction, prof.params(cls), Bound.PCIE
    )
