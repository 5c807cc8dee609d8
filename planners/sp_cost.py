"""Per-sequence prefill time ``t_i(d)`` and per-GPU memory on a sequence-parallel group of ``d`` GPUs.

``t(s, d) = prefill(s) / d + comm(kind, s, d)``: the prefill of one ``s``-token
sequence (the core's :func:`perfmodel.phases.prefill_cost`, one pass, with the
quadratic causal-attention term) split ``d`` ways, plus the SP communication
per layer times the layer count (forward only; planners.md section 4):

- Ulysses: all-to-all of Q, K, V before attention and of O after, per-rank
  bytes ``(s/d)(2 h_q + 2 h_kv') b`` with K/V heads replicated when ``d > n_kv``
  (``h_kv' = max(n_kv, d) d_head``); ``d`` must divide the query heads.
- Ring: ``d - 1`` point-to-point steps of one K/V block ``(s/d) 2 h_kv b``,
  hidden behind the attention of the device's share (zig-zag balanced);
  only the excess shows.
- Hybrid (USP): Ulysses over ``u`` = the largest power of two dividing the
  query heads with ``u <= min(d, n_kv)``, ring over ``r = d / u`` with blocks
  ``(s/r) 2 (h_kv/u) b``.

Collective times come from :func:`perfmodel.comm.collective_time` over the system
``topology`` describes (hierarchical across its nodes; a group never spans more GPUs than it
has, :meth:`SpCostModel.degree_ok`).  Without one, a group of up to
:data:`perfmodel.comm.DEFAULT_NODE_GPUS` GPUs sits in one node of the GPU's own fabric and a larger
one spans nodes of the GPU's shipped cluster (:func:`perfmodel.comm.scaled_cluster`: its node's
fabric, its per-GPU NIC between nodes); a GPU without a shipped cluster gets groups of one node at
most.  Never a large group priced as one NVLink node.  Memory: a sequence keeps its KV cache resident, ``s / d``
tokens per GPU (Ulysses beyond ``n_kv``: ``d / n_kv`` times more); the
capacity is the core's :func:`perfmodel.phases.memory_budget` with the
weights replicated on every GPU and one 8192-token prefill workspace.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from hw.spec import GPU
from perfmodel.calibration import Profile
from perfmodel.comm import DEFAULT_NODE_GPUS, collective_time, resolve_topology, scaled_cluster
from perfmodel.costs import op_cost
from perfmodel.layers import Precision
from perfmodel.models import ModelSpec
from perfmodel.ops import Attention, OpKind, Phase
from perfmodel.phases import DEFAULT_PREFILL_CHUNK_TOKENS, memory_budget, prefill_cost
from planners.errors import InfeasibleError


class SpKind(str, enum.Enum):
    ULYSSES = "ulysses"
    RING = "ring"
    HYBRID = "hybrid"


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, int(n)).bit_length() - 1)


@dataclass(frozen=True)
class SpCostModel:
    """Everything ``t_i(d)`` needs; pure functions of it below."""

    model: ModelSpec
    gpu: GPU
    profile: Profile
    kind: SpKind = SpKind.ULYSSES
    precision: Precision = Precision()
    topology: str | None = None  # a system of hw/data/systems; None: one node of the GPU's own fabric

    @classmethod
    def from_scenario(cls, scenario, kind: "SpKind | str | None" = None) -> "SpCostModel":
        """The cost model of a checked :class:`perfmodel.scenario.Scenario`: its model, GPU, profile,
        precision and topology (``kind``: its ``sp_kind`` unless given)."""
        return cls(scenario.model, scenario.gpu, scenario.profile, SpKind(kind or scenario.layout.sp_kind),
                   scenario.priced_precision, scenario.layout.topology)

    @property
    def max_degree(self) -> float:
        """GPUs the largest SP group may span: the system's; without one, any number of nodes of the GPU's
        shipped cluster, or one default node when it has none."""
        if self.topology is not None:
            return resolve_topology(self.topology, self.gpu, 1).world_size
        return math.inf if scaled_cluster(self.gpu, 2 * DEFAULT_NODE_GPUS) is not None else DEFAULT_NODE_GPUS

    def _topology(self, world: int):
        if self.topology is not None or world <= DEFAULT_NODE_GPUS:
            return self.topology
        return scaled_cluster(self.gpu, world)

    def degree_ok(self, d: int) -> bool:
        """``d`` GPUs fit the system (or one default node); Ulysses splits query heads: ``d`` must divide them."""
        if d > self.max_degree:
            return False
        return d == 1 or self.kind is not SpKind.ULYSSES or self.model.q_heads % d == 0

    def ulysses_degree(self, d: int) -> int:
        if self.kind is SpKind.ULYSSES:
            return d
        if self.kind is SpKind.RING:
            return 1
        u = _pow2_floor(min(d, self.model.kv_heads))
        while u > 1 and self.model.q_heads % u:
            u //= 2
        return u

    def compute_s(self, lengths) -> np.ndarray:
        """Whole-sequence prefill time on one GPU, seconds."""
        s = np.asarray(lengths, dtype=np.float64)
        return np.asarray(prefill_cost(self.model, self.gpu, self.profile, s, 1, self.precision, 1,
                                       chunk_tokens=None).total_s, dtype=np.float64) * np.ones_like(s)

    def _attention_s(self, s: np.ndarray) -> np.ndarray:
        m = self.model
        op = Attention(Phase.PREFILL, 1, s, s, m.q_heads, m.kv_heads, m.head_dim, True, self.precision.activations,
                       window=m.sliding_window, kv_dtype=self.precision.kv)
        return np.asarray(op_cost(op, self.gpu, self.profile).total_s, dtype=np.float64) * np.ones_like(s)

    def _coll_s(self, kind: OpKind, nbytes: np.ndarray, world: int) -> np.ndarray:
        if world <= 1:
            return np.zeros_like(nbytes)
        c = collective_time(kind, nbytes, world, self.gpu, self.profile, self._topology(world))
        return np.asarray(c.total_s, dtype=np.float64) * np.ones_like(nbytes)

    def comm_s(self, lengths, d: int) -> np.ndarray:
        """Exposed SP communication of the whole prefill (all layers), seconds."""
        m = self.model
        s = np.asarray(lengths, dtype=np.float64)
        if d <= 1:
            return np.zeros_like(s)
        b = self.precision.activations.bytes_per_element
        hd, nq, nkv = m.head_dim, m.q_heads, m.kv_heads
        u = self.ulysses_degree(d)
        r = d // u
        per_layer = np.zeros_like(s)
        if u > 1:
            kv_eff = max(nkv, u)
            per_layer += self._coll_s(OpKind.ALL_TO_ALL, (s / d) * (nq + 2 * kv_eff) * hd * b, u)
            per_layer += self._coll_s(OpKind.ALL_TO_ALL, (s / d) * nq * hd * b, u)
        if r > 1:
            block = (s / r) * 2 * max(1.0, nkv / u) * hd * b
            ring = (r - 1) * self._coll_s(OpKind.SEND_RECV, block, r)
            attn = self._attention_s(s) / d
            per_layer += np.maximum(0.0, ring - attn)  # ring steps hide behind the attention
        return per_layer * m.num_layers

    def time_s(self, lengths, d: int) -> np.ndarray:
        """``t_i(d)``: prefill of each sequence on a group of ``d`` GPUs, seconds."""
        return self.compute_s(lengths) / d + self.comm_s(lengths, d)

    def mem_tokens(self, lengths, d: int) -> np.ndarray:
        """Per-GPU KV footprint of each sequence at degree ``d``, in tokens of full KV."""
        s = np.asarray(lengths, dtype=np.float64)
        rep = max(1.0, self.ulysses_degree(d) / self.model.kv_heads) if self.kind is not SpKind.RING else 1.0
        return s * rep / d

    def capacity_tokens(self) -> float:
        """KV tokens one GPU holds beside replicated weights, a prefill workspace and the reserve."""
        mb = memory_budget(self.model, self.gpu, DEFAULT_PREFILL_CHUNK_TOKENS, 0, self.precision, 1)
        if mb.free_for_kv_bytes <= 0:
            raise InfeasibleError(
                f"{self.model.name} does not fit on one {self.gpu.name}: weights {mb.weight_bytes / 2**30:.1f} GiB "
                f"+ workspace exceed {mb.capacity_bytes / 2**30:.1f} GiB (sequence parallelism replicates weights)")
        return float(mb.free_for_kv_bytes / mb.kv_bytes_per_token)
