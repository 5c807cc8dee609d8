"""``python -m perfmodel.validation.e2e --out DIR``: whole models the fit never saw, measured against the model.

Runs Llama-style models with random bf16 weights (:mod:`perfmodel.validation.e2e_model`) on the CUDA GPU it
runs on: unchunked prefill at batch 1 from 4K to 128K tokens and one batched prefill (eager, CUDA
events), and one decode step at batch 1-256 over 1K-128K tokens of cache (a CUDA graph, replayed).
Each row is compared with ``perfmodel.analyze(..., mode="calibrated", chunk_tokens=None)`` of the
same model (with the layers that ran), context and batch.  Writes ``DIR/e2e_<gpu>.jsonl`` (one
record per row, skipped rows included with the reason) and prints a table last.

``--plan`` prints the rows, the skipped rows and the estimated GPU time without running anything
(no GPU needed; ``--gpu`` picks the accelerator).  ``--dry-run`` runs tiny configs on the CPU
(host clock, no graphs).  ``python -m perfmodel.validation.e2e report FILES... [--md OUT]`` scores records
per GPU and phase.

The records go to ``validation/data/e2e/<gpu>.jsonl``, never to the files the fit reads
(``validation/data/<gpu>.jsonl``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from perfmodel.errors import PerfModelError
from perfmodel.models import CONFIG_DIR as PERFMODEL_CONFIG_DIR
from perfmodel.models import ModelSpec, list_models, load_model

CONFIG_DIR = Path(__file__).resolve().parent / "e2e_configs"
#: the full set: three dense models, one Phi-3 (head_dim 96, no GQA), a dense >= 30B, two MoE
DEFAULT_MODELS = (
    "llama-3.2-3b",
    "qwen2.5-14b",
    "phi-3-mini-4k",
    "qwen2.5-32b",
    "mixtral-8x7b",
    "qwen3-30b-a3b",
)
DRY_MODELS = ("tiny-dense", "tiny-moe")

#: (prefill contexts at batch 1, batched prefills (batch, context), decode batches, decode contexts)
SIZES = {
    "full": (
        (4096, 8192, 16384, 32768, 65536, 131072),
        ((4, 4096),),
        (1, 16, 64, 256),
        (1024, 8192, 32768, 131072),
    ),
    "quick": ((4096, 32768), ((4, 4096),), (1, 64), (1024, 32768)),
    "dry": ((32, 64), ((2, 32),), (1, 2), (16, 64)),
}
#: prefill rows predicted slower than this many seconds a call are dropped, saying so (10 s keeps the
#: full set near 4 minutes on an H100; 15 s would add the 128K prefills of Phi-3 and the MoE model)
MAX_PREFILL_CALL_S = 10.0
#: the phases a run measures
PHASES = ("prefill", "decode")
#: with automatic layers, the weights take at most this share of device memory
WEIGHT_SHARE = 0.4
#: a row runs when weights + KV cache + workspace fit in this share of the free device memory
MEMORY_SHARE = 0.92
#: fixed workspace per forward pass (cuBLAS / cuDNN workspaces, allocator slack), bytes
WORKSPACE_FIXED_BYTES = 1 << 30
#: device memory assumed by a CPU dry run, bytes
DRY_RUN_CAPACITY_BYTES = 4 << 30
#: seconds of setup per row (cache allocation, profiler pass, graph capture) in the estimate
ROW_OVERHEAD_S = 0.5
#: weight initialisation rate used by the estimate, bytes/s
INIT_BYTES_PER_S = 200e9

RECORD_KEYS = (
    "model",
    "config",
    "layers_run",
    "layers_total",
    "phase",
    "batch",
    "context",
    "chunk_tokens",
    "status",
    "skip_reason",
    "measured_s",
    "times_s",
    "method",
    "launch",
    "warmup_calls",
    "timed_calls",
    "attention_kernels",
    "moe_path",
    "moe_note",
    "gpu",
    "gpu_model",
    "hw",
    "driver",
    "torch",
    "triton",
    "cuda",
    "date",
    "predicted_s",
    "prediction",
    "error",
    "gpu_state",
    "dry_run",
    "rope",
    "runner",
)
#: version of the runner's forward pass written with each record (``validation/README.md`` says what
#: each one ran): 2 = queries token-major out of the fused RoPE kernel, MoE routing by
#: ``moe_align`` / ``moe_combine``; 3 = prefill's RoPE and KV append as the kernel's blocked form
#: (``perfmodel.kernels.rope``; decode steps run the same kernel as in 2)
RUNNER_VERSION = 3


class UsageError(Exception):
    """A bad argument; the command prints it as one line and exits with 2."""


# ---------------------------------------------------------------------------- models and rows


def resolve_model(name: str) -> tuple[ModelSpec, str]:
    """The spec and config path of ``name``: a path, a ``validation/e2e_configs`` name, or a
    ``perfmodel/configs`` name (read by ``perfmodel.models.load_model`` in every case)."""
    text = name.strip()
    if not text:
        raise UsageError("empty model name")
    p = Path(text)
    if text.endswith(".json") or p.is_file():
        if not p.is_file():
            raise UsageError(f"model config not found: {text}")
        path = p
    elif (CONFIG_DIR / f"{text.lower()}.json").is_file():
        path = CONFIG_DIR / f"{text.lower()}.json"
    elif text.lower() in list_models():
        path = PERFMODEL_CONFIG_DIR / f"{text.lower()}.json"
    else:
        known = sorted({q.stem for q in CONFIG_DIR.glob("*.json")} | set(list_models()))
        raise UsageError(f"unknown model {text!r}; known: {', '.join(known)} (or the path of a config.json)")
    try:
        spec = load_model(str(path))
    except PerfModelError as exc:
        raise UsageError(f"{path}: {exc}") from None
    from perfmodel.validation.e2e_model import UnsupportedModel, check_supported

    try:
        check_supported(spec)
    except UnsupportedModel as exc:
        raise UsageError(str(exc)) from None
    return spec, str(path)


def with_layers(spec: ModelSpec, layers: int) -> ModelSpec:
    """``spec`` cut to its first ``layers`` layers (same name)."""
    return dataclasses.replace(spec, num_layers=layers)


def auto_layers(spec: ModelSpec, capacity_bytes: float) -> int:
    """Most layers (at most all) whose weights take at most :data:`WEIGHT_SHARE` of ``capacity_bytes``."""
    n = spec.num_layers
    while n > 1 and with_layers(spec, n).weight_bytes() > WEIGHT_SHARE * capacity_bytes:
        n -= 1
    return n


def workspace_bytes(spec: ModelSpec, tokens: int) -> float:
    """Peak activation bytes of one forward pass over ``tokens`` tokens (bf16), an upper estimate:
    residual stream and its norm, plus the larger of the attention part (QKV, its roped copies,
    attention and O outputs) and the widest MLP point (gate/up output, SiLU of the gate, the
    product; for MoE the sorted copies of the top-k rows and the router's fp32 scores)."""
    a = 2
    h, d = spec.hidden, spec.head_dim
    qkv = (spec.q_heads + 2 * spec.kv_heads) * d
    attn = h + 2 * qkv + spec.q_heads * d
    mlp = 0
    if spec.num_dense_layers:
        mlp = 5 * spec.intermediate
    if spec.moe is not None:
        m = spec.moe
        routed = m.top_k * (2 * h + 5 * m.expert_intermediate) + 6 * m.num_experts + 4 * m.top_k
        shared = 5 * m.shared_experts * m.shared_intermediate
        mlp = max(mlp, routed + shared)
    return tokens * (2 * h + max(attn, mlp)) * a + WORKSPACE_FIXED_BYTES


def row_bytes(spec: ModelSpec, phase: str, batch: int, context: int) -> float:
    """Device bytes a row needs: weights, the KV cache of ``batch`` x ``context`` tokens, workspace."""
    tokens = batch * context if phase == "prefill" else batch
    return spec.weight_bytes() + batch * context * spec.kv_bytes_per_token() + workspace_bytes(spec, tokens)


def predict(
    spec: ModelSpec,
    gpu: str,
    phase: str,
    batch: int,
    context: int,
    busy_calls: float = 0.0,
) -> tuple[float, str]:
    """Predicted seconds of the row and how they were obtained (:func:`predict_band` without the band)."""
    pred, _, _, how = predict_band(spec, gpu, phase, batch, context, busy_calls)
    return pred, how


def predict_band(
    spec: ModelSpec,
    gpu: str,
    phase: str,
    batch: int,
    context: int,
    busy_calls: float = 0.0,
) -> tuple[float, float, float, str]:
    """Predicted seconds of the row, the low and high ends of its central 80% band (seconds) and how they were
    obtained.

    ``prefill``: ``analyze(...).to_dict()["prefill_s"]`` of one unchunked pass over ``context``
    tokens of ``batch`` prompts (LM head on the last positions).  ``decode``: its
    ``decode_s_per_token``, one step of ``batch`` sequences over ``context`` keys.  Attention is
    priced with the profile's default implementation (``sdpa``, what the runner's models run, where
    the GPU's profile has its curves); the second value names the path and that implementation,
    e.g. ``analyze/sdpa``.  Where ``analyze`` refuses the scenario as not fitting its memory budget,
    the phase functions give the same costs directly.

    ``busy_calls``: calls of the same row the GPU ran back to back before the one timed (warm-up and
    earlier timed calls).  A phase priced alone starts from an idle GPU; a timed call that follows
    ``busy_calls`` others of length ``T`` starts ``busy_calls * T`` into the sustained-clock ramp
    (:func:`perfmodel.clocks.after_busy`).
    """
    import perfmodel
    from perfmodel.hw.loader import load_gpu
    from perfmodel.calibration import Mode, resolve_profile
    from perfmodel.clocks import after_busy
    from perfmodel.costs.bands import phase_band
    from perfmodel.errors import DoesNotFitError
    from perfmodel.phases import decode_step_cost, prefill_cost

    g = load_gpu(gpu)
    prof = resolve_profile(g, Mode.CALIBRATED)
    impl = prof.attention_impl.value
    if busy_calls > 0 and prof.sustained:
        alone, _ = predict(spec, gpu, phase, batch, context)
        prof = dataclasses.replace(
            prof, sustained=MappingProxyType(after_busy(prof.sustained, busy_calls * alone))
        )
    try:
        d = perfmodel.analyze(
            spec,
            g,
            context_len=context,
            output_tokens=1,
            batch=batch,
            mode="calibrated",
            chunk_tokens=None,
            profile=prof,
        ).to_dict()
        k = "prefill_s" if phase == "prefill" else "decode_s_per_token"
        return float(d[k]), float(d[f"{k}_low"]), float(d[f"{k}_high"]), f"analyze/{impl}"
    except DoesNotFitError:
        pass
    if phase == "prefill":
        c, how = prefill_cost(spec, g, prof, context, batch, chunk_tokens=None), "prefill_cost"
    else:
        c, how = decode_step_cost(spec, g, prof, context, batch), "decode_step_cost"
    c = phase_band(c, prof)
    return float(c.total_s), float(c.low_s), float(c.high_s), f"{how}/{impl}"


def busy_calls_of(rec: dict) -> float:
    """Calls of a record's row that ran back to back before its median timed call: the warm-up calls and
    half of the other timed calls (``measured_s`` is the median)."""
    warm, timed = rec.get("warmup_calls") or 0, rec.get("timed_calls") or 1
    return float(warm) + (float(timed) - 1.0) / 2.0


def repredict(rec: dict) -> dict:
    """``rec`` with ``predicted_s``, ``prediction`` and ``error`` made again by :func:`predict` for the
    layers it ran on its GPU (``gpu_model``, else ``hw``); skipped rows are returned unchanged."""
    if rec.get("status") != "ok" or not rec.get("measured_s"):
        return rec
    spec, _ = resolve_model(
        rec.get("config") if rec.get("config") and Path(rec["config"]).is_file() else rec["model"]
    )
    spec = with_layers(spec, int(rec["layers_run"]))
    gpu = rec.get("gpu_model") or rec.get("hw")
    pred, lo, hi, how = predict_band(
        spec, gpu, rec["phase"], int(rec["batch"]), int(rec["context"]), busy_calls_of(rec)
    )
    return {
        **rec,
        "predicted_s": pred,
        "predicted_low_s": lo,
        "predicted_high_s": hi,
        "prediction": how,
        "error": pred / rec["measured_s"] - 1.0,
    }


def calls(phase: str, context: int, predicted_s: float, dry_run: bool = False) -> tuple[int, int]:
    """Warm-up calls and timed calls (or graph replays) of a row: fewer for long calls
    (1 warm-up and 2 timed for prefill at >= 64K tokens or >= 2 s a call)."""
    if dry_run:
        return 1, 3
    if phase == "prefill":
        if context >= 65536 or predicted_s >= 2.0:
            return 1, 2
        if predicted_s >= 0.5:
            return 1, 3
        return 1, int(min(10, max(3, math.ceil(1.0 / max(predicted_s, 1e-6)))))
    return 2, int(min(50, max(5, math.ceil(0.3 / max(predicted_s, 1e-6)))))


@dataclass
class Row:
    phase: str
    batch: int
    context: int
    predicted_s: float = 0.0
    prediction: str = ""
    warmup_calls: int = 0
    timed_calls: int = 0
    skip_reason: str | None = None

    @property
    def label(self) -> str:
        return f"{self.phase} B={self.batch} L={self.context}"

    def estimate_s(self) -> float:
        """GPU seconds the row should take (0 when skipped)."""
        if self.skip_reason:
            return 0.0
        extra = 2 if self.phase == "decode" else 0  # a decode row also runs an eager step and the capture
        return self.predicted_s * (self.warmup_calls + self.timed_calls + extra) + ROW_OVERHEAD_S


@dataclass
class ModelPlan:
    spec: ModelSpec  # with the layers that run
    layers_total: int
    config: str
    rows: list[Row] = field(default_factory=list)

    def estimate_s(self) -> float:
        if all(r.skip_reason for r in self.rows):
            return 0.0
        return self.spec.weight_bytes() / INIT_BYTES_PER_S + sum(r.estimate_s() for r in self.rows)


def plan(
    models: list[str],
    gpu: str,
    capacity_bytes: float,
    size: str,
    layers: int | None = None,
    max_prefill_call_s: float = MAX_PREFILL_CALL_S,
    phases: tuple[str, ...] = PHASES,
) -> list[ModelPlan]:
    """The rows of each model with predictions, call counts and skip reasons (memory, call time);
    only the rows of ``phases``."""
    pre_ctx, batched, dec_b, dec_ctx = SIZES[size]
    out = []
    for name in models:
        full, config = resolve_model(name)
        n = auto_layers(full, capacity_bytes) if layers is None else min(layers, full.num_layers)
        spec = with_layers(full, n)
        mp = ModelPlan(spec, full.num_layers, config)
        shapes = [("prefill", 1, c) for c in pre_ctx] + [("prefill", b, c) for b, c in batched]
        shapes += [("decode", b, c) for c in dec_ctx for b in dec_b]
        shapes = [sh for sh in shapes if sh[0] in phases]
        for phase, b, c in shapes:
            row = Row(phase, b, c)
            need = row_bytes(spec, phase, b, c)
            if need > MEMORY_SHARE * capacity_bytes:
                row.skip_reason = (
                    f"does not fit: needs {need / 2**30:.1f} GiB of "
                    f"{MEMORY_SHARE * capacity_bytes / 2**30:.1f} GiB"
                )
            else:
                row.predicted_s, row.prediction = predict(spec, gpu, phase, b, c)
                row.warmup_calls, row.timed_calls = calls(phase, c, row.predicted_s, size == "dry")
                if phase == "prefill" and row.predicted_s > max_prefill_call_s:
                    row.skip_reason = f"predicted {row.predicted_s:.1f} s a call > {max_prefill_call_s:g} s"
            mp.rows.append(row)
        out.append(mp)
    return out


def print_plan(plans: list[ModelPlan], gpu: str, console) -> float:
    """Print rows per model and the estimated GPU time; return the estimate, seconds."""
    total = sum(p.estimate_s() for p in plans)
    for p in plans:
        runs = [r for r in p.rows if not r.skip_reason]
        console.print(
            f"{p.spec.name}: {p.spec.num_layers} of {p.layers_total} layers, "
            f"{p.spec.weight_bytes() / 2**30:.1f} GiB of weights, {len(runs)} rows, "
            f"about {p.estimate_s():.0f} s"
        )
        for r in p.rows:
            if r.skip_reason:
                console.print(f"  skip {r.label}: {r.skip_reason}")
    console.print(
        f"estimated GPU time on {gpu}: {total:.0f} s ({total / 60:.1f} min) for "
        f"{sum(not r.skip_reason for p in plans for r in p.rows)} rows"
    )
    return total


# ---------------------------------------------------------------------------- report


def _percentile(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(xs, dtype=float), q))


def score(records: list[dict]) -> list[dict]:
    """Per GPU and phase (and layout, for ``perfmodel.validation.e2e_parallel`` records): rows, median / p90 / max
    absolute error and median signed error (fractions).
    Records that were skipped or lack a measurement or a prediction are left out."""
    groups: dict[tuple[str, str], list[float]] = {}
    inside: dict[tuple[str, str], list[bool]] = {}
    for r in records:
        if r.get("status") != "ok" or not r.get("measured_s") or r.get("predicted_s") is None:
            continue
        err = r.get("error")
        if err is None:
            err = r["predicted_s"] / r["measured_s"] - 1.0
        phase = (
            f"{r['config_label']} {r['phase']}" if r.get("config_label") else r["phase"]
        )  # multi-GPU layouts apart
        key = (r.get("gpu_model") or r.get("gpu") or "unknown", phase)
        groups.setdefault(key, []).append(float(err))
        if r.get("predicted_low_s") is not None and r.get("predicted_high_s") is not None:
            inside.setdefault(key, []).append(
                r["predicted_low_s"] <= r["measured_s"] <= r["predicted_high_s"]
            )
    out = []
    for (gpu, phase), errs in sorted(groups.items()):
        ab = [abs(e) for e in errs]
        out.append(
            {
                "gpu": gpu,
                "phase": phase,
                "rows": len(errs),
                "median_abs_error": _percentile(ab, 50),
                "p90_abs_error": _percentile(ab, 90),
                "max_abs_error": max(ab),
                "median_error": _percentile(errs, 50),
                # share of rows whose measurement lies in the predicted central 80% band (rows with a band)
                "in_band": (sum(inside[(gpu, phase)]) / len(inside[(gpu, phase)]))
                if inside.get((gpu, phase))
                else None,
                "band_rows": len(inside.get((gpu, phase), [])),
            }
        )
    return out


def markdown(scores: list[dict]) -> str:
    lines = [
        "| GPU | phase | rows | median abs error | p90 | max | median signed error | in the 80% band |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in scores:
        band = "-" if s.get("in_band") is None else f"{100 * s['in_band']:.0f}% of {s['band_rows']}"
        lines.append(
            f"| {s['gpu']} | {s['phase']} | {s['rows']} | {100 * s['median_abs_error']:.1f}% | "
            f"{100 * s['p90_abs_error']:.1f}% | {100 * s['max_abs_error']:.1f}% | "
            f"{100 * s['median_error']:+.1f}% | {band} |"
        )
    return "\n".join(lines) + "\n"


def read_records(paths: list[str]) -> list[dict]:
    recs = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise UsageError(f"record file not found: {p}")
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UsageError(f"{p}:{i}: not a JSON record") from None
    return recs


# ---------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (raised to main)
        raise UsageError(message)


def _phases(text: str) -> tuple[str, ...]:
    """``--phases``: a comma-separated list of :data:`PHASES`."""
    phases = tuple(x.strip() for x in text.split(","))
    if any(x not in PHASES for x in phases):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of {', '.join(PHASES)}")
    return phases


def _run_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m perfmodel.validation.e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for e2e_<gpu>.jsonl and e2e.log")
    p.add_argument(
        "--models", default="", help=f"comma-separated models (default: {','.join(DEFAULT_MODELS)})"
    )
    p.add_argument("--layers", type=int, default=None, help="layers to run per model (default: fit the GPU)")
    p.add_argument("--quick", action="store_true", help="fewer rows")
    p.add_argument(
        "--phases",
        type=_phases,
        default=PHASES,
        help="comma-separated phases to run (prefill, decode; default both)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="tiny configs on the CPU: checks the path, times nothing real"
    )
    p.add_argument(
        "--plan", action="store_true", help="print the rows and the estimated GPU time, run nothing"
    )
    p.add_argument(
        "--gpu",
        default="",
        help="hw name for the predictions (default: the GPU it runs on; "
        "h100-sxm-80gb for --plan and --dry-run)",
    )
    p.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting new rows after this many seconds"
    )
    p.add_argument(
        "--max-prefill-call-s",
        type=float,
        default=MAX_PREFILL_CALL_S,
        help="drop prefill rows predicted slower than this a call",
    )
    p.add_argument(
        "--moe-path",
        choices=("auto", "grouped", "loop"),
        default="auto",
        help="MoE experts: grouped GEMMs where they run (auto), only grouped, or one GEMM pair per expert",
    )
    p.add_argument(
        "--rope",
        choices=("fused", "torch"),
        default="fused",
        help="RoPE and the KV append: one fused kernel per layer as engines run them (fused), or "
        "PyTorch elementwise calls (torch)",
    )
    return p


def _report_cli(argv: list[str]) -> int:
    p = _Parser(
        prog="python -m perfmodel.validation.e2e report", description="score e2e records per GPU and phase"
    )
    p.add_argument("files", nargs="+", help="e2e_<gpu>.jsonl files")
    p.add_argument("--md", type=Path, default=None, help="write the markdown table here too")
    p.add_argument(
        "--repredict",
        action="store_true",
        help="price every measured row again with the current code and profiles (the stored "
        "prediction is the one made when it was measured); rewrites the files",
    )
    a = p.parse_args(argv)
    recs = read_records(a.files)
    if a.repredict:
        for path in a.files:
            rows = read_records([path])
            Path(path).write_text("".join(json.dumps(repredict(r)) + "\n" for r in rows))
        recs = read_records(a.files)
    text = markdown(score(recs))
    if a.md is not None:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(text)
    print(text, end="")
    return 0


def _run_cli(argv: list[str]) -> int:
    a = _run_parser().parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True)
    size = "dry" if a.dry_run else ("quick" if a.quick else "full")
    if a.models.strip():
        models = [m.strip() for m in a.models.split(",")]
        if any(not m for m in models):
            raise UsageError(f"--models {a.models!r}: empty name in the list")
    else:
        models = list(DRY_MODELS if a.dry_run else DEFAULT_MODELS)
    if a.layers is not None and a.layers < 1:
        raise UsageError(f"--layers must be at least 1, got {a.layers}")
    if a.budget_s <= 0:
        raise UsageError(f"--budget-s must be positive, got {a.budget_s}")
    for m in models:
        resolve_model(m)  # unknown or unsupported models fail here, before anything runs
    if a.gpu:
        from perfmodel.hw.loader import load_gpu

        try:
            load_gpu(a.gpu)
        except Exception as exc:  # the hw loader's own error says which names exist
            raise UsageError(f"--gpu {a.gpu!r}: {str(exc).splitlines()[0]}") from None
    if a.plan:
        gpu = a.gpu or "h100-sxm-80gb"
        from perfmodel.hw.loader import load_gpu

        cap = DRY_RUN_CAPACITY_BYTES if a.dry_run else load_gpu(gpu).hbm_usable_bytes
        print_plan(plan(models, gpu, cap, size, a.layers, a.max_prefill_call_s, a.phases), gpu, console)
        return 0
    if a.out is None:
        raise UsageError("--out DIR is required (or --plan)")
    from perfmodel.validation import e2e_measure

    return e2e_measure.run(a, models, size, console)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "report":
            return _report_cli(argv[1:])
        return _run_cli(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
