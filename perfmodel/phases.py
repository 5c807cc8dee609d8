"""The long-context phase model: prefill, decode, memory, concurrency, context switch.

Every function is pure and accepts numpy arrays for the sizes (``batch``,
``context_len``, ``output_tokens``), which is how :func:`perfmodel.sweep`
evaluates a million scenarios without a Python loop per point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.spec import GPU
from perfmodel.calibration import Profile
from perfmodel.costs import ZERO, OpCost, op_cost
from perfmodel.layers import Precision, activation_bytes, kv_bytes_per_token_per_gpu, lm_head_ops, model_ops
from perfmodel.models import ModelSpec
from perfmodel.ops import MemLocation, Memcpy, Phase

#: Tokens per prefill pass (chunked prefill); also sizes the activation workspace.
DEFAULT_PREFILL_CHUNK_TOKENS = 8192
#: Fraction of usable device memory kept free for allocator fragmentation and
#: framework workspaces (CUDA graphs, communication buffers).
DEFAULT_RESERVE_FRACTION = 0.02


def forward_cost(
    model: ModelSpec, gpu: GPU, profile: Profile, phase: Phase, batch, q_len, kv_len,
    precision: Precision = Precision(), tp: int = 1, lm_head_rows=None,
) -> OpCost:
    """Cost of one forward pass on one GPU of the TP group (ops summed)."""
    return sum_costs(model_ops(model, phase, batch, q_len, kv_len, precision, tp, lm_head_rows), gpu, profile)


def sum_costs(ops, gpu: GPU, profile: Profile) -> OpCost:
    """Sum of ``count * cost(op)`` over ``(name, op, count)`` triples."""
    total = ZERO
    for _, op, count in ops:
        total = total + op_cost(op, gpu, profile).scale(count)
    return total


def prefill_cost(
    model: ModelSpec, gpu: GPU, profile: Profile, context_len, batch=1,
    precision: Precision = Precision(), tp: int = 1, chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
) -> OpCost:
    """Prefill of ``batch`` prompts of ``context_len`` tokens, in chunks of ``chunk_tokens``.

    The prompt is cut into ``n = ceil(context_len / chunk)`` equal chunks; chunk
    ``i`` attends to ``(i + 1)`` chunks of keys.  FLOPs and bytes are linear in
    the key count, so ``n`` passes at the mean key count give the exact totals
    (the causal attention total is exactly ``L (L + 1) / 2`` pairs).  The LM head
    runs once per sequence, on the last position.
    """
    ctx = np.asarray(context_len, dtype=np.float64)
    if chunk_tokens:
        n = np.ceil(ctx / chunk_tokens)
    else:
        n = np.ones_like(ctx)
    q = ctx / n
    kv_mean = q * (n + 1) / 2.0
    body = forward_cost(model, gpu, profile, Phase.PREFILL, batch, q, kv_mean, precision, tp, lm_head_rows=0)
    head = sum_costs(lm_head_ops(model, batch, precision, tp), gpu, profile)
    return body.scale(n if n.ndim else float(n)) + head


def decode_step_cost(
    model: ModelSpec, gpu: GPU, profile: Profile, kv_len, batch=1,
    precision: Precision = Precision(), tp: int = 1,
) -> OpCost:
    """One decode step: ``batch`` sequences each attend to ``kv_len`` keys."""
    return forward_cost(model, gpu, profile, Phase.DECODE, batch, 1, kv_len, precision, tp)


def decode_cost(
    model: ModelSpec, gpu: GPU, profile: Profile, context_len, output_tokens, batch=1,
    precision: Precision = Precision(), tp: int = 1,
) -> OpCost:
    """All ``output_tokens`` decode steps after a ``context_len`` prompt.

    Step ``t`` (1-based) attends to ``context_len + t`` keys; costs are affine in
    the key count within a regime, so ``output_tokens`` steps at the mean count
    ``context_len + (output_tokens + 1) / 2`` give the sum.
    """
    out = np.asarray(output_tokens, dtype=np.float64)
    kv_mean = np.asarray(context_len, dtype=np.float64) + (out + 1) / 2.0
    step = decode_step_cost(model, gpu, profile, kv_mean, batch, precision, tp)
    return step.scale(out if out.ndim else float(out))


@dataclass(frozen=True)
class MemoryBudget:
    """Device memory of one GPU of the TP group, bytes.

    ``max_concurrency`` = floor(free_for_kv_bytes / kv_bytes_per_user): users
    whose whole KV cache (prompt plus output) is resident at once.
    """

    capacity_bytes: Any
    weight_bytes: Any
    activation_bytes: Any
    reserve_bytes: Any
    kv_bytes_per_token: Any
    kv_bytes_per_user: Any
    free_for_kv_bytes: Any
    max_concurrency: Any


def memory_budget(
    model: ModelSpec, gpu: GPU, context_len, output_tokens=0, precision: Precision = Precision(), tp: int = 1,
    chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS, reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
    batch=1,
) -> MemoryBudget:
    """HBM budget per GPU: weights + KV + activations + reserve <= usable HBM.

    Weights are split evenly over the TP group.  Activations are the workspace of
    the larger of one prefill chunk and one decode batch.
    """
    ctx = np.asarray(context_len, dtype=np.float64)
    tokens_per_user = ctx + np.asarray(output_tokens, dtype=np.float64)
    capacity = float(gpu.hbm_usable_bytes)
    weights = model.weight_bytes(precision.weights) / tp
    pass_tokens = np.minimum(ctx, chunk_tokens) if chunk_tokens else ctx
    pass_tokens = np.maximum(pass_tokens * batch, batch)
    act = activation_bytes(model, pass_tokens, precision, tp)
    reserve = reserve_fraction * capacity
    kv_tok = kv_bytes_per_token_per_gpu(model, tp, precision.kv)
    kv_user = kv_tok * _kv_tokens(model, tokens_per_user)
    free = capacity - weights - act - reserve
    conc = np.floor(np.maximum(free, 0.0) / kv_user)
    f = lambda x: x if np.ndim(x) else float(x)  # noqa: E731
    return MemoryBudget(
        capacity_bytes=capacity, weight_bytes=weights, activation_bytes=f(act), reserve_bytes=reserve,
        kv_bytes_per_token=kv_tok, kv_bytes_per_user=f(kv_user), free_for_kv_bytes=f(free),
        max_concurrency=f(conc),
    )


def _kv_tokens(model: ModelSpec, tokens):
    """Tokens whose KV a sequence keeps: all, or the last ``sliding_window``."""
    if model.sliding_window > 0:
        return np.minimum(tokens, model.sliding_window)
    return tokens


@dataclass(frozen=True)
class ContextSwitch:
    """Swap one user's KV out to host memory and another's in, seconds.

    ``serial_s`` is out + in one after another (the paper's formula);
    ``duplex_s`` overlaps them on the full-duplex PCIe link.
    """

    swap_out: OpCost
    swap_in: OpCost

    @property
    def serial_s(self):
        return self.swap_out.total_s + self.swap_in.total_s

    @property
    def duplex_s(self):
        return np.maximum(self.swap_out.total_s, self.swap_in.total_s)


def context_switch(gpu: GPU, profile: Profile, kv_bytes_per_user_per_gpu) -> ContextSwitch:
    """Each GPU of the group moves its own share of the KV over its own PCIe link."""
    out = Memcpy(kv_bytes_per_user_per_gpu, MemLocation.DEVICE, MemLocation.HOST_PINNED)
    inn = Memcpy(kv_bytes_per_user_per_gpu, MemLocation.HOST_PINNED, MemLocation.DEVICE)
    return ContextSwitch(op_cost(out, gpu, profile), op_cost(inn, gpu, profile))
