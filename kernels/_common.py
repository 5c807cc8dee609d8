"""Shared utilities of the kernel wrappers: input checks, dtype tables, device facts.

Nothing here launches a kernel. Every check raises :class:`KernelInputError`
(a ``ValueError``) whose message starts with the name of the offending argument.
"""

from __future__ import annotations

import os

import torch

__all__ = [
    "TORCH_DTYPES",
    "KernelInputError",
    "check_same_device",
    "check_tensor",
    "interpreting",
    "next_pow2",
    "num_sms",
    "split_head_dim",
]


class KernelInputError(ValueError):
    """Bad input to a kernel wrapper, caught before launch."""


#: Dtype strings of the op-descriptor schema mapped to torch dtypes the kernels accept.
TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
    "fp8": torch.float8_e4m3fn,
}

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: the KV cache formats of the decode kernels: the float formats, and e4m3 with a float32 scale
KV_DTYPES = FLOAT_DTYPES + (torch.float8_e4m3fn,)
#: head sizes (query/key and value) the attention kernels take, inclusive
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256


def interpreting() -> bool:
    """Return True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def num_sms(device: torch.device) -> int:
    """Number of streaming multiprocessors of ``device``; 8 for a CPU tensor under the interpreter."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (and >= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def split_head_dim(d: int) -> tuple[int, int]:
    """A query/key head of ``d`` elements as two power-of-two parts, ``(a, b)``: ``a`` the largest
    power of two <= ``d``, ``b`` the rest rounded up to a power of two (at least 16, the smallest
    dot operand), or 0 when ``d`` is a power of two. The kernels take the score as
    ``q[:a] . k[:a] + q[a:] . k[a:]`` with the ``b - (d - a)`` padded lanes masked: 80 = 64 + 16,
    96 = 64 + 32, 192 = 128 + 64, 576 = 512 + 64, so no multiply is padded for these sizes."""
    a = 1 << (int(d).bit_length() - 1)
    return a, (0 if a == d else max(16, next_pow2(d - a)))


def check_tensor(name: str, t: object, ndim: int, dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    """Check that ``t`` is a tensor of rank ``ndim`` with one of ``dtypes`` on a usable device.

    Raises
    ------
    KernelInputError
        Naming ``name`` when the type, rank, dtype or device is wrong, or the tensor is empty.
    """
    if not isinstance(t, torch.Tensor):
        raise KernelInputError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise KernelInputError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise KernelInputError(f"{name}: dtype {t.dtype} not supported (expected one of {dtypes})")
    if t.device.type != "cuda" and not interpreting():
        raise KernelInputError(
            f"{name}: tensor on {t.device}; Triton kernels need a CUDA tensor (or TRITON_INTERPRET=1)"
        )
    if t.numel() == 0:
        raise KernelInputError(f"{name}: empty tensor of shape {tuple(t.shape)}")
    return t


def check_same_device(**tensors: torch.Tensor) -> None:
    """Raise naming the first tensor whose device differs from the first one's."""
    items = list(tensors.items())
    dev = items[0][1].device
    for name, t in items[1:]:
        if t.device != dev:
            raise KernelInputError(f"{name}: on {t.device}, expected {dev} like {items[0][0]}")


def check_last_dim_contiguous(name: str, t: torch.Tensor) -> None:
    """Raise unless the innermost dimension has stride 1 (the kernels load rows as vectors)."""
    if t.stride(-1) != 1:
        raise KernelInputError(f"{name}: innermost stride is {t.stride(-1)}; the kernel needs stride 1")
