"""GPU check of stream-K with phantom tiles (``_STREAM_K_PHANTOM``) against split-KV and a float64
reference, at the ragged shapes of the stream-K grid and a few more, both merge paths. Needs ``stream-k-phantom-v2.patch`` applied (v1 has no ragged grid); argument: the
JSON file to write."""
import json
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))  # the repository root

import kernels
from kernels.reference import attention_decode_ref

mod = sys.modules["kernels.attention_decode"]
rows = []
for bsz, length in [(2, 16384), (8, 4096), (1, 4096), (4, 65536), (16, 16384), (5, 3000), (3, 777)]:
    g = torch.Generator(device="cuda").manual_seed(bsz * 1000 + length)
    lens = torch.randint(1, length + 1, (bsz,), device="cuda", generator=g, dtype=torch.int32)
    lens[0] = length
    q = torch.randn(bsz, 32, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(bsz, 8, length, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    ref = attention_decode_ref(q, k, v, lens).double()
    for phantom in (1, 2, 3, 8):
        for small, fused in ((16, None), (32, None), (16, True), (16, False)):
            mod._STREAM_K_PHANTOM, mod._STREAM_K_SMALL_TILES_PER_SM, mod._STREAM_K_FUSED = phantom, small, fused
            for _ in range(3):  # the fused counters must be left at zero between calls
                o = kernels.attention_decode(q, k, v, lens, schedule="stream_k").double()
            err = float((o - ref).norm() / ref.norm())
            rows.append(dict(batch=bsz, kv_len=length, phantom=phantom, small=small, fused=str(fused), rel_err=err))
mod._STREAM_K_PHANTOM, mod._STREAM_K_SMALL_TILES_PER_SM, mod._STREAM_K_FUSED = 0, 16, None
worst = max(r["rel_err"] for r in rows)
print(f"phantom check: {len(rows)} configurations, largest relative error {worst:.2e}",
      "PASS" if worst < 1e-2 else "FAIL")
json.dump(rows, open(sys.argv[1], "w"), indent=1)
