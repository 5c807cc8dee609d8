"""Pipeline, sequence/context and expert parallelism on top of the per-GPU phase model.

- PP: a stage runs ``num_layers / pp`` layers; ``m`` micro-batches take
  ``(m + pp - 1)`` stage times (each with its activation send to the next stage); the
  bubble is ``(pp - 1)`` of them, a ``(pp - 1) / (m + pp - 1)`` share.
- SP for long prefill, ``P = u * r`` GPUs holding ``N / P`` tokens each (per layer):
  Ulysses (``u = P``): an all-to-all of Q, K, V before attention and of O after,
  ``(h_q + 2 h_kv) N/P`` and ``h_q N/P`` elements per rank, not overlapped; attention runs on
  all ``N`` tokens for ``1/u`` of the heads.  Ring (``r = P``): ``r - 1`` steps, each passing a
  K, V block of ``2 h_kv N/P`` elements to the next GPU while the current block's attention
  runs; the GPU runs a step in ``c + m - overlap * min(c, m)`` (``overlap`` = 1 hides the
  shorter fully; the transfer is exposed when the blocks are too small for their compute) and
  the host, which issues the send/recv pair and the attention call and synchronises, needs
  ``h_c + h_m + sync``; a step takes the longer of the two, so with small blocks the overlapped
  step is longer than compute and transfer run apart (:class:`RingStepModel`).
  Hybrid: Ulysses in groups of ``u`` (inside a node), Ring across the ``r`` groups.
  TokenRing (``r = P``): the KV blocks stay; each step sends a query block (``h_q N/P`` elements)
  to the next GPU while the previous step's block outputs and log-sum-exps (``h_q N/P`` values and
  ``h_q N/P`` fp32) go back to their owners on the opposite direction of the links, both under the
  attention of the current block (:func:`tokenring_block_bytes`): a step's transfer is the longer of
  the two, and the last outputs return after the last step, exposed.
  Causal work is balanced over the ranks (zig-zag placement).
- EP for MoE: experts split over ``ep`` GPUs; each routed token copy moves to its expert's
  GPU (all-to-all dispatch) and back (combine); an expert-load vector (shares of routed
  tokens per expert) makes the hottest GPU set both the transfer and the expert compute.
- Data-parallel attention (``attention_dp = N``, DeepSeek's serving layout): ``N`` groups of ``tp``
  GPUs each serve their own ``batch / N`` requests through attention and the dense layers (weights
  replicated per group, each GPU holding only its requests' KV: MLA's latent is not split by heads),
  and the MoE layers span all ``N tp`` GPUs: expert-parallel (``ep = N tp``, the all-to-all above,
  each rank dispatching its own tokens), or tensor-parallel (``ep = 1``: the ranks' hidden states
  all-gathered before each MoE layer and reduce-scattered after it, :func:`attention_dp_moe`).
  Expert parallelism wider than the attention group (``ep > tp sp``) is this layout with
  ``N = ep / (tp sp)`` (:func:`attention_groups`), for time and memory alike.

- KV-cache knobs (:class:`perfmodel.knobs.Knobs`): the ops of every phase carry them as on one
  GPU (KV format, KV heads and layers, kept tokens, sparse attention, windows, hybrid stacks,
  pruned prompts), and the KV memory is split as without them. Under SP the decode KV of a
  sequence's kept tokens is sharded over the group; the knobs that change the prefill attention
  or its Ring transfers are not modelled there, nor, with any layout, the three that need paths
  of their own (:func:`check_knobs`).

Formulas per device follow ``shared/reference/planners.md`` section 4 (SP anchors).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfmodel.hw.spec import GPU
from perfmodel.clocks import sustained_phase
from perfmodel.calibration import Profile
from perfmodel.costs.collectives import collective_time
from perfmodel.costs import ZERO, OpCost, op_cost
from perfmodel.errors import InvalidInputError
from perfmodel.degrees import ParallelConfigError, attention_groups, group_world  # noqa: F401 (re-exported)
from perfmodel.layers import Precision, kv_heads_per_gpu, model_ops
from perfmodel.models import ModelSpec
from perfmodel.ops import Attention, Collective, OpKind, Phase


class SpKind(str, enum.Enum):
    ULYSSES = "ulysses"
    RING = "ring"
    HYBRID = "hybrid"
    TOKENRING = "tokenring"  # queries one way round the ring, block outputs back the other (arXiv 2412.20501)


#: Bytes of the log-sum-exp TokenRing returns with each query's block output (one fp32 per query head).
LSE_BYTES = 4


def tokenring_block_bytes(tokens: Any, q_heads: int, head_dim: int, v_head_dim: int, act_bytes: float):
    """``(query, output)`` bytes one TokenRing step moves per GPU: a block of ``tokens`` queries sent on to the
    next GPU, and the outputs of the previous step's block (``v_head_dim`` values and a log-sum-exp per query
    head) sent back to the GPU that owns those queries, on the opposite direction of the links."""
    q = tokens * q_heads * head_dim * act_bytes
    o = tokens * q_heads * (v_head_dim * act_bytes + LSE_BYTES)
    return q, o


def _deg(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ParallelConfigError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def check_pp(model: ModelSpec, pp: int) -> int:
    pp = _deg("pp", pp)
    if model.num_layers % pp:
        raise ParallelConfigError(f"pp={pp} does not divide the {model.num_layers} layers of {model.name}")
    return pp


def check_ep(model: ModelSpec, ep: int) -> int:
    ep = _deg("ep", ep)
    if ep == 1:
        return ep
    if model.moe is None:
        raise ParallelConfigError(f"ep={ep} needs a mixture-of-experts model; {model.name} is dense")
    if model.moe.num_experts % ep:
        raise ParallelConfigError(
            f"ep={ep} does not divide the {model.moe.num_experts} experts of {model.name}"
        )
    return ep


def split_sp(model: ModelSpec, sp: int, kind: SpKind, tp: int = 1, gpus_per_node: int = 8) -> tuple[int, int]:
    """``(u, r)``: the Ulysses and Ring degrees of an SP group of ``sp`` GPUs (``u * r = sp``).

    Ulysses splits the heads each TP rank holds, so ``u`` must divide its query heads and its
    KV heads (or be a multiple of them: KV heads are then replicated).  Hybrid takes the
    largest such ``u`` that fits in one node.
    """
    sp = _deg("sp", sp)
    kind = SpKind(kind)
    hq = model.q_heads // tp
    hkv = kv_heads_per_gpu(model, tp) if model.mla is None else hq

    def ok(u: int) -> bool:
        return hq % u == 0 and (hkv % u == 0 or u % hkv == 0)

    if kind in (SpKind.RING, SpKind.TOKENRING) or sp == 1:
        return 1, sp
    if kind is SpKind.ULYSSES:
        if not ok(sp):
            raise ParallelConfigError(
                f"sp={sp} (Ulysses) must divide the {hq} query heads per TP rank of {model.name} and divide "
                f"or be a multiple of its {hkv} KV heads; use --sp-kind ring or hybrid"
            )
        return sp, 1
    u = max(d for d in range(1, sp + 1) if sp % d == 0 and d <= max(gpus_per_node // tp, 1) and ok(d))
    return u, sp // u


@dataclass(frozen=True)
class RingStepModel:
    """How a Ring step overlaps: the hidden share and the host costs of issuing it (seconds).

    ``overlap`` is the share of ``min(compute, transfer)`` the GPU hides; ``compute_issue_s`` the
    host's launch of the attention call; ``comm_issue_s`` its issue of the send/recv pair (None:
    the send/recv path's latency, which for the calibrated NVLink class is exactly that host
    cost); ``sync_s`` the rest of the host's per-step work (stream waits, request bookkeeping).
    The ideal model (the default) hides the shorter term fully and costs nothing on the host.
    """

    overlap: float = 1.0
    compute_issue_s: float = 0.0
    comm_issue_s: float | None = 0.0
    sync_s: float = 0.0

    def __post_init__(self):
        if not 0 <= self.overlap <= 1:
            raise InvalidInputError(f"overlap must be in [0, 1], got {self.overlap}")
        for name in ("compute_issue_s", "comm_issue_s", "sync_s"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise InvalidInputError(f"{name} must be a finite number >= 0 seconds, got {v!r}")


def _f(x):
    return x if np.ndim(x) else float(x)


def _a(x):
    """``x`` as a float: a Python float for one value, an array for many."""
    return _f(np.asarray(x, dtype=np.float64))


def _cdiv(a, b):
    """``ceil(a / b)``: an int for integers, a float array (of whole numbers) for arrays."""
    if np.ndim(a) == 0 and np.ndim(b) == 0:
        return ceil_div(int(a), int(b))
    return -(-np.asarray(a, dtype=np.float64) // np.asarray(b, dtype=np.float64))


def _max(a, b):
    return max(a, b) if np.ndim(a) == 0 and np.ndim(b) == 0 else np.maximum(a, b)


def _min(a, b):
    return min(a, b) if np.ndim(a) == 0 and np.ndim(b) == 0 else np.minimum(a, b)


@dataclass(frozen=True)
class RingOverlap:
    """One Ring step: attention of a block (``compute_s``) while the next KV block moves (``comm_s``).

    ``compute_s`` and ``comm_s`` are the two run alone, as issued eagerly (each at least its
    host issue cost).  The GPU runs them in ``device_s = c + m - overlap * min(c, m)``; the host
    issues both and synchronises in ``host_s = min(c, h_c) + min(m, h_m) + sync``, serially.
    The step takes the longer: ``step_s = max(device_s, host_s)``.  When blocks are small the
    host path wins and the overlapped step costs more than the two run apart (negative
    ``hidden_fraction``): overlap fails.  Scalars or numpy arrays.
    """

    compute_s: Any
    comm_s: Any
    overlap: float = 1.0
    compute_issue_s: float = 0.0
    comm_issue_s: float = 0.0
    sync_s: float = 0.0

    @property
    def device_s(self) -> Any:
        return _f(self.compute_s + self.comm_s - self.overlap * np.minimum(self.compute_s, self.comm_s))

    @property
    def host_s(self) -> Any:
        return _f(
            np.minimum(self.compute_s, self.compute_issue_s)
            + np.minimum(self.comm_s, self.comm_issue_s)
            + self.sync_s
        )

    @property
    def stall_s(self) -> Any:
        """Time the GPU waits for the host beyond its own overlapped work (0 when device-bound)."""
        return _f(np.maximum(np.asarray(self.host_s) - self.device_s, 0.0))

    @property
    def step_s(self) -> Any:
        return _f(self.device_s + self.stall_s)

    @property
    def hidden_s(self) -> Any:
        """Transfer time saved by running it under compute, ``c + m - step`` (negative when overlap fails)."""
        return _f(self.overlap * np.minimum(self.compute_s, self.comm_s) - self.stall_s)

    @property
    def exposed_comm_s(self) -> Any:
        return _f(self.comm_s - self.hidden_s)

    @property
    def hidden_fraction(self) -> Any:
        """Share of the transfer hidden under compute (1: fully overlapped; < 0: the step is longer
        than compute and transfer run apart)."""
        m = np.asarray(self.comm_s, dtype=np.float64)
        return _f(np.where(m > 0, np.asarray(self.hidden_s) / np.where(m > 0, m, 1.0), 1.0))


def ring_step_overlap(compute_s: Any, comm_s: Any, overlap: float | RingStepModel = 1.0) -> RingOverlap:
    """One Ring step under ``overlap`` (a share in [0, 1], no host costs, or a :class:`RingStepModel`).

    ``comm_issue_s=None`` in the model is taken as 0 here (there is no path to read it from).
    """
    rs = overlap if isinstance(overlap, RingStepModel) else RingStepModel(float(overlap))
    c, m = np.asarray(compute_s, dtype=np.float64), np.asarray(comm_s, dtype=np.float64)
    if np.any(~np.isfinite(c)) or np.any(c < 0) or np.any(~np.isfinite(m)) or np.any(m < 0):
        raise InvalidInputError("compute_s and comm_s must be finite numbers >= 0 seconds")
    return RingOverlap(_f(c), _f(m), rs.overlap, rs.compute_issue_s, rs.comm_issue_s or 0.0, rs.sync_s)


@dataclass(frozen=True)
class PipelineTime:
    """``m`` micro-batches through ``pp`` stages of ``stage_s`` each (plus ``p2p_s`` per hop)."""

    pp: int
    micro_batches: int
    stage_s: float
    p2p_s: float

    @property
    def slot_s(self) -> float:
        return self.stage_s + (self.p2p_s if self.pp > 1 else 0.0)

    @property
    def total_s(self) -> float:
        return (self.micro_batches + self.pp - 1) * self.slot_s

    @property
    def bubble_s(self) -> float:
        return (self.pp - 1) * self.slot_s

    @property
    def bubble_fraction(self) -> float:
        return (self.pp - 1) / (self.micro_batches + self.pp - 1)


def pipeline_time(stage_s: float, pp: int, micro_batches: int, p2p_s: float = 0.0) -> PipelineTime:
    return PipelineTime(_deg("pp", pp), _deg("micro_batches", micro_batches), float(stage_s), float(p2p_s))


def _split(ops) -> tuple[list, list, list]:
    """(attention, collectives, the rest) of ``(name, op, count)`` triples."""
    att = [t for t in ops if t[0] == "attention"]
    coll = [t for t in ops if isinstance(t[1], Collective)]
    rest = [t for t in ops if t[0] != "attention" and not isinstance(t[1], Collective)]
    return att, coll, rest


def _sum(ops, gpu: GPU, profile: Profile, topology=None) -> OpCost:
    total = ZERO
    for _, op, c in ops:
        if isinstance(op, Collective) and topology is not None:
            cost = collective_time(op.op, op.bytes, op.world, gpu, profile, topology)
        else:
            cost = op_cost(op, gpu, profile)
        total = total + cost.scale(c)
    return total


@dataclass(frozen=True)
class SpPrefill:
    """Long prefill on an SP group: per-GPU compute, communication, and the Ring overlap."""

    kind: SpKind
    ulysses: int
    ring: int
    compute: OpCost  # everything but SP communication (TP collectives included)
    a2a: OpCost  # Ulysses all-to-alls, all layers
    ring_steps: RingOverlap | None  # one Ring step (per layer there are ring - 1)
    layers: int
    ring_launch_s: float = 0.0  # per step: the attention call's host launch beyond its GPU time
    ring_tail_s: Any = 0.0  # TokenRing: the last block outputs' return after the last step, all layers

    def _per_step(self, v) -> Any:
        return 0.0 if self.ring_steps is None else (self.ring - 1) * self.layers * _a(v)

    @property
    def ring_comm_s(self) -> float:
        return 0.0 if self.ring_steps is None else self._per_step(self.ring_steps.comm_s)

    @property
    def ring_hidden_s(self) -> float:
        """Transfer time saved by overlap, all steps (negative when the host makes steps longer)."""
        return 0.0 if self.ring_steps is None else self._per_step(self.ring_steps.hidden_s)

    @property
    def ring_stall_s(self) -> float:
        """GPU idle time waiting for the host to issue the steps, all steps."""
        return (
            0.0 if self.ring_steps is None else self._per_step(self.ring_steps.stall_s + self.ring_launch_s)
        )

    @property
    def cost(self) -> OpCost:
        """Total as an OpCost: Ring transfers in ``comm_s``, the part the GPU hides in ``overlap_s``,
        host-bound stalls in ``latency_s``."""
        if self.ring_steps is None:
            return self.compute + self.a2a
        s = self.ring_steps
        dev_hidden = s.overlap * _min(s.compute_s, s.comm_s)
        ring = OpCost(
            comm_s=self.ring_comm_s + self.ring_tail_s,
            latency_s=self.ring_stall_s,
            overlap_s=self._per_step(dev_hidden),
        )
        return self.compute + self.a2a + ring

    @property
    def comm_s(self) -> float:
        """Exposed SP communication time (Ulysses all-to-alls plus Ring step time beyond its compute)."""
        ring = (
            0.0
            if self.ring_steps is None
            else self._per_step(self.ring_steps.exposed_comm_s) + self.ring_tail_s
        )
        return _a(self.a2a.total_s) + ring


def sp_prefill(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    context_len: int,
    sp: int,
    kind: SpKind | str = SpKind.RING,
    batch: int = 1,
    precision: Precision = Precision(),
    tp: int = 1,
    topology=None,
    overlap: float | RingStepModel = 1.0,
    knobs=None,
) -> SpPrefill:
    """Prefill of ``batch`` prompts of ``context_len`` tokens split over ``sp`` GPUs (each also ``tp``-way).

    ``overlap`` is the Ring step model: a hidden share (no host costs) or a :class:`RingStepModel`.
    ``knobs``: those :func:`check_knobs` allows with SP (they leave the prefill attention as it is).
    """
    check_knobs(knobs, sp)
    from perfmodel.comm import resolve_topology

    kind = SpKind(kind)
    topo = resolve_topology(topology, gpu, tp * sp)
    u, r = split_sp(model, sp, kind, tp, topo.gpus_per_node)
    n = _a(context_len)
    q = n / sp
    ops = model_ops(model, Phase.PREFILL, batch, q, (n + q) / 2.0, precision, tp, lm_head_rows=0, knobs=knobs)
    att, coll, rest = _split(ops)
    compute = _sum(rest, gpu, profile) + _sum(coll, gpu, profile, topo)
    a = precision.activations.bytes_per_element
    layers = model.num_layers
    a2a = ZERO
    steps = None
    launch = 0.0
    rs = overlap if isinstance(overlap, RingStepModel) else RingStepModel(float(overlap))
    for _, op, cnt in att:
        op: Attention
        hq, hkv = op.q_heads, op.kv_heads
        hkv_eff = max(hkv, u) if hkv < u else hkv
        dv = op.v_head_dim or op.head_dim
        # attention over the N / r tokens of this ring group for 1/u of the heads, balanced causal share
        ring_q = n / r
        part = dataclasses.replace(
            op,
            q_len=ring_q,
            kv_len=(n + ring_q) / 2.0 if op.causal else n,
            q_heads=hq // u,
            kv_heads=max(hkv_eff // u, 1),
        )
        att_cost = op_cost(part, gpu, profile)
        if u > 1:
            qkv = batch * q * (hq * op.head_dim + hkv_eff * (op.head_dim + dv)) * a
            o = batch * q * hq * dv * a
            a2a = a2a + (
                collective_time(OpKind.ALL_TO_ALL, qkv, u, gpu, profile, topo)
                + collective_time(OpKind.ALL_TO_ALL, o, u, gpu, profile, topo)
            ).scale(cnt)
        compute = compute + att_cost.scale(cnt)
        if r > 1:
            if kind is SpKind.TOKENRING:
                # queries forward and outputs back at once, on the two directions of the links
                q_b, o_b = tokenring_block_bytes(batch * (n / r), hq, op.head_dim, dv, a)
                mq = collective_time(OpKind.SEND_RECV, q_b, r, gpu, profile, topo, stride=u * tp)
                mo = collective_time(OpKind.SEND_RECV, o_b, r, gpu, profile, topo, stride=u * tp)
                big = np.asarray(mq.total_s) >= np.asarray(mo.total_s)
                m = OpCost(
                    comm_s=_a(np.where(big, mq.total_s - mq.latency_s, mo.total_s - mo.latency_s)),
                    latency_s=_a(np.where(big, mq.latency_s, mo.latency_s)),
                )
                tail = _a(mo.total_s) * cnt
            else:
                kv_width = op.head_dim if op.kv_shared else op.head_dim + dv
                kvb = (op.kv_dtype or op.dtype).bytes_per_element
                block = batch * (n / r) * max(hkv_eff // u, 1) * kv_width * kvb
                m = collective_time(OpKind.SEND_RECV, block, r, gpu, profile, topo, stride=u * tp)
                tail = 0.0
            c_dev = _a(att_cost.total_s) / r
            c = _max(c_dev, rs.compute_issue_s)  # an eager call takes at least its host launch
            h_m = _a(m.latency_s) if rs.comm_issue_s is None else rs.comm_issue_s
            if np.ndim(h_m):  # a per-point issue cost: the step built as ring_step_overlap builds it
                ring_step_overlap(c, _a(m.total_s), dataclasses.replace(rs, comm_issue_s=None))  # checks c, m
                steps = RingOverlap(c, _a(m.total_s), rs.overlap, rs.compute_issue_s, h_m, rs.sync_s)
            else:
                steps = ring_step_overlap(c, _a(m.total_s), dataclasses.replace(rs, comm_issue_s=h_m))
            launch, layers = c - c_dev, cnt
    return SpPrefill(kind, u, r, compute, a2a, steps, layers, launch, tail if steps is not None else 0.0)


@dataclass(frozen=True)
class EpMoe:
    """One MoE layer under expert parallelism on the hottest GPU."""

    dispatch: OpCost
    experts: OpCost
    combine: OpCost
    imbalance: float  # hottest GPU's routed rows over the mean

    @property
    def cost(self) -> OpCost:
        return self.dispatch + self.experts + self.combine


def ep_moe_layer(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    tokens: float,
    ep: int,
    precision: Precision = Precision(),
    expert_load: Sequence[float] | None = None,
    tokens_per_gpu: float | None = None,
    topology=None,
) -> EpMoe:
    """Routed experts of one MoE layer over ``ep`` GPUs (experts ``e`` on GPU ``e // (E / ep)``).

    ``tokens`` is the layer's token count over the whole EP group (a number or an array of them);
    ``tokens_per_gpu`` the most any one GPU holds (default ``tokens / ep``).  ``expert_load`` gives each expert's share
    of routed token copies (normalised; default uniform).
    """
    ep = check_ep(model, ep)
    m = model.moe
    if m is None:
        raise ParallelConfigError(f"{model.name} has no experts")
    e = m.num_experts
    load = np.full(e, 1.0 / e) if expert_load is None else np.asarray(expert_load, dtype=np.float64)
    if load.shape != (e,) or not np.all(np.isfinite(load)) or np.any(load < 0) or load.sum() <= 0:
        raise ParallelConfigError(
            f"expert_load must be {e} non-negative finite numbers (one per expert), not all zero"
        )
    load = load / load.sum()
    per_gpu = load.reshape(ep, e // ep)
    hot = int(np.argmax(per_gpu.sum(axis=1)))
    imbalance = float(per_gpu.sum(axis=1).max() * ep)
    copies = tokens * m.top_k
    a = precision.activations.bytes_per_element
    t_gpu = tokens / ep if tokens_per_gpu is None else tokens_per_gpu
    send = t_gpu * m.top_k * model.hidden * a
    recv = copies * per_gpu[hot].sum() * model.hidden * a
    buf = _max(send, recv)
    dispatch = collective_time(OpKind.ALL_TO_ALL, buf, ep, gpu, profile, topology) if ep > 1 else ZERO
    experts = gpu_experts_cost(model, gpu, profile, tokens, precision, per_gpu[hot])
    return EpMoe(dispatch, experts, dispatch, imbalance)


def gpu_experts_cost(
    model: ModelSpec, gpu: GPU, profile: Profile, tokens: Any, precision: Precision, shares: np.ndarray
) -> OpCost:
    """The routed-expert GEMMs of one GPU whose expert slots receive ``shares`` of a layer's token copies
    (one entry per expert it holds; ``tokens`` over the EP group, a number or an array of them): one grouped
    GEMM per projection over the experts that receive rows (a token picks a slot with probability
    ``top_k * share``); no more groups than rows."""
    from perfmodel.layers import _grouped_mlp

    m = model.moe
    shares = np.asarray(shares, dtype=np.float64)
    rows = tokens * m.top_k * shares.sum()
    if not np.any(rows > 0):
        return ZERO
    pick = np.minimum(m.top_k * shares, 1.0)
    touched = np.where(pick > 0, 1.0 - (1.0 - pick) ** np.asarray(tokens, dtype=np.float64)[..., None], 0.0)
    groups = _min(_a(np.sum(touched, axis=-1)), rows)
    some = rows > 0
    if np.ndim(rows) and not np.all(some):  # points without rows cost nothing (priced at one row, masked)
        rows, groups = np.where(some, rows, 1.0), np.where(some, groups, 1.0)
    experts = _sum(
        _grouped_mlp("expert_", rows, groups, model.hidden, m.expert_intermediate, model.mlp, precision),
        gpu,
        profile,
    )
    if np.ndim(some) and not np.all(some):
        experts = experts.scale(np.where(some, 1.0, 0.0))
    return experts


def check_attention_dp(model: ModelSpec, attention_dp: int, tp: int = 1, sp: int = 1, ep: int = 1) -> int:
    """``attention_dp`` checked: 1, or with an MoE model, no SP, and ``ep`` 1 (tensor-parallel MoE over
    the ``attention_dp * tp`` GPUs) or ``attention_dp * tp`` (expert-parallel MoE)."""
    n = _deg("attention_dp", attention_dp)
    if n == 1:
        return n
    if model.moe is None:
        raise ParallelConfigError(
            f"attention_dp={n} needs a mixture-of-experts model (its MoE layers span the "
            f"data-parallel ranks); {model.name} is dense: run {n} instances instead"
        )
    if sp > 1:
        raise ParallelConfigError(f"attention_dp={n} with sp={sp} is not modelled")
    if ep not in (1, n * tp):
        alone = f"; ep={ep} alone runs {ep // tp} attention groups" if ep > tp and ep % tp == 0 else ""
        raise ParallelConfigError(
            f"with attention_dp={n} and tp={tp}, ep must be 1 (tensor-parallel MoE over the "
            f"{n * tp} GPUs) or {n * tp} (expert-parallel MoE), got {ep}{alone}"
        )
    return n


def attention_dp_moe(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    tokens: Any,
    world: int,
    precision: Precision = Precision(),
    topology=None,
) -> tuple[OpCost, OpCost]:
    """``(MoE block, gather + scatter)`` of one MoE layer run tensor-parallel over the ``world`` GPUs of
    data-parallel attention: the ``tokens`` of all ranks (a number or an array) all-gathered before the
    layer, its experts split ``world`` ways on every token, and the output reduce-scattered back to the
    ranks (:func:`perfmodel.costs.collectives.collective_time`), per GPU, seconds."""
    from perfmodel.layers import _moe_block

    a = precision.activations.bytes_per_element
    ops = [t for t in _moe_block(model, tokens, precision, world) if not isinstance(t[1], Collective)]
    nbytes = tokens * model.hidden * a  # every rank's hidden states, gathered whole on each GPU
    comm = collective_time(OpKind.ALL_GATHER, nbytes, world, gpu, profile, topology) + collective_time(
        OpKind.REDUCE_SCATTER, nbytes, world, gpu, profile, topology
    )
    return _sum(ops, gpu, profile), comm


def moe_ops_replaced_by_ep(ops) -> tuple[list, list]:
    """(routed-expert ops, the rest) of a model's ops."""
    ex = [t for t in ops if t[0].startswith("moe.expert_")]
    return ex, [t for t in ops if not t[0].startswith("moe.expert_")]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = [
    "EpMoe",
    "ParallelConfigError",
    "ParallelPhases",
    "PipelineTime",
    "RingOverlap",
    "RingStepModel",
    "SpKind",
    "SpPrefill",
    "attention_dp_moe",
    "check_attention_dp",
    "check_ep",
    "attention_groups",
    "ep_moe_cost",
    "ops_cost",
    "check_pp",
    "comm_seconds",
    "ep_moe_layer",
    "group_world",
    "parallel_memory",
    "parallel_phases",
    "pipeline_time",
    "measured_ring_step",
    "ring_step_overlap",
    "sp_prefill",
    "split_sp",
    "tokenring_block_bytes",
]


def measured_ring_step(profile: Profile) -> "RingStepModel | None":
    """The Ring-attention step model measured for ``profile``'s GPU, or None if none was.

    The terms come from the profile's ``ring_attention_step`` object, written by
    ``python -m perfmodel.validation.collectives fit --write-profile`` from steps timed on two GPUs: the share
    of min(compute, transfer) the GPU hides, the host's issue costs of the attention call and of
    the send/recv pair (None: the send/recv class's latency), and the per-step synchronisation.
    """
    r = profile.ring_attention_step
    if not r:
        return None
    return RingStepModel(
        overlap=r.get("overlap", 1.0),
        compute_issue_s=r.get("compute_issue_s", 0.0),
        comm_issue_s=r.get("comm_issue_s"),
        sync_s=r.get("sync_s", 0.0),
    )


@dataclass(frozen=True)
class ParallelPhases:
    """Prefill, one decode step and all decode steps with their communication time, seconds."""

    prefill: OpCost
    decode_step: OpCost
    decode: OpCost
    prefill_comm_s: float
    decode_step_comm_s: float
    details: dict


#: knobs the multi-GPU phases do not price (each needs a path of its own: the prefix's own prefill
#: and decode ops, KV streamed from slower tiers, attention on a memory pool)
_KNOBS_SINGLE_GPU = ("shared_prefix_tokens", "kv_tiers", "offload")
#: ... and those not priced with SP: they change the prefill attention (or, cross-layer KV, what
#: Ring passes per layer) in ways the Ring/Ulysses split does not follow
_KNOBS_NO_SP = (
    "kv_layers",
    "sliding_window",
    "attention_density",
    "prune_prefill",
    "attention_every",
    "keep_schedule",
)


def check_knobs(knobs, sp: int = 1) -> None:
    """Raise :class:`~perfmodel.errors.InvalidInputError` naming each active knob of ``knobs`` that
    the multi-GPU phases do not model (with ``sp`` > 1, more of them)."""
    if knobs is None:
        return
    default = type(knobs)()
    active = [f for f in knobs_not_modelled(sp) if getattr(knobs, f) != getattr(default, f)]
    single = [f for f in active if f in _KNOBS_SINGLE_GPU]
    no_sp = [f for f in active if f in _KNOBS_NO_SP]
    if single:
        raise InvalidInputError(
            f"knob(s) {', '.join(single)} are modelled on one GPU only (not with pp, sp, ep or a topology)"
        )
    if no_sp:
        raise InvalidInputError(
            f"knob(s) {', '.join(no_sp)} are not modelled with sequence parallelism (sp > 1)"
        )


def layout(
    model: ModelSpec,
    tps,
    pp: int = 1,
    sp: int = 1,
    sp_kind: str = "ring",
    ep: int = 1,
    topology: str | None = None,
    knobs=None,
    attention_dp: int = 1,
) -> dict | None:
    """The checked multi-GPU layout at each TP degree of ``tps``: None for one TP group (``pp`` =
    ``sp`` = ``ep`` = 1, no topology), else the keyword values ``parallel_phases`` takes (``pp``,
    ``sp``, ``sp_kind`` as its value, ``ep``, ``topology``, ``attention_dp``). Raises InvalidInputError for
    ``knobs`` the layout does not model, an unknown ``sp_kind``, or a degree that does not divide what it
    splits."""
    pp, sp, ep, dp = (
        _deg(k, v) for k, v in (("pp", pp), ("sp", sp), ("ep", ep), ("attention_dp", attention_dp))
    )
    if not (pp > 1 or sp > 1 or ep > 1 or dp > 1 or topology):
        return None
    check_knobs(knobs if knobs is not None and knobs.active else None, sp)
    if sp_kind not in {k.value for k in SpKind}:
        raise InvalidInputError(
            f"sp_kind must be one of {', '.join(k.value for k in SpKind)}, got {sp_kind!r}"
        )
    kind = SpKind(sp_kind)
    check_pp(model, pp)
    check_ep(model, ep)
    for t in np.atleast_1d(tps):
        check_attention_dp(model, dp, int(t), sp, ep)
    if sp > 1 and model.ssm is not None:
        raise ParallelConfigError(
            f"sp={sp}: sequence parallelism splits attention; {model.name} is a state-space "
            "stack with none (its scan is not split over GPUs here)"
        )
    if sp > 1:
        for t in np.atleast_1d(tps):
            split_sp(model, sp, kind, int(t))
    return dict(pp=pp, sp=sp, sp_kind=kind.value, ep=ep, topology=topology, attention_dp=dp)


def ring_step_model(profile: Profile) -> "RingStepModel | None":
    """The Ring step the profile measured (:func:`measured_ring_step`), in the calibrated mode only;
    None otherwise (callers then assume ideal overlap, 1.0)."""
    from perfmodel.calibration import Mode

    return measured_ring_step(profile) if profile.mode is Mode.CALIBRATED and not profile.is_peak else None


def price_layout(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    context_len: int,
    output_tokens: int,
    batch: int,
    precision: Precision,
    tp: int,
    chunk_tokens: int | None,
    reserve_fraction: float,
    knobs,
    lay: dict,
    ring_overlap: "float | RingStepModel | None" = None,
):
    """(per-GPU memory budget, :class:`ParallelPhases`) of one scenario on the layout ``lay``
    (:func:`layout`), as :func:`perfmodel.analyze.analyze` prices it: ``model`` and ``precision``
    get the knobs applied, the TP memory budget is re-split (:func:`parallel_memory`).
    ``ring_overlap``: the Ring step model (:func:`ring_step_model`); None is ideal overlap (1.0)."""
    from perfmodel.knobs import effective_model
    from perfmodel.layers import apply_knobs
    from perfmodel.phases import memory_budget

    k = knobs if knobs is not None and knobs.active else None
    m = model if k is None else effective_model(model, k)
    prec = apply_knobs(precision, k)
    mem = memory_budget(
        m, gpu, context_len, output_tokens, prec, tp, chunk_tokens, reserve_fraction, batch=batch, knobs=k
    )
    dp = lay.get("attention_dp", 1)
    mem = parallel_memory(mem, m, prec, tp, lay["pp"], lay["sp"], lay["ep"], dp)
    ph = parallel_phases(
        m,
        gpu,
        profile,
        context_len,
        output_tokens,
        batch,
        prec,
        tp,
        lay["pp"],
        lay["sp"],
        lay["sp_kind"],
        lay["ep"],
        chunk_tokens,
        lay["topology"],
        1.0 if ring_overlap is None else ring_overlap,
        knobs=k,
        attention_dp=dp,
        moe_placement=lay.get("moe_placement"),
    )
    return mem, ph


def knobs_not_modelled(sp: int = 1) -> tuple[str, ...]:
    """Names of the :class:`~perfmodel.knobs.Knobs` fields a multi-GPU layout does not model."""
    return _KNOBS_SINGLE_GPU + (_KNOBS_NO_SP if sp > 1 else ())


def _coll_s(ops, gpu, profile, topo) -> Any:
    return _a(_sum([t for t in ops if isinstance(t[1], Collective)], gpu, profile, topo).total_s)


def placement_moe(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    tokens: Any,
    precision: Precision,
    topo,
    moe_placement,
    expert_load=None,
) -> tuple[OpCost, Any]:
    """(routed-expert GEMMs, dispatch all-to-all seconds), each summed over the MoE layers, of a placement.

    Per layer: the expert load is the placement's (``MoePlacement.layer_loads``) or ``expert_load`` (default
    uniform); the all-to-all is priced from the placement's traffic pattern (``MoePlacement.layer_traffic``,
    else :func:`perfmodel.ep_route.traffic_matrix` with tokens evenly on the GPUs) scaled to the layer's
    ``tokens * top_k`` copies (:func:`perfmodel.ep_route.route_seconds`); the GEMMs are those of the GPU that
    receives the largest share of the copies (:func:`gpu_experts_cost`).  ``tokens`` is over the EP group
    (a number or an array of them).  The combine costs the same all-to-all again.
    """
    from perfmodel.ep_route import route_seconds, share_matrix, traffic_matrix

    m = model.moe
    e = m.num_experts
    nbytes = model.hidden * precision.activations.bytes_per_element
    pl = moe_placement
    same = (
        len(pl.layers) == 1
        and (pl.loads is None or len(pl.loads) == 1)
        and (pl.traffic is None or len(pl.traffic) == 1)
    )
    copies_bytes = np.asarray(tokens, dtype=np.float64) * m.top_k * nbytes
    experts, a2a = ZERO, 0.0
    for i in range(1 if same else model.num_moe_layers):
        w = pl.layer_loads(i)
        if w is None:
            w = np.full(e, 1.0 / e) if expert_load is None else np.asarray(expert_load, dtype=np.float64)
        w = w / w.sum()
        p = pl.layer(i)
        share = share_matrix(p, e)
        pattern = pl.layer_traffic(i)
        pattern = traffic_matrix(p, w) if pattern is None else pattern / pattern.sum()
        gpu_share = w @ share
        hot = int(np.argmax(gpu_share))
        experts = experts + gpu_experts_cost(
            model, gpu, profile, tokens, precision, (w * share[:, hot])[share[:, hot] > 0]
        )
        a2a = a2a + route_seconds(pattern, copies_bytes, topo, profile)
    n = model.num_moe_layers if same else 1
    return experts.scale(n), _a(a2a * n)


def _forward(
    model,
    gpu,
    profile,
    phase,
    batch,
    q_len,
    kv_len,
    precision,
    tp,
    ep,
    topo,
    lm_head_rows=None,
    expert_load=None,
    knobs=None,
    moe_placement=None,
    groups=1,
):
    """One pass on the busiest GPU: attention data-parallel over ``groups`` attention groups
    (:func:`attention_groups`), experts over ``ep`` (or, with ``ep`` 1 and several groups, tensor-parallel
    over all ``groups * tp`` GPUs between an all-gather and a reduce-scatter)."""
    b_loc = _cdiv(batch, groups)
    ops = model_ops(model, phase, b_loc, q_len, kv_len, precision, tp, lm_head_rows, knobs)
    if groups > 1 and ep <= 1 and model.moe is not None:
        rest = [t for t in ops if not t[0].startswith("moe.")]
        block, gather = attention_dp_moe(model, gpu, profile, batch * q_len, groups * tp, precision, topo)
        n = model.num_moe_layers
        g_s = _a(gather.total_s) * n
        cost = _sum(rest, gpu, profile, topo) + (block + gather).scale(n)
        return cost, _coll_s(rest, gpu, profile, topo) + g_s, {"attention_dp_comm_s": g_s}
    if ep <= 1 or model.moe is None:
        return _sum(ops, gpu, profile, topo), _coll_s(ops, gpu, profile, topo), {}
    _, rest = moe_ops_replaced_by_ep(ops)
    moe, moe_comm, d = ep_moe_cost(
        model, gpu, profile, batch * q_len, b_loc * q_len, ep, precision, topo, expert_load, moe_placement
    )
    return _sum(rest, gpu, profile, topo) + moe, _coll_s(rest, gpu, profile, topo) + moe_comm, d


def ep_moe_cost(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    tokens: Any,
    tokens_per_gpu: Any,
    ep: int,
    precision: Precision,
    topology,
    expert_load=None,
    moe_placement=None,
) -> tuple[OpCost, Any, dict]:
    """(cost, all-to-all seconds, details) of every MoE layer's routed experts over ``ep`` GPUs in one pass:
    the expert GEMMs of the busiest GPU plus the dispatch and combine all-to-alls, for ``tokens`` over the
    EP group of which a GPU sends at most ``tokens_per_gpu`` (numbers or arrays).  With ``moe_placement``
    (:class:`perfmodel.ep_route.MoePlacement`) each layer's all-to-all comes from its traffic matrix and
    its GEMMs from the GPU it loads most (:func:`placement_moe`); otherwise experts sit contiguously
    (:func:`ep_moe_layer`).  ``topology`` is the resolved :class:`perfmodel.comm.Topology` of the group.
    """
    layer = ep_moe_layer(model, gpu, profile, tokens, ep, precision, expert_load, tokens_per_gpu, topology)
    if moe_placement is not None:
        experts, a2a = placement_moe(
            model, gpu, profile, tokens, precision, topology, moe_placement, expert_load
        )
        return (
            experts + OpCost(comm_s=2 * a2a),
            2 * a2a,
            {"ep_imbalance": layer.imbalance, "ep_route": "placement"},
        )
    n = model.num_moe_layers
    return layer.cost.scale(n), 2 * n * _a(layer.dispatch.total_s), {"ep_imbalance": layer.imbalance}


def ops_cost(ops, gpu: GPU, profile: Profile, topology=None) -> OpCost:
    """Sum of ``count * cost(op)`` over ``(name, op, count)`` triples, collectives priced over the group
    ``topology`` places (:func:`perfmodel.costs.collectives.collective_time`) when one is given."""
    return _sum(ops, gpu, profile, topology)


def parallel_phases(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    context_len: int,
    output_tokens: int,
    batch: int = 1,
    precision: Precision = Precision(),
    tp: int = 1,
    pp: int = 1,
    sp: int = 1,
    sp_kind: SpKind | str = SpKind.RING,
    ep: int = 1,
    chunk_tokens: int | None = 8192,
    topology=None,
    ring_overlap: float | RingStepModel = 1.0,
    expert_load=None,
    knobs=None,
    moe_placement=None,
    attention_dp: int = 1,
) -> ParallelPhases:
    """The phases of one scenario under TP x PP x SP x EP (see the module docstring).

    ``context_len``, ``output_tokens`` and ``batch`` may be numpy arrays that broadcast together (a sweep's
    grid): the costs, communication times and per-point details come back as arrays of their shape, each
    point as it is priced alone; scalars give floats (``analyze``).

    ``knobs`` (:class:`perfmodel.knobs.Knobs`, those :func:`check_knobs` allows) go into every
    phase's ops; ``model`` and ``precision`` are expected to carry them already
    (``effective_model``, ``apply_knobs``), as :func:`perfmodel.analyze.analyze` passes them.

    ``moe_placement`` (:class:`perfmodel.ep_route.MoePlacement`, ``ep`` GPUs) prices each MoE layer's dispatch
    and combine from the traffic matrix of its placement and its expert GEMMs on the GPU the placement loads
    most (:func:`placement_moe`), instead of the busiest GPU under contiguous experts.

    ``attention_dp`` (:func:`check_attention_dp`) runs attention data-parallel over that many groups of ``tp``
    GPUs, each with its own requests; ``ep`` wider than ``tp * sp`` does the same over ``ep // (tp * sp)``
    groups (:func:`attention_groups`).  With several groups ``details`` gives their number (``attention_dp``),
    the KV bytes one GPU holds for its group's requests (``attention_dp_kv_bytes_per_rank``) and the MoE
    layers' all-gather and reduce-scatter time (``attention_dp_comm_s``: ``prefill`` and ``decode_per_token``;
    0 with expert parallelism, whose all-to-all is in the communication time as without it).
    """
    from perfmodel.comm import place, resolve_topology
    from perfmodel.layers import lm_head_ops

    if knobs is not None and not knobs.active:
        knobs = None
    check_knobs(knobs, sp)
    pp, ep = check_pp(model, pp), check_ep(model, ep)
    attention_dp = check_attention_dp(model, attention_dp, tp, sp, ep)
    if moe_placement is not None:
        if ep <= 1 or model.moe is None:
            raise ParallelConfigError("an MoE placement needs a mixture-of-experts model run with ep > 1")
        moe_placement.check(model.moe.num_experts, model.num_moe_layers, ep)
    world = group_world(tp, pp, sp, ep, attention_dp)
    groups = attention_groups(tp, ep, attention_dp, sp)
    topo = resolve_topology(topology, gpu, world)
    place(topo, world)
    a = precision.activations.bytes_per_element
    details: dict = {"world": world}
    head = _sum(lm_head_ops(model, batch, precision, tp), gpu, profile, topo)

    def p2p(tokens) -> OpCost:
        if pp == 1:
            return ZERO
        return collective_time(OpKind.SEND_RECV, tokens * model.hidden * a, 2, gpu, profile, topo)

    # prefill
    if sp > 1:  # each SP group prefills its attention group's prompts
        b_grp = _cdiv(batch, groups)
        s = sp_prefill(
            model, gpu, profile, context_len, sp, sp_kind, b_grp, precision, tp, topo, ring_overlap, knobs
        )
        body, n, dp_prefill_s = s.cost, 1, 0.0
        body_comm = s.comm_s + _coll_s(
            model_ops(
                model,
                Phase.PREFILL,
                b_grp,
                context_len / sp,
                context_len,
                precision,
                tp,
                lm_head_rows=0,
                knobs=knobs,
            ),
            gpu,
            profile,
            topo,
        )
        hop = p2p(b_grp * context_len / sp)
        details.update(sp_ulysses=s.ulysses, sp_ring=s.ring)
        if s.ring_steps is not None:
            ro = ring_overlap.overlap if isinstance(ring_overlap, RingStepModel) else float(ring_overlap)
            details.update(ring_hidden_fraction=_a(s.ring_steps.hidden_fraction), ring_overlap=ro)
    else:
        ctx = _a(context_len)
        if knobs is not None and knobs.prune_prefill:  # prefill runs on the kept tokens only
            ctx = _a(knobs.prefill_tokens(ctx))
        # the chunk is the token budget of one pass, shared by the prompts the pass holds (as on one
        # GPU, perfmodel.phases.prefill_cost): with data-parallel attention under EP, a rank's share
        b_pass = _cdiv(batch, groups)
        if not chunk_tokens:
            n = 1
        elif np.ndim(ctx) or np.ndim(b_pass):
            n = np.ceil(ctx / np.maximum(chunk_tokens / b_pass, 1.0))
        else:
            n = math.ceil(ctx / max(chunk_tokens / b_pass, 1.0))
        q = ctx / n
        body, body_comm, d = _forward(
            model,
            gpu,
            profile,
            Phase.PREFILL,
            batch,
            q,
            q * (n + 1) / 2.0,
            precision,
            tp,
            ep,
            topo,
            lm_head_rows=0,
            expert_load=expert_load,
            knobs=knobs,
            moe_placement=moe_placement,
            groups=groups,
        )
        dp_prefill_s = d.pop("attention_dp_comm_s", 0.0) * n
        details.update(d)
        body, body_comm, hop = (
            body.scale(n),
            body_comm * n,
            p2p(b_pass * q),
        )  # a group's tokens to its next stage
    # the pipeline's bubble share, as pipeline_time(stage, pp, n).bubble_fraction
    bubble = (pp - 1) / (n + pp - 1)
    prefill = body.scale((n + pp - 1) / (n * pp)) + hop.scale((n + pp - 1) if pp > 1 else 0) + head
    prefill_comm = body_comm * (n + pp - 1) / (n * pp) + _a(hop.total_s) * ((n + pp - 1) if pp > 1 else 0)
    details.update(pp_bubble_fraction_prefill=_a(bubble))

    # decode: KV sharded over the SP group, partial attention outputs combined by an all-reduce per layer
    m = _min(_cdiv(batch, groups), pp)

    # under SP each GPU holds 1/sp of a sequence's kept tokens (eviction decides them on the whole)
    shard_knobs = knobs
    if knobs is not None and sp > 1:
        shard_knobs = knobs.replace(kv_keep_ratio=1.0, kv_budget_tokens=None)

    def step(kv_len):
        if knobs is not None and sp > 1:
            kv_len = knobs.kept_tokens(kv_len)
        f, c, d_dec = _forward(
            model,
            gpu,
            profile,
            Phase.DECODE,
            _cdiv(batch, m),
            1,
            kv_len / sp,
            precision,
            tp,
            ep,
            topo,
            expert_load=expert_load,
            knobs=shard_knobs,
            moe_placement=moe_placement,
            groups=groups,
        )
        dp_comm.append(d_dec.get("attention_dp_comm_s", 0.0))
        if sp > 1:
            comb = collective_time(
                OpKind.ALL_REDUCE,
                _cdiv(batch, m) * model.q_heads // tp * model.head_dim * a,
                sp,
                gpu,
                profile,
                topo,
                stride=tp,
            ).scale(model.num_layers)
            f, c = f + comb, c + _a(comb.total_s)
        rounds = _max(m, pp) / pp
        hop_d = p2p(_cdiv(_cdiv(batch, m), groups))
        return f.scale(rounds) + hop_d.scale(_max(m, pp) if pp > 1 else 0), c * rounds + _a(hop_d.total_s) * (
            _max(m, pp) if pp > 1 else 0
        )

    dp_comm: list = []
    dstep, dcomm = step(_a(context_len))
    if groups > 1:
        from perfmodel.phases import kv_cache_bytes_per_gpu

        rounds = _max(m, pp) / pp
        details.update(
            attention_dp=groups,
            attention_dp_kv_bytes_per_rank=kv_cache_bytes_per_gpu(
                model, context_len, output_tokens, _cdiv(batch, groups), precision, tp, knobs
            )
            / (pp * sp),
            attention_dp_comm_s={
                "prefill": dp_prefill_s * (n + pp - 1) / (n * pp),
                "decode_per_token": _a(dp_comm[0]) * rounds,
            },
        )
    mean_step, _ = step(context_len + (output_tokens + 1) / 2.0)
    details.update(pp_micro_batches_decode=m)
    # the prefill runs back to back: its compute slows to the sustained rate (perfmodel.clocks)
    prefill = sustained_phase(prefill, profile.sustained)
    return ParallelPhases(prefill, dstep, mean_step.scale(_a(output_tokens)), prefill_comm, dcomm, details)


def comm_seconds(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    phase: Phase,
    batch,
    q_len,
    kv_len,
    precision: Precision = Precision(),
    tp: int = 1,
) -> float:
    """Collective time of one pass (TP all-reduces and gathers), seconds."""
    return _coll_s(model_ops(model, phase, batch, q_len, kv_len, precision, tp), gpu, profile, None)


def parallel_memory(
    mem,
    model: ModelSpec,
    precision: Precision,
    tp: int = 1,
    pp: int = 1,
    sp: int = 1,
    ep: int = 1,
    attention_dp: int = 1,
):
    """A TP memory budget re-split for PP (layers, so weights and KV / pp), SP (KV / sp), EP
    (routed experts / ep instead of / tp) and data-parallel attention (routed experts over the
    ``attention_dp * tp`` GPUs without EP).  With several attention groups (:func:`attention_groups`:
    ``attention_dp``, or ``ep // (tp * sp)`` under wider EP) each GPU holds its own group's requests only,
    so the instance holds that many times the users one GPU's KV room takes (``dp_ranks``)."""
    if pp == sp == ep == attention_dp == 1:
        return mem
    wb = precision.weights.bytes_per_element
    experts = model.num_moe_layers * model.moe.num_experts * model.expert_params * wb if model.moe else 0.0
    weights = mem.weight_bytes
    if ep > 1:
        weights = weights - experts / tp + experts / ep
    elif attention_dp > 1:
        weights = weights - experts / tp + experts / (tp * attention_dp)
    weights = weights / pp
    kv_tok = mem.kv_bytes_per_token / (pp * sp)
    kv_user = mem.kv_bytes_per_user / (pp * sp)
    shared = getattr(mem, "shared_kv_bytes", 0.0) / (pp * sp)
    from perfmodel.phases import max_users

    free = mem.capacity_bytes - weights - mem.activation_bytes - mem.reserve_bytes - shared
    out = dataclasses.replace(
        mem,
        weight_bytes=weights,
        kv_bytes_per_token=kv_tok,
        kv_bytes_per_user=kv_user,
        free_for_kv_bytes=free,
        shared_kv_bytes=shared,
        dp_ranks=attention_groups(tp, ep, attention_dp, sp),
    )
    return dataclasses.replace(out, max_concurrency=max_users(out))
