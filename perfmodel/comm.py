"""Where a communication group sits: systems (``hw/data/systems``) as topologies, and groups placed on them.

The path a collective uses comes from a system: the intra-node fabric (NVLink, NVSwitch, or PCIe through
the host where there is no NVLink) and, for clusters, one NIC per GPU between nodes.  A group larger than
one node is placed on whole nodes (:func:`place`).  Without a named system the group is one node of the
GPU's own fabric (its NVLink, else its PCIe link) of at most :data:`DEFAULT_NODE_GPUS` GPUs; a larger
group is placed on the smallest shipped system of that GPU that holds it, and refused
(:class:`GroupTooLargeError`) when none does: never priced as one NVLink node.  The collectives' costs
over these paths are :mod:`perfmodel.costs.collectives`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfmodel.hw.loader import list_systems, load_system
from perfmodel.hw.spec import GPU, Cluster, Link, LinkKind, Node
from perfmodel.errors import InvalidInputError


class CommTopologyError(InvalidInputError):
    """A communication group that does not fit or match the system it is placed on."""


class GroupTooLargeError(CommTopologyError):
    """A group spanning more GPUs than the system has."""


NVLINK_KINDS = frozenset({LinkKind.NVLINK, LinkKind.NVSWITCH})

#: GPUs in the node assumed when no system is named: an HGX/DGX baseboard's NVLink domain.  A larger
#: group goes on a shipped system that holds it (:func:`shipped_topology`), never on one NVLink node.
DEFAULT_NODE_GPUS = 8


@dataclass(frozen=True)
class Topology:
    """Where a group's GPUs sit: ``num_nodes`` nodes of ``gpus_per_node``.

    ``intra`` is the per-GPU intra-node path; ``inter`` the per-GPU NIC (None for one node).
    """

    name: str
    gpu_name: str
    gpus_per_node: int
    num_nodes: int
    intra: Link
    inter: Link | None = None

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.num_nodes


@dataclass(frozen=True)
class Placement:
    """A group of ``world`` GPUs laid out as ``nodes`` nodes of ``per_node`` GPUs each."""

    world: int
    per_node: int
    nodes: int


def topology_from_system(system: Node | Cluster) -> Topology:
    """The :class:`Topology` of a loaded node or cluster description."""
    if isinstance(system, Cluster):
        n = system.node
        return Topology(
            system.name, n.gpu.name, n.gpus_per_node, system.num_nodes, n.intra_node, system.inter_node
        )
    return Topology(system.name, system.gpu.name, system.gpus_per_node, 1, system.intra_node, None)


def default_topology(gpu: GPU, world: int) -> Topology:
    """Where a group of ``world`` GPUs sits when no system is named.

    Up to :data:`DEFAULT_NODE_GPUS` GPUs: one node of them on the GPU's own fabric (NVLink if it has
    one, else PCIe through the host).  A larger group: the smallest shipped system of this GPU that
    holds it (``hw/data/systems``; a cluster's nodes joined by their NICs), as that file describes it.
    Raises :class:`GroupTooLargeError` when no shipped system holds it.
    """
    if int(min(float(world), 2**62)) > DEFAULT_NODE_GPUS:
        return shipped_topology(gpu, world)
    if gpu.nvlink_bytes_per_s_per_direction > 0:
        link = Link(
            gpu.fabric_kind if gpu.fabric_kind in NVLINK_KINDS else LinkKind.NVLINK,
            gpu.nvlink_bytes_per_s_per_direction,
            gpu.fabric_latency_s,
        )
    else:
        link = Link(LinkKind.PCIE, gpu.pcie_bytes_per_s_per_direction, gpu.pcie_latency_s)
    return Topology(f"{gpu.name}-node", gpu.name, max(int(world), 1), 1, link, None)


@functools.cache
def _shipped_topologies() -> tuple[Topology, ...]:
    """Every shipped system (``hw/data/systems``) as a :class:`Topology`, smallest first."""
    return tuple(
        sorted(
            (topology_from_system(load_system(n)) for n in list_systems()),
            key=lambda t: (t.world_size, t.name),
        )
    )


def systems_holding(gpu: GPU, world: int) -> list[str]:
    """The shipped systems (``hw/data/systems``) of ``gpu`` with at least ``world`` GPUs, smallest first."""
    return [t.name for t in _shipped_topologies() if t.gpu_name == gpu.name and t.world_size >= world]


def shipped_topology(gpu: GPU, world: Any) -> Topology:
    """The smallest shipped system of ``gpu`` that holds ``world`` GPUs; :class:`GroupTooLargeError` naming
    the largest there is otherwise."""
    w = int(min(float(world), 2**62))
    for t in _shipped_topologies():
        if t.gpu_name == gpu.name and t.world_size >= w:
            return t
    mine = [t for t in _shipped_topologies() if t.gpu_name == gpu.name]
    largest = (
        f"the largest shipped one, {mine[-1].name}, has {mine[-1].world_size}" if mine else "none is shipped"
    )
    raise GroupTooLargeError(
        f"a group of {w:,} GPUs exceeds one node of {DEFAULT_NODE_GPUS} and every system of {gpu.name} GPUs "
        f"described in hw/data/systems ({largest}); name a system that holds it (--topology, a cluster file)"
    )


def larger_system_hint(gpu: GPU, world: int) -> str:
    """Where ``world`` GPUs are priced without a named system, or what to name."""
    found = systems_holding(gpu, world)
    if found:
        return f"priced on {found[0]}, the smallest shipped system that holds them, unless --topology names another"
    return "more than any shipped system holds: name one that does (--topology, a cluster file)"


def scaled_cluster(gpu: GPU, world: int) -> Topology | None:
    """The smallest shipped cluster of ``gpu`` (``hw/data/systems``) with as many of its nodes as ``world``
    GPUs fill: its node's fabric inside a node, its per-GPU NIC between nodes.  None when no shipped
    cluster holds this GPU.  For a command told how many GPUs it has (``plan sp --gpus``)."""
    best = next((t for t in _shipped_topologies() if t.gpu_name == gpu.name and t.inter is not None), None)
    if best is None:
        return None
    nodes = max(1, math.ceil(int(world) / best.gpus_per_node))
    return Topology(
        f"{best.name} scaled to {nodes} node(s)",
        best.gpu_name,
        best.gpus_per_node,
        nodes,
        best.intra,
        best.inter,
    )


def resolve_topology(topology: str | Node | Cluster | Topology | None, gpu: GPU, world: int) -> Topology:
    """A :class:`Topology` from a system name, a loaded system, or None (the default node).

    Raises :class:`CommTopologyError` when the system holds another GPU than ``gpu``.
    """
    if isinstance(topology, Topology):
        topo = topology
    elif topology is None or topology == "":
        return default_topology(gpu, world)
    else:
        topo = topology_from_system(
            topology if isinstance(topology, (Node, Cluster)) else load_system(topology)
        )
    if topo.gpu_name != gpu.name:
        raise CommTopologyError(f"system {topo.name!r} holds {topo.gpu_name} GPUs, not {gpu.name}")
    return topo


def place(topo: Topology, world: int, stride: int = 1) -> Placement:
    """Lay a group of ``world`` GPUs, ``stride`` GPUs apart, on ``topo``: in one node or over nodes.

    Groups are packed from GPU 0; a group whose members are ``stride`` apart (an SP group
    across TP groups, say) spans nodes once ``world * stride`` exceeds a node.

    Raises
    ------
    GroupTooLargeError
        ``world * stride`` exceeds the system's GPU count.
    CommTopologyError
        ``world`` is not a positive integer, or spans nodes without an equal share on each.
    """
    for name, v in (("world", world), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise CommTopologyError(f"{name} must be a positive integer, got {v!r}")
    world, stride = int(world), int(stride)
    span = world * stride
    if span > topo.world_size:
        what = f"a group of {world:,} GPUs" + (f" {stride} apart" if stride > 1 else "")
        raise GroupTooLargeError(
            f"{what} needs {span:,} GPUs; {topo.name} has {topo.world_size:,} "
            f"({topo.num_nodes} node(s) of {topo.gpus_per_node})"
        )
    if span <= topo.gpus_per_node:
        return Placement(world, world, 1)
    per_node = max(topo.gpus_per_node // stride, 1)
    if world % per_node:
        raise CommTopologyError(
            f"a group of {world} GPUs spans nodes of {topo.gpus_per_node} GPUs on {topo.name}: "
            f"it must be a multiple of {per_node} (an equal share of each node)"
        )
    return Placement(world, per_node, world // per_node)
