"""Expert placements people use today, and the metrics every placement is scored by.

A placement of one layer is a tuple of ``G`` tuples: the expert ids each GPU
holds (its replicas).  An expert held by ``r`` GPUs has its load split evenly,
``w_e / r`` on each (the EPLB scoring rule, deepseek-ai/EPLB README).

Baselines (shared/reference/planners.md section 5):

- contiguous: rank ``g`` holds experts ``[g E/G, (g+1) E/G)`` (Megatron-LM, vLLM ``linear``);
- round-robin: rank ``g`` holds ``g, g+G, g+2G, ...`` (vLLM ``round_robin``);
- greedy LPT: experts by decreasing load into the least-loaded GPU with a free slot;
- EPLB-style hierarchical: pack expert groups onto nodes, replicate the expert
  with the largest ``w / count`` into each node's spare slots, pack the replicas
  onto the node's GPUs (our own implementation of the published algorithm; it
  never puts two replicas of one expert on one GPU).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

Placement = tuple[tuple[int, ...], ...]


def replica_counts(placement: Placement, num_experts: int) -> np.ndarray:
    """How many GPUs hold each expert."""
    cnt = np.zeros(num_experts, dtype=np.int64)
    for gpu in placement:
        for e in gpu:
            cnt[e] += 1
    return cnt


def gpu_loads(placement: Placement, loads: np.ndarray) -> np.ndarray:
    """Per-GPU load, tokens: each replica carries ``w_e / r_e``."""
    cnt = replica_counts(placement, len(loads))
    share = np.where(cnt > 0, loads / np.maximum(cnt, 1), 0.0)
    return np.array([float(sum(share[e] for e in gpu)) for gpu in placement])


def share_matrix(placement: Placement, num_experts: int) -> np.ndarray:
    """``A[e, g]``: the fraction of expert ``e``'s tokens served on GPU ``g`` (1/r_e or 0)."""
    cnt = replica_counts(placement, num_experts)
    a = np.zeros((num_experts, len(placement)))
    for g, gpu in enumerate(placement):
        for e in gpu:
            a[e, g] += 1.0 / cnt[e]
    return a


def check_placement(placement: Placement, num_experts: int, slots_per_gpu: int) -> None:
    """Raise AssertionError unless every expert is placed and no GPU exceeds its slots."""
    cnt = replica_counts(placement, num_experts)
    assert (cnt >= 1).all(), f"experts not placed: {np.flatnonzero(cnt == 0).tolist()}"
    for g, gpu in enumerate(placement):
        assert len(gpu) <= slots_per_gpu, f"GPU {g} holds {len(gpu)} > {slots_per_gpu} slots"
        assert len(set(gpu)) == len(gpu), f"GPU {g} holds an expert twice"


def contiguous(num_experts: int, gpus: int) -> Placement:
    """Blocks of consecutive experts (the first ``E mod G`` GPUs get one more)."""
    base, extra = divmod(num_experts, gpus)
    out, start = [], 0
    for g in range(gpus):
        n = base + (1 if g < extra else 0)
        out.append(tuple(range(start, start + n)))
        start += n
    return tuple(out)


def round_robin(num_experts: int, gpus: int) -> Placement:
    return tuple(tuple(range(g, num_experts, gpus)) for g in range(gpus))


def _pack(
    items: Sequence[tuple[float, int]], bins: int, cap: int, base: np.ndarray | None = None
) -> list[list[int]]:
    """Items ``(weight, id)`` by decreasing weight into the lightest bin with room that lacks the id.

    Falls back to dropping an item that only fits a bin already holding it
    (possible only for a replica of an expert that is then simply one replica short).
    """
    load = np.zeros(bins) if base is None else base.astype(float).copy()
    out: list[list[int]] = [[] for _ in range(bins)]
    for w, e in sorted(items, key=lambda t: (-t[0], t[1])):
        best = -1
        for b in np.argsort(load, kind="stable"):
            if len(out[b]) < cap and e not in out[b]:
                best = int(b)
                break
        if best < 0:
            continue
        out[best].append(e)
        load[best] += w
    return out


def greedy_lpt(loads: np.ndarray, gpus: int, slots_per_gpu: int) -> Placement:
    """Longest processing time first, one replica per expert, at most ``slots_per_gpu`` per GPU."""
    packed = _pack([(float(w), e) for e, w in enumerate(loads)], gpus, slots_per_gpu)
    return tuple(tuple(sorted(b)) for b in packed)


def replicate(loads: np.ndarray, replicas: int, max_per_expert: int) -> np.ndarray:
    """EPLB's rule: start at one replica each, then add one to the expert with the largest ``w / count``."""
    cnt = np.ones(len(loads), dtype=np.int64)
    heap = [(-float(w), e) for e, w in enumerate(loads)]
    heapq.heapify(heap)
    for _ in range(replicas - len(loads)):
        while heap:
            _, e = heapq.heappop(heap)
            if cnt[e] < max_per_expert:
                break
        else:
            break
        cnt[e] += 1
        heapq.heappush(heap, (-float(loads[e]) / cnt[e], e))
    return cnt


def greedy_replicated(loads: np.ndarray, gpus: int, slots_per_gpu: int) -> Placement:
    """EPLB's global policy: replicate into every spare slot, then LPT-pack the replicas."""
    cnt = replicate(loads, gpus * slots_per_gpu, gpus)
    items = [(float(loads[e]) / cnt[e], e) for e in range(len(loads)) for _ in range(cnt[e])]
    return tuple(tuple(sorted(b)) for b in _pack(items, gpus, slots_per_gpu))


def eplb_hierarchical(
    loads: np.ndarray, gpus: int, slots_per_gpu: int, nodes: int = 1, groups: int | None = None
) -> Placement:
    """EPLB-style hierarchical balancing (groups to nodes, replicate in node, pack in node).

    ``groups`` consecutive expert groups (default: one per node); when the
    experts or groups do not divide evenly it uses the global policy, as EPLB does.
    """
    num_experts = len(loads)
    groups = nodes if groups is None else groups
    if nodes <= 1 or groups % nodes or num_experts % groups or gpus % nodes:
        return greedy_replicated(loads, gpus, slots_per_gpu)
    per_group = num_experts // groups
    group_w = [(float(loads[g * per_group : (g + 1) * per_group].sum()), g) for g in range(groups)]
    node_groups = _pack(group_w, nodes, groups // nodes)
    gpn = gpus // nodes
    out: list[tuple[int, ...]] = []
    for n in range(nodes):
        experts = [e for g in node_groups[n] for e in range(g * per_group, (g + 1) * per_group)]
        w = loads[experts]
        cnt = replicate(w, gpn * slots_per_gpu, gpn)
        items = [(float(w[i]) / cnt[i], experts[i]) for i in range(len(experts)) for _ in range(cnt[i])]
        out.extend(tuple(sorted(b)) for b in _pack(items, gpn, slots_per_gpu))
    return tuple(out)


def baselines(loads: np.ndarray, gpus: int, slots_per_gpu: int, nodes: int = 1) -> dict[str, Placement]:
    """Every baseline placement of one layer, by name."""
    e = len(loads)
    return {
        "contiguous": contiguous(e, gpus),
        "round_robin": round_robin(e, gpus),
        "greedy_lpt": greedy_lpt(loads, gpus, slots_per_gpu),
        "eplb_hierarchical": eplb_hierarchical(loads, gpus, slots_per_gpu, nodes),
        "greedy_replicated": greedy_replicated(loads, gpus, slots_per_gpu),
    }


def load_lower_bound(loads: np.ndarray, gpus: int, slots_per_gpu: int) -> float:
    """A valid lower bound of the max GPU load over all placements.

    ``max(sum w / G, max_e w_e / min(G, 1 + spare))`` where ``spare = G S - E``;
    with no spare slots the pigeonhole bound ``w_(G) + w_(G+1)`` (sorted
    decreasing) applies as well when ``E > G``.
    """
    w = np.sort(np.asarray(loads, dtype=float))[::-1]
    spare = gpus * slots_per_gpu - len(w)
    lb = max(float(w.sum()) / gpus, float(w[0]) / min(gpus, 1 + spare) if len(w) else 0.0)
    if spare == 0 and len(w) > gpus:
        lb = max(lb, float(w[gpus - 1] + w[gpus]))
    return lb
