import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perfmodel import kernels
from perfmodel.kernels.reference import matmul_ref

SHAPES = [(1, 1, 1), (37, 29, 53), (16, 64, 16), (70, 33, 17), (5, 100, 3), (65, 17, 40)]


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matches_float64_reference(m, k, n, dtype, persistent, seed, check, poisoned):
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    with poisoned():
        c = kernels.matmul(a, b, persistent=persistent)
    assert c.shape == (m, n) and c.dtype == dtype
    check(c, matmul_ref(a, b), dtype, seed)


def test_fp8_gives_bf16(seed, check, poisoned):
    a = torch.randn(37, 45).to(torch.float8_e4m3fn)
    b = torch.randn(45, 19).to(torch.float8_e4m3fn)
    with poisoned():
        c = kernels.matmul(a, b)
    assert c.dtype == torch.bfloat16
    check(c, matmul_ref(a, b), torch.float8_e4m3fn, seed)


def test_strided_operands(seed, check):
    a = torch.randn(29, 41, dtype=torch.float16).t()  # [41, 29], column-major
    b = torch.randn(58, 23, dtype=torch.float16)[::2]  # [29, 23], row stride 46
    c = kernels.matmul(a, b, persistent=False)
    check(c, matmul_ref(a, b), torch.float16, seed)


@settings(max_examples=8, deadline=None)
@given(m=st.integers(1, 48), n=st.integers(1, 48), k=st.integers(1, 48), persistent=st.booleans())
def test_any_shape(m, n, k, persistent):
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    c = kernels.matmul(a, b, persistent=persistent)
    ref = matmul_ref(a, b)
    assert float((c.double() - ref).norm() / ref.norm()) < 1e-4


@pytest.mark.parametrize(
    "a,b,name",
    [
        (torch.randn(4, 5), torch.randn(6, 3), "b"),
        (torch.randn(4, 5), torch.randn(5, 3).half(), "b"),
        (torch.randn(4), torch.randn(4, 3), "a"),
        (torch.randn(4, 5).to(torch.float64), torch.randn(5, 3).to(torch.float64), "a"),
        (torch.ones(4, 5, dtype=torch.int32), torch.ones(5, 3, dtype=torch.int32), "a"),
        (torch.randn(4, 5), torch.randn(5, 3, device="meta"), "b"),
        ("not a tensor", torch.randn(5, 3), "a"),
        (torch.randn(0, 5), torch.randn(5, 3), "a"),
    ],
)
def test_bad_input_names_the_argument(a, b, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        kernels.matmul(a, b)


def test_counts():
    op = {"op": "gemm", "m": 3, "n": 5, "k": 7, "dtype": "bf16"}
    assert kernels.matmul.flops(op) == 2 * 3 * 5 * 7
    assert kernels.matmul.bytes_moved(op) == 2 * (3 * 7 + 7 * 5 + 3 * 5)
    assert (
        kernels.matmul.bytes_moved({**op, "dtype": "fp8", "out_dtype": "bf16"}) == 3 * 7 + 7 * 5 + 2 * 3 * 5
    )
