"""What the suite measures: shape families per op class, as plain data (no torch here).

Each :class:`Case` names the section that builds it, the implementation, the shape family
(held-out splits are by family), the op descriptor (the core's schema) and the arguments the
builder needs.  ``cases(size)`` lists them for ``size`` in {"full", "quick", "smoke"}; "smoke" is
tiny and runs on a CPU (``--dry-run``).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfmodel.ops import (
    Attention,
    DecoderLayer,
    Elementwise,
    Gemm,
    GroupedGemm,
    MemLocation,
    Memcpy,
    Phase,
    op_to_dict,
)
from perfmodel.layers import moe_routing_ops

BF16 = 2  # bytes per element of every activation and weight here


@dataclass(frozen=True)
class ModelShape:
    """One Llama-style decoder layer's dimensions (public configs)."""

    name: str
    hidden: int
    intermediate: int
    q_heads: int
    kv_heads: int
    head_dim: int


# Dimensions as in each model's Hugging Face config.json.
MODELS = (
    ModelShape("llama-3.2-1b", 2048, 8192, 32, 8, 64),
    ModelShape("llama-3.2-3b", 3072, 8192, 24, 8, 128),
    ModelShape("qwen2.5-7b", 3584, 18944, 28, 4, 128),
    ModelShape("llama-3.1-8b", 4096, 14336, 32, 8, 128),
    ModelShape("llama-3.1-70b", 8192, 28672, 64, 8, 128),
)
SMOKE_MODEL = ModelShape("smoke", 64, 128, 4, 2, 16)


@dataclass(frozen=True)
class Case:
    section: str  # gemm, elementwise, memcpy, attention, layer, grouped_gemm
    impl: str
    family: str
    desc: dict[str, Any]
    args: dict[str, Any] = field(default_factory=dict)


def _gemm_families(size: str) -> list[tuple[int, int]]:
    if size == "smoke":
        return [(48, 32), (40, 24)]
    fams = []
    for m in MODELS:
        d = m.head_dim
        fams += [
            ((m.q_heads + 2 * m.kv_heads) * d, m.hidden),
            (m.hidden, m.q_heads * d),
            (2 * m.intermediate, m.hidden),
            (m.hidden, m.intermediate),
        ]
    # odd sizes: wave/tile edges and non-powers of two
    fams += [(4352, 4096), (5000, 3000), (1000, 1000), (12288, 768), (256, 4096), (2304, 1536), (6000, 6000)]
    seen, out = set(), []
    for f in fams:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def _gemm_ms(size: str) -> list[int]:
    if size == "smoke":
        return [1, 5, 17]
    ms = [1, 2, 4, 8, 16, 32, 64, 100, 128, 256, 384, 512, 1000, 1024, 2048, 3000, 4096, 8192, 16384]
    return ms if size == "full" else [1, 4, 16, 64, 100, 256, 512, 1000, 2048, 4096, 8192, 16384]


def _gemm_grid(fams, ms) -> list[Case]:
    """One cuBLAS GEMM case per (N, K) family and M, up to 20 TFLOP and 6 GB of operands."""
    out = []
    for n, k in fams:
        for m in ms:
            if m * n * k * 2 > 2.0e13 or (m * k + k * n + m * n) * BF16 > 6e9:
                continue
            out.append(
                Case("gemm", "cublas", f"gemm/n{n}_k{k}", op_to_dict(Gemm(m, n, k)), {"m": m, "n": n, "k": k})
            )
    return out


def gemm_cases(size: str) -> list[Case]:
    return _gemm_grid(_gemm_families(size), _gemm_ms(size))


def with_gemm_ms(todo: list[Case], ms) -> list[Case]:
    """``todo`` with its GEMM cases replaced by every (N, K) family it has at the M values ``ms``
    (the same size limits as the sets; other cases are kept, in order, before the GEMMs)."""
    ms = sorted({int(m) for m in ms})
    if not ms or min(ms) < 1:
        raise ValueError(f"GEMM M values must be positive integers, got {ms}")
    fams = list(dict.fromkeys((c.args["n"], c.args["k"]) for c in todo if c.section == "gemm"))
    return [c for c in todo if c.section != "gemm"] + _gemm_grid(fams, ms)


def _tokens(size: str) -> list[int]:
    if size == "smoke":
        return [1, 7]
    return [1, 8, 32, 128, 512, 2048, 8192, 16384] if size == "full" else [1, 8, 64, 512, 2048, 8192, 16384]


def _norm_and_add_cases(tokens: int, hidden: int) -> list[Case]:
    """RMSNorm and residual add over ``tokens`` rows of ``hidden`` bf16 values."""
    act = tokens * hidden * BF16
    return [
        Case(
            "elementwise",
            "torch",
            f"elementwise/rmsnorm/h{hidden}",
            op_to_dict(Elementwise("rmsnorm", bytes=2 * act + hidden * BF16, flops=4 * tokens * hidden)),
            {"name": "rmsnorm", "tokens": tokens, "hidden": hidden},
        ),
        Case(
            "elementwise",
            "torch",
            f"elementwise/residual_add/h{hidden}",
            op_to_dict(Elementwise("residual_add", bytes=3 * act, flops=tokens * hidden)),
            {"name": "residual_add", "tokens": tokens, "hidden": hidden},
        ),
    ]


def elementwise_cases(size: str) -> list[Case]:
    models = [SMOKE_MODEL] if size == "smoke" else list(MODELS)
    out = []
    for t in _tokens(size):
        for m in models:
            h, a = m.hidden, BF16
            out += _norm_and_add_cases(t, h)
            i = m.intermediate
            if t * i * 3 * a <= 4e9:
                out.append(
                    Case(
                        "elementwise",
                        "torch",
                        f"elementwise/silu_mul/i{i}",
                        op_to_dict(Elementwise("silu_mul", bytes=3 * t * i * a, flops=5 * t * i)),
                        {"name": "silu_mul", "tokens": t, "intermediate": i},
                    )
                )
            # KV append as the layer does it: one sequence of t tokens (prefill) or t sequences of 1 (decode)
            shapes = [(t, 1, "decode")] + ([(1, t, "prefill")] if t > 1 else [])
            for batch, q_len, tag in shapes:
                b = 2 * 2 * t * m.kv_heads * m.head_dim * a
                out.append(
                    Case(
                        "elementwise",
                        "torch",
                        f"elementwise/kv_append/{tag}_q{m.q_heads}_hkv{m.kv_heads}_d{m.head_dim}",
                        op_to_dict(Elementwise("kv_append", bytes=b)),
                        {
                            "name": "kv_append",
                            "batch": batch,
                            "q_len": q_len,
                            "q_heads": m.q_heads,
                            "kv_heads": m.kv_heads,
                            "head_dim": m.head_dim,
                        },
                    )
                )
    return out + moe_routing_cases(size)


#: MoE routing shapes of the stand-alone ``moe_*`` measurements (experts, top-k, hidden): public MoE
#: models' shapes (Qwen1.5-MoE-A2.7B, DeepSeek-V2-Lite, DeepSeek-V2, DeepSeek-V3, a 16-expert top-2
#: one), none of the whole-model validation's
MOE_SHAPES = ((60, 4, 2048), (64, 6, 2048), (160, 6, 5120), (256, 8, 7168), (16, 2, 5120))
SMOKE_MOE_SHAPES = ((8, 2, 64),)


def moe_routing_cases(size: str) -> list[Case]:
    """The MoE routing kernels (:func:`perfmodel.layers.moe_routing_ops`) over tokens and shapes."""
    out = []
    for t in _tokens(size):
        for e, k, h in SMOKE_MOE_SHAPES if size == "smoke" else MOE_SHAPES:
            if 2 * t * k * h * BF16 > 4e9:
                continue
            for step, op in moe_routing_ops(t, e, k, h, BF16).items():
                out.append(
                    Case(
                        "elementwise",
                        "torch",
                        f"elementwise/{op.name}/e{e}_k{k}_h{h}",
                        op_to_dict(op),
                        {"name": op.name, "tokens": t, "experts": e, "top_k": k, "hidden": h},
                    )
                )
    return out


def memcpy_cases(size: str) -> list[Case]:
    """Copies of every direction, 4 KB .. 1 GB (two sizes for the smoke run)."""
    return _copy_cases([4096, 65536] if size == "smoke" else [4096 * 4**i for i in range(0, 10)])


def _copy_cases(sizes) -> list[Case]:
    """One case per copy direction and size (up to 1 GiB)."""
    out = []
    dev, pin, page = MemLocation.DEVICE, MemLocation.HOST_PINNED, MemLocation.HOST_PAGEABLE
    for src, dst, tag in (
        (dev, dev, "d2d"),
        (pin, dev, "h2d"),
        (dev, pin, "d2h"),
        (page, dev, "h2d_pageable"),
        (dev, page, "d2h_pageable"),
    ):
        for b in sizes:
            if "pageable" in tag and b > 1.1e9:
                continue
            out.append(
                Case(
                    "memcpy",
                    "copy_engine",
                    f"memcpy_{tag}/{b}",
                    op_to_dict(Memcpy(b, src, dst)),
                    {"bytes": b, "src": src.value, "dst": dst.value},
                )
            )
    return out


#: PyTorch SDPA as measured: its own backend choice (``sdpa``) and restricted to flash (``flash2``)
SDPA_IMPLS = ("sdpa", "flash2")
#: batch-1 causal prefill is timed up to this many tokens (longer batches are capped at 32K tokens in all)
LONG_PREFILL_TOKENS = 65536

_ATTN_HEADS = ((32, 8, 128), (64, 8, 128), (28, 4, 128), (32, 8, 64), (32, 32, 128), (24, 8, 128))


def attention_cases(size: str) -> list[Case]:
    out = []
    heads = ((4, 2, 64), (4, 4, 64)) if size == "smoke" else _ATTN_HEADS
    lens = [16, 40] if size == "smoke" else [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    for hq, hkv, d in heads:
        for batch in (1, 4):
            for n in lens:
                if batch * n > 32768 and not (batch == 1 and n <= LONG_PREFILL_TOKENS):
                    continue
                op = Attention(Phase.PREFILL, batch, n, n, hq, hkv, d, causal=True)
                args = {
                    "batch": batch,
                    "q_len": n,
                    "kv_len": n,
                    "q_heads": hq,
                    "kv_heads": hkv,
                    "head_dim": d,
                }
                for impl in SDPA_IMPLS:
                    out.append(
                        Case(
                            "attention", impl, f"attention_prefill/hq{hq}_hkv{hkv}_d{d}", op_to_dict(op), args
                        )
                    )
                if n > 16384:  # the Triton kernel's long prompts: timed up to 16K
                    continue
                if batch == 1 and (hq, hkv, d) in ((32, 8, 128), (32, 8, 64), (64, 8, 128), (4, 2, 64)):
                    out.append(
                        Case(
                            "attention",
                            "triton",
                            f"attention_prefill/hq{hq}_hkv{hkv}_d{d}",
                            op_to_dict(op),
                            args,
                        )
                    )
    batches = [1, 3] if size == "smoke" else [1, 4, 16, 64, 128]
    kv_lens = [8, 33] if size == "smoke" else [256, 1024, 4096, 16384, 65536]
    for hq, hkv, d in heads:
        for batch in batches:
            for kv in kv_lens:
                kv_bytes = 2 * batch * hkv * kv * d * BF16
                if kv_bytes > 6e9:
                    continue
                op = Attention(Phase.DECODE, batch, 1, kv, hq, hkv, d, causal=True)
                args = {
                    "batch": batch,
                    "q_len": 1,
                    "kv_len": kv,
                    "q_heads": hq,
                    "kv_heads": hkv,
                    "head_dim": d,
                }
                fam = f"attention_decode/hq{hq}_hkv{hkv}_d{d}"
                for impl in SDPA_IMPLS:
                    out.append(Case("attention", impl, fam, op_to_dict(op), args))
                if (hq, hkv, d) in ((32, 8, 128), (64, 8, 128), (32, 8, 64), (4, 2, 64), (28, 4, 128)):
                    out.append(Case("attention", "split_kv", fam, op_to_dict(op), args))
                    if batch * hkv <= 16384:
                        out.append(Case("attention", "stream_k", fam, op_to_dict(op), args))
    return out


def layer_cases(size: str) -> list[Case]:
    models = [SMOKE_MODEL] if size == "smoke" else list(MODELS)
    prefill = [(1, 9), (2, 16)] if size == "smoke" else [(1, 128), (1, 512), (1, 2048), (1, 8192), (4, 1024)]
    decode = (
        [(1, 8), (3, 20)]
        if size == "smoke"
        else [(b, kv) for b in (1, 8, 32, 128) for kv in (512, 4096, 16384)]
    )
    out = []
    for m in models:
        base = dict(
            hidden=m.hidden,
            intermediate=m.intermediate,
            q_heads=m.q_heads,
            kv_heads=m.kv_heads,
            head_dim=m.head_dim,
        )
        for batch, n in prefill:
            op = DecoderLayer(Phase.PREFILL, batch, n, n, **base)
            out.append(
                Case(
                    "layer",
                    "cuda_graph_layer",
                    f"decoder_layer/{m.name}",
                    op_to_dict(op),
                    {"batch": batch, "q_len": n, "kv_len": n, **base},
                )
            )
        for batch, kv in decode:
            if 2 * batch * m.kv_heads * kv * m.head_dim * BF16 > 6e9:
                continue
            op = DecoderLayer(Phase.DECODE, batch, 1, kv, **base)
            out.append(
                Case(
                    "layer",
                    "cuda_graph_layer",
                    f"decoder_layer/{m.name}",
                    op_to_dict(op),
                    {"batch": batch, "q_len": 1, "kv_len": kv, **base},
                )
            )
    return out


@dataclass(frozen=True)
class MoeShape:
    """One MoE layer's routed experts (public configs): experts, top-k, hidden, expert intermediate."""

    name: str
    experts: int
    top_k: int
    hidden: int
    inter: int


# As in each model's Hugging Face config.json (num_local_experts / num_experts / n_routed_experts,
# num_experts_per_tok, hidden_size, intermediate_size / moe_intermediate_size).
MOE_MODELS = (
    MoeShape("mixtral-8x7b", 8, 2, 4096, 14336),
    MoeShape("qwen3-30b-a3b", 128, 8, 2048, 768),
    MoeShape("deepseek-v2-lite", 64, 6, 2048, 1408),
    MoeShape("deepseek-v3", 256, 8, 7168, 2048),
)
SMOKE_MOE = MoeShape("smoke", 8, 2, 64, 32)
#: Zipf exponent of the skewed routing: expert popularity falls as 1 / rank ** s (a few hot experts)
ZIPF_S = 1.2
#: largest touched-expert weight tensor a case allocates (bytes)
GROUPED_WEIGHT_CAP = 6e9


@functools.lru_cache(maxsize=512)
def route_counts(tokens: int, experts: int, top_k: int, routing: str, seed: int = 0) -> tuple[int, ...]:
    """Rows each expert receives when ``tokens`` tokens each pick ``top_k`` distinct experts.

    ``uniform``: every expert equally likely; ``zipf``: expert popularity ``1 / rank ** ZIPF_S`` over
    a random ranking of the experts (Gumbel top-k: sampling ``top_k`` without replacement in
    proportion to popularity).  Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    if routing == "uniform":
        logits = np.zeros(experts)
    elif routing == "zipf":
        logits = -ZIPF_S * np.log(1.0 + rng.permutation(experts))
    else:
        raise ValueError(f"routing must be uniform or zipf, got {routing!r}")
    g = logits[None, :] + rng.gumbel(size=(tokens, experts))
    picks = np.argpartition(-g, top_k - 1, axis=1)[:, :top_k]
    return tuple(int(c) for c in np.bincount(picks.ravel(), minlength=experts))


def _grouped_case(shape: MoeShape, proj: str, tokens: int, routing: str, impl: str) -> Case | None:
    n, k = (2 * shape.inter, shape.hidden) if proj == "gate_up" else (shape.hidden, shape.inter)
    seed = zlib.crc32(f"{shape.name}/{tokens}/{routing}".encode())
    counts = [c for c in route_counts(tokens, shape.experts, shape.top_k, routing, seed) if c > 0]
    if len(counts) * n * k * BF16 > GROUPED_WEIGHT_CAP:
        return None
    op = GroupedGemm(len(counts), tokens * shape.top_k, n, k)
    return Case(
        "grouped_gemm",
        impl,
        f"grouped_gemm/{shape.name}_{proj}_{routing}",
        op_to_dict(op),
        {
            "counts": counts,
            "n": n,
            "k": k,
            "tokens": tokens,
            "experts": shape.experts,
            "top_k": shape.top_k,
            "routing": routing,
            "model": shape.name,
            "proj": proj,
        },
    )


def grouped_gemm_cases(size: str) -> list[Case]:
    """MoE expert GEMMs as one ``torch._grouped_mm`` over the touched experts (impl ``grouped_mm``):
    gate/up and down of each MoE shape, decode (1..256 tokens) and prefill (1K..16K tokens), uniform and
    Zipf routing; plus the per-expert loop (impl ``loop``, one matmul per touched expert) for a few."""
    if size == "smoke":
        shapes, decode, prefill = (SMOKE_MOE,), (1, 7), (40,)
        loops = ((SMOKE_MOE, "gate_up", 7),)
    elif size == "quick":
        shapes, decode, prefill = MOE_MODELS, (1, 8, 64, 256), (2048, 8192)
        loops = tuple((MOE_MODELS[i], "gate_up", t) for i in (0, 1) for t in (1, 16, 256))
    else:
        shapes, decode, prefill = (
            MOE_MODELS,
            (1, 2, 4, 8, 16, 32, 64, 128, 256),
            (1024, 2048, 4096, 8192, 16384),
        )
        loops = tuple(
            (MOE_MODELS[i], p, t) for i in (0, 1, 2) for p in ("gate_up", "down") for t in (1, 4, 16, 64, 256)
        )
    out = []
    for shape in shapes:
        for proj in ("gate_up", "down"):
            for routing in ("uniform", "zipf"):
                for t in (*decode, *prefill):
                    out.append(_grouped_case(shape, proj, t, routing, "grouped_mm"))
    out += [_grouped_case(shape, proj, t, "uniform", "loop") for shape, proj, t in loops]
    return [c for c in out if c is not None]


SECTIONS = ("gemm", "elementwise", "memcpy", "layer", "attention", "grouped_gemm")
_LAST = ("triton", "split_kv", "stream_k")  # Triton kernels compile and autotune: measured last
_BUILDERS = {
    "gemm": gemm_cases,
    "elementwise": elementwise_cases,
    "memcpy": memcpy_cases,
    "attention": attention_cases,
    "layer": layer_cases,
    "grouped_gemm": grouped_gemm_cases,
}


# Coverage set (``--extra``): families the quick set lacks, so that held-out scores cover them.
_EXTRA_GEMM = (
    (1024, 1024),
    (1536, 1536),
    (2048, 2048),
    (3000, 1000),
    (1000, 4000),
    (5120, 5120),
    (13824, 5120),
    (5120, 13824),
    (7168, 7168),
    (1280, 5120),
    (640, 2560),
    (1200, 1200),
    (3072, 3072),
    (6144, 1536),
    (8192, 8192),
)
_EXTRA_MS = (1, 16, 64, 256, 1000, 2048, 4096, 16384)
_EXTRA_HIDDEN = (1024, 1536, 5120, 6144, 8192, 12288, 16384)
_EXTRA_ATTN = ((16, 4, 64), (32, 32, 64), (64, 8, 64), (12, 4, 64))
_EXTRA_COPY = tuple(8192 * 4**i for i in range(0, 9)) + (3_000_000, 100_000_000)


def extra_cases(size: str = "quick") -> list[Case]:
    """The coverage set: more GEMM (N, K) families, norms over hidden 1024..16384, head_dim-64
    attention layouts, copy sizes between the quick set's (``python -m perfmodel.validation.run --extra``)."""
    if size == "smoke":
        return [c for c in cases("smoke", ("gemm",))][:2]
    out = _gemm_grid(_EXTRA_GEMM, _EXTRA_MS)
    for t in (1, 8, 64, 512, 2048, 8192, 16384):
        for h in _EXTRA_HIDDEN:
            out += _norm_and_add_cases(t, h)
    out += _copy_cases(_EXTRA_COPY)
    for hq, hkv, d in _EXTRA_ATTN:
        for batch in (1, 4):
            for n in (128, 512, 2048, 8192):
                op = Attention(Phase.PREFILL, batch, n, n, hq, hkv, d, causal=True)
                args = {
                    "batch": batch,
                    "q_len": n,
                    "kv_len": n,
                    "q_heads": hq,
                    "kv_heads": hkv,
                    "head_dim": d,
                }
                fam = f"attention_prefill/hq{hq}_hkv{hkv}_d{d}"
                for impl in SDPA_IMPLS:
                    out.append(Case("attention", impl, fam, op_to_dict(op), args))
                if batch == 1:
                    out.append(Case("attention", "triton", fam, op_to_dict(op), args))
        for batch in (1, 4, 16, 64, 128):
            for kv in (256, 1024, 4096, 16384, 65536):
                if 2 * batch * hkv * kv * d * BF16 > 6e9:
                    continue
                op = Attention(Phase.DECODE, batch, 1, kv, hq, hkv, d, causal=True)
                args = {
                    "batch": batch,
                    "q_len": 1,
                    "kv_len": kv,
                    "q_heads": hq,
                    "kv_heads": hkv,
                    "head_dim": d,
                }
                fam = f"attention_decode/hq{hq}_hkv{hkv}_d{d}"
                for impl in (*SDPA_IMPLS, "split_kv", "stream_k"):
                    out.append(Case("attention", impl, fam, op_to_dict(op), args))
    order = ("attention", "elementwise", "gemm", "memcpy")  # the scarcest coverage first
    return sorted(out, key=lambda c: order.index(c.section))


NONCAUSAL_HEADS = ((32, 8, 128), (32, 32, 128))
NONCAUSAL_BLOCKS = (256, 512, 1024, 2048, 4096, 8192, 16384)


def noncausal_cases(size: str = "quick") -> list[Case]:
    """Non-causal prefill attention of one query block over one KV block of the same length, as a
    Ring-attention step computes it (``python -m perfmodel.validation.run --noncausal``): SDPA (default and flash) and the
    Triton kernel, heads 32/8 and 32/32, head_dim 128, blocks 256..16384 tokens, batch 1."""
    heads = ((4, 2, 64), (4, 4, 64)) if size == "smoke" else NONCAUSAL_HEADS
    blocks = (16, 40) if size == "smoke" else NONCAUSAL_BLOCKS
    out = []
    for hq, hkv, d in heads:
        fam = f"attention_prefill_noncausal/hq{hq}_hkv{hkv}_d{d}"
        for n in blocks:
            op = Attention(Phase.PREFILL, 1, n, n, hq, hkv, d, causal=False)
            args = {"batch": 1, "q_len": n, "kv_len": n, "q_heads": hq, "kv_heads": hkv, "head_dim": d}
            for impl in (*SDPA_IMPLS, "triton"):
                out.append(Case("attention", impl, fam, op_to_dict(op), args))
    return sorted(out, key=lambda c: c.impl in _LAST)


def cases(size: str = "quick", sections: tuple[str, ...] = SECTIONS) -> list[Case]:
    """All cases of ``sections`` at ``size`` ("full", "quick" or "smoke"), in measuring order."""
    if size not in ("full", "quick", "smoke"):
        raise ValueError(f"size must be full, quick or smoke, got {size!r}")
    out = []
    for s in sections:
        if s not in _BUILDERS:
            raise ValueError(f"unknown section {s!r}; known: {', '.join(SECTIONS)}")
        out += _BUILDERS[s](size)
    return sorted(out, key=lambda c: c.impl in _LAST)
