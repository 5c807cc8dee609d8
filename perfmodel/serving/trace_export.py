"""Chrome / Perfetto trace of a simulation's iterations (the JSON "traceEvents" format).

Each replica is a process; each iteration a complete event ("X") on its
thread, with the batch composition as arguments; KV occupancy and the queue
length are counter events ("C").  Open the file at https://ui.perfetto.dev.
"""

from __future__ import annotations

import json
from pathlib import Path

from perfmodel.serving.metrics import SimResult


def trace_events(result: SimResult, max_events: int | None = None) -> list[dict]:
    """Events in microseconds, the unit of the format."""
    events: list[dict] = []
    rows = result.timeline_rows if max_events is None else result.timeline_rows[:max_events]
    for rep in sorted({r[0] for r in rows}):
        events.append(
            {"ph": "M", "name": "process_name", "pid": rep, "tid": 0, "args": {"name": f"replica {rep}"}}
        )
    block = result.kv_bytes_per_block_per_gpu
    for rep, t, dur, b, ptoks, pdone, blocks, resident, waiting, sout, sin in rows:
        name = "mixed" if b and ptoks else ("prefill" if ptoks else "decode")
        ts = t * 1e6
        events.append(
            {
                "ph": "X",
                "name": name,
                "pid": rep,
                "tid": 0,
                "ts": ts,
                "dur": dur * 1e6,
                "args": {
                    "decode_batch": b,
                    "prefill_tokens": ptoks,
                    "prefills_done": pdone,
                    "swap_out_bytes": sout,
                    "swap_in_bytes": sin,
                },
            }
        )
        events.append(
            {
                "ph": "C",
                "name": "kv",
                "pid": rep,
                "ts": ts,
                "args": {
                    "kv_bytes_per_gpu": blocks * block,
                    "resident_requests": resident,
                    "waiting_requests": waiting,
                },
            }
        )
    return events


def write_trace_json(result: SimResult, path: str | Path, max_events: int | None = None) -> int:
    """Write the trace; returns the number of iterations written.

    Parameters
    ----------
    result : SimResult
        The simulation.
    path : str or Path
        The output file (Chrome trace JSON).
    max_events : int, optional
        Write only the first ``max_events`` iterations; default: all.

    Returns
    -------
    int
        Iterations written.
    """
    ev = trace_events(result, max_events)
    Path(path).write_text(json.dumps({"traceEvents": ev, "displayTimeUnit": "ms"}))
    return sum(1 for e in ev if e["ph"] == "X")
