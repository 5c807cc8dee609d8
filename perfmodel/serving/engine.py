"""What a serving engine pays beside the GPU's kernels, read from a data file (``hw/data/engines/*.yaml``).

An engine file gives, with a source for every figure (``kind``: measured, published or assumed):

``step_overhead_s``
    Host time of every iteration: scheduling, input preparation, sampling, output processing.
``overlap_host``
    Whether that host time runs under the GPU's work (an overlap scheduler: the step takes
    ``max(gpu, host)``) or between steps (``gpu + host``).
``request_overhead_s``
    Host time per request admitted (request setup in the scheduler), added to the step that admits it.
``frontend_s``
    The front end's time per request (HTTP and API handling, tokenization, the request reaching the
    scheduler, the detokenized stream going back).  The front end serves one request at a time: a
    request sent at ``t`` reaches the scheduler at ``max(t, front end free) + frontend_s``.  TTFT and
    end-to-end latency count from ``t``, so they pay it, and a burst of requests queues behind it.
``frontend_blocks_engine``
    The front end runs in the engine's process and event loop (vLLM's OpenAI server before its
    front end moved to a process of its own): no step starts while the front end has requests in hand.
``prefill_step_extra_s``
    Extra host time of a step that runs prefill (its metadata is rebuilt; the first step of a request).
``cuda_graphs``, ``cuda_graph_max_batch``, ``eager_launch_s_per_layer``
    Decode steps up to ``cuda_graph_max_batch`` sequences replay a CUDA graph; other steps (prefill,
    larger batches, or every step without graphs) launch their kernels one by one and cannot take
    less than ``eager_launch_s_per_layer`` per layer.
``max_num_batched_tokens``, ``max_num_seqs``, ``gpu_memory_utilization``
    The token budget of one step, the requests resident at once, and the share of HBM the engine
    takes (the deployment's reserve is the rest).
``custom_all_reduce``
    The engine's own all-reduce for small messages (one-shot and two-shot kernels over NVLink peer
    loads, :class:`perfmodel.costs.collectives.PeerAllReduce`): a mapping of ``max_bytes``,
    ``one_shot_latency_s``, ``one_shot_link_eff``, ``two_shot_latency_s``, ``two_shot_link_eff``; the
    deployment's profile prices every all-reduce it takes with it (:meth:`Engine.profile_for`).
    Absent or ``false``: NCCL only.
``chunked_prefill``
    ``mixed``: decode tokens first, prefill chunks fill the rest of the budget (vLLM V1);
    ``prefill-first``: a step with prefill work runs prefill only and the decoding requests wait
    (SGLang without mixed chunks).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import yaml

from perfmodel.costs.collectives import PeerAllReduce
from perfmodel.errors import InvalidInputError, ProfileError
from perfmodel.hw.loader import DATA_DIR

ENGINE_DIR = DATA_DIR / "engines"
SOURCE_KINDS = ("measured", "published", "assumed")


class ChunkedPrefill(str, enum.Enum):
    MIXED = "mixed"
    PREFILL_FIRST = "prefill-first"


_FLOAT_FIELDS = (
    "step_overhead_s",
    "request_overhead_s",
    "prefill_step_extra_s",
    "eager_launch_s_per_layer",
    "frontend_s",
)
_INT_FIELDS = ("cuda_graph_max_batch", "max_num_batched_tokens", "max_num_seqs")
_BOOL_FIELDS = ("overlap_host", "cuda_graphs", "frontend_blocks_engine")


@dataclass(frozen=True)
class Engine:
    """One engine's overheads and scheduler settings (seconds, tokens); see the module docstring."""

    name: str
    step_overhead_s: float = 0.0
    overlap_host: bool = False
    request_overhead_s: float = 0.0
    frontend_s: float = 0.0
    frontend_blocks_engine: bool = False
    prefill_step_extra_s: float = 0.0
    cuda_graphs: bool = True
    cuda_graph_max_batch: int = 512
    eager_launch_s_per_layer: float = 0.0
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 1024
    chunked_prefill: ChunkedPrefill = ChunkedPrefill.MIXED
    gpu_memory_utilization: float = 0.9
    custom_all_reduce: PeerAllReduce | None = None
    display_name: str = ""
    sources: tuple = ()

    def __post_init__(self) -> None:
        for f in _FLOAT_FIELDS:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidInputError(f"engine {self.name}: {f} must be a number >= 0 seconds, got {v!r}")
        for f in _INT_FIELDS:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidInputError(f"engine {self.name}: {f} must be an integer >= 1, got {v!r}")
        for f in _BOOL_FIELDS:
            if not isinstance(getattr(self, f), bool):
                raise InvalidInputError(f"engine {self.name}: {f} must be true or false")
        u = self.gpu_memory_utilization
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0 < u <= 1:
            raise InvalidInputError(
                f"engine {self.name}: gpu_memory_utilization must be in (0, 1], got {u!r}"
            )
        car = self.custom_all_reduce
        if car is False:
            object.__setattr__(self, "custom_all_reduce", None)
        elif isinstance(car, dict):
            fields = set(PeerAllReduce.__dataclass_fields__)
            if set(car) != fields:
                raise InvalidInputError(
                    f"engine {self.name}: custom_all_reduce needs exactly "
                    f"{', '.join(sorted(fields))}; got {', '.join(sorted(car)) or 'none'}"
                )
            try:
                object.__setattr__(self, "custom_all_reduce", PeerAllReduce(**car))
            except ProfileError as exc:
                raise InvalidInputError(f"engine {self.name}: {exc}") from None
        elif car is not None and not isinstance(car, PeerAllReduce):
            raise InvalidInputError(
                f"engine {self.name}: custom_all_reduce must be a mapping or false, got {car!r}"
            )
        if not isinstance(self.chunked_prefill, ChunkedPrefill):
            try:
                object.__setattr__(self, "chunked_prefill", ChunkedPrefill(self.chunked_prefill))
            except ValueError:
                raise InvalidInputError(
                    f"engine {self.name}: chunked_prefill must be one of "
                    f"{', '.join(c.value for c in ChunkedPrefill)}, "
                    f"got {self.chunked_prefill!r}"
                ) from None

    @property
    def reserve_fraction(self) -> float:
        """The deployment's reserve: the HBM share the engine leaves (``1 - gpu_memory_utilization``)."""
        return 1.0 - float(self.gpu_memory_utilization)

    def graphed(self, decode_batch: int, prefill_tokens: int) -> bool:
        """Whether a step replays a CUDA graph (decode only, batch within the captured sizes)."""
        return self.cuda_graphs and not prefill_tokens and decode_batch <= self.cuda_graph_max_batch

    def step_s(
        self, gpu_s: float, decode_batch: int, prefill_tokens: int, admitted: int, layers: int
    ) -> float:
        """A step's wall time from its GPU time ``gpu_s``: the eager launch floor, then the host's work."""
        if not self.graphed(decode_batch, prefill_tokens):
            gpu_s = max(gpu_s, layers * self.eager_launch_s_per_layer)
        host = self.step_overhead_s + admitted * self.request_overhead_s
        if prefill_tokens:
            host += self.prefill_step_extra_s
        return max(gpu_s, host) if self.overlap_host else gpu_s + host

    def profile_for(self, profile):
        """``profile`` (a :class:`perfmodel.calibration.Profile`) pricing all-reduces as this engine runs them."""
        return profile.with_peer_all_reduce(self.custom_all_reduce)

    def source_kinds(self) -> dict[str, str]:
        """Each field's kind of source (measured, published, assumed)."""
        return {f: s["kind"] for s in self.sources for f in s["fields"]}


def engine_names() -> list[str]:
    return sorted(p.stem for p in ENGINE_DIR.glob("*.yaml"))


def load_engine(name: str | Engine | None) -> Engine | None:
    """The engine of ``hw/data/engines/<name>.yaml`` (``None`` or ``"none"``: no engine overheads)."""
    if name is None or isinstance(name, Engine):
        return name
    if str(name).lower() == "none":
        return None
    path = ENGINE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise InvalidInputError(f"unknown engine {name!r}; known: none, {', '.join(engine_names())}")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{path.name}: expected a mapping")
    sources = raw.pop("sources", None)
    if not isinstance(sources, list) or not sources:
        raise InvalidInputError(f"{path.name}: every engine figure needs a source (a 'sources' list)")
    known = set(Engine.__dataclass_fields__) - {"sources"}
    extra = set(raw) - known
    if extra:
        raise InvalidInputError(f"{path.name}: unknown field(s) {', '.join(sorted(extra))}")
    covered: set[str] = set()
    for s in sources:
        if (
            not isinstance(s, dict)
            or s.get("kind") not in SOURCE_KINDS
            or not s.get("source")
            or not s.get("fields")
        ):
            raise InvalidInputError(
                f"{path.name}: each source needs fields, a kind ({', '.join(SOURCE_KINDS)}) and a source text"
            )
        covered |= set(s["fields"])
    figures = set(raw) - {"name", "display_name"}
    if figures - covered:
        raise InvalidInputError(f"{path.name}: no source for {', '.join(sorted(figures - covered))}")
    return Engine(sources=tuple(sources), **raw)


__all__ = ["ChunkedPrefill", "ENGINE_DIR", "Engine", "engine_names", "load_engine"]
