"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import datetime as dt
import platform
import sys


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def no_cuda() -> bool:
    """True, having printed the benchmarks' one-line error, when this machine has no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return False
    print("error: needs a CUDA device", file=sys.stderr)
    return True


def gpu_env() -> dict:
    """GPU, SM count, driver (``nvidia-smi``), CUDA, torch, triton and Python versions and the UTC date of a
    GPU benchmark run."""
    import torch
    import triton

    from perfmodel.validation.run import driver_version

    p = torch.cuda.get_device_properties(0)
    return {
        "gpu": p.name,
        "sm_count": p.multi_processor_count,
        "driver": driver_version() or "unknown",
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": sys.version.split()[0],
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
