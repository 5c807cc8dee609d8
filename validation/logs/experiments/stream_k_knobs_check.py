"""GPU check of stream-K decode under module settings of kernels.attention_decode (bf16 against a
float64 reference), given as the benchmark's ``--variant`` takes them.

Usage: python stream_k_knobs_check.py "LABEL:NAME=VALUE[,NAME=VALUE]" ...
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import kernels  # noqa: E402
from benchmarks import kernels as bench  # noqa: E402  (the benchmark script, as a module)
from kernels.reference import attention_decode_ref  # noqa: E402

mod = sys.modules["kernels.attention_decode"]


def check(label: str) -> float:
    """Largest relative error of stream-K over a few uniform and ragged shapes (Hq 32, Hkv 8, D 128)."""
    worst = 0.0
    for B, L, ragged in ((1, 1024, False), (2, 16384, True), (3, 5000, True), (8, 4096, True), (4, 4096, False)):
        q = torch.randn(B, 32, 128, device="cuda", dtype=torch.bfloat16)
        kc = torch.randn(B, 8, L, 128, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn(B, 8, L, 128, device="cuda", dtype=torch.bfloat16)
        lens = torch.randint(1, L + 1, (B,), device="cuda") if ragged else torch.full((B,), L, device="cuda")
        lens[0] = L
        if ragged and B > 1:
            lens[1] = 1
        o = kernels.attention_decode(q, kc, vc, lens, schedule="stream_k")
        r = attention_decode_ref(q.double(), kc.double(), vc.double(), lens)
        err = float((o.double() - r).norm() / r.norm())
        worst = max(worst, err)
        print(f"{label:10s} B={B} L={L} ragged={ragged}: rel err {err:.2e}", flush=True)
    return worst


torch.manual_seed(0)
worst = check("default")
for text in sys.argv[1:]:
    label, flags = bench._parse_variant(text)
    worst = max(worst, bench._with_flags(mod, flags, lambda: check(label)))
print(f"worst relative error {worst:.2e}: {'PASS' if worst < 1e-2 else 'FAIL'}")
sys.exit(0 if worst < 1e-2 else 1)
