"""Which SDPA backend PyTorch picks for a non-causal prefill block, and how fast each backend is.

Run on a GPU: ``python benchmarks/sdpa_backends.py``.  Prints one row per (shape, backend) with the
median time (triton.testing.do_bench) and the achieved TFLOP/s (4 * heads * L^2 * head_dim FLOPs).
"""

from __future__ import annotations

import datetime
import subprocess

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench


def main() -> None:
    drv = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"gpu={torch.cuda.get_device_name()} driver={drv} torch={torch.__version__} "
        f"date={datetime.date.today().isoformat()}"
    )
    backends = {
        "default": None,
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    print(f"{'hq/hkv':>7} {'L':>6} {'backend':>10} {'ms':>9} {'TFLOP/s':>8}")
    for hq, hkv in ((32, 32), (32, 8)):
        for L in (2048, 8192, 16384):
            q = torch.randn(1, hq, L, 128, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(1, hkv, L, 128, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(1, hkv, L, 128, device="cuda", dtype=torch.bfloat16)
            flops = 4.0 * hq * L * L * 128
            for name, be in backends.items():

                def f():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=hq != hkv)

                try:
                    if be is None:
                        ms = do_bench(f, warmup=50, rep=200, return_mode="median")
                    else:
                        with sdpa_kernel(be):
                            ms = do_bench(f, warmup=50, rep=200, return_mode="median")
                    print(f"{hq}/{hkv:>3} {L:>6} {name:>10} {ms:>9.3f} {flops / ms / 1e9:>8.0f}")
                except RuntimeError as exc:
                    print(f"{hq}/{hkv:>3} {L:>6} {name:>10} unavailable ({str(exc).splitlines()[0][:60]})")


if __name__ == "__main__":
    main()
