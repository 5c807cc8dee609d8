"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
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


def gpu_env() -> dict:
    """GPU, SM count, driver (``nvidia-smi``), CUDA, torch, triton and Python versions and the UTC date of a
    GPU benchmark run."""
    import torch
    import triton

    p = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        driver = f"unknown ({e})"
    return {
        "gpu": p.name,
        "sm_count": p.multi_processor_count,
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": sys.version.split()[0],
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
