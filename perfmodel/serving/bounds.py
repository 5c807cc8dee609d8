"""Analytical bounds a simulation of a deployment must respect (and the capacity planner prunes with).

For a set of requests on one replica:

- ``prefill_s``: a prompt's prefill alone (:func:`perfmodel.phases.prefill_cost`,
  chunks of the token budget), at the profile's rates (the simulator does not
  apply the sustained-clock slowdown of :mod:`perfmodel.clocks`).
- ``ttft_floor_s``: no request's TTFT is shorter.  It is ``prefill_s``, except
  with a shared prefix: a request that finds the prefix cached prefills only
  its own tokens, so the floor is the prefill of those alone.
- ``tpot_floor_s``: one decode step of a lone sequence at its prompt length;
  no request's TPOT is shorter.  With pipelined attention offloading a step of
  two sequences overlaps the pool and the GPU and can be shorter than a lone
  one (serial); the floor is then the cheaper of the two, the partner being
  the shortest request (a step prices a batch at its mean length, and a
  larger batch only adds work).
- ``max_concurrency``: the memory model's users whose whole KV is resident
  (in HBM and the KV tiers, or in the attention pool; a shared prefix once).
- ``throughput_bound_tokens_per_s``: the lesser of a compute bound (peak
  FLOP/s over the FLOPs the requests need, per GPU) and a decode bound (an
  iteration that emits ``k`` tokens costs at least a decode step of batch
  ``k``, and ``k`` <= max concurrency), times the replicas.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from perfmodel.calibration import OpClass
from perfmodel.phases import decode_cost, decode_step_cost, prefill_cost
from perfmodel.serving.deployment import Deployment, kv_tokens_kept, replica_memory, swap_times_s
from perfmodel.serving.workload import Requests


@dataclass(frozen=True)
class AnalyticBounds:
    """Per-request arrays (seconds) and per-deployment figures."""

    prefill_s: np.ndarray
    decode_s: np.ndarray
    tpot_floor_s: np.ndarray
    max_concurrency: int
    compute_bound_tokens_per_s: float
    decode_bound_tokens_per_s: float
    replicas: int
    ttft_floor_s: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ttft_floor_s is None:
            object.__setattr__(self, "ttft_floor_s", self.prefill_s)

    @property
    def alone_e2e_s(self) -> np.ndarray:
        """Each request served alone: prefill (first token) + the other tokens' decode steps."""
        return self.prefill_s + self.decode_s

    @property
    def throughput_bound_tokens_per_s(self) -> float:
        return self.replicas * min(self.compute_bound_tokens_per_s, self.decode_bound_tokens_per_s)


def _prefill(dep: Deployment, prompt, knobs=None) -> object:
    # at the profile's own rates: the simulator prices its iterations without the sustained-clock slowdown
    # of a long phase (perfmodel.clocks), so the floor leaves it out as well
    burst = dataclasses.replace(dep.resolved_profile, sustained=MappingProxyType({}))
    return prefill_cost(
        dep.model,
        dep.gpu,
        burst,
        prompt,
        1,
        dep.precision,
        dep.tp,
        dep.token_budget,
        knobs=dep.knobs if knobs is None else knobs,
    )


def _ep_phases(dep: Deployment, context_len, output_tokens, batch):
    """The phases of ``dep``'s expert-parallel layout as ``analyze`` prices them
    (:func:`perfmodel.parallel.parallel_phases`, the deployment's placement included)."""
    from perfmodel.parallel import parallel_phases

    return parallel_phases(
        dep.kv_model,
        dep.gpu,
        dep.resolved_profile,
        context_len,
        output_tokens,
        batch,
        dep.kv_precision,
        dep.tp,
        ep=dep.ep,
        chunk_tokens=dep.token_budget,
        knobs=dep.knobs,
        moe_placement=dep.moe_placement,
    )


def analytic_bounds(dep: Deployment, requests: Requests) -> AnalyticBounds:
    """Bounds for ``requests`` (their lengths; arrival times are not used) on ``dep``.

    Parameters
    ----------
    dep : Deployment
        What serves the requests.
    requests : Requests
        The requests; only their prompt and output lengths (tokens) are used.

    Returns
    -------
    AnalyticBounds
        Per-request latency floors (seconds) and throughput ceilings.

    Raises
    ------
    KnobError
        When a knob does not fit the shortest prompt (:meth:`Deployment.check_knobs`).
    """
    p = requests.prompt_len.astype(np.float64)
    o = requests.output_len.astype(np.float64)
    dep.check_knobs(int(requests.prompt_len.min()))
    prof, kn = dep.resolved_profile, dep.knobs
    if dep.ep > 1:  # the shared prefix and offloading are refused with EP (Deployment)
        pre = floor = _ep_phases(dep, p, 0, 1).prefill
        dec = _ep_phases(dep, p, o - 1, 1).decode
        step_s = np.asarray(_ep_phases(dep, p + 1, 0, 1).decode_step.total_s, dtype=np.float64)
    else:
        pre = _prefill(dep, p)
        prefix = 0 if kn is None else kn.shared_prefix_tokens
        # with a shared prefix, a request that finds it cached prefills its own tokens only; their prefill
        # without the prefix keys is a floor
        floor = _prefill(dep, p - prefix, kn.replace(shared_prefix_tokens=0)) if prefix else pre
        dec = decode_cost(dep.model, dep.gpu, prof, p, o - 1, 1, dep.precision, dep.tp, knobs=kn)
        step = decode_step_cost(dep.model, dep.gpu, prof, p + 1, 1, dep.precision, dep.tp, knobs=kn)
        step_s = np.asarray(step.total_s, dtype=np.float64)
    if kn is not None and kn.offload is not None and kn.offload.pipelined:
        pair = (p + p.min()) / 2.0 + 1.0  # beside the shortest request: the cheapest pipelined step
        two = decode_step_cost(dep.model, dep.gpu, prof, pair, 2, dep.precision, dep.tp, knobs=kn)
        step_s = np.minimum(step_s, np.asarray(two.total_s, dtype=np.float64))
    mem = replica_memory(dep)
    kv_tokens = np.array([mem.own_tokens(kv_tokens_kept(dep, int(t))) for t in np.unique(p + o)])
    per_user = float(kv_tokens.min()) * mem.kv_bytes_per_token_per_gpu + mem.state_bytes_per_gpu
    n_max = int(mem.kv_room_bytes_per_gpu // per_user) * mem.ranks if per_user > 0 else dep.max_num_seqs
    n_max = min(n_max, dep.max_num_seqs)
    flops = float(np.sum(floor.flops) + np.sum(dec.flops))
    g, prec = dep.gpu, dep.kv_precision
    # a fitted efficiency may exceed 1 (the classes that compute: collectives have no math rate)
    eff = max([1.0] + [p.compute_eff for p in map(prof.params, OpClass) if "compute_eff" in p.field_names()])
    peak = eff * max(g.flops_for(prec.math), g.flops_for(prec.activations), g.flops_for(prec.weights))
    compute = float(o.sum()) * peak / flops if flops > 0 else float("inf")
    if n_max >= 1:
        k = np.arange(1, n_max + 1, dtype=np.float64)
        # without the tiers' streaming (a lower step cost, so still a bound): the core sizes a batch's
        # workspace as batch x chunk tokens and so spills more than the replica's budget does
        kd = kn.replace(kv_tiers=()) if kn is not None and kn.kv_tiers else kn
        if dep.ep > 1:
            t = _ep_phases(dep, float(p.min()) + 1, 0, k).decode_step.total_s
        else:
            t = decode_step_cost(
                dep.model, dep.gpu, prof, float(p.min()) + 1, k, dep.precision, dep.tp, knobs=kd
            ).total_s
        decode = float(np.max(k / np.asarray(t)))
    else:
        decode = 0.0
    return AnalyticBounds(
        prefill_s=np.asarray(pre.total_s, dtype=np.float64),
        decode_s=np.asarray(dec.total_s, dtype=np.float64),
        tpot_floor_s=step_s,
        max_concurrency=n_max,
        compute_bound_tokens_per_s=compute,
        decode_bound_tokens_per_s=decode,
        replicas=dep.replicas,
        ttft_floor_s=np.asarray(floor.total_s, dtype=np.float64),
    )


def swap_cost_s(dep: Deployment, kv_tokens: int) -> tuple[float, float]:
    """(out, in) seconds to move one request's KV of ``kv_tokens`` tokens (the context switch)."""
    return swap_times_s(dep, replica_memory(dep), kv_tokens)
