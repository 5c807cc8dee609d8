"""The MoE dispatch and combine all-to-all of one layer, priced from its GPU-to-GPU traffic matrix.

A placement (per GPU, the experts whose replicas it holds) and the layer's routed token copies per expert
``w_e`` imply the matrix ``T[s, g]``: token copies that source GPU ``s`` sends to GPU ``g``.  Tokens sit
evenly on the ``G`` source GPUs (data-parallel attention) and pick a replica of expert ``e`` evenly, so
``T[s, g] = sum_e (w_e / G) A[e, g]`` with ``A[e, g] = 1 / r_e`` where ``g`` holds one of ``e``'s ``r_e``
replicas.  The diagonal stays on the GPU.

Each GPU moves its bytes over each link class at once: to and from peers in its node over the intra-node
fabric, to and from other nodes over its own NIC (the links of :mod:`perfmodel.comm`:
:func:`~perfmodel.comm.path_rate` for the all-to-all class, the same bandwidth, ramp, knee and latency as
:func:`~perfmodel.comm.collective_time`).  A class costs ``bytes / bandwidth + steps * alpha`` with one step
per peer GPU it reaches inside the node and one per other node it reaches (as the hierarchical all-to-all
of :mod:`perfmodel.comm` counts them), less the calibrated share of the smaller term hidden under the larger
(``PathRate.overlap``); a GPU takes the slower of its classes and of its two directions (links
are full duplex), and the dispatch takes its slowest GPU.  The combine sends the same bytes back (the
transpose), so it costs the same.

:func:`busiest_gpu_bound_s` is a lower bound under the same links: the busiest GPU's off-GPU bytes in one
direction over all its links at once at their fastest rate, without latency.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from perfmodel.calibration import OpClass, Profile
from perfmodel.comm import NVLINK_KINDS, AllReduceAlgorithm, Topology, _flat, path_rate
from perfmodel.errors import InvalidInputError
from perfmodel.ops import OpKind

Placement = Sequence[Sequence[int]]


def share_matrix(placement: Placement, num_experts: int) -> np.ndarray:
    """``A[e, g]``: the share of expert ``e``'s token copies served on GPU ``g`` (``1 / r_e`` or 0)."""
    a = np.zeros((num_experts, len(placement)))
    for g, gpu in enumerate(placement):
        for e in gpu:
            if not 0 <= int(e) < num_experts:
                raise InvalidInputError(f"GPU {g} holds expert {e}; experts are 0..{num_experts - 1}")
            a[int(e), g] = 1.0
    cnt = a.sum(axis=1)
    if np.any(cnt == 0):
        raise InvalidInputError(f"experts not placed: {np.flatnonzero(cnt == 0).tolist()[:10]}")
    return a / cnt[:, None]


def traffic_matrix(placement: Placement, loads: Sequence[float]) -> np.ndarray:
    """``T[s, g]``, token copies from source GPU ``s`` to GPU ``g`` (tokens evenly on the source GPUs)."""
    w = np.asarray(loads, dtype=np.float64)
    g = len(placement)
    return np.tile(w @ share_matrix(placement, len(w)) / g, (g, 1))


@dataclass(frozen=True)
class RouteTime:
    """One all-to-all (dispatch; the combine costs the same) priced from its traffic matrix."""

    seconds: float  # the slowest GPU's time
    busiest_gpu: int
    intra_bytes: float  # over all GPUs, sent inside nodes
    inter_bytes: float  # over all GPUs, sent between nodes
    bound_s: float  # busiest_gpu_bound_s of the same matrix


def _node_of(gpus: int, gpus_per_node: int) -> np.ndarray:
    return np.arange(gpus) // gpus_per_node


def _rates(topo: Topology, profile: Profile):
    intra = path_rate(topo.intra, OpClass.ALL_TO_ALL, profile, topo.intra.kind in NVLINK_KINDS)
    inter = path_rate(topo.inter, OpClass.ALL_TO_ALL, profile, False) if topo.inter is not None else None
    return intra, inter


def _check(t: np.ndarray, topo: Topology) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise InvalidInputError(f"a traffic matrix is square, got shape {list(t.shape)}")
    if not np.isfinite(t).all() or (t < 0).any():
        raise InvalidInputError("traffic must be finite and >= 0")
    if t.shape[0] > topo.world_size:
        raise InvalidInputError(f"{t.shape[0]} GPUs exceed {topo.name} ({topo.world_size} GPUs)")
    if t.shape[0] > topo.gpus_per_node and topo.inter is None:
        raise InvalidInputError(f"{t.shape[0]} GPUs span nodes of {topo.gpus_per_node} but {topo.name} has no NIC")
    return t


def _class_s(nbytes: float, peers: int, rate) -> float:
    if nbytes <= 0 or rate is None:
        return 0.0
    t = float(_flat(OpKind.SEND_RECV, nbytes, 2, rate, AllReduceAlgorithm.RING).comm_s)  # factor 1
    lat = peers * rate.alpha_s
    return t + lat - rate.overlap * min(t, lat)


def route_time(traffic_bytes: np.ndarray, topo: Topology, profile: Profile) -> RouteTime:
    """Price one all-to-all whose ``traffic_bytes[s, g]`` bytes go from GPU ``s`` to GPU ``g``.

    GPUs are numbered node by node (``topo.gpus_per_node`` to a node).
    """
    t = _check(traffic_bytes, topo)
    g = t.shape[0]
    node = _node_of(g, topo.gpus_per_node)
    same = node[:, None] == node[None, :]
    off = ~np.eye(g, dtype=bool)
    intra, inter = _rates(topo, profile)
    worst, who = 0.0, 0
    for d, m in (("send", t), ("recv", t.T)):
        for s in range(g):
            row = m[s]
            in_mask = same[s] & off[s]
            b_in = float(row[in_mask].sum())
            peers_in = int(np.count_nonzero(row[in_mask] > 0))
            b_out = float(row[~same[s]].sum())
            nodes_out = len(set(node[~same[s]][row[~same[s]] > 0].tolist()))
            ts = max(_class_s(b_in, peers_in, intra), _class_s(b_out, nodes_out, inter))
            if ts > worst:
                worst, who = ts, s
    return RouteTime(worst, who, float(t[same & off].sum()), float(t[~same].sum()),
                     busiest_gpu_bound_s(t, topo, profile))


def busiest_gpu_bound_s(traffic_bytes: np.ndarray, topo: Topology, profile: Profile) -> float:
    """The busiest GPU's off-GPU bytes (sent or received) over all its links' bandwidth at once: a lower bound."""
    t = _check(traffic_bytes, topo)
    intra, inter = _rates(topo, profile)
    off = t.copy()
    np.fill_diagonal(off, 0.0)
    busiest = max(float(off.sum(axis=1).max()), float(off.sum(axis=0).max())) if t.size else 0.0
    fastest = lambda r: max(r.bandwidth_bytes_per_s, r.tail_bandwidth_bytes_per_s)
    links = fastest(intra)
    if t.shape[0] > topo.gpus_per_node and inter is not None:
        links += fastest(inter)
    return busiest / links


def layer_route_time(placement: Placement, loads: Sequence[float], bytes_per_token: float, topo: Topology,
                     profile: Profile) -> RouteTime:
    """The dispatch all-to-all of one MoE layer: ``loads[e]`` token copies routed to expert ``e``."""
    return route_time(traffic_matrix(placement, loads) * bytes_per_token, topo, profile)


def read_placement(path: str | Path) -> list[list[list[int]]]:
    """Per layer, per GPU, the experts held, from a ``plan moe --json`` file (``layers[*].placement``)
    or ``{"placement": [[...] per GPU]}`` (one layer for all)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read placement {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("layers"), list):
        out = [layer.get("placement") if isinstance(layer, dict) else None for layer in data["layers"]]
    elif isinstance(data, dict) and "placement" in data:
        out = [data["placement"]]
    else:
        raise InvalidInputError(f"{path}: expected a plan moe --json output (layers[*].placement) or {{\"placement\"}}")
    for i, p in enumerate(out):
        if (not isinstance(p, list) or not p
                or not all(isinstance(gpu, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in gpu)
                           for gpu in p)):
            raise InvalidInputError(f"{path}: layer {i}'s placement must be a list (per GPU) of lists of expert ids")
    return out


@dataclass(frozen=True)
class MoePlacement:
    """A placement for ``analyze``: per MoE layer (or one for all), per GPU, the experts held."""

    layers: tuple[tuple[tuple[int, ...], ...], ...]
    source: str = ""

    @property
    def gpus(self) -> int:
        return len(self.layers[0])

    def layer(self, i: int) -> tuple[tuple[int, ...], ...]:
        return self.layers[i if len(self.layers) > 1 else 0]

    def check(self, num_experts: int, num_moe_layers: int, ep: int) -> "MoePlacement":
        """:class:`InvalidInputError` unless it fits ``ep`` GPUs, the layers and the experts."""
        where = f"placement {self.source}" if self.source else "placement"
        if any(len(p) != ep for p in self.layers):
            bad = next(len(p) for p in self.layers if len(p) != ep)
            raise InvalidInputError(f"{where} is for {bad} GPUs but ep={ep}")
        if len(self.layers) not in (1, num_moe_layers):
            raise InvalidInputError(f"{where} has {len(self.layers)} layers but the model has {num_moe_layers} MoE "
                                    "layers (give one per MoE layer, or one for all)")
        for i, p in enumerate(self.layers):
            try:
                share_matrix(p, num_experts)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{where}, layer {i}: {exc}") from None
        return self


def as_moe_placement(value) -> MoePlacement | None:
    """None, a :class:`MoePlacement`, a path to a ``plan moe --json`` file (:func:`read_placement`), or the
    per-layer lists themselves."""
    if value is None or isinstance(value, MoePlacement):
        return value
    if isinstance(value, (str, Path)):
        layers, src = read_placement(value), str(value)
    elif isinstance(value, (list, tuple)):
        layers, src = value, ""
    else:
        raise InvalidInputError(f"moe_placement must be a path or per-layer, per-GPU expert lists, got {value!r}")
    try:
        out = tuple(tuple(tuple(int(e) for e in gpu) for gpu in layer) for layer in layers)
    except (TypeError, ValueError):
        raise InvalidInputError("moe_placement must be per layer, per GPU, lists of expert ids") from None
    if not out or any(not layer for layer in out):
        raise InvalidInputError("moe_placement is empty")
    return MoePlacement(out, src)
