"""Typed exceptions.  Every one is a ``ValueError`` so callers can catch broadly."""

from __future__ import annotations

from perfmodel.hw.loader import HardwareError, UnknownHardwareError


class PerfModelError(ValueError):
    """Base class of the model's input errors."""


class InvalidInputError(PerfModelError):
    """A size, degree or option outside its valid range."""


class UnknownModelError(PerfModelError, KeyError):
    """A model name no shipped config defines."""

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


class NonFiniteError(InvalidInputError):
    """A number that is NaN or infinite (or too large for a float) where a finite one is needed."""


class ModelConfigError(PerfModelError):
    """A model config file that cannot be understood."""


class DoesNotFitError(PerfModelError):
    """The weights (and the KV cache) do not fit in device memory.

    Attributes
    ----------
    needed_bytes : int, bytes
    available_bytes : int, bytes
    suggested_tp : int or None
        The smallest tensor-parallel degree that would fit, if any.
    """

    def __init__(self, message: str, needed_bytes: int = 0, available_bytes: int = 0, suggested_tp=None):
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        self.suggested_tp = suggested_tp


class TooLargeError(InvalidInputError):
    """A request whose result would exceed a documented size bound (memory, points, model size).

    Attributes
    ----------
    count : int
        What was counted (points of a sweep, GPUs of a plan ...).
    needed_bytes : int, bytes
        What the result would take (0 where the bound is on ``count``).
    limit : int
        The bound (bytes, or a count where ``needed_bytes`` is 0).
    """

    def __init__(self, message: str, count: int = 0, needed_bytes: int = 0, limit: int = 0):
        super().__init__(message)
        self.count = count
        self.needed_bytes = needed_bytes
        self.limit = limit


class OpDescriptorError(PerfModelError):
    """A malformed or unknown op descriptor."""


class ProfileError(PerfModelError):
    """A calibration profile that is missing, corrupt, or for another GPU."""


__all__ = [
    "PerfModelError",
    "InvalidInputError",
    "UnknownModelError",
    "ModelConfigError",
    "NonFiniteError",
    "DoesNotFitError",
    "TooLargeError",
    "OpDescriptorError",
    "ProfileError",
    "HardwareError",
    "UnknownHardwareError",
]
