"""Blockwise computation of attention and the feed-forward (Blockwise Parallel Transformer, Liu & Abbeel 2023).

A prefill of ``batch`` prompts of ``context_len`` tokens computed three ways, each with the prompt's KV
cache stored (inference):

``vanilla``
    Attention materialises its score matrix: one layer's ``q_heads / tp x L x L`` fp32 scores per
    sequence are live beside the whole sequence's feed-forward activations.
``memory_efficient``
    Attention is tiled (FlashAttention: no score matrix), but the feed-forward runs over the whole
    sequence at once, so its intermediate (``L x intermediate``) is live.
``blockwise``
    Attention and feed-forward both run per block of ``block_tokens`` query tokens (BPT, and chunked
    prefill): only one block's activations are live.

The peak activation bytes are :func:`perfmodel.layers.activation_bytes` of the tokens one pass holds (all
of them, or one block), as :func:`perfmodel.phases.memory_budget` counts the workspace, plus the scores
for ``vanilla``.  ``max_context_tokens`` is the longest prompt whose weights, KV, activations and
reserve fit in HBM under each scheme (the budget's rule).  The prefill time of ``blockwise`` and
``memory_efficient`` is :func:`perfmodel.phases.prefill_cost` with ``chunk_tokens`` the block or the
whole prompt (the GEMMs at ``M = block`` or ``M = L``; causal attention over the same pairs); the
vanilla kernel's time (writing and reading the scores) is not priced (``None``).

What the model does not represent: training (the activations of every layer kept for the backward pass,
gradients and optimizer state, which BPT's headline lengths are about); inference keeps the KV cache
instead, which no blockwise schedule shrinks.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from perfmodel.errors import DoesNotFitError, InvalidInputError

#: the longest prompt searched for (tokens): beyond the largest HBM at any KV size
MAX_SEARCH_TOKENS = 1 << 34
#: bytes per element of the materialised attention scores (softmax in fp32)
SCORE_BYTES_PER_ELEMENT = 4


class Scheme(str, enum.Enum):
    """How a prefill pass computes attention and the feed-forward; see the module docstring."""

    VANILLA = "vanilla"
    MEMORY_EFFICIENT = "memory_efficient"
    BLOCKWISE = "blockwise"


@dataclass(frozen=True)
class SchemeCost:
    """One scheme at the scenario's context: peak activation bytes per GPU, whether the prompt fits, the
    longest prompt that fits (tokens, 0 when none does) and the prefill time (s; None where not priced)."""

    scheme: Scheme
    activation_bytes: float
    fits: bool
    max_context_tokens: int
    prefill_s: float | None


@dataclass(frozen=True)
class BlockwiseResult:
    """The three schemes of one prefill (``schemes`` in :class:`Scheme` order); see the module docstring."""

    model: str
    gpu: str
    mode: str
    tp: int
    batch: int
    context_len: int
    block_tokens: int
    hbm_capacity_bytes: float
    weight_bytes_per_gpu: float
    kv_bytes_per_gpu: float
    schemes: tuple[SchemeCost, ...]

    def scheme(self, which: Scheme | str) -> SchemeCost:
        """The cost of one scheme (by enum or name)."""
        want = Scheme(which)
        return next(s for s in self.schemes if s.scheme is want)

    @property
    def blockwise_over_whole_prefill(self) -> float:
        """Prefill time with blockwise feed-forward over the whole-sequence pass (memory-efficient)."""
        return self.scheme(Scheme.BLOCKWISE).prefill_s / self.scheme(Scheme.MEMORY_EFFICIENT).prefill_s

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "schemes"}
        for s in self.schemes:
            d = dataclasses.asdict(s)
            d["scheme"] = s.scheme.value
            out[s.scheme.value] = d
        out["blockwise_over_whole_prefill"] = self.blockwise_over_whole_prefill
        return out


def score_bytes(model, context_len, batch: int, tp: int):
    """Bytes per GPU of one layer's materialised attention scores: ``batch x q_heads/tp x L x L`` fp32."""
    return batch * -(-model.q_heads // tp) * float(context_len) ** 2 * SCORE_BYTES_PER_ELEMENT


def blockwise(
    model: str,
    gpu: str,
    context_len: int,
    block_tokens: int = 2048,
    batch: int = 1,
    tp: int = 1,
    mode: str = "calibrated",
    weight_dtype: str | None = None,
    kv_dtype: str | None = None,
) -> BlockwiseResult:
    """Price a prefill computed whole, with tiled attention, and blockwise (attention and feed-forward).

    Parameters
    ----------
    model, gpu : str
        Names or paths, as ``analyze`` takes them.
    context_len : int, tokens
        Prompt length at which activations and times are given.
    block_tokens : int, tokens
        Query tokens per block (the pass's token budget, shared by the batch as chunked prefill shares it).
    batch : int
        Prompts prefilled together.
    tp : int
        Tensor-parallel degree (heads and the feed-forward split over it).

    Returns
    -------
    BlockwiseResult
        Bytes per GPU, seconds, tokens.

    Raises
    ------
    InvalidInputError
        For bad sizes or a model without attention (a state-space stack).
    DoesNotFitError
        When the weights alone leave no room on the GPU.
    """
    from perfmodel.calibration import resolve_profile
    from perfmodel.hw.loader import load_gpu
    from perfmodel.layers import Precision, check_tp, kv_bytes_per_token_per_gpu
    from perfmodel.models import load_model
    from perfmodel.phases import memory_budget, prefill_cost
    from perfmodel.scenario import check_mode

    for name, v in (
        ("context_len", context_len),
        ("block_tokens", block_tokens),
        ("batch", batch),
        ("tp", tp),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidInputError(f"{name} must be an integer >= 1, got {v!r}")
    m, g = load_model(model), load_gpu(gpu)
    if m.ssm is not None:
        raise InvalidInputError(f"{m.name} is a state-space stack: it has no attention to compute blockwise")
    check_tp(m, tp)
    md = check_mode(mode)
    prof = resolve_profile(g, md)
    prec = Precision.of(weight_dtype or m.weight_dtype or "bf16", kv=kv_dtype)
    chunk = {Scheme.VANILLA: None, Scheme.MEMORY_EFFICIENT: None, Scheme.BLOCKWISE: block_tokens}

    def budget(scheme: Scheme, n: int):
        mb = memory_budget(m, g, n, 0, prec, tp, chunk_tokens=chunk[scheme], batch=batch)
        scores = score_bytes(m, n, batch, tp) if scheme is Scheme.VANILLA else 0.0
        return (
            mb,
            float(mb.activation_bytes) + scores,
            float(mb.free_for_kv_bytes) - scores >= batch * float(mb.kv_bytes_per_user),
        )

    base, _, _ = budget(Scheme.BLOCKWISE, 1)
    if float(base.free_for_kv_bytes) <= 0:
        raise DoesNotFitError(
            f"{m.name} on {g.name} x{tp}: the weights ({float(base.weight_bytes) / 1e9:.1f} GB per "
            f"GPU) leave no room for a prompt; raise tp",
            needed_bytes=int(base.weight_bytes),
            available_bytes=int(base.capacity_bytes),
        )
    out = []
    for s in Scheme:
        _, act, fits = budget(s, context_len)
        lo, hi = 0, MAX_SEARCH_TOKENS  # budget(lo) fits (0: nothing to fit), budget(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if budget(s, mid)[2] else (lo, mid)
        t = (
            None
            if s is Scheme.VANILLA
            else float(prefill_cost(m, g, prof, context_len, batch, prec, tp, chunk[s]).total_s)
        )
        out.append(SchemeCost(s, act, bool(fits), lo, t))
    return BlockwiseResult(
        model=m.name,
        gpu=g.name,
        mode=md.value,
        tp=tp,
        batch=batch,
        context_len=context_len,
        block_tokens=block_tokens,
        hbm_capacity_bytes=float(g.hbm_usable_bytes),
        weight_bytes_per_gpu=float(base.weight_bytes),
        kv_bytes_per_gpu=batch * context_len * float(kv_bytes_per_token_per_gpu(m, tp, prec.kv)),
        schemes=tuple(out),
    )
