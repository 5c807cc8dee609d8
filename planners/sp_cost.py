"""Per-sequence prefill time ``t_i(d)`` and per-GPU memory on a sequence-parallel group of ``d`` GPUs.

``t(s, d) = linear(s / d) + attention(s) / d + comm(kind, s, d)``: each GPU of
the group runs the non-attention layers on its ``s / d`` tokens, reading all
the weights (the core's :func:`perfmodel.phases.prefill_cost` of ``s / d``
tokens, one pass, less its attention; a short prompt on a large group so meets
the weight-read floor), and a ``1 / d`` share of the causal attention over the
whole sequence; plus the SP communication per layer times the layer count
(forward only; planners.md section 4):

- Ulysses: all-to-all of Q, K, V before attention and of O after, per-rank
  bytes ``(s/d)(2 h_q + 2 h_kv') b`` with K/V heads replicated when ``d > n_kv``
  (``h_kv' = max(n_kv, d) d_head``); ``d`` must divide the query heads.
- Ring: ``d - 1`` point-to-point steps of one K/V block ``(s/d) 2 h_kv b``,
  hidden behind the attention of the device's share (zig-zag balanced);
  only the excess shows.
- Hybrid (USP): Ulysses over ``u`` = the largest power of two dividing the
  query heads with ``u <= min(d, n_kv)`` (and ``u <= `` GPUs per node with a
  topology), ring over ``r = d / u`` with blocks ``(s/r) 2 (h_kv/u) b``, its
  members ``u`` GPUs apart.
- TokenRing: ``d - 1`` steps, each sending a query block ``(s/d) h_q b`` on and the
  previous block's outputs (``(s/d) h_q`` values and an fp32 log-sum-exp per query
  head, :func:`perfmodel.parallel.tokenring_block_bytes`) back on the opposite
  direction of the links at once, hidden behind the attention like Ring's; the
  last outputs return after the attention, exposed.
- Auto: per sequence and degree, the fastest of the four among those with the
  smallest per-GPU KV footprint (Ulysses beyond ``n_kv`` replicates KV heads,
  so at those degrees Ring or hybrid).

Collective times come from :func:`perfmodel.costs.collectives.collective_time`, the core's
one pricing of collectives over links, over the system ``topology`` names (a
node or cluster of ``hw/data/systems`` or a YAML file): a group of ``d <=``
GPUs per node sits inside one node and uses its NVLink; a larger group takes
whole nodes, its all-to-all pays the NICs for the share bound to other nodes
and its ring steps cross a NIC (:func:`perfmodel.comm.place` and its
hierarchical forms); degrees must divide, or be multiples of, the GPUs per
node, and a group never spans more GPUs than the system has.  Without one, a
group of up to :data:`perfmodel.comm.DEFAULT_NODE_GPUS` GPUs sits in one node
of the GPU's own fabric and a larger one spans nodes of the GPU's shipped
cluster (:func:`perfmodel.comm.scaled_cluster`: its node's fabric, its per-GPU
NIC between nodes); a GPU without a shipped cluster gets groups of one node at
most.  Never a large group priced as one NVLink node.  Memory: a sequence keeps its KV cache resident, ``s / d``
tokens per GPU (Ulysses beyond ``n_kv``: ``d / n_kv`` times more); the
capacity is the core's :func:`perfmodel.phases.memory_budget` with the
weights replicated on every GPU and one 8192-token prefill workspace.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from dataclasses import dataclass

import numpy as np

from perfmodel.hw.spec import GPU
from perfmodel.calibration import Profile
from perfmodel.comm import DEFAULT_NODE_GPUS, Topology, resolve_topology, scaled_cluster
from perfmodel.costs.collectives import collective_time
from perfmodel.costs import op_cost
from perfmodel.layers import Precision
from perfmodel.models import ModelSpec
from perfmodel.ops import Attention, OpKind, Phase
from perfmodel.parallel import tokenring_block_bytes
from perfmodel.phases import DEFAULT_PREFILL_CHUNK_TOKENS, memory_budget, prefill_cost
from perfmodel.planners.errors import InfeasibleError


class SpKind(str, enum.Enum):
    ULYSSES = "ulysses"
    RING = "ring"
    HYBRID = "hybrid"
    TOKENRING = "tokenring"
    AUTO = "auto"  # per sequence and degree, the fastest of the four (smallest KV footprint first)


CONCRETE_KINDS = (SpKind.ULYSSES, SpKind.RING, SpKind.HYBRID, SpKind.TOKENRING)


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
    topology: str | Topology | None = None  # a system (name, YAML file); None: see the module docstring

    @classmethod
    def from_scenario(cls, scenario, kind: "SpKind | str | None" = None) -> "SpCostModel":
        """The cost model of a checked :class:`perfmodel.scenario.Scenario`: its model, GPU, profile,
        precision and topology (``kind``: its ``sp_kind`` unless given)."""
        return cls(
            scenario.model,
            scenario.gpu,
            scenario.profile,
            SpKind(kind or scenario.layout.sp_kind),
            scenario.priced_precision,
            scenario.layout.topology,
        )

    @functools.cached_property
    def system(self) -> Topology | None:
        """The named system, loaded once (None without one)."""
        return None if self.topology is None else resolve_topology(self.topology, self.gpu, 1)

    @property
    def max_degree(self) -> float:
        """GPUs the largest SP group may span: the system's; without one, any number of nodes of the GPU's
        shipped cluster, or one default node when it has none."""
        if self.system is not None:
            return self.system.world_size
        return math.inf if scaled_cluster(self.gpu, 2 * DEFAULT_NODE_GPUS) is not None else DEFAULT_NODE_GPUS

    @functools.cached_property
    def gpus_per_node(self) -> int | None:
        """GPUs per node where groups are priced (None: no node boundary, groups of one node at most)."""
        if self.system is not None:
            return self.system.gpus_per_node
        sc = scaled_cluster(self.gpu, 2 * DEFAULT_NODE_GPUS)
        return None if sc is None else sc.gpus_per_node

    def _topology(self, span: int):
        if self.system is not None or span <= DEFAULT_NODE_GPUS:
            return self.system
        return scaled_cluster(self.gpu, span)

    def _fits_nodes(self, d: int) -> bool:
        g = self.gpus_per_node
        return g is None or g % d == 0 or d % g == 0

    def kinds(self, d: int) -> tuple[SpKind, ...]:
        """The concrete kinds this model may use at degree ``d``."""
        cands = CONCRETE_KINDS if self.kind is SpKind.AUTO else (self.kind,)
        return tuple(k for k in cands if k is not SpKind.ULYSSES or d == 1 or self.model.q_heads % d == 0)

    def degree_ok(self, d: int) -> bool:
        """``d`` GPUs fit the system (or one default node) and take part of one node or whole nodes;
        Ulysses splits query heads: ``d`` must divide them."""
        return d <= self.max_degree and self._fits_nodes(d) and bool(self.kinds(d))

    def ulysses_degree(self, d: int, kind: SpKind | None = None) -> int:
        kind = self.kind if kind is None else SpKind(kind)
        if kind is SpKind.AUTO:
            raise ValueError("the auto kind has no single Ulysses degree; ask for a concrete kind")
        if kind is SpKind.ULYSSES:
            return d
        if kind in (SpKind.RING, SpKind.TOKENRING):
            return 1
        u = _pow2_floor(min(d, self.model.kv_heads, self.gpus_per_node or d))
        while u > 1 and self.model.q_heads % u:
            u //= 2
        return u

    def compute_s(self, lengths) -> np.ndarray:
        """Whole-sequence prefill time on one GPU, seconds, at burst clocks: a profile's sustained-clock
        slowdown depends on how long a GPU runs back to back, which is the plan's makespan for every
        GPU of a batch, not one sequence's time, so it is left out (it would scale every plan alike)."""
        s = np.asarray(lengths, dtype=np.float64)
        prof = dataclasses.replace(self.profile, sustained={}) if self.profile.sustained else self.profile
        return np.asarray(
            prefill_cost(self.model, self.gpu, prof, s, 1, self.precision, 1, chunk_tokens=None).total_s,
            dtype=np.float64,
        ) * np.ones_like(s)

    def split_compute_s(self, lengths, d: int) -> np.ndarray:
        """Per-GPU compute of each sequence on a group of ``d`` GPUs: the non-attention layers on
        ``s / d`` tokens (all weights read) plus ``1 / d`` of the attention, seconds."""
        s = np.asarray(lengths, dtype=np.float64)
        if d <= 1:
            return self.compute_s(s)
        share = s / d
        linear = np.maximum(self.compute_s(share) - self._attention_s(share) * self.model.num_layers, 0.0)
        return linear + self._attention_s(s) * self.model.num_layers / d

    def _attention_s(self, s: np.ndarray) -> np.ndarray:
        m = self.model
        op = Attention(
            Phase.PREFILL,
            1,
            s,
            s,
            m.q_heads,
            m.kv_heads,
            m.head_dim,
            True,
            self.precision.activations,
            window=m.sliding_window,
            kv_dtype=self.precision.kv,
        )
        return np.asarray(op_cost(op, self.gpu, self.profile).total_s, dtype=np.float64) * np.ones_like(s)

    def _coll_s(self, kind: OpKind, nbytes: np.ndarray, world: int, stride: int = 1) -> np.ndarray:
        if world <= 1:
            return np.zeros_like(nbytes)
        c = collective_time(
            kind, nbytes, world, self.gpu, self.profile, self._topology(world * stride), stride=stride
        )
        return np.asarray(c.total_s, dtype=np.float64) * np.ones_like(nbytes)

    def comm_s(self, lengths, d: int, kind: SpKind | None = None) -> np.ndarray:
        """Exposed SP communication of the whole prefill (all layers), seconds (``kind``: a concrete
        kind, by default the model's own; for auto, that of the kind :meth:`choose` picks)."""
        kind = self.kind if kind is None else SpKind(kind)
        if kind is SpKind.AUTO:
            return self.choose(lengths, d)[0] - self.split_compute_s(lengths, d)
        m = self.model
        s = np.asarray(lengths, dtype=np.float64)
        if d <= 1:
            return np.zeros_like(s)
        b = self.precision.activations.bytes_per_element
        hd, nq, nkv = m.head_dim, m.q_heads, m.kv_heads
        u = self.ulysses_degree(d, kind)
        r = d // u
        per_layer = np.zeros_like(s)
        if u > 1:
            kv_eff = max(nkv, u)
            per_layer += self._coll_s(OpKind.ALL_TO_ALL, (s / d) * (nq + 2 * kv_eff) * hd * b, u)
            per_layer += self._coll_s(OpKind.ALL_TO_ALL, (s / d) * nq * hd * b, u)
        if r > 1 and kind is SpKind.TOKENRING:
            q_b, o_b = tokenring_block_bytes(s / r, nq, hd, hd, b)
            out = self._coll_s(OpKind.SEND_RECV, o_b, r)
            step = np.maximum(self._coll_s(OpKind.SEND_RECV, q_b, r), out)  # both directions at once
            per_layer += np.maximum(0.0, (r - 1) * step - self._attention_s(s) / d) + out
        elif r > 1:
            block = (s / r) * 2 * max(1.0, nkv / u) * hd * b
            ring = (r - 1) * self._coll_s(OpKind.SEND_RECV, block, r, stride=u)
            attn = self._attention_s(s) / d
            per_layer += np.maximum(0.0, ring - attn)  # ring steps hide behind the attention
        return per_layer * m.num_layers

    def time_s(self, lengths, d: int) -> np.ndarray:
        """``t_i(d)``: prefill of each sequence on a group of ``d`` GPUs, seconds."""
        if self.kind is SpKind.AUTO:
            return self.choose(lengths, d)[0]
        return self.split_compute_s(lengths, d) + self.comm_s(lengths, d)

    def mem_tokens(self, lengths, d: int, kind: SpKind | None = None) -> np.ndarray:
        """Per-GPU KV footprint of each sequence at degree ``d``, in tokens of full KV."""
        kind = self.kind if kind is None else SpKind(kind)
        if kind is SpKind.AUTO:
            return self.choose(lengths, d)[1]
        s = np.asarray(lengths, dtype=np.float64)
        rep = (
            1.0
            if kind in (SpKind.RING, SpKind.TOKENRING)
            else max(1.0, self.ulysses_degree(d, kind) / self.model.kv_heads)
        )
        return s * rep / d

    def choose(self, lengths, d: int) -> tuple[np.ndarray, np.ndarray, list[SpKind]]:
        """Per sequence at degree ``d``: (time s, KV tokens per GPU, kind) of the kind used.

        A concrete model uses its kind; auto takes, among the kinds with the smallest footprint,
        the fastest (ties: Ulysses, Ring, hybrid, TokenRing in that order).
        """
        s = np.asarray(lengths, dtype=np.float64)
        kinds = self.kinds(d)
        if not kinds:
            raise ValueError(f"no SP kind of {self.kind.value!r} runs at degree {d}")
        comp = self.split_compute_s(s, d)
        t = np.stack([comp + self.comm_s(s, d, k) for k in kinds])
        mem = np.stack([self.mem_tokens(s, d, k) for k in kinds])
        smallest = mem <= mem.min(axis=0) * (1 + 1e-12)
        j = np.argmin(np.where(smallest, t, np.inf), axis=0)
        cols = np.arange(s.size)
        return t[j, cols], mem[j, cols], [kinds[i] for i in j]

    def capacity_tokens(self) -> float:
        """KV tokens one GPU holds beside replicated weights, a prefill workspace and the reserve."""
        mb = memory_budget(self.model, self.gpu, DEFAULT_PREFILL_CHUNK_TOKENS, 0, self.precision, 1)
        if mb.free_for_kv_bytes <= 0:
            raise InfeasibleError(
                f"{self.model.name} does not fit on one {self.gpu.name}: weights {mb.weight_bytes / 2**30:.1f} GiB "
                f"+ workspace exceed {mb.capacity_bytes / 2**30:.1f} GiB (sequence parallelism replicates weights)"
            )
        return float(mb.free_for_kv_bytes / mb.kv_bytes_per_token)
