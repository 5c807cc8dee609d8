"""GPU correctness of the attention kernels alone (no GEMM autotuning, so it runs in about a minute).

Causal and non-causal prefill (head_dim 64 and 128, GQA 1/4/7, odd lengths), decode with
split-KV and with stream-K, its merge in the kernel and in the reduction kernel
(``DecodeConfig.fused_merge``), ragged and
uniform lengths, default and forced program counts, and both schedules over paged caches (pages
of 16 and 64 tokens in a shuffled order), against float64 references of
``perfmodel.kernels.reference``: relative norm error below 1e-2 (bf16 inputs).

With ``--breadth`` only the other head sizes, fp8 caches and MLA decode are checked (prefill
at head_dim 32, 80, 96, 192/128 and 256; decode contiguous and paged at 80, 96, 192/128 and 256;
fp8 e4m3 caches per kv head and per tensor against the reference on the dequantised cache; MLA
decode at 512 + 64 with 16 and 128 heads, bf16 and fp8 latent).

    python benchmarks/attention_check.py [--out DIR] [--breadth]

Prints one line per configuration and PASS/FAIL; exits 1 on a failure, 2 without a CUDA device;
writes ``attention_check.json`` under ``--out`` (default ``$OUT`` or the current folder).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _err(o, r) -> float:
    return float((o.double() - r.double()).norm() / r.double().norm())


def run_checks() -> dict[str, float]:
    import torch

    from perfmodel import kernels
    from perfmodel.kernels import reference as ref

    d = "cuda"
    res: dict[str, float] = {}
    for hd in (64, 128):
        for b, hq, hkv, n in ((2, 28, 4, 999), (1, 32, 8, 4096), (3, 8, 8, 130)):
            q = torch.randn(b, hq, n, hd, device=d, dtype=torch.bfloat16)
            k = torch.randn(b, hkv, n, hd, device=d, dtype=torch.bfloat16)
            v = torch.randn(b, hkv, n, hd, device=d, dtype=torch.bfloat16)
            for causal in (True, False):
                res[f"prefill D={hd} B={b} Hq={hq} Hkv={hkv} L={n} causal={causal}"] = _err(
                    kernels.attention_prefill(q, k, v, causal), ref.attention_prefill_ref(q, k, v, causal)
                )
    for hd in (64, 128):
        q = torch.randn(7, 32, hd, device=d, dtype=torch.bfloat16)
        kc = torch.randn(7, 8, 5000, hd, device=d, dtype=torch.bfloat16)
        vc = torch.randn(7, 8, 5000, hd, device=d, dtype=torch.bfloat16)
        for tag, lens in (("ragged", [1, 5000, 17, 2048, 999, 64, 65]), ("uniform", [5000] * 7)):
            kl = torch.tensor(lens, device=d, dtype=torch.int32)
            r64 = ref.attention_decode_ref(q, kc, vc, kl)
            for ns in (None, 1, 37, 264, 3000):
                res[f"stream_k D={hd} {tag} P={ns}"] = _err(
                    kernels.attention_decode(q, kc, vc, kl, ns, "stream_k"), r64
                )
            res[f"split_kv D={hd} {tag}"] = _err(
                kernels.attention_decode(q, kc, vc, kl, None, "split_kv"), r64
            )
            # the merge forced either way: in the kernel beyond one wave, by the reduction kernel within one
            for fused, counts in ((True, (264, 3000)), (False, (1, 37))):
                cfg = kernels.DecodeConfig(fused_merge=fused)
                for ns in counts:
                    res[f"stream_k fused={fused} D={hd} {tag} P={ns}"] = _err(
                        kernels.attention_decode(q, kc, vc, kl, ns, "stream_k", config=cfg), r64
                    )
    for ps in (16, 64):
        for hd in (64, 128):
            for sched in ("split_kv", "stream_k"):
                res[f"paged {sched} page={ps} D={hd} ragged"] = paged_error(d, ps, hd, sched)
    return res


def breadth_checks() -> dict[str, float]:
    """Relative errors of the head sizes, fp8 caches and MLA decode against float64 references."""
    import torch

    from perfmodel import kernels
    from perfmodel.kernels import reference as ref

    d = "cuda"
    bf = dict(device=d, dtype=torch.bfloat16)
    res: dict[str, float] = {}
    for hd, dv in ((32, 32), (80, 80), (96, 96), (192, 128), (256, 256)):
        q = torch.randn(2, 28, 999, hd, **bf)
        k = torch.randn(2, 4, 999, hd, **bf)
        v = torch.randn(2, 4, 999, dv, **bf)
        for causal in (True, False):
            res[f"prefill D={hd} Dv={dv} B=2 Hq=28 Hkv=4 L=999 causal={causal}"] = _err(
                kernels.attention_prefill(q, k, v, causal), ref.attention_prefill_ref(q, k, v, causal)
            )
    lens = torch.tensor([1, 5000, 17, 2048, 999, 64, 65], device=d, dtype=torch.int32)
    for hd, dv in ((80, 80), (96, 96), (192, 128), (256, 256)):
        q = torch.randn(7, 32, hd, **bf)
        kc = torch.randn(7, 8, 5000, hd, **bf)
        vc = torch.randn(7, 8, 5000, dv, **bf)
        want = ref.attention_decode_ref(q, kc, vc, lens)
        for sched in ("split_kv", "stream_k") if hd == dv == 256 else ("split_kv",):
            res[f"{sched} D={hd} Dv={dv} ragged"] = _err(
                kernels.attention_decode(q, kc, vc, lens, schedule=sched), want
            )
    for hd in (80, 96):
        res[f"paged split_kv page=16 D={hd} ragged"] = paged_error(d, 16, hd, "split_kv")
    for hd, per_head in ((128, True), (96, False), (64, True)):
        q = torch.randn(7, 32, hd, **bf)
        kq, ks = ref.quantize_fp8(torch.randn(7, 8, 5000, hd, **bf), per_head)
        vq, vs = ref.quantize_fp8(torch.randn(7, 8, 5000, hd, **bf), per_head)
        want = ref.attention_decode_ref(
            q, ref.dequantize_fp8_ref(kq, ks), ref.dequantize_fp8_ref(vq, vs), lens
        )
        res[f"fp8 e4m3 D={hd} per_head={per_head} ragged"] = _err(
            kernels.attention_decode(q, kq, vq, lens, k_scale=ks, v_scale=vs), want
        )
    for heads in (16, 128):
        page, lmax = 64, 3001
        blocks = -(-lmax // page)
        kl = torch.tensor([1, 3001, 17, 1024, 999], device=d, dtype=torch.int32)
        table = torch.randperm(5 * blocks + 3, device=d)[: 5 * blocks].view(5, blocks).to(torch.int32)
        lat = torch.randn(5 * blocks + 3, page, 576, **bf)
        q = torch.randn(5, heads, 576, **bf)
        scale = 192**-0.5
        res[f"mla bf16 H={heads} page={page} ragged"] = _err(
            kernels.attention_decode_mla(q, lat, table, kl, sm_scale=scale),
            ref.attention_decode_mla_ref(q, lat, table, kl, 512, scale),
        )
        lq, ls = ref.quantize_fp8(lat[:, None], per_head=False)
        res[f"mla fp8 H={heads} page={page} ragged"] = _err(
            kernels.attention_decode_mla(q, lq[:, 0], table, kl, sm_scale=scale, latent_scale=ls),
            ref.attention_decode_mla_ref(q, lq[:, 0].double() * ls.double(), table, kl, 512, scale),
        )
    return res


def paged_error(
    device,
    page_size: int,
    head_dim: int,
    schedule: str,
    batch: int = 5,
    kv_heads: int = 4,
    q_heads: int = 16,
    max_len: int = 3001,
    lens=(1, 3001, 17, 1024, 999),
) -> float:
    """Relative error of ``perfmodel.kernels.attention_decode_paged`` against the float64 reference of the
    same cache laid out contiguously: random pages in a shuffled order, ragged lengths."""
    import torch

    from perfmodel import kernels
    from perfmodel.kernels import reference as ref

    blocks = -(-max_len // page_size)
    q = torch.randn(batch, q_heads, head_dim, device=device, dtype=torch.bfloat16)
    kc = torch.randn(batch, kv_heads, blocks * page_size, head_dim, device=device, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    table = torch.randperm(batch * blocks, device=device).view(batch, blocks).to(torch.int32)

    def pages(c):
        out = torch.empty((batch * blocks, kv_heads, page_size, head_dim), device=device, dtype=c.dtype)
        out[table.reshape(-1).long()] = (
            c.view(batch, kv_heads, blocks, page_size, head_dim)
            .permute(0, 2, 1, 3, 4)
            .reshape(-1, kv_heads, page_size, head_dim)
        )
        return out

    kl = torch.tensor(lens[:batch], device=device, dtype=torch.int32)
    want = ref.attention_decode_ref(q, kc[:, :, :max_len], vc[:, :, :max_len], kl)
    return _err(kernels.attention_decode_paged(q, pages(kc), pages(vc), table, kl, schedule=schedule), want)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument(
        "--breadth", action="store_true", help="only the other head sizes, fp8 caches and MLA decode"
    )
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("error: needs a CUDA device", file=sys.stderr)
        return 2
    res = breadth_checks() if args.breadth else {**run_checks(), **breadth_checks()}
    bad = {k: v for k, v in res.items() if not v < 1e-2}
    from perfmodel.validation.run import driver_version

    meta = {
        "gpu": torch.cuda.get_device_name(),
        "driver": driver_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:  # pragma: no cover - triton comes with torch on the devices
        pass
    for k, v in res.items():
        print(f"  {k:60s} {v:.2e}")
    print(
        f"{meta['gpu']}: {len(res)} configurations, largest relative error {max(res.values()):.2e}: "
        + ("PASS" if not bad else f"FAIL {bad}")
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "attention_check.json").write_text(
        json.dumps({**meta, "rel_err": res, "passed": not bad}, indent=1)
    )
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
