"""How many GPUs a layout spans and how its attention is grouped: the degree rules that a one-GPU
scenario needs too, apart from the multi-GPU pricing of :mod:`perfmodel.parallel` (which re-exports them),
so that checking a scenario does not load it."""

from __future__ import annotations

from perfmodel.errors import InvalidInputError

__all__ = ["ParallelConfigError", "attention_groups", "group_world"]


class ParallelConfigError(InvalidInputError):
    """A parallel degree that does not divide what it splits (layers, heads, experts)."""


def group_world(tp: int, pp: int, sp: int, ep: int, attention_dp: int = 1) -> int:
    """GPUs of one model instance: ``pp`` stages of ``max(tp * sp * attention_dp, ep)`` GPUs (EP reuses them)."""
    inner = tp * sp * attention_dp
    if ep > inner and ep % inner:
        raise ParallelConfigError(
            f"ep={ep} must be a multiple of tp*sp{'*attention_dp' if attention_dp > 1 else ''}"
            f"={inner} when larger"
        )
    if ep < inner and inner % ep:
        raise ParallelConfigError(
            f"ep={ep} must divide tp*sp{'*attention_dp' if attention_dp > 1 else ''}={inner} when smaller"
        )
    return pp * max(inner, ep)


def attention_groups(tp: int, ep: int = 1, attention_dp: int = 1, sp: int = 1) -> int:
    """Data-parallel attention groups of one pipeline stage: ``attention_dp`` when given (> 1), else
    ``max(1, ep // (tp * sp))``.

    Each group of ``tp * sp`` GPUs runs attention and the dense layers for its own requests and holds only
    their KV; the MoE layers span all the groups.  Expert parallelism wider than the attention group is
    this layout: in vLLM the expert-parallel group of ``--enable-expert-parallel`` is ``tp x dp`` GPUs, one
    engine with its own scheduler and KV cache per data-parallel rank
    (``vllm/model_executor/layers/fused_moe/config.py``, ``FusedMoEParallelConfig.make``;
    ``docs/serving/expert_parallel_deployment.md``); in SGLang, data-parallel attention gives each of
    ``dp`` ranks an attention TP group of ``tp / dp`` GPUs (``python/sglang/srt/layers/dp_attention.py``).
    The one rule for the phases' time (:func:`perfmodel.parallel.parallel_phases`), the memory budget
    (:func:`perfmodel.parallel.parallel_memory`) and the simulator's replicas.
    """
    if attention_dp > 1:
        return int(attention_dp)
    return max(1, int(ep) // (int(tp) * int(sp)))
