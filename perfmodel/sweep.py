"""``sweep``: the Cartesian product of scenario axes, evaluated with numpy.

Each TP degree changes the op list's structure, so the sweep runs one
vectorised evaluation per TP degree; every other axis is a numpy array.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from hw.loader import load_gpu
from perfmodel.calibration import Mode, resolve_profile
from perfmodel.errors import InvalidInputError
from perfmodel.layers import Precision, check_tp
from perfmodel.models import load_model
from perfmodel.phases import (
    DEFAULT_PREFILL_CHUNK_TOKENS,
    DEFAULT_RESERVE_FRACTION,
    context_switch,
    decode_cost,
    decode_step_cost,
    memory_budget,
    prefill_cost,
)

AXES = ("context_len", "batch", "tp", "output_tokens")


def _axis(name: str, values: Any, minimum: int) -> np.ndarray:
    vals = np.atleast_1d(np.asarray(values))
    if vals.size == 0:
        raise InvalidInputError(f"sweep axis {name!r} is empty")
    if vals.dtype.kind not in "iuf":
        raise InvalidInputError(f"sweep axis {name!r} must hold integers >= {minimum}, got {vals.dtype} values")
    f = vals.astype(np.float64).ravel()
    if not np.all(np.isfinite(f)) or np.any(f < minimum) or np.any(f != np.round(f)):
        bad = f[~np.isfinite(f) | (f < minimum) | (f != np.round(f))][0]
        raise InvalidInputError(f"sweep axis {name!r} must hold integers >= {minimum}, got {bad}")
    return vals.astype(np.int64).ravel()


def sweep(
    model,
    gpu,
    context_len: Iterable[int] | int = 50_000,
    batch: Iterable[int] | int = 1,
    tp: Iterable[int] | int = 1,
    output_tokens: Iterable[int] | int = 250,
    mode: "Mode | str" = Mode.PEAK,
    weight_dtype: str = "bf16",
    kv_dtype: str | None = None,
    activation_dtype: str = "bf16",
    chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
    reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
    profile=None,
) -> pd.DataFrame:
    """One row per point of ``context_len x batch x tp x output_tokens``.

    Columns are the :func:`perfmodel.analyze` keys plus ``fits``: False where
    the weights plus ``batch`` users' KV do not fit, and the times there are NaN.
    """
    m = load_model(model)
    g = load_gpu(gpu)
    ctx_ax = _axis("context_len", context_len, 1)
    b_ax = _axis("batch", batch, 1)
    tp_ax = _axis("tp", tp, 1)
    out_ax = _axis("output_tokens", output_tokens, 0)
    for t in tp_ax:
        check_tp(m, int(t))
    prec = Precision.of(weight_dtype, activation_dtype, kv_dtype)
    prof = resolve_profile(g, Mode(mode), profile)
    ctx, b, out = (a.ravel().astype(np.float64) for a in np.meshgrid(ctx_ax, b_ax, out_ax, indexing="ij"))
    frames = []
    for t in tp_ax:
        t = int(t)
        mem = memory_budget(m, g, ctx, out, prec, t, chunk_tokens, reserve_fraction, batch=b)
        fits = mem.max_concurrency >= b
        pre = prefill_cost(m, g, prof, ctx, b, prec, t, chunk_tokens)
        step = decode_step_cost(m, g, prof, ctx, b, prec, t)
        dec = decode_cost(m, g, prof, ctx, out, b, prec, t)
        sw = context_switch(g, prof, mem.kv_bytes_per_user)
        nan = np.where(fits, 1.0, np.nan)
        pre_s, dec_s = pre.total_s * nan, dec.total_s * nan
        kv_tokens = np.minimum(ctx + out, m.sliding_window) if m.sliding_window > 0 else ctx + out
        frames.append(pd.DataFrame({
            "model": m.name,
            "gpu": g.name,
            "tp": t,
            "mode": prof.mode.value,
            "context_len": ctx.astype(np.int64),
            "output_tokens": out.astype(np.int64),
            "batch": b.astype(np.int64),
            "weight_bytes": int(m.weight_bytes(prec.weights)),
            "kv_bytes_per_token": int(round(m.kv_bytes_per_token(prec.kv))),
            "kv_cache_bytes": np.round(m.kv_bytes_per_token(prec.kv) * kv_tokens * b).astype(np.int64),
            "prefill_s": pre_s,
            "decode_s_per_token": step.total_s * nan,
            "decode_s": dec_s,
            "max_concurrency": mem.max_concurrency.astype(np.int64),
            "context_switch_s": sw.serial_s * nan,
            "context_switch_duplex_s": sw.duplex_s * nan,
            "session_throughput_tokens_per_s": b * out / (pre_s + dec_s),
            "prefill_bound": pre.bound,
            "decode_bound": step.bound,
            "fits": fits,
        }))
    return pd.concat(frames, ignore_index=True)
