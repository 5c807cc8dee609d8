"""Iteration times of a replica, tabulated once from the core's cost functions.

An iteration of continuous batching runs ``b`` decode tokens and some
prefill chunks in one forward pass.  Its time, on one GPU of the group, is

    dense(tokens) + lm_head(rows) + attn_decode(b, K / b) + sum attn_prefill(c_i, e_i) + pp_transfers(tokens)

where ``dense`` is every op of :func:`perfmodel.layers.model_ops` that does
not depend on the key count (GEMMs, norms, collectives, MoE), tabulated for
every token count up to the budget; ``lm_head`` runs once per sequence that
emits a token; ``attn_decode`` is the attention of ``b`` sequences holding
``K`` keys in total, at the mean key count ``K / b`` (attention FLOPs and
bytes are linear in the keys, so the mean gives the totals); and
``attn_prefill(c, e)`` is a chunk of ``c`` queries ending at key ``e``.
Attention tables are interpolated on geometric grids: within one roofline
regime the cost is linear in the key count (and bilinear in queries x mean
keys for prefill), so the interpolation is exact there; only at a regime
change is it an approximation (tests bound the error).

Under expert parallelism (``dep.ep > 1``) a replica's ``ep // tp`` attention groups each run their
own requests: the tables price the busiest group (``ceil(tokens / groups)`` tokens, ``ceil(b / groups)``
decode sequences, a prefill chunk on one group) and every MoE layer's experts and all-to-alls over all
the iteration's tokens, as :func:`perfmodel.parallel.parallel_phases` prices ``analyze``'s passes.

With KV-cache knobs (``dep.knobs``) every table comes from the same
:func:`perfmodel.layers.model_ops` with ``knobs=``: the decode columns are
sequence lengths, and the knobs decide the keys kept and read (eviction,
window, density) and their format (a dequantisation pass).  Like
:func:`perfmodel.phases.decode_cost`, a batch is priced at its mean length;
with a token budget or a window, which cap each sequence, that is an upper
bound (the kept count is concave in the length).

The knobs that share or move the KV, as :func:`perfmodel.phases.decode_step_cost`
prices them:

- shared prefix: the decode table is the cheaper of the prefix-aware kernel
  (the prefix read once per batch) and the plain one, per cell;
- KV tiers: an iteration that decodes also streams the KV held beyond free
  HBM from the tiers (:meth:`IterationTimer.tier_s`), less what prefetch hides
  under the iteration;
- attention offloading: decode attention, KV append and dequantisation run on
  the pool (a table of their cost on the pool's device), the Q/K/V/O messages
  cross the link, and the KV that prefill chunks produce is shipped to the
  pool (:meth:`IterationTimer.offload_s`).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from perfmodel.calibration import Mode, peak_profile, resolve_profile
from perfmodel.costs import OpCost, op_cost
from perfmodel.knobs import attention_layer_count
from perfmodel.layers import kv_heads_per_gpu, lm_head_ops, model_ops
from perfmodel.ops import Collective, OpKind, Phase
from perfmodel.phases import sum_costs
from perfmodel.serving.deployment import Deployment, ReplicaMemory, replica_memory

#: Ops whose cost depends on the key count; everything else depends only on the token count.
KV_DEPENDENT_OPS = frozenset(
    {"attention", "kv_b_proj", "kv_dequant", "prefix_attention", "recurrent.chunk_attention"}
)
#: Decode ops that run on the attention pool under offloading (as in :func:`perfmodel.phases.decode_step_cost`).
POOL_OPS = frozenset({"attention", "prefix_attention", "kv_dequant", "kv_append"})

_GRID_POINTS_PER_OCTAVE = 16


def _total(cost: OpCost, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(cost.total_s, dtype=np.float64), shape).copy()


def _split_cost(
    dep: Deployment,
    phase: Phase,
    batch,
    q_len,
    kv_len,
    kv_part: bool,
    knobs=None,
    skip=frozenset(),
    only=None,
    gpu=None,
    profile=None,
) -> OpCost:
    """Cost of the ops of one pass that depend on the key count (``kv_part``) or not, less ``skip``
    (``only``: just these names)."""
    knobs = dep.knobs if knobs is None else knobs
    ops = model_ops(
        dep.model, phase, batch, q_len, kv_len, dep.precision, dep.tp, lm_head_rows=0, knobs=knobs
    )
    if only is not None:
        keep = [(n, o, c) for n, o, c in ops if n in only]
    else:
        keep = [(n, o, c) for n, o, c in ops if (n in KV_DEPENDENT_OPS) == kv_part and n not in skip]
    return sum_costs(keep, gpu or dep.gpu, profile or dep.resolved_profile)


def _ep_dense(dep: Deployment, tok: np.ndarray, skip=frozenset()) -> tuple[OpCost, OpCost, OpCost]:
    """(prefill, decode, LM head) costs of ``tok`` tokens per iteration under expert parallelism, as
    :func:`perfmodel.parallel.parallel_phases` prices a pass: the ops that do not read keys on the busiest of
    the ``ep // tp`` attention groups (``ceil(tok / groups)`` tokens), collectives over the group's
    topology, plus every MoE layer's routed experts and all-to-alls over all ``tok`` tokens
    (:func:`perfmodel.parallel.ep_moe_cost`, the deployment's placement when it has one)."""
    from perfmodel.comm import resolve_topology
    from perfmodel.parallel import ep_moe_cost, group_world, moe_ops_replaced_by_ep, ops_cost

    gpu, prof, prec = dep.gpu, dep.resolved_profile, dep.precision
    topo = resolve_topology(None, gpu, group_world(dep.tp, 1, 1, dep.ep))
    loc = np.ceil(tok / dep.attention_ranks)
    moe, _, _ = ep_moe_cost(dep.model, gpu, prof, tok, loc, dep.ep, prec, topo, None, dep.moe_placement)

    def body(phase, batch, q_len):
        ops = model_ops(dep.model, phase, batch, q_len, q_len, prec, dep.tp, lm_head_rows=0, knobs=dep.knobs)
        _, rest = moe_ops_replaced_by_ep(
            [t for t in ops if t[0] not in KV_DEPENDENT_OPS and t[0] not in skip]
        )
        return ops_cost(rest, gpu, prof, topo) + moe

    head = ops_cost(lm_head_ops(dep.kv_model, loc, dep.kv_precision, dep.tp), gpu, prof, topo)
    return body(Phase.PREFILL, 1, loc), body(Phase.DECODE, loc, 1), head


def _geo_grid(hi: float) -> np.ndarray:
    n = max(2, math.ceil(math.log2(max(hi, 2.0)) * _GRID_POINTS_PER_OCTAVE) + 1)
    return np.exp(np.linspace(0.0, math.log(max(hi, 2.0)), n))


def _query_grid(budget: int, tile: int) -> np.ndarray:
    """Query counts of the prefill-attention table: the geometric grid plus both ends of every query tile.

    A calibrated profile prices prefill attention as query tiles of ``tile`` rows
    (:func:`perfmodel.costs.attention.prefill_schedule_s`), a staircase in the query count: the cost is
    linear within one tile count and jumps between ``k * tile`` and ``k * tile + 1``.  With both ends of
    each step on the grid, interpolation never crosses a jump (a geometric grid alone did, and a chunk
    of 7,143 queries came out 1 % dear).
    """
    geo = _geo_grid(budget)
    if tile < 1:
        return geo
    k = np.arange(tile, budget + 1, tile, dtype=np.float64)
    ends = np.concatenate([k, k + 1.0])
    return np.unique(np.concatenate([geo, ends[ends <= budget]]))


def _grid_pos(grid: list[float], x: float) -> tuple[int, float]:
    """Index ``i`` and weight of ``x`` between ``grid[i]`` and ``grid[i + 1]`` (clamped to the grid)."""
    i = min(max(bisect_right(grid, x) - 1, 0), len(grid) - 2)
    return i, (x - grid[i]) / (grid[i + 1] - grid[i])


def _attention_tile(dep: Deployment) -> int:
    """Query rows per prefill-attention tile of the deployment's profile (0: priced without tiles)."""
    prof = dep.resolved_profile
    if prof.is_peak:
        return 0
    from perfmodel.calibration import OpClass

    return int(prof.params(OpClass.ATTENTION_PREFILL).tile_m or 128)


@dataclass
class IterationTimer:
    """Tables of iteration-time terms for one deployment, seconds.

    Parameters
    ----------
    dep : Deployment
    max_kv_tokens : int, tokens
        Longest sequence (prompt + output) the tables must cover.
    max_batch : int
        Largest decode batch.
    """

    dep: Deployment
    max_kv_tokens: int
    max_batch: int
    mem: ReplicaMemory | None = None

    def __post_init__(self) -> None:
        dep = self.dep
        budget = dep.token_budget
        knobs = dep.knobs
        if self.mem is None:
            self.mem = replica_memory(dep)
        off = None if knobs is None else knobs.offload
        skip = frozenset({"kv_append"}) if off is not None else frozenset()  # on the GPU only for prefill
        tok = np.arange(1, budget + 1, dtype=np.float64)
        self.ranks = dep.attention_ranks
        # dense part, per token count (index 0: nothing to run); decode-only passes use the decode op list
        if dep.ep > 1:
            pre, dec, head = _ep_dense(dep, tok, skip)
        else:
            pre = _split_cost(dep, Phase.PREFILL, 1, tok, tok, False, skip=skip)
            dec = _split_cost(dep, Phase.DECODE, tok, 1, tok, False, skip=skip)
            head = sum_costs(
                lm_head_ops(dep.kv_model, tok, dep.kv_precision, dep.tp), dep.gpu, dep.resolved_profile
            )
        self.dense_prefill_s = np.concatenate([[0.0], _total(pre, tok.shape)])
        self.dense_decode_s = np.concatenate([[0.0], _total(dec, tok.shape)])
        self.head_s = np.concatenate([[0.0], _total(head, tok.shape)])
        if dep.pp > 1:
            act = dep.precision.activations.bytes_per_element
            p2p = op_cost(
                Collective(
                    OpKind.SEND_RECV,
                    bytes=tok * dep.model.hidden * act,
                    world=2,
                    dtype=dep.precision.activations,
                ),
                dep.gpu,
                dep.resolved_profile,
            )
            extra = np.concatenate([[0.0], _total(p2p, tok.shape)]) * (dep.pp - 1)
            self.dense_prefill_s = self.dense_prefill_s + extra
            self.dense_decode_s = self.dense_decode_s + extra
        # decode attention: rows b = 1..max_batch (exact), columns a geometric grid of mean keys
        self.kv_grid = _geo_grid(self.max_kv_tokens)
        self._log_step = math.log(self.kv_grid[1])
        b = np.arange(1, self.max_batch + 1, dtype=np.float64)[:, None]
        b = np.ceil(b / self.ranks)  # under EP, the busiest attention group's sequences
        kv = self.kv_grid[None, :]
        self.offloaded = off is not None
        if off is not None:
            self._init_offload(tok, b, kv)
            dec = np.zeros((b.size, kv.size))  # decode attention runs on the pool (offload_s)
        else:
            dec = _total(_split_cost(dep, Phase.DECODE, b, 1, kv, True), (b.size, kv.size))
            if knobs is not None and knobs.shared_prefix_tokens and knobs.prefix_aware_kernel:
                # as the core's decode step: the prefix-aware split only where it is cheaper
                plain = knobs.replace(prefix_aware_kernel=False)
                dec = np.minimum(
                    dec,
                    _total(_split_cost(dep, Phase.DECODE, b, 1, kv, True, knobs=plain), (b.size, kv.size)),
                )
        self.attn_decode_rows = [[0.0] * kv.size] + dec.tolist()
        # prefill attention: queries c (geometric to the budget) x mean keys seen per query (geometric)
        self.q_grid = _query_grid(budget, _attention_tile(dep))
        c = self.q_grid[:, None]
        kv_mid = self.kv_grid[None, :]
        end = kv_mid + (c - 1.0) / 2.0  # last key of the chunk given the mean keys per query
        pre = _total(_split_cost(dep, Phase.PREFILL, 1, c, end, True), (c.size, kv_mid.size))
        self.attn_prefill_rows = pre.tolist()
        self.dense_prefill = self.dense_prefill_s.tolist()
        self.dense_decode = self.dense_decode_s.tolist()
        self.head = self.head_s.tolist()
        self._kv_grid = self.kv_grid.tolist()
        self._q_grid = self.q_grid.tolist()
        self._init_tiers()

    # -- scalar lookups (hot path) -------------------------------------------------
    def _kv_pos(self, kv: float) -> tuple[int, float]:
        g = self._kv_grid
        if kv <= 1.0:
            return 0, 0.0
        i = min(int(math.log(kv) / self._log_step), len(g) - 2)
        while i < len(g) - 2 and g[i + 1] < kv:
            i += 1
        while i > 0 and g[i] > kv:
            i -= 1
        return i, (kv - g[i]) / (g[i + 1] - g[i])

    def rank_prefill_attn_s(self, total_s: float, largest_s: float) -> float:
        """Prefill attention of an iteration on its busiest attention group: the chunks' sum ``total_s`` spread
        over the groups, but never below the largest chunk ``largest_s`` (a chunk runs on one group)."""
        return total_s if self.ranks == 1 else max(total_s / self.ranks, largest_s)

    def attn_decode_s(self, batch: int, total_kv: float) -> float:
        """Attention of ``batch`` decode sequences holding ``total_kv`` keys in all."""
        row = self.attn_decode_rows[batch]
        i, w = self._kv_pos(total_kv / batch)
        return row[i] + (row[i + 1] - row[i]) * w

    def attn_prefill_s(self, chunk: int, end: int) -> float:
        """Attention of a prefill chunk of ``chunk`` queries whose last key is ``end``."""
        kv_mid = end - (chunk - 1) / 2.0
        i, w = self._kv_pos(kv_mid)
        j, v = _grid_pos(self._q_grid, chunk)
        r0, r1 = self.attn_prefill_rows[j], self.attn_prefill_rows[j + 1]
        a = r0[i] + (r0[i + 1] - r0[i]) * w
        b = r1[i] + (r1[i + 1] - r1[i]) * w
        return a + (b - a) * v

    def iteration_s(
        self,
        decode_batch: int,
        total_kv: float,
        prefill_tokens: int,
        rows: int,
        prefill_attn_s: float,
        prefill_held_tokens: int = 0,
    ) -> float:
        """One forward pass; ``rows`` sequences emit a token; ``prefill_held_tokens``: prompt KV held by
        requests still prefilling (for the tiers)."""
        tokens = decode_batch + prefill_tokens
        dense = self.dense_prefill[tokens] if prefill_tokens else self.dense_decode[tokens]
        t = dense + self.head[rows] + prefill_attn_s
        if decode_batch:
            t += self.attn_decode_s(decode_batch, total_kv)
        if self.offloaded:
            t += self.offload_s(decode_batch, total_kv, prefill_tokens, t)
        elif self.tiers and decode_batch:
            t += self.tier_s(decode_batch, total_kv, prefill_held_tokens, t)
        return t

    # -- knobs that move the KV ------------------------------------------------------
    def _init_offload(self, tok: np.ndarray, b: np.ndarray, kv: np.ndarray) -> None:
        """Tables of the pool's decode work, the GPU's KV append of prefill tokens, and the link's terms."""
        dep, off = self.dep, self.dep.knobs.offload
        pool_prof = (
            peak_profile(off.pool_gpu)
            if dep.resolved_profile.is_peak
            else resolve_profile(off.pool_gpu, Mode.CALIBRATED)
        )
        pool = (
            _total(
                _split_cost(
                    dep, Phase.DECODE, b, 1, kv, True, only=POOL_OPS, gpu=off.pool_gpu, profile=pool_prof
                ),
                (b.size, kv.size),
            )
            / off.pool_devices_per_gpu
        )
        self.pool_decode_rows = [[0.0] * kv.size] + pool.tolist()
        append = _total(_split_cost(dep, Phase.PREFILL, 1, tok, tok, False, only={"kv_append"}), tok.shape)
        self.append_prefill = [0.0] + append.tolist()
        m, prec, tp = dep.kv_model, dep.kv_precision, dep.tp
        n_attn = attention_layer_count(m, dep.knobs)
        a = prec.activations.bytes_per_element
        if m.mla is not None:
            qo = m.q_heads // tp * (2 * (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim))
        else:
            qo = (m.q_heads // tp + 2 * kv_heads_per_gpu(m, tp)) * m.head_dim + m.q_heads // tp * m.head_dim
        # link seconds per decoding sequence and the messages' latency per step (the core's offloaded step)
        self.link_s_per_seq = n_attn * qo * a / off.link_bytes_per_s
        self.link_latency_s = 2 * n_attn * off.link_latency_s
        self.pipelined = bool(off.pipelined)
        self.ship_s_per_token = self.mem.kv_bytes_per_token_per_gpu / off.link_bytes_per_s

    def _init_tiers(self) -> None:
        knobs, mem, g = self.dep.knobs, self.mem, self.dep.gpu
        tiers = () if knobs is None else knobs.kv_tiers
        self.tiers = [(t.capacity_for(g), t.bandwidth_for(g)) for t in tiers]
        self.prefetch = bool(tiers) and knobs.prefetch
        self.n_attn = attention_layer_count(self.dep.kv_model, knobs)
        self.kept = self.dep.kept_tokens_fn()
        self.free_hbm_bytes = max(mem.free_for_kv_bytes_per_gpu, 0.0)

    def tier_s(self, decode_batch: int, total_kv: float, prefill_held_tokens: int, step_s: float) -> float:
        """Seconds to stream from the tiers the KV held beyond free HBM, beyond what prefetch hides.

        The KV held: each decoding sequence's kept KV at the batch's mean length (less the shared prefix)
        and its state, the shared prefix once, and the prompt tokens prefilled so far.  As
        :func:`perfmodel.phases.decode_step_cost`: the tiers fill in order, each streamed at its
        bandwidth; with prefetch only the part beyond ``step_s`` is added, plus one attention layer's share.
        """
        mem = self.mem
        own = mem.own_tokens(self.kept(round(total_kv / decode_batch))) if decode_batch else 0
        held = (
            mem.kv_bytes_per_token_per_gpu * (decode_batch * own + mem.prefix_tokens + prefill_held_tokens)
            + decode_batch * mem.state_bytes_per_gpu
        )
        left = held - self.free_hbm_bytes
        if left <= 0:
            return 0.0
        t = 0.0
        for cap, bw in self.tiers:
            part = min(left, cap)
            t += part / bw
            left -= part
        if self.prefetch:
            t = max(t - step_s, 0.0) + t / self.n_attn
        return t

    def offload_s(self, decode_batch: int, total_kv: float, prefill_tokens: int, gpu_s: float) -> float:
        """Seconds an iteration adds for the attention pool, beyond ``gpu_s`` of GPU work.

        Decode: the pool's attention and the link's messages (as :func:`perfmodel.phases.decode_step_cost`:
        with pipelining and a batch of two or more, only what exceeds the GPU's work; otherwise their
        sum).  Prefill chunks: their KV appended on the GPU and shipped to the pool, the shipping beyond
        the iteration's GPU work (as :func:`perfmodel.phases.prefill_cost`).
        """
        append = self.append_prefill[prefill_tokens]
        gpu_s += append
        ship = prefill_tokens * self.ship_s_per_token
        if not decode_batch:
            return append + max(ship - gpu_s, 0.0)
        row = self.pool_decode_rows[decode_batch]
        i, w = self._kv_pos(total_kv / decode_batch)
        pool = row[i] + (row[i + 1] - row[i]) * w
        link = decode_batch * self.link_s_per_seq + self.link_latency_s
        if self.pipelined and decode_batch >= 2:
            return append + max(max(pool, link + ship) - gpu_s, 0.0)
        return append + pool + link + max(ship - gpu_s, 0.0)
