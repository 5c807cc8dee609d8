"""KV Prediction (Horton et al., arXiv 2410.08391): a small auxiliary model prefills the prompt and its KV
cache is projected to the base model's, which then decodes.

The time to first token is the auxiliary model's prefill (:func:`perfmodel.phases.prefill_cost`), the
learned projection and the base model's first decode step over the predicted cache.  The projection is
priced as two GEMMs per base layer (its K and its V), each ``[batch x prompt, aux KV width] @ [aux KV
width, base KV width per GPU]``, where a KV width is KV heads x head size: every base layer's keys and
values come from one auxiliary layer's.  The base model's own prefill is the baseline; the decode after
the first token is the base model's as without prediction.  Device memory holds both models' weights,
the base model's KV for ``batch`` sequences and, while the projection runs, the auxiliary KV of the
prompts.  The quality of the predicted cache is not modelled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from perfmodel.errors import DoesNotFitError, InvalidInputError


@dataclass(frozen=True)
class KvPredictionResult:
    """Seconds, FLOPs and bytes of a KV-predicted prompt beside the base model's own prefill (one GPU of the
    TP group)."""

    model: str
    predictor: str
    gpu: str
    mode: str
    tp: int
    context_len: int
    output_tokens: int
    batch: int
    predictor_prefill_s: float
    projection_s: float
    first_token_s: float
    ttft_s: float
    base_prefill_s: float
    ttft_speedup: float
    ttft_flops_per_gpu: float
    base_prefill_flops_per_gpu: float
    decode_s: float
    predictor_weight_bytes: int
    max_concurrency: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def kv_prediction(
    model: str,
    predictor: str,
    gpu: str,
    context_len: int,
    output_tokens: int = 128,
    batch: int = 1,
    mode: str = "calibrated",
    tp: int = 1,
    weight_dtype: str | None = None,
    kv_dtype: str | None = None,
) -> KvPredictionResult:
    """Price KV Prediction: ``predictor``'s prefill, the KV projection and ``model``'s first decode step
    (``ttft_s``), against ``model``'s own prefill (``base_prefill_s``).

    Parameters
    ----------
    model, predictor : str
        The base and the auxiliary model (names or ``config.json`` paths); both need K/V heads (not MLA).
    gpu : str
    context_len : int, tokens
        Prompt length.
    output_tokens : int, tokens
        Tokens the base model generates (``decode_s``).
    batch : int, sequences
    mode : str
        ``calibrated`` or ``peak``.
    tp : int
        Tensor-parallel degree of both models.

    Returns
    -------
    KvPredictionResult
        Seconds (``*_s``), FLOPs per GPU, and ``ttft_speedup`` = ``base_prefill_s / ttft_s``.

    Raises
    ------
    InvalidInputError
        For bad sizes, an MLA model, or a degree that does not divide the heads.
    DoesNotFitError
        When both models' weights and ``batch`` sequences' KV do not fit.
    """
    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import resolve_profile
    from perfmodel.layers import Precision, check_tp, kv_bytes_per_token_per_gpu, kv_heads_per_gpu
    from perfmodel.models import load_model
    from perfmodel.ops import Gemm
    from perfmodel.phases import decode_cost, decode_step_cost, memory_budget, prefill_cost, sum_costs
    from perfmodel.scenario import check_ints, check_mode

    for name, v, lo in (
        ("context_len", context_len, 1),
        ("output_tokens", output_tokens, 0),
        ("batch", batch, 1),
        ("tp", tp, 1),
    ):
        check_ints(name, v, lo)
    m, aux, g = load_model(model), load_model(predictor), load_gpu(gpu)
    for spec in (m, aux):
        if spec.mla is not None:
            raise InvalidInputError(
                f"KV prediction is priced for K/V-head caches; {spec.name} stores an MLA latent"
            )
        check_tp(spec, tp)
    mode_ = check_mode(mode)
    prof = resolve_profile(g, mode_)
    prec = Precision.of(weight_dtype or m.weight_dtype or "bf16", kv=kv_dtype)
    aux_prec = Precision.of(weight_dtype or aux.weight_dtype or "bf16", kv=kv_dtype)

    mem = memory_budget(m, g, context_len, output_tokens, prec, tp, batch=batch)
    aux_weights = aux.weight_bytes(aux_prec.weights) / tp
    aux_kv = batch * context_len * kv_bytes_per_token_per_gpu(aux, tp, aux_prec.kv)
    fit = int(max(0.0, (float(mem.free_for_kv_bytes) - aux_weights - aux_kv)) // float(mem.kv_bytes_per_user))
    if fit < batch:
        raise DoesNotFitError(
            f"{m.name} with {aux.name} on {g.name} x{tp}: {batch} sequence(s) of "
            f"{context_len + output_tokens} tokens do not fit beside both models' weights "
            f"({fit} do)"
        )

    pre_aux = prefill_cost(aux, g, prof, context_len, batch, aux_prec, tp)
    rows = batch * context_len
    width_aux = aux.kv_heads * aux.head_dim
    width_base = kv_heads_per_gpu(m, tp) * m.head_dim
    proj = sum_costs(
        [("kv_projection", Gemm(rows, width_base, width_aux, prec.math, prec.weights), 2 * m.num_layers)],
        g,
        prof,
    )
    first = decode_step_cost(m, g, prof, context_len + 1, batch, prec, tp)
    ttft = pre_aux + proj + first
    base = prefill_cost(m, g, prof, context_len, batch, prec, tp)
    dec = decode_cost(m, g, prof, context_len, output_tokens, batch, prec, tp)
    ttft_s, base_s = float(ttft.total_s), float(base.total_s)
    return KvPredictionResult(
        model=m.name,
        predictor=aux.name,
        gpu=g.name,
        mode=mode_.value,
        tp=int(tp),
        context_len=int(context_len),
        output_tokens=int(output_tokens),
        batch=int(batch),
        predictor_prefill_s=float(pre_aux.total_s),
        projection_s=float(proj.total_s),
        first_token_s=float(first.total_s),
        ttft_s=ttft_s,
        base_prefill_s=base_s,
        ttft_speedup=base_s / ttft_s,
        ttft_flops_per_gpu=float(ttft.flops),
        base_prefill_flops_per_gpu=float(base.flops),
        decode_s=float(dec.total_s),
        predictor_weight_bytes=int(aux.weight_bytes(aux_prec.weights)),
        max_concurrency=fit,
    )
