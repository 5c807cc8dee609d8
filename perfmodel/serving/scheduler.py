"""One replica's scheduler: continuous batching, chunked prefill, a paged KV cache, swap/recompute/queue.

Each call of :meth:`Replica.step` runs one iteration and returns its duration:

1. Admission, first come first served: a request is admitted when the blocks
   of its whole KV (prompt + output, the ``max_tokens`` a server knows) fit;
   so the number resident never exceeds what the memory model allows.  When
   the head of the queue does not fit, ``swap`` and ``recompute`` preempt the
   longest-decoding request whose time slice is spent (round robin: it goes
   to the back of the queue); ``queue`` waits.
2. The batch: every decoding request emits one token; prefill chunks fill the
   rest of the token budget in arrival order.  A prompt of ``L`` tokens is
   cut into ``ceil(L / budget)`` near-equal chunks.
3. The time: :class:`perfmodel.serving.timing.IterationTimer` plus the swap
   transfers, which stall the iteration (out and in, one after the other, the
   paper's context-switch formula).

With KV-cache knobs a request's blocks and swap bytes are those of the KV it
keeps (:meth:`Deployment.kept_tokens`, plus a hybrid stack's state), and with
``prune_prefill`` a (re)prefill runs on the kept tokens only, as
:func:`perfmodel.phases.prefill_cost` prices it.

A shared prefix of ``P`` tokens is stored once per replica: its blocks are
reserved at start (:func:`perfmodel.serving.deployment.replica_memory`), and a
request reserves and swaps only its own tokens.  The first request a replica
admits prefills its whole prompt, prefix included (a request alone costs what
``prefill_cost`` says); once that request's prefill has passed the prefix, it
is cached, and every later prefill (and recompute) runs only its own tokens,
attending to the ``P`` cached keys.  Requests that would skip the prefix wait
for it to be cached.  This is ``prefill_cost``'s batch: the prefix once, then
every suffix after it.

A workload's cached prefixes (:class:`perfmodel.serving.workload.CachedPrefix`)
act per request: on a hit its prefill runs only the tokens after the prefix,
attending to the prefix's keys.  A prefix cached in HBM is stored once per
replica (its blocks reserved at start; the request reserves and swaps only its
own tokens); one cached in host memory or on SSD is loaded into the request's
own blocks when it is admitted, each GPU its share at the tier's rate, layer by
layer under the iteration's work (:func:`perfmodel.prefix_cache.hit_s`).  A miss
prefills the whole prompt.

Decoding requests are kept in aggregate (count, total keys, a heap of finish
steps), so an iteration costs O(1) plus its events.
"""

from __future__ import annotations

import heapq
from collections import deque

from perfmodel.prefix_cache import hit_s
from perfmodel.serving.deployment import Deployment, KvPolicy, ReplicaMemory, swap_times_s
from perfmodel.serving.timing import IterationTimer


class RequestTable:
    """Per-request state shared by the replicas (plain lists: fast scalar access).

    ``cached``: prompt tokens whose KV a cache holds (a prefix hit); ``shared``: of which held in HBM
    blocks shared by the replica; ``load_s`` and ``load_bytes``: the seconds and bytes per GPU to load
    the rest into the request's blocks.
    """

    def __init__(
        self, arrival_s, prompt_len, output_len, cached=None, shared=None, load_s=None, load_bytes=None
    ) -> None:
        n = len(arrival_s)
        self.arrival = [float(x) for x in arrival_s]
        self.prompt = [int(x) for x in prompt_len]
        self.output = [int(x) for x in output_len]
        self.cached = [0] * n if cached is None else [int(x) for x in cached]
        self.shared = [0] * n if shared is None else [int(x) for x in shared]
        self.load_s = [0.0] * n if load_s is None else [float(x) for x in load_s]
        self.load_bytes = [0.0] * n if load_bytes is None else [float(x) for x in load_bytes]
        self.first_token = [float("nan")] * n
        self.finish = [float("nan")] * n
        self.preemptions = [0] * n
        self.replica = [-1] * n
        self.blocks = [0] * n
        self.gen = [0] * n  # tokens generated, as of the last preemption or prefill completion
        self.start = [0] * n  # keys cached before this residence's prefill (a shared prefix)
        self.target = [0] * n  # tokens to prefill in this residence
        self.done = [0] * n  # of which prefilled
        self.chunk = [0] * n
        self.base = [0] * n  # gen = base + replica step while decoding
        self.version = [0] * n
        self.swapped_bytes = [0.0] * n
        self.completed = 0


class Replica:
    """Scheduler state of one replica; see the module docstring."""

    def __init__(
        self,
        index: int,
        dep: Deployment,
        mem: ReplicaMemory,
        timer: IterationTimer,
        reqs: RequestTable,
        record: bool = True,
    ) -> None:
        self.index = index
        self.dep, self.mem, self.timer, self.r = dep, mem, timer, reqs
        self.policy = dep.kv_policy
        self.gpus = dep.tp * dep.pp
        self.waiting: deque[int] = deque()
        self.prefilling: deque[int] = deque()
        self.heap: list[tuple[int, int, int]] = []
        self.decode_order: deque[tuple[int, int, int]] = deque()  # (join step, id, version)
        self.b = 0
        self.p_sum = 0
        self.step_no = 0
        self.used_blocks = 0
        self.resident = 0
        self.host_used = 0.0
        self.outstanding = 0
        self.busy = False
        self.peak_resident = 0
        self.swap_out_bytes = 0.0
        self.swap_in_bytes = 0.0
        self.preemptions = 0
        self.iterations = 0
        self.record = record
        self.log: list[tuple] = []
        self._swap_cache: dict[int, tuple[float, float]] = {}
        self._kept = dep.kept_tokens_fn()
        knobs = dep.knobs
        self._prune = knobs.prefill_tokens if knobs is not None and knobs.prune_prefill else None
        self.prefix = mem.prefix_tokens
        self.prefix_owner = -1  # the request that prefills the prefix; -2 once it is cached
        self.pre_held = 0  # prompt tokens prefilled by requests still prefilling (their KV is held)
        self.engine = dep.engine
        self._prefill_first = self.engine is not None and self.engine.chunked_prefill.value == "prefill-first"
        self._layers = dep.model.num_layers // dep.pp
        self.admitted = 0  # requests admitted to prefill since the last step (the engine's per-request cost)
        self.step_durations: list[
            float
        ] = []  # per iteration that decodes: its duration and decode batch (ITL)
        self.step_batches: list[int] = []
        self._stalled = 0.0  # seconds of prefill-only steps the decoding requests sat out (prefill-first)
        self.prefix_loads = 0  # cached prefixes loaded from host or SSD (a recompute loads again)
        self.prefix_load_bytes = 0.0
        self.prefix_load_s = 0.0

    # -- bookkeeping -----------------------------------------------------------------
    def add(self, i: int) -> None:
        r = self.r
        r.replica[i] = self.index
        r.blocks[i] = self.mem.blocks_for(self._kept(r.prompt[i] + r.output[i]) - r.shared[i])
        self.waiting.append(i)
        self.outstanding += 1

    def _swap(self, kv_tokens: int) -> tuple[float, float]:
        t = self._swap_cache.get(kv_tokens)
        if t is None:
            t = self._swap_cache[kv_tokens] = swap_times_s(self.dep, self.mem, kv_tokens)
        return t

    def _swap_bytes(self, kv_tokens: int) -> float:
        return self.mem.swap_bytes_per_gpu(kv_tokens) * self.gpus

    def _join_decode(self, i: int, t: float) -> None:
        r = self.r
        r.base[i] = r.gen[i] - self.step_no
        self.b += 1
        self.p_sum += r.prompt[i] + r.base[i]
        heapq.heappush(self.heap, (r.output[i] - r.base[i], r.version[i], i))
        self.decode_order.append((self.step_no, i, r.version[i]))

    def _finish(self, i: int, t: float) -> None:
        r = self.r
        r.finish[i] = t
        self.used_blocks -= r.blocks[i]
        self.resident -= 1
        self.outstanding -= 1
        r.completed += 1

    def _preempt_one(self, t: float, cost: list) -> bool:
        """Preempt the longest-decoding request whose slice is spent; False if none may go."""
        r, dq = self.r, self.decode_order
        while dq and dq[0][2] != r.version[dq[0][1]]:
            dq.popleft()
        if not dq or self.step_no - dq[0][0] < self.dep.slice_tokens:
            return False
        i = dq[0][1]
        gen = r.base[i] + self.step_no
        kv = self._kept(r.prompt[i] + gen) - r.shared[i]
        if self.policy is KvPolicy.SWAP:
            nbytes = self._swap_bytes(kv)
            if self.host_used + nbytes > self.mem.host_kv_bytes:
                return False
            self.host_used += nbytes
            r.swapped_bytes[i] = nbytes
            self.swap_out_bytes += nbytes
            cost[0] += self._swap(kv)[0]
            cost[1] += nbytes
        dq.popleft()
        r.version[i] += 1
        self.b -= 1
        self.p_sum -= r.prompt[i] + r.base[i]
        r.gen[i] = gen
        self.used_blocks -= r.blocks[i]
        self.resident -= 1
        r.preemptions[i] += 1
        self.preemptions += 1
        self.waiting.append(i)
        return True

    def _admit(self, t: float, cost: list) -> None:
        r, cap, maxseq = self.r, self.mem.capacity_blocks, self.dep.max_num_seqs
        preempted: set[int] = set()
        waiting = self.waiting
        while waiting:
            i = waiting[0]
            if i in preempted:
                break
            if self.used_blocks + r.blocks[i] > cap or self.resident >= maxseq:
                if self.policy is KvPolicy.QUEUE:
                    break
                before = len(waiting)
                if not self._preempt_one(t, cost):
                    break
                preempted.add(waiting[before])
                continue
            waiting.popleft()
            self.used_blocks += r.blocks[i]
            self.resident += 1
            if r.swapped_bytes[i]:
                nbytes = r.swapped_bytes[i]
                kv = self._kept(r.prompt[i] + r.gen[i]) - r.shared[i]
                cost[0] += self._swap(kv)[1]
                cost[2] += nbytes
                self.host_used -= nbytes
                self.swap_in_bytes += nbytes
                r.swapped_bytes[i] = 0.0
                self._join_decode(i, t)
            else:
                tgt = r.prompt[i] + r.gen[i]
                if self._prune is not None:  # the pruned prompt (and tokens so far) is all that runs
                    tgt = int(self._prune(tgt))
                r.start[i] = 0
                if self.prefix:
                    if self.prefix_owner == -1:
                        self.prefix_owner = i  # prefills the prefix with its own tokens
                    else:  # the prefix is (or will be) cached: only the request's own tokens run
                        r.start[i] = self.prefix
                        tgt -= self.prefix
                elif r.cached[i]:  # a prefix hit: its KV is resident or loaded now; the rest runs
                    r.start[i] = r.cached[i]
                    tgt -= r.cached[i]
                    if r.load_s[i]:
                        cost[3] += r.load_s[i]
                        self.prefix_loads += 1
                        self.prefix_load_bytes += r.load_bytes[i] * self.gpus
                r.target[i] = tgt
                r.done[i] = 0
                budget = self.dep.token_budget
                n = -(-tgt // budget)
                r.chunk[i] = -(-tgt // n)
                self.prefilling.append(i)
                self.admitted += 1
        self.peak_resident = max(self.peak_resident, self.resident)

    # -- one iteration ----------------------------------------------------------------------
    def step(self, t: float) -> float | None:
        """Run one iteration starting at ``t``; its duration in seconds, or None when idle."""
        cost = [0.0, 0.0, 0.0, 0.0]  # swap seconds, bytes out, bytes in, prefix-load seconds
        if self.waiting:
            self._admit(t, cost)
        b = self.b
        if not b and not self.prefilling:
            return None
        r, timer = self.r, self.timer
        if self._prefill_first and self.prefilling:
            b = 0  # a prefill step: the decoding requests wait for it
        left = self.dep.token_budget - b
        ptoks = 0
        pattn = pmax = 0.0
        completed = []
        held = self.pre_held
        cached = self.prefix_owner == -2
        ran = 0
        for i in self.prefilling:
            if left <= 0:
                break
            s = r.start[i]
            if s and self.prefix and not cached:
                break  # waits until the shared prefix is cached (first come, first served)
            rem = r.target[i] - r.done[i]
            c = min(r.chunk[i], rem)
            c = min(c, left)
            d = r.done[i] + c
            r.done[i] = d
            a = timer.attn_prefill_s(c, s + d)
            pattn += a
            pmax = max(pmax, a)
            ptoks += c
            left -= c
            ran += 1
            if d == r.target[i]:
                completed.append(i)
            if i == self.prefix_owner and d >= self.prefix:
                self.prefix_owner = -2  # cached from the next iteration on
        self.pre_held = held + ptoks
        pattn = timer.rank_prefill_attn_s(pattn, pmax)
        total_kv = self.p_sum + b * self.step_no
        dur = timer.iteration_s(b, total_kv, ptoks, b + len(completed), pattn, held)
        if cost[3]:  # prefixes loaded from host or SSD, layer by layer under this iteration's work
            self.prefix_load_s += cost[3]
            dur = hit_s(cost[3], dur, self._layers)
        if self.engine is not None:
            dur = self.engine.step_s(dur, b, ptoks, self.admitted, self._layers)
            self.admitted = 0
        dur += cost[0]
        end = t + dur
        if b:  # each decoding sequence waited this step (and any prefill step it sat out) for its token
            self.step_durations.append(dur + self._stalled)
            self.step_batches.append(b)
            self._stalled = 0.0
        elif self.b:
            self._stalled += dur
        if self.record:
            self.log.append(
                (
                    self.index,
                    t,
                    dur,
                    b,
                    ptoks,
                    len(completed),
                    self.used_blocks,
                    self.resident,
                    len(self.waiting),
                    cost[1],
                    cost[2],
                )
            )
        self.iterations += 1
        if b:
            self.step_no += 1
            heap, step, ver = self.heap, self.step_no, r.version
            while heap and heap[0][0] <= step:
                _, v, i = heapq.heappop(heap)
                if v == ver[i]:
                    self.b -= 1
                    self.p_sum -= r.prompt[i] + r.base[i]
                    ver[i] += 1
                    self._finish(i, end)
        if completed:  # a multi-chunk prompt ahead of a finished one stays, in its place
            pf = self.prefilling
            keep = [j for j in (pf.popleft() for _ in range(ran)) if r.done[j] < r.target[j]]
            pf.extendleft(reversed(keep))
        for i in completed:
            self.pre_held -= r.done[i]
            r.gen[i] += 1
            if r.first_token[i] != r.first_token[i]:  # NaN: first token of this request
                r.first_token[i] = end
            if r.gen[i] >= r.output[i]:
                self._finish(i, end)
            else:
                self._join_decode(i, end)
        return dur
