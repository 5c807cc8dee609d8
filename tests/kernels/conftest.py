"""Kernel tests run through Triton's CPU interpreter on CPU tensors.

``TRITON_INTERPRET`` must be set before ``@triton.jit`` decorates the kernels, i.e. before
``kernels`` is first imported in the process; this conftest sets it and checks that it took.
"""

import contextlib
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

from perfmodel import kernels  # noqa: F401  (imports the kernels first)
import perfmodel.kernels.matmul  # noqa: F401

#: Relative-norm error bounds against float64 references, by operand dtype.
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float32: 1e-4, torch.float8_e4m3fn: 1e-2}


@pytest.fixture(autouse=True, scope="session")
def _kernels_are_interpreted():
    import sys

    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(sys.modules["perfmodel.kernels.matmul"]._matmul_kernel, InterpretedFunction):
        pytest.fail(
            "kernels was imported before TRITON_INTERPRET=1 was set; run tests/kernels alone or set "
            "TRITON_INTERPRET=1 in the environment"
        )


@pytest.fixture
def seed():
    """A fresh seed each run (printed in failures) so inputs are new random data every time."""
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    return s


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere gives inf."""
    out = out.double()
    ref = ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm())


@contextlib.contextmanager
def poisoned_allocations():
    """Within the block, torch.empty / torch.empty_like return NaN-filled float tensors and
    int tensors filled with a huge value, so any element a kernel fails to write shows up."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(t):
        if t.is_floating_point() and t.dtype != torch.float8_e4m3fn:
            t.fill_(float("nan"))
        elif t.dtype == torch.float8_e4m3fn:
            t.view(torch.uint8).fill_(0x7F)  # e4m3fn NaN
        elif t.dtype != torch.bool:
            t.fill_(2**30 if t.dtype in (torch.int32, torch.int64) else 1)
        return t

    def empty(*args, **kw):
        return poison(real_empty(*args, **kw))

    def empty_like(*args, **kw):
        return poison(real_empty_like(*args, **kw))

    torch.empty, torch.empty_like = empty, empty_like
    try:
        yield
    finally:
        torch.empty, torch.empty_like = real_empty, real_empty_like


@pytest.fixture
def check():
    """``check(out, ref, dtype, seed)`` asserts the relative-norm error is under the dtype's bound."""

    def _check(out, ref, dtype, seed, what=""):
        err = rel_err(out, ref)
        assert err < TOLERANCE[dtype], (
            f"{what} rel err {err:.3e} >= {TOLERANCE[dtype]} (dtype {dtype}, seed {seed})"
        )
        return err

    return _check


@pytest.fixture
def poisoned():
    return poisoned_allocations
