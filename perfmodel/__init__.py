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
import sys as _sys
import types as _types

# In the repository the design card's folders (hw/, kernels/, planners/, dashboard/, validation/) sit beside
# this package; they are its subpackages perfmodel.hw, perfmodel.kernels, ... (an installed wheel holds them
# under perfmodel/, see pyproject.toml's package-dir). Running from a checkout without installing it, the
# checkout's root is searched for them too.
_CHECKOUT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_CHECKOUT, "hw", "__init__.py")) and _CHECKOUT not in __path__:
    __path__.append(_CHECKOUT)

#: The public names and the module each is loaded from, on first use: ``import perfmodel`` itself loads
#: none of them (not even numpy); ``perfmodel.analyze`` loads what analyze needs, and so on.
_LAZY = {
    **dict.fromkeys(("Dtype", "load_gpu", "list_gpus"), "perfmodel.hw"),
    **dict.fromkeys(("Analysis", "analyze"), "perfmodel.analyze"),
    **dict.fromkeys(
        ("Mode", "Profile", "load_profile_file", "peak_profile", "resolve_profile"), "perfmodel.calibration"
    ),
    **dict.fromkeys(("Bound", "OpCost", "op_cost"), "perfmodel.costs"),
    **dict.fromkeys(
        (
            "DoesNotFitError",
            "InvalidInputError",
            "ModelConfigError",
            "NonFiniteError",
            "OpDescriptorError",
            "PerfModelError",
            "ProfileError",
            "TooLargeError",
            "UnknownModelError",
        ),
        "perfmodel.errors",
    ),
    "Precision": "perfmodel.layers",
    **dict.fromkeys(("ModelSpec", "list_models", "load_model"), "perfmodel.models"),
    **dict.fromkeys(("AttentionImpl", "op_from_dict", "op_to_dict"), "perfmodel.ops"),
    **dict.fromkeys(("predict", "predict_cost", "predict_file"), "perfmodel.predict"),
    **dict.fromkeys(("Layout", "Scenario"), "perfmodel.scenario"),
    "sweep": "perfmodel.sweep",
    # the simulator's modules need pandas
    **dict.fromkeys(
        ("Deployment", "LengthDist", "SimResult", "Slo", "Workload", "simulate"), "perfmodel.serving"
    ),
}

__all__ = sorted(_LAZY)

#: Public functions named as the submodule that defines them: ``perfmodel.analyze`` is the function in every
#: import order (importing the submodule ``perfmodel.analyze`` does not rebind the package's attribute).
_SHADOWED = frozenset(n for n, mod in _LAZY.items() if mod == f"{__name__}.{n}")


#: Subpackages with their own dependencies (torch, pulp, streamlit): loaded only by an import statement.
_EXTRAS = frozenset(("kernels", "planners", "dashboard", "validation"))


class _Package(_types.ModuleType):
    """The package's module type: the import system's binding of a submodule named as a public function is
    not kept (the function is found through :func:`__getattr__`; the submodule stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _SHADOWED and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    import importlib

    mod = _LAZY.get(name)
    if mod is not None:
        value = getattr(importlib.import_module(mod), name)
        globals()[name] = value
        return value
    if (
        name[:1].isalpha() and name not in _EXTRAS
    ):  # a core submodule used as an attribute (``perfmodel.phases``)
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
