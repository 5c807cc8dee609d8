"""Cost of attention under its implementation's curve (:class:`AttentionParams`), and the schedules
attention kernels run, vectorised with numpy:

- :func:`flash_splits`: the KV split count flash-attention (v2) picks (PyTorch SDPA's flash backend);
- :func:`flash_block_n`: the KV block of its split-KV kernel;
- :func:`prefill_schedule_s`: prefill attention as (sequence, head, query tile) programs over the SMs;
- our Triton decode kernels' schedules (split-KV, stream-K, the general kernel) and :class:`SplitRule`:
  :mod:`perfmodel.costs.attention_decode`, re-exported here.

A profile holds one curve per attention class (``attention_prefill``, ``attention_decode``) and
implementation (:class:`perfmodel.ops.AttentionImpl`), named by :func:`curve_key`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perfmodel.hw.spec import GPU, Dtype
from perfmodel.costs.attention_decode import (
    SplitRule,
    triton_decode_block_n,
    triton_decode_pieces,
    triton_decode_terms,
    triton_general_decode,
)
from perfmodel.costs.base import (
    Bound,
    OpClass,
    OpCost,
    RooflineParams,
    op_memo,
    roofline,
    unit_waves_s,
    waves,
)
from perfmodel.errors import ProfileError
from perfmodel.ops import Attention, AttentionImpl, Phase, bytes_moved, flops, window_keys
from perfmodel.ops import padded as ops_padded

if TYPE_CHECKING:
    from perfmodel.calibration import Profile

__all__ = [
    "ATTENTION_CLASSES",
    "AttentionParams",
    "SplitRule",
    "attention_class",
    "attention_cost",
    "curve_key",
    "flash_block_n",
    "flash_splits",
    "math_head_dims",
    "prefill_schedule_s",
    "triton_decode_block_n",
    "triton_decode_pieces",
    "triton_decode_terms",
    "triton_general_decode",
]


ATTENTION_CLASSES = (OpClass.ATTENTION_PREFILL, OpClass.ATTENTION_DECODE)


def attention_class(phase: Phase) -> OpClass:
    """The attention class of an op of ``phase``."""
    return OpClass.ATTENTION_PREFILL if phase is Phase.PREFILL else OpClass.ATTENTION_DECODE


def curve_key(op_class: OpClass, impl: AttentionImpl) -> str:
    """The profile's name of an attention curve: ``attention_prefill[sdpa]``."""
    return f"{op_class.value}[{impl.value}]"


@dataclass(frozen=True)
class AttentionParams(RooflineParams):
    """Achieved-fraction curve of one attention implementation in one phase.

    The roofline (``compute_eff`` ... ``tail_memory_eff``) as :class:`perfmodel.costs.gemm.GemmParams`;
    query tiles and waves (``tile_m`` queries per program and head, ``wave_quant``, ``tile_overhead_s``;
    0 disables them); and the kernel's programs:

    Attributes
    ----------
    compute_eff, memory_eff : float, fractions of peak FLOP/s and bandwidth in (0, 1.5]
    latency_s : float, seconds per kernel
    overlap : float in [0, 1]
    ramp_flops, ramp_bytes : float, FLOPs / bytes at which half of the efficiency is reached (0: none)
    bandwidth_bytes_per_s : float, overrides the datasheet bandwidth (0: datasheet)
    knee_bytes, tail_memory_eff : float, bytes beyond the knee stream at the tail efficiency (0: none)
    tile_m : int, query rows of one program (decode: a KV head's query group) (0: no quantization)
    wave_quant : float in [0, 1], weight of the partial-wave penalty
    tile_overhead_s : float, seconds per wave of tiles
    units_per_sm : float, programs resident per SM at once (0: no occupancy term).  The programs run in
        waves of ``units_per_sm * SMs``; each takes ``unit_overhead_s + unit_bytes / (unit_memory_eff *
        bandwidth / SMs)``, and the memory time is at least the waves times that (Little's law: few
        programs in flight cannot fill HBM; :func:`perfmodel.costs.base.unit_waves_s`).
    unit_overhead_s : float, fixed seconds of one program (prologue, reduction, epilogue)
    unit_memory_eff : float, streaming rate of one program as a fraction of the bandwidth per SM
        (above 1 when one SM's share is outrun by one program; 0: no per-program byte term)
    unit_step_s : float, decode: seconds one program spends per KV tile it walks that its byte stream does
        not hide (a load round trip per tile), so a program of ``n`` tiles takes ``unit_overhead_s + n *
        unit_step_s + bytes / rate``; smaller heads move fewer bytes per tile and lose more to it (0: none)
    split_rule : SplitRule, how the kernel splits the KV axis over programs (``NONE`` 0, ``FLASH`` 1,
        ``FILL`` 2, ``STREAM_K`` 3)
    split_latency_s : float, seconds added when the KV axis is split (the combine kernel)
    split_memory_eff : float, memory efficiency of the split-KV path (0: ``memory_eff``)
    split_piece_s : float, seconds the combine kernel adds per KV split (per piece for our Triton kernels):
        its few blocks read every split's partial row in turn (0: none)
    unit_compute_eff : float, prefill scheduled as programs (0: off): math rate of one (sequence, head,
        query tile) program as a fraction of one SM's peak FLOP/s; the compute time is then the makespan
        of the programs over ``units_per_sm * SMs`` slots (:func:`prefill_schedule_s`)
    score_flops : float, scheduled prefill: math per attention score outside the tensor-core matmuls
        (the softmax: max, exp, rescale), in FLOPs at the programs' rate; a program's key costs
        ``tile_m * (4 * head_dim + score_flops)`` (0: none), so small heads cost more per FLOP
    unit_share : float in [0, 1], scheduled prefill: the largest share of its SM's math rate one program
        reaches once the shorter programs beside it have finished (0: off)
    reduce_bytes_eff : float, Triton split/stream decode (0: off): the combine kernel's partial results
        (fp32, one row per query head and KV piece) stream at this fraction of the bandwidth
    reduce_row_s : float, Triton split/stream decode (0: off): seconds per output row (a query head of a
        sequence; the combine kernel runs one program per row) and SM
    merge_latency_s : float, Triton stream-K decode at one wave (programs no more than the SMs): no combine
        kernel runs; where a (sequence, kv head) pair is split, the last of its programs takes an atomic
        and merges the pair's pieces after its own tiles, costing this latency ...
    merge_step_s : float, ... plus this per load of the pair's partials
        (:func:`perfmodel.decode_schedule.merge_loads`; 0: free)
    """

    tile_m: int = 0
    wave_quant: float = 1.0
    tile_overhead_s: float = 0.0
    units_per_sm: float = 0.0
    unit_overhead_s: float = 0.0
    unit_memory_eff: float = 0.0
    unit_step_s: float = 0.0
    split_rule: SplitRule = SplitRule.NONE
    split_latency_s: float = 0.0
    split_memory_eff: float = 0.0
    split_piece_s: float = 0.0
    unit_compute_eff: float = 0.0
    score_flops: float = 0.0
    unit_share: float = 0.0
    reduce_bytes_eff: float = 0.0
    reduce_row_s: float = 0.0
    merge_latency_s: float = 0.0
    merge_step_s: float = 0.0

    def __post_init__(self) -> None:
        # a profile stores the split rule as its number; an unknown number is left for validate()
        if not isinstance(self.split_rule, SplitRule) and self.split_rule in set(SplitRule):
            object.__setattr__(self, "split_rule", SplitRule(self.split_rule))

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.split_rule not in set(SplitRule):
            raise ProfileError(
                f"{where}: split_rule must be one of {[int(r) for r in SplitRule]}, got {self.split_rule}"
            )


def flash_splits(units, n_blocks, slots: int, max_splits: int = 128):
    """KV splits the flash-attention (v2) forward picks, vectorised.

    Flash-attention splits the KV axis only when the ``units`` (batch x heads x 64-row query
    blocks) fill under 80% of ``slots`` (2 x SMs: two 128-thread blocks per SM).  Among split
    counts up to ``min(max_splits, slots, n_blocks)`` that change the blocks per split, it takes
    the smallest whose wave efficiency ``w / ceil(w)`` (``w = units * splits / slots``) is within
    85% of the best (Dao et al., flash-attention ``num_splits_heuristic``).

    Evaluated once per distinct (units, n_blocks) pair, so a million-point sweep stays cheap; when
    the two broadcast over different axes (a grid), the pairs are the product of each one's distinct
    values and no sort of the whole grid is needed.
    """
    u0, n0 = np.asarray(units, dtype=np.float64), np.asarray(n_blocks, dtype=np.float64)
    shape = np.broadcast_shapes(u0.shape, n0.shape)
    ub = u0.reshape((1,) * (len(shape) - u0.ndim) + u0.shape)
    nb = n0.reshape((1,) * (len(shape) - n0.ndim) + n0.shape)
    if len(shape) and all(a == 1 or b == 1 for a, b in zip(ub.shape, nb.shape)):
        uu, iu = np.unique(np.round(ub), return_inverse=True)
        nn, in_ = np.unique(np.round(nb), return_inverse=True)
        table = np.ones((uu.size, nn.size))
        need = uu < 0.8 * slots
        if np.any(need):
            table[need] = _split_table_memo(uu[need], nn, slots, max_splits)
        return table[iu.reshape(ub.shape), in_.reshape(nb.shape)]
    u, n = np.broadcast_arrays(u0, n0)
    out = np.ones(u.shape)
    need = u < 0.8 * slots
    if not np.any(need):
        return out if out.ndim else float(out)
    key = np.round(u[need]) * 1e9 + np.round(n[need])
    uniq, inv = np.unique(key, return_inverse=True)
    uu = np.floor(uniq / 1e9)
    nn = uniq - uu * 1e9
    out[need] = _split_choice(uu, nn, slots, max_splits)[np.ravel(inv)]
    return out if out.ndim else float(out)


#: :func:`_split_table_memo`'s split counts per ``(slots, max_splits)``: a ``uint8`` table indexed by the unit count
#: and the KV block count (capped where the choice stops depending on it), 0 where not computed yet.
_SPLIT_MEMO: dict[tuple[int, int], np.ndarray] = {}


def _split_table_memo(uu, nn, slots: int, max_splits: int):
    """:func:`_split_table`, each (unit count, KV blocks) pair computed once per process: the choice is a pure
    function of integers, and a sweep prices the same counts chunk after chunk.  Past
    ``m * (m - 1)`` blocks (``m = min(max_splits, slots)``) every split count up to ``m`` changes the blocks per
    split, so the choice no longer depends on the block count; counts that are not integers in range are
    computed directly."""
    m = min(max_splits, slots)
    cap = m * (m - 1) + 1
    rows = int(np.ceil(0.8 * slots)) + 1
    if not (
        0 < m < 256
        and np.all(np.isfinite(uu))
        and np.all(np.isfinite(nn))
        and np.all(uu >= 0)
        and np.all(uu < rows)
        and np.all(nn >= 0)
        and np.all(uu == np.floor(uu))
        and np.all(nn == np.floor(nn))
    ):
        return _split_table(uu, nn, slots, max_splits)
    ui, ni = uu.astype(np.intp), np.minimum(nn, cap).astype(np.intp)
    memo = _SPLIT_MEMO.get((slots, max_splits))
    if memo is None or memo.shape[1] <= ni.max():
        width = min(cap + 1, max(int(ni.max()) + 1, 2 * (0 if memo is None else memo.shape[1])))
        grown = np.zeros((rows, width), np.uint8)
        if memo is not None:
            grown[:, : memo.shape[1]] = memo
        memo = _SPLIT_MEMO[slots, max_splits] = grown
    got = memo[ui[:, None], ni[None, :]]
    miss = got == 0
    if miss.any():
        r, c = np.flatnonzero(miss.any(axis=1)), np.flatnonzero(miss.any(axis=0))
        new = _split_table(uu[r], np.minimum(nn[c], cap), slots, max_splits)
        memo[ui[r][:, None], ni[c][None, :]] = new
        got = memo[ui[:, None], ni[None, :]]
    return got.astype(np.float64)


def _split_table(uu, nn, slots: int, max_splits: int):
    """:func:`_split_choice` of every (``uu[i]``, ``nn[j]``) pair, a ``(len(uu), len(nn))`` table: the split
    counts a KV length allows are found once per length, the wave efficiencies once per unit count, and
    the best allowed efficiency of a pair is the first allowed count in that unit count's ranking."""
    s = np.arange(1, max_splits + 1, dtype=np.float64)
    allowed = s[None, :] <= np.minimum(min(max_splits, slots), nn)[:, None]
    changes = (s == 1)[None, :] | (np.ceil(nn[:, None] / s) != np.ceil(nn[:, None] / np.maximum(s - 1, 1)))
    mask = allowed & changes  # (lengths, splits)
    w = uu[:, None] * s / slots
    with np.errstate(invalid="ignore", divide="ignore"):  # w = 0 (no units): 0 / 0, never chosen
        e = w / np.ceil(w)  # (units, splits)
    order = np.argsort(-np.where(np.isnan(e), -np.inf, e), axis=1, kind="stable")  # best first
    out = np.empty((uu.size, nn.size))
    allowed_t = np.ascontiguousarray(mask.T)  # (splits, lengths): a ranking reorders whole rows
    for i in range(uu.size):
        ei = e[i]
        best = ei[order[i]][np.argmax(allowed_t[order[i]], axis=0)]  # the best allowed efficiency per length
        with np.errstate(invalid="ignore"):
            ok = allowed_t & ((ei[:, None] >= 0.85 * best[None, :]) & (ei > 0)[:, None])
        out[i] = np.where(ok.any(axis=0), np.argmax(ok, axis=0) + 1.0, 1.0)
    return out


def _split_choice(uu, nn, slots: int, max_splits: int):
    """The split count of each (units, KV blocks) pair (1-D arrays) by the heuristic of :func:`flash_splits`."""
    s = np.arange(1, max_splits + 1, dtype=np.float64)[None, :]
    allowed = s <= np.minimum(min(max_splits, slots), nn)[:, None]
    changes = (s == 1) | (np.ceil(nn[:, None] / s) != np.ceil(nn[:, None] / np.maximum(s - 1, 1)))
    w = uu[:, None] * s / slots
    with np.errstate(invalid="ignore", divide="ignore"):  # w = 0 (no units): 0 / 0, not chosen
        eff = np.where(allowed & changes, w / np.ceil(w), 0.0)
    ok = (eff >= 0.85 * eff.max(axis=1, keepdims=True)) & (eff > 0)
    return np.where(ok.any(axis=1), np.argmax(ok, axis=1) + 1.0, 1.0)


def flash_block_n(head_dim):
    """KV block of the flash split-KV kernel (256 keys up to head_dim 64, 128 up to 128, else 64)."""
    d = np.asarray(head_dim, dtype=np.float64)
    return np.where(d <= 64, 256.0, np.where(d <= 128, 128.0, 64.0))


def _pow2_at_least_64(d):
    d = np.asarray(d, dtype=np.float64)
    return np.maximum(64.0, 2.0 ** np.ceil(np.log2(np.maximum(d, 1.0))))


def math_head_dims(op: Attention, impl: AttentionImpl | None = None):
    """``(query/key, value)`` head sizes an attention kernel computes with: the op's own, except under
    PyTorch's default SDPA (cuDNN on Hopper), whose fused kernels come in head-size tiers and pad a head to
    the next one (64, 128, 256; a head_dim 96 prefill ran the same ``..._64x128x128_...`` cuDNN kernel as a
    head_dim 128 one on an H100, ``docs/calibration.md``).  ``impl``: the kernel that runs (default the op's)."""
    d = np.asarray(op.head_dim, dtype=np.float64)
    dv = np.asarray(op.v_head_dim or op.head_dim, dtype=np.float64)
    if (impl or op.impl) is AttentionImpl.SDPA:
        return _pow2_at_least_64(d), _pow2_at_least_64(dv)
    return d, dv


def prefill_schedule_s(
    op: Attention,
    gpu: GPU,
    p: AttentionParams,
    splits,
    math_peak_flops_per_s: float,
    impl: AttentionImpl | None = None,
):
    """Compute time of prefill attention as (sequence, head, query tile) programs over the SMs.

    Each program (a ``tile_m``-row query tile, 128 if unset) loops over its keys: it costs
    ``unit_overhead_s + tile_m * (2 * (head_dim + v_head_dim) + score_flops) * keys / (unit_compute_eff * peak / SMs)``
    (the head sizes the kernel computes with, :func:`math_head_dims`)
    (``score_flops``: the softmax work of one score, which does not shrink with the head).  With
    a causal mask the tile ``t`` of ``T`` sees ``kv - q + (t + 1) * tile_m`` keys, so the last
    tiles do most of the work.  ``units_per_sm * SMs`` programs run at once (flash-attention 2
    runs one query tile per thread block and loops over key blocks, Dao 2023).  The makespan is
    at least the longest program and at least the mean load of a slot plus ``wave_quant`` of a
    mean program (the tail of list scheduling); without a causal mask the programs are equal, so
    that tail is at most the idle part of the last wave (``ceil(x) - x`` programs for ``x``
    programs per slot).  KV splits divide each program's keys.  With a sliding window (``op.window``)
    a tile reads at most ``window + tile_m - 1`` keys (:func:`perfmodel.ops.window_keys`), so the time
    grows linearly in the context beyond the window.  ``impl``: the kernel that runs (the op's when
    ``None``).
    """
    bm = float(p.tile_m or 128)
    q = np.asarray(op.q_len, dtype=np.float64)
    kv = np.asarray(op.kv_len, dtype=np.float64)
    tiles = np.ceil(q / bm)
    units = np.asarray(op.batch, dtype=np.float64) * np.asarray(op.q_heads, dtype=np.float64) * tiles * splits
    # a window caps the keys of a tile: its ``bm`` rows read the last ``window + bm - 1`` at most
    cap = np.asarray(window_keys(kv, op.window, bm), dtype=np.float64)
    if op.causal:
        mean_keys = kv - q + bm * (tiles + 1.0) / 2.0
        if op.window > 0:
            mean_keys = mean_keys - _mean_tile_excess(kv - q, bm, tiles, op.window + bm - 1.0)
        mean_keys = np.clip(mean_keys, 1.0, cap)
    else:
        mean_keys = cap
    mean_keys, max_keys = mean_keys / splits, cap / splits
    rate = p.unit_compute_eff * math_peak_flops_per_s / gpu.sm_count
    # programs sharing an SM split its math; fewer programs than slots each run faster
    per_sm = max(p.units_per_sm, 1.0)
    rate = rate * per_sm / np.clip(units / gpu.sm_count, 1.0, per_sm)
    d, dv = math_head_dims(op, impl)
    per_key_s = bm * (2.0 * (d + dv) + p.score_flops) / rate
    t_mean = p.unit_overhead_s + mean_keys * per_key_s
    t_max = p.unit_overhead_s + max_keys * per_key_s
    if p.unit_share > 0:
        # the longest program speeds up once the shorter ones on its SM finish, up to a share
        # ``unit_share`` of the SM's math rate (``per_sm`` programs at the base rate fill it)
        sm_rate = p.unit_compute_eff * math_peak_flops_per_s / gpu.sm_count * per_sm
        key_flops = bm * (2.0 * (d + dv) + p.score_flops)
        t_max = np.minimum(t_max, p.unit_overhead_s + max_keys * key_flops / (p.unit_share * sm_rate))
    slots = max(p.units_per_sm, 1.0) * gpu.sm_count
    tail = p.wave_quant
    if not op.causal:
        # equal programs: no list-scheduling tail beyond the idle part of the last wave (a grid
        # that fills the slots exactly ends with its one wave)
        x = units / slots
        tail = np.minimum(p.wave_quant, np.ceil(x) - x)
    return np.maximum(t_max, units * t_mean / slots + tail * t_mean)


def _mean_tile_excess(past, bm: float, tiles, cap: float):
    """Mean over ``tiles`` causal query tiles of ``max(past + (t + 1) * bm - cap, 0)``: the keys of tile
    ``t`` (of a prefill after ``past`` cached tokens) beyond a window's cap; 0 when ``cap`` is at least
    ``past + tiles * bm`` (a window as long as the context)."""
    under = np.clip(np.floor((cap - past) / bm), 0.0, tiles)  # tiles within the cap
    over = tiles - under
    excess = over * (past - cap) + bm * (tiles * (tiles + 1.0) - under * (under + 1.0)) / 2.0
    return excess / np.maximum(tiles, 1.0)


def _ragged_attention_cost(op: Attention, gpu: GPU, prof: Profile) -> OpCost:
    """A ragged batch (``op.seq_lens``) as one variable-length kernel: its grid is the padded batch's
    (programs past a sequence's end exit at once), so the padded op's terms are kept with its compute
    time scaled by the FLOP ratio (each sequence's own causal pairs over the padded ones) and its memory
    time by the byte ratio; the fixed latency is the padded launch's.  Equal lengths cost what the
    padded op does."""
    pad = ops_padded(op)
    c = attention_cost(pad, gpu, prof)
    fl, by = flops(op), bytes_moved(op)
    rf = fl / float(c.flops) if c.flops else 1.0
    rb = by / float(c.bytes) if c.bytes else 1.0
    comp, mem = c.compute_s * rf, c.memory_s * rb
    cls = attention_class(op.phase)
    ov = min(comp, mem) * prof.attention_params(cls, op.impl).overlap
    return dataclasses.replace(c, compute_s=comp, memory_s=mem, overlap_s=ov, flops=fl, bytes=by)


def _rows_heads(op: Attention):
    """(query rows of one program's tile, heads that run as programs): prefill runs one program per block of
    queries of one head; decode kernels pack a KV head's query group (and its new tokens) into one tile."""
    q = np.asarray(op.q_len, dtype=np.float64)
    if op.phase is Phase.PREFILL:
        return q, np.asarray(op.q_heads, dtype=np.float64)
    return q * op.q_heads / op.kv_heads, np.asarray(op.kv_heads, dtype=np.float64)


def _programs(op: Attention):
    """(units, keys one program walks, KV blocks): the (sequence, head, 64-row query block) units before any
    split of the keys, and the keys a window caps (a decode step's new tokens, a 64-row query block)."""
    rows, heads = _rows_heads(op)
    units = np.asarray(op.batch, dtype=np.float64) * heads * np.ceil(rows / 64.0)
    q = np.asarray(op.q_len, dtype=np.float64)
    kv_read = np.asarray(
        window_keys(op.kv_len, op.window, q if op.phase is Phase.DECODE else 64.0), dtype=np.float64
    )
    return units, kv_read, np.ceil(kv_read / flash_block_n(op.head_dim))


def _flash_splits_of(op: Attention, slots: int):
    """:func:`flash_splits` of ``op``'s programs over ``slots`` program slots."""
    units, _, n_blocks = op_memo(op, "programs", _programs)
    return flash_splits(units, n_blocks, slots)


def attention_cost(op: Attention, gpu: GPU, prof: Profile) -> OpCost:
    """One attention op under its implementation's curve (:meth:`perfmodel.calibration.Profile.attention_params`),
    seconds; a ragged batch (``op.seq_lens``) as one variable-length kernel."""
    if op.seq_lens is not None:
        return _ragged_attention_cost(op, gpu, prof)
    cls = attention_class(op.phase)
    p = prof.attention_params(cls, op.impl)
    math_dtype = op.dtype if op.dtype not in (Dtype.INT8, Dtype.INT4) else Dtype.BF16
    fl = op_memo(op, "flops", flops)
    by = op_memo(op, "bytes", bytes_moved)
    rows, heads = _rows_heads(op)
    scheduled = op.phase is Phase.PREFILL and p.unit_compute_eff > 0
    fl_eff, extra = None, 0.0
    if p.tile_m > 0 and not scheduled:
        tiles_per_head = np.ceil(rows / p.tile_m)
        pad = tiles_per_head * p.tile_m / rows
        blocks = np.asarray(op.batch, dtype=np.float64) * heads * tiles_per_head
        factor, whole = waves(blocks, gpu.sm_count, p.wave_quant)
        if op.phase is not Phase.PREFILL:
            factor = 1.0  # the KV length is split over programs: no wave penalty on the math
        fl_eff = np.asarray(fl, dtype=np.float64) * pad * factor
        extra = whole * p.tile_overhead_s
    floor, split_lat, eff = 0.0, 0.0, None
    splits = 1.0
    if p.split_rule or p.units_per_sm > 0 or scheduled:
        units, kv_read, n_blocks = op_memo(op, "programs", _programs)
        slots = 2 * gpu.sm_count
        if p.split_rule in (SplitRule.FILL, SplitRule.STREAM_K):
            split_lat, eff, floor = triton_decode_terms(op, gpu, p, units, heads, rows, kv_read, by)
        else:
            if p.split_rule == SplitRule.FLASH:
                splits = op_memo(op, "flash_splits", _flash_splits_of, slots)
            else:
                splits = np.ones_like(units)
            split = np.asarray(splits) > 1
            if p.split_latency_s > 0 or p.split_piece_s > 0:
                # the combine kernel: a launch, and each of its few blocks reads every split's partial in turn
                split_lat = np.where(
                    split, p.split_latency_s + p.split_piece_s * np.asarray(splits, dtype=np.float64), 0.0
                )
            if p.split_memory_eff > 0:
                eff = np.where(split, p.split_memory_eff, p.memory_eff)
            if not scheduled:
                floor = unit_waves_s(
                    units * splits, by, gpu.sm_count, gpu.hbm_bytes_per_s, p, n_blocks / splits
                )
    if scheduled:
        fl_eff = 0.0
        extra = prefill_schedule_s(
            op,
            gpu,
            p,
            np.asarray(splits, dtype=np.float64),
            gpu.flops_for(math_dtype),
            op.impl or prof.attention_impl,
        )
    return roofline(
        fl,
        by,
        gpu.flops_for(math_dtype),
        gpu.hbm_bytes_per_s,
        p,
        Bound.HBM_BANDWIDTH,
        fl_eff,
        extra,
        floor,
        split_lat,
        eff,
    )
