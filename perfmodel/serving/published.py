"""Published engine benchmarks replayed by the simulator (``perfmodel/serving/data/published_engine_results.json``).

Each run lists its requests' prompt and output token counts, the GPU, the model and the published
metrics (engine-style names); :func:`compare` simulates the same requests under an engine file and
returns one row per (run, metric) with the relative error.  ``docs/serving.md``'s table is this
function's output, and a test recomputes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATA_FILE = Path(__file__).resolve().parent / "data" / "published_engine_results.json"
#: GPUs with a measured calibration profile (hw/data/profiles); the others are transferred or datasheet.
MEASURED_GPUS = ("h100-sxm-80gb", "h200-sxm-141gb")
#: The engine file the runs are replayed under unless a run names its own (``engine``).
DEFAULT_ENGINE = "vllm-0.6-multistep"


def load_runs(path: Path = DATA_FILE) -> list[dict]:
    return json.loads(Path(path).read_text())["runs"]


def benchmark_metrics(ttft_s: np.ndarray, e2e_s: np.ndarray, output_lens: np.ndarray, span_s: float) -> dict:
    """The three compared metrics as ``benchmark_serving.py`` computes them from per-request timings.

    A request with ``output_lens`` 0 (its stream carried no text) has TTFT 0 in the mean, as the
    benchmark records it; TPOT is ``(e2e - ttft) / (output - 1)`` over the requests with more than one
    output token; output throughput is the output tokens over ``span_s`` (seconds, first send to
    last finish).

    Parameters
    ----------
    ttft_s, e2e_s : ndarray, seconds
        Per request.
    output_lens : ndarray, tokens
        The published output token counts.
    span_s : float, seconds

    Returns
    -------
    dict
        ``mean_ttft_ms``, ``median_tpot_ms`` (ms) and ``output_throughput`` (tokens/s).
    """
    out = np.asarray(output_lens, dtype=np.int64)
    ttft = np.where(out > 0, ttft_s, 0.0)
    many = out > 1
    tpot = (e2e_s[many] - ttft_s[many]) / (out[many] - 1)
    return {
        "mean_ttft_ms": 1e3 * float(ttft.mean()),
        "median_tpot_ms": 1e3 * float(np.median(tpot)),
        "output_throughput": float(out.sum()) / span_s,
    }


def simulate_run(run: dict, engine: str | None = None) -> dict:
    """The simulator's metrics on ``run``'s requests (all sent at once), counted as the benchmark counts.

    The engine is the run's ``engine`` (default :data:`DEFAULT_ENGINE`) with the run's HBM share
    (``gpu_memory_utilization``, default 0.95: the LambdaLabsML runs).
    """
    from perfmodel.serving.deployment import Deployment
    from perfmodel.serving.simulator import simulate
    from perfmodel.serving.workload import Requests

    p = np.asarray(run["input_lens"], dtype=np.int64)
    out = np.asarray(run["output_lens"], dtype=np.int64)
    dep = Deployment.make(
        run["model"],
        run["gpu"],
        tp=run.get("tp", 1),
        engine=engine or run.get("engine", DEFAULT_ENGINE),
        reserve_fraction=1.0 - run.get("gpu_memory_utilization", 0.95),
    )
    res = simulate(dep, Requests.of(np.zeros(p.size), p, np.maximum(out, 1)), record_timeline=False)
    return benchmark_metrics(res.ttft_s, res.e2e_s, out, res.makespan_s)


def compare(runs: list[dict] | None = None, engine: str | None = None) -> list[dict]:
    """One row per run and published metric: published, simulated, relative error (sim / pub - 1)."""
    rows = []
    for run in runs if runs is not None else load_runs():
        sim = simulate_run(run, engine)
        for metric, pub in run["published"].items():
            s = sim[metric]
            rows.append(
                {
                    "id": run["id"],
                    "gpu": run["gpu"],
                    "tp": run.get("tp", 1),
                    "model": run["model"],
                    "workload": run["workload"],
                    "engine_version": run["engine_version"],
                    "url": run["url"],
                    "metric": metric,
                    "published": float(pub),
                    "simulated": float(s),
                    "error": float(s) / float(pub) - 1.0,
                    "measured_profile": run["gpu"] in MEASURED_GPUS,
                }
            )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as the Markdown table of ``docs/serving.md`` (values rounded for reading)."""
    out = [
        "| run | GPU | TP | model | workload | metric | published | simulated | error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        out.append(
            f"| [{r['id']}]({r['url']}) | {r['gpu']} | {r['tp']} | {r['model']} | {r['workload']} | {r['metric']} | "
            f"{r['published']:.4g} | {r['simulated']:.4g} | {100 * r['error']:+.0f} % |"
        )
    return "\n".join(out)


def summary_line(rows: list[dict]) -> str:
    """The median absolute errors on measured and on other profiles (the sentence the doc carries)."""
    parts = []
    for label, measured in (("measured profiles", True), ("transferred or datasheet profiles", False)):
        vals = []
        for metric in ("mean_ttft_ms", "median_tpot_ms", "output_throughput"):
            errs = [
                abs(r["error"]) for r in rows if r["metric"] == metric and r["measured_profile"] == measured
            ]
            vals.append(f"{round(100 * float(np.median(errs)))} %" if errs else "-")
        parts.append(
            f"median |error| on {label}: TTFT {vals[0]}, TPOT {vals[1]}, output throughput {vals[2]}"
        )
    return "; ".join(parts)


def without_front_end_line() -> str:
    """The same medians with the default engine's front end taken out (``frontend_s`` 0)."""
    from dataclasses import replace

    from perfmodel.serving.engine import load_engine

    bare = replace(load_engine(DEFAULT_ENGINE), frontend_s=0.0)
    return "without the front end: " + summary_line(compare(engine=bare))


def without_custom_all_reduce_line() -> str:
    """The same medians with the default engine's peer all-reduce taken out (every all-reduce on NCCL)."""
    from dataclasses import replace

    from perfmodel.serving.engine import load_engine

    nccl = replace(load_engine(DEFAULT_ENGINE), custom_all_reduce=None)
    return "with NCCL for every all-reduce: " + summary_line(compare(engine=nccl))


if __name__ == "__main__":
    rows = compare()
    print(markdown_table(rows))
    print()
    print(summary_line(rows))
    print()
    print(without_front_end_line())
    print()
    print(without_custom_all_reduce_line())
