"""Schedules of the Triton decode-attention kernels (``perfmodel.kernels.attention_decode``), torch-free.

The launcher calls these rules with ints to size its grids; the cost model
(:mod:`perfmodel.costs`) calls them with numpy arrays to price the same grids. Every rule is
written once, here, so the two cannot drift.

* split-KV: the KV axis of every (sequence, kv head) pair is cut into equal chunks of whole tiles,
  about ``SPLIT_KV_PROGRAMS_PER_SM`` programs per SM in all (:func:`split_kv_pieces`).
* stream-K: the KV tiles of all pairs are concatenated and cut into equal runs, one per program
  (:func:`stream_k_programs`); a pair split over several runs is merged inside the stream-K kernel
  when the programs fit one per SM (:func:`fused_merge`), else by a reduction kernel.

:class:`DecodeConfig` holds the tunable settings; its defaults are what the kernels ship with and
what the cost model prices.

Caches those kernels do not take (:func:`runs_general`: other head sizes, a value head of its
own size, an fp8 cache, MLA's shared latent) run a general split-KV kernel
(``perfmodel.kernels._decode_general``) whose programs serve ``block_g`` query heads of a kv head each
(:func:`general_tile`), its KV axis cut into :func:`general_splits` chunks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BLOCK_N",
    "DEFAULT_CONFIG",
    "FUSED_MERGE_ROWS",
    "INT32_PRODUCT_LIMIT",
    "REDUCE_GUESS_MAX",
    "SPLIT_KV_PROGRAMS_PER_SM",
    "STREAM_K_HEAD_DIMS",
    "DecodeConfig",
    "DecodeSchedule",
    "block_n",
    "fused_merge",
    "general_splits",
    "general_tile",
    "merge_block_s",
    "merge_loads",
    "reduce_guess",
    "runs_general",
    "split_kv_pieces",
    "stream_k_grid",
    "stream_k_pieces_per_pair",
    "stream_k_programs",
    "wide_offsets",
]

#: keys per KV tile on the GPU (split-KV at every head_dim; stream-K at head_dim > 64)
BLOCK_N = 64
#: split-KV aims at this many programs per SM when ``num_splits`` is not given
SPLIT_KV_PROGRAMS_PER_SM = 2
#: rows (slots x padded query heads) the one-wave stream-K merge loads at once
FUSED_MERGE_ROWS = 64
#: the most slots per pair the stream-K reduction loads before reading its plan
REDUCE_GUESS_MAX = 64
#: head sizes (K and V alike, float cache) of the split-KV and stream-K kernels
STREAM_K_HEAD_DIMS = (64, 128, 256)
#: program offsets ``p * total_tiles`` are computed in 32 bits below this bound, in 64 above
INT32_PRODUCT_LIMIT = 2**31


class DecodeSchedule(str, enum.Enum):
    """How decode attention spreads the KV cache over programs."""

    SPLIT_KV = "split_kv"
    STREAM_K = "stream_k"


@dataclass(frozen=True)
class DecodeConfig:
    """Settings of the decode schedules; the defaults are the shipped kernels.

    Attributes
    ----------
    programs_per_sm : int
        Stream-K programs per SM when ``num_splits`` is not given. Two keep twice the bytes in
        flight (faster than split-KV in most measured shapes on H100 and H200).
    small_programs_per_sm : int
        Stream-K programs per SM for small caches: at most ``small_tiles_per_sm`` KV tiles per SM
        and no more (sequence, kv head) pairs than SMs (one per SM measured faster there).
    small_tiles_per_sm : int
        The KV tiles per SM up to which a cache counts as small.
    phantom_tiles : int
        With unequal tile counts per pair, the one-wave stream-K kernel cuts the concatenated KV
        as if each pair began with this many phantom tiles, so a run that crosses a pair boundary
        holds that many fewer real tiles (0: off).
    fused_merge : bool or None
        Stream-K merges split pairs inside its own kernel: None, where the programs fit one per
        SM (:func:`fused_merge`); True, always; False, never (the reduction kernel).
    wide_offsets : bool or None
        Stream-K program offsets in 64 bits: None, where 32 bits could overflow
        (:func:`wide_offsets`); True or False to force either path.
    """

    programs_per_sm: int = 2
    small_programs_per_sm: int = 1
    small_tiles_per_sm: int = 32
    phantom_tiles: int = 5
    fused_merge: bool | None = None
    wide_offsets: bool | None = None

    def __post_init__(self) -> None:
        for name in ("programs_per_sm", "small_programs_per_sm", "small_tiles_per_sm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if (
            isinstance(self.phantom_tiles, bool)
            or not isinstance(self.phantom_tiles, int)
            or self.phantom_tiles < 0
        ):
            raise ValueError(f"phantom_tiles: expected an int >= 0, got {self.phantom_tiles!r}")
        for name in ("fused_merge", "wide_offsets"):
            if getattr(self, name) not in (None, True, False):
                raise ValueError(f"{name}: expected None, True or False, got {getattr(self, name)!r}")


DEFAULT_CONFIG = DecodeConfig()


def _cdiv(a, b):
    # ceil(a / b) of non-negative ints, or of float arrays holding whole numbers
    return -(-a // b)


def block_n(schedule: DecodeSchedule, head_dim, base: int = BLOCK_N):
    """Keys per KV tile: ``base``, doubled for stream-K at head_dim <= 64 (each program then keeps
    a head_dim-128 tile's bytes in flight). ``base`` is the GPU tile (:data:`BLOCK_N`) or the
    interpreter's smaller one."""
    if schedule is DecodeSchedule.STREAM_K:
        d = np.asarray(head_dim)
        doubled = np.where(d <= 64, 2 * base, base)
        return int(doubled) if doubled.ndim == 0 else doubled
    return base


def runs_general(head_dim: int, v_head_dim: int, kv_fp8: bool, kv_shared: bool = False) -> bool:
    """Whether a decode runs the general split-KV kernel rather than the split-KV/stream-K ones:
    a head size outside :data:`STREAM_K_HEAD_DIMS`, a value head of another size, an fp8 cache,
    or MLA's latent shared by K and V."""
    if kv_fp8 or kv_shared:
        return True
    d, v = np.asarray(head_dim), np.asarray(v_head_dim)
    general = ~np.isin(d, STREAM_K_HEAD_DIMS) | (v != d)
    if general.ndim == 0 or general.all() or not general.any():
        return bool(general.all())
    raise ValueError(
        "decode ops stacked into one array mix head sizes of the general kernel and of the "
        "split-KV/stream-K kernels; price them apart"
    )


def general_tile(
    head_dim: int, v_head_dim: int, group: int, kv_shared: bool = False, paged: bool = False
) -> tuple[int, int, int, int]:
    """``(block_g, block_n, num_warps, num_stages)`` of the general kernel on a GPU: 16 query heads
    a program for MLA's latent (512-wide rows; vLLM's Triton MLA decode takes the same), else the
    query group up to 64 (at least 16, the smallest dot operand); 64 keys a tile up to head_dim 128,
    32 beyond. The head_dim <= 128 tiles were chosen on an H100 among 16-128 keys, 4 or 8 warps and
    1-4 stages; MLA's (32 keys; the kernel takes the latent keys-major) on an H200 among 32-128 keys,
    4 or 8 warps and 2-3 stages.

    A paged cache (``paged``; MLA's latent always is) takes two stages more: its block-table load
    holds two stages of the software pipeline, so the paged program buffers as many tiles as the
    contiguous one (3 stages hold one latent tile, 5 two). On an H100 5 stages took 0.94-0.95 of the
    time of 3 for MLA's latent, 0.85-0.86 for a paged head_dim 96 cache and 0.91 for a paged fp8 head_dim
    128 cache (``validation/data/kernels/{fp8_products,paged_stages}_h100.json``)."""
    if kv_shared:
        return 16, 32, 4, 5
    small = head_dim <= 128 and v_head_dim <= 128
    g = 1 << max(int(group) - 1, 0).bit_length()
    return min(64, max(16, g)), (64 if small else 32), 4, (3 if small else 2) + (2 if paged else 0)


def general_splits(pairs, sms: int):
    """KV chunks per program pair of the general kernel: the most that keep all ``pairs x splits``
    programs within ``SPLIT_KV_PROGRAMS_PER_SM x sms``, ``floor(2 sms / pairs)`` (at least 1).

    A grid just over what the SMs hold runs a near-empty second wave: on an H100 (132 SMs, 32 pairs)
    9 splits (288 programs, the rounded-up ``2 x SMs`` target of the other split-KV kernel) reach 0.33-0.38
    of the copy bandwidth for MLA, where 8 reach 0.63 (``docs/kernels.md``); one rule for every variant
    measured (MLA, fp8, head_dim 80). An array for array ``pairs``.
    """
    pairs = np.maximum(np.asarray(pairs, dtype=np.float64), 1.0)
    out = np.maximum(np.floor(SPLIT_KV_PROGRAMS_PER_SM * sms / pairs), 1.0)
    return out if out.ndim else int(out)


def split_kv_pieces(pairs, max_len, target_programs, tile: int, num_splits: int | None = None):
    """Split-KV: ``(chunk, pieces)``, the keys per chunk (whole tiles of ``tile`` keys) and the
    chunks per (sequence, kv head) pair.

    ``num_splits`` chunks if given, else ``ceil(target_programs / pairs)`` (the launcher aims at
    ``SPLIT_KV_PROGRAMS_PER_SM * SMs`` programs), at most one per tile of ``max_len`` keys; the
    chunk is rounded up to whole tiles, so ``pieces = ceil(max_len / chunk)`` may be fewer.
    """
    splits = np.maximum(_cdiv(target_programs, pairs), 1) if num_splits is None else num_splits
    tiles = np.maximum(_cdiv(max_len, tile), 1)
    chunk = _cdiv(_cdiv(max_len, np.minimum(splits, tiles)), tile) * tile
    return chunk, _cdiv(max_len, chunk)


def stream_k_programs(
    pairs,
    max_tiles,
    sms: int,
    config: DecodeConfig = DEFAULT_CONFIG,
    num_splits: int | None = None,
    align: bool = True,
):
    """Stream-K programs: ``num_splits`` if given; else ``config.programs_per_sm`` per SM
    (``config.small_programs_per_sm`` when the most KV tiles there can be, ``pairs * max_tiles``,
    are at most ``config.small_tiles_per_sm`` per SM and the pairs fit the SMs), rounded down to a
    multiple of ``pairs`` when ``align`` and there are fewer pairs than programs (with uniform
    lengths every run then lies inside one pair), and no more than ``pairs * max_tiles``."""
    if num_splits:
        return num_splits
    tiles = pairs * max_tiles
    # with more pairs than SMs each program walks several short pairs, which two per SM overlap
    small = (tiles <= config.small_tiles_per_sm * sms) & (pairs <= sms)
    target = np.where(small, config.small_programs_per_sm, config.programs_per_sm) * sms
    if align:
        target = np.where(pairs <= target, target // pairs * pairs, target)
    out = np.maximum(np.minimum(target, tiles), 1)
    return out.item() if out.ndim == 0 else out


def stream_k_pieces_per_pair(programs, pairs):
    """Mean pieces per pair of stream-K over uniform lengths: ``programs / pairs`` when the programs
    are a multiple of the pairs (every run inside one pair), else about ``(programs + pairs) / pairs``
    (a run ends a piece at each pair boundary)."""
    programs = np.asarray(programs, dtype=np.float64)
    pairs = np.asarray(pairs, dtype=np.float64)
    aligned = np.mod(programs, pairs) == 0
    return np.where(aligned, np.maximum(programs / pairs, 1.0), (programs + pairs) / pairs)


def fused_merge(programs, sms: int, config: DecodeConfig = DEFAULT_CONFIG):
    """Whether stream-K merges split pairs in its own kernel: ``config.fused_merge`` when set, else
    where the ``programs`` fit one per SM (one wave: the merge is then the only tail)."""
    if config.fused_merge is not None:
        return np.full(np.shape(programs), config.fused_merge) if np.ndim(programs) else config.fused_merge
    fits = np.asarray(programs) <= sms
    return fits if fits.ndim else bool(fits)


def stream_k_grid(
    programs: int,
    pairs: int,
    max_tiles: int,
    sms: int,
    fused: bool,
    config: DecodeConfig = DEFAULT_CONFIG,
    num_splits: int | None = None,
) -> tuple[int, int]:
    """``(grid, phantom)``: the stream-K grid size and the phantom tiles per pair it is compiled with.

    Phantom tiles go to the one-wave (fused) kernel only. With them, and the program count left to
    the rule, the grid holds the unaligned count too (:func:`stream_k_programs` with ``align``
    off): unequal tile counts use all of it, equal ones only the aligned ``programs``.
    """
    phantom = config.phantom_tiles if fused else 0
    grid = programs
    if phantom and not num_splits:
        grid = max(programs, stream_k_programs(pairs, max_tiles, sms, config, align=False))
    return grid, phantom


def wide_offsets(
    grid: int, pairs: int, max_tiles: int, phantom: int, config: DecodeConfig = DEFAULT_CONFIG
) -> bool:
    """Whether stream-K computes program offsets in 64 bits: ``config.wide_offsets`` when set, else
    where ``(grid + 1) * pairs * (max_tiles + phantom)`` reaches :data:`INT32_PRODUCT_LIMIT`."""
    if config.wide_offsets is not None:
        return config.wide_offsets
    return (grid + 1) * pairs * (max_tiles + phantom) >= INT32_PRODUCT_LIMIT


def merge_block_s(group):
    """Slots the one-wave stream-K merge loads at once: ``FUSED_MERGE_ROWS // next_pow2(group)``,
    at least one (``group`` query heads per kv head)."""
    g = np.maximum(np.asarray(group, dtype=np.float64), 1.0)
    out = np.maximum(np.floor(FUSED_MERGE_ROWS / 2.0 ** np.ceil(np.log2(g))), 1.0)
    return int(out) if out.ndim == 0 else out


def merge_loads(pieces, group):
    """Loads of partials by the one-wave stream-K merge of a pair cut into ``pieces``: blocks of
    :func:`merge_block_s` pieces."""
    return np.ceil(np.asarray(pieces, dtype=np.float64) / merge_block_s(group))


def reduce_guess(schedule: DecodeSchedule, programs: int, pairs: int) -> int:
    """Slots per pair that the stream-K reduction loads before reading the plan: the programs per
    pair when they divide evenly (uniform lengths then give every pair that many), else 0."""
    if schedule is not DecodeSchedule.STREAM_K:
        return 0
    per = programs // pairs
    if programs % pairs or per < 2 or per > REDUCE_GUESS_MAX:
        return 0
    return per
