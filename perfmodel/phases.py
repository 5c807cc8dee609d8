"""The long-context phase model: prefill, decode, memory, concurrency, context switch.

Every function is pure and accepts numpy arrays for the sizes (``batch``,
``context_len``, ``output_tokens``), which is how :func:`perfmodel.sweep`
evaluates a million scenarios without a Python loop per point.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfmodel.hw.spec import GPU
from perfmodel.calibration import Mode, Profile, peak_profile, resolve_profile
from perfmodel.clocks import sustained_phase
from perfmodel.costs import ZERO, Bound, OpCost, op_cost
from perfmodel.costs.base import COST_FIELDS
from perfmodel.knobs import Knobs, attention_layer_count, effective_model
from perfmodel.layers import (
    Precision,
    activation_bytes,
    apply_knobs,
    kv_bytes_per_token_per_gpu,
    kv_heads_per_gpu,
    lm_head_ops,
    model_ops,
    recurrent_state_bytes_per_gpu,
)
from perfmodel.models import ModelSpec
from perfmodel.ops import Attention, Elementwise, Gemm, GroupedGemm, MemLocation, Memcpy, Phase

#: Tokens per prefill pass (chunked prefill); also sizes the activation workspace.
DEFAULT_PREFILL_CHUNK_TOKENS = 8192
#: Fraction of usable device memory kept free for allocator fragmentation and
#: framework workspaces (CUDA graphs, communication buffers).
DEFAULT_RESERVE_FRACTION = 0.02


def forward_cost(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    phase: Phase,
    batch,
    q_len,
    kv_len,
    precision: Precision = Precision(),
    tp: int = 1,
    lm_head_rows=None,
    knobs: Knobs | None = None,
    classes: "Classes | None" = None,
) -> OpCost:
    """Cost of one forward pass on one GPU of the TP group (ops summed; ``classes``: :func:`sum_costs`)."""
    return sum_costs(
        model_ops(model, phase, batch, q_len, kv_len, precision, tp, lm_head_rows, knobs),
        gpu,
        profile,
        classes,
    )


def _active(knobs: Knobs | None) -> Knobs | None:
    return knobs if knobs is not None and knobs.active else None


#: A prefill over at least this many points prices its GEMMs and elementwise ops once per distinct token
#: count (:class:`Classes`).
REDUCE_MIN_POINTS = 4096
#: Op types whose cost is a pointwise function of their size fields (no sum or mean over the array).
_POINTWISE_OPS = (Gemm, GroupedGemm, Elementwise)


class Classes:
    """The classes of equal values of one array over a grid: a representative point of each (``first``, flat
    indices), each point's class (``inverse``) and the points of each (``counts``).

    A pass whose GEMMs and elementwise ops depend on the grid only through such an array (a prefill's token
    count over (context, batch) pairs, a few thousand distinct values among 10^4 pairs) prices them once per
    class (:func:`sum_costs`)."""

    def __init__(self, key: np.ndarray):
        flat = np.ascontiguousarray(key, dtype=np.float64).reshape(-1)
        order = np.argsort(flat, kind="stable")  # each class represented by its first point
        new = np.empty(flat.size, dtype=bool)
        new[:1] = True
        np.not_equal(flat[order[1:]], flat[order[:-1]], out=new[1:])
        self.first = order[new]
        self.inverse = np.empty(flat.size, dtype=np.intp)
        self.inverse[order] = np.cumsum(new, dtype=np.intp) - 1
        self.counts = np.diff(np.append(np.flatnonzero(new), flat.size))
        self.shape, self.size = np.shape(key), flat.size

    @property
    def useful(self) -> bool:
        """True when there are at most a quarter as many classes as points."""
        return self.first.size * 4 <= self.size

    def constant_on(self, a: Any) -> bool:
        """True when ``a`` (an array of the grid's shape) takes one value on each class."""
        flat = np.reshape(a, -1)
        return np.shape(a) == self.shape and bool(np.array_equal(flat[self.first][self.inverse], flat))

    def reduce(self, a: np.ndarray) -> np.ndarray:
        """``a`` (constant on each class) as one value per class."""
        return np.reshape(a, -1)[self.first]

    def expand(self, v: Any) -> Any:
        """``v`` (one value per class, or one value) over the grid."""
        return v[self.inverse].reshape(self.shape) if np.ndim(v) else v

    def mean(self, v: Any) -> float:
        """The mean over the grid of ``v`` (one value per class, or one value)."""
        return float(np.dot(v, self.counts) / self.size) if np.ndim(v) else float(v)

    def reduced(self, op, count):
        """``(op, count)`` over the classes when ``op`` is a pointwise op whose size arrays (and ``count``,
        when an array) all have the grid's shape and are constant on each class, else None."""
        if not isinstance(op, _POINTWISE_OPS):
            return None
        fields = {f.name: getattr(op, f.name) for f in dataclasses.fields(op)}
        arrays = {k: v for k, v in fields.items() if isinstance(v, np.ndarray) and v.ndim}
        if not arrays or not all(self.constant_on(v) for v in arrays.values()):
            return None
        if np.ndim(count) and not self.constant_on(count):
            return None
        reduced = dataclasses.replace(op, **{k: self.reduce(v) for k, v in arrays.items()})
        return reduced, (self.reduce(count) if np.ndim(count) else count)


def _add_cost(acc: dict[str, Any], c: OpCost, mem: Any, count: Any) -> None:
    """``count * c`` added into ``acc`` (one running sum per cost field; ``mem``: ``c.memory_s * count``),
    arrays summed in place where they can be."""
    for name in COST_FIELDS:
        raw = mem if name == "memory_s" else getattr(c, name)
        if type(raw) is float and raw == 0.0:
            continue  # adds nothing
        v = raw if name == "memory_s" else raw * count
        a = acc[name]
        if isinstance(a, np.ndarray) and (np.shape(v) == a.shape or np.ndim(v) == 0):
            a += v
        elif isinstance(v, np.ndarray) and v.dtype == np.float64 and np.ndim(a) == 0:
            # v is this op's own product (a new array): it becomes the sum, the scalar added in place
            acc[name] = v if type(a) is float and a == 0.0 else np.add(v, a, out=v)
        elif isinstance(v, np.ndarray) or isinstance(a, np.ndarray):
            acc[name] = np.add(a, v, dtype=np.float64)
        else:
            acc[name] = a + v


@dataclass(frozen=True)
class PricedOp:
    """One op of a pass with its cost (:func:`price_ops`).

    Attributes
    ----------
    name : str
    op : Op
        The op priced: over the classes of the pass's :class:`Classes` when ``on_classes`` (its sizes one
        value per class), else over the grid.
    count : int, float or array
        How many times the op runs (per class when ``on_classes``).
    cost : OpCost, seconds
        One run of ``op`` (:func:`perfmodel.costs.op_cost`).
    on_classes : bool
    """

    name: str
    op: Any
    count: Any
    cost: OpCost
    on_classes: bool = False


def price_ops(ops, gpu: GPU, profile: Profile, classes: Classes | None = None) -> list[PricedOp]:
    """Each of ``(name, op, count)`` triples priced (:func:`perfmodel.costs.op_cost`), in order.

    The ops of one kind over arrays of the same shapes (:func:`_stack_key`) are priced in one call
    (:func:`_op_costs`).

    Parameters
    ----------
    ops : iterable of (str, Op, count)
        A pass's ops (:func:`perfmodel.layers.model_ops`); sizes may be arrays over a grid.
    gpu : GPU
    profile : Profile
    classes : Classes, optional
        Classes of the grid: when :attr:`Classes.useful`, a GEMM or elementwise op whose sizes are constant
        on each class is priced once per class (:meth:`Classes.reduced`).

    Returns
    -------
    list of PricedOp
        One per op, in order; each cost is of one run, seconds.
    """
    if classes is not None and not classes.useful:
        classes = None
    rows = []
    for name, op, count in ops:
        red = classes.reduced(op, count) if classes is not None else None
        if red is not None:
            op, count = red
        rows.append((name, op, count, red is not None))
    costs = _op_costs([op for _, op, _, _ in rows], gpu, profile)
    return [PricedOp(name, op, count, c, on) for (name, op, count, on), c in zip(rows, costs)]


#: The size fields of the op types :func:`_op_costs` stacks: the fields a pass's grid enters through.
_SIZE_FIELDS = {Gemm: ("m", "n", "k"), Elementwise: ("bytes", "flops")}


def _stack_key(op) -> tuple | None:
    """The ops with one key are priced under one curve through the same branches, their costs pointwise
    functions of their sizes: GEMMs of one dtype triple, elementwise kernels of one name (with FLOPs
    somewhere or none, which picks the row rule of a norm), each size an array of the same shape.  None
    for other ops and for ops over scalars."""
    if not (type(op) is Gemm or (type(op) is Elementwise and op.serial_steps is None)):
        return None
    shapes = tuple(np.shape(getattr(op, f)) for f in _SIZE_FIELDS[type(op)])
    if not any(shapes):
        return None
    if type(op) is Gemm:
        return (Gemm, op.dtype, op.b_dtype, op.out_dtype) + shapes
    return (Elementwise, op.name, bool(np.any(op.flops))) + shapes


def _op_costs(ops, gpu: GPU, profile: Profile) -> list[OpCost]:
    """:func:`perfmodel.costs.op_cost` of each op.  The ops of one :func:`_stack_key` are priced in one
    call, their sizes stacked on a new first axis, each op's cost its slice of the result (the same
    values: the cost is pointwise in the sizes); a pass's GEMMs and norms over the batch sizes of a grid
    cost one call each instead of one per op."""
    costs: list[OpCost | None] = [None] * len(ops)
    kinds: dict[tuple, list[int]] = {}
    for i, op in enumerate(ops):
        key = _stack_key(op)
        if key is None:
            costs[i] = op_cost(op, gpu, profile)
        else:
            kinds.setdefault(key, []).append(i)
    for idx in kinds.values():
        if len(idx) == 1:
            costs[idx[0]] = op_cost(ops[idx[0]], gpu, profile)
            continue
        first = ops[idx[0]]
        names = _SIZE_FIELDS[type(first)]
        nd = max(np.ndim(getattr(first, f)) for f in names)
        stacked = dataclasses.replace(
            first,
            **{
                f: np.stack([np.reshape(v, (1,) * (nd - np.ndim(v)) + np.shape(v)) for v in vals])
                for f in names
                for vals in [[getattr(ops[i], f) for i in idx]]
            },
        )
        c = op_cost(stacked, gpu, profile)
        for g, i in enumerate(idx):
            costs[i] = OpCost(
                memory_bound=c.memory_bound,
                **{
                    f: (
                        v[g if v.shape[0] > 1 else 0] if isinstance(v, np.ndarray) and v.ndim == nd + 1 else v
                    )
                    for f in COST_FIELDS
                    for v in [getattr(c, f)]
                },
            )
    return costs


def add_priced(priced: list[PricedOp], classes: Classes | None = None) -> OpCost:
    """Sum of ``count * cost`` over priced ops.

    Parameters
    ----------
    priced : list of PricedOp
        A pass's ops with their costs (:func:`price_ops`), in order.
    classes : Classes, optional
        The classes they were priced with (needed when some op is ``on_classes``).

    Returns
    -------
    OpCost, seconds
        Over the grid the costs broadcast to.

    Notes
    -----
    Equal to folding ``OpCost.__add__`` over ``cost.scale(count)`` (same ``memory_bound`` rule: an op
    takes it over when its memory time is at least the total so far, compared as over one grid of
    points), but adds the costs of each array shape together first and those sums at the end, so an
    op priced over a few sizes (a GEMM over the batch sizes of a grid) is never spread over the whole
    grid.  One shape (scalars, or arrays of one shape) is the plain fold, in order.  The ops priced once
    per class are summed per class and spread back over the grid with the sums.
    """
    groups: dict[tuple, dict[str, Any]] = {}
    on_classes = dict.fromkeys(COST_FIELDS, 0.0)  # the sum of the ops priced once per class
    bound = ZERO.memory_bound
    arrays = 0.0  # mean memory time of the array-valued ops so far (their sum over a grid, per point)
    scalars = 0.0  # memory time of the scalar ops so far
    for p in priced:
        c, count = p.cost, p.count
        mem = c.memory_s * count
        if np.ndim(mem):
            total, this = arrays + scalars, (classes.mean(mem) if p.on_classes else float(np.mean(mem)))
            arrays += this
        else:
            # as np.sum over arrays of the grid: a scalar total once any array was added is spread over it
            total, this = (arrays + scalars if arrays else scalars), float(mem)
            scalars += this
        if not total >= this:
            bound = c.memory_bound
        if p.on_classes:
            _add_cost(on_classes, c, mem, count)
            continue
        shape = (
            np.shape(mem)
            if np.ndim(mem)
            else np.broadcast_shapes(*(np.shape(getattr(c, f)) for f in COST_FIELDS))
        )
        _add_cost(groups.setdefault(shape, dict.fromkeys(COST_FIELDS, 0.0)), c, mem, count)
    if any(np.ndim(v) for v in on_classes.values()):
        full = {name: classes.expand(v) for name, v in on_classes.items()}
        into = groups.get(classes.shape)
        if into is None:
            groups[classes.shape] = full
        else:
            for name in COST_FIELDS:
                into[name] = np.add(into[name], full[name], dtype=np.float64)
    parts = [acc for _, acc in sorted(groups.items(), key=lambda kv: int(np.prod(kv[0])))]
    if not parts:
        return OpCost(memory_bound=bound)
    out = parts[0]
    for acc in parts[1:]:
        out = {name: _add_into(acc[name], out[name]) for name in COST_FIELDS}
    return OpCost(memory_bound=bound, **out)


def _holds(v: Any, other: Any) -> bool:
    """True when ``v`` is a float64 array that ``v`` combined with ``other`` (broadcasting) fits in: the
    result can be written into ``v`` (a sum's own array)."""
    return (
        isinstance(v, np.ndarray)
        and v.dtype == np.float64
        and (np.ndim(other) == 0 or np.broadcast_shapes(v.shape, np.shape(other)) == v.shape)
    )


def _add_into(total: Any, a: Any) -> Any:
    """``total + a``, into ``total`` when it :func:`_holds` the sum (a running sum of :func:`add_priced`, its
    own array)."""
    return np.add(total, a, out=total) if _holds(total, a) else a + total


def sum_costs(ops, gpu: GPU, profile: Profile, classes: Classes | None = None) -> OpCost:
    """Sum of ``count * cost(op)`` over ``(name, op, count)`` triples: :func:`price_ops`, then
    :func:`add_priced`.

    With ``classes`` (:class:`Classes` of the grid, when :attr:`Classes.useful`), a GEMM or elementwise op
    whose sizes are constant on each class is priced once per class, its cost spread back over the grid
    with the sums.
    """
    if classes is not None and not classes.useful:
        classes = None
    return add_priced(price_ops(ops, gpu, profile, classes), classes)


def prefill_cost(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    context_len,
    batch=1,
    precision: Precision = Precision(),
    tp: int = 1,
    chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
    knobs: Knobs | None = None,
) -> OpCost:
    """Prefill of ``batch`` prompts of ``context_len`` tokens, in passes of ``chunk_tokens``.

    ``chunk_tokens`` is the token budget of one pass, shared by the batch's prompts:
    each prompt contributes ``chunk = max(chunk_tokens / batch, 1)`` tokens to a pass.
    A prompt is cut into ``n = ceil(context_len / chunk)`` equal chunks; chunk
    ``i`` attends to ``(i + 1)`` chunks of keys.  FLOPs and bytes are linear in
    the key count, so ``n`` passes at the mean key count give the exact totals
    (the causal attention total is exactly ``L (L + 1) / 2`` pairs).  The LM head
    runs once per sequence, on the last position.

    With ``knobs``: pruned prompts (``prune_prefill``) prefill only the kept
    tokens; a shared prefix is prefilled once for the batch and each suffix
    attends to it; with attention offloading the KV is sent to the pool as it
    is produced (the transfer time beyond the prefill's own is added).

    The prefill runs back to back: with a profile's ``sustained`` terms its compute slows to the
    power-capped rate after the settling time (:func:`perfmodel.clocks.sustained_phase`).
    """
    knobs = _active(knobs)
    ctx = np.asarray(context_len, dtype=np.float64)
    if knobs is None:
        body = _prefill_span(model, gpu, profile, ctx, 0.0, batch, precision, tp, chunk_tokens, None)
        return sustained_phase(
            body + sum_costs(lm_head_ops(model, batch, precision, tp), gpu, profile), profile.sustained
        )
    m = effective_model(model, knobs)
    knobs.check(m, ctx)
    prec = apply_knobs(precision, knobs)
    if knobs.prune_prefill:
        ctx = np.asarray(knobs.prefill_tokens(ctx), dtype=np.float64)
    p = float(knobs.shared_prefix_tokens)
    if p:
        # the prefix once, then every suffix after it; where that split costs more (tiny prompts, whose
        # passes are weight-read bound), the engine prefills whole prompts instead
        split = _prefill_span(
            m, gpu, profile, np.full_like(ctx, p), 0.0, 1, prec, tp, chunk_tokens, knobs
        ) + _prefill_span(m, gpu, profile, ctx - p, p, batch, prec, tp, chunk_tokens, knobs)
        body = cheaper(split, _prefill_span(m, gpu, profile, ctx, 0.0, batch, prec, tp, chunk_tokens, knobs))
    else:
        body = _prefill_span(m, gpu, profile, ctx, 0.0, batch, prec, tp, chunk_tokens, knobs)
    total = sustained_phase(
        body + sum_costs(lm_head_ops(m, batch, prec, tp), gpu, profile), profile.sustained
    )
    if knobs.offload is not None:
        kv = kv_cache_bytes_per_gpu(m, ctx, 0, batch, prec, tp, knobs)
        ship = kv / knobs.offload.link_bytes_per_s
        total = total + OpCost(
            comm_s=_f(np.maximum(ship - total.total_s, 0.0)), bytes=_f(kv), memory_bound=Bound.INTERCONNECT
        )
    return total


def ragged_prefill_cost(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    lengths,
    precision: Precision = Precision(),
    tp: int = 1,
    padded: bool = False,
) -> OpCost:
    """One prefill pass over a batch of prompts of different lengths, without padding (ByteTransformer).

    Parameters
    ----------
    lengths : sequence of int, tokens
        Each prompt's length.
    padded : bool
        Price the padded batch instead: every prompt padded to the longest.

    Returns
    -------
    OpCost, seconds
        The GEMMs and elementwise kernels run on the real tokens (``sum(lengths)``), each layer's
        attention as one variable-length kernel over each prompt's own causal pairs
        (:class:`perfmodel.ops.Attention` with ``seq_lens``); the LM head on one row per prompt.  One
        pass, not chunked; the sustained-clock rule applies as in :func:`prefill_cost`.
    """
    lens = tuple(int(v) for v in lengths)
    n, top, total = len(lens), max(lens), sum(lens)
    if padded:
        body = forward_cost(model, gpu, profile, Phase.PREFILL, n, top, top, precision, tp)
    else:
        ops = model_ops(model, Phase.PREFILL, 1, total, total, precision, tp, lm_head_rows=n)
        ops = [
            (
                name,
                dataclasses.replace(o, batch=n, q_len=top, kv_len=top, seq_lens=lens)
                if isinstance(o, Attention)
                else o,
                c,
            )
            for name, o, c in ops
        ]
        body = sum_costs(ops, gpu, profile)
    return sustained_phase(body, profile.sustained)


def _prefill_span(model, gpu, profile, new_tokens, offset, batch, prec, tp, chunk_tokens, knobs) -> OpCost:
    """``new_tokens`` prompt tokens after ``offset`` cached ones, chunked (no LM head)."""
    if chunk_tokens:
        # the chunk is the token budget of one pass, shared by the batch's prompts
        per_sequence = np.maximum(chunk_tokens / np.asarray(batch, dtype=np.float64), 1.0)
        n = np.ceil(new_tokens / per_sequence)
    else:
        n = np.ones_like(new_tokens)
    q = new_tokens / n
    kv_mean = offset + q * (n + 1) / 2.0
    tokens = batch * q  # the GEMMs and elementwise ops depend on the grid only through the pass's tokens
    classes = Classes(tokens) if knobs is None and np.size(tokens) >= REDUCE_MIN_POINTS else None
    body = forward_cost(
        model,
        gpu,
        profile,
        Phase.PREFILL,
        batch,
        q,
        kv_mean,
        prec,
        tp,
        lm_head_rows=0,
        knobs=knobs,
        classes=classes,
    )
    return _scaled(body, n if n.ndim else float(n))


def decode_step_cost(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    kv_len,
    batch=1,
    precision: Precision = Precision(),
    tp: int = 1,
    knobs: Knobs | None = None,
) -> OpCost:
    """One decode step: ``batch`` sequences each attend to ``kv_len`` keys.

    With ``knobs``, ``kv_len`` is each sequence's length and the knobs decide
    the keys kept and read; KV spilled to slower tiers is streamed in every
    step (overlapped with compute under ``prefetch``), and with attention
    offloading the attention runs on the pool.
    """
    knobs = _active(knobs)
    if knobs is None:
        return forward_cost(model, gpu, profile, Phase.DECODE, batch, 1, kv_len, precision, tp)
    m = effective_model(model, knobs)
    prec = apply_knobs(precision, knobs)
    ops = model_ops(m, Phase.DECODE, batch, 1, kv_len, prec, tp, None, knobs)
    if knobs.offload is not None:
        return _offloaded_step(m, gpu, profile, ops, kv_len, batch, prec, tp, knobs)
    step = sum_costs(ops, gpu, profile)
    if knobs.shared_prefix_tokens and knobs.prefix_aware_kernel:
        # the prefix-aware kernel's partial-output merge can cost more than it saves on a tiny prefix
        plain = knobs.replace(prefix_aware_kernel=False)
        step = cheaper(
            step, sum_costs(model_ops(m, Phase.DECODE, batch, 1, kv_len, prec, tp, None, plain), gpu, profile)
        )
    if knobs.kv_tiers:
        step = step + _tier_stream(m, gpu, step, kv_len, batch, prec, tp, knobs)
    return step


def decode_cost(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    context_len,
    output_tokens,
    batch=1,
    precision: Precision = Precision(),
    tp: int = 1,
    knobs: Knobs | None = None,
) -> OpCost:
    """All ``output_tokens`` decode steps after a ``context_len`` prompt.

    Step ``t`` (1-based) attends to ``context_len + t`` keys; costs are affine in
    the key count within a regime, so ``output_tokens`` steps at the mean count
    ``context_len + (output_tokens + 1) / 2`` give the sum.
    """
    out = np.asarray(output_tokens, dtype=np.float64)
    kv_mean = np.asarray(context_len, dtype=np.float64) + (out + 1) / 2.0
    step = decode_step_cost(model, gpu, profile, kv_mean, batch, precision, tp, knobs)
    return step.scale(out if out.ndim else float(out))


def decode_costs(
    model: ModelSpec,
    gpu: GPU,
    profile: Profile,
    context_len,
    output_tokens,
    batch=1,
    precision: Precision = Precision(),
    tp: int = 1,
    knobs: Knobs | None = None,
    take=None,
) -> tuple[OpCost, OpCost]:
    """One decode step after ``context_len`` keys and all ``output_tokens`` steps after it, priced together.

    The step is :func:`decode_step_cost` of ``context_len`` and ``batch``, the decode :func:`decode_cost`
    (``output_tokens`` steps at the mean key count) of ``take(context_len)``, ``output_tokens`` and
    ``take(batch)``.  The ops of the decode's mean step that do not read the key count (the GEMMs, norms,
    the KV append and the LM head: functions of the batch alone) are the step's ops over fewer points, so
    their costs are the step's, restricted by ``take``, not priced again.  With active knobs the two are
    priced apart (:func:`decode_step_cost` is then not one pass of ops).

    Parameters
    ----------
    context_len, output_tokens : float or array, tokens
    batch : float or array, sequences
    take : callable, optional
        Restricts an array that broadcasts over the step's grid (``context_len`` x ``batch``) to the points
        where the decode is wanted, elementwise (a selection of them, each array keeping its own axes); a
        value that is not an array comes back as it is.  None: every point.

    Returns
    -------
    (OpCost, OpCost), seconds
        The step, and the decode over the points ``take`` keeps (x ``output_tokens``).
    """
    if take is None:
        take = _every_point
    knobs = _active(knobs)
    if knobs is not None:
        step = decode_step_cost(model, gpu, profile, context_len, batch, precision, tp, knobs)
        dec = decode_cost(
            model, gpu, profile, take(context_len), output_tokens, take(batch), precision, tp, knobs
        )
        return step, dec
    step_ops = price_ops(model_ops(model, Phase.DECODE, batch, 1, context_len, precision, tp), gpu, profile)
    out = np.asarray(output_tokens, dtype=np.float64)
    kv_mean = np.asarray(take(context_len), dtype=np.float64) + (out + 1) / 2.0
    mean_ops = model_ops(model, Phase.DECODE, take(batch), 1, kv_mean, precision, tp)
    if len(mean_ops) != len(step_ops):
        mean = sum_costs(mean_ops, gpu, profile)
    else:
        mean = add_priced(
            [
                _restricted(s, name, op, count, take) or PricedOp(name, op, count, op_cost(op, gpu, profile))
                for s, (name, op, count) in zip(step_ops, mean_ops)
            ]
        )
    return add_priced(step_ops), _scaled(mean, out if out.ndim else float(out))


def _scaled(cost: OpCost, factor: Any) -> OpCost:
    """``cost.scale(factor)`` for a cost just summed (:func:`add_priced`), whose arrays are its own: each
    array that already has the product's shape is multiplied in place."""
    fields = {}
    for name in COST_FIELDS:
        v = getattr(cost, name)
        fields[name] = np.multiply(v, factor, out=v) if _holds(v, factor) else v * factor
    return OpCost(memory_bound=cost.memory_bound, **fields)


def _every_point(x):
    return x


def _restricted(s: PricedOp, name: str, op, count, take) -> PricedOp | None:
    """``s`` restricted by ``take`` when ``op`` (run ``count`` times) is ``s.op`` over the points ``take``
    keeps: an op of the same name and type whose cost is a pointwise function of its sizes
    (:data:`_POINTWISE_OPS`), each size ``take`` of ``s.op``'s; else None."""
    if s.on_classes or s.name != name or type(s.op) is not type(op) or not isinstance(op, _POINTWISE_OPS):
        return None
    pairs = [(s.count, count)] + [
        (getattr(s.op, f.name), getattr(op, f.name)) for f in dataclasses.fields(op)
    ]
    for a, b in pairs:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            a = take(a) if isinstance(a, np.ndarray) else a
            if np.shape(a) != np.shape(b) or not np.array_equal(a, b):
                return None
        elif a != b:
            return None
    cost = dataclasses.replace(
        s.cost, **{f: take(v) for f in COST_FIELDS if isinstance(v := getattr(s.cost, f), np.ndarray)}
    )
    return PricedOp(name, op, count, cost)


def cheaper(a: OpCost, b: OpCost) -> OpCost:
    """Pointwise the cheaper of two costs (all fields taken from the one with the smaller ``total_s``)."""
    take_a = np.asarray(a.total_s) <= np.asarray(b.total_s)
    if take_a.ndim == 0:
        return a if take_a else b
    fields = {f: np.where(take_a, getattr(a, f), getattr(b, f)) for f in COST_FIELDS}
    return OpCost(memory_bound=a.memory_bound, **fields)


def _f(x):
    return x if np.ndim(x) else float(x)


def _offloaded_step(m, gpu, profile, ops, kv_len, batch, prec, tp, knobs) -> OpCost:
    """Decode step with attention (and KV append, dequantisation) on the pool."""
    off = knobs.offload
    pool_names = {"attention", "prefix_attention", "kv_dequant", "kv_append"}
    pool_prof = (
        peak_profile(off.pool_gpu) if profile.is_peak else resolve_profile(off.pool_gpu, Mode.CALIBRATED)
    )
    on_gpu = sum_costs([o for o in ops if o[0] not in pool_names], gpu, profile)
    pool = sum_costs([o for o in ops if o[0] in pool_names], off.pool_gpu, pool_prof)
    pool_s = pool.total_s / off.pool_devices_per_gpu
    n_attn = attention_layer_count(m, knobs)
    a = prec.activations.bytes_per_element
    if m.mla is not None:
        qo = m.q_heads // tp * (2 * (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim))
    else:
        qo = (m.q_heads // tp + 2 * kv_heads_per_gpu(m, tp)) * m.head_dim + m.q_heads // tp * m.head_dim
    link_bytes = n_attn * batch * qo * a
    link_s = link_bytes / off.link_bytes_per_s + 2 * n_attn * off.link_latency_s
    if off.pipelined:
        hidden = np.maximum(np.maximum(pool_s, link_s) - on_gpu.total_s, 0.0)
        serial = pool_s + link_s
        extra = np.where(np.asarray(batch) >= 2, hidden, serial)
        return on_gpu + OpCost(
            comm_s=_f(extra), bytes=_f(link_bytes + pool.bytes), memory_bound=Bound.INTERCONNECT
        )
    return (
        on_gpu
        + OpCost(memory_s=_f(pool_s), bytes=_f(pool.bytes))
        + OpCost(comm_s=_f(link_s), bytes=_f(link_bytes), memory_bound=Bound.INTERCONNECT)
    )


def _tier_stream(m, gpu, step: OpCost, kv_len, batch, prec, tp, knobs) -> OpCost:
    """Time to stream the KV that does not fit in HBM from the tiers, beyond what prefetch hides."""
    mem = memory_budget(m, gpu, kv_len, 0, prec, tp, batch=batch, knobs=knobs.replace(kv_tiers=()))
    spilled = np.maximum(
        batch * mem.kv_bytes_per_user + mem.shared_kv_bytes - np.maximum(mem.free_for_kv_bytes, 0.0), 0.0
    )  # the KV beyond free HBM (the shared prefix is kept in HBM first)
    t = np.zeros_like(np.asarray(spilled, dtype=np.float64))
    left = spilled
    for tier in knobs.kv_tiers:
        part = np.minimum(left, tier.capacity_for(gpu))
        t = t + part / tier.bandwidth_for(gpu)
        left = left - part
    if knobs.prefetch:
        n_attn = attention_layer_count(m, knobs)
        t = np.maximum(t - step.total_s, 0.0) + t / n_attn
    return OpCost(memory_s=_f(t), bytes=_f(spilled), memory_bound=Bound.PCIE)


def kv_cache_bytes_per_gpu(
    model: ModelSpec,
    context_len,
    output_tokens=0,
    batch=1,
    precision: Precision = Precision(),
    tp: int = 1,
    knobs: Knobs | None = None,
):
    """KV cache (and recurrent state) of ``batch`` sequences on one GPU, bytes; a shared prefix counted once."""
    knobs = _active(knobs)
    tokens = np.asarray(context_len, dtype=np.float64) + np.asarray(output_tokens, dtype=np.float64)
    if knobs is None:
        per_user = kv_bytes_per_token_per_gpu(model, tp, precision.kv) * _kv_tokens(model, tokens)
        return _f((per_user + recurrent_state_bytes_per_gpu(model, tp, None)) * batch)
    m = effective_model(model, knobs)
    kv_tok = kv_bytes_per_token_per_gpu(m, tp, precision.kv, knobs)
    kept = _kv_tokens(m, knobs.kept_tokens(tokens, m.num_layers))
    p = knobs.shared_prefix_tokens
    state = recurrent_state_bytes_per_gpu(m, tp, knobs)
    return _f(kv_tok * (batch * (kept - p) + p) + batch * state)


@dataclass(frozen=True)
class MemoryBudget:
    """Device memory of one GPU of the TP group, bytes.

    ``max_concurrency``: the most users ``n`` that fit by :func:`users_that_fit`, the
    rule that also checks a batch, with the activation workspace of ``n`` users
    (so a batch of ``max_concurrency`` always fits and one more never does).
    With knobs, ``kv_bytes_per_user`` includes a hybrid stack's recurrent state
    and excludes a shared prefix, stored once as ``shared_kv_bytes``;
    ``offload_capacity_bytes`` is the room for KV beyond HBM (tiers, or the
    attention pool, which then holds all of it: ``kv_on_pool``), and
    concurrency counts it.  ``activation_at(n)`` gives the activation bytes of a
    pass with ``n`` users; ``activation_bytes`` is its value at the budget's batch.
    """

    capacity_bytes: Any
    weight_bytes: Any
    activation_bytes: Any
    reserve_bytes: Any
    kv_bytes_per_token: Any
    kv_bytes_per_user: Any
    free_for_kv_bytes: Any
    max_concurrency: Any
    shared_kv_bytes: Any = 0.0
    offload_capacity_bytes: Any = 0.0
    kv_on_pool: bool = False
    activation_at: Any = field(default=None, compare=False, repr=False)
    dp_ranks: int = 1  # data-parallel attention: groups that each hold their own users (``users_that_fit``)


def users_that_fit(mem: MemoryBudget, n) -> Any:
    """Users whose KV fits while ``n`` users decode together (the activation workspace of ``n``).

    A batch of ``n`` fits iff ``users_that_fit(mem, n) >= n``; the one rule behind
    :attr:`MemoryBudget.max_concurrency`, ``analyze``'s check, ``sweep``'s ``fits``
    and the TP suggestion.  Non-increasing in ``n``.  With ``dp_ranks`` groups (data-parallel
    attention) each GPU holds ``ceil(n / dp_ranks)`` users, and the instance ``dp_ranks`` times
    what one GPU's room takes.
    """
    dp = mem.dp_ranks
    if dp > 1:
        n = np.ceil(np.asarray(n, dtype=np.float64) / dp)
    act = mem.activation_bytes if mem.activation_at is None else mem.activation_at(n)
    free_gpu = mem.capacity_bytes - mem.weight_bytes - act - mem.reserve_bytes
    if mem.kv_on_pool:
        room = np.where(free_gpu >= 0, mem.offload_capacity_bytes - mem.shared_kv_bytes, 0.0)
    else:
        room = np.where(free_gpu >= 0, free_gpu - mem.shared_kv_bytes + mem.offload_capacity_bytes, 0.0)
    room = np.maximum(room, 0.0)
    kv_user = np.asarray(mem.kv_bytes_per_user, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        conc = np.where(
            kv_user > 0,
            np.floor(room / np.where(kv_user > 0, kv_user, 1.0)),
            np.where(free_gpu >= 0, np.inf, 0.0),
        )  # no KV per user: unbounded once the weights fit
    return _f(conc * dp if dp > 1 else conc)


def max_users(mem: MemoryBudget) -> Any:
    """The largest ``n`` with ``users_that_fit(mem, n) >= n`` (0 when not even one user fits).

    A bisection over ``[0, users_that_fit(mem, 1)]`` (the rule is monotone in ``n``),
    elementwise over array budgets; an unbounded count (no KV per user) stays infinite.
    """
    upper = np.asarray(users_that_fit(mem, 1), dtype=np.float64)
    finite = np.isfinite(upper)
    lo = np.zeros_like(upper)
    hi = np.where(finite & (upper >= 1), upper, 0.0)
    while np.any(lo < hi):
        mid = np.floor((lo + hi + 1) / 2)
        ok = np.asarray(users_that_fit(mem, mid), dtype=np.float64) >= mid
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid - 1)
    return _f(np.where(finite, lo, upper))


def memory_budget(
    model: ModelSpec,
    gpu: GPU,
    context_len,
    output_tokens=0,
    precision: Precision = Precision(),
    tp: int = 1,
    chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
    reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
    batch=1,
    knobs: Knobs | None = None,
) -> MemoryBudget:
    """HBM budget per GPU: weights + KV + activations + reserve <= usable HBM.

    Weights are split evenly over the TP group.  Activations are the workspace of
    the larger of one prefill chunk and one decode batch.
    """
    knobs = _active(knobs)
    m = effective_model(model, knobs)
    prec = apply_knobs(precision, knobs)
    ctx = np.asarray(context_len, dtype=np.float64)
    if knobs is not None:
        knobs.check(m, ctx)
    tokens_per_user = ctx + np.asarray(output_tokens, dtype=np.float64)
    capacity = float(gpu.hbm_usable_bytes)
    weights = m.weight_bytes(prec.weights) / tp

    def activation_at(n):
        # one pass holds at most the chunk budget of prompt tokens (shared by the batch), or one
        # token per sequence in decode
        n = np.asarray(n, dtype=np.float64)
        pass_tokens = ctx * n
        if chunk_tokens:
            pass_tokens = np.minimum(pass_tokens, np.maximum(chunk_tokens, n))
        return _f(activation_bytes(m, np.maximum(pass_tokens, n), prec, tp))

    act = activation_at(batch)
    reserve = reserve_fraction * capacity
    kv_tok = kv_bytes_per_token_per_gpu(m, tp, prec.kv, knobs)
    f = _f
    free = capacity - weights - act - reserve
    if knobs is None:
        mem = MemoryBudget(
            capacity_bytes=capacity,
            weight_bytes=weights,
            activation_bytes=f(act),
            reserve_bytes=reserve,
            kv_bytes_per_token=kv_tok,
            kv_bytes_per_user=f(
                kv_tok * _kv_tokens(m, tokens_per_user) + recurrent_state_bytes_per_gpu(m, tp, None)
            ),
            free_for_kv_bytes=f(free),
            max_concurrency=0.0,
            activation_at=activation_at,
        )
        return dataclasses.replace(mem, max_concurrency=max_users(mem))
    p = knobs.shared_prefix_tokens
    kept = _kv_tokens(m, knobs.kept_tokens(tokens_per_user, m.num_layers))
    kv_user = kv_tok * (kept - p) + recurrent_state_bytes_per_gpu(m, tp, knobs)
    shared = kv_tok * p
    if knobs.offload is not None:
        off = knobs.offload
        extra = off.pool_gpu.hbm_usable_bytes * (1 - reserve_fraction) * off.pool_devices_per_gpu
    else:
        extra = sum(t.capacity_for(gpu) for t in knobs.kv_tiers)
    mem = MemoryBudget(
        capacity_bytes=capacity,
        weight_bytes=weights,
        activation_bytes=f(act),
        reserve_bytes=reserve,
        kv_bytes_per_token=kv_tok,
        kv_bytes_per_user=f(kv_user),
        free_for_kv_bytes=f(free),
        max_concurrency=0.0,
        shared_kv_bytes=shared,
        offload_capacity_bytes=float(extra),
        kv_on_pool=knobs.offload is not None,
        activation_at=activation_at,
    )
    return dataclasses.replace(mem, max_concurrency=max_users(mem))


def _kv_tokens(model: ModelSpec, tokens):
    """Tokens whose KV a sequence keeps, averaged over layers: all, or the last ``sliding_window``
    on sliding-window layers (global layers of a mixed model keep all)."""
    return model.kv_tokens(tokens)


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


def context_switch(
    gpu: GPU, profile: Profile, kv_bytes_per_user_per_gpu, knobs: Knobs | None = None
) -> ContextSwitch:
    """Each GPU of the group moves its own share of the KV over its own PCIe link.

    With KV tiers the swap goes to the first tier, at its bandwidth (capped by
    the host link); with attention offloading the pool devices swap over their
    own host links.
    """
    knobs = _active(knobs)
    if knobs is not None and knobs.offload is not None:
        gpu, kv_bytes_per_user_per_gpu = (
            knobs.offload.pool_gpu,
            (kv_bytes_per_user_per_gpu / knobs.offload.pool_devices_per_gpu),
        )
        profile = peak_profile(gpu) if profile.is_peak else resolve_profile(gpu, Mode.CALIBRATED)
    elif knobs is not None and knobs.kv_tiers:
        gpu = gpu.with_overrides(pcie_bytes_per_s_per_direction=knobs.kv_tiers[0].bandwidth_for(gpu))
    out = Memcpy(kv_bytes_per_user_per_gpu, MemLocation.DEVICE, MemLocation.HOST_PINNED)
    inn = Memcpy(kv_bytes_per_user_per_gpu, MemLocation.HOST_PINNED, MemLocation.DEVICE)
    return ContextSwitch(op_cost(out, gpu, profile), op_cost(inn, gpu, profile))
