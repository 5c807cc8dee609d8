"""Tiled GEMM ``C = A @ B`` in Triton: grouped launch order, autotuned tiles, a persistent variant.

``A [M,K]``, ``B [K,N]`` in fp16, bf16, fp32 or fp8 (e4m3); fp32 accumulation. fp16/bf16/fp32
inputs give an output of the same dtype; fp8 inputs give bf16. Any strides are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import triton
import triton.language as tl

from perfmodel.ops import Gemm

from ._common import KernelInputError, check_same_device, check_tensor, interpreting, num_sms
from . import _counts

__all__ = ["SMALL_M", "bytes_moved", "flops", "matmul"]

#: Up to this many rows of A, :func:`matmul` uses the persistent kernel unless told otherwise.
SMALL_M = 64

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float8_e4m3fn)


@triton.jit
def _tile_ids(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # Grouped order: GROUP_M row tiles share each column tile of B while it sits in L2.
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * grid_n
    first_m = (tile // per_group) * GROUP_M
    group_rows = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (tile % per_group) % group_rows
    pid_n = (tile % per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def _tile_product(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    s_am,
    s_ak,
    s_bk,
    s_bn,
    s_cm,
    s_cn,
    pid_m,
    pid_n,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # Wrap out-of-range rows/columns onto valid ones: loads stay unmasked along M and N.
    am = rm % M
    bn = rn % N
    a_ptrs = a_ptr + am[:, None] * s_am + rk[None, :] * s_ak
    b_ptrs = b_ptr + rk[:, None] * s_bk + bn[None, :] * s_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(tl.cdiv(K, BLOCK_K)):
        k_left = K - kk * BLOCK_K
        a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=rk[:, None] < k_left, other=0.0)
        if UPCAST:  # the CPU interpreter mis-multiplies bf16 operands; it gets fp32 copies
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * s_ak
        b_ptrs += BLOCK_K * s_bk
    c = acc.to(c_ptr.dtype.element_ty)
    c_ptrs = c_ptr + rm[:, None] * s_cm + rn[None, :] * s_cn
    tl.store(c_ptrs, c, mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    s_am,
    s_ak,
    s_bk,
    s_bn,
    s_cm,
    s_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """One program per output tile."""
    pid_m, pid_n = _tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    _tile_product(
        a_ptr,
        b_ptr,
        c_ptr,
        M,
        N,
        K,
        s_am,
        s_ak,
        s_bk,
        s_bn,
        s_cm,
        s_cn,
        pid_m,
        pid_n,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
        PRECISION,
        UPCAST,
    )


@triton.jit
def _matmul_persistent_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    s_am,
    s_ak,
    s_bk,
    s_bn,
    s_cm,
    s_cn,
    NUM_PROGRAMS,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """At most one program per SM; each walks the output tiles with stride NUM_PROGRAMS."""
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile in range(tl.program_id(0), num_tiles, NUM_PROGRAMS):
        pid_m, pid_n = _tile_ids(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        _tile_product(
            a_ptr,
            b_ptr,
            c_ptr,
            M,
            N,
            K,
            s_am,
            s_ak,
            s_bk,
            s_bn,
            s_cm,
            s_cn,
            pid_m,
            pid_n,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            PRECISION,
            UPCAST,
        )


def _cfg(bm, bn, bk, stages, warps, group=8):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group}, num_stages=stages, num_warps=warps
    )


_GPU_CONFIGS = [
    _cfg(128, 256, 64, 3, 8),
    _cfg(256, 128, 64, 3, 8),
    _cfg(128, 128, 64, 4, 4),
    _cfg(128, 128, 64, 4, 8),
    _cfg(128, 64, 64, 4, 4),
    _cfg(64, 128, 64, 4, 4),
    _cfg(128, 256, 128, 3, 8),
    _cfg(128, 128, 128, 3, 4),
]
_GPU_SMALL_M_CONFIGS = [_cfg(bm, bn, bk, 4, 4) for bm in (16, 32, 64) for bn in (64, 128) for bk in (64, 128)]
_INTERPRETER_META = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}

_tuned = triton.autotune(configs=_GPU_CONFIGS, key=["M", "N", "K"])(_matmul_kernel)
_tuned_persistent = triton.autotune(configs=_GPU_SMALL_M_CONFIGS, key=["M", "N", "K"])(
    _matmul_persistent_kernel
)


def _check(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("a", a, 2, _DTYPES)
    check_tensor("b", b, 2, _DTYPES)
    check_same_device(a=a, b=b)
    if b.dtype != a.dtype:
        raise KernelInputError(f"b: dtype {b.dtype} differs from a's {a.dtype}")
    if a.shape[1] != b.shape[0]:
        raise KernelInputError(f"b: shape {tuple(b.shape)} does not match a {tuple(a.shape)} (K differs)")
    if a.dtype == torch.float8_e4m3fn and a.device.type == "cuda":
        if torch.cuda.get_device_capability(a.device) < (8, 9):
            raise KernelInputError("a: fp8 needs a GPU of compute capability 8.9 or newer")
    return a, b


def matmul(a: torch.Tensor, b: torch.Tensor, *, persistent: bool | None = None) -> torch.Tensor:
    """Return ``a @ b`` computed by the Triton kernel.

    Parameters
    ----------
    a : torch.Tensor, shape [M, K]
        fp16, bf16, fp32 or float8_e4m3fn; any strides.
    b : torch.Tensor, shape [K, N]
        Same dtype and device as ``a``.
    persistent : bool, optional
        Use the persistent kernel (one program per SM). Default: when ``M <= SMALL_M``.

    Returns
    -------
    torch.Tensor, shape [M, N]
        Same dtype as the inputs (bf16 for fp8 inputs), fp32 accumulation. fp32 inputs are
        multiplied in full fp32 (no tf32).

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument: type, rank, dtype, device or shape mismatch.
    """
    _check(a, b)
    M, K = a.shape
    N = b.shape[1]
    out_dtype = torch.bfloat16 if a.dtype == torch.float8_e4m3fn else a.dtype
    c = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if persistent is None:
        persistent = M <= SMALL_M
    precision = "ieee" if a.dtype == torch.float32 else "tf32"
    args = (a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
    interp = interpreting()
    upcast = interp and a.dtype == torch.bfloat16
    if persistent:
        programs = num_sms(a.device)
        if interp:
            _matmul_persistent_kernel[(programs,)](
                *args, programs, PRECISION=precision, UPCAST=upcast, **_INTERPRETER_META
            )
        else:
            _tuned_persistent[(programs,)](*args, programs, PRECISION=precision, UPCAST=upcast)
        return c
    if interp:
        grid = (triton.cdiv(M, 16) * triton.cdiv(N, 16),)
        _matmul_kernel[grid](*args, PRECISION=precision, UPCAST=upcast, **_INTERPRETER_META)
    else:

        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

        _tuned[grid](*args, PRECISION=precision, UPCAST=upcast)
    return c


def flops(op: Gemm | Mapping) -> int:
    """FLOPs of a core ``Gemm`` or its ``{"op": "gemm", ...}`` descriptor: ``2*m*n*k``."""
    return _counts.flops(op, Gemm)


def bytes_moved(op: Gemm | Mapping) -> int:
    """Fewest bytes of a core ``Gemm`` or its descriptor (A, B read once, C written once)."""
    return _counts.bytes_moved(op, Gemm)


# `perfmodel.kernels.matmul.flops(op)` works whether `perfmodel.kernels.matmul`
# is the module or the function.
matmul.flops = flops
matmul.bytes_moved = bytes_moved
