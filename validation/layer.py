"""A plain PyTorch Llama-style decoder layer, and the small kernels it launches.

The same functions build the layer and the stand-alone elementwise measurements, so that a
layer is exactly the sum of what was measured op by op (``perfmodel.ops.decoder_layer_parts``):
RMSNorm, fused QKV GEMM, KV append, SDPA with GQA (PyTorch's own backend choice, or restricted to
flash: :class:`Sdpa`), O GEMM + residual, RMSNorm, fused gate/up GEMM, SiLU*mul, down GEMM + residual.  No RoPE (the op schema's layer has none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def rmsnorm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), w, EPS)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    g, u = gate_up.chunk(2, dim=-1)
    return F.silu(g) * u


def residual_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x + y


# MoE routing, the steps between the router GEMM and the grouped GEMMs and after them.  The
# whole-model runner's MoE block and the stand-alone ``moe_*`` measurements run these same
# functions; the model prices them as the ops of ``perfmodel.layers.moe_routing_ops``.


def moe_route(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``moe_route``: routing weights and expert ids ``[T, k]`` of router ``logits [T, E]``: the top-k
    logits and a softmax over them (= the softmax over all experts, kept top-k, renormalised)."""
    top, idx = logits.topk(top_k, dim=-1, sorted=False)
    return top.softmax(dim=-1), idx


def moe_align(idx: torch.Tensor, num_experts: int):
    """``moe_align``: the token-expert pairs of ``idx [T, k]`` sorted by expert, by counting
    (:func:`perfmodel.kernels.moe_align`): the grouped GEMMs' int32 cumulative row offsets per
    expert, the token of each sorted pair, and where each token's pairs landed ``[T, k]``."""
    from perfmodel.kernels import moe_align as align  # here: a CPU run sets Triton's interpreter first

    return align(idx, num_experts)


def moe_permute(hn: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """``moe_permute``: the rows of ``hn [T, hidden]`` in sorted-pair order ``[T * k, hidden]``."""
    return hn.index_select(0, token)


def split_qkv(qkv: torch.Tensor, batch: int, q_len: int, hq: int, hkv: int, d: int):
    """Views ``[B, H, L, D]`` of q, k, v inside the fused QKV output ``[B*L, (hq+2hkv)*d]``."""
    t = qkv.view(batch, q_len, hq + 2 * hkv, d)
    q = t[:, :, :hq].transpose(1, 2)
    k = t[:, :, hq : hq + hkv].transpose(1, 2)
    v = t[:, :, hq + hkv :].transpose(1, 2)
    return q, k, v


def kv_append(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: int
) -> None:
    """Write ``k, v`` ``[B, Hkv, L, D]`` into the caches at positions ``pos .. pos+L-1``."""
    n = k.shape[2]
    k_cache[:, :, pos : pos + n].copy_(k)
    v_cache[:, :, pos : pos + n].copy_(v)


class Sdpa:
    """``scaled_dot_product_attention`` with GQA as an attention implementation runs it.

    ``impl`` ``"sdpa"``: PyTorch's own backend choice (no restriction; cuDNN for prefill on Hopper
    with torch 2.11). ``"flash2"``: restricted to the flash backend (FlashAttention-2); a shape
    flash refuses raises instead of silently running another kernel. ``backend`` is the impl that ran.
    """

    def __init__(self, impl: str = "sdpa") -> None:
        if impl not in ("sdpa", "flash2"):
            raise ValueError(f"Sdpa impl must be sdpa or flash2, got {impl!r}")
        self.impl = impl
        self.backend = impl

    def __call__(self, q, k, v, causal: bool) -> torch.Tensor:
        gqa = q.shape[1] != k.shape[1]
        if self.impl == "flash2":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)


class DecoderLayerBench:
    """One layer with random weights and a KV cache of ``kv_len`` tokens.

    Prefill: ``q_len == kv_len`` new tokens, causal attention over them.  Decode: one new token
    per sequence appended at position ``kv_len - 1``, attention over the whole cache.
    """

    def __init__(
        self,
        batch: int,
        q_len: int,
        kv_len: int,
        hidden: int,
        intermediate: int,
        q_heads: int,
        kv_heads: int,
        head_dim: int,
        device,
        dtype=torch.bfloat16,
        attention_impl: str = "sdpa",
    ) -> None:
        g = torch.Generator(device=device).manual_seed(0)

        def rnd(*shape, scale=1.0):
            return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * scale).to(dtype)

        h, i, d = hidden, intermediate, head_dim
        self.shape = (batch, q_len, kv_len, q_heads, kv_heads, d)
        self.w_qkv = rnd(h, (q_heads + 2 * kv_heads) * d, scale=h**-0.5)
        self.w_o = rnd(q_heads * d, h, scale=(q_heads * d) ** -0.5)
        self.w_gu = rnd(h, 2 * i, scale=h**-0.5)
        self.w_down = rnd(i, h, scale=i**-0.5)
        self.n1 = rnd(h, scale=0.1) + 1
        self.n2 = rnd(h, scale=0.1) + 1
        self.k_cache = rnd(batch, kv_heads, kv_len, d)
        self.v_cache = rnd(batch, kv_heads, kv_len, d)
        self.x = rnd(batch * q_len, h)
        self.sdpa = Sdpa(attention_impl)

    def __call__(self) -> torch.Tensor:
        b, n, kv, hq, hkv, d = self.shape
        x = self.x
        hn = rmsnorm(x, self.n1)
        qkv = hn @ self.w_qkv
        q, k, v = split_qkv(qkv, b, n, hq, hkv, d)
        kv_append(self.k_cache, self.v_cache, k, v, kv - n)
        if n == kv:  # prefill: attend over the new tokens
            a = self.sdpa(q, k, v, causal=True)
        else:  # decode: one query over the whole cache
            a = self.sdpa(q, self.k_cache, self.v_cache, causal=False)
        a = a.transpose(1, 2).reshape(b * n, hq * d)
        h1 = residual_add(x, a @ self.w_o)
        gu = rmsnorm(h1, self.n2) @ self.w_gu
        return residual_add(h1, silu_mul(gu) @ self.w_down)
