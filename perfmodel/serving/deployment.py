"""One serving deployment: model, GPU, TP/PP degrees, replicas, scheduler knobs, and its memory.

Memory per GPU comes from :func:`perfmodel.phases.memory_budget` (weights,
activation workspace of one iteration of ``token_budget`` tokens, reserve);
what is left holds the paged KV cache in blocks of ``block_tokens`` tokens.
Pipeline parallelism splits the layers (weights and KV) over ``pp`` stages;
the simulator runs the stages one after another with no micro-batch
interleaving (PP adds memory, not throughput), plus one activation transfer
per stage boundary.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from hw.loader import load_gpu
from hw.spec import GPU
from perfmodel.calibration import Mode, Profile, resolve_profile
from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.layers import Precision, check_tp, kv_bytes_per_token_per_gpu
from perfmodel.models import ModelSpec, load_model
from perfmodel.phases import (
    DEFAULT_PREFILL_CHUNK_TOKENS,
    DEFAULT_RESERVE_FRACTION,
    context_switch,
    memory_budget,
)


class KvPolicy(str, enum.Enum):
    """What the scheduler does when a waiting request's KV does not fit in HBM.

    ``swap``: time-slice: preempt the longest-resident decoding request whose
    slice is spent, move its KV to host memory over PCIe, and swap it back in
    before it resumes.  ``recompute``: the same, but drop the KV and prefill
    the prompt and the tokens generated so far again.  ``queue``: wait.
    """

    SWAP = "swap"
    RECOMPUTE = "recompute"
    QUEUE = "queue"


class Router(str, enum.Enum):
    ROUND_ROBIN = "round-robin"
    LEAST_LOADED = "least-loaded"


@dataclass(frozen=True)
class Deployment:
    """Replicas of one TP x PP group behind a router, with the scheduler's settings.

    Attributes
    ----------
    token_budget : int, tokens
        Tokens per iteration (decode tokens plus prefill-chunk tokens).
    max_num_seqs : int
        Requests resident on a replica at once (besides the HBM limit).
    block_tokens : int, tokens
        Paged-KV block size.
    slice_tokens : int, tokens
        Decode steps a request runs after (re)joining the batch before
        ``swap``/``recompute`` may preempt it for a waiting one (the time
        slice, counted in tokens so that every residence makes progress).
    host_kv_bytes : float or None, bytes
        Host memory a replica may fill with swapped KV (default: the GPU's
        ``host_ddr_bytes``).
    """

    model: ModelSpec
    gpu: GPU
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    precision: Precision = field(default_factory=Precision)
    profile: Profile | None = None
    token_budget: int = DEFAULT_PREFILL_CHUNK_TOKENS
    max_num_seqs: int = 1024
    block_tokens: int = 16
    kv_policy: KvPolicy = KvPolicy.SWAP
    slice_tokens: int = 128
    router: Router = Router.LEAST_LOADED
    host_kv_bytes: float | None = None
    reserve_fraction: float = DEFAULT_RESERVE_FRACTION

    @classmethod
    def make(cls, model="llama-3-8b", gpu="h100-sxm-80gb", mode: Mode | str = Mode.PEAK,
             weight_dtype="bf16", kv_dtype=None, **kw) -> Deployment:
        """Build from names; ``kw`` are the other fields (enums may be given as strings)."""
        m, g = load_model(model), load_gpu(gpu)
        prof = resolve_profile(g, Mode(mode), kw.pop("profile", None))
        if "kv_policy" in kw:
            kw["kv_policy"] = _enum(KvPolicy, kw["kv_policy"], "kv_policy")
        if "router" in kw:
            kw["router"] = _enum(Router, kw["router"], "router")
        return cls(model=m, gpu=g, profile=prof, precision=Precision.of(weight_dtype, "bf16", kv_dtype), **kw)

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "replicas", "token_budget", "max_num_seqs", "block_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name} must be an integer >= 1, got {v!r}")
        check_tp(self.model, self.tp)
        if self.pp > self.model.num_layers:
            raise InvalidInputError(f"pp={self.pp} exceeds the {self.model.num_layers} layers of {self.model.name}")
        if self.max_num_seqs > self.token_budget:
            raise InvalidInputError(
                f"max_num_seqs ({self.max_num_seqs}) must not exceed token_budget ({self.token_budget}): "
                "every resident request decodes one token per iteration")
        if isinstance(self.slice_tokens, bool) or not isinstance(self.slice_tokens, int) or self.slice_tokens < 1:
            raise InvalidInputError(f"slice_tokens must be an integer >= 1, got {self.slice_tokens!r}")
        if self.host_kv_bytes is not None and not self.host_kv_bytes >= 0:
            raise InvalidInputError(f"host_kv_bytes must be >= 0, got {self.host_kv_bytes!r}")
        if not 0 <= self.reserve_fraction < 1:
            raise InvalidInputError(f"reserve_fraction must be in [0, 1), got {self.reserve_fraction}")

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.replicas

    @property
    def resolved_profile(self) -> Profile:
        return self.profile if self.profile is not None else resolve_profile(self.gpu, Mode.PEAK, None)

    def describe(self) -> str:
        return f"{self.model.name} on {self.replicas}x({self.gpu.name} tp={self.tp} pp={self.pp})"


def _enum(cls, value, name):
    try:
        return cls(value)
    except ValueError:
        raise InvalidInputError(f"{name} must be one of {', '.join(e.value for e in cls)}, got {value!r}") from None


@dataclass(frozen=True)
class ReplicaMemory:
    """KV capacity of one replica (per GPU figures, bytes; blocks per replica)."""

    free_for_kv_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    capacity_blocks: int
    block_tokens: int
    host_kv_bytes: float

    def blocks_for(self, kv_tokens: int) -> int:
        return -(-int(kv_tokens) // self.block_tokens)

    @property
    def capacity_tokens(self) -> int:
        return self.capacity_blocks * self.block_tokens


def stage_layer_fraction(model: ModelSpec, pp: int) -> float:
    """Share of the layers on the largest pipeline stage."""
    return math.ceil(model.num_layers / pp) / model.num_layers


def replica_memory(dep: Deployment) -> ReplicaMemory:
    """HBM left for KV on each GPU of a replica, as paged blocks."""
    mem = memory_budget(dep.model, dep.gpu, dep.token_budget, 0, dep.precision, dep.tp,
                        chunk_tokens=dep.token_budget, reserve_fraction=dep.reserve_fraction)
    frac = stage_layer_fraction(dep.model, dep.pp)
    free = float(mem.free_for_kv_bytes) + float(mem.weight_bytes) * (1.0 - frac)
    kv_tok = kv_bytes_per_token_per_gpu(dep.model, dep.tp, dep.precision.kv) * frac
    blocks = int(max(free, 0.0) // (kv_tok * dep.block_tokens))
    host = float(dep.gpu.host_ddr_bytes) if dep.host_kv_bytes is None else float(dep.host_kv_bytes)
    return ReplicaMemory(free, kv_tok, blocks, dep.block_tokens, host)


def kv_tokens_kept(model: ModelSpec, tokens: int) -> int:
    """Tokens of KV a sequence keeps (the last ``sliding_window`` for windowed models)."""
    return min(tokens, model.sliding_window) if model.sliding_window > 0 else tokens


def check_fits_alone(dep: Deployment, mem: ReplicaMemory, prompt_len: int, output_len: int) -> None:
    """Raise unless one request of these lengths fits the model's window and the replica's HBM."""
    total = int(prompt_len) + int(output_len)
    if dep.model.max_context and total > dep.model.max_context:
        raise InvalidInputError(
            f"a request of {prompt_len} prompt + {output_len} output tokens exceeds the context window of "
            f"{dep.model.name} ({dep.model.max_context} tokens); shorten it or cap the length distribution")
    need = mem.blocks_for(kv_tokens_kept(dep.model, total))
    if need > mem.capacity_blocks:
        need_b = need * dep.block_tokens * mem.kv_bytes_per_token_per_gpu
        what = (f"the weights and workspace alone exceed HBM by {-mem.free_for_kv_bytes_per_gpu / 2**30:.2f} GiB "
                "per GPU; raise tp or pp" if mem.free_for_kv_bytes_per_gpu <= 0 else
                f"one request of {total} tokens needs {need_b / 2**30:.2f} GiB of KV per GPU, "
                f"{max(mem.free_for_kv_bytes_per_gpu, 0) / 2**30:.2f} GiB is free")
        raise DoesNotFitError(f"{dep.describe()}: {what}", needed_bytes=int(need_b),
                              available_bytes=int(max(mem.free_for_kv_bytes_per_gpu, 0)))


def swap_times_s(dep: Deployment, mem: ReplicaMemory, kv_tokens: int) -> tuple[float, float]:
    """(out, in) seconds to move one request's KV between HBM and host; GPUs move their shares in parallel."""
    sw = context_switch(dep.gpu, dep.resolved_profile, mem.blocks_for(kv_tokens) * dep.block_tokens
                        * mem.kv_bytes_per_token_per_gpu)
    return float(sw.swap_out.total_s), float(sw.swap_in.total_s)
