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


def load_runs(path: Path = DATA_FILE) -> list[dict]:
    return json.loads(Path(path).read_text())["runs"]


def simulate_run(run: dict, engine: str = "vllm-0.6-multistep", reserve_fraction: float = 0.05) -> dict:
    """The engine-style metrics of the simulator on ``run``'s requests (all sent at once)."""
    from perfmodel.serving.deployment import Deployment
    from perfmodel.serving.simulator import simulate
    from perfmodel.serving.workload import Requests

    p = np.asarray(run["input_lens"], dtype=np.int64)
    o = np.maximum(np.asarray(run["output_lens"], dtype=np.int64), 1)
    dep = Deployment.make(run["model"], run["gpu"], tp=run.get("tp", 1), engine=engine,
                          reserve_fraction=reserve_fraction)
    return simulate(dep, Requests.of(np.zeros(p.size), p, o), record_timeline=False).engine_metrics()


def compare(runs: list[dict] | None = None, engine: str = "vllm-0.6-multistep") -> list[dict]:
    """One row per run and published metric: published, simulated, relative error (sim / pub - 1)."""
    rows = []
    for run in runs if runs is not None else load_runs():
        sim = simulate_run(run, engine)
        for metric, pub in run["published"].items():
            s = sim[metric]
            rows.append({"id": run["id"], "gpu": run["gpu"], "model": run["model"], "workload": run["workload"],
                         "engine_version": run["engine_version"], "url": run["url"], "metric": metric,
                         "published": float(pub), "simulated": float(s), "error": float(s) / float(pub) - 1.0,
                         "measured_profile": run["gpu"] in MEASURED_GPUS})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as the Markdown table of ``docs/serving.md`` (values rounded for reading)."""
    out = ["| run | GPU | model | workload | metric | published | simulated | error |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| [{r['id']}]({r['url']}) | {r['gpu']} | {r['model']} | {r['workload']} | {r['metric']} | "
                   f"{r['published']:.4g} | {r['simulated']:.4g} | {100 * r['error']:+.0f} % |")
    return "\n".join(out)


def summary_line(rows: list[dict]) -> str:
    """The median absolute errors on measured and on other profiles (the sentence the doc carries)."""
    parts = []
    for label, measured in (("measured profiles", True), ("transferred or datasheet profiles", False)):
        vals = []
        for metric in ("mean_ttft_ms", "median_tpot_ms", "output_throughput"):
            errs = [abs(r["error"]) for r in rows if r["metric"] == metric and r["measured_profile"] == measured]
            vals.append(f"{round(100 * float(np.median(errs)))} %" if errs else "-")
        parts.append(f"median |error| on {label}: TTFT {vals[0]}, TPOT {vals[1]}, output throughput {vals[2]}")
    return "; ".join(parts)


if __name__ == "__main__":
    rows = compare()
    print(markdown_table(rows))
    print()
    print(summary_line(rows))
