"""Prefix caching with a load cost: a cached prompt prefix's KV brought back from HBM, host memory or SSD.

A prompt of ``prefix_tokens + suffix_tokens``; the prefix's KV is cached in a tier (``hbm``: already
resident, nothing to load; ``host`` over the GPU's PCIe by default; ``ssd`` or any tier at a given
bytes/s).  On a miss the whole prompt is prefilled (:func:`perfmodel.phases.prefill_cost`).  On a hit
the prefix KV (``prefix_tokens x`` KV bytes per token per GPU, times ``batch``) is loaded and only the
suffix is prefilled, attending to all ``prefix + suffix`` keys (one forward with ``q_len = suffix``).
With ``overlap`` the load runs layer by layer under the suffix's compute (layer ``i``'s KV arrives
while layer ``i - 1`` runs): ``max(load, suffix) + min(load, suffix) / L``; without it the two add.
The expected time to first token at hit rate ``h`` is ``h hit + (1 - h) miss``; ``break_even_bytes_per_s``
is the tier rate at which a serial hit costs what recomputing the prefix does (APE's and prefix
caching's trade: loading beats recomputing only above it).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

from perfmodel.errors import DoesNotFitError, InvalidInputError


class Tier(str, enum.Enum):
    """Where a cached prefix's KV waits for a hit."""

    HBM = "hbm"
    HOST = "host"
    SSD = "ssd"


TIERS = tuple(t.value for t in Tier)


@dataclass(frozen=True)
class PrefixCacheResult:
    """Seconds and bytes of a prefix-cache hit and miss; see the module docstring."""

    model: str
    gpu: str
    mode: str
    tp: int
    prefix_tokens: int
    suffix_tokens: int
    batch: int
    tier: str
    tier_bytes_per_s: float | None
    overlap: bool
    hit_rate: float
    prefix_kv_bytes_per_gpu: float
    load_s: float
    suffix_prefill_s: float
    prefix_prefill_s: float
    miss_ttft_s: float
    hit_ttft_s: float
    expected_ttft_s: float
    hit_speedup: float
    break_even_bytes_per_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_tier_spec(text: str) -> tuple[Tier, float | None]:
    """``hbm``, ``host`` or ``host|ssd:BYTES_PER_S`` -> the tier and its rate (None: resident in HBM, or
    for ``host`` the GPU's PCIe rate, which :func:`parse_tier` fills in)."""
    kind, _, rate = str(text).partition(":")
    if kind not in TIERS:
        raise InvalidInputError(
            f"tier must be one of {', '.join(TIERS)} (host and ssd optionally :BYTES_PER_S), got {text!r}"
        )
    tier = Tier(kind)
    if tier is Tier.HBM:
        if rate:
            raise InvalidInputError("tier hbm takes no rate: its KV is already resident")
        return tier, None
    if not rate:
        if tier is Tier.SSD:
            raise InvalidInputError("tier ssd needs a rate: ssd:BYTES_PER_S")
        return tier, None
    try:
        bw = float(rate)
    except ValueError:
        raise InvalidInputError(f"tier rate must be a number of bytes/s, got {rate!r}") from None
    if not math.isfinite(bw) or bw <= 0:
        raise InvalidInputError(f"tier rate must be a positive finite number of bytes/s, got {rate!r}")
    return tier, bw


def tier_rate(tier: Tier, bytes_per_s: float | None, gpu) -> float | None:
    """The rate a tier loads at on ``gpu`` (bytes/s per GPU): the given one, the GPU's PCIe rate (one
    direction) for ``host`` without one, None for ``hbm`` (nothing to load)."""
    if tier is Tier.HBM:
        return None
    return float(gpu.pcie_bytes_per_s_per_direction) if bytes_per_s is None else float(bytes_per_s)


def parse_tier(text: str, gpu) -> tuple[str, float | None]:
    """``hbm``, ``host`` (the GPU's PCIe rate, one direction) or ``host|ssd:BYTES_PER_S``."""
    tier, bw = parse_tier_spec(text)
    return tier.value, tier_rate(tier, bw, gpu)


def hit_s(load_s: float, compute_s: float, layers: int, overlap: bool = True) -> float:
    """Seconds of a pass that loads ``load_s`` of KV beside ``compute_s`` of work: with ``overlap`` layer
    by layer (layer ``i``'s KV arrives while layer ``i - 1`` runs) ``max + min / layers``, else the sum."""
    if overlap:
        return max(load_s, compute_s) + min(load_s, compute_s) / layers
    return load_s + compute_s


def prefix_cache(
    model: str,
    gpu: str,
    prefix_tokens: int,
    suffix_tokens: int,
    batch: int = 1,
    tier: str = "host",
    hit_rate: float = 1.0,
    overlap: bool = True,
    mode: str = "calibrated",
    tp: int = 1,
    weight_dtype: str | None = None,
    kv_dtype: str | None = None,
) -> PrefixCacheResult:
    """Price a prefix-cache hit (load plus suffix prefill) against a miss (whole-prompt prefill).

    Raises :class:`InvalidInputError` for bad arguments and :class:`DoesNotFitError` when ``batch``
    prompts' KV does not fit in HBM beside the weights.
    """
    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import Mode, resolve_profile
    from perfmodel.layers import Precision, check_tp, kv_bytes_per_token_per_gpu
    from perfmodel.models import load_model
    from perfmodel.ops import Phase
    from perfmodel.phases import forward_cost, memory_budget, prefill_cost

    for name, v, lo in (
        ("prefix_tokens", prefix_tokens, 1),
        ("suffix_tokens", suffix_tokens, 1),
        ("batch", batch, 1),
        ("tp", tp, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InvalidInputError(f"{name} must be an integer >= {lo}, got {v!r}")
    if isinstance(hit_rate, bool) or not isinstance(hit_rate, (int, float)) or not 0 <= hit_rate <= 1:
        raise InvalidInputError(f"hit_rate must be in [0, 1], got {hit_rate!r}")
    m, g = load_model(model), load_gpu(gpu)
    check_tp(m, tp)
    kind, bw = parse_tier(tier, g)
    prof = resolve_profile(g, Mode(mode))
    prec = Precision.of(weight_dtype or m.weight_dtype or "bf16", kv=kv_dtype)
    total = prefix_tokens + suffix_tokens
    fit = int(memory_budget(m, g, total, 0, prec, tp, batch=batch).max_concurrency)
    if fit < batch:
        raise DoesNotFitError(
            f"{batch} prompts of {total} tokens do not fit on {g.name} x{tp} with {m.name} "
            f"({fit} do): a hit needs the prefix KV in HBM"
        )
    miss = float(prefill_cost(m, g, prof, total, batch, prec, tp).total_s)
    prefix_only = float(prefill_cost(m, g, prof, prefix_tokens, batch, prec, tp).total_s)
    suffix = float(forward_cost(m, g, prof, Phase.PREFILL, batch, suffix_tokens, total, prec, tp).total_s)
    kv_bytes = prefix_tokens * batch * kv_bytes_per_token_per_gpu(m, tp, prec.kv)
    load = 0.0 if bw is None else kv_bytes / bw
    L = m.num_layers
    hit = hit_s(load, suffix, L, overlap)
    # serial hit == recompute: kv_bytes / bw + suffix == prefix_only + suffix'  (suffix' ~ suffix)
    saved = miss - suffix
    break_even = kv_bytes / saved if saved > 0 else None
    return PrefixCacheResult(
        model=m.name,
        gpu=g.name,
        mode=str(Mode(mode).value),
        tp=tp,
        prefix_tokens=prefix_tokens,
        suffix_tokens=suffix_tokens,
        batch=batch,
        tier=kind,
        tier_bytes_per_s=bw,
        overlap=overlap,
        hit_rate=float(hit_rate),
        prefix_kv_bytes_per_gpu=kv_bytes,
        load_s=load,
        suffix_prefill_s=suffix,
        prefix_prefill_s=prefix_only,
        miss_ttft_s=miss,
        hit_ttft_s=hit,
        expected_ttft_s=hit_rate * hit + (1 - hit_rate) * miss,
        hit_speedup=miss / hit if hit > 0 else math.inf,
        break_even_bytes_per_s=break_even,
    )
