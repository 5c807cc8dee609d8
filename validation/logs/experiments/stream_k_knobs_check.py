"""GPU check of stream-K decode under module settings of kernels.attention_decode (bf16 against a
float64 reference), as the benchmark's ``--variant`` sets them.

Usage: python stream_k_knobs_check.py "LABEL:NAME=VALUE[,NAME=VALUE]" ...
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import kernels  # noqa: E402
from kernels.reference import attention_decode_ref  # noqa: E402

mod = sys.modules["kernels.attention_decode"]


def parse(text):
    label, _, body = text.partition(":")
    flags = {}
    for item in body.split(","):
        name, _, value = item.partition("=")
        assert hasattr(mod, name), name
        flags[name] = (value == "True") if value in ("True", "False") else int(value)
    return label, flags


worst = 0.0
torch.manual_seed(0)
for text in ["default:_STREAM_K_PAIR_PROGRAMS=0"] + sys.argv[1:]:
    label, flags = parse(text)
    saved = {k: getattr(mod, k) for k in flags}
    for k, v in flags.items():
        setattr(mod, k, v)
    try:
        for B, L, ragged in ((1, 1024, False), (2, 16384, True), (3, 5000, True), (8, 4096, True), (4, 4096, False)):
            q = torch.randn(B, 32, 128, device="cuda", dtype=torch.bfloat16)
            kc = torch.randn(B, 8, L, 128, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn(B, 8, L, 128, device="cuda", dtype=torch.bfloat16)
            lens = (torch.randint(1, L + 1, (B,), device="cuda") if ragged else torch.full((B,), L, device="cuda"))
            lens[0] = L
            if ragged and B > 1:
                lens[1] = 1
            o = kernels.attention_decode(q, kc, vc, lens, schedule="stream_k")
            r = attention_decode_ref(q.double(), kc.double(), vc.double(), lens)
            err = float((o.double() - r).norm() / r.norm())
            worst = max(worst, err)
            print(f"{label:10s} B={B} L={L} ragged={ragged}: rel err {err:.2e}", flush=True)
    finally:
        for k, v in saved.items():
            setattr(mod, k, v)
print(f"worst relative error {worst:.2e}: {'PASS' if worst < 1e-2 else 'FAIL'}")
sys.exit(0 if worst < 1e-2 else 1)
