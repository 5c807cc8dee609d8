"""The metrics of a priced scenario, computed in one place for ``analyze`` (scalars) and ``sweep`` (arrays)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from perfmodel.costs import Bound, OpCost
from perfmodel.errors import InvalidInputError

#: The metrics that are times (``sweep`` shows NaN for them where a point does not fit).
TIME_METRICS = (
    "prefill_s",
    "prefill_s_low",
    "prefill_s_high",
    "decode_s_per_token",
    "decode_s_per_token_low",
    "decode_s_per_token_high",
    "decode_s",
    "decode_s_low",
    "decode_s_high",
    "context_switch_s",
    "context_switch_duplex_s",
    "session_throughput_tokens_per_s",
)


#: The metrics :func:`scenario_metrics` returns, in order.
METRICS = (
    "weight_bytes",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "prefill_s",
    "prefill_s_low",
    "prefill_s_high",
    "decode_s_per_token",
    "decode_s_per_token_low",
    "decode_s_per_token_high",
    "decode_s",
    "decode_s_low",
    "decode_s_high",
    "max_concurrency",
    "context_switch_s",
    "context_switch_duplex_s",
    "session_throughput_tokens_per_s",
    "prefill_bound",
    "decode_bound",
)


def scenario_metrics(
    model,
    precision,
    knobs,
    context_len: Any,
    output_tokens: Any,
    batch: Any,
    memory,
    prefill: OpCost,
    decode_step: OpCost,
    decode: OpCost,
    switch,
) -> dict[str, Any]:
    """The output metrics of one scenario (scalars) or of a grid of them (arrays of one shape).

    The sizes and bounds of :func:`size_metrics` with the times of :func:`time_metrics`, keyed in the
    order of :data:`METRICS`.

    Parameters
    ----------
    model : ModelSpec
        The priced model (knobs applied, :func:`perfmodel.knobs.effective_model`).
    precision : Precision
        The priced formats (the knobs' KV format applied).
    knobs : Knobs or None
    context_len, output_tokens, batch : int or array, tokens / users
    memory : MemoryBudget
        Per GPU of the layout.
    prefill, decode_step, decode : OpCost, seconds
        The prefill, one decode step, and the whole decode.
    switch : ContextSwitch
        The swap of one user's KV cache, seconds.

    Returns
    -------
    dict
        ``weight_bytes`` (the whole model), ``kv_bytes_per_token``, ``kv_cache_bytes`` (bytes; every user,
        one GPU's share at TP 1), the times in :data:`TIME_METRICS` (seconds; the throughput in tokens/s),
        ``max_concurrency`` (users) and the ``prefill_bound`` and ``decode_bound`` (a :class:`Bound` value;
        a categorical column for arrays).  Arrays come back in the shape the sizes broadcast to (a grid:
        ``context x batch x output`` arrays of shapes ``(c, 1, 1)``, ``(1, b, 1)``, ``(1, 1, o)``), each
        a view where it depends on fewer axes; the two bounds, a categorical, flattened in C order.
    """
    d = {
        **size_metrics(
            model, precision, knobs, context_len, output_tokens, batch, memory, prefill, decode_step
        ),
        **time_metrics(context_len, output_tokens, batch, prefill, decode_step, decode, switch),
    }
    return {k: d[k] for k in METRICS}


def _grid_shape(context_len: Any, output_tokens: Any, batch: Any) -> tuple | None:
    """The shape the sizes broadcast to; None when all three are scalars."""
    if np.ndim(context_len) == 0 and np.ndim(batch) == 0 and np.ndim(output_tokens) == 0:
        return None
    return np.broadcast(np.asarray(context_len), np.asarray(batch), np.asarray(output_tokens)).shape


def size_metrics(
    model,
    precision,
    knobs,
    context_len: Any,
    output_tokens: Any,
    batch: Any,
    memory,
    prefill: OpCost,
    decode_step: OpCost,
) -> dict[str, Any]:
    """The metrics of :func:`scenario_metrics` that are not times: ``weight_bytes``, ``kv_bytes_per_token``,
    ``kv_cache_bytes`` (bytes), ``max_concurrency`` (users), ``prefill_bound`` and ``decode_bound``;
    scalars, or arrays over the grid the sizes broadcast to (as :func:`scenario_metrics` gives them)."""
    from perfmodel.layers import kv_bytes_per_token_per_gpu
    from perfmodel.phases import kv_cache_bytes_per_gpu

    kv = kv_cache_bytes_per_gpu(model, context_len, output_tokens, batch, precision, 1, knobs)
    d = {
        "weight_bytes": int(model.weight_bytes(precision.weights)),
        "kv_bytes_per_token": int(round(kv_bytes_per_token_per_gpu(model, 1, precision.kv, knobs))),
        "kv_cache_bytes": _int64_bytes(kv, context_len, batch),
        "max_concurrency": np.asarray(memory.max_concurrency).astype(np.int64),
    }
    n = _grid_shape(context_len, output_tokens, batch)
    if n is None:
        d.update(prefill_bound=bound_of(prefill), decode_bound=bound_of(decode_step))
        return {k: _scalar(v) for k, v in d.items()}
    d.update(prefill_bound=bound_of(prefill, n), decode_bound=bound_of(decode_step, n))
    return {
        k: (v if isinstance(v, (str, int)) or k.endswith("_bound") else np.broadcast_to(np.asarray(v), n))
        for k, v in d.items()
    }


def time_metrics(
    context_len: Any,
    output_tokens: Any,
    batch: Any,
    prefill: OpCost,
    decode_step: OpCost,
    decode: OpCost,
    switch,
) -> dict[str, Any]:
    """The metrics of :func:`scenario_metrics` in :data:`TIME_METRICS` (seconds; the throughput in
    tokens/s); scalars, or arrays over the grid the sizes broadcast to.  Elementwise: over a part of a grid
    (the costs and sizes restricted to it) they are that part of the grid's values."""
    b = np.asarray(batch, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    pre_s, step_s, dec_s = prefill.total_s, decode_step.total_s, decode.total_s  # each summed once
    total = np.asarray(pre_s, dtype=np.float64) + np.asarray(dec_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        throughput = np.where(total > 0, b * out / np.where(total > 0, total, 1.0), 0.0)
    d = {
        # the band's ends as OpCost.low_s and high_s give them (total_s plus the band)
        "prefill_s": pre_s,
        "prefill_s_low": pre_s + prefill.band_lo_s,
        "prefill_s_high": pre_s + prefill.band_hi_s,
        "decode_s_per_token": step_s,
        "decode_s_per_token_low": step_s + decode_step.band_lo_s,
        "decode_s_per_token_high": step_s + decode_step.band_hi_s,
        "decode_s": dec_s,
        "decode_s_low": dec_s + decode.band_lo_s,
        "decode_s_high": dec_s + decode.band_hi_s,
        "context_switch_s": switch.serial_s,
        "context_switch_duplex_s": switch.duplex_s,
        "session_throughput_tokens_per_s": throughput,
    }
    n = _grid_shape(context_len, output_tokens, batch)
    if n is None:
        return {k: _scalar(v) for k, v in d.items()}
    return {k: np.broadcast_to(np.asarray(v), n) for k, v in d.items()}


def _scalar(v: Any) -> Any:
    if isinstance(v, (str, int)):
        return v
    a = np.asarray(v)
    return int(a) if a.dtype.kind in "iu" else float(a)


def bound_of(cost: OpCost, shape: tuple | None = None) -> Any:
    """The largest term of ``cost`` (the first of equals: compute, memory, latency, interconnect): a
    :class:`Bound` value for a scalar cost, a categorical of them for an array cost (found over the
    cost's own shape, then spread over ``shape`` and flattened in C order when given)."""
    terms = np.stack(np.broadcast_arrays(cost.compute_s, cost.memory_s, cost.latency_s, cost.comm_s))
    idx = np.argmax(terms, axis=0)
    names = [Bound.COMPUTE.value, _value(cost.memory_bound), Bound.LATENCY.value, Bound.INTERCONNECT.value]
    if np.ndim(idx) == 0:
        b = cost.bound
        return b.value if isinstance(b, Bound) else str(b)
    cats = list(dict.fromkeys(names))
    codes = np.array([cats.index(x) for x in names], dtype=np.int8)[idx]  # over the cost's own shape
    if shape is not None:
        codes = np.broadcast_to(codes, shape).reshape(-1)
    return categorical(codes, tuple(cats))


def categorical(codes: np.ndarray, categories: tuple[str, ...]):
    """A pandas ``Categorical`` of ``codes`` (integers, each in ``[-1, len(categories))``, -1 missing) over
    ``categories``; their dtype is built once per tuple of names."""
    import pandas as pd

    return pd.Categorical.from_codes(codes, dtype=_categorical_dtype(categories), validate=False)


@functools.cache
def _categorical_dtype(categories: tuple[str, ...]):
    import pandas as pd

    return pd.CategoricalDtype(list(categories))


def _value(b: Any) -> str:
    return b.value if isinstance(b, Bound) else str(b)


def _int64_bytes(kv: Any, ctx: Any, b: Any) -> Any:
    """``kv`` (bytes, float) rounded to integers; a point beyond int64 (9.2e18 bytes, far beyond any device)
    is refused with :class:`InvalidInputError` naming it instead of wrapping round to a negative number."""
    kv = np.round(np.asarray(kv, dtype=np.float64))
    bad = ~(kv < 2.0**63)
    if np.any(bad):
        shape = np.broadcast(kv, np.asarray(ctx), np.asarray(b)).shape
        i = int(np.argmax(np.broadcast_to(bad, shape)))
        c, bb, k = (np.ravel(np.broadcast_to(np.asarray(x), shape))[i] for x in (ctx, b, kv))
        raise InvalidInputError(
            f"context {int(c):,} x batch {int(bb):,}: a KV cache of {float(k):.3g} bytes per "
            "GPU is beyond any device and any int64 column; use a smaller batch or context"
        )
    return kv.astype(np.int64)
