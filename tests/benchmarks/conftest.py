"""Load the scripts under ``benchmarks/`` (not a package) as modules for their tests."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ptx():
    """``benchmarks/decode_ptx.py`` as a module."""
    return _load("decode_ptx")


@pytest.fixture(scope="module")
def bench():
    """``benchmarks/kernels.py`` as a module."""
    return _load("kernels")


@pytest.fixture(scope="module")
def profile():
    """``benchmarks/decode_profile.py`` as a module."""
    return _load("decode_profile")


@pytest.fixture(scope="module")
def splits():
    """``benchmarks/decode_splits.py`` as a module."""
    return _load("decode_splits")


@pytest.fixture(scope="module")
def prefill():
    """``benchmarks/prefill_kernels.py`` as a module."""
    return _load("prefill_kernels")


@pytest.fixture(scope="module")
def stream():
    """``benchmarks/weight_stream.py`` as a module."""
    return _load("weight_stream")
