"""Cost of collectives over a system's topology (:mod:`perfmodel.comm` places the group).

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
the GPU's own fabric (its NVLink, else its PCIe link) of at most :data:`perfmodel.comm.DEFAULT_NODE_GPUS` GPUs; a
larger group is placed on the smallest shipped system of that GPU that holds it, and refused
(:class:`perfmodel.comm.GroupTooLargeError`) when none does: never priced as one NVLink node.

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
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from perfmodel.hw.spec import GPU, Cluster, Link, LinkKind, Node
from perfmodel.comm import NVLINK_KINDS, Placement, Topology, place, resolve_topology
from perfmodel.costs.base import Bound, CurveParams, Mode, OpClass, OpCost, ramp
from perfmodel.errors import ProfileError
from perfmodel.ops import Collective, CollectiveLaunch, OpKind

if TYPE_CHECKING:
    from perfmodel.calibration import Profile


@dataclass(frozen=True)
class CollectiveParams(CurveParams):
    """Achieved-fraction curve of one collective class (``all_reduce`` ... ``send_recv``), measured on the
    GPU's own NVLink fabric (see the module docstring).

    Attributes
    ----------
    memory_eff : float, fraction of the path's datasheet bandwidth in (0, 1.5]
    latency_s : float, alpha: seconds per step (0: the link's datasheet latency)
    overlap : float in [0, 1], share of the smaller of the latency and transfer terms hidden under the larger
    ramp_bytes : float, per-rank bytes at which half of ``memory_eff`` is reached (0: none)
    bandwidth_bytes_per_s : float, replaces the path's datasheet bandwidth (0: datasheet)
    knee_bytes : float, per-rank bytes beyond which the extra bytes move at ``tail_memory_eff`` (0: none)
    tail_memory_eff : float, fraction of the path's bandwidth beyond the knee (0: ``memory_eff``)
    """

    memory_eff: float = 1.0
    latency_s: float = 0.0
    overlap: float = 1.0
    ramp_bytes: float = 0.0
    bandwidth_bytes_per_s: float = 0.0
    knee_bytes: float = 0.0
    tail_memory_eff: float = 0.0


COLLECTIVE_CLASSES: tuple[OpClass, ...] = (
    OpClass.ALL_REDUCE,
    OpClass.ALL_GATHER,
    OpClass.REDUCE_SCATTER,
    OpClass.ALL_TO_ALL,
    OpClass.SEND_RECV,
)

_UNFITTED = CollectiveParams()


class AllReduceAlgorithm(str, enum.Enum):
    RING = "ring"
    TREE = "tree"
    AUTO = "auto"  # the faster of the two, as NCCL's tuner picks


#: World sizes the peer all-reduce kernels are built for (vLLM ``CustomAllreduce._SUPPORTED_WORLD_SIZES``).
PEER_WORLD_SIZES = (2, 4, 6, 8)
#: One-shot below these per-rank sizes at up to this many GPUs, two-shot above (vLLM ``csrc/custom_all_reduce.cuh``,
#: ``REDUCE_CASE``: two GPUs always one-shot; full NVLink: ``w <= 4 and bytes < 512 KiB`` or ``w <= 8 and
#: bytes < 256 KiB``).
PEER_ONE_SHOT_MAX_BYTES = ((4, 512 * 1024), (8, 256 * 1024))


@dataclass(frozen=True)
class PeerAllReduce:
    """An engine's own all-reduce over peer-to-peer loads (vLLM's custom all-reduce), seconds and bytes.

    One-shot: each rank reads the whole buffer of every peer and reduces it locally, so ``(w - 1) * bytes``
    cross each GPU's links, after a start flag and before an end flag (``one_shot_latency_s`` holds both
    syncs and the launch).  Two-shot: a reduce-scatter by peer reads (``(w - 1) / w * bytes``), a sync,
    then an all-gather of the reduced parts by peer reads (as much again): ``2 (w - 1) / w * bytes``.
    Each moves at ``*_link_eff`` of the path's datasheet bandwidth per direction.  An all-reduce of
    ``max_bytes`` or more, of a world size outside :data:`PEER_WORLD_SIZES`, across nodes, or of more
    than two GPUs without an NVSwitch (full NVLink) goes to NCCL, as the engine sends it.  Outside a CUDA
    graph the input is first copied into the registered buffer (one read and one write on HBM).

    Attributes
    ----------
    max_bytes : float, bytes per rank; the largest all-reduce it takes is just below it
    one_shot_latency_s, two_shot_latency_s : float, seconds of fixed cost per call
    one_shot_link_eff, two_shot_link_eff : float in (0, 1.5], share of the link's datasheet bandwidth
    """

    max_bytes: float
    one_shot_latency_s: float
    one_shot_link_eff: float
    two_shot_latency_s: float
    two_shot_link_eff: float

    def __post_init__(self) -> None:
        for f in (
            "max_bytes",
            "one_shot_latency_s",
            "two_shot_latency_s",
            "one_shot_link_eff",
            "two_shot_link_eff",
        ):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ProfileError(f"peer all-reduce: {f} must be a finite number >= 0, got {v!r}")
        for f in ("one_shot_link_eff", "two_shot_link_eff"):
            if not 0 < getattr(self, f) <= 1.5:
                raise ProfileError(f"peer all-reduce: {f} must be in (0, 1.5], got {getattr(self, f)!r}")


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


def path_rate(
    link: Link,
    op_class: OpClass,
    profile: Profile,
    calibrated_path: bool,
    launch: CollectiveLaunch | None = None,
) -> PathRate:
    """The rate of ``link`` for ``op_class``; the profile applies only where ``calibrated_path``: its
    terms for the way ``launch`` where it has them (``collective_launch``), else the class's."""
    bound = Bound.PCIE if link.kind is LinkKind.PCIE else Bound.INTERCONNECT
    own = profile.collective_launch.get(launch, {}).get(op_class) if launch is not None else None
    fitted = calibrated_path and (own is not None or op_class in profile.classes)
    p = (own or profile.params(op_class)) if fitted else _UNFITTED
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
        return OpCost(
            comm_s=pick(tree.comm_s, ring.comm_s),
            latency_s=pick(tree.latency_s, ring.latency_s),
            overlap_s=pick(tree.overlap_s, ring.overlap_s),
            bytes=nbytes,
            memory_bound=rate.bound,
        )
    factor, steps = _factor_steps(kind, w, algo)
    b = np.asarray(nbytes, dtype=np.float64)
    if not factor:
        t = np.zeros_like(b)
    elif rate.knee_bytes > 0:  # the bytes beyond the knee move at the large-message rate
        head, tail = np.minimum(b, rate.knee_bytes), np.maximum(b - rate.knee_bytes, 0.0)
        t = factor * (
            head / (rate.bandwidth_bytes_per_s * ramp(b, rate.ramp_bytes))
            + tail / rate.tail_bandwidth_bytes_per_s
        )
    else:
        t = factor * b / (rate.bandwidth_bytes_per_s * ramp(b, rate.ramp_bytes))
    lat = steps * rate.alpha_s
    hidden = rate.overlap * np.minimum(t, lat)
    f = lambda x: x if np.ndim(x) else float(x)
    return OpCost(comm_s=f(t), latency_s=lat, overlap_s=f(hidden), bytes=nbytes, memory_bound=rate.bound)


def _op_class(kind: OpKind) -> OpClass:
    return OpClass(kind.value)


def collective_time(
    kind: OpKind,
    nbytes: Any,
    world: int,
    gpu: GPU,
    profile: Profile,
    topology: str | Node | Cluster | Topology | None = None,
    algorithm: AllReduceAlgorithm = AllReduceAlgorithm.AUTO,
    stride: int = 1,
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
        nccl = _flat(kind, nbytes, pl.world, intra, algorithm)
        peer = profile.peer_all_reduce
        if kind is OpKind.ALL_REDUCE and peer is not None and peer_eligible(pl.world, topo):
            return _peer_or_nccl(nbytes, pl.world, topo.intra, gpu, profile, peer, launch, nccl)
        return nccl
    inter = path_rate(topo.inter, cls, profile, False)  # type: ignore[arg-type]
    return _hierarchical(kind, nbytes, pl, intra, inter, algorithm, profile, topo, launch)


def peer_eligible(world: int, topo: Topology) -> bool:
    """Whether a one-node group of ``world`` GPUs of ``topo`` may run a peer all-reduce: a supported
    size, and for more than two GPUs a switch that links every pair (vLLM: ``world_size > 2`` needs the
    GPUs fully NVLink-connected)."""
    if world not in PEER_WORLD_SIZES:
        return False
    return world == 2 or topo.intra.kind is LinkKind.NVSWITCH


def peer_all_reduce_time(
    nbytes: Any,
    world: int,
    link: Link,
    gpu: GPU,
    peer: PeerAllReduce,
    mode: Mode = Mode.CALIBRATED,
    in_graph: bool = True,
) -> OpCost:
    """Cost of ``peer``'s all-reduce of ``nbytes`` per rank among ``world`` GPUs over ``link`` (seconds).

    One-shot or two-shot by the per-rank size (:data:`PEER_ONE_SHOT_MAX_BYTES`); the size limit
    (``peer.max_bytes``) is the caller's (:func:`collective_time` sends larger ones to NCCL).  In the
    peak mode the fixed costs are 0 and the link moves at its datasheet rate.  ``in_graph`` False adds
    the copy into the registered buffer (HBM, ``memory_s``).  ``nbytes`` may be an array.
    """
    b = np.asarray(nbytes, dtype=np.float64)
    w = int(world)
    bw = link.bytes_per_s_per_direction
    peak = mode is Mode.PEAK
    one_cap = next((cap for most, cap in PEER_ONE_SHOT_MAX_BYTES if w <= most), 0.0)
    one = (w == 2) | (b < one_cap)
    t_one = (w - 1) * b / (bw * (1.0 if peak else peer.one_shot_link_eff))
    t_two = 2.0 * (w - 1) / w * b / (bw * (1.0 if peak else peer.two_shot_link_eff))
    comm = np.where(one, t_one, t_two)
    lat = np.zeros_like(b) if peak else np.where(one, peer.one_shot_latency_s, peer.two_shot_latency_s)
    copy = np.zeros_like(b) if in_graph else 2.0 * b / gpu.hbm_bytes_per_s
    f = lambda x: x if np.ndim(x) else float(x)
    bound = Bound.PCIE if link.kind is LinkKind.PCIE else Bound.INTERCONNECT
    return OpCost(comm_s=f(comm), latency_s=f(lat), memory_s=f(copy), bytes=nbytes, memory_bound=bound)


def _peer_or_nccl(nbytes, world, link, gpu, profile, peer, launch, nccl: OpCost) -> OpCost:
    """The peer all-reduce where the size is below its limit, NCCL's cost (``nccl``) elsewhere."""
    in_graph = launch is CollectiveLaunch.GRAPH
    cost = peer_all_reduce_time(nbytes, world, link, gpu, peer, profile.mode, in_graph)
    use = np.asarray(nbytes, dtype=np.float64) < peer.max_bytes
    if np.ndim(use) == 0:
        return cost if bool(use) else nccl
    pick = lambda a, b: np.where(use, np.broadcast_to(a, use.shape), np.broadcast_to(b, use.shape))
    return OpCost(
        comm_s=pick(cost.comm_s, nccl.comm_s),
        latency_s=pick(cost.latency_s, nccl.latency_s),
        memory_s=pick(cost.memory_s, nccl.memory_s),
        overlap_s=pick(0.0, nccl.overlap_s),
        bytes=nbytes,
        memory_bound=nccl.memory_bound,
    )


def _hierarchical(
    kind,
    nbytes,
    pl: Placement,
    intra: PathRate,
    inter: PathRate,
    algo,
    profile,
    topo,
    launch: CollectiveLaunch | None = None,
) -> OpCost:
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
            cost = (
                _flat(OpKind.REDUCE_SCATTER, b, g, rs_rate, algo)
                + cost
                + _flat(OpKind.ALL_GATHER, b, g, ag_rate, algo)
            )
    elif kind is OpKind.ALL_GATHER:
        cost = _flat(kind, b / g, n, inter, algo) + _flat(kind, b, g, intra, algo)
    elif kind is OpKind.REDUCE_SCATTER:
        cost = _flat(kind, b, g, intra, algo) + _flat(kind, b / g, n, inter, algo)
    elif kind is OpKind.ALL_TO_ALL:
        # the (g - 1) / w share for node peers and the (w - g) / w share for other nodes move at once
        t_in = (g - 1) / w * np.asarray(b) / intra.bandwidth_bytes_per_s + (g - 1) * intra.alpha_s
        t_out = (w - g) / w * np.asarray(b) / inter.bandwidth_bytes_per_s + (n - 1) * inter.alpha_s
        slow_net = np.asarray(t_out >= t_in)
        comm = np.where(
            slow_net,
            (w - g) / w * np.asarray(b) / inter.bandwidth_bytes_per_s,
            (g - 1) / w * np.asarray(b) / intra.bandwidth_bytes_per_s,
        )
        lat = np.where(slow_net, (n - 1) * inter.alpha_s, (g - 1) * intra.alpha_s)
        f = lambda x: x if np.ndim(x) else float(x)
        return OpCost(comm_s=f(comm), latency_s=f(lat), bytes=nbytes, memory_bound=inter.bound)
    else:  # a ring of sends: the hops between nodes go over the NIC, in parallel with the others
        cost = _flat(kind, b, 2, inter, algo)
    return OpCost(
        comm_s=cost.comm_s,
        latency_s=cost.latency_s,
        overlap_s=cost.overlap_s,
        bytes=nbytes,
        memory_bound=inter.bound,
    )


def collective_cost(op: Collective, gpu: GPU, profile: Profile) -> OpCost:
    """Cost of a collective op descriptor on ``gpu`` (its ``topology``, else :func:`default_topology`)."""
    return collective_time(op.op, op.bytes, op.world, gpu, profile, op.topology or None, launch=op.launch)


def bandwidth_only_time(kind: OpKind, nbytes: Any, world: int, gpu: GPU) -> Any:
    """Datasheet-bandwidth-only baseline over the GPU's NVLink (no latency, ring volume factors), seconds."""
    factor, _ = _factor_steps(OpKind(kind), world, AllReduceAlgorithm.RING)
    bw = gpu.nvlink_bytes_per_s_per_direction or gpu.pcie_bytes_per_s_per_direction
    return factor * np.asarray(nbytes, dtype=np.float64) / bw
