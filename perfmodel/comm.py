"""Communication costs of collectives over a system's topology.

Every collective is ``steps * alpha + factor * bytes / bandwidth`` over the path it uses:

===============  =====================  ==================
collective       volume factor          latency steps
===============  =====================  ==================
all-reduce ring  ``2 (w - 1) / w``      ``2 (w - 1)``
all-reduce tree  ``2``                  ``2 ceil(log2 w)``
all-gather       ``(w - 1) / w``        ``w - 1``
reduce-scatter   ``(w - 1) / w``        ``w - 1``
all-to-all       ``(w - 1) / w``        ``w - 1``
send/recv        ``1``                  ``1``
===============  =====================  ==================

``bytes`` is per rank (an all-reduce's buffer, an all-gather's output, a reduce-scatter's
input, an all-to-all's buffer, the message each rank of a ring sends).  The path comes from
a system in ``hw/data/systems``: the intra-node fabric (NVLink, NVSwitch, or PCIe through the
host where there is no NVLink) and, for clusters, one NIC per GPU between nodes.  A group
larger than one node is placed on whole nodes and priced hierarchically (intra-node
reduce-scatter, inter-node all-reduce on each GPU's own NIC, intra-node all-gather, and the
analogous forms of the other collectives).  Without a named system the group is one node of
the GPU's own fabric (its NVLink, else its PCIe link) of at most :data:`DEFAULT_NODE_GPUS` GPUs; a
larger group is placed on the smallest shipped system of that GPU that holds it, and refused
(:class:`GroupTooLargeError`) when none does: never priced as one NVLink node.

Calibration: a profile's collective classes (``all_reduce`` ... ``send_recv``) were measured
on the GPU's own NVLink fabric, so they apply to NVLink/NVSwitch intra-node paths:
``latency_s`` is alpha per step, ``memory_eff`` scales the path's datasheet bandwidth,
``bandwidth_bytes_per_s`` (if set) replaces it, ``ramp_bytes`` is honoured, bytes beyond
``knee_bytes`` (per rank) move at ``tail_memory_eff`` of the link (NCCL's tuner switches to more
channels and its bulk protocol for large messages, so the marginal bandwidth rises), and ``overlap`` is
the share of the smaller of the latency and transfer terms hidden under the larger (eager
calls issued back to back: the host-side issue cost of one call runs while the previous
call's transfer is on the wire; carried in ``OpCost.overlap_s``).  The classes' terms were
measured back to back; a profile's ``collective_launch`` object holds terms per way of issuing
(:class:`perfmodel.ops.CollectiveLaunch`), used for a collective that names its way
(``Collective.launch``; :func:`perfmodel.layers.model_ops` names the phase's default,
:func:`perfmodel.ops.default_collective_launch`: in-graph for decode, back to back for prefill).  Other paths
(PCIe, NICs) use their datasheet bandwidth and latency from the hardware description.  In
the peak mode every latency is 0 and every bandwidth the datasheet's (the theoretical-peak
analysis, as for every other op).
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfmodel.hw.loader import load_system
from perfmodel.hw.spec import GPU, Cluster, Link, LinkKind, Node
from perfmodel.calibration import ClassParams, Mode, OpClass, Profile, ramp
from perfmodel.costs import Bound, OpCost
from perfmodel.errors import InvalidInputError
from perfmodel.ops import Collective, CollectiveLaunch, OpKind


class CommTopologyError(InvalidInputError):
    """A communication group that does not fit or match the system it is placed on."""


class GroupTooLargeError(CommTopologyError):
    """A group spanning more GPUs than the system has."""


class AllReduceAlgorithm(str, enum.Enum):
    RING = "ring"
    TREE = "tree"
    AUTO = "auto"  # the faster of the two, as NCCL's tuner picks


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
        return Topology(system.name, n.gpu.name, n.gpus_per_node, system.num_nodes, n.intra_node, system.inter_node)
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
        link = Link(gpu.fabric_kind if gpu.fabric_kind in NVLINK_KINDS else LinkKind.NVLINK,
                    gpu.nvlink_bytes_per_s_per_direction, gpu.fabric_latency_s)
    else:
        link = Link(LinkKind.PCIE, gpu.pcie_bytes_per_s_per_direction, gpu.pcie_latency_s)
    return Topology(f"{gpu.name}-node", gpu.name, max(int(world), 1), 1, link, None)


@functools.cache
def _shipped_topologies() -> tuple[Topology, ...]:
    """Every shipped system (``hw/data/systems``) as a :class:`Topology`, smallest first."""
    from perfmodel.hw.loader import list_systems

    return tuple(sorted((topology_from_system(load_system(n)) for n in list_systems()),
                        key=lambda t: (t.world_size, t.name)))


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
    largest = f"the largest shipped one, {mine[-1].name}, has {mine[-1].world_size}" if mine else "none is shipped"
    raise GroupTooLargeError(
        f"a group of {w:,} GPUs exceeds one node of {DEFAULT_NODE_GPUS} and every system of {gpu.name} GPUs "
        f"described in hw/data/systems ({largest}); name a system that holds it (--topology, a cluster file)")


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
    return Topology(f"{best.name} scaled to {nodes} node(s)", best.gpu_name, best.gpus_per_node, nodes, best.intra,
                    best.inter)


def resolve_topology(topology: str | Node | Cluster | Topology | None, gpu: GPU, world: int) -> Topology:
    """A :class:`Topology` from a system name, a loaded system, or None (the default node).

    Raises :class:`CommTopologyError` when the system holds another GPU than ``gpu``.
    """
    if isinstance(topology, Topology):
        topo = topology
    elif topology is None or topology == "":
        return default_topology(gpu, world)
    else:
        topo = topology_from_system(topology if isinstance(topology, (Node, Cluster)) else load_system(topology))
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


@dataclass(frozen=True)
class PathRate:
    """Alpha (seconds per step) and effective bandwidth of one path for one collective class."""

    alpha_s: float
    bandwidth_bytes_per_s: float
    ramp_bytes: float
    bound: Bound
    overlap: float = 0.0  # share of min(latency, transfer) hidden under the other (calibrated classes only)
    knee_bytes: float = 0.0  # per-rank bytes beyond which the extra bytes move at tail_bandwidth (0: none)
    tail_bandwidth_bytes_per_s: float = 0.0


def path_rate(link: Link, op_class: OpClass, profile: Profile, calibrated_path: bool,
              launch: CollectiveLaunch | None = None) -> PathRate:
    """The rate of ``link`` for ``op_class``; the profile applies only where ``calibrated_path``: its
    terms for the way ``launch`` where it has them (``collective_launch``), else the class's."""
    bound = Bound.PCIE if link.kind is LinkKind.PCIE else Bound.INTERCONNECT
    own = profile.collective_launch.get(launch, {}).get(op_class) if launch is not None else None
    fitted = calibrated_path and (own is not None or op_class in profile.classes)
    p: ClassParams = (own or profile.params(op_class)) if fitted else ClassParams()
    bw = (p.bandwidth_bytes_per_s or link.bytes_per_s_per_direction) * p.memory_eff
    if profile.mode is Mode.PEAK:
        return PathRate(0.0, bw, p.ramp_bytes, bound, p.overlap if fitted else 0.0)  # no knee: datasheet rate
    alpha = p.latency_s if p.latency_s > 0 else link.latency_s
    knee = p.knee_bytes if fitted else 0.0
    tail = (p.bandwidth_bytes_per_s or link.bytes_per_s_per_direction) * (p.tail_memory_eff or p.memory_eff)
    return PathRate(alpha, bw, p.ramp_bytes, bound, p.overlap if fitted else 0.0, knee, tail)


def _factor_steps(kind: OpKind, w: int, algo: AllReduceAlgorithm) -> tuple[float, float]:
    if w <= 1:
        return 0.0, 0.0
    if kind is OpKind.ALL_REDUCE:
        if algo is AllReduceAlgorithm.TREE:
            return 2.0, 2.0 * math.ceil(math.log2(w))
        return 2.0 * (w - 1) / w, 2.0 * (w - 1)
    if kind is OpKind.SEND_RECV:
        return 1.0, 1.0
    return (w - 1) / w, float(w - 1)


def _flat(kind: OpKind, nbytes: Any, w: int, rate: PathRate, algo: AllReduceAlgorithm) -> OpCost:
    """One collective over one path; AUTO all-reduce takes the faster of ring and tree."""
    if kind is OpKind.ALL_REDUCE and algo is AllReduceAlgorithm.AUTO and w > 2:
        ring = _flat(kind, nbytes, w, rate, AllReduceAlgorithm.RING)
        tree = _flat(kind, nbytes, w, rate, AllReduceAlgorithm.TREE)
        use_tree = np.asarray(tree.total_s) < np.asarray(ring.total_s)
        pick = lambda a, b: np.where(use_tree, a, b) if np.ndim(use_tree) else (a if use_tree else b)
        return OpCost(comm_s=pick(tree.comm_s, ring.comm_s), latency_s=pick(tree.latency_s, ring.latency_s),
                      overlap_s=pick(tree.overlap_s, ring.overlap_s), bytes=nbytes, memory_bound=rate.bound)
    factor, steps = _factor_steps(kind, w, algo)
    b = np.asarray(nbytes, dtype=np.float64)
    if not factor:
        t = np.zeros_like(b)
    elif rate.knee_bytes > 0:  # the bytes beyond the knee move at the large-message rate
        head, tail = np.minimum(b, rate.knee_bytes), np.maximum(b - rate.knee_bytes, 0.0)
        t = factor * (head / (rate.bandwidth_bytes_per_s * ramp(b, rate.ramp_bytes))
                      + tail / rate.tail_bandwidth_bytes_per_s)
    else:
        t = factor * b / (rate.bandwidth_bytes_per_s * ramp(b, rate.ramp_bytes))
    lat = steps * rate.alpha_s
    hidden = rate.overlap * np.minimum(t, lat)
    f = lambda x: x if np.ndim(x) else float(x)
    return OpCost(comm_s=f(t), latency_s=lat, overlap_s=f(hidden), bytes=nbytes, memory_bound=rate.bound)


def _op_class(kind: OpKind) -> OpClass:
    return OpClass(kind.value)


def collective_time(
    kind: OpKind, nbytes: Any, world: int, gpu: GPU, profile: Profile,
    topology: str | Node | Cluster | Topology | None = None,
    algorithm: AllReduceAlgorithm = AllReduceAlgorithm.AUTO, stride: int = 1,
    launch: CollectiveLaunch | None = None,
) -> OpCost:
    """Cost of one collective of ``nbytes`` per rank among ``world`` GPUs of ``topology``.

    ``stride`` spaces the group's GPUs (see :func:`place`).  ``launch`` picks the profile's terms
    for that way of issuing it where it has them (:func:`path_rate`).

    Returns an :class:`OpCost` with the bandwidth term in ``comm_s`` and the per-step
    latencies in ``latency_s`` (seconds); ``nbytes`` may be an array.
    """
    kind = OpKind(kind)
    algorithm = AllReduceAlgorithm(algorithm)
    topo = resolve_topology(topology, gpu, world * stride)
    pl = place(topo, world, stride)
    if pl.world == 1:
        return OpCost(bytes=nbytes)
    cls = _op_class(kind)
    launch = CollectiveLaunch(launch) if launch is not None else None
    intra = path_rate(topo.intra, cls, profile, topo.intra.kind in NVLINK_KINDS, launch)
    if pl.nodes == 1:
        return _flat(kind, nbytes, pl.world, intra, algorithm)
    inter = path_rate(topo.inter, cls, profile, False)  # type: ignore[arg-type]
    return _hierarchical(kind, nbytes, pl, intra, inter, algorithm, profile, topo, launch)


def _hierarchical(kind, nbytes, pl: Placement, intra: PathRate, inter: PathRate, algo, profile, topo,
                  launch: CollectiveLaunch | None = None) -> OpCost:
    g, n, w = pl.per_node, pl.nodes, pl.world
    b = np.asarray(nbytes, dtype=np.float64)
    b = b if b.ndim else float(b)
    nvl = topo.intra.kind in NVLINK_KINDS
    rs_rate = path_rate(topo.intra, OpClass.REDUCE_SCATTER, profile, nvl, launch)
    ag_rate = path_rate(topo.intra, OpClass.ALL_GATHER, profile, nvl, launch)
    if kind is OpKind.ALL_REDUCE:
        # reduce-scatter in the node, all-reduce of 1/g of the buffer on each GPU's NIC, all-gather in the node
        cost = _flat(kind, b / g, n, inter, algo)
        if g > 1:
            cost = _flat(OpKind.REDUCE_SCATTER, b, g, rs_rate, algo) + cost + _flat(OpKind.ALL_GATHER, b, g, ag_rate, algo)
    elif kind is OpKind.ALL_GATHER:
        cost = _flat(kind, b / g, n, inter, algo) + _flat(kind, b, g, intra, algo)
    elif kind is OpKind.REDUCE_SCATTER:
        cost = _flat(kind, b, g, intra, algo) + _flat(kind, b / g, n, inter, algo)
    elif kind is OpKind.ALL_TO_ALL:
        # the (g - 1) / w share for node peers and the (w - g) / w share for other nodes move at once
        t_in = (g - 1) / w * np.asarray(b) / intra.bandwidth_bytes_per_s + (g - 1) * intra.alpha_s
        t_out = (w - g) / w * np.asarray(b) / inter.bandwidth_bytes_per_s + (n - 1) * inter.alpha_s
        slow_net = np.asarray(t_out >= t_in)
        comm = np.where(slow_net, (w - g) / w * np.asarray(b) / inter.bandwidth_bytes_per_s,
                        (g - 1) / w * np.asarray(b) / intra.bandwidth_bytes_per_s)
        lat = np.where(slow_net, (n - 1) * inter.alpha_s, (g - 1) * intra.alpha_s)
        f = lambda x: x if np.ndim(x) else float(x)
        return OpCost(comm_s=f(comm), latency_s=f(lat), bytes=nbytes, memory_bound=inter.bound)
    else:  # a ring of sends: the hops between nodes go over the NIC, in parallel with the others
        cost = _flat(kind, b, 2, inter, algo)
    return OpCost(comm_s=cost.comm_s, latency_s=cost.latency_s, overlap_s=cost.overlap_s, bytes=nbytes,
                  memory_bound=inter.bound)


def collective_cost(op: Collective, gpu: GPU, profile: Profile) -> OpCost:
    """Cost of a collective op descriptor on ``gpu`` (its ``topology``, else :func:`default_topology`)."""
    return collective_time(op.op, op.bytes, op.world, gpu, profile, op.topology or None, launch=op.launch)


def bandwidth_only_time(kind: OpKind, nbytes: Any, world: int, gpu: GPU) -> Any:
    """Datasheet-bandwidth-only baseline over the GPU's NVLink (no latency, ring volume factors), seconds."""
    factor, _ = _factor_steps(OpKind(kind), world, AllReduceAlgorithm.RING)
    bw = gpu.nvlink_bytes_per_s_per_direction or gpu.pcie_bytes_per_s_per_direction
    return factor * np.asarray(nbytes, dtype=np.float64) / bw
