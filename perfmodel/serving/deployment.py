"""One serving deployment: model, GPU, TP/PP degrees, replicas, scheduler knobs, and its memory.

Memory per GPU comes from :func:`perfmodel.phases.memory_budget` (weights,
activation workspace of one iteration of ``token_budget`` tokens, reserve);
what is left holds the paged KV cache in blocks of ``block_tokens`` tokens.
Pipeline parallelism splits the layers (weights and KV) over ``pp`` stages;
the simulator runs the stages one after another with no micro-batch
interleaving (PP adds memory, not throughput), plus one activation transfer
per stage boundary.

KV-cache what-if knobs (:class:`perfmodel.knobs.Knobs`, ``Deployment.knobs``)
change the KV bytes per token (format, layers, heads), the tokens a sequence
keeps (eviction ratio, budget, window) and a hybrid stack's per-sequence
state; the blocks, the HBM capacity and the swap bytes follow.  A shared
prefix is stored once per replica (its blocks are reserved at start, and a
request reserves only its own suffix); KV tiers add their capacity to the
room for KV; with attention offloading the room is the pool's memory, as
:func:`perfmodel.phases.memory_budget` counts them.

A pure state-space stack (Mamba, Mamba-2: ``model.ssm``) has no KV cache: each
sequence holds a constant state (convolution and SSM state of every layer), so
a block is one sequence's state and a request reserves one block whatever its
length (:attr:`ReplicaMemory.block_bytes_per_gpu`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfmodel.hw.loader import load_gpu
from perfmodel.hw.spec import GPU
from perfmodel.calibration import Mode, Profile, resolve_profile
from perfmodel.errors import DoesNotFitError, InvalidInputError
from perfmodel.knobs import KnobError, Knobs, effective_model
from perfmodel.layers import (
    Precision,
    apply_knobs,
    check_tp,
    kv_bytes_per_token_per_gpu,
    recurrent_state_bytes_per_gpu,
)
from perfmodel.models import ModelSpec, load_model, weights_dtype
from perfmodel.serving.engine import Engine, load_engine
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
    ep : int
        Expert-parallel degree of an MoE model (1: the experts split over ``tp``).  With ``ep > tp`` a
        replica is ``ep`` GPUs in ``ep // tp`` data-parallel attention groups of ``tp``, each holding its
        own requests' KV, and the MoE layers run over all of them (as
        :func:`perfmodel.parallel.parallel_phases` prices it); ``pp`` must then be 1.
    moe_placement : MoePlacement or None
        An expert placement (:class:`perfmodel.ep_route.MoePlacement`, ``ep`` GPUs; ``make`` also takes a
        ``plan moe --json`` path): the all-to-all from its traffic and the expert GEMMs on the GPU it loads
        most (:func:`perfmodel.parallel.ep_moe_cost`).
    knobs : Knobs or None
        KV-cache what-if knobs (``docs/knobs.md``); ``None`` or ``Knobs()``
        changes nothing.  ``knobs.kv_dtype`` wins over ``precision.kv``.  Every
        knob is priced (see ``docs/serving.md``); KV tiers and attention
        offloading need ``pp == 1`` (:class:`perfmodel.knobs.KnobError`
        otherwise).
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
    knobs: Knobs | None = None
    engine: Engine | None = None
    ep: int = 1
    moe_placement: Any = None

    @classmethod
    def make(
        cls,
        model="llama-3-8b",
        gpu="h100-sxm-80gb",
        mode: Mode | str = Mode.CALIBRATED,
        weight_dtype=None,
        kv_dtype=None,
        attention_impl=None,
        launch=None,
        **kw,
    ) -> Deployment:
        """Build from names; ``kw`` are the other fields (enums may be given as strings, ``knobs`` a Knobs).
        ``attention_impl`` (``sdpa`` default, ``flash2``, ``triton``) picks the attention kernel's curves.
        ``engine`` (a name of ``hw/data/engines`` or an :class:`Engine`) adds its overheads and gives the
        token budget, ``max_num_seqs`` and the reserve that ``kw`` leaves unset.

        Parameters
        ----------
        model : str or ModelSpec
        gpu : str or GPU
        mode : Mode or str
            ``calibrated`` (default) or ``peak``.
        weight_dtype, kv_dtype : str or None
            Precisions; None: the model's.
        attention_impl, launch : str or None
            As in :func:`perfmodel.analyze`.
        **kw
            Other fields: ``tp``, ``pp``, ``replicas`` (GPUs and replicas), ``token_budget`` (tokens),
            ``block_tokens`` (tokens per KV block), ``kv_policy``, ``engine``, ``knobs`` ...

        Returns
        -------
        Deployment
        """
        eng = load_engine(kw.pop("engine", None))
        if eng is not None:
            kw.setdefault("token_budget", eng.max_num_batched_tokens)
            kw.setdefault("max_num_seqs", min(eng.max_num_seqs, kw["token_budget"]))
            kw.setdefault("reserve_fraction", eng.reserve_fraction)
            kw["engine"] = eng
        m, g = load_model(model), load_gpu(gpu)
        from perfmodel.scenario import check_mode, validate_scenario

        # the shared rules (mode, degrees, GPUs of the layout); the knobs' rules for serving are __post_init__'s
        validate_scenario(m, None, 0, kw.get("tp", 1), kw.get("pp", 1), mode, gpu=g, ep=kw.get("ep", 1))
        if kw.get("moe_placement") is not None:
            from perfmodel.scenario import check_placement

            kw["moe_placement"] = check_placement(m, kw["moe_placement"], kw.get("ep", 1))
        prof = resolve_profile(g, check_mode(mode), kw.pop("profile", None), attention_impl, launch)
        if "kv_policy" in kw:
            kw["kv_policy"] = _enum(KvPolicy, kw["kv_policy"], "kv_policy")
        if "router" in kw:
            kw["router"] = _enum(Router, kw["router"], "router")
        return cls(
            model=m,
            gpu=g,
            profile=prof,
            precision=Precision.of(weights_dtype(m, weight_dtype), "bf16", kv_dtype),
            **kw,
        )

    @classmethod
    def from_scenario(cls, scenario, **kw) -> Deployment:
        """The deployment of a checked :class:`perfmodel.scenario.Scenario`: its model, GPU, profile,
        precision, knobs, ``tp`` and ``pp``, and its ``chunk_tokens`` as the token budget; ``kw`` are the
        serving fields (``replicas``, ``max_num_seqs``, ``kv_policy`` ...).  Its workload is not read: the
        simulator takes requests.  ``ep`` and the MoE placement are kept; ``attention_dp`` is kept when it is
        the layout ``ep`` gives alone (``ep = attention_dp * tp``: :func:`perfmodel.parallel.attention_groups`);
        a layout with ``sp``, a topology or tensor-parallel MoE under data-parallel attention (``ep`` 1) is
        refused (the simulator models TP, PP and EP replicas).

        Parameters
        ----------
        scenario : Scenario
            A checked scenario of one TP/PP/EP layout.
        **kw
            Serving fields, as in :meth:`make`.

        Returns
        -------
        Deployment

        Raises
        ------
        InvalidInputError
            For a layout with ``sp``, a topology, or ``attention_dp`` other than ``ep // tp``.
        """
        lay = scenario.layout
        dp_alone = lay.attention_dp == 1 or lay.ep == lay.attention_dp * lay.tp
        if lay.sp > 1 or lay.topology or not dp_alone:
            raise InvalidInputError(
                "the simulator models tp, pp and ep per replica (data-parallel attention as "
                f"ep = attention_dp * tp); this scenario's layout has sp={lay.sp}, "
                f"ep={lay.ep}, attention_dp={lay.attention_dp}, topology={lay.topology}"
            )
        if "kv_policy" in kw:
            kw["kv_policy"] = _enum(KvPolicy, kw["kv_policy"], "kv_policy")
        if "router" in kw:
            kw["router"] = _enum(Router, kw["router"], "router")
        kw.setdefault("token_budget", scenario.chunk_tokens or DEFAULT_PREFILL_CHUNK_TOKENS)
        kw.setdefault("reserve_fraction", scenario.reserve_fraction)
        return cls(
            model=scenario.model,
            gpu=scenario.gpu,
            tp=lay.tp,
            pp=lay.pp,
            precision=scenario.precision,
            profile=scenario.profile,
            knobs=scenario.knobs,
            ep=lay.ep,
            moe_placement=scenario.moe_placement,
            **kw,
        )

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "replicas", "token_budget", "max_num_seqs", "block_tokens", "ep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"{name} must be an integer >= 1, got {v!r}")
        check_tp(self.model, self.tp)
        from perfmodel.parallel import check_pp

        check_pp(self.model, self.pp)  # pp divides the layers, as in analyze and sweep (perfmodel.scenario)
        self._check_ep()
        if self.max_num_seqs > self.token_budget:
            raise InvalidInputError(
                f"max_num_seqs ({self.max_num_seqs}) must not exceed token_budget ({self.token_budget}): "
                "every resident request decodes one token per iteration"
            )
        if (
            isinstance(self.slice_tokens, bool)
            or not isinstance(self.slice_tokens, int)
            or self.slice_tokens < 1
        ):
            raise InvalidInputError(f"slice_tokens must be an integer >= 1, got {self.slice_tokens!r}")
        if self.host_kv_bytes is not None and not self.host_kv_bytes >= 0:
            raise InvalidInputError(f"host_kv_bytes must be >= 0, got {self.host_kv_bytes!r}")
        if not 0 <= self.reserve_fraction < 1:
            raise InvalidInputError(f"reserve_fraction must be in [0, 1), got {self.reserve_fraction}")
        k = self.knobs
        if k is not None:
            if not isinstance(k, Knobs):
                raise KnobError(f"knobs must be a Knobs, got {type(k).__name__}")
            if not k.active:
                object.__setattr__(self, "knobs", None)
            else:
                if self.model.ssm is not None and (k.kv_tiers or k.offload is not None):
                    raise KnobError(
                        f"KV tiers and attention offloading move KV and attention; {self.model.name} is "
                        "a state-space stack with neither"
                    )
                if self.pp > 1 and (k.kv_tiers or k.offload is not None):
                    raise KnobError(
                        "KV tiers and attention offloading need pp=1 in the simulator: the core prices "
                        "them for one GPU's whole stack, not per pipeline stage"
                    )
                m = effective_model(self.model, k)
                k.check(m)
                check_tp(m, self.tp)

    def _check_ep(self) -> None:
        from perfmodel.parallel import check_ep, check_knobs, group_world

        check_ep(self.model, self.ep)  # ParallelConfigError, an InvalidInputError
        group_world(self.tp, self.pp, 1, self.ep)
        if self.ep > 1 and self.pp > 1:
            raise InvalidInputError(
                f"ep={self.ep} with pp={self.pp} is not modelled in the simulator: use pp=1"
            )
        if self.ep > 1:
            check_knobs(self.knobs)  # the knobs the multi-GPU phases do not price
        pl = self.moe_placement
        if pl is not None:
            from perfmodel.ep_route import MoePlacement

            if not isinstance(pl, MoePlacement):
                raise InvalidInputError(
                    f"moe_placement must be a MoePlacement (Deployment.make reads a path), "
                    f"got {type(pl).__name__}"
                )
            if self.ep <= 1:
                raise InvalidInputError(f"an MoE placement needs expert parallelism (ep > 1); ep={self.ep}")
            pl.check(self.model.moe.num_experts, self.model.num_moe_layers, self.ep)

    @property
    def attention_ranks(self) -> int:
        """Data-parallel attention groups of ``tp`` GPUs in a replica (``ep // tp`` under EP, else 1:
        :func:`perfmodel.parallel.attention_groups`)."""
        from perfmodel.parallel import attention_groups

        return attention_groups(self.tp, self.ep)

    @property
    def kv_model(self) -> ModelSpec:
        """The model with the knobs that change its config applied (KV heads, sliding window)."""
        return effective_model(self.model, self.knobs)

    @property
    def kv_precision(self) -> Precision:
        """``precision`` with the knobs' KV format."""
        return apply_knobs(self.precision, self.knobs)

    def kept_tokens(self, tokens: int) -> int:
        """Tokens whose KV a sequence of ``tokens`` tokens keeps (knobs, then the model's window).

        Parameters
        ----------
        tokens : int
            The sequence's length, tokens.

        Returns
        -------
        int
            Tokens of KV kept.
        """
        return self.kept_tokens_fn()(tokens)

    def kept_tokens_fn(self) -> Callable[[int], int]:
        """:meth:`kept_tokens` as a plain function of its constants (for the scheduler's hot path).

        A model whose layers mix sliding-window and global attention keeps, per sequence, the
        layer-average of the two (rounded up), so KV bytes stay ``per-token bytes x kept tokens``.

        Returns
        -------
        callable of int to int
            Sequence length (tokens) to tokens of KV kept.
        """
        m = self.kv_model
        if 0 < m.num_sliding_layers < m.num_layers:
            inner = self._kept_tokens_fn(0)
            return lambda t: int(math.ceil(m.kv_tokens(inner(t))))
        return self._kept_tokens_fn(m.sliding_window)

    def _kept_tokens_fn(self, w: int) -> Callable[[int], int]:
        k = self.knobs
        if k is not None and k.keep_schedule:  # the layer-mean of the schedule's kept tokens, rounded up
            n_layers = self.kv_model.num_layers
            return lambda t: int(math.ceil(min(float(k.kept_tokens(t, n_layers)), w if w > 0 else math.inf)))
        ratio = 1.0 if k is None else float(k.kv_keep_ratio)
        budget = None if k is None or k.kv_budget_tokens is None else int(k.kv_budget_tokens)
        if ratio >= 1 and budget is None:
            if w <= 0:
                return int
            return lambda t: min(int(t), w)
        cap = min(budget if budget is not None else math.inf, w if w > 0 else math.inf)

        def kept(t: int) -> int:
            t = int(t)
            if ratio < 1:
                t = min(math.ceil(ratio * t), t)
            return int(min(t, cap))

        return kept

    def check_knobs(self, shortest_prompt: int) -> None:
        """Raise :class:`KnobError` when a knob does not fit the shortest prompt (a window longer than it).

        Parameters
        ----------
        shortest_prompt : int
            The shortest prompt of the workload, tokens.

        Raises
        ------
        KnobError
            When a knob needs a longer context than ``shortest_prompt``.
        """
        if self.knobs is not None:
            self.knobs.check(self.kv_model, context_len=int(shortest_prompt))

    @property
    def gpus(self) -> int:
        """GPUs of all replicas: ``pp x max(tp, ep)`` each."""
        return self.pp * max(self.tp, self.ep) * self.replicas

    @property
    def resolved_profile(self) -> Profile:
        """The profile the deployment is priced with: its own (default: calibrated), all-reduces as its
        engine runs them (:meth:`Engine.profile_for`)."""
        prof = self.profile if self.profile is not None else resolve_profile(self.gpu, Mode.CALIBRATED, None)
        return self.engine.profile_for(prof) if self.engine is not None else prof

    def describe(self) -> str:
        """One line: model, replicas x (GPU, tp, pp, ep), knobs and engine.

        Returns
        -------
        str
            The description.
        """
        ep = f" ep={self.ep}" if self.ep > 1 else ""
        placed = " (MoE placement)" if self.moe_placement is not None else ""
        s = f"{self.model.name} on {self.replicas}x({self.gpu.name} tp={self.tp} pp={self.pp}{ep}){placed}"
        s += f" with {', '.join(self.knobs.describe())}" if self.knobs is not None else ""
        return s + (f" under {self.engine.name}" if self.engine is not None else "")


def _enum(cls, value, name):
    try:
        return cls(value)
    except ValueError:
        raise InvalidInputError(
            f"{name} must be one of {', '.join(e.value for e in cls)}, got {value!r}"
        ) from None


@dataclass(frozen=True)
class ReplicaMemory:
    """KV capacity of one replica (per GPU figures, bytes; blocks per replica).

    A block holds ``block_tokens`` tokens' KV; in a state-space stack (no KV per token) it holds one
    sequence's recurrent state (:attr:`block_bytes_per_gpu`).  Under expert parallelism a replica has
    ``ranks`` attention groups, each with its own KV room: ``capacity_blocks`` is theirs together, and
    one sequence must fit one group (:attr:`rank_blocks`).
    """

    free_for_kv_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    capacity_blocks: int
    block_tokens: int
    host_kv_bytes: float
    state_bytes_per_gpu: float = 0.0
    prefix_tokens: int = 0
    prefix_blocks: int = 0
    extra_kv_bytes_per_gpu: float = 0.0
    room_bytes_per_gpu: float | None = None
    cache_blocks: int = (
        0  # blocks held by prefixes cached in HBM (a workload's CachedPrefix), not in capacity
    )
    ranks: int = 1

    @property
    def rank_blocks(self) -> int:
        """Blocks of one attention group (the most one sequence can take)."""
        return self.capacity_blocks // self.ranks

    @property
    def kv_room_bytes_per_gpu(self) -> float:
        """Bytes for the requests' own KV: free HBM (plus tiers; or the attention pool) less the shared prefix."""
        if self.room_bytes_per_gpu is not None:
            return self.room_bytes_per_gpu
        return max(self.free_for_kv_bytes_per_gpu, 0.0)

    @property
    def block_bytes_per_gpu(self) -> float:
        """Bytes of one block on each GPU: ``block_tokens`` tokens' KV, or, in a state-space stack (no KV),
        one sequence's state."""
        if self.kv_bytes_per_token_per_gpu > 0:
            return self.block_tokens * self.kv_bytes_per_token_per_gpu
        return self.state_bytes_per_gpu

    @property
    def state_blocks(self) -> int:
        """Blocks a sequence's recurrent state takes (hybrid stacks; one in a state-space stack; else 0)."""
        if self.state_bytes_per_gpu <= 0:
            return 0
        return math.ceil(self.state_bytes_per_gpu / self.block_bytes_per_gpu)

    def own_tokens(self, kv_tokens: int) -> int:
        """Tokens of a sequence's KV that are its own: all but the shared prefix (stored once per replica).

        Parameters
        ----------
        kv_tokens : int
            The sequence's tokens of KV, shared prefix included.

        Returns
        -------
        int
            Tokens of its own (never negative).
        """
        return max(int(kv_tokens) - self.prefix_tokens, 0)

    def blocks_for(self, kv_tokens: int) -> int:
        """Blocks one sequence of ``kv_tokens`` tokens of KV reserves: its own KV (not the shared prefix),
        plus its recurrent state (a state-space stack: its state alone, at any length).

        Parameters
        ----------
        kv_tokens : int
            The sequence's tokens of KV, shared prefix included.

        Returns
        -------
        int
            KV blocks (each ``block_tokens`` tokens) plus state blocks.
        """
        if self.kv_bytes_per_token_per_gpu <= 0:
            return self.state_blocks
        return -(-self.own_tokens(kv_tokens) // self.block_tokens) + self.state_blocks

    def swap_bytes_per_gpu(self, kv_tokens: int) -> float:
        """Bytes one GPU moves to swap one sequence: its own KV blocks and its recurrent state (the shared
        prefix stays).

        Parameters
        ----------
        kv_tokens : int
            The sequence's tokens of KV, shared prefix included.

        Returns
        -------
        float, bytes
            Bytes moved per GPU, each way.
        """
        return (
            -(-self.own_tokens(kv_tokens) // self.block_tokens)
            * self.block_tokens
            * self.kv_bytes_per_token_per_gpu
            + self.state_bytes_per_gpu
        )

    @property
    def capacity_tokens(self) -> int:
        return self.capacity_blocks * self.block_tokens


def stage_layer_fraction(model: ModelSpec, pp: int) -> float:
    """Share of the layers on the largest pipeline stage."""
    return math.ceil(model.num_layers / pp) / model.num_layers


def replica_memory(dep: Deployment, cached_prefix_tokens: tuple[int, ...] = ()) -> ReplicaMemory:
    """Room for KV on each GPU of a replica, as paged blocks (a state-space stack: one block per
    sequence's state, :attr:`ReplicaMemory.block_bytes_per_gpu`).

    With knobs, the weights and workspace are those of the knobs' model (KV
    heads), and a token's KV and a sequence's recurrent state are priced by
    :func:`perfmodel.layers.kv_bytes_per_token_per_gpu` and
    :func:`perfmodel.layers.recurrent_state_bytes_per_gpu`.  As in
    :func:`perfmodel.phases.memory_budget`: KV tiers add their capacity
    (``offload_capacity_bytes``) to free HBM; with attention offloading the
    pool's memory holds all the KV; a shared prefix takes its blocks once, at
    start (``prefix_blocks``, not counted in ``capacity_blocks``), and so does
    each prefix a workload caches in HBM (``cached_prefix_tokens``, tokens each:
    ``cache_blocks``).  Under expert parallelism the routed experts split over ``ep`` GPUs instead of
    ``tp`` (:func:`perfmodel.parallel.parallel_memory`) and each of the ``ep // tp`` attention groups
    holds its own requests' KV.

    Parameters
    ----------
    dep : Deployment
        The deployment.
    cached_prefix_tokens : tuple of int, optional
        Tokens of each prefix the workload caches in HBM.

    Returns
    -------
    ReplicaMemory
        The block pool per GPU (block size in bytes and tokens, blocks for KV, the prefix and the cache).

    Raises
    ------
    DoesNotFitError
        When the weights and workspace leave no room for one sequence's KV.
    """
    m, prec, k = dep.kv_model, dep.kv_precision, dep.knobs
    # where the KV lives (tiers, pool) is all the budget needs here: the model and precision already carry
    # the other knobs, and the shared prefix is taken in blocks below
    where = (
        None if k is None or not (k.kv_tiers or k.offload) else Knobs(kv_tiers=k.kv_tiers, offload=k.offload)
    )
    mem = memory_budget(
        m,
        dep.gpu,
        dep.token_budget,
        0,
        prec,
        dep.tp,
        chunk_tokens=dep.token_budget,
        reserve_fraction=dep.reserve_fraction,
        knobs=where,
    )
    if dep.ep > 1:
        from perfmodel.parallel import parallel_memory

        mem = parallel_memory(mem, m, prec, dep.tp, 1, 1, dep.ep)
    frac = stage_layer_fraction(dep.model, dep.pp)
    free = float(mem.free_for_kv_bytes) + float(mem.weight_bytes) * (1.0 - frac)
    kv_tok = kv_bytes_per_token_per_gpu(m, dep.tp, prec.kv, k) * frac
    state = recurrent_state_bytes_per_gpu(m, dep.tp, k) * frac
    extra = float(mem.offload_capacity_bytes)
    if free < 0:
        room = 0.0  # the weights alone do not fit: no room anywhere (as the core's max_concurrency)
    elif k is not None and k.offload is not None:
        room = extra
    else:
        room = free + extra
    prefix = 0 if k is None or kv_tok <= 0 else int(k.shared_prefix_tokens)
    prefix_blocks = -(-prefix // dep.block_tokens)
    block_bytes = (
        kv_tok * dep.block_tokens if kv_tok > 0 else state
    )  # a state-space stack: a block is a state
    cache_blocks = sum(-(-int(t) // dep.block_tokens) for t in cached_prefix_tokens) if kv_tok > 0 else 0
    blocks = max(int(room // block_bytes) - prefix_blocks - cache_blocks, 0)
    host = float(dep.gpu.host_ddr_bytes) if dep.host_kv_bytes is None else float(dep.host_kv_bytes)
    ranks = dep.attention_ranks
    return ReplicaMemory(
        free,
        kv_tok,
        blocks * ranks,
        dep.block_tokens,
        host,
        state,
        prefix,
        prefix_blocks,
        extra,
        max(room - (prefix + cache_blocks * dep.block_tokens) * kv_tok, 0.0),
        cache_blocks,
        ranks,
    )


def kv_tokens_kept(dep: Deployment, tokens: int) -> int:
    """Tokens of KV a sequence of ``tokens`` tokens keeps (knobs' eviction, then the window)."""
    return dep.kept_tokens(tokens)


def check_fits_alone(dep: Deployment, mem: ReplicaMemory, prompt_len: int, output_len: int) -> None:
    """Raise unless one request of these lengths fits the replica's HBM (a request beyond the model's
    trained window is priced, with a note: :func:`perfmodel.scenario.window_note`)."""
    total = int(prompt_len) + int(output_len)
    need = mem.blocks_for(kv_tokens_kept(dep, total))
    if need > mem.rank_blocks:
        need_b = need * mem.block_bytes_per_gpu
        room_b = mem.rank_blocks * mem.block_bytes_per_gpu
        what = (
            f"the weights and workspace alone exceed HBM by {-mem.free_for_kv_bytes_per_gpu / 2**30:.2f} GiB "
            "per GPU; raise tp or pp"
            if mem.free_for_kv_bytes_per_gpu <= 0
            else f"one request of {total} tokens needs {need_b / 2**30:.2f} GiB of "
            f"{'KV' if mem.kv_bytes_per_token_per_gpu > 0 else 'state'} per GPU, "
            f"{room_b / 2**30:.2f} GiB is free"
        )
        raise DoesNotFitError(
            f"{dep.describe()}: {what}", needed_bytes=int(need_b), available_bytes=int(room_b)
        )


def swap_times_s(dep: Deployment, mem: ReplicaMemory, kv_tokens: int) -> tuple[float, float]:
    """(out, in) seconds to move one request's KV between HBM and host; GPUs move their shares in parallel."""
    sw = context_switch(dep.gpu, dep.resolved_profile, mem.swap_bytes_per_gpu(kv_tokens), knobs=dep.knobs)
    return float(sw.swap_out.total_s), float(sw.swap_in.total_s)
