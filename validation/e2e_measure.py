"""The measuring half of :mod:`perfmodel.validation.e2e` (torch): builds each model, times its rows, writes records.

Prefill: one unchunked forward pass over the whole prompt, launched eagerly; warm-up calls at the
shape first (cuDNN builds its plans per shape), then the median of the timed calls, each timed with
CUDA events behind :func:`perfmodel.validation.bench.lead`.  Decode: one step (one new token per sequence,
attention over the filled cache) captured in a CUDA graph and replayed; the median replay.  Without
a graph (the MoE per-expert loop reads counts back to the host) the step is timed eagerly with
events.  On a CPU (``--dry-run``) the host clock times eager calls.
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
import statistics
import subprocess
import time
import traceback
from typing import Any

import torch

from perfmodel.tables import fmt_seconds
from perfmodel.validation import bench
from perfmodel.validation.e2e import (
    MEMORY_SHARE,
    RUNNER_VERSION,
    DRY_RUN_CAPACITY_BYTES,
    ModelPlan,
    Row,
    busy_calls_of,
    plan,
    predict,
    print_plan,
)
from perfmodel.validation.e2e_model import E2EModel
from perfmodel.validation.records import canonical_gpu, write_record
from perfmodel.validation.run import driver_version


class GpuState:
    """SM clock (MHz) and board power (W), best effort: ``torch.cuda.clock_rate``/``power_draw``
    (pynvml), else ``nvidia-smi``; None where neither answers (then it stops asking)."""

    def __init__(self, device: torch.device) -> None:
        self.on = device.type == "cuda"
        self.source = "torch" if self.on else None

    def read(self) -> dict[str, Any] | None:
        if not self.on:
            return None
        if self.source == "torch":
            try:
                return {
                    "sm_clock_mhz": float(torch.cuda.clock_rate()),
                    "power_w": torch.cuda.power_draw() / 1e3,
                }
            except Exception:  # pynvml missing or refused: try the command line once
                self.source = "nvidia-smi"
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=clocks.sm,power.draw",
                    "--format=csv,noheader,nounits",
                    "-i",
                    str(torch.cuda.current_device()),
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
            clk, pw = (float(x) for x in out.stdout.strip().splitlines()[0].split(","))
            return {"sm_clock_mhz": clk, "power_w": pw}
        except Exception:
            self.on = False
            return None


def meta(device: torch.device) -> dict[str, Any]:
    try:
        import triton

        triton_v = triton.__version__
    except ImportError:  # pragma: no cover
        triton_v = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "gpu": name,
        "gpu_model": canonical_gpu(name),
        "driver": driver_version() if device.type == "cuda" else None,
        "torch": torch.__version__,
        "triton": triton_v,
        "cuda": torch.version.cuda,
        "date": _dt.date.today().isoformat(),
    }


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_call(fn, device, state: GpuState) -> tuple[float, dict]:
    """Seconds of one call (events behind the lead kernel on a GPU, host clock on a CPU), and the
    GPU state before and after it."""
    before = state.read()
    if device.type == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        bench.lead()
        s.record()
        fn()
        e.record()
        e.synchronize()
        t = s.elapsed_time(e) / 1e3
    else:
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
    return t, {"before": before, "after": state.read()}


def attention_kernels(model: E2EModel, fn, device) -> list[str]:
    """Unique CUDA kernel names of layer 0's attention call at this shape (torch.profiler), in
    launch order; empty on a CPU."""
    if device.type != "cuda":
        return []
    model.probe = True
    try:
        fn()
        _sync(device)
    finally:
        model.probe = False
    try:
        names = bench.kernel_names(model.attention_only)
    finally:
        model.attention_call = None
    return list(dict.fromkeys(names))


def measure_row(model: E2EModel, row: Row, device, state: GpuState) -> dict[str, Any]:
    """Time one row; the record's measurement keys."""
    s = model.spec
    b, c = row.batch, row.context
    gen = torch.Generator(device=device).manual_seed(1)
    if row.phase == "prefill":
        cache = model.new_cache(b, c, fill=False)
        ids = torch.randint(0, s.vocab, (b, c), device=device, generator=gen)

        def fn():
            return model(ids, cache, 0, c)  # noqa: F821 (closure; deleted after the timing)
    else:
        cache = model.new_cache(b, c, fill=True)
        ids = torch.randint(0, s.vocab, (b, 1), device=device, generator=gen)
        model.ensure_rope(c)

        def fn():
            return model(ids, cache, c - 1, c)  # noqa: F821 (closure; deleted after the timing)

    for _ in range(row.warmup_calls):
        fn()
    _sync(device)
    kernels = attention_kernels(model, fn, device)
    out: dict[str, Any] = {"attention_kernels": kernels, "warmup_calls": row.warmup_calls}
    graphable = device.type == "cuda" and model.moe_path != "expert_loop"
    if row.phase == "decode" and graphable:
        g = bench.capture_graph([fn], calls=1, warm_replays=row.warmup_calls)
        before = state.read()
        times = bench.replay_s(g, 1, row.timed_calls)
        gstate = {"before": before, "after": state.read()}
        del g
        out.update(
            method="cuda_graph", launch="graph_replay_behind_lead", timed_calls=len(times), gpu_state=gstate
        )
    else:
        times, states = [], []
        for _ in range(row.timed_calls):
            t, st = _time_call(fn, device, state)
            times.append(t)
            states.append(st)
        method = "eager_events" if device.type == "cuda" else "host_clock"
        out.update(
            method=method,
            launch="eager",
            timed_calls=len(times),
            gpu_state=states if device.type == "cuda" else None,
        )
    out["measured_s"] = statistics.median(times)
    out["times_s"] = times
    del cache, ids, fn
    return out


def _record(base: dict, mp: ModelPlan, row: Row, model_meta: dict) -> dict[str, Any]:
    return {
        **base,
        "model": mp.spec.name,
        "config": mp.config,
        "layers_run": mp.spec.num_layers,
        "layers_total": mp.layers_total,
        "phase": row.phase,
        "batch": row.batch,
        "context": row.context,
        "chunk_tokens": None,
        "predicted_s": row.predicted_s or None,
        "prediction": row.prediction or None,
        **model_meta,
    }


def _empty(keys) -> dict[str, Any]:
    return dict.fromkeys(keys)


def run(a, models: list[str], size: str, console) -> int:
    """Measure ``models`` as the parsed arguments ``a`` say; write records; print the table last."""
    from perfmodel.validation.e2e import RECORD_KEYS

    dry = a.dry_run
    if dry:  # the fused RoPE kernel through Triton's interpreter
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if not dry and not torch.cuda.is_available():
        console.print("error: no CUDA device; use --dry-run to check the path on a CPU, or --plan")
        return 2
    device = torch.device("cpu" if dry else "cuda")
    m = meta(device)
    gpu = a.gpu or m["gpu_model"] or ""
    if not gpu:
        if dry:
            gpu = "h100-sxm-80gb"
        else:
            console.print(f"error: no hw profile for {m['gpu']!r}; pass --gpu NAME for the predictions")
            return 2
    cap = DRY_RUN_CAPACITY_BYTES if dry else float(torch.cuda.mem_get_info()[0])
    plans = plan(models, gpu, cap, size, a.layers, a.max_prefill_call_s, a.phases)
    console.print(
        f"{m['gpu']} ({gpu}), {cap / 2**30:.1f} GiB free; rows run where weights + KV + workspace "
        f"fit in {MEMORY_SHARE:.0%} of it"
    )
    print_plan(plans, gpu, console)
    a.out.mkdir(parents=True, exist_ok=True)
    rec_path = a.out / f"e2e_{m['gpu_model'] or ('cpu' if dry else 'unknown-gpu')}.jsonl"
    log_path = a.out / "e2e.log"
    state = GpuState(device)
    base = {
        **_empty(RECORD_KEYS),
        **m,
        "hw": gpu,
        "dry_run": dry,
        "status": "ok",
        "rope": a.rope,
        "runner": RUNNER_VERSION,
    }
    t0 = time.time()
    done: list[dict] = []
    n_skip = 0
    with open(rec_path, "a") as fh, open(log_path, "a") as log:
        log.write(f"start {m} models={models} size={size}\n")
        for mp in plans:
            runnable = [r for r in mp.rows if not r.skip_reason]
            model = None
            model_meta: dict[str, Any] = {}
            build_error = "not built"
            if runnable and time.time() - t0 <= a.budget_s:
                try:
                    tb = time.time()
                    model = E2EModel(mp.spec, device, moe_path=a.moe_path, rope=a.rope)
                    _sync(device)
                    model_meta = {"moe_path": model.moe_path or None, "moe_note": model.moe_note or None}
                    console.print(
                        f"{mp.spec.name}: built {mp.spec.num_layers} layers in {time.time() - tb:.1f} s"
                        + (f", MoE path {model.moe_path}" if model.moe_path else "")
                    )
                except Exception as exc:
                    log.write(f"FAIL build {mp.spec.name}: {exc!r}\n{traceback.format_exc(limit=3)}")
                    model = None
                    build_error = (
                        f"model build failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    )
            for row in mp.rows:
                rec = _record(base, mp, row, model_meta)
                reason = row.skip_reason
                if reason is None and time.time() - t0 > a.budget_s:
                    reason = f"budget: --budget-s {a.budget_s:g} s spent"
                if reason is None and model is None:
                    reason = build_error if runnable else "not built"
                if reason is None:
                    try:
                        rec.update(measure_row(model, row, device, state))
                        if rec["predicted_s"]:  # priced as timed: after its warm-up and earlier calls
                            rec["predicted_s"], rec["prediction"] = predict(
                                mp.spec, gpu, row.phase, row.batch, row.context, busy_calls_of(rec)
                            )
                        rec["error"] = rec["predicted_s"] / rec["measured_s"] - 1.0
                        done.append(rec)
                    except torch.OutOfMemoryError:
                        reason = "out of memory"
                    except Exception as exc:  # one failing row must not stop the run; the log says why
                        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                        log.write(
                            f"FAIL {mp.spec.name} {row.label}: {exc!r}\n{traceback.format_exc(limit=4)}"
                        )
                    finally:
                        gc.collect()
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                            torch.cuda.empty_cache()
                if reason is not None:
                    rec.update(status="skipped", skip_reason=reason, measured_s=None, error=None)
                    n_skip += 1
                    log.write(f"skip {mp.spec.name} {row.label}: {reason}\n")
                write_record(fh, rec)
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        log.write(f"done ok={len(done)} skipped={n_skip} in {time.time() - t0:.0f} s\n")
    _table(console, done, n_skip, rec_path, time.time() - t0)
    return 0 if done else 1


def _table(console, recs: list[dict], n_skip: int, rec_path, wall_s: float) -> None:
    from rich.table import Table

    tab = Table(title=f"{len(recs)} rows measured, {n_skip} skipped in {wall_s:.0f} s -> {rec_path}")
    for c in ("model", "layers", "phase", "batch", "context", "measured", "predicted", "error"):
        tab.add_column(c, justify="right" if c not in ("model", "phase") else "left")
    for r in recs:
        tab.add_row(
            r["model"],
            str(r["layers_run"]),
            r["phase"],
            str(r["batch"]),
            str(r["context"]),
            fmt_seconds(r["measured_s"]),
            fmt_seconds(r["predicted_s"]),
            f"{100 * r['error']:+.1f}%",
        )
    console.print(tab)
