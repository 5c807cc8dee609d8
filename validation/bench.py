"""Build each case's callable on a device and time it.

Timing: warm-up calls (autotuning, handles), a first estimate with CUDA events, then ``reps``
calls captured in one CUDA graph over ``rotate`` input sets (enough sets to exceed the L2 cache
when the inputs would fit in it), replayed several times; the op's time is the median replay
time over ``reps``.  Copies (pageable host memory cannot be captured) are timed with CUDA events
around ``reps`` eager calls.  On a CPU (``--dry-run``) the host clock times eager calls.

Every timed region on the GPU starts behind a short busy-wait kernel (:func:`lead`): while the GPU
spins, the host queues the start event, the work and the end event, so the region does not count
the time the host takes to launch it (an idle GPU would start the clock at the start event and
wait for the launch, which inflated short regions: a graph of 3 decode calls had timed 53 µs a
call for a 29 µs kernel).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from perfmodel.validation import layer as L
from perfmodel.validation.cases import Case

Fn = Callable[[], object]


def _rand(shape, device, dtype=torch.bfloat16, scale=1.0, gen=None):
    return (torch.randn(*shape, device=device, dtype=torch.float32, generator=gen) * scale).to(dtype)


def rotations(input_bytes: float, l2_bytes: float, cap_bytes: float = 2e9, min_bytes: float = 0.0) -> int:
    """Input sets to rotate so that one pass touches more than three L2s (1 when inputs exceed L2).

    With ``min_bytes``, at least enough sets that one pass touches ``min_bytes`` (up to 512 sets), as a
    model step streams gigabytes of weights between two reads of one matrix: each call then finds its
    operands cold in the L2 and in the address-translation caches, not only in the L2."""
    size = max(input_bytes, 1.0)
    n = (
        1
        if input_bytes >= l2_bytes
        else int(max(1, min(math.ceil(3 * l2_bytes / size), 16, cap_bytes // size)))
    )
    if min_bytes > 0:
        n = max(n, min(math.ceil(min_bytes / size), 512))
    return n


#: sections whose operands :func:`build`'s ``rotate_bytes`` rotates
ROTATED_SECTIONS = ("gemm", "grouped_gemm", "attention")


@dataclass
class Built:
    """Callables (one per rotated input set), whether a graph may capture them, and the SDPA used."""

    fns: list
    graphable: bool = True
    sdpa: "L.Sdpa | None" = None
    ran: str = ""  # the implementation that ran, where it differs from the case's (a fallback)

    def impl(self, default: str) -> str:
        if self.ran:
            return self.ran
        return self.sdpa.backend if (self.sdpa is not None and default in ("sdpa", "flash2")) else default


def build(case: Case, device: torch.device, l2_bytes: float, rotate_bytes: float = 0.0) -> Built:
    """The case's callables; ``rotate_bytes``: the operands of the :data:`ROTATED_SECTIONS` rotated over
    at least that many bytes (:func:`rotations`)."""
    a = case.args
    s = case.section
    if s == "gemm":
        m, n, k = a["m"], a["n"], a["k"]
        rot = rotations((m * k + k * n) * 2, l2_bytes, min_bytes=rotate_bytes)
        sets = [
            (
                _rand((m, k), device),
                _rand((k, n), device, scale=k**-0.5),
                torch.empty(m, n, device=device, dtype=torch.bfloat16),
            )
            for _ in range(rot)
        ]
        return Built([(lambda x=x, w=w, c=c: torch.matmul(x, w, out=c)) for x, w, c in sets])
    if s == "elementwise":
        return Built(_elementwise(a, device, l2_bytes))
    if s == "memcpy":
        return Built(_memcpy(a, device, l2_bytes), graphable=False)
    if s == "attention":
        sdpa = L.Sdpa(case.impl) if case.impl in ("sdpa", "flash2") else None
        return Built(_attention(case, device, l2_bytes, sdpa, rotate_bytes), sdpa=sdpa)
    if s == "grouped_gemm":
        return _grouped_gemm(case, device, l2_bytes, rotate_bytes)
    if s == "layer":
        lay = L.DecoderLayerBench(
            a["batch"],
            a["q_len"],
            a["kv_len"],
            a["hidden"],
            a["intermediate"],
            a["q_heads"],
            a["kv_heads"],
            a["head_dim"],
            device,
            attention_impl=case.desc.get("attention_impl", "sdpa"),
        )
        return Built([lay], sdpa=lay.sdpa)
    raise ValueError(f"unknown section {s!r}")


def kernel_names(fn: Fn) -> list[str]:
    """Names of the device kernels one call of ``fn`` launches, in launch order (torch.profiler;
    empty on a CPU).  Shows which library kernel ran, e.g. the tile of a cuBLAS GEMM."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm: handles and autotuning stay out of the trace
    acts = [ProfilerActivity.CUDA] if torch.cuda.is_available() else [ProfilerActivity.CPU]
    with profile(activities=acts) as prof:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    if not torch.cuda.is_available():
        return []
    evs = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    return [e.name for e in sorted(evs, key=lambda e: e.time_range.start)]


def _elementwise(a, device, l2_bytes) -> list[Fn]:
    name = a["name"]
    if name == "rmsnorm":
        t, h = a["tokens"], a["hidden"]
        rot = rotations(t * h * 2, l2_bytes)
        sets = [(_rand((t, h), device), _rand((h,), device, scale=0.1) + 1) for _ in range(rot)]
        return [(lambda x=x, w=w: L.rmsnorm(x, w)) for x, w in sets]
    if name == "residual_add":
        t, h = a["tokens"], a["hidden"]
        rot = rotations(2 * t * h * 2, l2_bytes)
        sets = [(_rand((t, h), device), _rand((t, h), device)) for _ in range(rot)]
        return [(lambda x=x, y=y: L.residual_add(x, y)) for x, y in sets]
    if name == "silu_mul":
        t, i = a["tokens"], a["intermediate"]
        rot = rotations(2 * t * i * 2, l2_bytes)
        sets = [_rand((t, 2 * i), device) for _ in range(rot)]
        return [(lambda x=x: L.silu_mul(x)) for x in sets]
    if name == "kv_append":
        b, n, hq, hkv, d = a["batch"], a["q_len"], a["q_heads"], a["kv_heads"], a["head_dim"]
        cache_len = max(n, 16)
        rot = rotations(4 * b * n * hkv * d * 2, l2_bytes)
        fns = []
        for _ in range(rot):
            qkv = _rand((b * n, (hq + 2 * hkv) * d), device)
            _, k, v = L.split_qkv(qkv, b, n, hq, hkv, d)
            kc = _rand((b, hkv, cache_len, d), device)
            vc = _rand((b, hkv, cache_len, d), device)
            fns.append(lambda k=k, v=v, kc=kc, vc=vc: L.kv_append(kc, vc, k, v, cache_len - n))
        return fns
    if name.startswith("moe_"):
        return _moe_routing(a, device, l2_bytes)
    raise ValueError(f"unknown elementwise {name!r}")


def _moe_routing(a, device, l2_bytes) -> list[Fn]:
    """One MoE routing step (``perfmodel.layers.moe_routing_ops``) on uniformly random routing."""
    from perfmodel.kernels import moe_combine

    name, t, e, k, h = a["name"], a["tokens"], a["experts"], a["top_k"], a["hidden"]
    p = t * k
    rot = rotations(2 * p * h * 2 + t * e * 2, l2_bytes)
    fns = []
    for _ in range(rot):
        idx = torch.rand(t, e, device=device).argsort(dim=-1)[:, :k].contiguous()  # k distinct experts
        if name == "moe_route":
            fns.append(lambda x=_rand((t, e), device): L.moe_route(x, k))
        elif name == "moe_align":
            fns.append(lambda idx=idx: L.moe_align(idx, e))
        elif name == "moe_permute":
            _, token, _ = L.moe_align(idx, e)
            fns.append(lambda x=_rand((t, h), device), token=token: L.moe_permute(x, token))
        elif name == "moe_combine":
            _, _, pos = L.moe_align(idx, e)
            w = torch.rand(t, k, device=device, dtype=torch.bfloat16)
            fns.append(lambda y=_rand((p, h), device), pos=pos, w=w: moe_combine(y, pos, w))
        else:
            raise ValueError(f"unknown elementwise {name!r}")
    return fns


def _memcpy(a, device, l2_bytes) -> list[Fn]:
    nbytes, src, dst = a["bytes"], a["src"], a["dst"]
    numel = nbytes // 2
    rot = rotations(nbytes, l2_bytes) if (src, dst) == ("device", "device") else 1

    def tensor(where):
        if where == "device":
            return torch.empty(numel, dtype=torch.bfloat16, device=device).normal_()
        t = torch.empty(
            numel, dtype=torch.bfloat16, pin_memory=(where == "host_pinned" and device.type == "cuda")
        )
        return t.normal_()

    pairs = [(tensor(src), tensor(dst)) for _ in range(rot)]
    return [(lambda s=s, d=d: d.copy_(s, non_blocking=True)) for s, d in pairs]


def _attention(case: Case, device, l2_bytes, sdpa: L.Sdpa, rotate_bytes: float = 0.0) -> list[Fn]:
    a = case.args
    b, n, kv, hq, hkv, d = a["batch"], a["q_len"], a["kv_len"], a["q_heads"], a["kv_heads"], a["head_dim"]
    kv_bytes = 2 * b * hkv * kv * d * 2
    rot = rotations(kv_bytes + b * hq * n * d * 2, l2_bytes, min_bytes=rotate_bytes)
    fns = []
    for _ in range(rot):
        if case.impl in ("split_kv", "stream_k"):
            from perfmodel import kernels

            q = _rand((b, hq, d), device)
            kc, vc = _rand((b, hkv, kv, d), device), _rand((b, hkv, kv, d), device)
            lens = torch.full((b,), kv, dtype=torch.int32, device=device)
            fns.append(
                lambda q=q, kc=kc, vc=vc, lens=lens: kernels.attention_decode(
                    q, kc, vc, lens, schedule=case.impl, validate=False
                )
            )
            continue
        q = _rand((b, hq, n, d), device)
        k, v = _rand((b, hkv, kv, d), device), _rand((b, hkv, kv, d), device)
        wants_causal = bool(case.desc.get("causal", True))  # non-causal: a Ring-attention step's block pair
        if case.impl == "triton":
            from perfmodel import kernels

            fns.append(lambda q=q, k=k, v=v, c=wants_causal: kernels.attention_prefill(q, k, v, causal=c))
        else:
            causal = wants_causal and n == kv and n > 1
            fns.append(lambda q=q, k=k, v=v, causal=causal: sdpa(q, k, v, causal))
    return fns


def _grouped_gemm(case: Case, device, l2_bytes, rotate_bytes: float = 0.0) -> Built:
    """MoE experts' GEMM over the token-expert rows sorted by expert (``case.args["counts"]`` rows per
    touched expert): ``torch._grouped_mm(x [m, k], w [groups, n, k] transposed to [groups, k, n],
    offs=int32 cumsum of the counts)`` (impl ``grouped_mm``), or one ``torch.matmul`` per touched
    expert (impl ``loop``).  Where ``torch._grouped_mm`` does not run (an old or CPU build), the
    loop runs and the record says ``loop``.  Weights are stored ``[n, k]`` per expert (as
    ``nn.Linear`` and the serving engines hold them); bf16, 16-byte aligned rows."""
    a = case.args
    counts, n, k = [int(c) for c in a["counts"]], int(a["n"]), int(a["k"])
    g, m = len(counts), sum(counts)
    rot = rotations((m * k + g * n * k) * 2, l2_bytes, min_bytes=rotate_bytes)
    ends = torch.tensor(counts, dtype=torch.int64).cumsum(0)
    offs = ends.to(device=device, dtype=torch.int32)
    bounds = [0] + ends.tolist()
    sets = []
    for _ in range(rot):
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(g, n, k, device=device, dtype=torch.bfloat16).mul_(k**-0.5)
        sets.append((x, w, torch.empty(m, n, device=device, dtype=torch.bfloat16)))

    def loop(x, w, out):
        for i in range(g):
            torch.matmul(x[bounds[i] : bounds[i + 1]], w[i].t(), out=out[bounds[i] : bounds[i + 1]])
        return out

    if case.impl == "loop":
        return Built([(lambda x=x, w=w, o=o: loop(x, w, o)) for x, w, o in sets])
    grouped = getattr(torch, "_grouped_mm", None)
    try:
        x, w, _ = sets[0]
        grouped(x, w.transpose(-2, -1), offs=offs)
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        if device.type == "cuda":
            raise
        del exc
        return Built([(lambda x=x, w=w, o=o: loop(x, w, o)) for x, w, o in sets], ran="loop")
    return Built([(lambda x=x, w=w: grouped(x, w.transpose(-2, -1), offs=offs)) for x, w, _ in sets])


# ---------------------------------------------------------------------------- timing


def time_cpu(fns: list[Fn], max_time_s: float = 0.05) -> tuple[float, int, str]:
    for f in fns:
        f()
    times = []
    t_end = time.perf_counter() + max_time_s
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 50):
        t0 = time.perf_counter()
        fns[len(times) % len(fns)]()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), 1, "host_clock"


#: GPU clock cycles :func:`lead` spins (about 0.1 ms at the H100's and H200's clocks), more than the
#: host needs to queue a graph replay or a few eager calls behind it
LEAD_CYCLES = 200_000


def lead() -> None:
    """Queue a busy-wait kernel of :data:`LEAD_CYCLES` cycles on the current stream (nothing where
    torch lacks ``torch.cuda._sleep``): a timed region queued behind it starts its clock only when
    its own work is already queued."""
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is not None:
        sleep(LEAD_CYCLES)


def _events_time(fns: list[Fn], reps: int) -> float:
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    lead()
    s.record()
    for r in range(reps):
        fns[r % len(fns)]()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) / 1e3 / reps


def capture_graph(fns: list[Fn], calls: int, warm_replays: int = 1) -> "torch.cuda.CUDAGraph":
    """One CUDA graph holding ``calls`` calls that cycle over ``fns`` (each called once on a side
    stream first, as capture requires), replayed ``warm_replays`` times."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for r in range(calls):
            fns[r % len(fns)]()
    for _ in range(warm_replays):
        g.replay()
    torch.cuda.synchronize()
    return g


def replay_s(g: "torch.cuda.CUDAGraph", calls: int, trials: int) -> list[float]:
    """Seconds per call of ``trials`` timed replays of ``g`` (a graph of ``calls`` calls)."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(trials):
        lead()
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3 / calls)
    return times


def graph_replay_s(fns: list[Fn], calls: int, trials: int, warm_replays: int = 1) -> list[float]:
    """Seconds per call of ``trials`` replays of one CUDA graph holding ``calls`` calls that cycle
    over ``fns`` (:func:`capture_graph`, :func:`replay_s`)."""
    g = capture_graph(fns, calls, warm_replays)
    times = replay_s(g, calls, trials)
    del g
    return times


#: seconds of work per timed region (graph replays or eager calls)
TARGET_S = 2e-3


def time_cuda(
    fns: list[Fn], graph: bool, target_s: float = TARGET_S, max_reps: int = 200, max_time_s: float = 0.25
) -> tuple[float, int, str]:
    """Median seconds of one call; also the calls per timed region and the method used."""
    for f in fns:
        f()
    torch.cuda.synchronize()
    t_est = _events_time(fns, len(fns))
    reps = int(min(max_reps, max(1, math.ceil(target_s / t_est))))
    reps = max(len(fns), reps)
    trials = int(min(25, max(5, max_time_s / (reps * t_est))))
    if graph:
        try:
            times = graph_replay_s(fns, reps, trials, warm_replays=2)
            return statistics.median(times), reps, "cuda_graph"
        except RuntimeError:
            torch.cuda.synchronize()
    _events_time(fns, reps)  # warm
    times = [_events_time(fns, reps) for _ in range(trials)]
    return statistics.median(times), reps, "events"
