"""Compile the attention kernels at every head size for Hopper (sm_90) without a GPU: registers,
spills and shared memory of each configuration the wrappers launch.

The general decode kernel (``kernels/_decode_general.py``: head sizes 80, 96, 192/128, 256, fp8
caches, MLA's latent, flat and paged) with :func:`perfmodel.decode_schedule.general_tile`'s tiles,
its merge kernel, and the prefill kernel with every autotuner configuration its head size is
offered (``attention_prefill.configs_for_head``). A configuration whose dynamic shared memory
exceeds an H100's 227 KiB is one the autotuner skips on the GPU; ``STACK`` > 0 is a register
spill. Each line also counts PTX instructions (:data:`PTX_COUNTED`): asynchronous copies, which show
which loads the software pipeline took, and the fp8 conversions::

    python benchmarks/attention_ptx.py [--only PREFIX]

Needs triton with its CUDA backend (the compiler only; no device).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: an H100's shared memory per block (227 KiB)
H100_SHARED_BYTES = 232448


def _compile(fn, types: dict, constants: dict, warps: int, stages: int):
    """``fn`` compiled for sm_90 with pointers and ``s_*`` strides (and tuple elements) divisible by 16,
    as the launcher's arguments are specialised."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = fn.arg_names
    sig = {n: "constexpr" if n in constants else types.get(n, "i32") for n in names}
    attrs = {}
    for i, n in enumerate(names):
        t = sig[n]
        if isinstance(t, tuple):
            attrs.update({(i, j): [["tt.divisibility", 16]] for j in range(len(t))})
        elif t.startswith("*") or n.startswith("s_"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in constants.items()}, attrs=attrs)
    return triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages)
    )


def configurations():
    """``(name, kernel, types, constants, warps, stages)`` of every configuration compiled."""
    from perfmodel.kernels import _decode_general as dg
    from perfmodel.kernels._common import next_pow2, split_head_dim
    from perfmodel import decode_schedule as ds

    ap = sys.modules["perfmodel.kernels.attention_prefill"]
    for d, dv, group, kv, mla, paged in (
        (80, 80, 4, "bf16", False, False),
        (96, 96, 4, "bf16", False, True),
        (192, 128, 1, "bf16", False, False),
        (256, 256, 4, "bf16", False, False),
        (256, 256, 4, "bf16", False, True),
        (128, 128, 4, "fp8e4nv", False, False),
        (128, 128, 4, "fp8e4nv", False, True),
        (576, 512, 16, "bf16", True, True),
        (576, 512, 128, "fp8e4nv", True, True),
    ):
        a, b = split_head_dim(d)
        g, n, warps, stages = ds.general_tile(d, dv, group, mla, paged)
        types = {
            "Q": "*bf16",
            "q_strides": ("i32", "i32"),
            "K": f"*{kv}",
            "k_lay": ("i32",) * 3,
            "V": f"*{kv}",
            "v_lay": ("i32",) * 3,
            "BT": "*i32",
            "KV_LENS": "*i32",
            "K_SCALE": "*fp32",
            "V_SCALE": "*fp32",
            "PO": "*fp32",
            "PL": "*fp32",
            "qk_scale": "fp32",
            "PAGE_SIZE": "i32",
            "s_btb": "i32",
        }
        c = dict(
            HEAD_DIM=a,
            HEAD_DIM_B=b,
            D_B=d - a,
            HEAD_DIM_V=max(16, next_pow2(dv)),
            DV=dv,
            BLOCK_G=g,
            BLOCK_N=n,
            PAGED=paged,
            V_FROM_K=mla,
            SCALED=kv != "bf16",
            PRECISION="tf32",
            UPCAST=False,
            F16=kv != "bf16",
        )
        name = f"decode_{'mla_' if mla else ''}d{d}_dv{dv}_g{group}_{kv}_p{int(paged)}"
        yield name, dg._split_kernel, types, c, warps, stages
        if c["F16"] and not paged and not mla:  # the same with bf16 products: the conversions they cost
            yield f"{name}_bf16_products", dg._split_kernel, types, dict(c, F16=False), warps, stages
    for dv in (80, 128, 256, 512):
        types = {"PO": "*fp32", "PL": "*fp32", "Out": "*bf16"}
        c = dict(HEAD_DIM_V=next_pow2(dv), DV=dv, BLOCK_S=16)
        yield f"merge_dv{dv}", dg._merge_kernel, types, c, 4, 2
    types = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16", "qk_scale": "fp32"}
    for d, dv in ((64, 64), (80, 80), (96, 96), (128, 128), (192, 128), (256, 256)):
        a, b = split_head_dim(d)
        base = dict(
            HEAD_DIM=a,
            HEAD_DIM_B=b,
            D_B=d - a,
            HEAD_DIM_V=next_pow2(dv),
            DV=dv,
            CAUSAL=True,
            PRECISION="tf32",
            UPCAST=False,
        )
        for cfg in ap.configs_for_head(ap._GPU_CONFIGS + ap._WIDE_GPU_CONFIGS, {}, **base):
            m, n = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
            yield (
                f"prefill_d{d}_dv{dv}_m{m}_n{n}_w{cfg.num_warps}_s{cfg.num_stages}",
                ap._prefill_kernel,
                types,
                dict(base, **cfg.kwargs),
                cfg.num_warps,
                cfg.num_stages,
            )


#: PTX instructions counted per configuration: asynchronous global-to-shared copies (the loads the
#: software pipeline took), fp8 e4m3 -> fp16 conversions and fp16 -> bf16 conversions
PTX_COUNTED = {"cp_async": "cp.async.", "cvt_e4m3": "cvt.rn.f16x2.e4m3x2", "cvt_bf16_f16": "cvt.bf16.f16"}


def ptx_counts(ptx: str) -> dict[str, int]:
    """Occurrences of each :data:`PTX_COUNTED` instruction in a kernel's PTX (inline assembly included)."""
    return {key: ptx.count(text) for key, text in PTX_COUNTED.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only", default="", metavar="PREFIX", help="compile only the configurations named PREFIX..."
    )
    args = ap.parse_args()
    from perfmodel import kernels  # noqa: F401  (registers kernels.attention_prefill)
    from decode_ptx import resources

    n = 0
    for name, fn, types, constants, warps, stages in configurations():
        if not name.startswith(args.only):
            continue
        k = _compile(fn, types, constants, warps, stages)
        shared = k.metadata.shared
        note = (
            "  exceeds an H100's shared memory (skipped by the autotuner)"
            if shared > H100_SHARED_BYTES
            else ""
        )
        counts = " ".join(f"{key}={n}" for key, n in ptx_counts(k.asm["ptx"]).items())
        print(f"{name}: {resources(k.asm['cubin'])} dynamic_shared_bytes={shared} {counts}{note}", flush=True)
        n += 1
    if n == 0:
        print(f"error: no configuration is named {args.only}...", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
