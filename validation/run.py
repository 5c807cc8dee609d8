"""``python -m perfmodel.validation.run --out DIR [--quick]``: measure the suite on the GPU it runs on.

Writes ``DIR/<gpu>.jsonl`` (one record per measured op, appended and flushed as measured, so an
interrupted run keeps what it has) and ``DIR/run.log``.  ``--dry-run`` runs tiny shapes on the CPU
(Triton in its interpreter) to check that every builder works, and writes records marked
``"dry_run": true`` that the fit refuses.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional


#: seconds of work per timed region for copies (several back-to-back copies of a large pageable buffer)
COPY_TARGET_S = 0.2


def _meta(device) -> dict:
    import torch

    try:
        import triton

        triton_v = triton.__version__
    except ImportError:  # pragma: no cover - triton is installed with torch on the devices
        triton_v = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        driver = driver_version()
        extra = {"sm_count": props.multi_processor_count, "l2_bytes": getattr(props, "L2_cache_size", 0)}
    else:
        name, driver, extra = "cpu", None, {"sm_count": 0, "l2_bytes": 0}
    from perfmodel.validation.records import canonical_gpu

    return {
        "gpu": name,
        "gpu_model": canonical_gpu(name),
        "driver": driver,
        "torch": torch.__version__,
        "triton": triton_v,
        "cuda": torch.version.cuda,
        "date": _dt.date.today().isoformat(),
        "kernels_sha256": kernels_source_sha256(),
        **extra,
    }


def kernels_source_sha256() -> str:
    """SHA-256 of the ``kernels/`` package's source files (sorted by name), so each record names the
    version of our Triton kernels it timed (the device machine gets a copy of the tree without git)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parent.parent / "kernels").glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def driver_version() -> Optional[str]:
    """The NVIDIA driver version ``nvidia-smi`` reports, or None without one."""
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m perfmodel.validation.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the records (JSONL) and the log")
    p.add_argument("--quick", action="store_true", help="fewer sizes, sized to run in a few minutes")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny shapes on the CPU: checks the builders, times nothing real",
    )
    p.add_argument(
        "--sections", default="gemm,elementwise,memcpy,attention,layer", help="comma-separated sections"
    )
    p.add_argument(
        "--budget-s", type=float, default=480.0, help="stop starting new cases after this many seconds"
    )
    p.add_argument("--name", default="", help="record file name (default: the GPU's hw name)")
    p.add_argument(
        "--extra",
        action="store_true",
        help="measure the coverage set (perfmodel.validation.cases.extra_cases) instead",
    )
    p.add_argument(
        "--noncausal",
        action="store_true",
        help="measure non-causal prefill attention (perfmodel.validation.cases.noncausal_cases) instead",
    )
    p.add_argument(
        "--impls",
        default="",
        help="comma-separated implementations to measure (e.g. split_kv,stream_k); default all",
    )
    p.add_argument(
        "--gemm-ms",
        default="",
        help="comma-separated M values for the GEMM cases (every (N, K) family of the set)",
    )
    p.add_argument(
        "--family",
        default="",
        help="measure only the cases whose shape family contains this text (e.g. pageable)",
    )
    p.add_argument(
        "--launch",
        default="graph",
        help="graph: ops timed as CUDA-graph replays (copies: eager); eager: back-to-back "
        "eager calls timed with CUDA events (what a program without graphs sees)",
    )
    p.add_argument(
        "--rotate-bytes",
        type=float,
        default=0.0,
        metavar="B",
        help="operands of GEMMs, grouped GEMMs and attention rotated over at least B bytes (e.g. 8e9: "
        "cold in the L2 and the address-translation caches, as a decode step that streams every "
        "weight and KV cache once finds them)",
    )
    p.add_argument(
        "--kernel-names",
        action="store_true",
        help="also record the CUDA kernels one call launches (torch.profiler)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Measure every case and write records as they are measured; the exit status (0 when any was measured)."""
    a = _parser().parse_args(argv)
    return _measure(
        out=a.out,
        quick=a.quick,
        dry_run=a.dry_run,
        sections=a.sections,
        budget_s=a.budget_s,
        name=a.name,
        extra=a.extra,
        noncausal=a.noncausal,
        impls=a.impls,
        gemm_ms=a.gemm_ms,
        family=a.family,
        launch=a.launch,
        kernel_names=a.kernel_names,
        rotate_bytes=a.rotate_bytes,
    )


def _measure(
    *,
    out: Path,
    quick: bool,
    dry_run: bool,
    sections: str,
    budget_s: float,
    name: str,
    extra: bool,
    noncausal: bool,
    impls: str,
    gemm_ms: str,
    family: str,
    launch: str,
    kernel_names: bool,
    rotate_bytes: float = 0.0,
) -> int:
    """Measure every case and write records as they are measured."""
    if dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from perfmodel.validation import bench
    from perfmodel.validation.cases import SECTIONS, cases, extra_cases, noncausal_cases, with_gemm_ms
    from perfmodel.validation.records import write_record

    console = Console(stderr=True)
    if not rotate_bytes >= 0:
        console.print(f"error: --rotate-bytes must be >= 0 bytes, got {rotate_bytes!r}")
        return 2
    if launch not in ("graph", "eager"):
        console.print(f"error: --launch must be graph or eager, got {launch!r}")
        return 2
    secs = tuple(s.strip() for s in sections.split(",") if s.strip())
    bad = [s for s in secs if s not in SECTIONS]
    if bad:
        console.print(f"error: unknown section(s) {', '.join(bad)}; known: {', '.join(SECTIONS)}")
        return 2
    if not dry_run and not torch.cuda.is_available():
        console.print("error: no CUDA device; use --dry-run to check the suite on a CPU")
        return 2
    device = torch.device("cpu" if dry_run else "cuda")
    meta = _meta(device)
    if dry_run:
        meta["dry_run"] = True
    l2 = float(meta["l2_bytes"] or 50e6)
    size = "smoke" if dry_run else ("quick" if quick else "full")
    if extra and noncausal:
        console.print("error: --extra and --noncausal are two different case sets; pick one")
        return 2
    if noncausal:
        todo = [c for c in noncausal_cases(size) if c.section in secs]
    elif extra:
        todo = [c for c in extra_cases(size) if c.section in secs]
    else:
        todo = cases(size, secs)
    if gemm_ms:
        try:
            todo = with_gemm_ms(todo, [int(x) for x in gemm_ms.split(",") if x.strip()])
        except ValueError as exc:
            console.print(f"error: --gemm-ms: {exc}")
            return 2
    if family:
        todo = [c for c in todo if family in c.family]
    if impls:
        wanted = {i.strip() for i in impls.split(",") if i.strip()}
        known = {c.impl for c in todo}
        if not wanted <= known:
            console.print(
                f"error: unknown implementation(s) {', '.join(sorted(wanted - known))}; "
                f"this case set has: {', '.join(sorted(known))}"
            )
            return 2
        todo = [c for c in todo if c.impl in wanted]
    out.mkdir(parents=True, exist_ok=True)
    fname = name or (meta["gpu_model"] or "unknown-gpu")
    rec_path, log_path = out / f"{fname}.jsonl", out / "run.log"
    t0 = time.time()
    n_ok = n_fail = n_skip = 0
    per_section: dict[str, list[float]] = {}
    with (
        open(rec_path, "a") as fh,
        open(log_path, "a") as log,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as prog,
    ):
        log.write(f"start {meta}\n")
        task = prog.add_task("measuring", total=len(todo))
        for case in todo:
            prog.update(task, description=f"{case.section}:{case.impl} {case.family}")
            if time.time() - t0 > budget_s:
                n_skip += 1
                log.write(f"skip (budget) {case.family} {case.args}\n")
                prog.advance(task)
                continue
            try:
                built = bench.build(case, device, l2, rotate_bytes)
                if dry_run:
                    t, reps, method = bench.time_cpu(built.fns)
                else:
                    # copies run long enough per timed region that a pageable copy's staging is in steady state
                    target = COPY_TARGET_S if case.section == "memcpy" else bench.TARGET_S
                    t, reps, method = bench.time_cuda(
                        built.fns, built.graphable and launch == "graph", target_s=target
                    )
                impl = built.impl(case.impl)
                rec = {
                    **case.desc,
                    "measured_s": t,
                    "impl": impl,
                    "family": case.family,
                    **meta,
                    "method": method,
                    "launch": "graph" if method == "cuda_graph" else "eager",
                    "reps": reps,
                    "rotate": len(built.fns),
                    **(
                        {"rotate_bytes": rotate_bytes}
                        if rotate_bytes and case.section in bench.ROTATED_SECTIONS
                        else {}
                    ),
                    "params": case.args,
                }
                if case.section == "layer":
                    rec["attention_impl"] = built.sdpa.backend
                if kernel_names or case.section in ("attention", "layer", "grouped_gemm"):
                    # which library kernel ran: a backend change in a later PyTorch shows as a new name
                    rec["kernels"] = bench.kernel_names(built.fns[0])
                write_record(fh, rec)
                per_section.setdefault(f"{case.section}:{impl}", []).append(t)
                n_ok += 1
                del built
            except Exception as exc:  # one failing case must not stop the run; the log says why
                n_fail += 1
                log.write(f"FAIL {case.section}:{case.impl} {case.family} {case.args}: {exc!r}\n")
                log.write(traceback.format_exc(limit=3))
                if device.type == "cuda":
                    torch.cuda.synchronize()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            prog.advance(task)
        log.write(f"done ok={n_ok} fail={n_fail} skipped={n_skip} in {time.time() - t0:.0f} s\n")
    _summary(console, per_section, n_ok, n_fail, n_skip, rec_path, time.time() - t0)
    return 0 if n_ok else 1


def _summary(console, per_section, n_ok, n_fail, n_skip, rec_path, wall_s) -> None:
    from rich.table import Table

    tab = Table(title=f"measured {n_ok}, failed {n_fail}, skipped {n_skip} in {wall_s:.0f} s -> {rec_path}")
    for c in ("section:impl", "records", "min", "median", "max"):
        tab.add_column(c)
    for k, ts in sorted(per_section.items()):
        ts = sorted(ts)
        tab.add_row(
            k,
            str(len(ts)),
            f"{ts[0] * 1e6:.1f} us",
            f"{ts[len(ts) // 2] * 1e6:.1f} us",
            f"{ts[-1] * 1e6:.1f} us",
        )
    console.print(tab)


if __name__ == "__main__":
    sys.exit(main())
