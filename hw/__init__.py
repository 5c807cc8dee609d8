"""Hardware as data: one YAML file per accelerator, loaded into frozen dataclasses.

This package imports nothing else of the project.
"""

from perfmodel.hw.loader import (
    HardwareError,
    UnknownHardwareError,
    gpu_from_dict,
    list_aliases,
    list_gpus,
    list_systems,
    load_gpu,
    load_system,
    resolve_gpu_name,
)
from perfmodel.hw.spec import GPU, Cluster, Dtype, Link, LinkKind, Node, Source

__all__ = [
    "GPU",
    "Cluster",
    "Dtype",
    "Link",
    "LinkKind",
    "Node",
    "Source",
    "HardwareError",
    "UnknownHardwareError",
    "gpu_from_dict",
    "list_aliases",
    "list_gpus",
    "list_systems",
    "load_gpu",
    "load_system",
    "resolve_gpu_name",
]
