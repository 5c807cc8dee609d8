"""The MoE dispatch and combine all-to-all of one layer, priced from its GPU-to-GPU traffic matrix.

A placement (per GPU, the experts whose replicas it holds) and the layer's routed token copies per expert
``w_e`` imply the matrix ``T[s, g]``: token copies that source GPU ``s`` sends to GPU ``g``.  Copies pick a
replica of expert ``e`` evenly, ``A[e, g] = 1 / r_e`` where ``g`` holds one of ``e``'s ``r_e`` replicas, and
leave from the source shares ``src[e, s]`` (copies of ``e`` that start on GPU ``s``), so
``T[s, g] = sum_e src[e, s] A[e, g]``.  The diagonal stays on the GPU.

Without inter-layer affinity the tokens sit evenly on the ``G`` source GPUs (data-parallel attention):
``src[e, s] = w_e / G``.  With it (ExFlow, arXiv 2401.08383: consecutive layers' experts are correlated,
and a token stays on the GPU where its previous expert ran) the copies of layer ``l + 1``'s expert ``e2``
leave from the GPUs of layer ``l``'s experts by the transitions ``X_l[e1, e2]`` (copies to ``e2`` whose
token's layer-``l`` expert was ``e1``, :func:`routed_transitions` from a trace, :func:`synthetic_transitions`
from one affinity share): ``src[e2, s] = sum_e1 X_l[e1, e2] A_l[e1, s] + (w_e2 - sum_e1 X_l[e1, e2]) / G``,
the rest evenly.  The first MoE layer's tokens sit evenly.  Cross-node bytes then follow the placement:
co-locating affine experts of consecutive layers keeps their tokens on the GPU.

Each GPU moves its bytes over each link class at once: to and from peers in its node over the intra-node
fabric, to and from other nodes over its own NIC (the links of :mod:`perfmodel.comm`:
:func:`~perfmodel.costs.collectives.path_rate` for the all-to-all class, the same bandwidth, ramp, knee and latency as
:func:`~perfmodel.costs.collectives.collective_time`).  A class costs ``bytes / bandwidth + steps * alpha`` with one step
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
from typing import Any, Sequence

import numpy as np

from perfmodel.calibration import OpClass, Profile
from perfmodel.comm import NVLINK_KINDS, Topology
from perfmodel.costs.collectives import AllReduceAlgorithm, _flat, path_rate
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


def traffic_matrix(
    placement: Placement,
    loads: Sequence[float],
    prev_placement: Placement | None = None,
    transition: np.ndarray | None = None,
) -> np.ndarray:
    """``T[s, g]``, token copies from source GPU ``s`` to GPU ``g``.

    Parameters
    ----------
    placement : per GPU, the experts held (this layer)
    loads : array [E], token copies
        Copies routed to each expert of this layer.
    prev_placement : per GPU, the experts held in the previous MoE layer, or None
    transition : array [E, E], token copies, or None
        ``X[e1, e2]``: copies to this layer's ``e2`` that leave from where the previous layer's ``e1`` ran
        (columns sum to at most ``loads``; the rest leave evenly).  None (or no ``prev_placement``): every
        copy leaves evenly from the ``G`` GPUs.

    Returns
    -------
    ndarray [G, G], token copies
    """
    w = np.asarray(loads, dtype=np.float64)
    g = len(placement)
    a = share_matrix(placement, len(w))
    if transition is None or prev_placement is None:
        return np.tile(w @ a / g, (g, 1))
    x = np.asarray(transition, dtype=np.float64)
    if x.shape != (len(w), len(w)) or len(prev_placement) != g:
        raise InvalidInputError(
            f"a transition is [{len(w)}][{len(w)}] between placements of {g} GPUs, got "
            f"{list(x.shape)} and {len(prev_placement)} GPUs"
        )
    rest = np.maximum(w - x.sum(axis=0), 0.0)
    src = x.T @ share_matrix(prev_placement, len(w)) + rest[:, None] / g  # [E, G]
    return src.T @ a


def routed_transitions(pairs: np.ndarray, loads: np.ndarray) -> np.ndarray:
    """Transitions ``X[l][e1, e2]`` (:func:`traffic_matrix`) from a trace's pair counts ``R[l][e1][e2]``.

    ``R[l][e1][e2]`` counts tokens routed to ``e1`` in layer ``l`` and to ``e2`` in ``l + 1`` (each pair
    once, so top-k counts a copy to ``e2`` up to k times).  Each column is scaled to the copies of ``e2``
    (``loads[l + 1][e2]``): a copy leaves from one of its token's layer-``l`` experts, picked in
    proportion to the pairs; a column without pairs leaves evenly.

    Parameters
    ----------
    pairs : array [L - 1, E, E], tokens
    loads : array [L, E], token copies

    Returns
    -------
    ndarray [L - 1, E, E], token copies
    """
    r = np.asarray(pairs, dtype=np.float64)
    w = np.asarray(loads, dtype=np.float64)
    col = r.sum(axis=1, keepdims=True)  # [L-1, 1, E]
    return np.where(col > 0, r / np.where(col > 0, col, 1.0), 0.0) * w[1:, None, :]


def synthetic_transitions(loads: np.ndarray, affinity: float) -> np.ndarray:
    """Transitions (:func:`traffic_matrix`) with one affinity share: of the copies to expert ``e`` in layer
    ``l + 1``, the share ``affinity`` leaves from where expert ``e`` of layer ``l`` ran (experts numbered
    so that affine pairs share an id), the rest evenly from every GPU.  0 is the even model.

    Parameters
    ----------
    loads : array [L, E], token copies
    affinity : float in [0, 1]

    Returns
    -------
    ndarray [L - 1, E, E], token copies
    """
    if not (isinstance(affinity, (int, float)) and 0.0 <= float(affinity) <= 1.0):
        raise InvalidInputError(f"an affinity share is in [0, 1], got {affinity!r}")
    w = np.asarray(loads, dtype=np.float64)
    return (
        np.stack([np.diag(float(affinity) * w[l + 1]) for l in range(w.shape[0] - 1)])
        if len(w) > 1
        else np.zeros((0, w.shape[1], w.shape[1]))
    )


def plan_traffic(
    placements: Sequence[Placement], loads: np.ndarray, transitions: np.ndarray | None = None
) -> list[np.ndarray]:
    """Per MoE layer, :func:`traffic_matrix`: the first layer's tokens evenly on the GPUs, each later
    layer's from the previous placement by ``transitions[l - 1]`` (None: evenly).

    Parameters
    ----------
    placements : per layer, per GPU, the experts held
    loads : array [L, E], token copies
    transitions : array [L - 1, E, E], token copies, or None

    Returns
    -------
    list of ndarray [G, G], token copies
    """
    w = np.asarray(loads, dtype=np.float64)
    return [
        traffic_matrix(
            p,
            w[l],
            placements[l - 1] if l and transitions is not None else None,
            transitions[l - 1] if l and transitions is not None else None,
        )
        for l, p in enumerate(placements)
    ]


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
        raise InvalidInputError(
            f"{t.shape[0]} GPUs span nodes of {topo.gpus_per_node} but {topo.name} has no NIC"
        )
    return t


def _classes(t: np.ndarray, topo: Topology) -> tuple[np.ndarray, ...]:
    """Per GPU and direction (sends of GPU 0..G-1, then receives): bytes and peers reached inside its node,
    bytes and nodes reached outside it."""
    g = t.shape[0]
    node = _node_of(g, topo.gpus_per_node)
    same = node[:, None] == node[None, :]
    off = ~np.eye(g, dtype=bool)
    b_in, p_in, b_out, p_out = [], [], [], []
    for m in (t, t.T):
        for s in range(g):
            row = m[s]
            in_mask = same[s] & off[s]
            b_in.append(float(row[in_mask].sum()))
            p_in.append(int(np.count_nonzero(row[in_mask] > 0)))
            b_out.append(float(row[~same[s]].sum()))
            p_out.append(len(set(node[~same[s]][row[~same[s]] > 0].tolist())))
    return np.asarray(b_in), np.asarray(p_in), np.asarray(b_out), np.asarray(p_out)


def _class_s(nbytes: np.ndarray, peers: np.ndarray, rate) -> np.ndarray:
    """One link class of each GPU: ``bytes / bandwidth + peers * alpha`` less the calibrated overlap (arrays
    of bytes, peers broadcast with them; 0 without bytes or without the link)."""
    if rate is None:
        return np.zeros_like(nbytes)
    b = np.maximum(nbytes, 0.0)
    t = np.asarray(
        _flat(OpKind.SEND_RECV, b, 2, rate, AllReduceAlgorithm.RING).comm_s, dtype=np.float64
    )  # factor 1
    lat = peers * rate.alpha_s
    return np.where(b > 0, t + lat - rate.overlap * np.minimum(t, lat), 0.0)


def _per_gpu_s(t: np.ndarray, scale: Any, topo: Topology, profile: Profile) -> np.ndarray:
    """[..., 2G] seconds of each GPU and direction for ``t * scale`` (the slower of its two link classes)."""
    intra, inter = _rates(topo, profile)
    b_in, p_in, b_out, p_out = _classes(t, topo)
    sc = np.asarray(scale, dtype=np.float64)[..., None]
    return np.maximum(_class_s(sc * b_in, p_in, intra), _class_s(sc * b_out, p_out, inter))


def route_time(traffic_bytes: np.ndarray, topo: Topology, profile: Profile) -> RouteTime:
    """Price one all-to-all whose ``traffic_bytes[s, g]`` bytes go from GPU ``s`` to GPU ``g``.

    GPUs are numbered node by node (``topo.gpus_per_node`` to a node).
    """
    t = _check(traffic_bytes, topo)
    g = t.shape[0]
    node = _node_of(g, topo.gpus_per_node)
    same = node[:, None] == node[None, :]
    off = ~np.eye(g, dtype=bool)
    per = _per_gpu_s(t, 1.0, topo, profile)
    k = int(np.argmax(per)) if per.size else 0
    worst = float(per[k]) if per.size else 0.0
    return RouteTime(
        worst,
        k % g if g else 0,
        float(t[same & off].sum()),
        float(t[~same].sum()),
        busiest_gpu_bound_s(t, topo, profile),
    )


def route_seconds(traffic: np.ndarray, scale: Any, topo: Topology, profile: Profile) -> Any:
    """:func:`route_time`'s seconds of ``traffic * scale`` for each value of ``scale`` (bytes per unit of
    ``traffic``; a number or an array, the result has its shape): the traffic's pattern is read once.

    Parameters
    ----------
    traffic : array [G, G]
        The traffic's pattern (e.g. token copies).
    scale : float or array, bytes per unit of ``traffic``
    topo, profile : the links (:func:`route_time`)

    Returns
    -------
    float or ndarray, seconds
    """
    t = _check(traffic, topo)
    per = _per_gpu_s(t, scale, topo, profile)
    out = per.max(axis=-1) if per.shape[-1] else np.zeros(np.shape(scale))
    return out if np.ndim(scale) else float(out)


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


def layer_route_time(
    placement: Placement, loads: Sequence[float], bytes_per_token: float, topo: Topology, profile: Profile
) -> RouteTime:
    """The dispatch all-to-all of one MoE layer: ``loads[e]`` token copies routed to expert ``e``."""
    return route_time(traffic_matrix(placement, loads) * bytes_per_token, topo, profile)


def _read_json(path: str | Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read placement {path}: {exc}") from None


def read_placement(path: str | Path) -> list[list[list[int]]]:
    """Per layer, per GPU, the experts held, from a ``plan moe --json`` file (``layers[*].placement``)
    or ``{"placement": [[...] per GPU]}`` (one layer for all); ``PLAN.json:NAME`` reads the file's baseline
    ``NAME`` (:func:`split_plan_path`)."""
    path, name = split_plan_path(path)
    return _placements(_select(_read_json(path), path, name), path)


def split_plan_path(value: str | Path) -> tuple[Path, str | None]:
    """``(file, baseline name or None)`` of ``PLAN.json`` or ``PLAN.json:NAME``: the name after the last colon
    when the whole text is not an existing file; ``NAME`` ``plan`` is the plan itself (None)."""
    text = str(value)
    if not Path(text).is_file() and ":" in text:
        head, name = text.rsplit(":", 1)
        if head and name and "/" not in name and "\\" not in name:
            return Path(head), (None if name == "plan" else name)
    return Path(text), None


def _select(data, path, name: str | None):
    """The plan file ``data`` itself (``name`` None) or its baseline ``name`` (``baselines[name]``, whose
    ``layers`` carry their ``placement``, ``loads`` and, with inter-layer token sources, ``traffic``)."""
    if name is None:
        return data
    base = data.get("baselines") if isinstance(data, dict) else None
    if not isinstance(base, dict) or not base:
        raise InvalidInputError(
            f"{path}: no baselines to pick {name!r} from (expected a plan moe --json output)"
        )
    if name not in base:
        raise InvalidInputError(f"{path} has no baseline {name!r}; it has plan, {', '.join(base)}")
    chosen = base[name]
    layers = chosen.get("layers") if isinstance(chosen, dict) else None
    if not isinstance(layers, list) or not all(isinstance(x, dict) and "placement" in x for x in layers):
        raise InvalidInputError(
            f"{path}: baseline {name!r} lists no placements (written by an older plan moe; run it again)"
        )
    return chosen


def _placements(data, path) -> list:
    if isinstance(data, dict) and isinstance(data.get("layers"), list):
        out = [layer.get("placement") if isinstance(layer, dict) else None for layer in data["layers"]]
    elif isinstance(data, dict) and "placement" in data:
        out = [data["placement"]]
    else:
        raise InvalidInputError(
            f'{path}: expected a plan moe --json output (layers[*].placement) or {{"placement"}}'
        )
    for i, p in enumerate(out):
        if (
            not isinstance(p, list)
            or not p
            or not all(
                isinstance(gpu, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in gpu)
                for gpu in p
            )
        ):
            raise InvalidInputError(
                f"{path}: layer {i}'s placement must be a list (per GPU) of lists of expert ids"
            )
    return out


def _optional_tables(data, key: str, path, ndim: int):
    """``layers[*][key]`` of a plan file as float arrays of ``ndim`` dimensions, or None when no layer has it."""
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list) or not any(isinstance(x, dict) and key in x for x in layers):
        top = data.get(key) if isinstance(data, dict) else None
        layers = None if top is None else [{key: top}]
        if layers is None:
            return None
    out = []
    for i, layer in enumerate(layers):
        try:
            a = np.asarray(layer[key], dtype=np.float64)
        except (TypeError, ValueError, KeyError):
            raise InvalidInputError(f"{path}: layer {i}'s {key} must be numbers") from None
        if a.ndim != ndim or not np.isfinite(a).all() or (a < 0).any() or a.sum() <= 0:
            raise InvalidInputError(
                f"{path}: layer {i}'s {key} must be a {ndim}-d table of finite numbers >= 0, not all zero"
            )
        out.append(tuple(map(tuple, a)) if ndim == 2 else tuple(a.tolist()))
    return tuple(out)


@dataclass(frozen=True)
class MoePlacement:
    """A placement for ``analyze``: per MoE layer (or one for all), per GPU, the experts held.

    ``loads`` (per layer, token copies per expert; a ``plan moe --json`` file's ``layers[*].loads``) replace
    the scenario's expert load for that layer, and ``traffic`` (per layer, ``[G][G]`` token copies from GPU
    to GPU, ``layers[*].traffic``, e.g. with the token sources of inter-layer affinity) gives the shape of
    its all-to-all; either may be None.
    """

    layers: tuple[tuple[tuple[int, ...], ...], ...]
    source: str = ""
    loads: tuple[tuple[float, ...], ...] | None = None
    traffic: tuple[tuple[tuple[float, ...], ...], ...] | None = None

    @property
    def gpus(self) -> int:
        return len(self.layers[0])

    def layer(self, i: int) -> tuple[tuple[int, ...], ...]:
        return self.layers[i if len(self.layers) > 1 else 0]

    def layer_loads(self, i: int) -> np.ndarray | None:
        """Layer ``i``'s copies per expert, or None."""
        return None if self.loads is None else np.asarray(self.loads[i if len(self.loads) > 1 else 0])

    def layer_traffic(self, i: int) -> np.ndarray | None:
        """Layer ``i``'s ``[G, G]`` traffic pattern, or None."""
        return None if self.traffic is None else np.asarray(self.traffic[i if len(self.traffic) > 1 else 0])

    def check(self, num_experts: int, num_moe_layers: int, ep: int) -> "MoePlacement":
        """:class:`InvalidInputError` unless it fits ``ep`` GPUs, the layers and the experts."""
        where = f"placement {self.source}" if self.source else "placement"
        if any(len(p) != ep for p in self.layers):
            bad = next(len(p) for p in self.layers if len(p) != ep)
            raise InvalidInputError(f"{where} is for {bad} GPUs but ep={ep}")
        if len(self.layers) not in (1, num_moe_layers):
            raise InvalidInputError(
                f"{where} has {len(self.layers)} layers but the model has {num_moe_layers} MoE "
                "layers (give one per MoE layer, or one for all)"
            )
        for i, p in enumerate(self.layers):
            try:
                share_matrix(p, num_experts)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{where}, layer {i}: {exc}") from None
        for name, tables, shape in (
            ("loads", self.loads, (num_experts,)),
            ("traffic", self.traffic, (ep, ep)),
        ):
            if tables is None:
                continue
            if len(tables) not in (1, len(self.layers), num_moe_layers):
                raise InvalidInputError(
                    f"{where} has {len(tables)} layers of {name} for {len(self.layers)} placements"
                )
            bad = [i for i, t in enumerate(tables) if np.shape(t) != shape]
            if bad:
                raise InvalidInputError(
                    f"{where}, layer {bad[0]}: {name} must have shape {list(shape)}, "
                    f"got {list(np.shape(tables[bad[0]]))}"
                )
        return self


def as_moe_placement(value) -> MoePlacement | None:
    """None, a :class:`MoePlacement`, a path to a ``plan moe --json`` file (:func:`read_placement`; its
    ``layers[*].loads`` and ``layers[*].traffic`` too; ``PLAN.json:NAME`` for its baseline ``NAME``, e.g.
    ``plan.json:contiguous``), or the per-layer lists themselves."""
    if value is None or isinstance(value, MoePlacement):
        return value
    if isinstance(value, (str, Path)):
        path, name = split_plan_path(value)
        return placement_from_plan(_read_json(path), name, str(value), path)
    if not isinstance(value, (list, tuple)):
        raise InvalidInputError(
            f"moe_placement must be a path or per-layer, per-GPU expert lists, got {value!r}"
        )
    return _make(value, "", None, None)


def placement_from_plan(data, name: str | None = None, source: str = "", path=None) -> MoePlacement:
    """The :class:`MoePlacement` of a ``plan moe --json`` output already read (``data``): the plan's
    (``name`` None or ``"plan"``) or its baseline ``name``'s, with the layers' ``loads`` and ``traffic``.
    ``source`` names it in messages; ``path`` (default ``source``) in errors about the data."""
    where = path if path is not None else (source or "plan")
    data = _select(data, where, None if name == "plan" else name)
    return _make(
        _placements(data, where),
        source,
        _optional_tables(data, "loads", where, 1),
        _optional_tables(data, "traffic", where, 2),
    )


def _make(layers, src: str, loads, traffic) -> MoePlacement:
    try:
        out = tuple(tuple(tuple(int(e) for e in gpu) for gpu in layer) for layer in layers)
    except (TypeError, ValueError):
        raise InvalidInputError("moe_placement must be per layer, per GPU, lists of expert ids") from None
    if not out or any(not layer for layer in out):
        raise InvalidInputError("moe_placement is empty")
    return MoePlacement(out, src, loads, traffic)
