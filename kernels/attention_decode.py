"""One-token (decode) GQA attention over a contiguous KV cache, split-KV or stream-K schedule.

``q [B,Hq,D]``, ``k_cache [B,Hkv,Lmax,D]``, ``v_cache [B,Hkv,Lmax,Dv]``, ``kv_lens [B]`` (sequence
``b`` uses cache positions ``0 .. kv_lens[b]-1``). Each program serves the whole query group of
one kv head (or 64 of its query heads), so the cache is read once.

Head sizes from 16 to 256 (tested: :data:`HEAD_DIMS`). Caches of ``D == Dv`` in
:data:`STREAM_K_HEAD_DIMS` in q's format run the kernels of :mod:`perfmodel.kernels._decode_kernels` with
either schedule; the others (other head sizes, ``Dv != D``, an fp8 e4m3 cache with float32
scales) run the split-KV kernel of :mod:`perfmodel.kernels._decode_general`.

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

import math
from collections.abc import Mapping

import torch
import triton

from perfmodel import decode_schedule as ds
from perfmodel.decode_schedule import BLOCK_N, DecodeConfig, DecodeSchedule
from perfmodel.ops import Attention

from . import _counts
from . import _decode_kernels as _dk
from . import _decode_general as _dg
from ._common import (
    FLOAT_DTYPES,
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
    KernelInputError,
    check_last_dim_contiguous,
    check_same_device,
    check_tensor,
    interpreting,
    next_pow2,
    num_sms,
)

__all__ = [
    "HEAD_DIMS", "MAX_STREAM_K_BATCH", "STREAM_K_HEAD_DIMS", "DecodeConfig", "DecodeSchedule", "attention_decode", "bytes_moved", "flops",
]

#: head sizes the tests run; any size from MIN_HEAD_DIM to MAX_HEAD_DIM is taken
HEAD_DIMS = (64, 80, 96, 128, 192, 256)
#: head sizes (K and V alike, float cache) of the split-KV and stream-K kernels; other caches run
#: the general split-KV kernel (the rule: :func:`perfmodel.decode_schedule.runs_general`)
STREAM_K_HEAD_DIMS = ds.STREAM_K_HEAD_DIMS
#: stream-K keeps a prefix sum over the sequences in registers; this bounds the batch.
MAX_STREAM_K_BATCH = 16384
_LOG2E = 1.4426950408889634
_GPU_META = {"BLOCK_N": BLOCK_N, "num_warps": 4, "num_stages": 3}
_INTERPRETER_META = {"BLOCK_N": 16}
#: slots per step of the reduction kernel's loop
_REDUCE_BLOCK_S = 16
#: the fused stream-K merge's tile counters, keyed by (device type, device index, stream); grown, never shrunk.
_COUNTERS: dict[tuple[str, int | None, int], torch.Tensor] = {}


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


def _check_config(config: object) -> None:
    if not isinstance(config, DecodeConfig):
        raise KernelInputError(f"config: expected a DecodeConfig, got {type(config).__name__}")


def check_q_and_lens(
    q: object, kv_lens: object, kv_heads: int, head_dim: int, batch: int, device: torch.device,
    max_head_dim: int = MAX_HEAD_DIM,
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
    if not MIN_HEAD_DIM <= head_dim <= max_head_dim:
        raise KernelInputError(f"q: head_dim {head_dim} not supported (expected {MIN_HEAD_DIM} to {max_head_dim})")
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


def takes_stream_k(k: object, v: object, k_scale: object, v_scale: object) -> bool:
    """Caches for the split-KV/stream-K kernels: K and V alike (shape, strides, float format) of
    a head size in STREAM_K_HEAD_DIMS, no scales. Malformed caches go there too (their checks
    name the argument)."""
    if not (isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)) or k.dim() != 4:
        return True
    fp = k.dtype in FLOAT_DTYPES and v.dtype in FLOAT_DTYPES
    return k_scale is None and v_scale is None and fp and not ds.runs_general(k.shape[-1], v.shape[-1], False)


def general_schedule(sched: DecodeSchedule, head_dim: int, v_head_dim: int) -> None:
    """The general kernel runs split-KV only."""
    if sched is not DecodeSchedule.SPLIT_KV:
        raise KernelInputError(
            f"schedule: {sched.value} takes head_dim {STREAM_K_HEAD_DIMS} with V of the same size and a "
            f"float cache; got head_dim {head_dim}, v_head_dim {v_head_dim} (use split_kv)"
        )


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
    config: DecodeConfig = ds.DEFAULT_CONFIG,
) -> torch.Tensor:
    """Launch the chosen schedule and the reduction over checked inputs; return ``[B,Hq,D]``.

    ``k, v`` are ``[B,Hkv,Lmax,D]`` caches, or ``[num_blocks,Hkv,page_size,D]`` pages when
    ``block_table`` is given; ``max_len`` bounds ``kv_lens``. Grid sizes follow the rules of
    :mod:`perfmodel.decode_schedule` under ``config``.
    """
    B, Hq, D = q.shape
    Hkv = k.shape[1]
    group = Hq // Hkv
    bh = B * Hkv
    interp = interpreting()
    meta = dict(_INTERPRETER_META if interp else _GPU_META)
    # the interpreter's small tile doubles for stream-K at head_dim 64 too, so the tests take that path
    block_n = ds.block_n(schedule, D, meta.pop("BLOCK_N"))
    scale = (1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)) * _LOG2E
    paged = block_table is not None
    # the cache as the kernels take it: (K, V, block table, (s_kb, s_kh, s_kn, s_btb, page_size))
    cache = (
        k,
        v,
        block_table if paged else kv_lens,  # any tensor: not read when PAGED is False
        (k.stride(0), k.stride(1), k.stride(2), block_table.stride(0) if paged else 0, page_size),
    )
    consts = {
        "HEAD_DIM": D,
        "BLOCK_G": max(16, next_pow2(group)),
        "BLOCK_N": block_n,
        "PAGED": paged,
        "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
        "UPCAST": interp and q.dtype == torch.bfloat16,
    }
    q_strides = (q.stride(0), q.stride(1))
    max_tiles = triton.cdiv(max_len, block_n)
    sms = num_sms(q.device)
    o = torch.empty((B, Hq, D), dtype=q.dtype, device=q.device)
    o_strides = (o.stride(0), o.stride(1))
    if schedule is DecodeSchedule.SPLIT_KV:
        target = ds.SPLIT_KV_PROGRAMS_PER_SM * sms
        chunk, pieces = (int(x) for x in ds.split_kv_pieces(bh, max_len, target, block_n, num_splits))
        po = torch.empty((bh * pieces * group, D), dtype=torch.float32, device=q.device)
        pl = torch.empty((bh * pieces * group,), dtype=torch.float32, device=q.device)
        pdl = pdl_supported(q.device)
        _dk._split_kv_kernel[(bh, pieces)](
            q, q_strides, cache, kv_lens, po, pl, scale, Hkv, group, chunk, pieces, **consts, **meta, PDL=pdl
        )
        rng = kv_lens  # not read by the split-KV reduction
        wide = False  # no program offsets in the split-KV reduction
    else:
        if B > MAX_STREAM_K_BATCH:
            raise KernelInputError(f"q: stream_k supports a batch of at most {MAX_STREAM_K_BATCH}, got {B}")
        pdl = False  # measured slower for stream-K
        pieces = ds.stream_k_programs(bh, max_tiles, sms, config, num_splits)
        fused = ds.fused_merge(pieces, sms, config)
        grid, phantom = ds.stream_k_grid(pieces, bh, max_tiles, sms, fused, config, num_splits)
        wide = ds.wide_offsets(grid, bh, max_tiles, phantom, config)
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
            q_strides,
            cache,
            kv_lens,
            po,
            pl,
            o,
            o_strides,
            cnt,
            rng,
            scale,
            Hkv,
            group,
            bh,
            pieces,
            grid,
            B_P2=next_pow2(B),
            FUSED=fused,
            WIDE=wide,
            GP=gp,
            BLOCK_S=ds.merge_block_s(group),
            PHANTOM=phantom,
            **consts,
            **meta,
        )
        if fused:
            return o
    guess = ds.reduce_guess(schedule, pieces, bh)
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


def attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_lens: torch.Tensor,
    num_splits: int | None = None,
    schedule: str | DecodeSchedule = "split_kv",
    sm_scale: float | None = None,
    validate: bool = True,
    config: DecodeConfig = ds.DEFAULT_CONFIG,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one new token per sequence over its KV cache.

    Parameters
    ----------
    q : torch.Tensor, shape [B, Hq, D]
        fp16, bf16 or fp32; ``D`` from 16 to 256; innermost stride 1.
    k_cache : torch.Tensor, shape [B, Hkv, Lmax, D]
        q's dtype, or fp8 (``torch.float8_e4m3fn``); innermost stride 1; ``Hq % Hkv == 0``.
    v_cache : torch.Tensor, shape [B, Hkv, Lmax, Dv]
        K's dtype and device; ``Dv`` from 16 to 256.
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
    config : DecodeConfig
        Settings of the schedules (:class:`perfmodel.decode_schedule.DecodeConfig`); the default
        is the shipped kernel.
    k_scale, v_scale : torch.Tensor, optional
        An fp8 cache's float32 scales, one element or one per kv head (``[Hkv]``): the cache
        holds ``K / k_scale`` and ``V / v_scale``. Default 1.

    Returns
    -------
    torch.Tensor, shape [B, Hq, Dv], dtype of ``q``

    Raises
    ------
    KernelInputError
        (a ValueError) naming the bad argument.
    """
    sched = _schedule(schedule)
    _check_num_splits(num_splits)
    _check_config(config)
    if not takes_stream_k(k_cache, v_cache, k_scale, v_scale):
        return _general(q, k_cache, v_cache, kv_lens, num_splits, sched, sm_scale, validate, k_scale, v_scale)
    check_kv_pair("k_cache", k_cache, "v_cache", v_cache)
    B, Hkv, Lmax, D = k_cache.shape
    check_q_and_lens(q, kv_lens, Hkv, D, B, k_cache.device)
    check_kv_dtype_and_scale(q, sm_scale, k_cache=k_cache, v_cache=v_cache)
    if validate:
        check_lens_values(kv_lens, Lmax)
    return launch_decode(q, k_cache, v_cache, kv_lens, None, 1, Lmax, num_splits, sched, sm_scale, config)


def _general(q, k, v, kv_lens, num_splits, sched, sm_scale, validate, k_scale, v_scale) -> torch.Tensor:
    """attention_decode through the general split-KV kernel."""
    _dg.check_cache(("k_cache", "v_cache"), k, v, sm_scale)
    B, Hkv, Lmax, D = k.shape
    check_q_and_lens(q, kv_lens, Hkv, D, B, k.device)
    s_scale = _dg.check_kv_format(q, "k_cache", k, k_scale, v_scale, Hkv)
    general_schedule(sched, D, v.shape[3])
    if validate:
        check_lens_values(kv_lens, Lmax)
    layouts = (tuple(k.stride()[:3]), tuple(v.stride()[:3]))
    return _dg.launch(q, k, v, layouts, Hkv, v.shape[3], kv_lens, None, Lmax, num_splits, sm_scale,
                      (k_scale, v_scale, s_scale))


def flops(op: Attention | Mapping) -> int:
    """FLOPs of a decode core ``Attention`` or its descriptor: ``4*B*Hq*D*q_len*kv_len``."""
    return _counts.flops(op, Attention)


def bytes_moved(op: Attention | Mapping) -> int:
    """Fewest bytes: the KV cache read once plus q read and the output written."""
    return _counts.bytes_moved(op, Attention)


# `perfmodel.kernels.attention_decode.flops(op)` works whether `perfmodel.kernels.attention_decode`
# is the module or the function.
attention_decode.flops = flops
attention_decode.bytes_moved = bytes_moved
