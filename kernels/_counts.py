"""FLOP and byte counts of the kernels, from op descriptors of the analytical core's schema.

Kept independent of the core on purpose: the core computes its own counts and a
cross-check compares the two. Descriptors are plain dicts:

* ``{"op": "gemm", "m", "n", "k", "dtype"}`` (optional ``"out_dtype"``, default ``dtype``)
* ``{"op": "attention", "phase": "prefill" | "decode", "batch", "q_len", "kv_len",
  "q_heads", "kv_heads", "head_dim", "causal", "dtype"}``
* ``{"op": "kv_block_copy", "num_blocks", "kv_heads", "block_size", "head_dim", "dtype"}``
  (one K or V page set; a gather or scatter reads and writes each block once)

``dtype`` strings: ``"fp32"``, ``"bf16"``, ``"fp16"``, ``"fp8"``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._common import KernelInputError

BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


def _get(op: Mapping, key: str, kind: type = int):
    if key not in op:
        raise KernelInputError(f"op: missing key {key!r} in {dict(op)}")
    val = op[key]
    if kind is int:
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise KernelInputError(f"op[{key!r}]: expected a positive integer, got {val!r}")
    elif kind is bool and not isinstance(val, bool):
        raise KernelInputError(f"op[{key!r}]: expected a bool, got {val!r}")
    return val


def _bytes_per_element(op: Mapping, key: str = "dtype") -> int:
    dtype = op.get(key, op.get("dtype"))
    if dtype not in BYTES_PER_ELEMENT:
        raise KernelInputError(f"op[{key!r}]: unknown dtype {dtype!r} (expected {sorted(BYTES_PER_ELEMENT)})")
    return BYTES_PER_ELEMENT[dtype]


def _expect(op: Mapping, name: str) -> None:
    if not isinstance(op, Mapping):
        raise KernelInputError(f"op: expected a mapping, got {type(op).__name__}")
    if op.get("op") != name:
        raise KernelInputError(f"op: expected op {name!r}, got {op.get('op')!r}")


def gemm_flops(op: Mapping) -> int:
    """Floating-point operations of ``[m,k] @ [k,n]``: ``2*m*n*k`` (one multiply and one add)."""
    _expect(op, "gemm")
    return 2 * _get(op, "m") * _get(op, "n") * _get(op, "k")


def gemm_bytes(op: Mapping) -> int:
    """Fewest bytes through memory: read A and B once, write C once, in bytes."""
    _expect(op, "gemm")
    m, n, k = _get(op, "m"), _get(op, "n"), _get(op, "k")
    return (m * k + k * n) * _bytes_per_element(op) + m * n * _bytes_per_element(op, "out_dtype")


def visible_keys(q_len: int, kv_len: int, causal: bool) -> int:
    """Number of (query, key) pairs that are not masked, summed over query rows.

    Causal masking is aligned to the bottom-right corner: query row ``i`` (0-based) of
    ``q_len`` sees keys ``0 .. kv_len - q_len + i``. With ``q_len == kv_len == L`` this is
    ``L*(L+1)/2``; without masking it is ``q_len*kv_len``.
    """
    if not causal:
        return q_len * kv_len
    if q_len > kv_len:
        raise KernelInputError(f"op: causal attention needs q_len <= kv_len, got {q_len} > {kv_len}")
    # rows i = 0..q_len-1 see kv_len - q_len + 1 + i keys
    first = kv_len - q_len + 1
    return q_len * first + q_len * (q_len - 1) // 2


def _attention_fields(op: Mapping) -> tuple[int, int, int, int, int, int, bool]:
    _expect(op, "attention")
    phase = op.get("phase")
    if phase not in ("prefill", "decode"):
        raise KernelInputError(f"op['phase']: expected 'prefill' or 'decode', got {phase!r}")
    b, lq, lk = _get(op, "batch"), _get(op, "q_len"), _get(op, "kv_len")
    hq, hkv, d = _get(op, "q_heads"), _get(op, "kv_heads"), _get(op, "head_dim")
    causal = _get(op, "causal", bool)
    if hq % hkv:
        raise KernelInputError(f"op['q_heads']: {hq} is not a multiple of kv_heads {hkv}")
    return b, lq, lk, hq, hkv, d, causal


def attention_flops(op: Mapping) -> int:
    """Matrix FLOPs of attention: ``4*B*Hq*D*visible`` (QK^T and PV, 2 FLOPs per multiply-add).

    Softmax exponentials and scaling are not counted (they run on other units).
    """
    b, lq, lk, hq, _, d, causal = _attention_fields(op)
    return 4 * b * hq * d * visible_keys(lq, lk, causal)


def attention_bytes(op: Mapping) -> int:
    """Fewest bytes: read Q, K, V once and write O once (the KV cache once in decode), in bytes."""
    b, lq, lk, hq, hkv, d, _ = _attention_fields(op)
    bpe = _bytes_per_element(op)
    return (2 * b * hkv * lk * d + 2 * b * hq * lq * d) * bpe


def kv_block_copy_bytes(op: Mapping) -> int:
    """Bytes of a block gather or scatter: every selected block read once and written once."""
    _expect(op, "kv_block_copy")
    n, h, bs, d = (_get(op, k) for k in ("num_blocks", "kv_heads", "block_size", "head_dim"))
    return 2 * n * h * bs * d * _bytes_per_element(op)
