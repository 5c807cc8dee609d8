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

With KV-cache knobs (``dep.knobs``) every table comes from the same
:func:`perfmodel.layers.model_ops` with ``knobs=``: the decode columns are
sequence lengths, and the knobs decide the keys kept and read (eviction,
window, density) and their format (a dequantisation pass).  Like
:func:`perfmodel.phases.decode_cost`, a batch is priced at its mean length;
with a token budget or a window, which cap each sequence, that is an upper
bound (the kept count is concave in the length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfmodel.costs import OpCost, op_cost
from perfmodel.layers import lm_head_ops, model_ops
from perfmodel.ops import Collective, OpKind, Phase
from perfmodel.phases import sum_costs
from perfmodel.serving.deployment import Deployment

#: Ops whose cost depends on the key count; everything else depends only on the token count.
KV_DEPENDENT_OPS = frozenset({"attention", "kv_b_proj", "kv_dequant", "prefix_attention",
                              "recurrent.chunk_attention"})

_GRID_POINTS_PER_OCTAVE = 16


def _total(cost: OpCost, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(cost.total_s, dtype=np.float64), shape).copy()


def _split_cost(dep: Deployment, phase: Phase, batch, q_len, kv_len, kv_part: bool) -> OpCost:
    ops = model_ops(dep.model, phase, batch, q_len, kv_len, dep.precision, dep.tp, lm_head_rows=0, knobs=dep.knobs)
    keep = [(n, o, c) for n, o, c in ops if (n in KV_DEPENDENT_OPS) == kv_part]
    return sum_costs(keep, dep.gpu, dep.resolved_profile)


def _geo_grid(hi: float) -> np.ndarray:
    n = max(2, math.ceil(math.log2(max(hi, 2.0)) * _GRID_POINTS_PER_OCTAVE) + 1)
    return np.exp(np.linspace(0.0, math.log(max(hi, 2.0)), n))


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

    def __post_init__(self) -> None:
        dep = self.dep
        budget = dep.token_budget
        tok = np.arange(1, budget + 1, dtype=np.float64)
        # dense part, per token count (index 0: nothing to run); decode-only passes use the decode op list
        self.dense_prefill_s = np.concatenate([[0.0], _total(_split_cost(dep, Phase.PREFILL, 1, tok, tok, False),
                                                             tok.shape)])
        self.dense_decode_s = np.concatenate([[0.0], _total(_split_cost(dep, Phase.DECODE, tok, 1, tok, False),
                                                            tok.shape)])
        head = sum_costs(lm_head_ops(dep.kv_model, tok, dep.kv_precision, dep.tp), dep.gpu, dep.resolved_profile)
        self.head_s = np.concatenate([[0.0], _total(head, tok.shape)])
        if dep.pp > 1:
            act = dep.precision.activations.bytes_per_element
            p2p = op_cost(Collective(OpKind.SEND_RECV, bytes=tok * dep.model.hidden * act, world=2,
                                     dtype=dep.precision.activations), dep.gpu, dep.resolved_profile)
            extra = np.concatenate([[0.0], _total(p2p, tok.shape)]) * (dep.pp - 1)
            self.dense_prefill_s = self.dense_prefill_s + extra
            self.dense_decode_s = self.dense_decode_s + extra
        # decode attention: rows b = 1..max_batch (exact), columns a geometric grid of mean keys
        self.kv_grid = _geo_grid(self.max_kv_tokens)
        self._log_step = math.log(self.kv_grid[1])
        b = np.arange(1, self.max_batch + 1, dtype=np.float64)[:, None]
        kv = self.kv_grid[None, :]
        dec = _total(_split_cost(dep, Phase.DECODE, b, 1, kv, True), (b.size, kv.size))
        self.attn_decode_rows = [[0.0] * kv.size] + dec.tolist()
        # prefill attention: queries c (geometric to the budget) x mean keys seen per query (geometric)
        self.q_grid = _geo_grid(budget)
        self._q_log_step = math.log(self.q_grid[1])
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

    def attn_decode_s(self, batch: int, total_kv: float) -> float:
        """Attention of ``batch`` decode sequences holding ``total_kv`` keys in all."""
        row = self.attn_decode_rows[batch]
        i, w = self._kv_pos(total_kv / batch)
        return row[i] + (row[i + 1] - row[i]) * w

    def attn_prefill_s(self, chunk: int, end: int) -> float:
        """Attention of a prefill chunk of ``chunk`` queries whose last key is ``end``."""
        kv_mid = end - (chunk - 1) / 2.0
        i, w = self._kv_pos(kv_mid)
        g = self._q_grid
        j = min(int(math.log(chunk) / self._q_log_step), len(g) - 2) if chunk > 1 else 0
        while j < len(g) - 2 and g[j + 1] < chunk:
            j += 1
        while j > 0 and g[j] > chunk:
            j -= 1
        v = (chunk - g[j]) / (g[j + 1] - g[j]) if chunk > 1 else 0.0
        r0, r1 = self.attn_prefill_rows[j], self.attn_prefill_rows[j + 1]
        a = r0[i] + (r0[i + 1] - r0[i]) * w
        b = r1[i] + (r1[i + 1] - r1[i]) * w
        return a + (b - a) * v

    def iteration_s(self, decode_batch: int, total_kv: float, prefill_tokens: int, rows: int,
                    prefill_attn_s: float) -> float:
        """One forward pass; ``rows`` sequences emit a token."""
        tokens = decode_batch + prefill_tokens
        dense = self.dense_prefill[tokens] if prefill_tokens else self.dense_decode[tokens]
        t = dense + self.head[rows] + prefill_attn_s
        if decode_batch:
            t += self.attn_decode_s(decode_batch, total_kv)
        return t
