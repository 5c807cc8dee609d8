"""Split counts of the general decode kernel: the shipped rule against forced counts, on a GPU.

Usage: ``python benchmarks/decode_splits.py [--out DIR] [--splits 4,8,9,12,16] [--cases mla:32:32768,...]``.

Each case is ``KIND:BATCH:KV_LEN`` with KIND ``mla`` (a bf16 latent cache of 576-wide rows in pages of 64, 16
query heads; one program pair per sequence), ``fp8`` (an fp8 e4m3 cache with per-head scales, head_dim 128) or
``d80`` (a bf16 cache, head_dim 80), the last two with 8 kv heads of 4 query heads each (8 pairs per sequence).
Every case runs with the launcher's own split count (``perfmodel.decode_schedule.general_splits``) and with
each count of ``--splits``; times are CUDA events around 20 back-to-back eager calls after 0.3 s of warm-up,
the median of 7, twice for the shipped count (the second read shows how far one timing strays). Prints the
share of the device-copy ceiling (a 2 GiB copy, read plus write) and writes ``decode_splits.json`` under
``--out`` (default ``$OUT`` or the current folder) with the GPU, driver, library versions, date and the
kernels one call launched (``torch.profiler``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._host import gpu_env, no_cuda  # noqa: E402

KINDS = ("mla", "fp8", "d80")
METHOD = "CUDA events around 20 back-to-back eager calls, median of 7, 0.3 s warm-up (burst clocks)"
DEFAULT_CASES = (
    "mla:32:32768,mla:8:65536,mla:128:8192,fp8:4:65536,fp8:1:131072,fp8:16:16384,d80:4:65536,d80:32:8192"
)


def parse_cases(text: str) -> list[tuple[str, int, int]]:
    """``KIND:BATCH:KV_LEN`` items, comma-separated; ValueError naming the bad item."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 3 or parts[0] not in KINDS:
            raise ValueError(f"case {item!r} is not KIND:BATCH:KV_LEN with KIND one of {', '.join(KINDS)}")
        try:
            batch, kv_len = int(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"case {item!r}: BATCH and KV_LEN must be integers") from None
        if batch < 1 or kv_len < 64 or (parts[0] == "mla" and kv_len % 64):
            raise ValueError(f"case {item!r}: BATCH >= 1 and KV_LEN >= 64 (a multiple of 64 for mla)")
        out.append((parts[0], batch, kv_len))
    return out


def parse_splits(text: str) -> list[int]:
    """Positive split counts, comma-separated; ValueError naming the bad one."""
    out = []
    for item in text.split(","):
        try:
            n = int(item)
        except ValueError:
            raise ValueError(f"split count {item!r} is not an integer") from None
        if n < 1:
            raise ValueError(f"split count {n} must be >= 1")
        out.append(n)
    return out


def _bench(fn, n: int = 20, reps: int = 7) -> float:
    import torch

    t0 = time.time()
    while time.time() - t0 < 0.3:
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3 / n)
    return sorted(ts)[len(ts) // 2]


def _case(kind: str, batch: int, kv_len: int, sms: int):
    """(call taking num_splits, cache bytes, program pairs, shipped split count)."""
    import torch

    import perfmodel.decode_schedule as ds
    from perfmodel import kernels
    from perfmodel.kernels import reference

    dev = "cuda"
    if kind == "mla":
        page = 64
        blocks = kv_len // page
        pool = batch * blocks + 8
        latent = torch.randn(pool, page, 576, device=dev, dtype=torch.bfloat16)
        table = torch.randperm(pool, device=dev)[: batch * blocks].reshape(batch, blocks).int()
        lens = torch.full((batch,), kv_len, device=dev, dtype=torch.int32)
        q = torch.randn(batch, 16, 576, device=dev, dtype=torch.bfloat16)

        def call(ns):
            return kernels.attention_decode_mla(
                q, latent, table, lens, sm_scale=0.07, validate=False, num_splits=ns
            )

        return call, batch * kv_len * 576 * 2, batch, ds.general_splits(batch, sms)
    d, hkv = (128, 8) if kind == "fp8" else (80, 8)
    q = torch.randn(batch, hkv * 4, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(batch, hkv, kv_len, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(batch, hkv, kv_len, d, device=dev, dtype=torch.bfloat16)
    lens = torch.full((batch,), kv_len, device=dev, dtype=torch.int32)
    pairs = batch * hkv
    shipped = ds.general_splits(pairs, sms)
    if kind == "fp8":
        kq, ks = reference.quantize_fp8(k)
        vq, vs = reference.quantize_fp8(v)
        del k, v

        def call(ns):
            return kernels.attention_decode(
                q, kq, vq, lens, validate=False, k_scale=ks, v_scale=vs, num_splits=ns
            )

        return call, 2 * pairs * kv_len * d, pairs, shipped

    def call(ns):
        return kernels.attention_decode(q, k, v, lens, validate=False, num_splits=ns)

    return call, 2 * pairs * kv_len * d * 2, pairs, shipped


def _copy_ceiling() -> float:
    """Bytes per second of a 2 GiB device-to-device copy, read plus write."""
    import torch

    src = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / _bench(lambda: dst.copy_(src), n=5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--cases", default=DEFAULT_CASES, metavar="KIND:BATCH:KV_LEN[,...]")
    ap.add_argument("--splits", default="4,8,9,12,16", metavar="N[,N...]")
    args = ap.parse_args(argv)
    try:
        cases, forced = parse_cases(args.cases), parse_splits(args.splits)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    if no_cuda():
        return 2
    from perfmodel.validation.bench import kernel_names

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    copy_bytes_per_s = _copy_ceiling()
    rows = []
    for kind, batch, kv_len in cases:
        call, nbytes, pairs, shipped = _case(kind, batch, kv_len, sms)
        first, second = _bench(lambda: call(None)), _bench(lambda: call(None))
        times = {n: _bench(lambda n=n: call(n)) for n in forced}
        rows.append(
            {
                "kind": kind,
                "batch": batch,
                "kv_len": kv_len,
                "pairs": pairs,
                "cache_bytes": nbytes,
                "shipped_splits": int(shipped),
                "shipped_s": [first, second],
                "forced_s": {str(n): t for n, t in times.items()},
                "kernels": sorted(set(kernel_names(lambda: call(None)))),
            }
        )
        torch.cuda.empty_cache()
        best = min(first, second)
        forced_txt = "  ".join(f"{n}: {nbytes / t / copy_bytes_per_s:.2f}" for n, t in times.items())
        print(
            f"{kind:4s} B{batch:<4d} L{kv_len:<7d} pairs {pairs:4d}  shipped {int(shipped):3d} splits: "
            f"{nbytes / best / copy_bytes_per_s:.2f} of copy ({first * 1e6:.0f} / {second * 1e6:.0f} us)  "
            f"forced {forced_txt}",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode_splits.json").write_text(
        json.dumps(
            {**gpu_env(), "method": METHOD, "copy_bytes_per_s": copy_bytes_per_s, "rows": rows}, indent=1
        )
        + "\n"
    )
    print(f"copy ceiling {copy_bytes_per_s / 1e9:.0f} GB/s; wrote {out / 'decode_splits.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
