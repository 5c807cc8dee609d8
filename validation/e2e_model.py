"""A whole Llama-style model with random weights, built from a ``perfmodel`` :class:`ModelSpec`.

The runner of :mod:`perfmodel.validation.e2e` times it.  It is the forward pass that
``perfmodel.layers.model_ops`` prices, as serving engines run it: embedding; per layer RMSNorm,
one fused QKV GEMM (with the q/k/v bias where the spec has one), RoPE (rotate-half on q and k) and
the KV append into a preallocated cache ``[B, Hkv, max_len, D]`` in one kernel
(:func:`perfmodel.kernels.rope_qkv_cache`, as engines fuse them; ``rope="torch"``: a dozen
elementwise PyTorch calls instead), attention through
``F.scaled_dot_product_attention`` with PyTorch's default backend choice, O projection +
residual, RMSNorm, fused gate/up GEMM, SiLU*mul, down GEMM + residual (or the MoE block);
final norm and LM head on the last position only.  Weights are bf16, drawn from a normal
distribution scaled by ``1/sqrt(fan_in)``.

MoE layers: router GEMM, top-k softmax routing, tokens sorted by expert and gathered, every expert of the
layer run as grouped GEMMs (``torch._grouped_mm`` with int32 cumulative offsets) where the
device runs it, else one GEMM pair per expert (:attr:`E2EModel.moe_path` says which).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from perfmodel.models import MlpKind, ModelSpec
from perfmodel.validation.layer import moe_align, moe_permute, moe_route, rmsnorm, silu_mul

#: RoPE base; the time does not depend on it
ROPE_THETA = 10_000.0
#: how RoPE and the KV append run (:class:`E2EModel`'s ``rope``)
ROPE_PATHS = ("fused", "torch")


class UnsupportedModel(ValueError):
    """A spec the runner does not build (MLA, GPT-style MLPs, sliding windows, MLP biases)."""


def check_supported(spec: ModelSpec) -> None:
    """Raise :class:`UnsupportedModel` naming what the e2e runner does not build."""
    why = []
    if spec.mla is not None:
        why.append("multi-head latent attention")
    if spec.mlp is not MlpKind.GATED or spec.linear_bias or spec.learned_positions:
        why.append("a GPT-style (non-gated) MLP")
    if spec.mlp_bias:
        why.append("MLP biases")
    if spec.sliding_window > 0:
        why.append(
            f"a sliding window of {spec.sliding_window} tokens (set use_sliding_window: false to price full "
            "attention)"
        )
    if spec.moe is not None and spec.moe.router_bias:
        why.append("a router bias")
    if why:
        raise UnsupportedModel(f"{spec.name}: the e2e runner does not build {', '.join(why)}")


def grouped_mm_works(x: torch.Tensor, w: torch.Tensor) -> tuple[bool, str]:
    """Whether ``torch._grouped_mm`` runs ``x [T, K]`` against ``w [E, K, N]`` here, and why not."""
    fn = getattr(torch, "_grouped_mm", None)
    if fn is None:
        return False, "torch has no _grouped_mm"
    e = w.shape[0]
    t = x.shape[0]
    offs = torch.linspace(t / e, t, e, device=x.device).round().to(torch.int32)
    try:
        fn(x, w, offs=offs)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return True, ""
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class E2EModel:
    """Random-weight model of ``spec`` on ``device`` (all of ``spec.num_layers`` layers).

    Parameters
    ----------
    spec : ModelSpec
        The architecture (cut layers beforehand with ``dataclasses.replace``).
    device : torch.device
    moe_path : str
        ``auto`` (grouped GEMMs where they run, else the per-expert loop), ``grouped`` or ``loop``.
    rope : str
        ``fused`` (RoPE and the KV append in one kernel, as engines run them) or ``torch``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        device,
        dtype=torch.bfloat16,
        seed: int = 0,
        moe_path: str = "auto",
        rope: str = "fused",
    ) -> None:
        check_supported(spec)
        if rope not in ROPE_PATHS:
            raise ValueError(f"rope must be one of {', '.join(ROPE_PATHS)}, got {rope!r}")
        #: ``fused``: RoPE and the KV append in one Triton kernel; ``torch``: PyTorch elementwise calls
        self.rope = rope
        self._rope_kernel = None
        if rope == "fused":
            from perfmodel.kernels import rope_qkv_cache

            self._rope_kernel = rope_qkv_cache
        self.spec, self.device, self.dtype = spec, torch.device(device), dtype
        gen = torch.Generator(device=self.device).manual_seed(seed)
        s = spec
        h, d, hq, hkv = s.hidden, s.head_dim, s.q_heads, s.kv_heads

        def w(*shape, fan_in=None):
            std = (fan_in if fan_in is not None else shape[-2]) ** -0.5
            return torch.empty(*shape, device=self.device, dtype=dtype).normal_(0.0, std, generator=gen)

        def norm():
            return torch.empty(h, device=self.device, dtype=dtype).normal_(1.0, 0.1, generator=gen)

        def dense(inter):
            return {"w_gu": w(h, 2 * inter), "w_down": w(inter, h)}

        self.embed = torch.empty(s.vocab, h, device=self.device, dtype=dtype).normal_(0.0, 1.0, generator=gen)
        self.layers: list[dict] = []
        for i in range(s.num_layers):
            lay = {"n1": norm(), "w_qkv": w(h, (hq + 2 * hkv) * d), "w_o": w(hq * d, h), "n2": norm()}
            if s.attention_bias:
                lay["b_qkv"] = w((hq + 2 * hkv) * d, fan_in=h)
            if s.output_bias:
                lay["b_o"] = w(h, fan_in=hq * d)
            if s.is_moe_layer(i):
                m = s.moe
                lay["w_router"] = w(h, m.num_experts)
                lay["experts"] = {
                    "w_gu": w(m.num_experts, h, 2 * m.expert_intermediate),
                    "w_down": w(m.num_experts, m.expert_intermediate, h),
                }
                if m.shared_experts:
                    lay["shared"] = dense(m.shared_experts * m.shared_intermediate)
            else:
                lay["mlp"] = dense(s.intermediate)
            self.layers.append(lay)
        self.final_norm = norm()
        self.lm_head = self.embed.t() if s.tied_embeddings else w(h, s.vocab)
        self.moe_path, self.moe_note = "", ""
        self._combine = None
        if s.moe is not None:  # imported here: a CPU run sets Triton's interpreter first
            from perfmodel.kernels import moe_combine

            self._combine = moe_combine
        if s.moe is not None:
            self._choose_moe_path(moe_path)
        self._cos = self._sin = None
        self.probe = False  # when set, layer 0 keeps its attention call in ``attention_call``
        self.attention_call = None
        #: tensor-parallel shards (:mod:`perfmodel.validation.e2e_parallel`): the all-reduce of a row-parallel
        #: GEMM's partial output (after the O projection and the MLP), in place; None on one GPU
        self.tp_reduce = None

    # ------------------------------------------------------------------ sizes
    def tensors(self) -> list[torch.Tensor]:
        """Every weight tensor once (a tied LM head counted with the embedding)."""
        out = [self.embed, self.final_norm] + ([] if self.spec.tied_embeddings else [self.lm_head])

        def walk(x):
            if isinstance(x, dict):
                for v in x.values():
                    walk(v)
            else:
                out.append(x)

        for lay in self.layers:
            walk(lay)
        return out

    def param_count(self) -> int:
        """Parameters held, to compare with ``ModelSpec.param_count()``."""
        return sum(t.numel() for t in self.tensors())

    def new_cache(self, batch: int, max_len: int, fill: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One ``(k, v)`` pair ``[batch, Hkv, max_len, D]`` per layer; ``fill`` draws random values
        (decode reads them; a prefill overwrites what it reads)."""
        s = self.spec
        cache = []
        for _ in range(s.num_layers):
            pair = []
            for _ in range(2):
                t = torch.empty(batch, s.kv_heads, max_len, s.head_dim, device=self.device, dtype=self.dtype)
                pair.append(t.normal_() if fill else t)
            cache.append(tuple(pair))
        return cache

    def ensure_rope(self, max_len: int) -> None:
        """Cos/sin tables for positions ``0 .. max_len - 1`` (built outside any graph capture)."""
        if self._cos is not None and self._cos.shape[0] >= max_len:
            return
        d = self.spec.head_dim
        inv = 1.0 / (ROPE_THETA ** (torch.arange(0, d, 2, device=self.device, dtype=torch.float32) / d))
        ang = torch.outer(torch.arange(max_len, device=self.device, dtype=torch.float32), inv)
        ang = torch.cat((ang, ang), dim=-1)
        # the fused kernel reads float32 tables; the PyTorch path multiplies in the model's dtype
        tab_dtype = torch.float32 if self.rope == "fused" else self.dtype
        self._cos, self._sin = ang.cos().to(tab_dtype).contiguous(), ang.sin().to(tab_dtype).contiguous()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        ids: torch.Tensor,
        cache,
        pos: int,
        kv_len: int,
        hidden: torch.Tensor | None = None,
        head: bool = True,
    ) -> torch.Tensor:
        """Logits ``[B, vocab]`` of the last position of ``ids [B, n]`` placed at ``pos .. pos+n-1``.

        ``pos == 0`` with ``n > 1``: prefill, causal attention over the new tokens.  Otherwise
        (decode): the queries attend to the cache's first ``kv_len`` positions.  A pipeline stage
        passes the previous stage's residual stream ``hidden [B * n, hidden]`` instead of embedding
        ``ids`` (then only their shape counts), and ``head=False`` returns its own residual stream.
        """
        s = self.spec
        b, n = ids.shape
        h, d, hq, hkv = s.hidden, s.head_dim, s.q_heads, s.kv_heads
        self.ensure_rope(pos + n)
        cos = self._cos[pos : pos + n].view(1, n, 1, d)
        sin = self._sin[pos : pos + n].view(1, n, 1, d)
        fused = self._rope_kernel is not None
        gqa = hq != hkv
        prefill = pos == 0 and n > 1
        x = F.embedding(ids, self.embed).view(b * n, h) if hidden is None else hidden
        for i, lay in enumerate(self.layers):
            hn = rmsnorm(x, lay["n1"])
            qkv = torch.addmm(lay["b_qkv"], hn, lay["w_qkv"]) if "b_qkv" in lay else hn @ lay["w_qkv"]
            t = qkv.view(b, n, hq + 2 * hkv, d)
            kc, vc = cache[i]
            if fused:  # one kernel: rotated q out, rotated k and v into the cache
                q = self._rope_kernel(t, self._cos, self._sin, kc, vc, pos, hq, hkv)
                k, v = kc[:, :, pos : pos + n], vc[:, :, pos : pos + n]
            else:
                q = _rope(t[:, :, :hq], cos, sin).transpose(1, 2)
                k = _rope(t[:, :, hq : hq + hkv], cos, sin).transpose(1, 2)
                v = t[:, :, hq + hkv :].transpose(1, 2)
                kc[:, :, pos : pos + n].copy_(k)
                vc[:, :, pos : pos + n].copy_(v)
            if prefill:
                args = (q, k, v)
                kw = {"is_causal": True}
            else:
                args = (q, kc[:, :, :kv_len], vc[:, :, :kv_len])
                kw = {}
            if gqa:
                kw["enable_gqa"] = True
            if i == 0 and self.probe:
                self.attention_call = (args, dict(kw))
            a = F.scaled_dot_product_attention(*args, **kw)
            a = a.transpose(1, 2).reshape(b * n, hq * d)
            o = torch.addmm(lay["b_o"], a, lay["w_o"]) if "b_o" in lay else a @ lay["w_o"]
            if self.tp_reduce is not None:
                o = self.tp_reduce(o)
            x = x + o
            del qkv, t, q, k, v, a, o, args  # the MLP's workspace reuses theirs, as in an engine
            hn = rmsnorm(x, lay["n2"])
            y = self._moe(hn, lay) if "experts" in lay else _mlp(hn, lay["mlp"])
            if self.tp_reduce is not None:
                y = self.tp_reduce(y)
            x = x + y
        if not head:
            return x
        last = x.view(b, n, h)[:, -1]
        return rmsnorm(last, self.final_norm) @ self.lm_head

    __call__ = forward

    def attention_only(self) -> None:
        """Run layer 0's last recorded attention call again (for reading its kernel names)."""
        args, kw = self.attention_call
        F.scaled_dot_product_attention(*args, **kw)

    # ------------------------------------------------------------------ MoE
    def _choose_moe_path(self, wanted: str) -> None:
        if wanted not in ("auto", "grouped", "loop"):
            raise ValueError(f"moe_path must be auto, grouped or loop, got {wanted!r}")
        if wanted == "loop":
            self.moe_path, self.moe_note = "expert_loop", "asked for"
            return
        lay = next(lay for lay in self.layers if "experts" in lay)
        probe = torch.empty(64, self.spec.hidden, device=self.device, dtype=self.dtype).normal_()
        ok, why = grouped_mm_works(probe, lay["experts"]["w_gu"])
        if not ok and wanted == "grouped":
            raise RuntimeError(f"torch._grouped_mm does not run here: {why}")
        self.moe_path, self.moe_note = ("grouped_mm", "") if ok else ("expert_loop", why)

    def _moe(self, hn: torch.Tensor, lay: dict) -> torch.Tensor:
        """Routed experts (+ shared ones) of ``hn [T, hidden]`` in the steps engines run:
        top-k of the router logits, softmax over the k kept, the token-expert pairs sorted by expert by
        counting (:func:`perfmodel.kernels.moe_align`), rows gathered in that order,
        the two grouped GEMMs around the activation, and the weighted sum over each token's k expert
        rows back in token order (:func:`perfmodel.kernels.moe_combine`)."""
        m = self.spec.moe
        weights, idx = moe_route(hn @ lay["w_router"], m.top_k)
        offs, token, pos = moe_align(idx, m.num_experts)
        xs = moe_permute(hn, token)
        ex = lay["experts"]
        if self.moe_path == "grouped_mm":
            y = torch._grouped_mm(
                silu_mul(torch._grouped_mm(xs, ex["w_gu"], offs=offs)), ex["w_down"], offs=offs
            )
        else:
            counts = torch.diff(offs, prepend=offs.new_zeros(1)).tolist()
            parts, start = [], 0
            for e, c in enumerate(counts):
                if c:
                    parts.append(silu_mul(xs[start : start + c] @ ex["w_gu"][e]) @ ex["w_down"][e])
                start += c
            y = torch.cat(parts)
        out = self._combine(y, pos, weights)
        if "shared" in lay:
            out = out + _mlp(hn, lay["shared"])
        return out


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE of ``x [B, n, H, D]`` with tables ``[1, n, 1, D]``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _mlp(hn: torch.Tensor, w: dict) -> torch.Tensor:
    return silu_mul(hn @ w["w_gu"]) @ w["w_down"]
