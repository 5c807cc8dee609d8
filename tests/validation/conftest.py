"""Shared helpers of the validation tests."""

from dataclasses import dataclass

import numpy as np
import pytest

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import Profile
from perfmodel.ops import op_from_dict
from perfmodel.validation.cases import cases
from perfmodel.validation.fit import predict_ops

H100 = "h100-sxm-80gb"


@pytest.fixture
def synthetic_records():
    """``make(sections, true, keep=None, noise=0.02, seed=0)``: records of the quick cases of
    ``sections`` (those ``keep`` accepts) whose times are ``true``'s predictions on the H100 with
    lognormal noise, in the record schema."""

    def make(sections, true: Profile, keep=None, noise=0.02, seed=0):
        cs = [c for c in cases("quick", sections) if keep is None or keep(c)]
        ops = [op_from_dict(c.desc) for c in cs]
        t = predict_ops(ops, load_gpu(H100), true) * np.exp(
            np.random.default_rng(seed).normal(0, noise, len(ops))
        )
        return [
            {
                **c.desc,
                "measured_s": float(x),
                "impl": c.impl,
                "family": c.family,
                "gpu": "NVIDIA H100 80GB HBM3",
                "gpu_model": H100,
                "driver": "580",
                "torch": "2.11",
                "date": "2026-11-22",
            }
            for c, x in zip(cs, t)
        ]

    return make


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    output: str


@pytest.fixture
def invoke(capsys):
    """Run an argparse ``main(argv) -> int`` in-process: its exit status and what it printed (both streams)."""

    def run(main, argv: list[str]) -> CliResult:
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return CliResult(int(code or 0), out.out + out.err)

    return run
