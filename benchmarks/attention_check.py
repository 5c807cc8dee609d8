"""GPU correctness of the attention kernels alone (no GEMM autotuning, so it runs in about a minute).

Causal and non-causal prefill (head_dim 64 and 128, GQA 1/4/7, odd lengths), decode with
split-KV and with stream-K, its merge in the kernel and in the reduction kernel
(``DecodeConfig.fused_merge``), ragged and
uniform lengths, default and forced program counts, and both schedules over paged caches (pages
of 16 and 64 tokens in a shuffled order), against float64 references of
``kernels.reference``: relative norm error below 1e-2 (bf16 inputs).

    python benchmarks/attention_check.py [--out DIR]

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

    import kernels
    from kernels import reference as ref

    d = "cuda"
    res: dict[str, float] = {}
    for hd in (64, 128):
        for b, hq, hkv, n in ((2, 28, 4, 999), (1, 32, 8, 4096), (3, 8, 8, 130)):
            q = torch.randn(b, hq, n, hd, device=d, dtype=torch.bfloat16)
            k = torch.randn(b, hkv, n, hd, device=d, dtype=torch.bfloat16)
            v = torch.randn(b, hkv, n, hd, device=d, dtype=torch.bfloat16)
            for causal in (True, False):
                res[f"prefill D={hd} B={b} Hq={hq} Hkv={hkv} L={n} causal={causal}"] = _err(
                    kernels.attention_prefill(q, k, v, causal), ref.attention_prefill_ref(q, k, v, causal))
    for hd in (64, 128):
        q = torch.randn(7, 32, hd, device=d, dtype=torch.bfloat16)
        kc = torch.randn(7, 8, 5000, hd, device=d, dtype=torch.bfloat16)
        vc = torch.randn(7, 8, 5000, hd, device=d, dtype=torch.bfloat16)
        for tag, lens in (("ragged", [1, 5000, 17, 2048, 999, 64, 65]), ("uniform", [5000] * 7)):
            kl = torch.tensor(lens, device=d, dtype=torch.int32)
            r64 = ref.attention_decode_ref(q, kc, vc, kl)
            for ns in (None, 1, 37, 264, 3000):
                res[f"stream_k D={hd} {tag} P={ns}"] = _err(kernels.attention_decode(q, kc, vc, kl, ns, "stream_k"), r64)
            res[f"split_kv D={hd} {tag}"] = _err(kernels.attention_decode(q, kc, vc, kl, None, "split_kv"), r64)
            # the merge forced either way: in the kernel beyond one wave, by the reduction kernel within one
            for fused, counts in ((True, (264, 3000)), (False, (1, 37))):
                cfg = kernels.DecodeConfig(fused_merge=fused)
                for ns in counts:
                    res[f"stream_k fused={fused} D={hd} {tag} P={ns}"] = _err(
                        kernels.attention_decode(q, kc, vc, kl, ns, "stream_k", config=cfg), r64)
    for ps in (16, 64):
        for hd in (64, 128):
            for sched in ("split_kv", "stream_k"):
                res[f"paged {sched} page={ps} D={hd} ragged"] = paged_error(d, ps, hd, sched)
    return res


def paged_error(device, page_size: int, head_dim: int, schedule: str, batch: int = 5, kv_heads: int = 4,
                q_heads: int = 16, max_len: int = 3001, lens=(1, 3001, 17, 1024, 999)) -> float:
    """Relative error of ``kernels.attention_decode_paged`` against the float64 reference of the
    same cache laid out contiguously: random pages in a shuffled order, ragged lengths."""
    import torch

    import kernels
    from kernels import reference as ref

    blocks = -(-max_len // page_size)
    q = torch.randn(batch, q_heads, head_dim, device=device, dtype=torch.bfloat16)
    kc = torch.randn(batch, kv_heads, blocks * page_size, head_dim, device=device, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    table = torch.randperm(batch * blocks, device=device).view(batch, blocks).to(torch.int32)

    def pages(c):
        out = torch.empty((batch * blocks, kv_heads, page_size, head_dim), device=device, dtype=c.dtype)
        out[table.reshape(-1).long()] = (c.view(batch, kv_heads, blocks, page_size, head_dim)
                                         .permute(0, 2, 1, 3, 4).reshape(-1, kv_heads, page_size, head_dim))
        return out

    kl = torch.tensor(lens[:batch], device=device, dtype=torch.int32)
    want = ref.attention_decode_ref(q, kc[:, :, :max_len], vc[:, :, :max_len], kl)
    return _err(kernels.attention_decode_paged(q, pages(kc), pages(vc), table, kl, schedule=schedule), want)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("error: needs a CUDA device", file=sys.stderr)
        return 2
    res = run_checks()
    bad = {k: v for k, v in res.items() if not v < 1e-2}
    from validation.run import driver_version

    meta = {"gpu": torch.cuda.get_device_name(), "driver": driver_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:  # pragma: no cover - triton comes with torch on the devices
        pass
    for k, v in res.items():
        print(f"  {k:60s} {v:.2e}")
    print(f"{meta['gpu']}: {len(res)} configurations, largest relative error {max(res.values()):.2e}: "
          + ("PASS" if not bad else f"FAIL {bad}"))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "attention_check.json").write_text(json.dumps({**meta, "rel_err": res, "passed": not bad}, indent=1))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
