"""``sweep``: the Cartesian product of scenario axes, evaluated with numpy.

Each TP degree changes the op list's structure, so the sweep runs one evaluation per TP degree (and
knob combination).  The context x batch x output grid is cut into chunks of about
:data:`CHUNK_POINTS` points, each one rectangular block (or a few), priced with numpy broadcasting:
contexts, batches and outputs enter as arrays of shapes ``(c, 1, 1)``, ``(1, b, 1)`` and ``(1, 1, o)``,
so every op and phase is priced over the axes it depends on (a GEMM over the batch sizes, the prefill
and the decode step once per (context, batch) pair, the decode's attention over all three) and only the
output columns span the whole block.  A multi-GPU layout (``pp``, ``sp``, ``ep``, ``attention_dp`` or a
``topology``) is
priced the same way, through :func:`perfmodel.parallel.price_layout`, the code ``analyze`` runs on one
point.  :func:`sweep` writes the chunks into columns allocated once; :func:`iter_sweep` yields them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from perfmodel.hw.loader import load_gpu
from perfmodel.calibration import Mode, resolve_profile
from perfmodel.errors import InvalidInputError, TooLargeError
from perfmodel.knobs import Knobs, KnobError, effective_model
from perfmodel.layers import Precision, apply_knobs
from perfmodel.metrics import METRICS, TIME_METRICS, categorical, size_metrics, time_metrics
from perfmodel.models import load_model
from perfmodel.costs import OpCost
from perfmodel.costs.base import COST_FIELDS
from perfmodel.costs.bands import phase_band
from perfmodel.phases import (
    ContextSwitch,
    DEFAULT_PREFILL_CHUNK_TOKENS,
    DEFAULT_RESERVE_FRACTION,
    context_switch,
    decode_costs,
    decode_step_cost,
    memory_budget,
    prefill_cost,
)

if TYPE_CHECKING:
    import pandas as pd

AXES = ("context_len", "batch", "tp", "output_tokens")

DEFAULT_MAX_BYTES = 2 * 2**30
"""bytes: the largest result :func:`sweep` builds in memory (points x columns x 8 bytes); 2 GiB."""
BASE_COLUMNS = 21  # scenario columns and metrics of a one-GPU-group frame
LAYOUT_COLUMNS = 6  # pp, sp, sp_kind, ep, attention_dp, world
CHUNK_POINTS = 1 << 18
"""points :func:`sweep` evaluates at once (about; :func:`aligned_chunk`): a chunk's temporaries stay a few
MiB per column, so memory is the result plus a bounded working set."""
CHUNK_FRACTION = (
    8  # a streamed chunk holds at most max_bytes / 8 of columns (evaluation needs several times that)
)


@dataclass(frozen=True)
class SweepSize:
    """The size of a sweep's result, known before evaluating it.

    Attributes
    ----------
    points : int
        Rows: the product of the axes' lengths (and the knob axes').
    columns : int
    bytes : int, bytes
        ``points x columns x 8``.
    """

    points: int
    columns: int
    bytes: int


def _axis_len(values: Any) -> int:
    """Length of an axis without building it (``range`` and :class:`IntRanges` know theirs)."""
    if values is None or isinstance(values, (str, bytes)):
        return 1
    if isinstance(values, (Sequence, range)):
        return len(values)
    if isinstance(values, np.ndarray):
        return int(values.size)
    if np.ndim(values) == 0:
        return 1
    return len(list(values))


def sweep_size(
    context_len: Any = 50_000,
    batch: Any = 1,
    tp: Any = 1,
    output_tokens: Any = 250,
    knob_axes: Mapping[str, Iterable[Any]] | None = None,
    layout: bool = False,
) -> SweepSize:
    """Points, columns and bytes of :func:`sweep` over these axes; builds none of them.

    ``layout``: a multi-GPU layout is priced (its columns are added).
    """
    points = _axis_len(context_len) * _axis_len(batch) * _axis_len(tp) * _axis_len(output_tokens)
    knob_cols = 0
    for v in (knob_axes or {}).values():
        points *= _axis_len(v)
        knob_cols += 1
    columns = BASE_COLUMNS + (LAYOUT_COLUMNS if layout else 0) + knob_cols
    return SweepSize(points, columns, points * columns * 8)


def check_size(size: SweepSize, max_bytes: float, hint: str = "") -> None:
    """:class:`TooLargeError` with the point count and the bytes needed when ``size.bytes > max_bytes``."""
    if size.bytes > max_bytes:
        raise TooLargeError(
            f"sweep of {size.points:,} points x {size.columns} columns needs {size.bytes / 2**30:,.1f} GiB "
            f"({size.bytes:,} bytes), beyond the {max_bytes / 2**30:,.2f} GiB budget{hint}",
            count=size.points,
            needed_bytes=size.bytes,
            limit=int(max_bytes),
        )


class IntRanges(Sequence):
    """Integers as a concatenation of ``range`` pieces: knows its length without building the values.

    ``np.asarray`` builds them (``__array__``).
    """

    def __init__(self, parts: Iterable["range | int"]):
        self.parts = tuple(p if isinstance(p, range) else range(int(p), int(p) + 1) for p in parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self)[i]
        if i < 0:
            i += len(self)
        for p in self.parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)

    def __iter__(self):
        for p in self.parts:
            yield from p

    def __array__(self, dtype=None, copy=None):
        a = np.concatenate([np.arange(p.start, p.stop, p.step, dtype=np.int64) for p in self.parts])
        return a if dtype is None else a.astype(dtype)

    def __eq__(self, other) -> bool:
        try:
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        except TypeError:
            return NotImplemented

    def __repr__(self) -> str:
        return f"IntRanges({list(self.parts)!r})"


def _axis(name: str, values: Any, minimum: int) -> np.ndarray:
    """A sweep axis as a flat int64 array, checked as every entry point checks it
    (:func:`perfmodel.scenario.check_ints`)."""
    from perfmodel.scenario import check_ints

    return check_ints(name, values, minimum)


def sweep(
    model,
    gpu=None,
    context_len: Iterable[int] | int | None = None,
    batch: Iterable[int] | int | None = None,
    tp: Iterable[int] | int | None = None,
    output_tokens: Iterable[int] | int | None = None,
    mode: "Mode | str" = Mode.CALIBRATED,
    weight_dtype: str | None = None,
    kv_dtype: str | None = None,
    activation_dtype: str = "bf16",
    chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
    reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
    profile=None,
    knobs: Knobs | None = None,
    knob_axes: Mapping[str, Iterable[Any]] | None = None,
    pp: int = 1,
    sp: int = 1,
    sp_kind: str = "ring",
    ep: int = 1,
    topology: str | None = None,
    attention_impl: str | None = None,
    launch: str | None = None,
    max_bytes: float = DEFAULT_MAX_BYTES,
    moe_placement=None,
    attention_dp: int = 1,
) -> pd.DataFrame:
    """One row per point of ``context_len x batch x tp x output_tokens`` (x the knob axes).

    ``model`` may be a :class:`perfmodel.scenario.Scenario`: its GPU, precision, profile, knobs and
    layout are used, and an axis not given is its single value; otherwise an axis not given is
    ``context_len=50000``, ``batch=1``, ``tp=1``, ``output_tokens=250``.

    Columns are the :func:`perfmodel.analyze` keys plus ``fits``: False where
    the weights plus ``batch`` users' KV do not fit, and the times there are NaN.
    ``df.attrs["notes"]``: analyze's notes for the largest point (a context beyond
    the trained window); the rules are :mod:`perfmodel.scenario`'s.

    ``knobs`` applies one set of KV-cache knobs to every point.  ``knob_axes``
    maps :class:`~perfmodel.knobs.Knobs` field names to lists of values; the
    sweep evaluates their Cartesian product on top of ``knobs`` (one numpy
    pass per combination and TP degree) and adds one column per axis.

    ``pp``, ``sp`` (``sp_kind``), ``ep``, ``attention_dp`` (MoE models: attention data-parallel over
    that many groups of ``tp`` GPUs, :func:`perfmodel.parallel.check_attention_dp`) and ``topology``
    price every point on that multi-GPU layout, as :func:`perfmodel.analyze` does (the layout's
    columns ``pp``, ``sp``, ``sp_kind``, ``ep``, ``attention_dp`` and ``world`` are added, ``attention_dp``
    as analyze reports it: the attention groups, ``ep // (tp * sp)`` under wider EP,
    :func:`perfmodel.parallel.attention_groups`); the knobs
    a layout does not model are refused by name (:func:`perfmodel.parallel.check_knobs`).

    ``attention_impl`` (``sdpa`` default, ``flash2``, ``triton``) picks the attention kernel's curves, as
    in :func:`perfmodel.analyze`; so does ``launch`` (``graph`` or ``eager``).

    ``moe_placement`` (a ``plan moe --json`` file, per-layer expert lists or a
    :class:`~perfmodel.ep_route.MoePlacement`; ``ep`` > 1) prices every point's MoE layers on that placement,
    as :func:`perfmodel.analyze` does.

    ``max_bytes`` (bytes, default :data:`DEFAULT_MAX_BYTES` = 2 GiB): the size of the
    result is estimated first (:func:`sweep_size`: points x columns x 8 bytes); beyond
    it :class:`~perfmodel.errors.TooLargeError` names the point count and the bytes,
    before anything is evaluated.  :func:`iter_sweep` yields the same rows in chunks.

    Parameters
    ----------
    model : str, ModelSpec or Scenario
        A model name or spec, or a checked scenario whose values fill the axes not given.
    gpu : str or GPU, optional
        The accelerator (not read when ``model`` is a scenario).
    context_len, output_tokens : int or iterable of int, tokens
        Axes of prompt lengths and generated tokens.
    batch : int or iterable of int, requests
        Axis of batch sizes.
    tp : int or iterable of int, GPUs
        Axis of tensor-parallel degrees.
    mode, weight_dtype, kv_dtype, activation_dtype, chunk_tokens, reserve_fraction, profile
        As in :func:`perfmodel.analyze`.
    max_bytes : float, bytes
        Largest result to build.

    Returns
    -------
    pandas.DataFrame
        One row per point; times in seconds (``*_s``), sizes in bytes (``*_bytes``), ``fits``.

    Raises
    ------
    TooLargeError
        When the estimated result exceeds ``max_bytes``.
    InvalidInputError
        For a value that no scenario accepts (:func:`perfmodel.scenario.validate_scenario`).
    """
    from perfmodel.scenario import Scenario

    if isinstance(model, Scenario):
        scn = model
        lay = scn.layout
        model, gpu, mode, profile, knobs = scn.model, scn.gpu, scn.mode, scn.profile, scn.knobs
        weight_dtype, kv_dtype, activation_dtype = (
            scn.precision.weights.value,
            scn.raw_kv_dtype,
            scn.precision.activations.value,
        )
        chunk_tokens, reserve_fraction, attention_impl, launch = (
            scn.chunk_tokens,
            scn.reserve_fraction,
            scn.attention_impl,
            scn.launch,
        )
        pp, sp, sp_kind, ep, topology = lay.pp, lay.sp, lay.sp_kind, lay.ep, lay.topology
        attention_dp = lay.attention_dp
        moe_placement = scn.moe_placement if moe_placement is None else moe_placement
        context_len, batch, tp, output_tokens = (
            scn.context_len if context_len is None else context_len,
            scn.batch if batch is None else batch,
            lay.tp if tp is None else tp,
            scn.output_tokens if output_tokens is None else output_tokens,
        )
    elif gpu is None:
        raise InvalidInputError("sweep needs a gpu (or a Scenario as its first argument)")
    context_len = 50_000 if context_len is None else context_len
    batch = 1 if batch is None else batch
    tp = 1 if tp is None else tp
    output_tokens = 250 if output_tokens is None else output_tokens
    layout = (
        pp != 1
        or sp != 1
        or ep != 1
        or attention_dp != 1
        or topology is not None
        or moe_placement is not None
    )
    check_size(
        sweep_size(context_len, batch, tp, output_tokens, knob_axes, layout),
        max_bytes,
        "; evaluate it in chunks with perfmodel.sweep.iter_sweep (the CLI: --out FILE.csv)",
    )
    size = sweep_size(context_len, batch, tp, output_tokens, knob_axes, layout)
    df = _assemble(
        _iter_columns(
            model,
            gpu,
            context_len,
            batch,
            tp,
            output_tokens,
            mode,
            weight_dtype,
            kv_dtype,
            activation_dtype,
            chunk_tokens,
            reserve_fraction,
            profile,
            knobs,
            knob_axes,
            pp,
            sp,
            sp_kind,
            ep,
            topology,
            attention_impl,
            launch,
            aligned_chunk(_axis_len(batch), _axis_len(output_tokens)),
            moe_placement,
            attention_dp,
        ),
        size.points,
    )
    df.attrs["notes"] = sweep_notes(
        model, context_len, output_tokens, gpu, tp, pp, sp, ep, topology, attention_dp
    )
    return df


def aligned_chunk(n_batch: int, n_output: int, target: int = CHUNK_POINTS) -> int:
    """About ``target`` points, a whole number of (batch x output) planes or of output rows where one fits,
    so that each chunk is one rectangular block of the grid (priced in one pass, :func:`_blocks`)."""
    plane = max(1, n_batch * n_output)
    if plane <= target:
        return target // plane * plane
    return target // n_output * n_output if 0 < n_output <= target else target


def _assemble(chunks: Iterable[dict], n: int) -> "pd.DataFrame":
    """One frame of ``n`` rows from the chunks' columns (:func:`_iter_columns`), in order, written into
    columns allocated once (no concatenation copy; the columns of one dtype rows of one block):
    categorical columns keep their categories (their union, in order of first appearance), other columns
    the first chunk's dtype (object where a later one's differs); a single value fills the chunk's rows,
    a :class:`_FitPart` its values where a point fits and NaN elsewhere."""
    import pandas as pd

    cols: dict[str, Any] = {}
    cats: dict[str, list] = {}
    i = 0
    for chunk in chunks:
        k = int(np.size(chunk["context_len"]))
        if not cols:
            cols = _allocate(chunk, n)
        for name, v in chunk.items():
            if isinstance(v, pd.Categorical):
                known = cats.setdefault(name, [])
                for c in v.categories:
                    if c not in known:
                        known.append(c)
                remap = np.array([known.index(c) for c in v.categories] + [-1], dtype=np.int16)
                identity = np.array_equal(remap[:-1], np.arange(len(v.categories)))
                cols[name][i : i + k] = v.codes if identity else remap[v.codes]
                continue
            if isinstance(v, _FitPart):
                v.write(cols[name][i : i + k].reshape(v.shape))
                continue
            a = np.asarray(v)
            if a.ndim == 0 and a.dtype.kind in "US":
                a = np.asarray(v, dtype=object)
            if cols[name].dtype != a.dtype and cols[name].dtype != object:
                cols[name] = cols[name].astype(object)
            dst = cols[name][i : i + k]
            if a.ndim > 1:  # a block: written through a view of its rows, no flattened copy
                dst.reshape(a.shape)[...] = a
            else:
                dst[...] = a
        i += k
    out = {
        name: (categorical(a[:i], tuple(cats[name])) if name in cats else a[:i]) for name, a in cols.items()
    }
    return pd.DataFrame(out, copy=False)


def _allocate(chunk: dict, n: int) -> dict[str, np.ndarray]:
    """Empty columns of ``n`` rows for the columns of ``chunk``, in its dtypes (int16 codes for a
    categorical); the columns of one dtype are the rows of one block, allocated at once (one allocation
    instead of one a column: the operating system maps it in large pages where it can)."""
    import pandas as pd

    dtypes = {}
    for name, v in chunk.items():
        if isinstance(v, pd.Categorical):
            dtypes[name] = np.dtype(np.int16)
        elif isinstance(v, _FitPart):
            dtypes[name] = np.dtype(np.float64)
        else:
            a = np.asarray(v)
            dtypes[name] = np.dtype(object) if a.ndim == 0 and a.dtype.kind in "US" else a.dtype
    cols = {}
    for dt in dict.fromkeys(dtypes.values()):
        names = [name for name, d in dtypes.items() if d == dt]
        block = np.empty((len(names), n), dtype=dt)
        cols.update(zip(names, block))
    return {name: cols[name] for name in chunk}


def sweep_notes(
    model,
    context_len,
    output_tokens,
    gpu=None,
    tp: Any = 1,
    pp: int = 1,
    sp: int = 1,
    ep: int = 1,
    topology: str | None = None,
    attention_dp: int = 1,
) -> list[str]:
    """The notes :func:`perfmodel.analyze` gives, for the sweep's largest point: the trained window, and
    (with ``gpu``) the shipped system a layout beyond one node is priced on."""
    from perfmodel.scenario import check_world, window_note

    m = load_model(model)
    notes = [window_note(m, _axis_max(context_len) + _axis_max(output_tokens))]
    if gpu is not None:
        notes.append(check_world(load_gpu(gpu), [_axis_max(tp)], pp, sp, ep, topology, attention_dp))
    return [n for n in notes if n]


def _axis_max(values: Any) -> int:
    """Largest value of an axis (of an :class:`IntRanges` without building it)."""
    if isinstance(values, IntRanges):
        return max(max(p) for p in values.parts if len(p))
    return int(np.max(np.asarray(values)))


def iter_sweep(
    model,
    gpu,
    context_len=50_000,
    batch=1,
    tp=1,
    output_tokens=250,
    mode="calibrated",
    weight_dtype="bf16",
    kv_dtype=None,
    activation_dtype="bf16",
    chunk_tokens=DEFAULT_PREFILL_CHUNK_TOKENS,
    reserve_fraction=DEFAULT_RESERVE_FRACTION,
    profile=None,
    knobs=None,
    knob_axes=None,
    pp=1,
    sp=1,
    sp_kind="ring",
    ep=1,
    topology=None,
    attention_impl=None,
    launch=None,
    chunk_points: int | None = None,
    moe_placement=None,
    attention_dp=1,
) -> Iterator[pd.DataFrame]:
    """:func:`sweep`'s rows, in order, as frames of at most ``chunk_points`` rows (None: one frame per
    knob combination and TP degree).  No size check: the caller writes each frame out and drops it."""
    import pandas as pd

    for cols in _iter_columns(
        model,
        gpu,
        context_len,
        batch,
        tp,
        output_tokens,
        mode,
        weight_dtype,
        kv_dtype,
        activation_dtype,
        chunk_tokens,
        reserve_fraction,
        profile,
        knobs,
        knob_axes,
        pp,
        sp,
        sp_kind,
        ep,
        topology,
        attention_impl,
        launch,
        chunk_points,
        moe_placement,
        attention_dp,
    ):
        yield pd.DataFrame(
            {
                k: (
                    v.full().reshape(-1)
                    if isinstance(v, _FitPart)
                    else v.reshape(-1)
                    if isinstance(v, np.ndarray) and v.ndim > 1
                    else v
                )
                for k, v in cols.items()
            }
        )


def _iter_columns(
    model,
    gpu,
    context_len,
    batch,
    tp,
    output_tokens,
    mode,
    weight_dtype,
    kv_dtype,
    activation_dtype,
    chunk_tokens,
    reserve_fraction,
    profile,
    knobs,
    knob_axes,
    pp,
    sp,
    sp_kind,
    ep,
    topology,
    attention_impl,
    launch,
    chunk_points,
    moe_placement=None,
    attention_dp=1,
) -> Iterator[dict]:
    """:func:`iter_sweep`'s chunks as columns (arrays, categoricals, or one value for the chunk); the times
    (:data:`~perfmodel.metrics.TIME_METRICS`) as :class:`_FitPart` values (a chunk of one block) or arrays
    already NaN where a point does not fit (``fits``)."""
    m = load_model(model)
    g = load_gpu(gpu)
    ctx_ax = _axis("context_len", context_len, 1)
    b_ax = _axis("batch", batch, 1)
    tp_ax = _axis("tp", tp, 1)
    out_ax = _axis("output_tokens", output_tokens, 0)
    from perfmodel.models import weights_dtype
    from perfmodel.scenario import check_mode, validate_scenario

    validate_scenario(
        m,
        ctx_ax,
        out_ax,
        tp_ax,
        pp,
        mode,
        batch=b_ax,
        sp=sp,
        sp_kind=sp_kind,
        ep=ep,
        topology=topology,
        gpu=g,
        chunk_tokens=chunk_tokens,
        reserve_fraction=reserve_fraction,
        attention_dp=attention_dp,
    )
    base_prec = Precision.of(weights_dtype(m, weight_dtype), activation_dtype, kv_dtype)
    prof = resolve_profile(g, check_mode(mode), profile, attention_impl, launch)
    from perfmodel import parallel as par

    from perfmodel.scenario import check_placement

    placement = check_placement(m, moe_placement, ep)  # None stays None; else ep > 1, so a layout
    layout = par.layout(m, tp_ax, pp, sp, sp_kind, ep, topology, attention_dp=attention_dp)
    if placement is not None:
        layout["moe_placement"] = placement
    ring = par.ring_step_model(prof)
    n = ctx_ax.size * b_ax.size * out_ax.size
    step = n if chunk_points is None else max(1, int(chunk_points))
    for knob_values, kn in _knob_grid(knobs, knob_axes):
        if kn is not None:
            validate_scenario(
                m,
                ctx_ax,
                out_ax,
                tp_ax,
                pp,
                batch=b_ax,
                sp=sp,
                sp_kind=sp_kind,
                ep=ep,
                topology=topology,
                knobs=kn,
                attention_dp=attention_dp,
            )
        prec = apply_knobs(base_prec, kn)
        for t in tp_ax:
            for i0 in range(0, n, step):
                cols = _evaluate_range(
                    m,
                    g,
                    prof,
                    ctx_ax,
                    b_ax,
                    out_ax,
                    i0,
                    min(n, i0 + step),
                    prec,
                    int(t),
                    chunk_tokens,
                    reserve_fraction,
                    kn,
                    layout,
                    ring,
                )
                for name, value in knob_values.items():
                    cols[name] = value.value if hasattr(value, "value") else value
                yield cols


def _blocks(i0: int, i1: int, shape: tuple[int, int, int]) -> Iterator[tuple[slice, slice, slice]]:
    """The points ``i0 .. i1 - 1`` of a context x batch x output grid (flat, output fastest) as at most five
    rectangular blocks ``(contexts, batches, outputs)``, in order."""
    _, nb, no = shape
    i = i0
    while i < i1:
        c, r = divmod(i, nb * no)
        b, o = divmod(r, no)
        if o or i1 - i < no:  # part of one output row
            k = min(no - o, i1 - i)
            yield slice(c, c + 1), slice(b, b + 1), slice(o, o + k)
            i += k
        elif b or i1 - i < nb * no:  # whole output rows of one context
            k = min(nb - b, (i1 - i) // no)
            yield slice(c, c + 1), slice(b, b + k), slice(0, no)
            i += k * no
        else:  # whole contexts
            k = (i1 - i) // (nb * no)
            yield slice(c, c + k), slice(0, nb), slice(0, no)
            i += k * nb * no


def _evaluate_range(
    m, g, prof, ctx_ax, b_ax, out_ax, i0, i1, prec, t, chunk_tokens, reserve_fraction, kn, lay, ring
) -> dict:
    """The columns of the points ``i0 .. i1 - 1`` of the grid at TP degree ``t``; ``lay``: the multi-GPU layout
    (:func:`perfmodel.parallel.layout`; None: one TP group), ``ring`` its Ring step model (None: ideal).
    Array columns are 1-D, or, for a range that is one block, in the block's shape (flattened in C order
    they are the rows); a column of one value is that value."""
    import pandas as pd
    from pandas.api.types import union_categoricals

    shape = (ctx_ax.size, b_ax.size, out_ax.size)
    parts = [
        _evaluate_block(
            m,
            g,
            prof,
            ctx_ax[cs],
            b_ax[bs],
            out_ax[os],
            prec,
            t,
            chunk_tokens,
            reserve_fraction,
            kn,
            lay,
            ring,
        )
        for cs, bs, os in _blocks(i0, i1, shape)
    ]
    if len(parts) == 1:
        cols = parts[0]
    else:
        cols = {
            k: (
                union_categoricals([p[k] for p in parts])
                if isinstance(v, pd.Categorical)
                else np.concatenate([p[k].full().reshape(-1) for p in parts])
                if isinstance(v, _FitPart)
                else v
                if np.ndim(v) == 0
                else np.concatenate([np.ravel(p[k]) for p in parts])
            )
            for k, v in parts[0].items()
        }  # a scalar (weights, KV per token, world) is one for the chunk
    ctx, out, b = cols.pop("context_len"), cols.pop("output_tokens"), cols.pop("batch")
    world = cols.pop("world")
    head = _head_columns(m, g, prof, ctx, out, b, t)
    n = ctx.size
    if lay is not None:
        from perfmodel.degrees import attention_groups

        head = {
            **{k: v for k, v in head.items() if k in ("model", "gpu", "tp")},
            "pp": lay["pp"],
            "sp": lay["sp"],
            "sp_kind": _const(lay["sp_kind"], n),
            "ep": lay["ep"],
            "attention_dp": attention_groups(t, lay["ep"], lay["attention_dp"], lay["sp"]),
            "world": np.full(n, world, dtype=np.int64),
            **{k: v for k, v in head.items() if k not in ("model", "gpu", "tp")},
        }
    return {**head, **cols}


def _evaluate_block(m, g, prof, ctx, b, out, prec, t, chunk_tokens, reserve_fraction, kn, lay, ring) -> dict:
    """The columns of the block ``ctx x b x out`` (1-D integer axes), priced with numpy broadcasting: each
    phase is priced over the axes it depends on (the prefill and the decode step once per (context, batch)
    pair, each op of a pass only over the sizes it reads), then spread over the block.  The grid's
    contexts, outputs and batches come back as ``context_len``, ``output_tokens``, ``batch`` and the
    layout's GPU count as ``world``; the times (:data:`~perfmodel.metrics.TIME_METRICS`) as a
    :class:`_FitPart`, computed only for the contexts and batch sizes with a point that fits."""
    if kn is not None and not kn.active:
        kn = None
    c3 = ctx.astype(np.float64).reshape(-1, 1, 1)
    b3 = b.astype(np.float64).reshape(1, -1, 1)
    o3 = out.astype(np.float64).reshape(1, 1, -1)
    shape = (ctx.size, b.size, out.size)
    if lay is None:
        mem = memory_budget(m, g, c3, o3, prec, t, chunk_tokens, reserve_fraction, batch=b3, knobs=kn)
        pre = prefill_cost(m, g, prof, c3, b3, prec, t, chunk_tokens, knobs=kn)
        fits = np.broadcast_to(np.asarray(mem.max_concurrency) >= b3, shape)
        part = _FitPart.of(fits)
        if part.empty:
            step, dec = decode_step_cost(m, g, prof, c3, b3, prec, t, knobs=kn), None
        else:  # the decode where a point fits, its ops that read no keys the step's
            step, dec = decode_costs(m, g, prof, c3, o3, b3, prec, t, knobs=kn, take=part.take)
        world = t
    else:
        from perfmodel.parallel import price_layout

        mem, ph = price_layout(m, g, prof, c3, o3, b3, prec, t, chunk_tokens, reserve_fraction, kn, lay, ring)
        pre, step, world = ph.prefill, ph.decode_step, int(ph.details["world"])
        fits = np.broadcast_to(np.asarray(mem.max_concurrency) >= b3, shape)
        part = _FitPart.of(fits)
        dec = part.take_cost(ph.decode)
    sw = context_switch(g, prof, mem.kv_bytes_per_user, knobs=kn)
    pre, step = phase_band(pre, prof), phase_band(step, prof)  # as analyze: the combination factors
    if dec is not None:
        dec = phase_band(dec, prof)

    met = size_metrics(effective_model(m, kn), apply_knobs(prec, kn), kn, c3, o3, b3, mem, pre, step)
    if part.empty:
        times = dict.fromkeys(TIME_METRICS, np.empty((0, 0, out.size)))
    else:
        times = time_metrics(
            part.take(c3),
            o3,
            part.take(b3),
            part.take_cost(pre),
            part.take_cost(step),
            dec,
            ContextSwitch(part.take_cost(sw.swap_out), part.take_cost(sw.swap_in)),
        )
    met.update({k: part.with_values(v) for k, v in times.items()})
    grid = (
        ctx.reshape(-1, 1, 1),
        out.reshape(1, 1, -1),
        b.reshape(1, -1, 1),
    )  # integers, spread without copies
    cols = {
        "context_len": np.broadcast_to(grid[0], shape),
        "output_tokens": np.broadcast_to(grid[1], shape),
        "batch": np.broadcast_to(grid[2], shape),
        "world": world,
    }
    return {
        **cols,
        **{k: met[k] for k in METRIC_COLUMNS},
        "prefill_bound": met["prefill_bound"],
        "decode_bound": met["decode_bound"],
        "fits": fits,
    }


def _run(mask: np.ndarray) -> "slice | np.ndarray":
    """The indices where ``mask`` is True: a slice when they are consecutive, else an index array."""
    idx = np.flatnonzero(mask)
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


@dataclass(frozen=True)
class _FitPart:
    """The contexts (``rows``) and batch sizes (``cols``) of a block ``(c, b, o)`` with some point that fits,
    and, once :meth:`with_values` gives them, a column's values over that part (``values``, shape
    ``(rows, cols, o)``): the column is NaN at every point outside the part (none of them fits), and at the
    points of the part that do not fit (``keep``: 1 where a point of the part fits, NaN elsewhere; None
    when every point of the block fits).

    A sweep's times are NaN where a point does not fit, so they are computed only over this part; the
    decode, the one phase priced over the whole block (its attention reads context + output keys for each
    batch size), is priced only there."""

    shape: tuple[int, int, int]
    rows: "slice | np.ndarray"
    cols: "slice | np.ndarray"
    index: tuple
    keep: np.ndarray | None
    empty: bool
    whole: bool
    values: Any = None

    @classmethod
    def of(cls, fits: np.ndarray) -> "_FitPart":
        """The part of the block ``fits`` (booleans, the block's shape) where some point fits: ``rows`` and
        ``cols`` select its contexts and batch sizes (slices where they run consecutively, so that the part
        of an array is a view of it; else index arrays)."""
        any_rows, any_cols = np.any(fits, axis=(1, 2)), np.any(fits, axis=(0, 2))
        r, c = _run(any_rows), _run(any_cols)
        index = np.ix_(r, c) if isinstance(r, np.ndarray) and isinstance(c, np.ndarray) else (r, c)
        empty = not (any_rows.any() and any_cols.any())
        whole = bool(any_rows.all() and any_cols.all())
        keep = None if fits.all() else np.where(fits[index], 1.0, np.nan)
        return cls(fits.shape, r, c, index, keep, empty, whole)

    def take(self, x: Any) -> Any:
        """``x`` (a scalar, or an array that broadcasts against the block) over the part's rows and columns."""
        if self.whole or np.ndim(x) == 0:
            return x
        x = np.asarray(x)
        if x.ndim < 3:
            x = x.reshape((1,) * (3 - x.ndim) + x.shape)
        if x.shape[0] > 1:
            x = x[self.rows]
        if x.shape[1] > 1:
            x = x[:, self.cols]
        return x

    def take_cost(self, cost: OpCost) -> OpCost:
        """``cost`` with each field over the part (:meth:`take`)."""
        if self.whole:
            return cost
        return dataclasses.replace(cost, **{f: self.take(getattr(cost, f)) for f in COST_FIELDS})

    def with_values(self, values: Any) -> "_FitPart":
        return dataclasses.replace(self, values=values)

    def write(self, dst: np.ndarray) -> None:
        """The column into ``dst`` (the block's shape): the values where a point fits, NaN elsewhere."""
        if self.whole:
            if self.keep is None:
                dst[...] = self.values
            else:
                np.multiply(self.values, self.keep, out=dst)
            return
        dst.fill(np.nan)
        if self.empty:
            return
        if isinstance(self.index[0], slice) and isinstance(self.index[1], slice):  # a view: written in place
            np.multiply(self.values, self.keep, out=dst[self.index])
        else:
            dst[self.index] = self.values * self.keep

    def full(self) -> np.ndarray:
        """The column over the whole block (:meth:`write`)."""
        dst = np.empty(self.shape)
        self.write(dst)
        return dst


#: The metric columns of a frame, in order: :data:`perfmodel.metrics.METRICS` without the two bounds (their own
#: categorical columns).
METRIC_COLUMNS = tuple(k for k in METRICS if k not in ("prefill_bound", "decode_bound"))


def _knob_grid(knobs: Knobs | None, knob_axes: Mapping[str, Iterable[Any]] | None):
    """``(axis values, Knobs)`` for each point of the knob axes' product."""
    if knobs is not None and not isinstance(knobs, Knobs):
        raise InvalidInputError(f"knobs must be a Knobs value, got {knobs!r}")
    if not knob_axes:
        yield {}, knobs
        return
    fields = set(Knobs.__dataclass_fields__)
    names = list(knob_axes)
    for n in names:
        if n not in fields:
            raise KnobError(f"unknown knob axis {n!r}; known: {', '.join(sorted(fields))}")
    values = [list(np.atleast_1d(np.asarray(knob_axes[n], dtype=object))) for n in names]
    for n, v in zip(names, values):
        if not v:
            raise KnobError(f"knob axis {n!r} is empty")
    base = knobs or Knobs()
    for combo in itertools.product(*values):
        clean = {n: (v.item() if hasattr(v, "item") else v) for n, v in zip(names, combo)}
        yield clean, base.replace(**clean)


def _head_columns(m, g, prof, ctx, out, b, t) -> dict:
    """The scenario columns of a sweep frame (model, GPU, TP, mode, the grid)."""
    n = ctx.size
    return {
        "model": _const(m.name, n),
        "gpu": _const(g.name, n),
        "tp": t,
        "mode": _const(prof.mode.value, n),
        "provenance": _const(prof.provenance_summary(), n),
        "context_len": np.asarray(ctx, dtype=np.int64),
        "output_tokens": np.asarray(out, dtype=np.int64),
        "batch": np.asarray(b, dtype=np.int64),
    }


def _const(text: str, n: int) -> pd.Categorical:
    """A column holding one string ``n`` times (categorical: building a million strings is slow)."""
    return categorical(np.zeros(n, dtype=np.int8), (text,))
