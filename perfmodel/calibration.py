"""Calibration profiles: achieved fractions of peak, per op class, as data.

A profile is a JSON file ``hw/data/profiles/<gpu>.json`` written by the
validation suite (``python -m validation.run`` then ``validation.fit``).  The
core only reads it.  Format (see ``docs/calibration.md``)::

    {
      "schema_version": 1,
      "gpu": "h100-sxm-80gb",
      "measured_on": {"gpu": "...", "driver": "...", "torch": "...", "date": "..."},
      "classes": {
        "gemm": {"compute_eff": 0.8, "memory_eff": 0.85, "latency_s": 5e-6,
                 "tile_m": 128, "tile_n": 128, "overlap": 1.0,
                 "ramp_flops": 0.0, "ramp_bytes": 0.0},
        "attention_prefill": {...}, "attention_decode": {...}, "elementwise": {...},
        "memcpy_d2d": {...}, "memcpy_h2d": {...}, "memcpy_d2h": {...},
        "memcpy_h2d_pageable": {...}, "memcpy_d2h_pageable": {...},
        "all_reduce": {...}, "all_gather": {...}, "reduce_scatter": {...},
        "all_to_all": {...}, "send_recv": {...}
      }
    }

Every class field is optional and defaults to the peak value (efficiency 1,
latency 0, no tile quantization), so a profile names only what was fitted.
"""

from __future__ import annotations

import enum
import json
import math
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from hw.loader import DATA_DIR
from hw.spec import GPU
from perfmodel.errors import ProfileError

PROFILE_DIR = DATA_DIR / "profiles"
SCHEMA_VERSION = 1


class Mode(str, enum.Enum):
    PEAK = "peak"
    CALIBRATED = "calibrated"


class OpClass(str, enum.Enum):
    """Op classes with their own achieved-fraction curves."""

    GEMM = "gemm"
    ATTENTION_PREFILL = "attention_prefill"
    ATTENTION_DECODE = "attention_decode"
    ELEMENTWISE = "elementwise"
    MEMCPY_D2D = "memcpy_d2d"
    MEMCPY_H2D = "memcpy_h2d"
    MEMCPY_D2H = "memcpy_d2h"
    MEMCPY_H2D_PAGEABLE = "memcpy_h2d_pageable"
    MEMCPY_D2H_PAGEABLE = "memcpy_d2h_pageable"
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_TO_ALL = "all_to_all"
    SEND_RECV = "send_recv"


@dataclass(frozen=True)
class ClassParams:
    """Achieved-fraction curve of one op class.

    time = blend(compute_s, memory_s, overlap) + latency_s, where

    - compute_s = flops_eff / (peak_flops * compute_eff * flops / (flops + ramp_flops));
      for GEMMs with ``tile_m``/``tile_n`` > 0, ``flops_eff`` pads M and N to whole
      tiles and whole waves of tiles over the SM count;
    - memory_s = bytes / (bandwidth * memory_eff * bytes / (bytes + ramp_bytes));
    - blend = max(c, m) when overlap = 1, c + m when overlap = 0, linear between.

    Attributes
    ----------
    compute_eff : float, fraction of peak FLOP/s in (0, 1]
    memory_eff : float, fraction of peak bandwidth in (0, 1]
    latency_s : float, seconds added per kernel (launch and fixed cost)
    tile_m, tile_n : int, output tile of the GEMM kernel (0: no quantization)
    overlap : float in [0, 1]
    ramp_flops : float, FLOPs at which half of ``compute_eff`` is reached (0: none)
    ramp_bytes : float, bytes at which half of ``memory_eff`` is reached (0: none)
    bandwidth_bytes_per_s : float, overrides the datasheet bandwidth of the path (0: datasheet)
    """

    compute_eff: float = 1.0
    memory_eff: float = 1.0
    latency_s: float = 0.0
    tile_m: int = 0
    tile_n: int = 0
    overlap: float = 1.0
    ramp_flops: float = 0.0
    ramp_bytes: float = 0.0
    bandwidth_bytes_per_s: float = 0.0

    def validate(self, where: str) -> None:
        for name in ("compute_eff", "memory_eff"):
            v = getattr(self, name)
            if not (0 < v <= 1.5) or not math.isfinite(v):
                raise ProfileError(f"{where}: {name} must be in (0, 1.5], got {v}")
        for name in ("latency_s", "ramp_flops", "ramp_bytes", "bandwidth_bytes_per_s", "tile_m", "tile_n"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ProfileError(f"{where}: {name} must be finite and >= 0, got {v}")
        if not 0 <= self.overlap <= 1:
            raise ProfileError(f"{where}: overlap must be in [0, 1], got {self.overlap}")


PEAK_PARAMS = ClassParams()


@dataclass(frozen=True)
class Profile:
    """Per-class parameters for one GPU (an empty mapping is the peak model)."""

    gpu: str
    mode: Mode
    classes: Mapping[OpClass, ClassParams] = field(default_factory=lambda: MappingProxyType({}))
    measured_on: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source_path: str = ""

    def params(self, op_class: OpClass) -> ClassParams:
        return self.classes.get(op_class, PEAK_PARAMS)

    @property
    def is_peak(self) -> bool:
        return not self.classes

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "gpu": self.gpu,
            "measured_on": dict(self.measured_on),
            "classes": {
                c.value: {f.name: getattr(p, f.name) for f in fields(p) if getattr(p, f.name) != getattr(PEAK_PARAMS, f.name)}
                for c, p in self.classes.items()
            },
        }


def peak_profile(gpu: GPU | str) -> Profile:
    """The theoretical-peak model: every efficiency 1, every latency 0."""
    return Profile(gpu=gpu if isinstance(gpu, str) else gpu.name, mode=Mode.PEAK)


def profile_from_dict(data: Any, where: str = "<dict>") -> Profile:
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise ProfileError(f"{where}: a profile needs a 'classes' object")
    if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ProfileError(f"{where}: schema_version {data.get('schema_version')} unsupported (want {SCHEMA_VERSION})")
    known = {f.name for f in fields(ClassParams)}
    classes = {}
    for name, raw in data["classes"].items():
        try:
            oc = OpClass(name)
        except ValueError:
            raise ProfileError(f"{where}: unknown op class {name!r}; known: {', '.join(c.value for c in OpClass)}") from None
        if not isinstance(raw, dict):
            raise ProfileError(f"{where}: class {name!r} must be an object")
        extra = set(raw) - known
        if extra:
            raise ProfileError(f"{where}: class {name!r} has unknown field(s) {', '.join(sorted(extra))}")
        try:
            p = ClassParams(**{k: float(v) if k not in ("tile_m", "tile_n") else int(v) for k, v in raw.items()})
        except (TypeError, ValueError):
            raise ProfileError(f"{where}: class {name!r} has a non-numeric value") from None
        p.validate(f"{where}: {name}")
        classes[oc] = p
    return Profile(
        gpu=str(data.get("gpu", "")),
        mode=Mode.CALIBRATED,
        classes=MappingProxyType(classes),
        measured_on=MappingProxyType(dict(data.get("measured_on", {}))),
        source_path=where,
    )


def load_profile_file(path: str | Path, gpu: GPU | str | None = None) -> Profile:
    """Load a profile file; refuse one written for another GPU than ``gpu``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ProfileError(f"calibration profile not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProfileError(f"calibration profile is corrupt (not JSON): {p}") from None
    prof = profile_from_dict(data, str(p))
    want = gpu if isinstance(gpu, str) or gpu is None else gpu.name
    if want is not None and prof.gpu != want:
        raise ProfileError(f"calibration profile {p} is for {prof.gpu!r}, not {want!r}")
    return prof


def shipped_profile_path(gpu: GPU | str) -> Path:
    return PROFILE_DIR / f"{gpu if isinstance(gpu, str) else gpu.name}.json"


def resolve_profile(gpu: GPU, mode: Mode | str = Mode.CALIBRATED, profile: Profile | str | Path | None = None) -> Profile:
    """The profile to use for ``gpu`` in ``mode``.

    In calibrated mode without a shipped profile, falls back to peak with a
    ``UserWarning`` saying so.  An explicit ``profile`` (object or path) wins.
    """
    if isinstance(profile, Profile):
        return profile
    if profile is not None:
        return load_profile_file(profile, gpu)
    mode = Mode(mode) if not isinstance(mode, Mode) else mode
    if mode is Mode.PEAK:
        return peak_profile(gpu)
    path = shipped_profile_path(gpu)
    if not path.exists():
        warnings.warn(
            f"no calibration profile for {gpu.name}; using the theoretical-peak model (efficiency 1, latency 0)",
            UserWarning,
            stacklevel=2,
        )
        return peak_profile(gpu)
    return load_profile_file(path, gpu)


def ramp(x: Any, half: float) -> Any:
    """``x / (x + half)``: 0 at 0, 1/2 at ``half``, 1 as x grows (1 when ``half`` is 0)."""
    if half <= 0:
        return 1.0
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x / (x + half), 1.0)
