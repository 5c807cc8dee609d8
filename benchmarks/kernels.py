"""GPU benchmark of the Triton kernels against cuBLAS / PyTorch SDPA, with measured ceilings.

Usage (on a CUDA machine)::

    python benchmarks/kernels.py --out DIR [--sections ceilings,check,gemm,prefill,decode,paged,kv,sweep,streamk,streamk_rounds,heads,mla,fp8kv]
    python benchmarks/kernels.py --out DIR --quick   # ceilings,heads,mla,fp8kv on a few shapes, about a minute

``heads``, ``mla`` and ``fp8kv`` (:mod:`benchmarks.attention_breadth`): prefill and decode at every
head size, MLA decode and fp8-KV decode against PyTorch SDPA with its default backend choice (the
rows' baseline) and with the flash backend, with the GPU kernels each call ran (``torch.profiler``).

``streamk`` is the focused stream-K vs split-KV decode grid: a GPU check of the stream-K merge
paths first, then every shape with the default schedules and stream-K with each variant of
``STREAMK_VARIANTS`` (fields of ``perfmodel.kernels.DecodeConfig``).
``streamk_rounds`` times the same grid's split-KV and stream-K defaults in alternating rounds
(both CUDA graphs captured once, replayed in turn) and counts the rounds stream-K wins;
``--variant LABEL:NAME=VALUE[,NAME=VALUE]`` (repeatable) adds both schedules captured with other
``perfmodel.kernels.DecodeConfig`` settings to the same rounds, e.g. ``--variant "one_per_sm:programs_per_sm=1"``.

Times the kernels with ``triton.testing.do_bench`` (median of repeated runs, L2 flushed between
runs), except ``heads``, ``mla`` and ``fp8kv``, which time ours and SDPA alike as CUDA-graph replays
(median of 15 replays of 16 calls; the launchers' host time left out, see ``_bench_replay``), and writes ``kernels_bench.json`` (environment, ceilings, rows),
``kernels_bench.csv`` and ``kernels_bench.md`` under ``--out``, rewritten after every section
so a run cut short still leaves its results. SI units in all stored fields.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from triton.testing import do_bench

from perfmodel import kernels
from benchmarks import attention_breadth as breadth
from benchmarks._host import gpu_env
from perfmodel.kernels import reference as ref
from perfmodel.validation.bench import graph_replay_s

ROWS: list[dict] = []
INFO: dict = {}
OUT = Path(".")
#: --quick: the breadth sections time a few shapes only
QUICK = False


def _bench(fn) -> float:
    """Median time of ``fn`` in seconds."""
    return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e-3


def _row(section, kernel, variant, case, time_s, flops=0, nbytes=0, baseline=None, baseline_s=None, **extra):
    r = {
        "section": section,
        "kernel": kernel,
        "variant": variant,
        "case": case,
        "time_s": time_s,
        "flops": flops,
        "bytes": nbytes,
        "achieved_flops_per_s": flops / time_s if flops else None,
        "achieved_bytes_per_s": nbytes / time_s if nbytes else None,
        "baseline": baseline,
        "baseline_time_s": baseline_s,
        "speed_vs_baseline": (baseline_s / time_s) if baseline_s else None,
    }
    ceil = INFO.get("ceilings", {})
    # an fp8 GEMM is measured against cuBLAS's fp8 rate where that was measured, else against bf16
    key = (
        "gemm_fp8_flops_per_s"
        if variant.startswith("fp8") and ceil.get("gemm_fp8_flops_per_s")
        else "gemm_bf16_flops_per_s"
    )
    if flops and ceil.get(key) and section in ("gemm", "prefill", "heads_prefill"):
        r["frac_of_flops_ceiling"] = r["achieved_flops_per_s"] / ceil[key]
        r["flops_ceiling"] = key
    if (
        nbytes
        and ceil.get("copy_bytes_per_s")
        and section in ("decode", "paged", "kv", "sweep", "heads_decode", "mla", "fp8kv")
    ):
        r["frac_of_bw_ceiling"] = r["achieved_bytes_per_s"] / ceil["copy_bytes_per_s"]
    r.update(extra)
    ROWS.append(r)
    sp = f" x{r['speed_vs_baseline']:.2f} vs {baseline}" if baseline_s else ""
    tf = f" {r['achieved_flops_per_s'] / 1e12:7.1f} TFLOP/s" if flops else ""
    gb = f" {r['achieved_bytes_per_s'] / 1e9:7.0f} GB/s" if nbytes else ""
    print(f"[{section}] {kernel}/{variant} {case}: {time_s * 1e3:.4f} ms{tf}{gb}{sp}", flush=True)
    return r


def ceilings() -> None:
    n = 1 << 30  # 2 GiB of bf16 per buffer
    a = torch.empty(n, dtype=torch.bfloat16, device="cuda").normal_()
    b = torch.empty_like(a)
    t = _bench(lambda: b.copy_(a))
    copy_bps = 2 * a.numel() * 2 / t
    a = b = None  # free 4 GiB before the GEMM
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    tg = _bench(lambda: x @ y)
    INFO["ceilings"] = {
        "copy_bytes_per_s": copy_bps,
        "copy_case": "2 GiB bf16 copy_, read+write counted",
        "gemm_bf16_flops_per_s": 2 * 8192**3 / tg,
        "gemm_case": "8192^3 bf16 torch.matmul",
    }
    x = y = None
    fp8 = ""
    try:  # cuBLAS fp8 (e4m3 operands, bf16 output; B column-major as cuBLAS wants it)
        x8 = torch.randn(8192, 8192, device="cuda").to(torch.float8_e4m3fn)
        y8 = torch.randn(8192, 8192, device="cuda").to(torch.float8_e4m3fn).t()
        one = torch.ones((), device="cuda")
        t8 = _bench(lambda: torch._scaled_mm(x8, y8, one, one, out_dtype=torch.bfloat16))
        INFO["ceilings"].update(
            gemm_fp8_flops_per_s=2 * 8192**3 / t8, gemm_fp8_case="8192^3 fp8 e4m3 torch._scaled_mm, bf16 out"
        )
        fp8 = f", cuBLAS fp8 {2 * 8192**3 / t8 / 1e12:.1f} TFLOP/s"
    except Exception as e:  # noqa: BLE001  (no fp8 on this GPU or torch)
        print("no fp8 ceiling:", e)
    print(f"ceilings: copy {copy_bps / 1e9:.0f} GB/s, cuBLAS bf16 {2 * 8192**3 / tg / 1e12:.1f} TFLOP/s{fp8}")


def _err(out, expect) -> float:
    out = out.double()
    return float("inf") if not torch.isfinite(out).all() else float((out - expect).norm() / expect.norm())


def check() -> None:
    """Correctness on the GPU: fresh random inputs, float64 references, rel-norm error."""
    d = "cuda"
    res = {}
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        a = torch.randn(1000, 777, device=d, dtype=dtype)
        b = torch.randn(777, 1234, device=d, dtype=dtype)
        res[f"matmul {dtype}"] = _err(kernels.matmul(a, b), ref.matmul_ref(a, b))
        res[f"matmul persistent {dtype}"] = _err(kernels.matmul(a[:40], b), ref.matmul_ref(a[:40], b))
    a8 = torch.randn(512, 1024, device=d).to(torch.float8_e4m3fn)
    b8 = torch.randn(768, 1024, device=d).to(torch.float8_e4m3fn).t()
    res["matmul fp8"] = _err(kernels.matmul(a8, b8), ref.matmul_ref(a8, b8))
    for hd in (64, 128):
        q = torch.randn(2, 28, 999, hd, device=d, dtype=torch.bfloat16)
        k = torch.randn(2, 4, 999, hd, device=d, dtype=torch.bfloat16)
        v = torch.randn(2, 4, 999, hd, device=d, dtype=torch.bfloat16)
        for causal in (True, False):
            res[f"prefill D={hd} causal={causal}"] = _err(
                kernels.attention_prefill(q, k, v, causal), ref.attention_prefill_ref(q, k, v, causal)
            )
    q = torch.randn(5, 32, 128, device=d, dtype=torch.bfloat16)
    kc = torch.randn(5, 8, 3001, 128, device=d, dtype=torch.bfloat16)
    vc = torch.randn(5, 8, 3001, 128, device=d, dtype=torch.bfloat16)
    lens = torch.tensor([1, 3001, 17, 2048, 999], device=d, dtype=torch.int32)
    r64 = ref.attention_decode_ref(q, kc, vc, lens)
    for s in ("split_kv", "stream_k"):
        res[f"decode {s}"] = _err(kernels.attention_decode(q, kc, vc, lens, schedule=s), r64)
        res[f"decode {s} P=1000"] = _err(kernels.attention_decode(q, kc, vc, lens, 1000, s), r64)
    kp = torch.randn(1000, 8, 16, 128, device=d, dtype=torch.bfloat16)
    vp = torch.randn(1000, 8, 16, 128, device=d, dtype=torch.bfloat16)
    table = torch.randperm(1000, device=d)[: 5 * 188].reshape(5, 188).int()
    plen = torch.tensor([1, 3001, 17, 2048, 999], device=d, dtype=torch.int32)
    rp = ref.attention_decode_paged_ref(q, kp, vp, table, plen)
    for s in ("split_kv", "stream_k"):
        res[f"paged {s}"] = _err(kernels.attention_decode_paged(q, kp, vp, table, plen, schedule=s), rp)
    ids = torch.randperm(1000, device=d)[:100]
    g = kernels.gather_kv_blocks(kp, ids)
    res["gather exact"] = 0.0 if torch.equal(g, kp[ids]) else float("inf")
    INFO["gpu_check_rel_err"] = res
    bad = {k: v for k, v in res.items() if not v < (1e-4 if "float32" in k else 1e-2)}
    INFO["gpu_check_passed"] = not bad
    print("GPU check:", "PASS" if not bad else f"FAIL {bad}")
    for k, v in res.items():
        print(f"  {k:40s} {v:.2e}")


def gemm() -> None:
    for m, n, k in [
        (8192, 8192, 8192),
        (4096, 4096, 4096),
        (4096, 14336, 4096),
        (16384, 4096, 4096),
        (2047, 3001, 1999),
    ]:
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        op = {"op": "gemm", "m": m, "n": n, "k": k, "dtype": "bf16"}
        tb = _bench(lambda: a @ b)
        t = _bench(lambda: kernels.matmul(a, b, persistent=False))
        _row(
            "gemm",
            "matmul",
            "bf16",
            f"{m}x{n}x{k}",
            t,
            kernels.matmul.flops(op),
            kernels.matmul.bytes_moved(op),
            "torch.matmul",
            tb,
        )
    for m in (16, 64, 128):
        a = torch.randn(m, 8192, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        op = {"op": "gemm", "m": m, "n": 8192, "k": 8192, "dtype": "bf16"}
        tb = _bench(lambda: a @ b)
        for pers in (True, False):
            t = _bench(lambda: kernels.matmul(a, b, persistent=pers))
            _row(
                "gemm",
                "matmul",
                "bf16 persistent" if pers else "bf16 tiled",
                f"{m}x8192x8192",
                t,
                kernels.matmul.flops(op),
                kernels.matmul.bytes_moved(op),
                "torch.matmul",
                tb,
            )
    a = torch.randn(8192, 8192, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(8192, 8192, device="cuda").to(torch.float8_e4m3fn).t()  # column-major B
    op = {"op": "gemm", "m": 8192, "n": 8192, "k": 8192, "dtype": "fp8", "out_dtype": "bf16"}
    one = torch.ones((), device="cuda")
    try:
        tb = _bench(lambda: torch._scaled_mm(a, b, one, one, out_dtype=torch.bfloat16))
        base = "torch._scaled_mm"
    except Exception as e:  # noqa: BLE001
        print("no fp8 baseline:", e)
        tb, base = None, None
    t = _bench(lambda: kernels.matmul(a, b))
    _row(
        "gemm",
        "matmul",
        "fp8 e4m3",
        "8192x8192x8192",
        t,
        kernels.matmul.flops(op),
        kernels.matmul.bytes_moved(op),
        base,
        tb,
    )


def _sdpa(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)


def _sdpa_expanded(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _sdpa_fn(q, k, v, causal):
    """The flash-SDPA call used as baseline: native GQA if the flash backend takes it, else K/V
    expanded to Hq heads beforehand (outside the timing)."""
    try:
        _sdpa(q, k, v, causal)
        return (lambda: _sdpa(q, k, v, causal)), "sdpa flash (enable_gqa)"
    except Exception:  # noqa: BLE001
        g = q.shape[1] // k.shape[1]
        if g > 1 and 2 * k.numel() * k.element_size() * g > 8e9:
            return None, "sdpa flash skipped (GQA needs K/V expanded beyond 8 GB)"
        ke = k.repeat_interleave(g, 1).contiguous()
        ve = v.repeat_interleave(g, 1).contiguous()
        return (lambda: _sdpa_expanded(q, ke, ve, causal)), "sdpa flash (K/V expanded)"


def prefill() -> None:
    for bsz, length, hq, hkv, d in [
        (8, 1024, 32, 8, 128),
        (4, 4096, 32, 8, 128),
        (2, 8192, 32, 8, 128),
        (1, 16384, 32, 8, 128),
        (4, 4096, 32, 32, 128),
        (4, 4096, 32, 8, 64),
    ]:
        q = torch.randn(bsz, hq, length, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(bsz, hkv, length, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(bsz, hkv, length, d, device="cuda", dtype=torch.bfloat16)
        op = {
            "op": "attention",
            "phase": "prefill",
            "batch": bsz,
            "q_len": length,
            "kv_len": length,
            "q_heads": hq,
            "kv_heads": hkv,
            "head_dim": d,
            "causal": True,
            "dtype": "bf16",
        }
        fn, base = _sdpa_fn(q, k, v, True)
        tb = _bench(fn) if fn else None
        t = _bench(lambda: kernels.attention_prefill(q, k, v, causal=True))
        _row(
            "prefill",
            "attention_prefill",
            "causal bf16",
            f"B{bsz} L{length} Hq{hq} Hkv{hkv} D{d}",
            t,
            kernels.attention_prefill.flops(op),
            kernels.attention_prefill.bytes_moved(op),
            base,
            tb,
            batch=bsz,
            seq_len=length,
        )


#: How the breadth sections' timings since the last row were taken (``_breadth_row`` records and clears it).
_REPLAY_TIMINGS: set[str] = set()


def _breadth_row(*args, **extra):
    """:func:`_row` with ``timing``: how its times were taken (:func:`_bench_replay`)."""
    timing = " + ".join(sorted(_REPLAY_TIMINGS)) or "cuda graph"
    _REPLAY_TIMINGS.clear()
    return _row(*args, **{"timing": timing, **extra})


def _bench_replay(fn) -> float:
    """GPU time per call of ``fn`` in seconds from CUDA-graph replays (:func:`_bench_graph`), so that the
    host's launch path (our launchers' Python, PyTorch's dispatch) is not timed: with ``do_bench`` a
    launcher slower than the GPU's work leaves the GPU idle inside the timed region (the same decode
    kernel read 0.71 and 0.98 of the copy ceiling in two sections of one run). Where a call cannot be
    captured, ``do_bench`` times it and the run says so."""
    try:
        t = _bench_graph([fn])
        _REPLAY_TIMINGS.add("cuda graph")
        return t
    except Exception as exc:  # noqa: BLE001  (a capture failure of one library call)
        torch.cuda.synchronize()
        _REPLAY_TIMINGS.add("do_bench (not capturable)")
        print(
            f"  (not capturable, timed eagerly with do_bench: {str(exc).splitlines()[0][:120]})", flush=True
        )
        return _bench(fn)


def _graph_calls(copies: int) -> int:
    """Calls per CUDA graph over ``copies`` input copies: each copy equally often, at least 16."""
    return copies * max(1, -(-16 // copies))


def _bench_graph(fns) -> float:
    """GPU time per call in seconds: the calls, cycling over ``fns`` (one per input copy, so that
    the inputs do not sit in L2), captured in one CUDA graph; median over graph replays."""
    times = graph_replay_s(fns, _graph_calls(len(fns)), 15)
    return sorted(times)[len(times) // 2]


def _decode_op(bsz, length, hq, hkv, d) -> dict:
    """The core's descriptor of a bf16 decode step over ``bsz`` sequences of ``length`` keys."""
    return {
        "op": "attention",
        "phase": "decode",
        "batch": bsz,
        "q_len": 1,
        "kv_len": length,
        "q_heads": hq,
        "kv_heads": hkv,
        "head_dim": d,
        "causal": True,
        "dtype": "bf16",
    }


def _decode_inputs(bsz, length, hq=32, hkv=8, d=128, ragged=False):
    """(kv_lens, input copies (q, k_cache, v_cache), bytes one call reads and writes) of a decode
    shape: random bf16 inputs, enough copies to rotate 256 MB of KV (no L2 reuse), ragged lengths
    uniform in [1, length] with the first sequence at ``length`` (seeded by the shape)."""
    g = torch.Generator(device="cuda").manual_seed(bsz * 1000 + length)
    if ragged:
        lens = torch.randint(1, length + 1, (bsz,), device="cuda", generator=g, dtype=torch.int32)
        lens[0] = length
    else:
        lens = torch.full((bsz,), length, device="cuda", dtype=torch.int32)
    kv_bytes = 2 * bsz * hkv * length * d * 2
    copies = min(32, max(1, -(-256_000_000 // kv_bytes)))
    sets = [
        (
            torch.randn(bsz, hq, d, device="cuda", dtype=torch.bfloat16),
            torch.randn(bsz, hkv, length, d, device="cuda", dtype=torch.bfloat16),
            torch.randn(bsz, hkv, length, d, device="cuda", dtype=torch.bfloat16),
        )
        for _ in range(copies)
    ]
    nbytes = 2 * hkv * d * 2 * int(lens.sum()) + 2 * bsz * hq * d * 2
    return lens, sets, nbytes


def _decode_case(
    bsz,
    length,
    hq=32,
    hkv=8,
    d=128,
    ragged=False,
    sdpa=True,
    schedules=("split_kv", "stream_k"),
    section="decode",
    splits=(None,),
    meta=None,
):
    """Time one decode shape. ``time_s`` is the CUDA-graph GPU time over rotated input copies
    (at least 256 MB of KV in rotation, so no L2 reuse); ``do_bench_time_s`` is do_bench's median
    of eager calls, which includes launch gaps when the CPU side is slower than the GPU."""
    lens, sets, nbytes = _decode_inputs(bsz, length, hq, hkv, d, ragged)
    copies = len(sets)
    op = _decode_op(bsz, length, hq, hkv, d)
    flops = kernels.attention_decode.flops(op) if not ragged else 4 * hq * d * int(lens.sum())
    if not ragged:
        assert nbytes == kernels.attention_decode.bytes_moved(op)
    tb, tb_eager, base = None, None, None
    if sdpa and not ragged:
        fns = []
        for qq, kk, vv in sets:
            fn, base = _sdpa_fn(qq[:, :, None], kk, vv, False)
            fns.append(fn)
        if fns[0] is not None:
            tb_eager = _bench(fns[0])
            tb = _bench_graph(fns)
    times = {}
    case = f"B{bsz} L{length}{' ragged' if ragged else ''}"
    for s in schedules:
        for ns in splits:
            fns = [
                (
                    lambda qq=qq, kk=kk, vv=vv, ns=ns, s=s: kernels.attention_decode(
                        qq, kk, vv, lens, ns, s, validate=False
                    )
                )
                for qq, kk, vv in sets
            ]
            t_eager = _bench(fns[0])
            t = _bench_graph(fns)
            times[(s, ns)] = t
            variant = s if ns is None else f"{s} n={ns}"
            _row(
                section,
                "attention_decode",
                variant,
                case,
                t,
                flops,
                nbytes,
                base,
                tb,
                batch=bsz,
                kv_len=length,
                kv_bytes=nbytes,
                pairs=bsz * hkv,
                meta=meta,
                timing="cuda graph",
                do_bench_time_s=t_eager,
                baseline_do_bench_time_s=tb_eager,
                input_copies=copies,
            )
    return times


def decode() -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for bsz in (1, 2, 4, 8, 16, 32, 64):
        for length in (1024, 4096, 16384, 65536, 262144):
            if bsz * length > 4 * 1024 * 1024:
                continue
            times = _decode_case(bsz, length)
            INFO.setdefault("stream_vs_split", []).append(
                {
                    "batch": bsz,
                    "kv_len": length,
                    "pairs": bsz * 8,
                    "pairs_lt_sms": bsz * 8 < sms,
                    "split_kv_s": times[("split_kv", None)],
                    "stream_k_s": times[("stream_k", None)],
                }
            )
    for bsz, length in ((4, 65536), (16, 16384), (16, 65536), (64, 16384)):
        _decode_case(bsz, length, ragged=True, sdpa=False)


def paged() -> None:
    for bsz, length, page in ((8, 32768, 16), (1, 262144, 16), (32, 8192, 64)):
        hq, hkv, d = 32, 8, 128
        nblk = length // page
        pool = bsz * nblk + 64
        kp = torch.randn(pool, hkv, page, d, device="cuda", dtype=torch.bfloat16)
        vp = torch.randn(pool, hkv, page, d, device="cuda", dtype=torch.bfloat16)
        table = torch.randperm(pool, device="cuda")[: bsz * nblk].reshape(bsz, nblk).int()
        lens = torch.full((bsz,), length, device="cuda", dtype=torch.int32)
        q = torch.randn(bsz, hq, d, device="cuda", dtype=torch.bfloat16)
        op = _decode_op(bsz, length, hq, hkv, d)
        for s in ("split_kv", "stream_k"):
            t = _bench(
                lambda: kernels.attention_decode_paged(q, kp, vp, table, lens, schedule=s, validate=False)
            )
            _row(
                "paged",
                "attention_decode_paged",
                s,
                f"B{bsz} L{length} page{page}",
                t,
                kernels.attention_decode_paged.flops(op),
                kernels.attention_decode_paged.bytes_moved(op),
            )


def kv_blocks() -> None:
    pool, hkv, page, d = 16384, 8, 16, 128
    pages = torch.randn(pool, hkv, page, d, device="cuda", dtype=torch.bfloat16)
    for n in (64, 1024, 4096):
        ids = torch.randperm(pool, device="cuda")[:n]
        op = {
            "op": "kv_block_copy",
            "num_blocks": n,
            "kv_heads": hkv,
            "block_size": page,
            "head_dim": d,
            "dtype": "bf16",
        }
        buf = kernels.gather_kv_blocks(pages, ids)
        tb = _bench(lambda: torch.index_select(pages, 0, ids))
        t = _bench(lambda: kernels.gather_kv_blocks(pages, ids, validate=False))
        _row(
            "kv",
            "gather_kv_blocks",
            "bf16",
            f"{n} blocks of 32 KiB",
            t,
            0,
            kernels.gather_kv_blocks.bytes_moved(op),
            "torch.index_select",
            tb,
        )
        tb = _bench(lambda: pages.index_copy_(0, ids, buf))
        t = _bench(lambda: kernels.scatter_kv_blocks(pages, ids, buf, validate=False))
        _row(
            "kv",
            "scatter_kv_blocks",
            "bf16",
            f"{n} blocks of 32 KiB",
            t,
            0,
            kernels.scatter_kv_blocks.bytes_moved(op),
            "torch.index_copy_",
            tb,
        )


def sweep() -> None:
    """Decode tuning probes: programs per schedule, and tile / warp / stage choices."""
    mod = sys.modules["perfmodel.kernels.attention_decode"]

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for bsz, length in ((1, 262144), (4, 65536), (16, 16384), (2, 16384), (8, 4096)):
        _decode_case(
            bsz, length, sdpa=False, section="sweep", schedules=("stream_k",), splits=(sms, 2 * sms, 4 * sms)
        )
        per_pair = max(1, 2 * sms // (bsz * 8))
        _decode_case(
            bsz,
            length,
            sdpa=False,
            section="sweep",
            schedules=("split_kv",),
            splits=(max(1, per_pair // 2), 2 * per_pair),
        )
    saved = dict(mod._GPU_META)
    try:
        for bn, warps, stages in ((64, 4, 4), (128, 4, 3), (128, 8, 3), (32, 4, 4), (64, 8, 3)):
            mod._GPU_META.update({"BLOCK_N": bn, "num_warps": warps, "num_stages": stages})
            for bsz, length in ((1, 262144), (16, 16384), (64, 16384), (1, 16384), (32, 1024)):
                _decode_case(
                    bsz,
                    length,
                    sdpa=False,
                    section="sweep",
                    meta=f"BLOCK_N={bn} warps={warps} stages={stages}",
                )
    finally:
        mod._GPU_META.clear()
        mod._GPU_META.update(saved)


def _stream_k_check() -> None:
    """GPU check of the stream-K merge paths: fused (in-kernel, last finisher) and reduction
    kernel, program counts from 1 to more than the tiles, GQA 1/2/4/7, ragged lengths with 1 and
    Lmax; the fused path is repeated to catch ordering races (results must be bit-identical)."""
    d = "cuda"
    res = {}
    try:
        for hq, hkv in ((8, 8), (16, 8), (32, 8), (28, 4)):
            q = torch.randn(5, hq, 128, device=d, dtype=torch.bfloat16)
            kc = torch.randn(5, hkv, 3001, 128, device=d, dtype=torch.bfloat16)
            vc = torch.randn(5, hkv, 3001, 128, device=d, dtype=torch.bfloat16)
            lens = torch.tensor([1, 3001, 17, 2048, 999], device=d, dtype=torch.int32)
            r64 = ref.attention_decode_ref(q, kc, vc, lens)
            for fused in (True, False):
                cfg = kernels.DecodeConfig(fused_merge=fused)
                for ns in (None, 1, 7, 132, 264, 5000, 40):
                    key = f"stream_k G={hq // hkv} fused={fused} P={ns}"
                    outs = [
                        kernels.attention_decode(q, kc, vc, lens, ns, "stream_k", config=cfg)
                        for _ in range(20 if fused else 1)
                    ]
                    err = _err(outs[0], r64)
                    same = all(torch.equal(o, outs[0]) for o in outs)
                    res[key] = err if same else float("inf")
        for b_u, l_u in ((1, 1024), (2, 4096), (16, 1000)):  # uniform lengths: aligned default runs
            q = torch.randn(b_u, 32, 128, device=d, dtype=torch.bfloat16)
            kc = torch.randn(b_u, 8, l_u, 128, device=d, dtype=torch.bfloat16)
            vc = torch.randn(b_u, 8, l_u, 128, device=d, dtype=torch.bfloat16)
            lens = torch.full((b_u,), l_u, device=d, dtype=torch.int32)
            r64 = ref.attention_decode_ref(q, kc, vc, lens)
            for fused in (True, False):
                cfg = kernels.DecodeConfig(fused_merge=fused)
                for ns in (None, 7, 132, 256):
                    outs = [
                        kernels.attention_decode(q, kc, vc, lens, ns, "stream_k", config=cfg)
                        for _ in range(5)
                    ]
                    same = all(torch.equal(o, outs[0]) for o in outs)
                    res[f"stream_k uniform B={b_u} L={l_u} fused={fused} P={ns}"] = (
                        _err(outs[0], r64) if same else float("inf")
                    )
        kp = torch.randn(1000, 8, 16, 128, device=d, dtype=torch.bfloat16)
        vp = torch.randn(1000, 8, 16, 128, device=d, dtype=torch.bfloat16)
        table = torch.randperm(1000, device=d)[: 5 * 188].reshape(5, 188).int()
        plen = torch.tensor([1, 3001, 17, 2048, 999], device=d, dtype=torch.int32)
        q = torch.randn(5, 32, 128, device=d, dtype=torch.bfloat16)
        rp = ref.attention_decode_paged_ref(q, kp, vp, table, plen)
        for fused in (False, True):
            res[f"paged stream_k fused={fused}"] = _err(
                kernels.attention_decode_paged(
                    q,
                    kp,
                    vp,
                    table,
                    plen,
                    schedule="stream_k",
                    config=kernels.DecodeConfig(fused_merge=fused),
                ),
                rp,
            )
    finally:
        pass
    INFO["stream_k_check_rel_err"] = res
    bad = {k: v for k, v in res.items() if not v < 1e-2}
    INFO["stream_k_check_passed"] = not bad
    print(
        f"stream-K GPU check: {'PASS' if not bad else f'FAIL {bad}'} ({len(res)} configurations, "
        f"largest relative error {max(res.values()):.2e}; all in the JSON)"
    )


class _NoLaunch:
    """Stands in for a Triton kernel: ``k[grid](...)`` launches nothing (timing one kernel alone)."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


#: stream-K variants of the ``streamk`` section: (label, ``perfmodel.kernels.DecodeConfig`` fields); "main
#: only" variants skip the reduction kernel (wrong output, timing of the first kernel alone).
STREAMK_VARIANTS = (
    ("SK default", {}),
    ("SK one program per SM", {"programs_per_sm": 1}),
)
#: also time the first kernel of each schedule alone (reduction launch skipped)
STREAMK_MAIN_ONLY = False
#: the stream-K grid (batch, KV length, ragged; Hq 32, Hkv 8, head_dim 128): the 31 shapes with
#: B*Hkv below 132 SMs and three with more
STREAMK_SHAPES = [
    (b, n, False)
    for b in (1, 2, 4, 8, 16)
    for n in (1024, 4096, 16384, 65536, 262144)
    if b * n <= 4 * 1024 * 1024
]
STREAMK_SHAPES += [
    (32, 1024, False),
    (64, 1024, False),
    (32, 4096, False),
    (4, 65536, True),
    (16, 16384, True),
    (16, 65536, True),
    (64, 16384, True),
    (1, 4096, True),
    (2, 16384, True),
    (8, 4096, True),
]
#: head layout of ``streamk_rounds`` (query heads, KV heads, head_dim; ``--layout``)
STREAMK_LAYOUT = (32, 8, 128)
#: extra graphs of both schedules in ``streamk_rounds``: (label, ``perfmodel.kernels.DecodeConfig`` fields),
#: each captured with its settings and replayed in the same rounds
#: (``--variant``)
STREAMK_ROUND_VARIANTS: list[tuple[str, dict]] = []
#: rounds of the alternating comparison (``streamk_rounds``) and timed replays per round
STREAMK_ROUNDS = 11
STREAMK_ROUND_REPLAYS = 5


@contextlib.contextmanager
def _first_kernel_only(skip: bool = True):
    """While active (and ``skip``), the decode reduction kernel launches nothing, so a decode call
    runs (and a timing or a graph capture holds) its first kernel alone; its output is wrong."""
    dk = sys.modules["perfmodel.kernels._decode_kernels"]
    real = dk._reduce_kernel
    if skip:
        dk._reduce_kernel = _NoLaunch()
    try:
        yield
    finally:
        dk._reduce_kernel = real


def _with_flags(mod, flags, fn):
    """``fn()`` with the decode wrappers of ``kernels`` bound to ``DecodeConfig(**flags)`` (``mod``:
    unused, kept for the call sites)."""
    if not flags:
        return fn()
    config = kernels.DecodeConfig(**flags)
    saved = kernels.attention_decode, kernels.attention_decode_paged

    def bind(wrapper):
        def call(*args, **kwargs):
            return wrapper(*args, **{"config": config, **kwargs})

        call.flops, call.bytes_moved = wrapper.flops, wrapper.bytes_moved
        return call

    try:
        kernels.attention_decode, kernels.attention_decode_paged = bind(saved[0]), bind(saved[1])
        return fn()
    finally:
        kernels.attention_decode, kernels.attention_decode_paged = saved


def streamk() -> None:
    """Focused stream-K vs split-KV decode grid (CUDA-graph timing): split-KV default, the
    stream-K variants of ``STREAMK_VARIANTS`` (``perfmodel.kernels.DecodeConfig`` fields:
    program counts, merge path, ...), and with ``STREAMK_MAIN_ONLY`` the first kernel of each
    schedule alone (reduction launch skipped), to split the fixed costs."""
    _stream_k_check()
    mod = sys.modules["perfmodel.kernels.attention_decode"]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    shapes = STREAMK_SHAPES
    labels = [v[0] for v in STREAMK_VARIANTS]
    table = []
    for bsz, length, ragged in shapes:
        case = dict(ragged=ragged, section="sweep", sdpa=False)
        split = _decode_case(bsz, length, ragged=ragged, sdpa=not ragged, schedules=("split_kv",))
        times = {"split-KV": split[("split_kv", None)]}
        for label, flags in STREAMK_VARIANTS:
            tv = _with_flags(
                mod, flags, lambda: _decode_case(bsz, length, schedules=("stream_k",), meta=label, **case)
            )
            times[label] = tv[("stream_k", None)]
        if STREAMK_MAIN_ONLY:
            with _first_kernel_only():
                times["split-KV main only"] = _decode_case(
                    bsz, length, schedules=("split_kv",), meta="main kernel only", **case
                )[("split_kv", None)]
                times["stream-K reduce main only"] = _with_flags(
                    mod,
                    {"fused_merge": False},
                    lambda: _decode_case(
                        bsz, length, schedules=("stream_k",), meta="main kernel only", **case
                    ),
                )[("stream_k", None)]
        sd = next(
            (
                r["baseline_time_s"]
                for r in reversed(ROWS)
                if r["section"] == "decode" and r["case"] == f"B{bsz} L{length}{' ragged' if ragged else ''}"
            ),
            None,
        )
        times["flash SDPA"] = sd
        table.append(
            {
                "batch": bsz,
                "kv_len": length,
                "ragged": ragged,
                "pairs": bsz * 8,
                **{k + " s": v for k, v in times.items()},
            }
        )
    INFO["streamk_table"] = table
    cols = [
        "split-KV",
        *labels,
        *(["split-KV main only", "stream-K reduce main only"] if STREAMK_MAIN_ONLY else []),
        "flash SDPA",
    ]
    print("\n   B      L rag " + " ".join(f"{c[:14]:>14s}" for c in cols) + "   (us)")
    wins = {k: 0 for k in labels}
    n = 0
    for r in table:
        if r["pairs"] < sms:
            n += 1
            for k in labels:
                wins[k] += r[k + " s"] < r["split-KV s"]
        print(
            f"{r['batch']:4d} {r['kv_len']:6d} {'r' if r['ragged'] else ' '}  "
            + " ".join(f"{(r[c + ' s'] or float('nan')) * 1e6:14.1f}" for c in cols)
        )
    INFO["streamk_wins_lt_sms"] = {"shapes": n, **wins}
    for k, w in wins.items():
        print(f"{k} faster than split-KV in {w} of {n} shapes with B*Hkv < {sms}")
    # far more (sequence, kv head) pairs than SMs, short caches (outside the target's range)
    many = []
    # other head layouts: far more (sequence, kv head) pairs than SMs with short caches (outside the
    # target's range), and head_dim 64 (stream-K with 128-key tiles)
    for bsz, length, hq, hkv, d in (
        (128, 256, 32, 32, 64),
        (64, 1024, 32, 32, 64),
        (128, 1024, 32, 8, 128),
        (128, 256, 16, 4, 64),
        (1, 1024, 32, 8, 64),
        (1, 16384, 32, 8, 64),
        (1, 262144, 32, 8, 64),
        (2, 4096, 32, 8, 64),
        (4, 65536, 32, 8, 64),
        (16, 1024, 32, 8, 64),
        (16, 16384, 32, 8, 64),
        (8, 4096, 16, 4, 64),
        (16, 65536, 16, 4, 64),
    ):
        t = _decode_case(bsz, length, hq=hq, hkv=hkv, d=d, sdpa=False, section="sweep", meta="head layouts")
        row = {
            "batch": bsz,
            "kv_len": length,
            "q_heads": hq,
            "kv_heads": hkv,
            "head_dim": d,
            "split_kv_s": t[("split_kv", None)],
            "stream_k_s": t[("stream_k", None)],
        }
        extra = ""
        for label, flags in STREAMK_VARIANTS[1:]:
            tv = _with_flags(
                mod,
                flags,
                lambda: _decode_case(
                    bsz,
                    length,
                    hq=hq,
                    hkv=hkv,
                    d=d,
                    sdpa=False,
                    section="sweep",
                    schedules=("stream_k",),
                    meta=f"head layouts, {label}",
                ),
            )
            row[f"stream_k {label} s"] = tv[("stream_k", None)]
            extra += f", stream-K {label} {tv[('stream_k', None)] * 1e6:.1f} us"
        many.append(row)
        print(
            f"layout B={bsz} L={length} Hq={hq} Hkv={hkv} D={d} pairs={bsz * hkv}: split-KV "
            f"{t[('split_kv', None)] * 1e6:.1f} us, stream-K {t[('stream_k', None)] * 1e6:.1f} us{extra}"
        )
    INFO["streamk_head_layouts"] = many


def streamk_rounds() -> None:
    """Split-KV against stream-K (both defaults) over ``STREAMK_SHAPES``, timed in alternation.

    Each schedule's calls (cycling over rotated input copies) are captured once in a CUDA graph;
    the two graphs are then replayed in turn for ``STREAMK_ROUNDS`` rounds (the first schedule
    alternating between rounds), ``STREAMK_ROUND_REPLAYS`` timed replays each. A single timing per
    schedule, as in ``streamk``, compares two numbers taken at different moments; small shapes
    move by up to 10% between such timings of the same code. Reported per shape: the median over
    rounds of each schedule's median, and in how many rounds stream-K was faster. With
    ``STREAMK_MAIN_ONLY`` the first kernel of each schedule alone (reduction skipped) joins the
    rounds.
    """
    import statistics

    from perfmodel.validation.bench import capture_graph, replay_s

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    mod = sys.modules["perfmodel.kernels.attention_decode"]
    table = []
    print("\n   B      L rag   split-KV us  stream-K us  stream/split  rounds stream-K faster")
    for bsz, length, ragged in STREAMK_SHAPES:
        hq, hkv, d = STREAMK_LAYOUT
        lens, sets, nbytes = _decode_inputs(bsz, length, hq, hkv, d, ragged=ragged)
        calls = _graph_calls(len(sets))
        graphs = {}
        for main_only in (False, True) if STREAMK_MAIN_ONLY else (False,):
            with _first_kernel_only(main_only):  # capture the first kernel alone (reduction skipped)
                for s in ("split_kv", "stream_k"):
                    fns = [
                        (
                            lambda qq=qq, kk=kk, vv=vv, s=s: kernels.attention_decode(
                                qq, kk, vv, lens, None, s, validate=False
                            )
                        )
                        for qq, kk, vv in sets
                    ]
                    graphs[s + (" main only" if main_only else "")] = capture_graph(fns, calls)
                    for label, flags in STREAMK_ROUND_VARIANTS:  # each captured under its own settings
                        graphs[f"{s} {label}" + (" main only" if main_only else "")] = _with_flags(
                            mod, flags, lambda: capture_graph(fns, calls)
                        )
        per_round = {s: [] for s in graphs}
        for r in range(STREAMK_ROUNDS):
            for s in list(graphs) if r % 2 == 0 else list(graphs)[::-1]:
                per_round[s].append(statistics.median(replay_s(graphs[s], calls, STREAMK_ROUND_REPLAYS)))
        del graphs
        med = {s: statistics.median(v) for s, v in per_round.items()}
        won = sum(a < b for a, b in zip(per_round["stream_k"], per_round["split_kv"]))
        case = f"B{bsz} L{length}{' ragged' if ragged else ''}"
        for s in per_round:
            _row(
                "streamk_rounds",
                "attention_decode",
                s,
                case,
                med[s],
                0,
                nbytes,
                batch=bsz,
                kv_len=length,
                kv_bytes=nbytes,
                pairs=bsz * hkv,
                q_heads=hq,
                kv_heads=hkv,
                head_dim=d,
                timing="cuda graph, alternating rounds",
                round_times_s=per_round[s],
                rounds_stream_k_faster=won,
            )
        table.append(
            {
                "batch": bsz,
                "kv_len": length,
                "ragged": ragged,
                "pairs": bsz * hkv,
                "q_heads": hq,
                "kv_heads": hkv,
                "head_dim": d,
                **{s.replace(" ", "_") + "_s": v for s, v in med.items()},
                "rounds": STREAMK_ROUNDS,
                "rounds_stream_k_faster": won,
            }
        )
        main = (
            f"   main only: split-KV {med['split_kv main only'] * 1e6:.1f}, stream-K "
            f"{med['stream_k main only'] * 1e6:.1f}"
            if STREAMK_MAIN_ONLY
            else ""
        )
        for label, _ in STREAMK_ROUND_VARIANTS:
            k, ks = f"stream_k {label}", f"split_kv {label}"
            wins = sum(a < b for a, b in zip(per_round[k], per_round[ks]))
            main += f"   [{label}] split-KV {med[ks] * 1e6:.1f}, stream-K {med[k] * 1e6:.1f} ({wins} of {STREAMK_ROUNDS})"
            if STREAMK_MAIN_ONLY:
                main += f", main only {med[ks + ' main only'] * 1e6:.1f} / {med[k + ' main only'] * 1e6:.1f}"
        print(
            f"{bsz:4d} {length:6d} {'r' if ragged else ' '}  {med['split_kv'] * 1e6:12.1f} "
            f"{med['stream_k'] * 1e6:12.1f} {med['stream_k'] / med['split_kv']:13.3f}  {won:2d} of {STREAMK_ROUNDS}"
            + main
        )
    target = [r for r in table if r["pairs"] < sms]
    faster = sum(r["stream_k_s"] < r["split_kv_s"] for r in target)
    INFO["streamk_rounds"] = {
        "table": table,
        "shapes_lt_sms": len(target),
        "stream_k_faster": faster,
        "layout": {
            "q_heads": STREAMK_LAYOUT[0],
            "kv_heads": STREAMK_LAYOUT[1],
            "head_dim": STREAMK_LAYOUT[2],
        },
        "variants": {label: flags for label, flags in STREAMK_ROUND_VARIANTS},
    }
    print(
        f"stream-K faster than split-KV (median over rounds) in {faster} of {len(target)} shapes with B*Hkv < {sms}"
    )
    for label, _ in STREAMK_ROUND_VARIANTS:
        key = f"stream_k_{label.replace(' ', '_')}_s"
        n = sum(r[key] < r[key.replace("stream_k", "split_kv", 1)] for r in target)
        print(f"  variant [{label}]: faster than split-KV in {n} of {len(target)}")
        INFO["streamk_rounds"].setdefault("variant_faster", {})[label] = n


def _fmt(x, scale=1.0, nd=2):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * scale:.{nd}f}"


def write() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "kernels_bench.json").write_text(json.dumps({"info": INFO, "rows": ROWS}, indent=1, default=str))
    try:
        import pandas as pd

        pd.DataFrame(ROWS).to_csv(OUT / "kernels_bench.csv", index=False)
    except Exception as e:  # noqa: BLE001
        print("csv not written:", e)
    env = INFO.get("env", {})
    c = INFO.get("ceilings", {})
    lines = [
        f"# Kernel benchmark: {env.get('gpu')} ({env.get('date_utc')})",
        "",
        f"driver {env.get('driver')}, CUDA {env.get('cuda')}, torch {env.get('torch')}, triton "
        f"{env.get('triton')}, Python {env.get('python')}, {env.get('sm_count')} SMs. Median of "
        "`triton.testing.do_bench` (L2 flushed between runs), bf16 unless noted.",
        "",
        f"Measured ceilings: copy {_fmt(c.get('copy_bytes_per_s'), 1e-9, 0)} GB/s "
        f"({c.get('copy_case')}); "
        f"cuBLAS {_fmt(c.get('gemm_bf16_flops_per_s'), 1e-12, 1)} TFLOP/s ({c.get('gemm_case')})"
        + (
            f"; cuBLAS fp8 {_fmt(c.get('gemm_fp8_flops_per_s'), 1e-12, 1)} TFLOP/s ({c.get('gemm_fp8_case')}), "
            "the ceiling of the fp8 rows"
            if c.get("gemm_fp8_flops_per_s")
            else ""
        )
        + ".",
        "",
        f"GPU correctness check passed: {INFO.get('gpu_check_passed')}",
        "",
        "| section | kernel | variant | case | time ms | TFLOP/s | GB/s | frac of ceiling | baseline | "
        "baseline ms | speed vs baseline |",
        "|" + "---|" * 11,
    ]
    for r in ROWS:
        frac = r.get("frac_of_flops_ceiling") or r.get("frac_of_bw_ceiling")
        meta = " " + r["meta"] if r.get("meta") else ""
        lines.append(
            f"| {r['section']} | {r['kernel']} | {r['variant']}{meta} "
            f"| {r['case']} | {_fmt(r['time_s'], 1e3, 4)} "
            f"| {_fmt(r['achieved_flops_per_s'], 1e-12, 1)} "
            f"| {_fmt(r['achieved_bytes_per_s'], 1e-9, 0)} | {_fmt(frac, 1, 3)} "
            f"| {r['baseline'] or ''} "
            f"| {_fmt(r['baseline_time_s'], 1e3, 4)} | {_fmt(r['speed_vs_baseline'], 1, 3)} |"
        )
    (OUT / "kernels_bench.md").write_text("\n".join(lines) + "\n")


def summarize(paths: list[str]) -> str:
    """Markdown table of the issue's speed targets, computed from result JSON files."""
    rows, info = [], {}
    for p in paths:
        data = json.loads(Path(p).read_text())
        rows += [dict(r, source=Path(p).name) for r in data["rows"]]
        info.setdefault("env", data["info"].get("env"))
        info.setdefault("ceilings", data["info"].get("ceilings"))
    sms = (info.get("env") or {}).get("sm_count", 132)
    out = ["| target | measured | met |", "|---|---|---|"]
    big = [
        r
        for r in rows
        if r["section"] == "gemm"
        and r["variant"] == "bf16"
        and r["case"] in ("8192x8192x8192", "4096x4096x4096", "4096x14336x4096", "16384x4096x4096")
    ]
    if big:
        worst = min(r["speed_vs_baseline"] for r in big)
        cases = ", ".join(f"{r['case']}: {r['speed_vs_baseline']:.2f}" for r in big)
        met = "yes" if worst >= 0.85 else "no"
        out.append(f"| GEMM >= 0.85 x cuBLAS at large shapes (bf16) | {cases} | {met} |")
    pre = [r for r in rows if r["section"] == "prefill" and r.get("seq_len", 0) >= 4096]
    if pre:
        worst = min(r["speed_vs_baseline"] for r in pre)
        out.append(
            f"| prefill >= 0.80 x flash SDPA at L >= 4K | min {worst:.2f} over {len(pre)} shapes | "
            f"{'yes' if worst >= 0.8 else 'no'} |"
        )
    dec = [
        r
        for r in rows
        if r["section"] == "decode" and r.get("kv_bytes", 0) >= 1e9 and r.get("frac_of_bw_ceiling")
    ]
    if dec:
        worst = min(r["frac_of_bw_ceiling"] for r in dec)
        out.append(
            f"| decode >= 0.80 of measured copy bandwidth at KV >= 1 GB | min {worst:.2f} "
            f"over {len(dec)} "
            f"runs ({dec[0].get('timing', 'do_bench')}) | {'yes' if worst >= 0.8 else 'no'} |"
        )
    out += _breadth_targets(rows)
    for section, how in (("decode", ""), ("streamk_rounds", " (alternating rounds, median)")):
        by_case: dict = {}
        for r in rows:
            if (
                r["section"] == section
                and r["variant"] in ("split_kv", "stream_k")
                and r.get("pairs", 1e9) < sms
            ):
                by_case.setdefault((r["source"], r["case"]), {})[r["variant"]] = r["time_s"]
        pairs = [v for v in by_case.values() if len(v) == 2]
        if pairs:
            wins = sum(v["stream_k"] < v["split_kv"] for v in pairs)
            gm = math.exp(sum(math.log(v["split_kv"] / v["stream_k"]) for v in pairs) / len(pairs))
            out.append(
                f"| stream-K faster than split-KV where B*Hkv < {sms} SMs{how} | stream-K faster in {wins} of "
                f"{len(pairs)} shapes; geometric-mean speed-up {gm:.3f} | "
                f"{'yes' if wins == len(pairs) else 'partly' if wins else 'no'} |"
            )
    return "\n".join(out)


def _breadth_targets(rows: list[dict]) -> list[str]:
    """Target rows of the breadth sections: prefill against the default SDPA at L >= 8K (head_dim
    64 and 128), decode at >= 1 GB of KV against the copy bandwidth per head size (best schedule)
    and for MLA, fp8 KV against bf16 KV."""
    out = []
    pre = [
        r
        for r in rows
        if r["section"] == "heads_prefill"
        and r.get("seq_len", 0) >= 8192
        and r.get("head_dim") in (64, 128)
        and r.get("speed_vs_baseline")
    ]
    if pre:
        worst = min(r["speed_vs_baseline"] for r in pre)
        out.append(
            f"| causal prefill >= 0.85 x default SDPA at L >= 8K, head_dim 64 and 128 | min {worst:.2f} over "
            f"{len(pre)} shapes | {'yes' if worst >= 0.85 else 'no'} |"
        )
    best: dict = {}
    for r in rows:
        if (
            r["section"] in ("heads_decode", "mla")
            and r.get("kv_bytes", 0) >= 1e9
            and r.get("frac_of_bw_ceiling")
        ):
            key = (r["kernel"], r.get("head_dim"), r.get("v_head_dim"), r["case"], r["variant"].split()[-1])
            best[key] = max(best.get(key, 0.0), r["frac_of_bw_ceiling"])
    if best:
        cells = ", ".join(
            f"{k[0].replace('attention_', '')} {k[4] if k[1] is None else f'D{k[1]}/{k[2]}'}: {v:.2f}"
            for k, v in sorted(best.items(), key=str)
        )
        worst = min(best.values())
        out.append(
            f"| decode >= 0.85 of copy bandwidth at KV >= 1 GB, every head size and MLA | {cells} | "
            f"{'yes' if worst >= 0.85 else 'no'} |"
        )
    f8 = [r for r in rows if r["section"] == "fp8kv" and r.get("speed_vs_bf16")]
    if f8:
        worst = min(r["speed_vs_bf16"] for r in f8)
        out.append(
            f"| fp8-KV decode >= 1.6 x bf16 KV | min {worst:.2f} over {len(f8)} shapes | "
            f"{'yes' if worst >= 1.6 else 'no'} |"
        )
    return out


SECTIONS = {
    "ceilings": ceilings,
    "check": check,
    "gemm": gemm,
    "prefill": prefill,
    "decode": decode,
    "paged": paged,
    "kv": kv_blocks,
    "sweep": sweep,
    "streamk": streamk,
    "streamk_rounds": streamk_rounds,
    "heads": lambda: breadth.heads(_breadth_row, _bench_replay, QUICK),
    "mla": lambda: breadth.mla(_breadth_row, _bench_replay, QUICK),
    "fp8kv": lambda: breadth.fp8kv(_breadth_row, _bench_replay, QUICK),
}
QUICK_SECTIONS = "ceilings,heads,mla,fp8kv"


def _parse_shapes(text: str, grid: list[tuple[int, int, bool]]) -> list[tuple[int, int, bool]]:
    """The shapes of ``grid`` (batch, KV length, ragged) that ``"B:L[:r],..."`` names, in grid order;
    ``r`` marks a ragged batch."""
    wanted = set()
    for item in text.split(","):
        parts = item.split(":")
        if (
            len(parts) not in (2, 3)
            or not all(x.isdigit() for x in parts[:2])
            or parts[2:] not in ([], ["r"])
        ):
            raise ValueError(f"{item!r} is not B:L or B:L:r")
        wanted.add((int(parts[0]), int(parts[1]), parts[2:] == ["r"]))
    chosen = [sh for sh in grid if sh in wanted]
    if not chosen:
        raise ValueError(f"none of {text!r} is in the grid")
    return chosen


def _parse_layout(text: str) -> tuple[int, int, int]:
    """``"HQ:HKV:D"`` -> (query heads, KV heads, head_dim) for the stream-K rounds: positive
    integers, ``HQ`` a multiple of ``HKV``, ``D`` 64 or 128 (the decode kernels' head sizes)."""
    parts = text.split(":")
    if len(parts) != 3 or not all(x.isdigit() and int(x) > 0 for x in parts):
        raise ValueError(f"{text!r} is not HQ:HKV:D (positive integers)")
    hq, hkv, d = (int(x) for x in parts)
    if hq % hkv:
        raise ValueError(f"{text!r}: {hq} query heads are not a multiple of {hkv} KV heads")
    if d not in (64, 128):
        raise ValueError(f"{text!r}: head_dim must be 64 or 128, got {d}")
    return hq, hkv, d


def _parse_variant(text: str) -> tuple[str, dict]:
    """``"LABEL:NAME=VALUE,NAME=VALUE"`` -> (label, {name: int or bool}); names must be fields of
    ``perfmodel.kernels.DecodeConfig``."""
    label, sep, body = text.partition(":")
    if not sep or not label or not body:
        raise ValueError(f"{text!r} is not LABEL:NAME=VALUE[,NAME=VALUE]")
    flags = {}
    import dataclasses

    fields = {f.name for f in dataclasses.fields(kernels.DecodeConfig)}
    for item in body.split(","):
        name, eq, value = item.partition("=")
        if not eq or name not in fields:
            raise ValueError(f"{item!r}: not NAME=VALUE with NAME a field of kernels.DecodeConfig")
        if value in ("True", "False"):
            flags[name] = value == "True"
        elif value.lstrip("-").isdigit():
            flags[name] = int(value)
        else:
            raise ValueError(f"{item!r}: the value must be an integer, True or False")
    return label, flags


def main() -> int:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument(
        "--sections", default=None, help=f"default: all ({','.join(SECTIONS)}); with --quick {QUICK_SECTIONS}"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="heads, mla, fp8kv: a few shapes each (about a minute with the ceilings)",
    )
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="print the targets table of result files")
    ap.add_argument(
        "--main-only",
        action="store_true",
        help="streamk, streamk_rounds: also time each decode schedule's first kernel alone",
    )
    ap.add_argument(
        "--shapes",
        metavar="B:L[:r],...",
        help="streamk_rounds: only these (batch, KV length[, ragged]) shapes of the grid",
    )
    ap.add_argument(
        "--layout",
        metavar="HQ:HKV:D",
        help="streamk_rounds: query heads, KV heads and head_dim of every shape (default 32:8:128)",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:NAME=VALUE[,NAME=VALUE]",
        help="streamk_rounds: also replay both schedules captured with these kernels.DecodeConfig "
        "settings (integer or True/False values); repeatable",
    )
    args = ap.parse_args()
    try:
        STREAMK_ROUND_VARIANTS.extend(_parse_variant(v) for v in args.variant)
    except ValueError as e:
        print(f"error: --variant: {e}", file=sys.stderr)
        return 2
    if args.layout:
        global STREAMK_LAYOUT
        try:
            STREAMK_LAYOUT = _parse_layout(args.layout)
        except ValueError as e:
            print(f"error: --layout: {e}", file=sys.stderr)
            return 2
    if args.shapes:
        try:
            STREAMK_SHAPES[:] = _parse_shapes(args.shapes, STREAMK_SHAPES)
        except ValueError as e:
            print(f"error: --shapes: {e}", file=sys.stderr)
            return 2
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if not torch.cuda.is_available():
        print("error: no CUDA device; this benchmark needs a GPU", file=sys.stderr)
        return 2
    OUT = Path(args.out)
    global QUICK
    QUICK = args.quick
    sections = args.sections or (QUICK_SECTIONS if args.quick else ",".join(SECTIONS))
    if args.main_only:
        global STREAMK_MAIN_ONLY
        STREAMK_MAIN_ONLY = True
    INFO["env"] = gpu_env()
    print(INFO["env"], flush=True)
    INFO["quick"] = QUICK
    for name in sections.split(","):
        if name not in SECTIONS:
            print(f"error: unknown section {name!r}; choose from {list(SECTIONS)}", file=sys.stderr)
            return 2
        t0 = time.time()
        try:
            SECTIONS[name]()
        except Exception as e:  # noqa: BLE001 -- record the failure, keep the other sections
            import traceback

            traceback.print_exc()
            INFO.setdefault("section_errors", {})[name] = repr(e)
        INFO.setdefault("section_wall_s", {})[name] = time.time() - t0
        print(f"== section {name} took {time.time() - t0:.1f} s", flush=True)
        torch.cuda.empty_cache()
        write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
