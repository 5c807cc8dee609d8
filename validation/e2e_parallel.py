"""``python -m perfmodel.validation.e2e_parallel --out DIR``: whole models over TP, PP and EP, measured against the model.

One process per GPU (:mod:`perfmodel.validation.spawn`, NCCL with ``device_id``, NVLink multicast off), each
holding its shard of a random-weight model built by :mod:`perfmodel.validation.e2e_model`:

- TP ``t`` (Megatron-style): QKV and gate/up column-parallel (``q_heads / t``, ``kv_heads / t``,
  ``intermediate / t`` per rank), O and down row-parallel with an all-reduce of their output, the
  LM head vocab-parallel with its fp32 logits all-gathered, as ``perfmodel.layers`` prices it;
- PP 2: the first half of the layers and the embedding on rank 0, the rest and the LM head on
  rank 1; the residual stream goes 0 -> 1 and a ``[B, hidden]`` hand-back (the next token) 1 -> 0;
- EP ``e`` (MoE): attention data-parallel (``batch / e`` sequences a rank), each rank holding
  ``experts / e`` experts; the routed token copies go to their experts' ranks by an all-to-all
  of equal capacity (``tokens * top_k / e`` rows a rank: the uniform load the model prices) and
  come back by another; the received rows are split evenly over the local experts.

Prefill: one unchunked pass, eager, CUDA events; decode: one step captured in a CUDA graph with
its collectives and replayed; both the slower rank's median.  Each row is compared with
``perfmodel.analyze(..., tp=, pp=, ep=, mode="calibrated", chunk_tokens=None)`` of the layers
that ran.  PP decode runs at batch 1 only (a step without micro-batches; the model pipelines
micro-batches at larger batches).  ``--plan`` prints the rows and the estimated GPU time;
``--dry-run`` runs tiny configs on the CPU with gloo at world 2 (no graphs).  Scoring:
``python -m perfmodel.validation.e2e report FILES``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from perfmodel.models import ModelSpec
from perfmodel.validation.e2e import (
    MEMORY_SHARE,
    RECORD_KEYS,
    Row,
    UsageError,
    calls,
    resolve_model,
    row_bytes,
    with_layers,
)

DENSE, MOE = "llama-3-70b", "mixtral-8x7b"
DRY_DENSE, DRY_MOE = "tiny-dense", "tiny-moe"
#: layers run by default (the full models do not fit TP 2 with long caches); a multiple of 2 for PP 2
DEFAULT_LAYERS = {DENSE: 16, MOE: 8, DRY_DENSE: 2, DRY_MOE: 2}
#: (prefill contexts, decode batches, decode contexts) per size
SIZES = {
    "full": ((4096, 8192, 16384, 32768, 65536), (1, 8, 64), (4096, 16384, 65536)),
    "quick": ((4096, 32768), (1, 64), (4096, 32768)),
    "dry": ((32,), (2,), (32,)),
}
PARALLEL_KEYS = ("tp", "pp", "ep", "world", "config_label", "nccl", "nccl_env", "backend")
#: seconds per configuration for process start, NCCL initialisation and weight initialisation
CONFIG_OVERHEAD_S = 25.0


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    ep: int = 1

    @property
    def world(self) -> int:
        return self.tp * self.pp * (self.ep if self.tp == 1 else 1)

    @property
    def label(self) -> str:
        return "_".join(f"{k}{v}" for k, v in (("tp", self.tp), ("pp", self.pp), ("ep", self.ep)) if v > 1)


def layouts(world: int, dry_run: bool = False) -> list[tuple[str, Layout]]:
    """The configurations that fit ``world`` GPUs: TP 2/4/8 and PP 2 of the dense model, EP 2/4 of the MoE."""
    dense, moe = (DRY_DENSE, DRY_MOE) if dry_run else (DENSE, MOE)
    out = (
        [(dense, Layout(tp=t)) for t in (2, 4, 8)]
        + [(dense, Layout(pp=2))]
        + [(moe, Layout(ep=e)) for e in (2, 4)]
    )
    return [(m, lay) for m, lay in out if lay.world <= world]


def shard(spec: ModelSpec, lay: Layout) -> ModelSpec:
    """What one rank holds: a TP shard's heads, MLP width and vocab; a PP stage's layers; an EP rank's experts."""
    s = spec
    if lay.tp > 1:
        t = lay.tp
        if s.q_heads % t or s.kv_heads % t or s.intermediate % t:
            raise UsageError(f"{s.name}: TP {t} does not divide its heads ({s.q_heads}/{s.kv_heads}) and MLP")
        s = dataclasses.replace(
            s,
            q_heads=s.q_heads // t,
            kv_heads=s.kv_heads // t,
            intermediate=s.intermediate // t,
            vocab=-(-s.vocab // t),
        )
    if lay.pp > 1:
        if s.num_layers % lay.pp:
            raise UsageError(f"{s.name}: {s.num_layers} layers do not split into {lay.pp} stages")
        s = dataclasses.replace(s, num_layers=s.num_layers // lay.pp)
    if lay.ep > 1:
        if s.moe is None or s.moe.num_experts % lay.ep:
            raise UsageError(f"{s.name}: EP {lay.ep} needs experts divisible by it")
        s = dataclasses.replace(s, moe=dataclasses.replace(s.moe, num_experts=s.moe.num_experts // lay.ep))
    return s


def predict(
    spec: ModelSpec, gpu: str, phase: str, batch: int, context: int, lay: Layout
) -> tuple[float, str]:
    """Predicted seconds of the row: ``analyze(..., tp, pp, ep, mode="calibrated", chunk_tokens=None)``'s
    ``prefill_s`` or ``decode_s_per_token``; where ``analyze`` refuses the scenario as not fitting its
    memory budget, the same phase functions it calls (named in the second value)."""
    import perfmodel
    from perfmodel.hw.loader import load_gpu
    from perfmodel import parallel as par
    from perfmodel.calibration import Mode, resolve_profile
    from perfmodel.errors import DoesNotFitError
    from perfmodel.phases import decode_step_cost, prefill_cost

    g = load_gpu(gpu)
    prof = resolve_profile(g, Mode.CALIBRATED)
    try:
        d = perfmodel.analyze(
            spec,
            g,
            context_len=context,
            output_tokens=1,
            batch=batch,
            mode="calibrated",
            chunk_tokens=None,
            tp=lay.tp,
            pp=lay.pp,
            ep=lay.ep,
            profile=prof,
        ).to_dict()
        return float(
            d["prefill_s"] if phase == "prefill" else d["decode_s_per_token"]
        ), f"analyze/{lay.label}"
    except DoesNotFitError:
        pass
    if lay.pp == 1 and lay.ep == 1:
        if phase == "prefill":
            return float(
                prefill_cost(spec, g, prof, context, batch, tp=lay.tp, chunk_tokens=None).total_s
            ), f"prefill_cost/{lay.label}"
        return float(
            decode_step_cost(spec, g, prof, context, batch, tp=lay.tp).total_s
        ), f"decode_step_cost/{lay.label}"
    ring = par.ring_step_model(prof)
    ph = par.parallel_phases(
        spec,
        g,
        prof,
        context,
        1,
        batch,
        tp=lay.tp,
        pp=lay.pp,
        ep=lay.ep,
        chunk_tokens=None,
        ring_overlap=1.0 if ring is None else ring,
    )
    return float(
        (ph.prefill if phase == "prefill" else ph.decode_step).total_s
    ), f"parallel_phases/{lay.label}"


@dataclass
class ConfigPlan:
    spec: ModelSpec  # the layers that run, whole (not sharded)
    layout: Layout
    layers_total: int
    config: str
    rows: list[Row] = field(default_factory=list)

    def estimate_s(self) -> float:
        runs = [r for r in self.rows if not r.skip_reason]
        return CONFIG_OVERHEAD_S + sum(r.estimate_s() for r in runs) if runs else 0.0


def local_batch(batch: int, lay: Layout) -> int:
    return batch // lay.ep if lay.ep > 1 else batch


def plan(
    world: int, gpu: str, capacity_bytes: float, size: str, layers: int | None = None, dry_run: bool = False
) -> list[ConfigPlan]:
    """Rows of every configuration that fits ``world`` GPUs, with predictions and skip reasons."""
    pre_ctx, dec_b, dec_ctx = SIZES[size]
    out = []
    for name, lay in layouts(world, dry_run):
        full, config = resolve_model(name)
        n = min(layers or DEFAULT_LAYERS.get(name, full.num_layers), full.num_layers)
        spec = with_layers(full, n)
        part = shard(spec, lay)
        cp = ConfigPlan(spec, lay, full.num_layers, config)
        scale = lay.ep  # EP: every rank holds batch / ep of the sequences
        shapes = [("prefill", scale, c) for c in pre_ctx] + [
            ("decode", b * scale, c) for c in dec_ctx for b in dec_b
        ]
        for phase, b, c in shapes:
            row = Row(phase, b, c)
            need = row_bytes(part, phase, local_batch(b, lay), c)
            if lay.pp > 1 and phase == "decode" and b > 1:
                row.skip_reason = "PP decode runs at batch 1 only (no micro-batched pipeline built)"
            elif need > MEMORY_SHARE * capacity_bytes:
                row.skip_reason = (
                    f"does not fit: needs {need / 2**30:.1f} GiB a rank of "
                    f"{MEMORY_SHARE * capacity_bytes / 2**30:.1f} GiB"
                )
            else:
                row.predicted_s, row.prediction = predict(spec, gpu, phase, b, c, lay)
                row.warmup_calls, row.timed_calls = calls(phase, c, row.predicted_s, dry_run)
            cp.rows.append(row)
        out.append(cp)
    return out


def print_plan(plans: list[ConfigPlan], gpu: str, world: int) -> float:
    total = sum(p.estimate_s() for p in plans)
    for p in plans:
        runs = [r for r in p.rows if not r.skip_reason]
        print(
            f"{p.spec.name} {p.layout.label}: {p.spec.num_layers} of {p.layers_total} layers, {len(runs)} rows, "
            f"about {p.estimate_s():.0f} s"
        )
        for r in p.rows:
            if r.skip_reason:
                print(f"  skip {r.label}: {r.skip_reason}")
    print(
        f"estimated GPU time on {world} x {gpu}: {total:.0f} s ({total / 60:.1f} min) for "
        f"{sum(not r.skip_reason for p in plans for r in p.rows)} rows"
    )
    return total


def row_item(label: str, row: Row) -> str:
    """The key of a row's record: ``<layout>|<phase>:<batch>:<context>``."""
    return f"{label}|{row.phase}:{row.batch}:{row.context}"


def record_item(rec: dict) -> str:
    return f"{rec.get('config_label')}|{rec['phase']}:{rec['batch']}:{rec['context']}"


def record_base(cp: ConfigPlan, gpu: str, dry_run: bool) -> dict:
    lay = cp.layout
    return {
        **dict.fromkeys(RECORD_KEYS + PARALLEL_KEYS),
        "model": cp.spec.name,
        "config": cp.config,
        "layers_run": cp.spec.num_layers,
        "layers_total": cp.layers_total,
        "chunk_tokens": None,
        "hw": gpu,
        "dry_run": dry_run,
        "tp": lay.tp,
        "pp": lay.pp,
        "ep": lay.ep,
        "world": lay.world,
        "backend": "gloo" if dry_run else "nccl",
        "config_label": lay.label,
    }


def run(
    out: Path,
    world: int,
    gpu: str,
    capacity_bytes: float,
    size: str,
    layers: int | None,
    budget_s: float,
    dry_run: bool,
    only: str = "",
) -> int:
    """Measure every configuration's rows in its own launch; records go to ``out/e2e_parallel_<gpu>.jsonl``."""
    from perfmodel.validation import e2e_parallel_measure as M
    from perfmodel.validation.spawn import read_jsonl, run_items

    plans = plan(world, gpu, capacity_bytes, size, layers, dry_run)
    if only:
        plans = [p for p in plans if p.layout.label in only.split(",")]
    print_plan(plans, gpu, world)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"e2e_parallel_{'cpu' if dry_run else gpu}.jsonl"
    fails: list[dict] = []
    start = time.time()
    with open(path, "a") as fh:  # skipped rows are written first, with the reason
        for cp in plans:
            base = record_base(cp, gpu, dry_run)
            for r in cp.rows:
                if r.skip_reason:
                    fh.write(
                        json.dumps(
                            {
                                **base,
                                "phase": r.phase,
                                "batch": r.batch,
                                "context": r.context,
                                "status": "skipped",
                                "skip_reason": r.skip_reason,
                            }
                        )
                        + "\n"
                    )
    worlds = sorted({cp.layout.world for cp in plans})
    for i, w in enumerate(worlds):  # one launch per world size: the ranks build each layout's model in turn
        group = [cp for cp in plans if cp.layout.world == w and any(not r.skip_reason for r in cp.rows)]
        if not group:
            continue
        left = budget_s - (time.time() - start)
        share = (
            left
            * sum(p.estimate_s() for p in group)
            / max(sum(p.estimate_s() for p in plans if p.layout.world >= w), 1e-9)
        )
        jobs = [
            {
                "base": record_base(cp, gpu, dry_run),
                "rows": [dataclasses.asdict(r) for r in cp.rows if not r.skip_reason],
            }
            for cp in group
        ]
        items = [row_item(cp.layout.label, r) for cp in group for r in cp.rows if not r.skip_reason]
        f = run_items(
            M.worker,
            w,
            items,
            path,
            max(share, 60.0 if not dry_run else 30.0),
            (json.dumps({"configs": jobs, "dry_run": dry_run}),),
            stall_s=120.0 if not dry_run else 60.0,
            key=lambda r: record_item(r) if r.get("status") != "skipped" else "",
        )
        fails += f
    (out / "e2e_parallel_failures.json").write_text(json.dumps(fails, indent=1))
    recs = [r for r in read_jsonl(path) if r.get("status") == "ok"]
    print(
        f"{'model':14s} {'layout':8s} {'phase':8s} {'B':>4s} {'ctx':>6s} {'measured':>10s} {'predicted':>10s} error"
    )
    for r in recs:
        print(
            f"{r['model']:14s} {r['config_label']:8s} {r['phase']:8s} {r['batch']:4d} {r['context']:6d} "
            f"{r['measured_s'] * 1e3:9.2f}ms {r['predicted_s'] * 1e3:9.2f}ms {100 * r['error']:+.1f}%"
        )
    if fails:
        print("failures:", json.dumps(fails))
    return 0 if recs else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m perfmodel.validation.e2e_parallel", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--world", type=int, default=0, help="GPUs to use (default: all here; 2 for --dry-run)")
    p.add_argument(
        "--layers", type=int, default=None, help="layers to run (default: 16 of Llama-3-70B, 8 of Mixtral)"
    )
    p.add_argument("--quick", action="store_true", help="fewer rows")
    p.add_argument("--only", default="", help="comma-separated layouts to run (tp2, tp4, tp8, pp2, ep2, ep4)")
    p.add_argument(
        "--gpu",
        default="",
        help="hw name for the predictions (default: the GPU here; h100-sxm-80gb for --plan and --dry-run)",
    )
    p.add_argument("--budget-s", type=float, default=540.0, help="stop starting rows after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU with gloo at world 2")
    p.add_argument(
        "--plan", action="store_true", help="print the rows and the estimated GPU time, run nothing"
    )
    try:
        a = p.parse_args(argv)
        size = "dry" if a.dry_run else ("quick" if a.quick else "full")
        from perfmodel.hw.loader import load_gpu

        if a.plan or a.dry_run:
            gpu = a.gpu or "h100-sxm-80gb"
            world = a.world or (2 if a.dry_run else 8)
            cap = 4 * 2**30 if a.dry_run else load_gpu(gpu).hbm_usable_bytes
        else:
            import torch

            from perfmodel.validation.records import canonical_gpu

            if not torch.cuda.is_available():
                raise UsageError("no CUDA device; use --dry-run or --plan")
            gpu = a.gpu or canonical_gpu(torch.cuda.get_device_name(0)) or ""
            if not gpu:
                raise UsageError("no hw profile for this GPU; pass --gpu NAME")
            world = a.world or torch.cuda.device_count()
            cap = float(torch.cuda.mem_get_info(0)[0])
        if a.plan:
            print_plan(plan(world, gpu, cap, size, a.layers, a.dry_run), gpu, world)
            return 0
        if a.out is None:
            raise UsageError("--out DIR is required (or --plan)")
        return run(a.out, world, gpu, cap, size, a.layers, a.budget_s, a.dry_run, a.only)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
