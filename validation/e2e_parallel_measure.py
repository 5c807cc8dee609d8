"""The measuring half of :mod:`perfmodel.validation.e2e_parallel` (torch): one rank's shard, its rows, its records.

Prefill: warm-up calls, then each timed call after a barrier, CUDA events behind
:func:`perfmodel.validation.bench.lead`.  Decode: the step (its collectives included) captured in a CUDA
graph on every rank and replayed; the median replay.  Each timing is the slower rank's.  On the CPU
(``--dry-run``, gloo) the host clock times eager calls.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import traceback

import torch
import torch.distributed as dist

from perfmodel.validation import bench
from perfmodel.validation.e2e import Row, resolve_model, with_layers
from perfmodel.validation.e2e_model import E2EModel, _mlp, silu_mul
from perfmodel.validation.e2e_parallel import Layout, record_item, shard
from perfmodel.validation.spawn import init_rank, versions


class EpModel(E2EModel):
    """An EP rank: its ``experts / ep`` experts, the full router, all-to-all dispatch and combine of
    equal capacity (``ceil(tokens * top_k / ep)`` rows to each rank; copies beyond it are dropped)."""

    def __init__(self, spec, device, ep: int, num_experts: int, **kw) -> None:
        super().__init__(spec, device, **kw)
        self.ep, self.num_experts = ep, num_experts
        gen = torch.Generator(device=self.device).manual_seed(1)
        for lay in self.layers:
            if "experts" in lay:
                lay["w_router"] = torch.empty(
                    spec.hidden, num_experts, device=self.device, dtype=self.dtype
                ).normal_(0, spec.hidden**-0.5, generator=gen)

    def _moe(self, hn: torch.Tensor, lay: dict) -> torch.Tensor:
        m, ep = self.spec.moe, self.ep
        t, h = hn.shape
        k = m.top_k
        weights, idx = (hn @ lay["w_router"]).float().softmax(dim=-1).topk(k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(hn.dtype).reshape(-1)
        dest = idx.reshape(-1) // m.num_experts  # the rank holding each copy's expert
        cap = -(-t * k // ep)
        onehot = torch.zeros(t * k, ep, device=hn.device, dtype=torch.int32).scatter_(1, dest.unsqueeze(1), 1)
        pos = (onehot.cumsum(0) - 1).gather(1, dest.unsqueeze(1)).squeeze(1)  # the copy's place at its rank
        keep = pos < cap
        slot = torch.where(
            keep, dest * cap + pos, torch.full_like(pos, ep * cap)
        )  # dropped copies: a spare row
        token = torch.arange(t * k, device=hn.device) // k
        send = torch.zeros(ep * cap + 1, h, device=hn.device, dtype=hn.dtype)
        send.index_copy_(0, slot, hn.index_select(0, token))
        recv = torch.empty(ep * cap, h, device=hn.device, dtype=hn.dtype)
        dist.all_to_all_single(recv, send[: ep * cap])
        y = self._local_experts(recv, lay["experts"])
        back = torch.empty(ep * cap + 1, h, device=hn.device, dtype=hn.dtype)
        back[-1].zero_()
        dist.all_to_all_single(back[: ep * cap], y)
        ycopy = back.index_select(0, slot) * (weights * keep).unsqueeze(1)
        out = torch.zeros_like(hn).index_add_(0, token, ycopy)
        if "shared" in lay:
            out = out + _mlp(hn, lay["shared"])
        return out

    def _local_experts(self, x: torch.Tensor, ex: dict) -> torch.Tensor:
        """The received rows split evenly over the local experts (the uniform load)."""
        e = ex["w_gu"].shape[0]
        if self.moe_path == "grouped_mm":
            offs = torch.linspace(x.shape[0] / e, x.shape[0], e, device=x.device).round().to(torch.int32)
            return torch._grouped_mm(
                silu_mul(torch._grouped_mm(x, ex["w_gu"], offs=offs)), ex["w_down"], offs=offs
            )
        parts = x.tensor_split(e)
        return torch.cat([silu_mul(p @ ex["w_gu"][i]) @ ex["w_down"][i] for i, p in enumerate(parts)])


def _reduce(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


def _p2p(tensor: torch.Tensor, peer: int, send: bool) -> None:
    op = dist.P2POp(dist.isend if send else dist.irecv, tensor, peer)
    for r in dist.batch_isend_irecv([op]):
        r.wait()


def build(spec, lay: Layout, rank: int, device, dry_run: bool):
    """This rank's model and the step function maker."""
    part = shard(spec, lay)
    if lay.ep > 1:
        model = EpModel(
            part, device, lay.ep, spec.moe.num_experts, seed=rank, moe_path="loop" if dry_run else "auto"
        )
    else:
        model = E2EModel(part, device, seed=rank)
    if lay.tp > 1:
        model.tp_reduce = _reduce
    return model, part


def step_fn(model: E2EModel, part, lay: Layout, rank: int, row: Row, device):
    """The callable of one row on this rank, and the cache it holds."""
    b, c = row.batch // (lay.ep if lay.ep > 1 else 1), row.context
    gen = torch.Generator(device=device).manual_seed(1)
    vocab = part.vocab
    if row.phase == "prefill":
        cache = model.new_cache(b, c, fill=False)
        ids = torch.randint(0, vocab, (b, c), device=device, generator=gen)
        pos, kv, n = 0, c, c
    else:
        cache = model.new_cache(b, c, fill=True)
        ids = torch.randint(0, vocab, (b, 1), device=device, generator=gen)
        model.ensure_rope(c)
        pos, kv, n = c - 1, c, 1
    if lay.pp > 1:
        first, last = rank == 0, rank == lay.pp - 1
        act = torch.empty(b * n, part.hidden, device=device, dtype=model.dtype)
        token = torch.empty(b, part.hidden, device=device, dtype=model.dtype)  # the hand-back to stage 0

        def fn():
            if first:
                x = model(ids, cache, pos, kv, head=False)
                _p2p(x, 1, send=True)
                _p2p(token, lay.pp - 1, send=False)
            else:
                _p2p(act, 0, send=False)
                model(ids, cache, pos, kv, hidden=act, head=last)
                if last:
                    _p2p(token, 0, send=True)

        return fn, cache
    if lay.tp > 1:
        gathered = torch.empty(lay.tp * b, vocab, device=device, dtype=torch.float32)

        def fn():
            logits = model(ids, cache, pos, kv)
            dist.all_gather_into_tensor(gathered, logits.float())

        return fn, cache

    def fn():
        model(ids, cache, pos, kv)

    return fn, cache


def _slower(vals: list[float], device) -> list[float]:
    t = torch.tensor(vals, device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [float(v) for v in t.cpu()]


def time_row(fn, row: Row, device) -> dict:
    cuda = device.type == "cuda"
    for _ in range(row.warmup_calls):
        fn()
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    if row.phase == "decode" and cuda:
        g = bench.capture_graph([fn], calls=1, warm_replays=row.warmup_calls)
        dist.barrier()
        torch.cuda.synchronize()
        times = bench.replay_s(g, 1, row.timed_calls)
        del g
        how = {"method": "cuda_graph", "launch": "graph_replay_behind_lead"}
    else:
        times = []
        for _ in range(row.timed_calls):
            if cuda:
                torch.cuda.synchronize()
            dist.barrier()
            if cuda:
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                bench.lead()
                s.record()
                fn()
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        how = {"method": "eager_events" if cuda else "host_clock", "launch": "eager"}
    times = _slower(times, device)
    return {
        **how,
        "times_s": times,
        "measured_s": statistics.median(times),
        "timed_calls": len(times),
        "warmup_calls": row.warmup_calls,
    }


def worker(rank: int, world: int, items: list[str], out: str, job_json: str) -> None:
    """Measure the rows named by ``items`` (``<layout>|<phase>:<batch>:<context>``), layout by layout."""
    job = json.loads(job_json)
    dry = job["dry_run"]
    device = init_rank(rank, world, dry)
    meta = versions(device)
    fh = open(out, "a") if rank == 0 else None
    for cfg in job["configs"]:
        base = cfg["base"]
        rows = {
            f"{base['config_label']}|{r['phase']}:{r['batch']}:{r['context']}": Row(**r) for r in cfg["rows"]
        }
        todo = [i for i in items if i in rows]
        if not todo:
            continue
        lay = Layout(base["tp"], base["pp"], base["ep"])
        full, _ = resolve_model(base["config"])
        model, part = build(with_layers(full, base["layers_run"]), lay, rank, device, dry)
        for item in todo:
            rec = measure_item(model, part, lay, rank, rows[item], device, {**base, **meta})
            assert record_item(rec) == item
            if fh:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    dist.barrier()
    dist.destroy_process_group()


def measure_item(model, part, lay: Layout, rank: int, row: Row, device, base: dict) -> dict:
    """The record of one row (skipped with the reason where it raised on this rank)."""
    rec = {
        **base,
        "phase": row.phase,
        "batch": row.batch,
        "context": row.context,
        "predicted_s": row.predicted_s,
        "prediction": row.prediction,
        "moe_path": model.moe_path or None,
        "status": "ok",
    }
    try:
        fn, cache = step_fn(model, part, lay, rank, row, device)
        rec.update(time_row(fn, row, device))
        rec["error"] = rec["predicted_s"] / rec["measured_s"] - 1.0
        del fn, cache
    except Exception as exc:  # one failing row must not stop the others (a peer's hang is the driver's)
        rec.update(
            status="skipped",
            skip_reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            measured_s=None,
            error=None,
            traceback=traceback.format_exc(limit=4),
        )
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    return rec
