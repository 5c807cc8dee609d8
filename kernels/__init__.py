"""Triton kernels whose measured run times validate the analytical model.

Public API (each wrapper checks its inputs and raises a ValueError naming the argument):

* :func:`matmul` -- tiled GEMM (fp16/bf16/fp32/fp8), persistent variant for small M
* :func:`attention_prefill` -- causal GQA flash attention forward
* :func:`attention_decode` -- one-token attention, split-KV or stream-K schedule (settings in
  :class:`DecodeConfig`; the schedules' rules in :mod:`perfmodel.decode_schedule`)
* :func:`attention_decode_paged` -- the same over a paged KV cache
* :func:`attention_decode_mla` -- MLA decode (DeepSeek-V2/V3, absorbed) over a paged latent cache

The attention kernels take head sizes 16 to 256, a value head of its own size, and (decode) an
fp8 e4m3 KV cache with float32 scales.
* :func:`gather_kv_blocks`, :func:`scatter_kv_blocks` -- KV block moves for swapping
* :func:`rope_qkv_cache` -- RoPE on the new queries and keys with the KV append, in one kernel
* :func:`moe_align` -- a MoE layer's token-expert pairs sorted by expert, by counting
* :func:`moe_combine` -- a MoE layer's expert outputs weighted, summed and put back in token order

Each kernel module also exposes ``flops(op)`` and ``bytes_moved(op)`` for op descriptors of the
analytical core's schema; plain PyTorch references live in :mod:`perfmodel.kernels.reference`.
"""

from ._common import KernelInputError
from .attention_decode import DecodeConfig, DecodeSchedule, attention_decode
from .attention_decode_mla import attention_decode_mla
from .attention_decode_paged import attention_decode_paged
from .attention_prefill import attention_prefill
from .kv_blocks import gather_kv_blocks, scatter_kv_blocks
from .matmul import matmul
from .moe import moe_align, moe_combine
from .rope import rope_qkv_cache

__all__ = [
    "DecodeConfig",
    "DecodeSchedule",
    "KernelInputError",
    "attention_decode",
    "attention_decode_mla",
    "attention_decode_paged",
    "attention_prefill",
    "gather_kv_blocks",
    "matmul",
    "moe_align",
    "moe_combine",
    "rope_qkv_cache",
    "scatter_kv_blocks",
]
