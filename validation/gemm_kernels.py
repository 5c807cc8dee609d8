"""Which cuBLAS kernel ran for each measured GEMM, and how the model's error splits by it.

``python -m perfmodel.validation.run --kernel-names`` stores, in each record, the CUDA kernels one call
launched (from ``torch.profiler``).  On Hopper, cuBLAS names its GEMM kernels ``nvjet_sm90_tst_
<A>x<B>_...``: an output tile of ``A`` (along N, the weight's columns, as ``torch.matmul(x, w)`` is
run column-major) by ``B`` (along M, the tokens), with ``splitK`` when it splits the K axis over
several programs and adds a ``splitKreduce`` kernel.  The library picks the kernel by its own
per-GPU heuristic; this module reads the names back so the report can show where that choice,
not the hardware, explains a prediction error.

``python -m perfmodel.validation.gemm_kernels [--gpu NAME]`` prints, per GPU, the M values at which each
(N, K) family ran a split-K kernel, and the fitted profile's error (in-sample, every record) on
GEMMs with and without split-K.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

_NVJET = re.compile(r"nvjet\w*?_(\d+)x(\d+)_")


@dataclass(frozen=True)
class GemmKernel:
    """What cuBLAS ran for one GEMM: output tile (along M and N), split-K, kernels launched."""

    tile_m: int | None
    tile_n: int | None
    split_k: bool
    launches: int


def parse_kernels(names: Sequence[str]) -> GemmKernel:
    """Read the tile and split-K flag from the kernel names of one ``torch.matmul`` call.

    Memsets are not counted as launches; a non-nvjet GEMM kernel (e.g. a GEMV) has no tile.
    """
    tile_m = tile_n = None
    for n in names:
        m = _NVJET.search(n)
        if m:
            tile_n, tile_m = int(m.group(1)), int(m.group(2))
            break
    split = any("splitK" in n for n in names)
    launches = sum(1 for n in names if not n.startswith("Memset"))
    return GemmKernel(tile_m, tile_n, split, launches)


def kernel_map(
    records: Iterable[dict[str, Any]], extra: Iterable[dict[str, Any]] = ()
) -> dict[tuple, GemmKernel]:
    """(m, n, k) -> :class:`GemmKernel` from the GEMM records that carry ``kernels`` (``extra``:
    more such records, e.g. a names-only run, used where ``records`` have none)."""
    out: dict[tuple, GemmKernel] = {}
    for src in (extra, records):  # records win over the names-only run
        for r in src:
            if r.get("op") == "gemm" and r.get("kernels"):
                out[(r["m"], r["n"], r["k"])] = parse_kernels(r["kernels"])
    return out


def split_k_table(kmap: dict[tuple, GemmKernel]) -> str:
    """Markdown: per (N, K) family, the M values that ran split-K (families with none are omitted)."""
    fams: dict[tuple, list[int]] = {}
    for (m, n, k), g in sorted(kmap.items()):
        if g.split_k:
            fams.setdefault((n, k), []).append(m)
    lines = ["| N x K | M with split-K |", "| --- | --- |"]
    for (n, k), ms in sorted(fams.items()):
        lines.append(f"| {n} x {k} | {', '.join(str(m) for m in ms)} |")
    return "\n".join(lines)


def error_by_kind(
    records: Sequence[dict[str, Any]], predicted: np.ndarray, kmap: dict[tuple, GemmKernel]
) -> dict[str, tuple[int, float, float]]:
    """APE (n, median, p90) of GEMM records grouped by ``split-K`` / ``one kernel`` / ``unknown``."""
    groups: dict[str, list[float]] = {}
    for r, p in zip(records, predicted):
        if r.get("op") != "gemm":
            continue
        g = kmap.get((r["m"], r["n"], r["k"]))
        kind = "unknown" if g is None else ("split-K" if g.split_k else "one kernel")
        groups.setdefault(kind, []).append(abs(p / r["measured_s"] - 1.0))
    return {k: (len(v), float(np.median(v)), float(np.percentile(v, 90))) for k, v in sorted(groups.items())}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from perfmodel.validation.fit import ProfileFitter
    from perfmodel.validation.records import RecordError, read_records
    from perfmodel.validation.report import DATA_DIR

    ap = argparse.ArgumentParser(
        prog="python -m perfmodel.validation.gemm_kernels", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--gpu", action="append", help="hw name (repeatable); default: every GPU with records")
    args = ap.parse_args(argv)
    gpus = args.gpu or ["h100-sxm-80gb", "h200-sxm-141gb"]
    for gpu in gpus:
        path = DATA_DIR / f"{gpu}.jsonl"
        try:
            recs = [r for r in read_records(path, gpu) if r["op"] == "gemm"]
            names_path = DATA_DIR / f"{gpu}.gemm-kernels.jsonl"
            extra = read_records(names_path, gpu) if Path(names_path).exists() else []
        except RecordError as exc:
            print(f"error: {exc}")
            return 1
        kmap = kernel_map(recs, extra)
        pred = ProfileFitter(gpu).fit(recs).predict_records(recs)
        print(f"## {gpu}: {len(recs)} GEMM records, kernel names for {len(kmap)} shapes\n")
        print(split_k_table(kmap) + "\n")
        print("| cuBLAS kernel | n | median APE | p90 APE |\n| --- | ---: | ---: | ---: |")
        for kind, (n, med, p90) in error_by_kind(recs, pred, kmap).items():
            print(f"| {kind} | {n} | {100 * med:.1f}% | {100 * p90:.1f}% |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
