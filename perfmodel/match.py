"""``--match-context``: how much KV compression makes a long context cost what a short one costs.

For each of the four long-context metrics (prefill, decode per token,
concurrency, context switch) and each knob, :func:`match_context` finds the
least aggressive setting at which the chosen context costs no more than the
matched context does without knobs, or says why no setting gets there.
Settings are found by bisection (continuous and integer knobs, whose metrics are
monotone in the setting) or by trying every candidate (formats, layer counts,
head counts, layer patterns).

With a multi-GPU layout (``pp``, ``sp``, ``ep``, ``topology``) every trial is
priced as :func:`perfmodel.analyze` prices that layout, and the knobs the layout
does not model (:func:`perfmodel.parallel.check_knobs`) are left out of the search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from perfmodel.hw.spec import GPU, Dtype
from perfmodel.calibration import Profile
from perfmodel.costs import Bound
from perfmodel.errors import InvalidInputError
from perfmodel.knobs import Knobs, KnobError, KvTier, TierKind, attention_layer_count
from perfmodel.layers import Precision, check_tp
from perfmodel.models import ModelSpec
from perfmodel.phases import (
    DEFAULT_PREFILL_CHUNK_TOKENS,
    DEFAULT_RESERVE_FRACTION,
    context_switch,
    decode_step_cost,
    memory_budget,
    prefill_cost,
)

#: Metric name -> True when larger is better.
METRICS = {
    "prefill_s": False,
    "decode_s_per_token": False,
    "max_concurrency": True,
    "context_switch_s": False,
}

_HINT = {
    "prefill_s": "prefill is compute-bound on the linear layers, whose FLOPs grow with every prompt token; "
    "only knobs that skip prompt tokens can reach it",
    "decode_s_per_token": "each step still reads all weights and runs the ops this knob leaves unchanged",
    "max_concurrency": "the weights and activations leave too little memory, or the knob does not shrink the "
    "stored KV enough",
    "context_switch_s": "the KV (and state) to move over the host link stays too large",
}


@dataclass(frozen=True)
class KnobMatch:
    """The least aggressive setting of one knob that matches one metric.

    ``setting`` is None when no setting reaches the target; ``reason`` says why.
    ``value`` is the metric at ``setting`` (or at the most aggressive setting tried).
    """

    metric: str
    knob: str
    setting: Any
    value: float
    target: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        from perfmodel.jsonout import jsonable

        return jsonable(
            {
                "metric": self.metric,
                "knob": self.knob,
                "setting": self.setting,
                "value": self.value,
                "target": self.target,
                "reason": self.reason,
            }
        )


@dataclass(frozen=True)
class MatchResult:
    context_len: int
    match_context: int
    targets: dict[str, float]
    unmatched: dict[str, float]
    rows: tuple[KnobMatch, ...]

    def compression_factor(self, metric: str) -> float | None:
        """KV compression factor (1 / keep ratio) that matches ``metric``; None if none does."""
        for r in self.rows:
            if r.metric == metric and r.knob == "kv_keep_ratio":
                return None if r.setting is None else 1.0 / float(r.setting)
        return None

    def to_dict(self) -> dict[str, Any]:
        from perfmodel.jsonout import jsonable

        return jsonable(
            {
                "context_len": self.context_len,
                "match_context": self.match_context,
                "targets": self.targets,
                "without_knobs": self.unmatched,
                "compression_factor": {m: self.compression_factor(m) for m in METRICS},
                "knobs": [r.to_dict() for r in self.rows],
                "note": "settings price cost only; the accuracy of each technique at that setting is not modelled",
            }
        )


class _Scenario:
    """Evaluates the four metrics of one scenario under a knob setting."""

    def __init__(
        self,
        model,
        gpu,
        profile,
        context_len,
        output_tokens,
        batch,
        precision,
        tp,
        chunk_tokens,
        base,
        layout=None,
        ring=None,
    ):
        self.model, self.gpu, self.profile = model, gpu, profile
        self.ctx, self.out, self.batch = context_len, output_tokens, batch
        self.prec, self.tp, self.chunk, self.base = precision, tp, chunk_tokens, base
        self.layout = layout  # None (one TP group) or perfmodel.parallel.layout's keyword values
        self.ring = ring  # the Ring step model on that layout (None: ideal overlap)

    def _parallel(self, knobs: Knobs | None, ctx: int):
        """(per-GPU memory budget, phases) of the multi-GPU layout, as ``analyze`` prices it."""
        from perfmodel.parallel import price_layout

        return price_layout(
            self.model,
            self.gpu,
            self.profile,
            ctx,
            self.out,
            self.batch,
            self.prec,
            self.tp,
            self.chunk,
            DEFAULT_RESERVE_FRACTION,
            knobs,
            self.layout,
            self.ring,
        )

    def metrics(self, knobs: Knobs | None, context_len: int | None = None) -> dict[str, float]:
        ctx = self.ctx if context_len is None else context_len
        m, g, p, b, t = self.model, self.gpu, self.profile, self.batch, self.tp
        if self.layout is not None:
            mem, ph = self._parallel(knobs, ctx)
            return {
                "prefill_s": float(ph.prefill.total_s),
                "decode_s_per_token": float(ph.decode_step.total_s),
                "max_concurrency": float(mem.max_concurrency),
                "context_switch_s": float(context_switch(g, p, mem.kv_bytes_per_user, knobs=knobs).serial_s),
            }
        mem = memory_budget(m, g, ctx, self.out, self.prec, t, self.chunk, batch=b, knobs=knobs)
        return {
            "prefill_s": float(prefill_cost(m, g, p, ctx, b, self.prec, t, self.chunk, knobs=knobs).total_s),
            "decode_s_per_token": float(decode_step_cost(m, g, p, ctx, b, self.prec, t, knobs=knobs).total_s),
            "max_concurrency": float(mem.max_concurrency),
            "context_switch_s": float(context_switch(g, p, mem.kv_bytes_per_user, knobs=knobs).serial_s),
        }

    def bound(self, metric: str, knobs: Knobs | None) -> str:
        if self.layout is not None and metric in ("prefill_s", "decode_s_per_token"):
            _, ph = self._parallel(knobs, self.ctx)
            b = ph.prefill.bound if metric == "prefill_s" else ph.decode_step.bound
            return b.value if isinstance(b, Bound) else str(b)
        if metric == "prefill_s":
            b = prefill_cost(
                self.model,
                self.gpu,
                self.profile,
                self.ctx,
                self.batch,
                self.prec,
                self.tp,
                self.chunk,
                knobs=knobs,
            ).bound
        elif metric == "decode_s_per_token":
            b = decode_step_cost(
                self.model, self.gpu, self.profile, self.ctx, self.batch, self.prec, self.tp, knobs=knobs
            ).bound
        elif metric == "max_concurrency":
            return Bound.HBM_CAPACITY.value
        else:
            return Bound.PCIE.value
        return b.value if isinstance(b, Bound) else str(b)


def _ok(metric: str, value: float, target: float) -> bool:
    if METRICS[metric]:
        return value >= target
    return value <= target * (1 + 1e-9)


def _knob_space(model: ModelSpec, scen: _Scenario) -> list[tuple[str, str, Any]]:
    """``(knob, kind, candidates)``: kind "list" (tried in order, least aggressive first), "float" or "int"."""
    ctx, L = scen.ctx, model.num_layers
    space: list[tuple[str, str, Any]] = [("kv_keep_ratio", "float", (1e-6, 1.0))]
    narrower = [d for d in (Dtype.FP8, Dtype.INT4) if d.bytes_per_element < scen.prec.kv.bytes_per_element]
    if narrower:
        space.append(("kv_dtype", "list", narrower))
    n_attn = attention_layer_count(model, scen.base)
    space.append(("kv_layers", "list", list(range(n_attn - 1, 0, -1))))
    if model.mla is None:
        heads = []
        for h in range(model.kv_heads - 1, 0, -1):
            if model.q_heads % h:
                continue
            try:
                check_tp(model.with_overrides(kv_heads=h), scen.tp)
            except InvalidInputError:
                continue
            heads.append(h)
        space.append(("kv_heads", "list", heads))
    space += [
        ("kv_keep_ratio+prune_prefill", "float", (1e-6, 1.0)),
        ("kv_budget_tokens", "int", (1, ctx + scen.out)),
        ("sliding_window", "int", (1, ctx)),
        ("attention_density", "float", (1e-6, 1.0)),
        ("attention_every", "list", list(range(2, L + 1))),
    ]
    if scen.batch > 1:
        space.append(("shared_prefix_tokens", "int", (0, ctx - 1)))
    space.append(("kv_tiers", "list", [(KvTier(TierKind.HOST_DDR),)]))
    return space


def _make(base: Knobs, knob: str, value: Any) -> Knobs:
    if knob == "kv_keep_ratio+prune_prefill":
        return base.replace(kv_keep_ratio=float(value), prune_prefill=True)
    if knob in ("kv_budget_tokens", "sliding_window", "shared_prefix_tokens"):
        value = int(value)
    elif knob in ("kv_keep_ratio", "attention_density"):
        value = float(value)
    return base.replace(**{knob: value})


def _aggressiveness(kind: str, knob: str, cands: Any) -> tuple[Any, Any]:
    """(least, most) aggressive settings."""
    if kind == "list":
        return cands[0], cands[-1]
    lo, hi = cands
    if knob == "shared_prefix_tokens":
        return lo, hi
    return hi, lo


def _search(
    scen: _Scenario,
    metric: str,
    knob: str,
    kind: str,
    cands: Any,
    target: float,
    evaluate: Callable[[Knobs], dict[str, float]],
) -> tuple[Any, float]:
    """Least aggressive setting meeting the target (None if none), and the metric there (or at the extreme)."""
    base = scen.base
    if kind == "list":
        last = math.nan
        for c in cands:
            v = evaluate(_make(base, knob, c))[metric]
            last = v
            if _ok(metric, v, target):
                return c, v
        return None, last
    least, most = _aggressiveness(kind, knob, cands)
    v_most = evaluate(_make(base, knob, most))[metric]
    if not _ok(metric, v_most, target):
        return None, v_most
    good, bad = most, least  # invariant: good meets the target, bad does not (the no-knob point does not)
    for _ in range(60):
        if kind == "int" and abs(good - bad) <= 1:
            break
        if kind == "float" and abs(good - bad) <= 1e-4 * max(abs(good), 1e-6):
            break
        mid = (good + bad) / 2 if kind == "float" else (good + bad) // 2
        v = evaluate(_make(base, knob, mid))[metric]
        if _ok(metric, v, target):
            good = mid
        else:
            bad = mid
    return good, evaluate(_make(base, knob, good))[metric]


def match_context(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    context_len: int,
    match_context: int,
    output_tokens: int = 250,
    batch: int = 1,
    precision: Precision = Precision(),
    tp: int = 1,
    chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
    knobs: Knobs | None = None,
    metrics: tuple[str, ...] = tuple(METRICS),
    pp: int = 1,
    sp: int = 1,
    sp_kind: str = "ring",
    ep: int = 1,
    topology: str | None = None,
) -> MatchResult:
    """Per metric and knob, the setting at which ``context_len`` costs no more than ``match_context``.

    The target is each metric at ``match_context`` without knobs; ``knobs`` are
    applied to every trial on top of the knob being searched (held fixed).
    ``pp``, ``sp`` (``sp_kind``), ``ep`` and ``topology`` price every trial on that
    layout; the knobs it does not model are not searched.
    """
    if match_context >= context_len:
        raise InvalidInputError(
            f"--match-context ({match_context}) must be shorter than the context ({context_len})"
        )
    for m in metrics:
        if m not in METRICS:
            raise InvalidInputError(f"unknown metric {m!r}; known: {', '.join(METRICS)}")
    base = knobs or Knobs()
    from perfmodel import parallel as par

    layout = par.layout(model, tp, pp, sp, sp_kind, ep, topology, base)
    ring = par.ring_step_model(profile)
    scen = _Scenario(
        model,
        gpu,
        profile,
        context_len,
        output_tokens,
        batch,
        precision,
        tp,
        chunk_tokens,
        base,
        layout,
        ring,
    )
    # a trial the layout cannot price (say, KV heads that a Ulysses degree does not divide) counts as infeasible
    infeasible = KnobError if layout is None else InvalidInputError
    targets = scen.metrics(None, match_context)
    unmatched = scen.metrics(base if base.active else None)
    cache: dict[Knobs, dict[str, float]] = {}

    def evaluate(k: Knobs) -> dict[str, float]:
        if k not in cache:
            try:
                cache[k] = scen.metrics(k)
            except infeasible:
                cache[k] = {m: (0.0 if METRICS[m] else math.inf) for m in METRICS}
        return cache[k]

    rows = []
    skip = () if layout is None else par.knobs_not_modelled(layout["sp"])
    for knob, kind, cands in _knob_space(model, scen):
        if kind == "list" and not cands or any(part in skip for part in knob.split("+")):
            continue
        for metric in metrics:
            target = targets[metric]
            if _ok(metric, unmatched[metric], target):
                rows.append(KnobMatch(metric, knob, "no change needed", unmatched[metric], target))
                continue
            try:
                setting, value = _search(scen, metric, knob, kind, cands, target, evaluate)
            except infeasible as exc:
                rows.append(KnobMatch(metric, knob, None, math.nan, target, str(exc)))
                continue
            reason = ""
            if setting is None:
                extreme = _aggressiveness(kind, knob, cands)[1]
                if np.isclose(value, unmatched[metric]):
                    reason = f"{knob} does not change {metric}"
                else:
                    shown = extreme.value if hasattr(extreme, "value") else extreme
                    if knob == "kv_tiers":
                        shown = "ddr"
                    reason = (
                        f"even at {knob}={shown} it is {value:.4g} vs {target:.4g} at {match_context} tokens "
                        f"({scen.bound(metric, _make(base, knob, extreme))}-bound): {_HINT[metric]}"
                    )
            rows.append(KnobMatch(metric, knob, setting, value, target, reason))
    return MatchResult(context_len, match_context, targets, unmatched, tuple(rows))
