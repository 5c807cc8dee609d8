"""Weight offload: layers kept in host memory (or NVMe) and streamed to the GPU for every forward pass.

The setting of ZeRO-Inference / DeepSpeed-Inference (Aminabadi et al. 2022) and FlexGen (Sheng et al.
2023): ``resident_layers`` of the ``L`` decoder layers stay in HBM with the embeddings and the LM head;
the other ``S = L - resident_layers`` are copied over a link of ``link_bytes_per_s`` (PCIe by default)
into a layer buffer before they run, every decode step and every prefill pass.

Per layer, ``c`` is the GPU time of one layer of the step (the step of the same model with every
weight resident, :func:`perfmodel.phases.decode_step_cost`, over ``L``) and ``t = layer_bytes / link``
the copy.  With prefetch (two layer buffers: layer ``i + 1`` is copied while ``i`` runs) a step takes
``resident * c + S * max(c, t)``; without it ``L * c + S * t``.  The step is link-bound while
``c < t``; ``compute_bound_batch`` is the smallest batch at which ``c >= t``, past which streaming
costs nothing more (``None`` when no batch that fits gets there).  HBM holds the resident weights,
the layer buffers, the activations and the KV cache; ``max_concurrency`` is the largest batch that
fits by the same rule :func:`perfmodel.phases.memory_budget` applies.  Layers are taken as equal in
size (an MoE model's dense and expert layers are averaged).

With ``kv_on_host`` (FlexGen's KV placement) the KV cache also lives in host memory: every decode step
streams each layer's KV of the batch (``batch x`` mean keys ``x`` KV bytes per token per layer) with its
weights, so ``t`` grows with the batch and the step may never turn compute-bound; each prefill pass
reads back the keys of earlier passes.  HBM then holds one (two with prefetch) layer's KV of the batch
in buffers instead of the cache, and host memory (``GPU.host_ddr_bytes``, less the streamed weights
unless they come from NVMe) bounds ``max_concurrency``.  The new tokens' KV goes back over the other
direction of the link, which is not counted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from perfmodel.errors import DoesNotFitError, InvalidInputError

LINK_KINDS = ("pcie", "nvme", "host")


@dataclass(frozen=True)
class OffloadResult:
    """Times (s), bytes and the bound of offloaded serving; see the module docstring."""

    model: str
    gpu: str
    mode: str
    context_len: int
    output_tokens: int
    batch: int
    layers: int
    resident_layers: int
    prefetch: bool
    kv_on_host: bool
    link: str
    link_bytes_per_s: float
    hbm_capacity_bytes: float
    weight_bytes: float
    layer_bytes: float
    weight_bytes_on_gpu: float
    streamed_bytes_per_pass: float
    gpu_layer_s: float
    link_layer_s: float
    kv_bytes_per_layer: float
    decode_s_per_token: float
    resident_decode_s_per_token: float
    prefill_s: float
    decode_s: float
    bound: str
    compute_bound_batch: int | None
    max_concurrency: int
    throughput_tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_link(text: str, gpu) -> tuple[str, float]:
    """``pcie`` (the GPU's PCIe rate, one direction) or ``nvme|host|pcie:BYTES_PER_S``."""
    kind, _, rate = str(text).partition(":")
    if kind not in LINK_KINDS:
        raise InvalidInputError(
            f"link must be one of {', '.join(LINK_KINDS)} (optionally :BYTES_PER_S), got {text!r}"
        )
    if not rate:
        if kind != "pcie":
            raise InvalidInputError(f"link {kind!r} needs a rate: {kind}:BYTES_PER_S")
        return kind, float(gpu.pcie_bytes_per_s_per_direction)
    try:
        bw = float(rate)
    except ValueError:
        raise InvalidInputError(f"link rate must be a number of bytes/s, got {rate!r}") from None
    if not math.isfinite(bw) or bw <= 0:
        raise InvalidInputError(f"link rate must be a positive finite number of bytes/s, got {rate!r}")
    return kind, bw


def offload(
    model: str,
    gpu: str,
    context_len: int = 2048,
    output_tokens: int = 128,
    batch: int = 1,
    resident_layers: int = 0,
    link: str = "pcie",
    prefetch: bool = True,
    mode: str = "calibrated",
    weight_dtype: str | None = None,
    kv_dtype: str | None = None,
    chunk_tokens: int | None = None,
    kv_on_host: bool = False,
) -> OffloadResult:
    """Price serving ``model`` on one ``gpu`` with all but ``resident_layers`` layers streamed per pass.

    ``kv_on_host`` keeps the KV cache in host memory too, streamed per layer with the weights.  Times
    are seconds, sizes bytes; see the module docstring.

    Raises :class:`InvalidInputError` for bad arguments and :class:`DoesNotFitError` when the resident
    part plus ``batch`` sequences' KV (or, with ``kv_on_host``, their layer buffers in HBM and the cache
    in host memory) does not fit.
    """
    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import Mode, resolve_profile
    from perfmodel.layers import Precision, kv_bytes_per_token_per_gpu
    from perfmodel.models import load_model
    from perfmodel.phases import (
        DEFAULT_PREFILL_CHUNK_TOKENS,
        decode_step_cost,
        max_users,
        memory_budget,
        prefill_cost,
    )

    for name, v, lo in (
        ("context_len", context_len, 1),
        ("output_tokens", output_tokens, 0),
        ("batch", batch, 1),
        ("resident_layers", resident_layers, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InvalidInputError(f"{name} must be an integer >= {lo}, got {v!r}")
    m, g = load_model(model), load_gpu(gpu)
    if resident_layers > m.num_layers:
        raise InvalidInputError(
            f"resident_layers={resident_layers} exceeds the {m.num_layers} layers of {m.name}"
        )
    if kv_on_host and m.ssm is not None:
        raise InvalidInputError(f"{m.name} is a state-space stack: it has no KV cache to keep in host memory")
    kind, bw = parse_link(link, g)
    prof = resolve_profile(g, Mode(mode))
    prec = Precision.of(weight_dtype or m.weight_dtype or "bf16", kv=kv_dtype)
    chunk = chunk_tokens or DEFAULT_PREFILL_CHUNK_TOKENS
    L = m.num_layers
    el = prec.weights.bytes_per_element
    weights = float(m.weight_bytes(prec.weights))
    outer = (m.embedding_params + m.lm_head_params + m.hidden) * el
    layer = (weights - outer) / L
    streamed = L - resident_layers
    buffers = 0 if streamed == 0 else (2 if prefetch else 1)
    on_gpu = outer + (resident_layers + buffers) * layer

    kv_tok_layer = float(kv_bytes_per_token_per_gpu(m, 1, prec.kv)) / L  # KV bytes per token per layer
    kv_buffers = 2 if prefetch else 1
    host_room = float(g.host_ddr_bytes) - (0.0 if kind == "nvme" else streamed * layer)

    def users(b: int) -> int:  # sequences whose KV fits while b run (the workspace of b)
        mb = memory_budget(m, g, context_len, output_tokens, prec, 1, chunk, batch=b)
        mb = dataclasses.replace(
            mb, weight_bytes=on_gpu, free_for_kv_bytes=mb.free_for_kv_bytes + mb.weight_bytes - on_gpu
        )
        if not kv_on_host:
            return int(max_users(mb))
        # HBM: the layer buffers of b sequences' KV; host memory: the whole cache
        kv_user = float(mb.kv_bytes_per_user)
        hbm = float(mb.free_for_kv_bytes) * L / (kv_buffers * kv_user)
        return int(max(min(hbm, max(host_room, 0.0) / kv_user), 0))

    def fits(b: int) -> int:  # the largest batch that fits (b: the batch whose workspace bounds the search)
        if not kv_on_host:
            return users(b)
        lo, hi = 0, users(1)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if users(mid) >= mid else (lo, mid - 1)
        return lo

    max_conc = fits(batch)
    if max_conc < batch:
        where = "weights, buffers and host memory" if kv_on_host else "weights and buffers"
        raise DoesNotFitError(
            f"{m.name} on {g.name} with {resident_layers} resident layers: {on_gpu / 1e9:.1f} GB of "
            f"{where} leave room for {max_conc} sequences of {context_len + output_tokens} "
            f"tokens, not {batch}"
        )
    kv_mean = context_len + (output_tokens + 1) / 2.0
    kv_layer = (lambda b: b * float(m.kv_tokens(kv_mean)) * kv_tok_layer) if kv_on_host else (lambda b: 0.0)

    def t_link(b: int) -> float:  # a streamed layer's copy: its weights (and, KV on host, its KV)
        return (layer + kv_layer(b)) / bw

    def t_kv(b: int) -> float:  # a resident layer's copy: its KV only
        return kv_layer(b) / bw

    def overlap(c: float, t: float) -> float:
        return max(c, t) if prefetch else c + t

    def step(b: int) -> tuple[float, float]:
        c = float(decode_step_cost(m, g, prof, kv_mean, b, prec).total_s) / L
        s = resident_layers * (overlap(c, t_kv(b)) if kv_on_host else c) + streamed * overlap(c, t_link(b))
        return c, s

    c, step_s = step(batch)
    resident_step = c * L
    pre = float(prefill_cost(m, g, prof, context_len, batch, prec, 1, chunk).total_s)
    passes = math.ceil(context_len / max(chunk / batch, 1.0))
    c_pre = pre / (passes * L)
    # KV on host: a pass reads back the keys of the passes before it (on average (passes - 1) / 2 of them)
    kv_pre = (
        batch * float(m.kv_tokens(context_len)) * (passes - 1) / (2 * passes) * kv_tok_layer / bw
        if kv_on_host
        else 0.0
    )
    pass_s = resident_layers * (overlap(c_pre, kv_pre) if kv_on_host else c_pre) + streamed * overlap(
        c_pre, layer / bw + kv_pre
    )
    prefill_s = passes * pass_s
    streams = streamed or kv_on_host
    cb = (
        _compute_bound_batch(
            lambda b: step(b)[0] - t_link(b) if streamed else step(b)[0] - t_kv(b), max_users_cap=fits(1)
        )
        if streams
        else 1
    )
    t_now = t_link(batch) if streamed else t_kv(batch)
    bound = "compute" if not streams or c >= t_now else "link"
    decode_s = step_s * output_tokens
    total = prefill_s + decode_s
    return OffloadResult(
        model=m.name,
        gpu=g.name,
        mode=str(Mode(mode).value),
        context_len=context_len,
        output_tokens=output_tokens,
        batch=batch,
        layers=L,
        resident_layers=resident_layers,
        prefetch=prefetch,
        kv_on_host=kv_on_host,
        link=kind,
        link_bytes_per_s=bw,
        hbm_capacity_bytes=float(g.hbm_usable_bytes),
        weight_bytes=weights,
        layer_bytes=layer,
        weight_bytes_on_gpu=on_gpu,
        streamed_bytes_per_pass=streamed * layer,
        gpu_layer_s=c,
        link_layer_s=t_now,
        kv_bytes_per_layer=kv_layer(batch),
        decode_s_per_token=step_s,
        resident_decode_s_per_token=resident_step,
        prefill_s=prefill_s,
        decode_s=decode_s,
        bound=bound,
        compute_bound_batch=cb,
        max_concurrency=max_conc,
        throughput_tokens_per_s=batch * output_tokens / total if total > 0 else 0.0,
    )


def _compute_bound_batch(margin_s, max_users_cap: int) -> int | None:
    """Smallest batch ``b <= max_users_cap`` with ``margin_s(b) >= 0``: a layer's compute minus its copy
    (compute grows with ``b`` faster than the copy does, once the copy's fixed weight bytes are met)."""
    if max_users_cap < 1 or margin_s(max_users_cap) < 0:
        return None
    lo, hi = 0, max_users_cap  # margin(lo) < 0 (lo = 0: nothing runs) and margin(hi) >= 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if margin_s(mid) >= 0:
            hi = mid
        else:
            lo = mid
    return hi
