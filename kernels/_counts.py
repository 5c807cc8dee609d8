"""FLOP and byte counts of the kernels: the core's counts of the core's op objects.

Each kernel module's ``flops(op)`` and ``bytes_moved(op)`` take an op of :mod:`perfmodel.ops`
(``Gemm``, ``Attention``, ``Memcpy``) or its JSON descriptor (``docs/ops.md``, parsed with
:func:`perfmodel.ops.op_from_dict`), and return :func:`perfmodel.ops.flops` and
:func:`perfmodel.ops.bytes_moved` of it (an int where the count is whole). A KV block gather or
scatter is a device-to-device ``Memcpy`` of the blocks (:func:`kv_block_copy_op`).
"""

from __future__ import annotations

from collections.abc import Mapping

from perfmodel.hw.spec import Dtype
from perfmodel import ops
from perfmodel.errors import OpDescriptorError

from ._common import KernelInputError

#: the formats the kernels take
KERNEL_DTYPES = (Dtype.FP32, Dtype.BF16, Dtype.FP16, Dtype.FP8)


def as_op(op: object, kind: type) -> ops.Op:
    """``op`` as a core op of class ``kind``: parsed when it is a descriptor. A KernelInputError
    (a ValueError) starting ``op:`` names a malformed descriptor, another op class or a format
    the kernels do not take."""
    if isinstance(op, Mapping):
        try:
            op = ops.op_from_dict(dict(op), where="op: ")
        except OpDescriptorError as e:
            raise KernelInputError(str(e)) from None
    if not isinstance(op, kind):
        raise KernelInputError(f"op: expected a {kind.__name__} op or its descriptor, got {type(op).__name__}")
    dtypes = [getattr(op, f, None) for f in ("dtype", "b_dtype", "out_dtype", "kv_dtype")]
    bad = [d for d in dtypes if d is not None and d not in KERNEL_DTYPES]
    if bad:
        raise KernelInputError(f"op: format {bad[0].value} not taken by the kernels "
                               f"(expected one of {[d.value for d in KERNEL_DTYPES]})")
    return op


def _whole(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def flops(op: object, kind: type) -> int | float:
    """FLOPs of ``op`` (a ``kind`` op or its descriptor): :func:`perfmodel.ops.flops`."""
    return _whole(ops.flops(as_op(op, kind)))


def bytes_moved(op: object, kind: type) -> int | float:
    """Fewest bytes of ``op`` (a ``kind`` op or its descriptor): :func:`perfmodel.ops.bytes_moved`."""
    return _whole(ops.bytes_moved(as_op(op, kind)))


def kv_block_copy_op(num_blocks: int, kv_heads: int, block_size: int, head_dim: int,
                     dtype: str | Dtype = Dtype.BF16) -> ops.Memcpy:
    """One K or V page set's block gather or scatter as a device-to-device copy of
    ``num_blocks * kv_heads * block_size * head_dim`` elements (read once and written once)."""
    for name, v in (("num_blocks", num_blocks), ("kv_heads", kv_heads), ("block_size", block_size),
                    ("head_dim", head_dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise KernelInputError(f"{name}: expected a positive int, got {v!r}")
    dt = Dtype.parse(dtype)
    nbytes = num_blocks * kv_heads * block_size * head_dim * dt.bytes_per_element
    return ops.Memcpy(bytes=_whole(nbytes), src=ops.MemLocation.DEVICE, dst=ops.MemLocation.DEVICE)
