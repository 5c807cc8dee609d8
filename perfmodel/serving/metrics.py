"""Results of a simulation: per-request table, iteration timeline, summary metrics.

Definitions (seconds):

- TTFT: first token (end of the iteration that finishes the prompt's prefill) minus arrival.
- TPOT: (finish - first token) / (output_len - 1); undefined for one-token outputs.
- E2E: finish minus arrival.
- Throughput: output tokens / (last finish - first arrival).
- Goodput: requests per second that meet every given SLO.
- Peak concurrency: the most requests with KV resident in one replica's HBM at once.
- Swap bytes: KV moved over PCIe, summed over a replica's GPUs.
- Cached prefixes (``prefix_cache``): hits, prompt tokens served from the cache, and the loads from
  host or SSD (bytes summed over a replica's GPUs; seconds summed over loads, before overlap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from perfmodel.errors import InvalidInputError

PERCENTILES = (50, 90, 99)
TIMELINE_COLUMNS = (
    "replica",
    "start_s",
    "duration_s",
    "decode_batch",
    "prefill_tokens",
    "prefills_done",
    "kv_blocks_used",
    "resident_requests",
    "waiting_requests",
    "swap_out_bytes",
    "swap_in_bytes",
)


@dataclass(frozen=True)
class Slo:
    """Latency targets: ``ttft_s`` at percentile ``ttft_pct``, ``tpot_s`` at ``tpot_pct`` (None: no target)."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    ttft_pct: float = 90.0
    tpot_pct: float = 90.0

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InvalidInputError(f"SLO {name} must be a number > 0 seconds, got {v!r}")
        for name in ("ttft_pct", "tpot_pct"):
            v = getattr(self, name)
            if not 0 < v <= 100:
                raise InvalidInputError(f"SLO {name} must be in (0, 100], got {v!r}")


#: Engine-style statistics (``vllm bench serve`` names): the name's prefix and its percentile (None: mean).
ENGINE_STATS = (("mean", None), ("median", 50), ("p90", 90), ("p99", 99))
#: Engine-style metric names and the :class:`SimResult` per-request arrays (seconds) they come from.
ENGINE_METRICS = (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("itl", None), ("e2el", "e2e_s"))


def _weighted_stats_ms(values_s: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    """Mean and nearest-rank percentiles of ``values_s`` counted ``weights`` times each, in ms."""
    ok = np.isfinite(values_s) & (weights > 0)
    v, w = values_s[ok], weights[ok].astype(np.float64)
    if v.size == 0:
        return {k: None for k, _ in ENGINE_STATS}
    order = np.argsort(v, kind="stable")
    v, cum = v[order], np.cumsum(w[order])
    out: dict[str, float | None] = {}
    for k, p in ENGINE_STATS:
        if p is None:
            out[k] = float(np.dot(v, w[order]) / cum[-1]) * 1e3
        else:
            out[k] = float(v[min(int(np.searchsorted(cum, p / 100.0 * cum[-1])), v.size - 1)]) * 1e3
    return out


def _pcts(x: np.ndarray) -> dict[str, float | None]:
    """Percentiles and mean of the finite values; ``None`` each when there are none (e.g. TPOT when every
    request generates one token: there is no time between output tokens to measure)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {f"p{p}": None for p in PERCENTILES} | {"mean": None}
    q = np.percentile(x, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, q)} | {"mean": float(x.mean())}


@dataclass(frozen=True)
class SimResult:
    """Everything a simulation produced.  Arrays are per request, in arrival order."""

    deployment: Any
    arrival_s: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    preemptions: np.ndarray
    replica: np.ndarray
    timeline_rows: list
    kv_bytes_per_block_per_gpu: float
    capacity_blocks: int
    peak_concurrency: int
    swap_out_bytes: float
    swap_in_bytes: float
    iterations: int
    wall_s: float
    notes: tuple[str, ...] = ()  # analyze's notes (a request beyond the trained window: perfmodel.scenario)
    step_durations_s: np.ndarray | None = None  # per iteration that decodes: its duration (ITL samples) ...
    step_batches: np.ndarray | None = (
        None  # ... and its decode batch (each sequence's token waited that long)
    )
    prefix_id: np.ndarray | None = None  # cached prefixes: each request's prefix (-1: none) ...
    prefix_hit: np.ndarray | None = None  # ... whether the cache held it ...
    cached_tokens: np.ndarray | None = None  # ... and its prompt tokens whose KV came from the cache
    prefix_loads: int = 0  # prefixes loaded from host or SSD, their bytes (all GPUs) and seconds
    prefix_load_bytes: float = 0.0
    prefix_load_s: float = 0.0

    @classmethod
    def collect(cls, dep, mem, reqs, table, replicas, wall_s: float) -> SimResult:
        """The result of a finished simulation, from its replicas' logs (``wall_s``: host seconds it ran).

        Parameters
        ----------
        dep : Deployment
            The simulated deployment.
        mem : ReplicaMemory
            Each replica's memory (block size in bytes, capacity in blocks).
        reqs : Requests
            The simulated requests.
        table
            The per-request times (arrival, first token and finish, seconds), preemptions and replica.
        replicas : sequence
            The finished replicas, with their iteration logs and swap bytes.
        wall_s : float, seconds
            Host time the simulation took.

        Returns
        -------
        SimResult
            The result.
        """
        rows = [row for rep in replicas for row in rep.log]
        rows.sort(key=lambda r: (r[1], r[0]))
        return cls(
            deployment=dep,
            arrival_s=np.array(table.arrival),
            prompt_len=reqs.prompt_len,
            output_len=reqs.output_len,
            step_durations_s=np.array([d for rep in replicas for d in rep.step_durations], dtype=np.float64),
            step_batches=np.array([b for rep in replicas for b in rep.step_batches], dtype=np.int64),
            first_token_s=np.array(table.first_token),
            finish_s=np.array(table.finish),
            preemptions=np.array(table.preemptions, dtype=np.int64),
            replica=np.array(table.replica, dtype=np.int64),
            timeline_rows=rows,
            kv_bytes_per_block_per_gpu=mem.block_bytes_per_gpu,
            capacity_blocks=mem.capacity_blocks,
            peak_concurrency=max(r.peak_resident for r in replicas),
            swap_out_bytes=sum(r.swap_out_bytes for r in replicas),
            swap_in_bytes=sum(r.swap_in_bytes for r in replicas),
            iterations=sum(r.iterations for r in replicas),
            wall_s=wall_s,
            prefix_id=reqs.prefix_id,
            prefix_hit=reqs.prefix_hit,
            cached_tokens=reqs.cached_tokens() if reqs.prefixes else None,
            prefix_loads=sum(r.prefix_loads for r in replicas),
            prefix_load_bytes=sum(r.prefix_load_bytes for r in replicas),
            prefix_load_s=sum(r.prefix_load_s for r in replicas),
        )

    # -- per-request metrics ---------------------------------------------------------
    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        return self.finish_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        steps = (self.output_len - 1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(steps > 0, (self.finish_s - self.first_token_s) / steps, np.nan)

    @property
    def makespan_s(self) -> float:
        return float(np.max(self.finish_s) - np.min(self.arrival_s))

    @property
    def throughput_tokens_per_s(self) -> float:
        span = self.makespan_s
        return float(self.output_len.sum() / span) if span > 0 else float("inf")

    def meets(self, slo: Slo) -> np.ndarray:
        """Per request: True where every target of ``slo`` is met.

        Parameters
        ----------
        slo : Slo
            The targets (seconds).

        Returns
        -------
        numpy.ndarray of bool
            One entry per request.
        """
        ok = np.ones(self.arrival_s.shape, dtype=bool)
        if slo.ttft_s is not None:
            ok &= self.ttft_s <= slo.ttft_s
        if slo.tpot_s is not None:
            tp = self.tpot_s
            ok &= np.isnan(tp) | (tp <= slo.tpot_s)
        return ok

    def slo_report(self, slo: Slo) -> dict[str, Any]:
        """Each target's achieved percentile, and by how much it is missed (ratio > 1: missed).

        Parameters
        ----------
        slo : Slo
            The targets (seconds) and their percentiles.

        Returns
        -------
        dict of str to dict
            Per target (``ttft``, ``tpot``): ``percentile``, ``target_s`` and ``achieved_s`` (seconds),
            ``ratio`` and ``met``.
        """
        out: dict[str, Any] = {}
        for name, target, pct, vals in (
            ("ttft", slo.ttft_s, slo.ttft_pct, self.ttft_s),
            ("tpot", slo.tpot_s, slo.tpot_pct, self.tpot_s),
        ):
            if target is None:
                continue
            v = vals[np.isfinite(vals)]
            achieved = float(np.percentile(v, pct)) if v.size else 0.0
            out[name] = {
                "percentile": pct,
                "target_s": target,
                "achieved_s": achieved,
                "ratio": achieved / target,
                "met": achieved <= target,
            }
        return out

    def meets_slo(self, slo: Slo) -> bool:
        """Whether every target of ``slo`` is met (:meth:`slo_report`).

        Parameters
        ----------
        slo : Slo
            The targets (seconds) and their percentiles.

        Returns
        -------
        bool
            True when every target is met at its percentile.
        """
        return all(v["met"] for v in self.slo_report(slo).values())

    def goodput_requests_per_s(self, slo: Slo) -> float:
        """Requests that meet ``slo`` per second of the makespan, requests/s.

        Parameters
        ----------
        slo : Slo
            The targets (seconds).

        Returns
        -------
        float, requests/s
            Goodput; infinite when the makespan is 0.
        """
        span = self.makespan_s
        return float(self.meets(slo).sum() / span) if span > 0 else float("inf")

    # -- tables -----------------------------------------------------------------------------
    def requests_frame(self) -> pd.DataFrame:
        """One row per request: arrival, first-token and finish times and latencies (seconds), lengths
        (tokens).

        Returns
        -------
        pandas.DataFrame
            Columns ``arrival_s``, ``prompt_len``, ``output_len``, ``replica``, ``first_token_s``, ``finish_s``,
            ``ttft_s``, ``tpot_s``, ``e2e_s``, ``preemptions`` (and the prefix columns with prefixes).
        """
        return pd.DataFrame(
            {
                "arrival_s": self.arrival_s,
                "prompt_len": self.prompt_len,
                "output_len": self.output_len,
                "replica": self.replica,
                "first_token_s": self.first_token_s,
                "finish_s": self.finish_s,
                "ttft_s": self.ttft_s,
                "tpot_s": self.tpot_s,
                "e2e_s": self.e2e_s,
                "preemptions": self.preemptions,
            }
            | (
                {}
                if self.prefix_id is None
                else {
                    "prefix_id": self.prefix_id,
                    "prefix_hit": self.prefix_hit,
                    "cached_tokens": self.cached_tokens,
                }
            )
        )

    def timeline_frame(self) -> pd.DataFrame:
        """One row per iteration; ``kv_bytes_per_gpu`` is the HBM the KV cache occupies then.

        Returns
        -------
        pandas.DataFrame
            Columns of :data:`TIMELINE_COLUMNS` (times in seconds, swap in bytes), ``kv_bytes_per_gpu`` and
            ``kv_occupancy`` (fraction of the capacity).
        """
        df = pd.DataFrame(self.timeline_rows, columns=list(TIMELINE_COLUMNS))
        df["kv_bytes_per_gpu"] = df["kv_blocks_used"] * self.kv_bytes_per_block_per_gpu
        df["kv_occupancy"] = df["kv_blocks_used"] / max(self.capacity_blocks, 1)
        return df

    def summary(self, slo: Slo | None = None) -> dict[str, Any]:
        """The ``--json`` summary: TTFT, TPOT and E2E percentiles (seconds), throughput (tokens/s and
        requests/s), peak concurrency, swap bytes; with ``slo``, goodput and the targets met.

        Parameters
        ----------
        slo : Slo, optional
            Targets (seconds) whose goodput and report are added.

        Returns
        -------
        dict of str to Any
            The summary; names carry their units.
        """
        out = {
            "deployment": self.deployment.describe(),
            "completed": int(np.isfinite(self.finish_s).sum()),
            "ttft_s": _pcts(self.ttft_s),
            "tpot_s": _pcts(self.tpot_s),
            "e2e_s": _pcts(self.e2e_s),
            "throughput_tokens_per_s": self.throughput_tokens_per_s,
            "throughput_requests_per_s": float(len(self.arrival_s) / self.makespan_s)
            if self.makespan_s > 0
            else None,
            "makespan_s": self.makespan_s,
            "peak_concurrency": int(self.peak_concurrency),
            "kv_capacity_blocks_per_replica": int(self.capacity_blocks),
            "swap_out_bytes": float(self.swap_out_bytes),
            "swap_in_bytes": float(self.swap_in_bytes),
            "preemptions": int(self.preemptions.sum()),
            "iterations": int(self.iterations),
            "sim_wall_s": float(self.wall_s),
        }
        if self.prefix_id is not None:
            out["prefix_cache"] = self.prefix_report()
        # the engine-style names (vllm bench serve), beside the keys above; "completed" agrees
        out.update({k: v for k, v in self.engine_metrics().items() if k not in out})
        if slo is not None:
            g = self.goodput_requests_per_s(slo)
            out["goodput_requests_per_s"] = g if math.isfinite(g) else None  # no time elapsed: undefined
            out["slo"] = self.slo_report(slo)
        return out

    def prefix_report(self) -> dict[str, Any]:
        """Cached prefixes: requests that open with one, hits, the hit share, prompt tokens served from the
        cache (prefill they skipped), loads from host or SSD with their bytes and seconds.

        Returns
        -------
        dict of str to Any
            ``requests_with_prefix``, ``hits``, ``hit_rate`` (``None`` without prefixed requests),
            ``cached_prompt_tokens``, ``loads``, ``load_bytes`` (bytes) and ``load_s`` (seconds).
        """
        with_prefix = int((self.prefix_id >= 0).sum())
        hits = int(self.prefix_hit.sum())
        return {
            "requests_with_prefix": with_prefix,
            "hits": hits,
            "hit_rate": hits / with_prefix if with_prefix else None,
            "cached_prompt_tokens": int(self.cached_tokens.sum()),
            "loads": int(self.prefix_loads),
            "load_bytes": float(self.prefix_load_bytes),
            "load_s": float(self.prefix_load_s),
        }

    @property
    def itl_s(self) -> tuple[np.ndarray, np.ndarray]:
        """Inter-token latencies: (iteration durations, decode batch of each); every sequence of a decode
        batch waited that iteration for its next token.  The wait of a preempted request is not counted."""
        if self.step_durations_s is None:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return self.step_durations_s, self.step_batches

    def engine_metrics(self) -> dict[str, float | int | None]:
        """The metrics in the names ``vllm bench serve`` prints and saves (``mean_ttft_ms``,
        ``median_tpot_ms``, ``p99_itl_ms``, ``output_throughput`` ...): milliseconds, tokens/s, requests/s.

        TTFT, TPOT and end-to-end (``e2el``) are per request (mean, median, p90, p99 over the requests;
        TPOT over those with two or more output tokens); ITL is per output token after the first.
        Throughputs are over the benchmark's duration, from the first send to the last finish.

        Returns
        -------
        dict of str to float or int or None
            Metric name to value; ``None`` where a metric is undefined (e.g. no time has passed).
        """
        out: dict[str, float | int | None] = {}
        for name, attr in ENGINE_METRICS:
            if attr is None:
                d, b = self.itl_s
                stats = _weighted_stats_ms(d, b)
            else:
                x = getattr(self, attr)
                stats = _weighted_stats_ms(x, np.ones(x.shape))
            for k, _ in ENGINE_STATS:
                out[f"{k}_{name}_ms"] = stats[k]
        span = self.makespan_s
        n_out, n_in = int(self.output_len.sum()), int(self.prompt_len.sum())
        out.update(
            {
                "duration": span,
                "completed": int(np.isfinite(self.finish_s).sum()),
                "total_input_tokens": n_in,
                "total_output_tokens": n_out,
                "request_throughput": len(self.arrival_s) / span if span > 0 else None,
                "output_throughput": n_out / span if span > 0 else None,
                "total_token_throughput": (n_in + n_out) / span if span > 0 else None,
            }
        )
        return out

    def write(self, requests_path: str | None = None, timeline_path: str | None = None) -> None:
        """Write the tables as CSV, or Parquet for a ``.parquet`` path.

        Parameters
        ----------
        requests_path : str, optional
            Where to write :meth:`requests_frame`; not written when empty.
        timeline_path : str, optional
            Where to write :meth:`timeline_frame`; not written when empty.
        """
        for path, frame in ((requests_path, self.requests_frame), (timeline_path, self.timeline_frame)):
            if path:
                from perfmodel.tables import write_table

                write_table(frame(), path)
