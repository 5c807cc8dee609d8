"""One-token (decode) GQA attention over a contiguous KV cache, split-KV or stream-K schedule.

``q [B,Hq,D]``, ``k_cache, v_cache [B,Hkv,Lmax,D]``, ``kv_lens [B]`` (sequence ``b`` uses cache
positions ``0 .. kv_lens[b]-1``). Each program serves the whole query group of one kv head, so
the cache is read once.

* ``split_kv`` (flash-decoding): the KV axis of every (sequence, kv head) is cut into
  ``num_splits`` equal chunks; each chunk's partial softmax is merged by log-sum-exp.
* ``stream_k`` (the LeanAttention schedule): the KV tiles of all (sequence, kv head) pairs are
  concatenated and cut into ``num_splits`` equal runs, one per program, whatever the lengths.
  A pair inside one run is written straight to the output; a pair split over several runs
  is merged by log-sum-exp: where the programs fit one per SM, by the last program to finish
  one of its tiles (an atomic tile counter per pair), otherwise by a reduction kernel that reads
  each pair's slot range from a plan the stream-K programs write.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

import torch
import triton

from . import _decode_kernels as _dk
from ._common import (
    FLOAT_DTYPES,
    KernelInputError,
    check_last_dim_contiguous,
    check_same_device,
    check_tensor,
    interpreting,
    next_pow2,
    num_sms,
)
from ._counts import attention_bytes, attention_flops

__all__ = ["HEAD_DIMS", "MAX_STREAM_K_BATCH", "DecodeSchedule", "attention_decode", "bytes_moved", "flops"]

HEAD_DIMS = (64, 128)
#: stream-K keeps a prefix sum over the sequences in registers; this bounds the batch.
MAX_STREAM_K_BATCH = 16384
_LOG2E = 1.4426950408889634
_GPU_META = {"BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
_INTERPRETER_META = {"BLOCK_N": 16}
#: keys per stream-K tile for head_dim <= 64 on the GPU: each program walks its tiles one after
#: another, and a 64-key tile of a head_dim-64 cache is half the bytes of a head_dim-128 one.
_STREAM_K_BLOCK_N_SMALL_HEAD = 128
_REDUCE_BLOCK_S = 16
#: stream-K programs per SM when ``num_splits`` is not given (capped at the number of tiles). Two
#: keep twice the bytes in flight: run 19 (H200) faster than split-KV in 24 of 31 shapes with 2,
#: 12 with 1; run 20 (H100) 27 with 2, 26 with 1.
_STREAM_K_PROGRAMS_PER_SM = 2
#: ... and for small caches: at most ``_STREAM_K_SMALL_TILES_PER_SM`` KV tiles per SM (from Lmax,
#: known on the host) get ``_STREAM_K_SMALL_PROGRAMS_PER_SM`` programs per SM. Run 4 (H100)
#: measured 2 per SM slower than 1 at small caches (B=1, L=4K: 19.7 against 14.9 us), so 1. 32
#: tiles per SM (runs 43 and 47, H100): B=2 L=16K runs one wave, 49.7 against 50.8 us for split-KV.
_STREAM_K_SMALL_PROGRAMS_PER_SM = 1
_STREAM_K_SMALL_TILES_PER_SM = 32
#: round the default program count down to a multiple of the (sequence, kv head) pairs, so that
#: with uniform lengths every run lies inside one pair (one piece per program).
_STREAM_K_ALIGN = True
#: stream-K merges split pairs inside its own kernel (the last program to finish a pair merges it)
#: instead of launching the reduction kernel: None (default), where the programs are no more than
#: the SMs (one wave: the merge is then the only tail); True, always; False, never. Run 40 (H100):
#: at one wave faster than the reduction kernel (B=1 L=1K 7.0 against 7.6 us), with two programs
#: per SM not (B=2 L=16K 50.4 against 50.5 for split-KV). The per-pair tile counters live in a
#: workspace kept per (device, stream) and are left at zero by the kernel itself, so no zeroing launch.
_STREAM_K_FUSED: bool | None = None
#: the stream-K reduction loads the slots that uniform lengths would give a pair together with
#: the plan (used when the plan agrees), so the common case needs no load after the plan's.
_STREAM_K_REDUCE_GUESS = True
#: the most slots per pair loaded that way.
_REDUCE_GUESS_MAX = 64
#: stream-K programs run their first piece outside the loop over pieces.
_STREAM_K_PEEL = True
#: how a stream-K program walks its tiles (non-fused merge only): 0, piece by piece (a tile loop per
#: (sequence, kv head) pair); 1, one loop over all its tiles that crosses pair boundaries, so the
#: loads run ahead across pieces; 2, the one loop only for programs whose run crosses a boundary.
_STREAM_K_FLAT = 2
#: stream-K program offsets ``p * total_tiles`` are computed in 32 bits below this bound, in 64 above.
_INT32_PRODUCT_LIMIT = 2**31
#: launch split-KV's reduction kernel as a programmatic dependent of the first kernel (Hopper and
#: later, not under the interpreter): its programs start while the first kernel runs and wait for it
#: on the GPU, so the gap between the two kernels shrinks. Run 28 (H100): split-KV 0.3-0.5 us faster
#: at small caches (B=1 L=1K 7.6 to 7.2-7.3 us).
_SPLIT_KV_PDL = True
#: the same for stream-K: off, as run 28 measured stream-K slower with it wherever its programs let
#: the reduction launch (B=1 L=1K 7.6 to 7.8-8.1 us)
_STREAM_K_PDL = False
#: where the stream-K programs let the reduction launch when ``_STREAM_K_PDL``: 0 at their start,
#: 1 after finding their first pair, 2 only as they exit
_STREAM_K_PDL_TRIGGER = 0
#: with unequal tile counts per pair, stream-K cuts the concatenated KV as if each pair began with
#: this many phantom tiles, so a run that crosses a pair boundary (a second piece: its q load,
#: pipeline start, partial store and merge) holds that many fewer real tiles. 0: off. Run 47 (H100,
#: with the mapping for every program): 3 took the ragged B=8 L=4K batch from 35.5 to 32.7 us;
#: run 48 (H100, mapping only for unequal counts): 5 took it to 32.3 us (split-KV 33.2) and the
#: ragged B=2 L=16K batch from 53.4 to 49.9 us (split-KV 50.2), where 3 gave 33.1 and 50.9.
_STREAM_K_PHANTOM = 5
#: phantom tiles also in the kernel without the fused merge (more than one wave). Off: run 48
#: (H100) measured its ragged test costing the uniform B=1 L=64K cache 95.8 -> 96.0 us (split-KV
#: 96.0), and the ragged multi-wave batches moved by -2.3% to +0.6%.
_STREAM_K_PHANTOM_UNFUSED = False
#: the counter workspaces, keyed by (device type, device index, stream); grown, never shrunk.
_COUNTERS: dict[tuple[str, int | None, int], torch.Tensor] = {}
#: rows (slots x query heads) the fused merge loads at once.
_FUSED_MERGE_ROWS = 64


class DecodeSchedule(str, enum.Enum):
    """How decode attention spreads the KV cache over programs."""

    SPLIT_KV = "split_kv"
    STREAM_K = "stream_k"


def _schedule(schedule: object) -> DecodeSchedule:
    try:
        return DecodeSchedule(schedule)
    except ValueError:
        raise KernelInputError(
            f"schedule: {schedule!r} is not one of {[s.value for s in DecodeSchedule]}"
        ) from None


def _check_num_splits(num_splits: object) -> None:
    if num_splits is not None and (
        isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1
    ):
        raise KernelInputError(f"num_splits: expected a positive int or None, got {num_splits!r}")


def check_q_and_lens(
    q: object, kv_lens: object, kv_heads: int, head_dim: int, batch: int, device: torch.device
) -> None:
    """Checks shared by the contiguous and paged wrappers (shape of q against the cache)."""
    check_tensor("q", q, 3, FLOAT_DTYPES)
    check_last_dim_contiguous("q", q)
    check_tensor("kv_lens", kv_lens, 1, (torch.int32, torch.int64))
    check_same_device(q=q, kv_lens=kv_lens)
    if q.device != device:
        raise KernelInputError(f"q: on {q.device}, the cache is on {device}")
    if q.shape[0] != batch:
        raise KernelInputError(f"q: batch {q.shape[0]} differs from the cache's {batch}")
    if q.shape[2] != head_dim:
        raise KernelInputError(f"q: head_dim {q.shape[2]} differs from the cache's {head_dim}")
    if head_dim not in HEAD_DIMS:
        raise KernelInputError(f"q: head_dim {head_dim} not supported (expected one of {HEAD_DIMS})")
    if q.shape[1] % kv_heads:
        raise KernelInputError(f"q: q heads {q.shape[1]} not a multiple of kv heads {kv_heads}")
    if kv_lens.shape[0] != batch:
        raise KernelInputError(f"kv_lens: length {kv_lens.shape[0]} differs from batch {batch}")


def check_kv_pair(k_name: str, k: object, v_name: str, v: object) -> None:
    """K and V caches (or pages): 4-D float tensors of one device, shape and strides."""
    for name, t in ((k_name, k), (v_name, v)):
        check_tensor(name, t, 4, FLOAT_DTYPES)
        check_last_dim_contiguous(name, t)
    check_same_device(**{k_name: k, v_name: v})
    if v.shape != k.shape or v.stride() != k.stride():
        raise KernelInputError(
            f"{v_name}: shape/strides {tuple(v.shape)}/{v.stride()} differ "
            f"from {k_name}'s {tuple(k.shape)}/{k.stride()}"
        )


def check_kv_dtype_and_scale(q: torch.Tensor, sm_scale: object, **caches: torch.Tensor) -> None:
    """The caches hold q's dtype; ``sm_scale`` is None or a positive finite number."""
    for name, t in caches.items():
        if t.dtype != q.dtype:
            raise KernelInputError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
    if sm_scale is not None and not (
        isinstance(sm_scale, (int, float)) and math.isfinite(sm_scale) and sm_scale > 0
    ):
        raise KernelInputError(f"sm_scale: expected a positive finite number, got {sm_scale!r}")


def check_lens_values(kv_lens: torch.Tensor, max_len: int) -> None:
    """Check ``1 <= kv_lens <= max_len`` (reads kv_lens on the host: a device sync)."""
    lo, hi = int(kv_lens.min()), int(kv_lens.max())
    if lo < 1 or hi > max_len:
        raise KernelInputError(f"kv_lens: values must lie in [1, {max_len}], got min {lo}, max {hi}")


def stream_k_programs(num_splits: int | None, sms: int, pairs: int, max_tiles: int, align: bool = True) -> int:
    """Stream-K programs: ``num_splits`` if given; else ``_STREAM_K_PROGRAMS_PER_SM`` per SM
    (``_STREAM_K_SMALL_PROGRAMS_PER_SM`` when the most KV tiles there can be, ``pairs *
    max_tiles``, are at most ``_STREAM_K_SMALL_TILES_PER_SM`` per SM and the pairs fit the SMs),
    rounded down to a multiple of ``pairs`` when ``_STREAM_K_ALIGN`` and there are fewer pairs
    than programs, and no more than ``pairs * max_tiles``."""
    if num_splits:
        return num_splits
    tiles = pairs * max_tiles
    # with more pairs than SMs each program walks several short pairs, which two per SM overlap
    small = tiles <= _STREAM_K_SMALL_TILES_PER_SM * sms and pairs <= sms
    target = (_STREAM_K_SMALL_PROGRAMS_PER_SM if small else _STREAM_K_PROGRAMS_PER_SM) * sms
    if align and _STREAM_K_ALIGN and pairs <= target:
        target = target // pairs * pairs
    return max(1, min(target, tiles))


def stream_k_phantom(fused: bool) -> int:
    """Phantom tiles per pair the stream-K kernel is compiled with (its ``PHANTOM``):
    ``_STREAM_K_PHANTOM`` for the fused (one-wave) kernel, and for the multi-wave one only with
    ``_STREAM_K_PHANTOM_UNFUSED``; else 0."""
    return _STREAM_K_PHANTOM if fused or _STREAM_K_PHANTOM_UNFUSED else 0


def fused_merge(programs: int, sms: int) -> bool:
    """Whether stream-K merges split pairs in its own kernel: ``_STREAM_K_FUSED`` when set, else when
    the ``programs`` fit one per SM (``sms``)."""
    if _STREAM_K_FUSED is None:
        return programs <= sms
    return bool(_STREAM_K_FUSED)


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch: a CUDA device of compute capability 9.0 or later, not under
    Triton's interpreter."""
    return not interpreting() and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def pair_counters(device: torch.device, pairs: int) -> torch.Tensor:
    """The fused stream-K merge's tile counters for ``pairs`` pairs, all zero between calls.

    One int32 workspace per (device, stream): calls on one stream run in order, so a call sees
    the counters the previous one left at zero. Created zeroed (one launch) on first use or when
    more pairs are needed; afterwards reused with no launch.
    """
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device.type, device.index, stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < pairs:
        buf = torch.zeros((max(pairs, 1024),), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


def launch_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lens: torch.Tensor,
    block_table: torch.Tensor | None,
    page_size: int,
    max_len: int,
    num_splits: int | None,
    schedule: DecodeSchedule,
    sm_scale: float | None,
) -> torch.Tensor:
    """Launch the chosen schedule and the reduction over checked inputs; return ``[B,Hq,D]``.

    ``k, v`` are ``[B,Hkv,Lmax,D]`` caches, or ``[num_blocks,Hkv,page_size,D]`` pages when
    ``block_table`` is given; ``max_len`` bounds ``kv_lens``.
    """
    B, Hq, D = q.shape
    Hkv = k.shape[1]
    group = Hq // Hkv
    bh = B * Hkv
    interp = interpreting()
    meta = dict(_INTERPRETER_META if interp else _GPU_META)
    block_n = meta.pop("BLOCK_N")
    scale = (1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)) * _LOG2E
    paged = block_table is not None
    bt = block_table if paged else kv_lens  # any tensor: not read when PAGED is False
    s_btb = block_table.stride(0) if paged else 0
    consts = {
        "HEAD_DIM": D,
        "BLOCK_G": max(16, next_pow2(group)),
        "BLOCK_N": block_n,
        "PAGED": paged,
        "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
        "UPCAST": interp and q.dtype == torch.bfloat16,
    }
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), s_btb, page_size)
    max_tiles = triton.cdiv(max_len, block_n)
    target = 2 * num_sms(q.device)
    pdl = (_STREAM_K_PDL if schedule is DecodeSchedule.STREAM_K else _SPLIT_KV_PDL) and pdl_supported(q.device)
    o = torch.empty((B, Hq, D), dtype=q.dtype, device=q.device)
    if schedule is DecodeSchedule.SPLIT_KV:
        splits = num_splits or max(1, triton.cdiv(target, bh))
        chunk = triton.cdiv(triton.cdiv(max_len, min(splits, max_tiles)), block_n) * block_n
        pieces = triton.cdiv(max_len, chunk)
        po = torch.empty((bh * pieces * group, D), dtype=torch.float32, device=q.device)
        pl = torch.empty((bh * pieces * group,), dtype=torch.float32, device=q.device)
        _dk._split_kv_kernel[(bh, pieces)](
            q, k, v, kv_lens, bt, po, pl, scale, Hkv, group, chunk, pieces, *strides, **consts, **meta, PDL=pdl
        )
        rng = kv_lens  # not read by the split-KV reduction
        wide = False  # no program offsets in the split-KV reduction
    else:
        if B > MAX_STREAM_K_BATCH:
            raise KernelInputError(f"q: stream_k supports a batch of at most {MAX_STREAM_K_BATCH}, got {B}")
        if D <= 64:  # one program per SM: keep a head_dim-128 tile's bytes in flight
            # (the interpreter doubles its small tile instead, so the tests take this path)
            block_n = 2 * block_n if interp else _STREAM_K_BLOCK_N_SMALL_HEAD
            consts["BLOCK_N"] = block_n
            max_tiles = triton.cdiv(max_len, block_n)
        pieces = stream_k_programs(num_splits, num_sms(q.device), bh, max_tiles)
        fused = fused_merge(pieces, num_sms(q.device))
        # with unequal tile counts (phantom tiles on) the fused kernel runs all the programs the
        # rule gives, not only a multiple of the pairs
        phantom = stream_k_phantom(fused)
        ragged_pieces = pieces
        if fused and phantom and not num_splits:
            ragged_pieces = max(pieces, stream_k_programs(None, num_sms(q.device), bh, max_tiles, align=False))
        grid = ragged_pieces
        wide = (grid + 1) * bh * (max_tiles + phantom) >= _INT32_PRODUCT_LIMIT
        b_p2 = next_pow2(B)
        po = torch.empty(((grid + bh) * group, D), dtype=torch.float32, device=q.device)
        # the fused merge reads each lse written four times (see _dk._combine_pair)
        pl = torch.empty(((grid + bh) * group,) + ((_dk.FUSED_LSE_REPEAT.value,) if fused else ()), dtype=torch.float32,
                         device=q.device)
        # tiles of each split pair finished so far (fused merge only; zero between calls)
        cnt = pair_counters(q.device, bh) if fused else kv_lens
        # the plan for the reduction: slot range of each pair, then the total tile count
        rng = kv_lens if fused else torch.empty((2 * bh + 1,), dtype=torch.int32, device=q.device)
        gp = next_pow2(group)
        _dk._stream_k_kernel[(grid,)](
            q,
            k,
            v,
            kv_lens,
            bt,
            po,
            pl,
            o,
            cnt,
            rng,
            scale,
            Hkv,
            group,
            bh,
            pieces,
            *strides,
            o.stride(0),
            o.stride(1),
            B_P2=b_p2,
            FUSED=fused,
            WIDE=wide,
            PEEL=_STREAM_K_PEEL,
            FLAT=0 if fused else _STREAM_K_FLAT,
            GP=gp,
            BLOCK_S=max(1, _FUSED_MERGE_ROWS // gp),
            PDL=pdl and not fused,
            PDL_TRIGGER=_STREAM_K_PDL_TRIGGER,
            PHANTOM=phantom,
            NUM_RAGGED=ragged_pieces,
            **consts,
            **meta,
        )
        if fused:
            return o
    guess = _reduce_guess(schedule, pieces, bh)
    _dk._reduce_kernel[(B * Hq,)](
        po,
        pl,
        o,
        rng,
        Hq,
        Hkv,
        group,
        bh,
        pieces,
        guess,
        o.stride(0),
        o.stride(1),
        HEAD_DIM=D,
        BLOCK_S=_REDUCE_BLOCK_S,
        STREAM_K=schedule is DecodeSchedule.STREAM_K,
        GUESS_P2=next_pow2(guess) if guess else 0,
        WIDE=wide,
        PDL=pdl,
        **({"launch_pdl": True} if pdl else {}),
    )
    return o


def _reduce_guess(schedule: DecodeSchedule, programs: int, pairs: int) -> int:
    """Slots per pair that the stream-K reduction loads before reading the plan: the programs per
    pair when they divide evenly (uniform lengths then give every pair that many), else 0."""
    if schedule is not DecodeSchedule.STREAM_K or not _STREAM_K_REDUCE_GUESS:
        return 0
    per = programs // pairs
    if programs % pairs or per < 2 or per > _REDUCE_GUESS_MAX:
        return 0
    return per


def attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_lens: torch.Tensor,
    num_splits: int | None = None,
    schedule: str | DecodeSchedule = "split_kv",
    sm_scale: float | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """Attention of one new token per sequence over its KV cache.

    Parameters
    ----------
    q : torch.Tensor, shape [B, Hq, D]
        fp16, bf16 or fp32; ``D`` in {64, 128}; innermost stride 1.
    k_cache, v_cache : torch.Tensor, shape [B, Hkv, Lmax, D]
        Same dtype, device and strides; innermost stride 1; ``Hq % Hkv == 0``.
    kv_lens : torch.Tensor, shape [B], int32 or int64
        Valid cache length of each sequence, in ``[1, Lmax]``.
    num_splits : int, optional
        split_kv: KV chunks per (sequence, kv head); default about two programs per SM.
        stream_k: number of programs; default one per SM, at most one per KV tile.
    schedule : {"split_kv", "stream_k"} or DecodeSchedule
    sm_scale : float, optional
        Default ``1/sqrt(D)``.
    validate : bool
        Check the values of ``kv_lens`` on the host (one device sync). Shapes, dtypes and devices
        are always checked.

    Returns
    -------
    torch.Tensor, shape [B, Hq, D], dtype of ``q``

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument.
    """
    sched = _schedule(schedule)
    _check_num_splits(num_splits)
    check_kv_pair("k_cache", k_cache, "v_cache", v_cache)
    B, Hkv, Lmax, D = k_cache.shape
    check_q_and_lens(q, kv_lens, Hkv, D, B, k_cache.device)
    check_kv_dtype_and_scale(q, sm_scale, k_cache=k_cache, v_cache=v_cache)
    if validate:
        check_lens_values(kv_lens, Lmax)
    return launch_decode(q, k_cache, v_cache, kv_lens, None, 1, Lmax, num_splits, sched, sm_scale)


def flops(op: Mapping) -> int:
    """FLOPs of a decode ``{"op": "attention", ...}`` descriptor: ``4*B*Hq*D*q_len*kv_len``."""
    return attention_flops(op)


def bytes_moved(op: Mapping) -> int:
    """Fewest bytes: the KV cache read once plus q read and the output written."""
    return attention_bytes(op)


# `kernels.attention_decode.flops(op)` works whether `kernels.attention_decode`
# is the module or the function.
attention_decode.flops = flops
attention_decode.bytes_moved = bytes_moved
