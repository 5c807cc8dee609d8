"""Hardware descriptions as frozen dataclasses.

All quantities are SI and decimal: bytes, bytes per second, FLOP per second,
seconds, hertz.  Binary units (GiB) appear only in display code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


class Dtype(str, enum.Enum):
    """Numeric formats with their storage size.

    ``bytes_per_element`` is fractional for sub-byte formats (int4 is 0.5).
    """

    FP32 = "fp32"
    TF32 = "tf32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bytes_per_element(self) -> float:
        return _DTYPE_BYTES[self]

    @classmethod
    def parse(cls, value: "str | Dtype") -> "Dtype":
        """Parse a dtype name (``bf16``, ``bfloat16``, ``float16``, ``fp8_e4m3`` ...).

        Parameters
        ----------
        value : str or Dtype
            The name (case and surrounding space ignored) or a dtype, returned as is.

        Returns
        -------
        Dtype
            The dtype.

        Raises
        ------
        ValueError
            When ``value`` names no known dtype; the message lists the known ones.
        """
        if isinstance(value, Dtype):
            return value
        key = str(value).strip().lower()
        key = _DTYPE_ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            known = ", ".join(d.value for d in cls)
            raise ValueError(f"unknown dtype {value!r}; known: {known}") from None


_DTYPE_BYTES = {
    Dtype.FP32: 4.0,
    Dtype.TF32: 4.0,
    Dtype.BF16: 2.0,
    Dtype.FP16: 2.0,
    Dtype.FP8: 1.0,
    Dtype.INT8: 1.0,
    Dtype.INT4: 0.5,
}

_DTYPE_ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
    "float8_e4m3fn": "fp8",
    "e4m3": "fp8",
}

# Peak-rate fallbacks: a format without its own entry runs at the rate of the
# first format listed here that the device has (int4 weights are dequantised
# and multiplied in bf16, for example).
MATH_FALLBACK: Mapping[Dtype, tuple[Dtype, ...]] = MappingProxyType(
    {
        Dtype.INT4: (Dtype.INT8, Dtype.FP16, Dtype.BF16),
        Dtype.FP8: (Dtype.FP16, Dtype.BF16),
        Dtype.INT8: (Dtype.FP16, Dtype.BF16),
        Dtype.TF32: (Dtype.FP32,),
        Dtype.FP16: (Dtype.BF16,),
        Dtype.BF16: (Dtype.FP16,),
        Dtype.FP32: (),
    }
)


class LinkKind(str, enum.Enum):
    """Physical kind of a data path."""

    NVLINK = "nvlink"
    NVSWITCH = "nvswitch"
    PCIE = "pcie"
    INFINITY_FABRIC = "infinity_fabric"
    ETHERNET = "ethernet"
    INFINIBAND = "infiniband"
    C2C = "c2c"


@dataclass(frozen=True)
class Source:
    """Where a figure comes from."""

    fields: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class GPU:
    """One accelerator.

    Attributes
    ----------
    name : str
        Canonical name, equal to the data file's stem (``h100-sxm-80gb``).
    hbm_bytes : int, bytes
        Device memory the device really has.
    hbm_usable_bytes : int, bytes
        What a program can allocate (``hbm_bytes`` minus what the driver and
        runtime keep; measured or documented).
    hbm_bytes_per_s : float, bytes/s
        Datasheet peak device-memory bandwidth.
    peak_flops : Mapping[Dtype, float], FLOP/s
        Dense (no structured sparsity) tensor-unit peak per format.
    nvlink_bytes_per_s_per_direction : float, bytes/s
        GPU-to-GPU fabric bandwidth per direction per GPU; 0 when the device
        has none.
    pcie_bytes_per_s_per_direction : float, bytes/s
        Host link bandwidth per direction.
    """

    name: str
    vendor: str
    hbm_bytes: int
    hbm_usable_bytes: int
    hbm_bytes_per_s: float
    peak_flops: Mapping[Dtype, float]
    l2_bytes: int
    smem_bytes_per_sm: int
    sm_count: int
    boost_clock_hz: float
    nvlink_bytes_per_s_per_direction: float
    pcie_gen: int
    pcie_bytes_per_s_per_direction: float
    host_ddr_bytes_per_s: float
    host_ddr_bytes: int
    fabric_kind: LinkKind
    fabric_latency_s: float
    pcie_latency_s: float
    sources: tuple[Source, ...] = field(default_factory=tuple)
    display_name: str = ""
    #: Micro-architecture family (``hopper``, ``ampere``, ``cdna3`` ...; empty: not given): what
    #: :mod:`perfmodel.transfer` matches when it carries a measured profile to this GPU.
    architecture: str = ""

    def flops_for(self, dtype: Dtype) -> float:
        """Peak FLOP/s for a math format, using :data:`MATH_FALLBACK` if absent.

        Parameters
        ----------
        dtype : Dtype or str
            The math format.

        Returns
        -------
        float, FLOP/s
            The dense peak of ``dtype``, or of the first fallback format the GPU has.

        Raises
        ------
        ValueError
            When neither ``dtype`` nor any fallback has a peak on this GPU.
        """
        dtype = Dtype.parse(dtype)
        if self.peak_flops.get(dtype, 0.0) > 0:
            return self.peak_flops[dtype]
        for alt in MATH_FALLBACK[dtype]:
            if self.peak_flops.get(alt, 0.0) > 0:
                return self.peak_flops[alt]
        raise ValueError(f"{self.name} has no peak FLOP/s for {dtype.value}")

    def with_overrides(self, **changes) -> "GPU":
        """A copy with some fields replaced (what-if analysis).

        Parameters
        ----------
        **changes
            Field names and new values, in the fields' units (bytes, bytes/s, FLOP/s, seconds).

        Returns
        -------
        GPU
            The modified copy.
        """
        import dataclasses

        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Link:
    """A data path with a per-direction bandwidth and a per-message latency."""

    kind: LinkKind
    bytes_per_s_per_direction: float
    latency_s: float


@dataclass(frozen=True)
class Node:
    """``gpus_per_node`` accelerators joined by one intra-node fabric, plus a host."""

    name: str
    gpu: GPU
    gpus_per_node: int
    intra_node: Link
    host_link: Link
    host_ddr_bytes: int
    host_ddr_bytes_per_s: float
    sources: tuple[Source, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Cluster:
    """``num_nodes`` identical nodes joined by NICs (``inter_node`` is per GPU)."""

    name: str
    node: Node
    num_nodes: int
    inter_node: Link
    sources: tuple[Source, ...] = field(default_factory=tuple)

    @property
    def world_size(self) -> int:
        return self.node.gpus_per_node * self.num_nodes
