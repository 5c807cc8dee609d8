"""Analytical performance model for long-context LLM inference.

Public API::

    scn = perfmodel.Scenario.make(model, gpu, context_len=..., batch=..., layout=perfmodel.Layout(tp=...))
    perfmodel.analyze(scn)  # or, building the scenario from keywords:
    perfmodel.analyze(model, gpu, context_len=..., output_tokens=..., batch=..., tp=...,
                      mode="calibrated", attention_impl="sdpa")   # mode="peak": the datasheet bound
    perfmodel.predict(op_descriptor, gpu, mode="calibrated") -> seconds
    perfmodel.sweep(model, gpu, context_len=[...], batch=[...], tp=[...], output_tokens=[...]) -> DataFrame
    perfmodel.sweep(scn, context_len=[...]) -> DataFrame
    perfmodel.simulate(perfmodel.Deployment.make(model, gpu, tp=...), perfmodel.Workload(...)) -> SimResult
    perfmodel.simulate(perfmodel.Deployment.from_scenario(scn, replicas=...), perfmodel.Workload(...))
"""

import os as _os

# In the repository the design card's folders (hw/, kernels/, planners/, dashboard/, validation/) sit beside
# this package; they are its subpackages perfmodel.hw, perfmodel.kernels, ... (an installed wheel holds them
# under perfmodel/, see pyproject.toml's package-dir). Running from a checkout without installing it, the
# checkout's root is searched for them too.
_CHECKOUT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_CHECKOUT, "hw", "__init__.py")) and _CHECKOUT not in __path__:
    __path__.append(_CHECKOUT)

from perfmodel.hw import Dtype, load_gpu, list_gpus
from perfmodel.analyze import Analysis, analyze
from perfmodel.calibration import Mode, Profile, load_profile_file, peak_profile, resolve_profile
from perfmodel.costs import Bound, OpCost, op_cost
from perfmodel.errors import (
    DoesNotFitError,
    InvalidInputError,
    ModelConfigError,
    NonFiniteError,
    OpDescriptorError,
    PerfModelError,
    ProfileError,
    TooLargeError,
    UnknownModelError,
)
from perfmodel.layers import Precision
from perfmodel.models import ModelSpec, list_models, load_model
from perfmodel.ops import AttentionImpl, op_from_dict, op_to_dict
from perfmodel.predict import predict, predict_cost, predict_file
from perfmodel.scenario import Layout, Scenario
from perfmodel.sweep import sweep



__all__ = [
    "Analysis", "AttentionImpl", "Bound", "DoesNotFitError", "Dtype", "InvalidInputError", "Mode", "ModelConfigError",
    "ModelSpec", "OpCost", "OpDescriptorError", "PerfModelError", "Precision", "Profile", "ProfileError",
    "UnknownModelError", "analyze", "list_gpus", "list_models", "load_gpu", "load_model", "load_profile_file",
    "op_cost", "op_from_dict", "op_to_dict", "peak_profile", "predict", "predict_cost", "predict_file",
    "resolve_profile", "sweep", "simulate", "Deployment", "LengthDist", "SimResult", "Slo", "Workload",
    "NonFiniteError", "TooLargeError", "Layout", "Scenario",
]

#: names loaded on first use: the simulator's modules need pandas
_LAZY = {"Deployment": "perfmodel.serving", "LengthDist": "perfmodel.serving",
         "SimResult": "perfmodel.serving", "Slo": "perfmodel.serving", "Workload": "perfmodel.serving",
         "simulate": "perfmodel.serving"}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'perfmodel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
