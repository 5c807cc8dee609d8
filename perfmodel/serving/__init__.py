"""Serving simulator: requests, continuous batching over a paged KV cache, metrics.

Public API::

    from perfmodel.serving import Deployment, Workload, LengthDist, simulate, Slo
    dep = Deployment.make("llama-3-8b", "h100-sxm-80gb", tp=1, kv_policy="swap")
    res = simulate(dep, Workload(1000, 40.0, LengthDist.parse(2048), LengthDist.parse(128)))
    res.summary(Slo(ttft_s=0.5, tpot_s=0.05))
    Deployment.make("llama-3-8b", "h100-sxm-80gb", knobs=Knobs(kv_dtype="fp8"))  # what-if KV knobs

See ``docs/serving.md``.
"""

from perfmodel.serving.bounds import AnalyticBounds, analytic_bounds
from perfmodel.serving.deployment import Deployment, KvPolicy, ReplicaMemory, Router, replica_memory
from perfmodel.serving.metrics import SimResult, Slo
from perfmodel.serving.parallel import parallel_map
from perfmodel.serving.simulator import build_timer, simulate
from perfmodel.serving.trace_export import write_trace_json
from perfmodel.serving.workload import (
    LengthDist,
    Requests,
    TraceFormatError,
    Workload,
    read_trace,
    write_trace,
)

__all__ = [
    "AnalyticBounds",
    "Deployment",
    "KvPolicy",
    "LengthDist",
    "ReplicaMemory",
    "Requests",
    "Router",
    "SimResult",
    "Slo",
    "TraceFormatError",
    "Workload",
    "analytic_bounds",
    "build_timer",
    "parallel_map",
    "read_trace",
    "replica_memory",
    "simulate",
    "write_trace",
    "write_trace_json",
]
