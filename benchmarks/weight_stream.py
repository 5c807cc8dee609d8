"""Do operands stream slower cold, as a decode step reads them, than replayed, as a stand-alone record times them?

Usage: ``python benchmarks/weight_stream.py [--out DIR] [--model qwen2.5-14b] [--gb 16] [--sections gemm,layers,attention]``.

A decode step reads every weight matrix and every layer's KV cache once, with gigabytes read between two
reads of the same bytes; a stand-alone record (``python -m perfmodel.validation.run``) replays one op
over input sets that only exceed the L2 (one set when the inputs are larger). Where the GPU streams
cold operands (missing in the L2 and in the address-translation caches) slower than replayed ones, the
records price a step too fast; ``validation.run --rotate-bytes`` then times records cold. Three
sections, each timed as CUDA-graph replays (``perfmodel.validation.bench.graph_replay_s``: one graph of
``max(sets, 20)`` calls cycling over the input sets, behind a short busy-wait, median of 7 replays):

- ``gemm``: one-row and 16-row GEMMs (``torch.matmul(x, w, out=c)``, ``w`` [K, N] bf16) of ``--model``'s
  projections (fused QKV, O, fused gate/up, down, and an 8192 x 57344 matrix) with one weight set
  replayed and with weight sets rotated over 1 GB, 4 GB and ``--gb`` GB;
- ``layers``: the model's four projections of every layer in layer order over ``--layers`` layers of
  distinct weights (a decode step's GEMMs without the rest) against the first layer's weights replayed
  as many times;
- ``attention``: the default SDPA decoding one token over one layer's KV cache (the model's heads, batch
  1 and 16, 8K and 32K tokens) replayed, and over the caches of enough layers to cover ``--gb`` GB
  (or what memory holds) cycled.

Prints ``cold / replayed`` per row and writes ``weight_stream.json`` under ``--out`` (default ``$OUT`` or
the current folder) with the GPU, driver, library versions, date and the kernels each op ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._host import gpu_env, no_cuda  # noqa: E402

SECTIONS = ("gemm", "layers", "attention")
#: weight rows of 16-row and one-row GEMMs
GEMM_MS = (1, 16)
#: rotation totals of the ``gemm`` section besides one set and ``--gb``, bytes
GEMM_TOTALS = (1e9, 4e9)
#: (batch, cache tokens) of the ``attention`` section
ATTENTION_CASES = ((1, 8192), (1, 32768), (16, 8192), (16, 32768))
#: calls per graph at least (short graphs time the launch of the graph as much as the work)
MIN_CALLS = 20
#: a large square-ish projection besides the model's (8192 x 57344: a 70B model's fused gate/up)
EXTRA_SHAPE = (8192, 57344)


def projections(spec) -> list[tuple[str, int, int]]:
    """``(name, K, N)`` of a dense model's four projections a layer: fused QKV, O, fused gate/up, down."""
    h, d = spec.hidden, spec.head_dim
    qkv = (spec.q_heads + 2 * spec.kv_heads) * d
    return [
        ("qkv_proj", h, qkv),
        ("o_proj", spec.q_heads * d, h),
        ("gate_up_proj", h, 2 * spec.intermediate),
        ("down_proj", spec.intermediate, h),
    ]


def layer_weight_bytes(spec) -> int:
    """Bytes of one layer's four projections in bf16 (:func:`projections`)."""
    return sum(k * n * 2 for _, k, n in projections(spec))


def sets_for(total_bytes: float, each_bytes: float, cap_bytes: float) -> int:
    """Input sets covering ``total_bytes`` (at least 2; 1 for ``total_bytes`` 0), at most ``cap_bytes`` of them."""
    if total_bytes <= 0:
        return 1
    want = max(2, int(total_bytes // max(each_bytes, 1.0)))
    return max(1, min(want, int(cap_bytes // max(each_bytes, 1.0))))


def parse_sections(text: str) -> tuple[str, ...]:
    """Comma-separated section names; ValueError naming an unknown one."""
    out = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in out if s not in SECTIONS]
    if bad or not out:
        raise ValueError(f"--sections {text!r}: known sections are {', '.join(SECTIONS)}")
    return out


def _per_call_s(fns, calls: int) -> float:
    from perfmodel.validation.bench import graph_replay_s

    return statistics.median(graph_replay_s(fns, calls, 7))


def _gemm(spec, gb: float, cap: float, rows: list, names) -> None:
    import torch

    dev = torch.device("cuda")
    shapes = projections(spec) + [("square_8192x57344", *EXTRA_SHAPE)]
    for m in GEMM_MS:
        for name, k, n in shapes:
            wb = k * n * 2
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            c = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
            for total in (0.0, *GEMM_TOTALS, gb * 1e9):
                sets = sets_for(total, wb, cap)
                ws = [torch.randn(k, n, device=dev, dtype=torch.bfloat16) for _ in range(sets)]
                fns = [(lambda w=w: torch.matmul(x, w, out=c)) for w in ws]
                t = _per_call_s(fns, max(sets, MIN_CALLS))
                rows.append(
                    {
                        "section": "gemm",
                        "op": name,
                        "m": m,
                        "k": k,
                        "n": n,
                        "sets": sets,
                        "rotated_bytes": sets * wb,
                        "per_call_s": t,
                        "weight_bytes_per_s": wb / t,
                        "kernels": names(fns[0]),
                    }
                )
                del ws, fns
                torch.cuda.empty_cache()


def _layers(spec, layers: int, rows: list) -> None:
    import torch

    dev = torch.device("cuda")
    shapes = projections(spec)
    weights = [
        [torch.randn(k, n, device=dev, dtype=torch.bfloat16) for _, k, n in shapes] for _ in range(layers)
    ]
    step_bytes = layer_weight_bytes(spec) * layers
    for m in GEMM_MS:
        xs = {k: torch.randn(m, k, device=dev, dtype=torch.bfloat16) for _, k, _ in shapes}
        cs = {n: torch.empty(m, n, device=dev, dtype=torch.bfloat16) for _, _, n in shapes}

        def step(layer_weights):
            """The four projections of each layer of ``layer_weights``, in order."""
            return [
                (lambda w=w, k=k, n=n: torch.matmul(xs[k], w, out=cs[n]))
                for lay in layer_weights
                for (_, k, n), w in zip(shapes, lay)
            ]

        order, first = step(weights), step([weights[0]] * layers)
        cold = _per_call_s(order, len(order)) * len(order)
        warm = _per_call_s(first, len(first)) * len(first)
        rows.append(
            {
                "section": "layers",
                "m": m,
                "layers": layers,
                "step_bytes": step_bytes,
                "layer_order_s": cold,
                "first_layer_replayed_s": warm,
            }
        )


def _attention(spec, gb: float, cap: float, rows: list, names) -> None:
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    hq, hkv, d = spec.q_heads, spec.kv_heads, spec.head_dim
    for b, n in ATTENTION_CASES:
        kv_bytes = 2 * b * hkv * n * d * 2
        q = torch.randn(b, hq, 1, d, device=dev, dtype=torch.bfloat16)
        for total in (0.0, gb * 1e9):
            sets = sets_for(total, kv_bytes, cap)
            caches = [
                (
                    torch.randn(b, hkv, n, d, device=dev, dtype=torch.bfloat16),
                    torch.randn(b, hkv, n, d, device=dev, dtype=torch.bfloat16),
                )
                for _ in range(sets)
            ]
            fns = [
                (lambda k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hkv))
                for k, v in caches
            ]
            t = _per_call_s(fns, max(sets, MIN_CALLS))
            rows.append(
                {
                    "section": "attention",
                    "batch": b,
                    "kv_len": n,
                    "q_heads": hq,
                    "kv_heads": hkv,
                    "head_dim": d,
                    "sets": sets,
                    "rotated_bytes": sets * kv_bytes,
                    "per_call_s": t,
                    "kv_bytes_per_s": kv_bytes / t,
                    "kernels": names(fns[0]),
                }
            )
            del caches, fns
            torch.cuda.empty_cache()


def table(rows: list[dict]) -> list[str]:
    """Lines comparing each cold row with the replayed row of the same op (``cold / replayed``)."""
    out = []
    warm = {}
    for r in rows:
        if r["section"] == "layers":
            out.append(
                f"layers m={r['m']:<3} {r['layers']} layers: layer order {r['layer_order_s'] * 1e3:.3f} ms, "
                f"first layer replayed {r['first_layer_replayed_s'] * 1e3:.3f} ms, "
                f"cold / replayed {r['layer_order_s'] / r['first_layer_replayed_s']:.3f}"
            )
            continue
        key = (
            (r["op"], r["m"], r["k"], r["n"])
            if r["section"] == "gemm"
            else ("attention", r["batch"], r["kv_len"])
        )
        what = (
            f"{r['op']:<18} m={r['m']:<3} {r['k']}x{r['n']}"
            if r["section"] == "gemm"
            else f"sdpa decode B{r['batch']} L{r['kv_len']} {r['q_heads']}/{r['kv_heads']}x{r['head_dim']}"
        )
        rate = r.get("weight_bytes_per_s") or r.get("kv_bytes_per_s")
        if r["sets"] == 1:
            warm[key] = r["per_call_s"]
        ratio = r["per_call_s"] / warm[key] if key in warm else float("nan")
        out.append(
            f"{what:<44} {r['rotated_bytes'] / 1e9:7.2f} GB {r['per_call_s'] * 1e6:9.2f} us "
            f"{rate / 1e12:5.2f} TB/s  cold / replayed {ratio:.3f}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--model", default="qwen2.5-14b", help="a model of python -m perfmodel.validation.e2e")
    ap.add_argument("--gb", type=float, default=16.0, help="largest rotation, GB (decimal)")
    ap.add_argument("--layers", type=int, default=48, help="layers of the layers section")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    args = ap.parse_args(argv)
    from perfmodel.validation.e2e import UsageError, resolve_model

    try:
        sections = parse_sections(args.sections)
        if not args.gb > 0:
            raise ValueError(f"--gb {args.gb} must be > 0")
        if args.layers < 1:
            raise ValueError(f"--layers {args.layers} must be >= 1")
        spec = resolve_model(args.model)[0]
        if spec.moe is not None:
            raise ValueError(f"--model {args.model} is a MoE model; name a dense one")
    except (ValueError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    if no_cuda():
        return 2
    from perfmodel.validation.bench import kernel_names

    free, _ = torch.cuda.mem_get_info()
    cap = 0.6 * free  # operands of one configuration at most
    rows: list[dict] = []
    if "gemm" in sections:
        _gemm(spec, args.gb, cap, rows, kernel_names)
    if "layers" in sections:
        _layers(spec, max(1, min(args.layers, int(cap // layer_weight_bytes(spec)))), rows)
    if "attention" in sections:
        _attention(spec, args.gb, cap, rows, kernel_names)
    for line in table(rows):
        print(line)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "weight_stream.json").write_text(
        json.dumps(
            {
                **gpu_env(),
                "model": args.model,
                "method": "cuda_graph replays behind a lead kernel, median of 7",
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
