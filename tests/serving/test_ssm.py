"""State-space stacks (Mamba, Mamba-2) in the simulator: a constant state per request, no KV blocks."""

import pytest

from perfmodel.analyze import analyze
from perfmodel.knobs import KnobError, Knobs, KvTier, TierKind
from perfmodel.serving import Deployment, Requests, simulate
from perfmodel.serving.deployment import replica_memory


@pytest.mark.parametrize("mode", ["peak", "calibrated"])
@pytest.mark.parametrize("model", ["mamba-2.8b", "mamba2-2.7b"])
def test_decode_iterations_cost_analyze_decode_step_at_the_same_batch(model, mode):
    dep = Deployment.make(model, "h100", mode=mode)
    n = 120
    res = simulate(dep, Requests.of([0.0] * n, [512] * n, [48] * n))
    df = res.timeline_frame()
    decode_only = df[(df["prefill_tokens"] == 0) & (df["decode_batch"] > 0)]
    batches = decode_only.groupby("decode_batch")["duration_s"].first()
    assert len(batches) >= 3  # the batch shrinks as requests finish: several sizes compared
    for b, dur in batches.items():
        step = analyze(model, "h100", context_len=512, output_tokens=48, batch=int(b), mode=mode).decode_step
        assert dur == pytest.approx(float(step.total_s), rel=1e-9)


@pytest.mark.parametrize("model", ["mamba-2.8b", "mamba2-2.7b"])
def test_concurrency_is_set_by_state_bytes_not_context(model):
    dep = Deployment.make(model, "h100", mode="peak", kv_policy="queue")
    mem = replica_memory(dep)
    one = analyze(model, "h100", context_len=1000, output_tokens=8, mode="peak")
    assert mem.state_bytes_per_gpu == one.to_dict()["kv_cache_bytes"]  # one user's state, the same bytes
    assert mem.blocks_for(10) == mem.blocks_for(1_000_000) == 1
    assert mem.capacity_blocks == int(mem.kv_room_bytes_per_gpu // mem.state_bytes_per_gpu)
    n = min(mem.capacity_blocks + 100, dep.max_num_seqs)
    peaks = []
    for prompt in (1_000, 64_000):
        assert (
            analyze(model, "h100", context_len=prompt, output_tokens=8, mode="peak").memory.max_concurrency
            == mem.capacity_blocks
        )
        res = simulate(dep, Requests.of([0.0] * n, [prompt] * n, [8] * n), record_timeline=False)
        assert res.summary()["completed"] == n
        peaks.append(res.peak_concurrency)
    assert peaks == [min(mem.capacity_blocks, n)] * 2


def test_knobs_that_move_kv_are_refused_for_a_state_space_stack():
    with pytest.raises(KnobError, match="state-space"):
        Deployment.make("mamba-2.8b", "h100", knobs=Knobs(kv_tiers=(KvTier(TierKind.HOST_DDR),)))
