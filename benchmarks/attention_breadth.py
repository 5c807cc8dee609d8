"""Sections ``heads``, ``mla`` and ``fp8kv`` of ``benchmarks/kernels.py``: the attention kernels at
every head size, MLA decode and fp8-KV decode, each against PyTorch's SDPA with its default backend
choice and with the flash backend, with the GPU kernels each call ran (``torch.profiler``).

Every section takes ``(row, bench, quick)``: ``row`` records one result (``benchmarks/kernels.py``'s
``_row``), ``bench`` times a callable in seconds (GPU time per call from CUDA-graph replays);
``quick`` keeps a few shapes (about a minute in all on an H100, compiles included). Each Triton
output is compared with the default SDPA's (``err_vs_sdpa``, relative norm).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from perfmodel import kernels
from perfmodel.kernels import reference
from perfmodel.decode_schedule import STREAM_K_HEAD_DIMS

#: (head_dim, v_head_dim) of every head size; 192/128 is DeepSeek's attention before weight absorption
HEAD_SIZES = ((64, 64), (80, 80), (96, 96), (128, 128), (192, 128), (256, 256))
#: --quick: prefill (each size compiles and autotunes five configs) and decode sizes
QUICK_PREFILL_SIZES = ((128, 128), (80, 80))
QUICK_DECODE_SIZES = ((80, 80), (128, 128), (192, 128))
BACKENDS = {"sdpa default": None, "sdpa flash": SDPBackend.FLASH_ATTENTION}


def kernel_names(fn) -> list[str]:
    """The names of the GPU kernels one call of ``fn`` launches (after a warm-up call)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})


def _sdpa(q, k, v, causal: bool, backend):
    """A call of SDPA on ``backend`` (None: PyTorch's choice), GQA native where the backend takes
    it, else with K/V expanded to the query heads beforehand; ``(fn, note)``, ``fn`` None when the
    backend refuses the shapes."""

    def call(kk, vv, gqa):
        def fn():
            if backend is None:
                return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, enable_gqa=gqa)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, enable_gqa=gqa)

        return fn

    gqa = q.shape[1] != k.shape[1]
    try:
        fn = call(k, v, gqa)
        fn()
        return fn, "native GQA" if gqa else ""
    except RuntimeError as e:
        first = str(e).splitlines()[0][:80]
    if not gqa:
        return None, f"refused: {first}"
    g = q.shape[1] // k.shape[1]
    try:
        fn = call(k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), False)
        fn()
        return fn, "K/V expanded"
    except (RuntimeError, torch.OutOfMemoryError) as e:
        return None, f"refused: {str(e).splitlines()[0][:80]}"


def _err(out, expect) -> float:
    out, expect = out.double(), expect.double()
    return float("inf") if not torch.isfinite(out).all() else float((out - expect).norm() / expect.norm())


def _against_sdpa(
    row, bench, section, kernel, variant, case, fn, q, k, v, causal, flops, nbytes, shape_out=None, **extra
):
    """Time ``fn`` and both SDPA backends on ``(q, k, v)``; one row with the default SDPA as the
    baseline, the flash backend's time and every call's kernel names."""
    base = {}
    for name, backend in BACKENDS.items():
        bfn, note = _sdpa(q, k, v, causal, backend)
        base[name] = (bfn, note, bench(bfn) if bfn else None, kernel_names(bfn) if bfn else [])
    t = bench(fn)
    out = fn()
    dflt = base["sdpa default"][0]
    err = _err(out, shape_out(dflt()) if shape_out else dflt()) if dflt else None
    return row(
        section,
        kernel,
        variant,
        case,
        t,
        flops,
        nbytes,
        "sdpa default",
        base["sdpa default"][2],
        kernel_names=kernel_names(fn),
        err_vs_sdpa=err,
        sdpa_default_note=base["sdpa default"][1],
        sdpa_default_kernels=base["sdpa default"][3],
        sdpa_flash_time_s=base["sdpa flash"][2],
        sdpa_flash_note=base["sdpa flash"][1],
        sdpa_flash_kernels=base["sdpa flash"][3],
        speed_vs_sdpa_flash=base["sdpa flash"][2] / t if base["sdpa flash"][2] else None,
        **extra,
    )


def _attn_op(phase, b, q_len, kv_len, hq, hkv, d, dv, **kw):
    return {
        "op": "attention",
        "phase": phase,
        "batch": b,
        "q_len": q_len,
        "kv_len": kv_len,
        "q_heads": hq,
        "kv_heads": hkv,
        "head_dim": d,
        "v_head_dim": dv,
        "causal": True,
        "dtype": "bf16",
        **kw,
    }


def heads(row, bench, quick: bool) -> None:
    """Causal prefill and decode (contiguous and paged) at every head size, Hq 32 / Hkv 8; ``quick``:
    prefill at 128 and 80, decode (contiguous) at 80, 128 and 192/128."""
    bf = dict(device="cuda", dtype=torch.bfloat16)
    for d, dv in QUICK_PREFILL_SIZES if quick else HEAD_SIZES:
        for b, length in ((1, 8192),) if quick else ((1, 8192), (1, 16384), (4, 4096)):
            q = torch.randn(b, 32, length, d, **bf)
            k = torch.randn(b, 8, length, d, **bf)
            v = torch.randn(b, 8, length, dv, **bf)
            op = _attn_op("prefill", b, length, length, 32, 8, d, dv)
            _against_sdpa(
                row,
                bench,
                "heads_prefill",
                "attention_prefill",
                f"causal D{d} Dv{dv}",
                f"B{b} L{length} Hq32 Hkv8",
                lambda: kernels.attention_prefill(q, k, v, causal=True),
                q,
                k,
                v,
                True,
                kernels.attention_prefill.flops(op),
                kernels.attention_prefill.bytes_moved(op),
                seq_len=length,
                head_dim=d,
                v_head_dim=dv,
            )
        q = k = v = None
        torch.cuda.empty_cache()
    for d, dv in QUICK_DECODE_SIZES if quick else HEAD_SIZES:
        # decode over >= 1 GB of KV at head_dim 128 (the same tokens at the other sizes)
        b, length = (4, 65536)
        q = torch.randn(b, 32, d, **bf)
        k = torch.randn(b, 8, length, d, **bf)
        v = torch.randn(b, 8, length, dv, **bf)
        lens = torch.full((b,), length, device="cuda", dtype=torch.int32)
        op = _attn_op("decode", b, 1, length, 32, 8, d, dv)
        fl, nb = kernels.attention_decode.flops(op), kernels.attention_decode.bytes_moved(op)
        schedules = ("split_kv", "stream_k") if (d == dv and d in STREAM_K_HEAD_DIMS) else ("split_kv",)
        for s in schedules:
            _against_sdpa(
                row,
                bench,
                "heads_decode",
                "attention_decode",
                f"{s} D{d} Dv{dv}",
                f"B{b} L{length}",
                lambda s=s: kernels.attention_decode(q, k, v, lens, schedule=s, validate=False),
                q[:, :, None],
                k,
                v,
                False,
                fl,
                nb,
                lambda o: o[:, :, 0],
                kv_bytes=nb,
                head_dim=d,
                v_head_dim=dv,
            )
        k = v = None
        if quick:  # the paged kernels are the same kernels with a page lookup
            continue
        page = 16
        pool = b * length // page + 64
        kp = torch.randn(pool, 8, page, d, **bf)
        vp = torch.randn(pool, 8, page, dv, **bf)
        table = torch.randperm(pool, device="cuda")[: b * length // page].reshape(b, -1).int()
        t = bench(lambda: kernels.attention_decode_paged(q, kp, vp, table, lens, validate=False))
        row(
            "heads_decode",
            "attention_decode_paged",
            f"split_kv D{d} Dv{dv}",
            f"B{b} L{length} page{page}",
            t,
            fl,
            nb,
            kernel_names=kernel_names(
                lambda: kernels.attention_decode_paged(q, kp, vp, table, lens, validate=False)
            ),
            kv_bytes=nb,
            head_dim=d,
            v_head_dim=dv,
        )
        kp = vp = q = None
        torch.cuda.empty_cache()


def mla(row, bench, quick: bool) -> None:
    """MLA decode (latent 512 + 64, output 512 per head) over a paged latent, bf16 and fp8, against
    SDPA over the same latent held contiguous (one kv head; V the first 512 of each row, copied)."""
    shapes = (
        ((32, 32768, 16),) if quick else ((32, 32768, 16), (8, 131072, 16), (64, 16384, 128), (128, 4096, 16))
    )
    for b, length, heads_ in shapes:
        page = 64
        nblk = length // page
        pool = b * nblk + 8
        lat = torch.randn(pool, page, 576, device="cuda", dtype=torch.bfloat16)
        table = torch.randperm(pool, device="cuda")[: b * nblk].reshape(b, nblk).int()
        lens = torch.full((b,), length, device="cuda", dtype=torch.int32)
        q = torch.randn(b, heads_, 576, device="cuda", dtype=torch.bfloat16)
        scale = 1 / math.sqrt(192)
        op = _attn_op("decode", b, 1, length, heads_, 1, 576, 512, kv_shared=True)
        # SDPA over the latent gathered contiguous (outside the timing)
        rows_ = lat[table.long()].reshape(b, 1, length, 576)
        kk, vv = rows_, rows_[..., :512].contiguous()

        def sdpa_ready(o):
            return o[:, :, 0]

        def ours(cache=lat, sc=None):
            return kernels.attention_decode_mla(
                q, cache, table, lens, sm_scale=scale, validate=False, latent_scale=sc
            )

        nb = kernels.attention_decode_mla.bytes_moved(op)
        qs = q[:, :, None] * (scale * math.sqrt(576))  # SDPA scales by 1/sqrt(576)
        _against_sdpa(
            row,
            bench,
            "mla",
            "attention_decode_mla",
            "bf16 latent",
            f"B{b} L{length} H{heads_}",
            ours,
            qs,
            kk,
            vv,
            False,
            kernels.attention_decode_mla.flops(op),
            nb,
            sdpa_ready,
            kv_bytes=nb,
        )
        kk = vv = rows_ = None
        sc = (lat.abs().float().amax() / 448).reshape(1)
        lat8 = (lat.float() / sc).to(torch.float8_e4m3fn)
        nb8 = kernels.attention_decode_mla.bytes_moved({**op, "kv_dtype": "fp8"})
        t8 = bench(lambda: ours(lat8, sc))
        row(
            "mla",
            "attention_decode_mla",
            "fp8 latent",
            f"B{b} L{length} H{heads_}",
            t8,
            kernels.attention_decode_mla.flops(op),
            nb8,
            kernel_names=kernel_names(lambda: ours(lat8, sc)),
            kv_bytes=nb8,
            err_vs_bf16=_err(ours(lat8, sc), ours()),
        )
        lat = lat8 = None
        torch.cuda.empty_cache()


def fp8kv(row, bench, quick: bool) -> None:
    """fp8 (e4m3, per-kv-head scales) against bf16 KV decode at the same token count (the bf16
    time is the faster of the two schedules)."""
    for d in (128,) if quick else (64, 128, 256, 96):
        for b, length in ((4, 65536),) if quick else ((4, 65536), (32, 8192), (1, 262144)):
            q = torch.randn(b, 32, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, 8, length, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, 8, length, d, device="cuda", dtype=torch.bfloat16)
            lens = torch.full((b,), length, device="cuda", dtype=torch.int32)
            op = _attn_op("decode", b, 1, length, 32, 8, d, d)
            fl = kernels.attention_decode.flops(op)
            scheds = ("split_kv", "stream_k") if d in STREAM_K_HEAD_DIMS else ("split_kv",)
            t16 = min(
                bench(lambda s=s: kernels.attention_decode(q, k, v, lens, schedule=s, validate=False))
                for s in scheds
            )
            kq, ks = reference.quantize_fp8(k)
            vq, vs = reference.quantize_fp8(v)
            ref = kernels.attention_decode(q, k, v, lens, validate=False)
            k = v = None

            def ours():
                return kernels.attention_decode(q, kq, vq, lens, validate=False, k_scale=ks, v_scale=vs)

            nb8 = kernels.attention_decode.bytes_moved({**op, "kv_dtype": "fp8"})
            t = bench(ours)
            row(
                "fp8kv",
                "attention_decode",
                f"fp8 e4m3 per-head scale D{d}",
                f"B{b} L{length}",
                t,
                fl,
                nb8,
                "attention_decode bf16 KV",
                t16,
                kernel_names=kernel_names(ours),
                kv_bytes=nb8,
                err_vs_bf16=_err(ours(), ref),
                speed_vs_bf16=t16 / t,
            )
            kq = vq = None
            torch.cuda.empty_cache()
