"""The reported ``max_concurrency`` fits by the same rule that checks a batch."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfmodel import DoesNotFitError, InvalidInputError, analyze, list_models


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(list_models()),
    gpu=st.sampled_from(["a100-sxm-80gb", "h100-sxm"]),
    context=st.integers(1, 200_000),
    tp=st.sampled_from([1, 2, 4, 8]),
    chunk=st.sampled_from([None, 512, 8192]),
)
def test_max_concurrency_fits_and_one_more_does_not(model, gpu, context, tp, chunk):
    kw = dict(model=model, gpu=gpu, context_len=context, output_tokens=16, tp=tp, chunk_tokens=chunk)
    try:
        n = int(analyze(batch=1, **kw).memory.max_concurrency)
    except (DoesNotFitError, InvalidInputError):
        return  # not even one user fits, or the TP degree does not divide the heads
    assert n >= 1
    assert int(analyze(batch=n, **kw).memory.max_concurrency) == n  # the same maximum whatever the batch
    with pytest.raises(DoesNotFitError):
        analyze(batch=n + 1, **kw)


def test_llama_3_70b_tp4_reported_maximum_is_accepted():
    a = analyze("llama-3-70b", "a100-sxm-80gb", context_len=4000, tp=4)
    n = int(a.memory.max_concurrency)
    analyze("llama-3-70b", "a100-sxm-80gb", context_len=4000, tp=4, batch=n)
    with pytest.raises(DoesNotFitError):
        analyze("llama-3-70b", "a100-sxm-80gb", context_len=4000, tp=4, batch=n + 1)
