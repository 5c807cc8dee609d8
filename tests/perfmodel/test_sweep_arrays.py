"""The sweep at array speed: multi-GPU layouts priced over arrays equal ``analyze`` point by point; the
blocks a chunk is cut into, the chunk size and the grid shortcut of ``flash_splits`` change no number."""

import numpy as np
import pytest

from perfmodel.analyze import analyze
from perfmodel.costs.attention import flash_splits
from perfmodel.calibration import resolve_profile
from perfmodel.knobs import Knobs
from perfmodel.layers import Precision
from perfmodel.metrics import TIME_METRICS
from perfmodel.models import load_model
from perfmodel.parallel import RingStepModel, parallel_phases
from perfmodel.sweep import _blocks, iter_sweep, sweep
from perfmodel.hw import load_gpu

GRID = dict(context_len=[3000, 40_000], batch=[1, 5], output_tokens=[0, 300])


@pytest.mark.parametrize(
    "model, gpu, layout",
    [
        ("llama-3-8b", "h100", dict(pp=2)),
        ("llama-3-8b", "h100", dict(sp=2, knobs=Knobs(kv_dtype="fp8", kv_keep_ratio=0.5))),
        ("llama-3-8b", "h100", dict(sp=4, sp_kind="ulysses", tp=[1, 2])),
        ("llama-3-8b", "h100", dict(sp=4, sp_kind="hybrid", pp=2, tp=[2])),
        ("llama-3-8b", "h100", dict(topology="dgx-h100", tp=[1, 8])),
        ("mixtral-8x7b", "h100", dict(ep=2, tp=[2])),
        ("mixtral-8x7b", "h100", dict(ep=8, pp=2, tp=[1])),
        ("deepseek-v2", "h200-sxm-141gb", dict(ep=8, tp=[8])),
    ],
    ids=["pp", "sp-ring-knobs", "ulysses", "hybrid-pp", "topology", "ep", "ep-pp", "mla-ep"],
)
def test_layout_grid_equals_analyze(model, gpu, layout):
    df = sweep(model, gpu, **GRID, **layout)
    assert len(df) == 8 * len(np.atleast_1d(layout.get("tp", 1)))
    kw = {k: v for k, v in layout.items() if k != "tp"}
    for row in df.itertuples():
        a = analyze(
            model,
            gpu,
            int(row.context_len),
            int(row.output_tokens),
            batch=int(row.batch),
            tp=int(row.tp),
            **kw,
        ).to_dict()
        assert row.world == a["parallel"]["world"]
        assert row.max_concurrency == a["max_concurrency"]
        assert row.kv_cache_bytes == a["kv_cache_bytes"]
        assert row.fits == (a["max_concurrency"] >= row.batch)
        for key in TIME_METRICS:
            if row.fits:
                assert getattr(row, key) == pytest.approx(a[key], rel=1e-9), key
            else:
                assert np.isnan(getattr(row, key)), key
        assert row.prefill_bound == a["bottleneck"]["prefill"]
        assert row.decode_bound == a["bottleneck"]["decode"]


@pytest.mark.parametrize("sp, ring", [(1, 1.0), (2, 1.0), (4, RingStepModel(0.8, 2e-5, None, 1e-5))])
def test_parallel_phases_over_arrays_equal_each_point(sp, ring):
    m, g = load_model("llama-3-8b"), load_gpu("h100")
    prof = resolve_profile(g, "calibrated")
    ctx = np.array([1000.0, 20_000.0, 100_000.0]).reshape(-1, 1, 1)
    b = np.array([1.0, 3.0, 8.0]).reshape(1, -1, 1)
    out = np.array([0.0, 250.0]).reshape(1, 1, -1)
    ph = parallel_phases(m, g, prof, ctx, out, b, Precision(), 1, 2, sp, "ring", 1, 8192, None, ring)
    for i, j, k in np.ndindex(3, 3, 2):
        one = parallel_phases(
            m,
            g,
            prof,
            int(ctx[i, 0, 0]),
            int(out[0, 0, k]),
            int(b[0, j, 0]),
            Precision(),
            1,
            2,
            sp,
            "ring",
            1,
            8192,
            None,
            ring,
        )
        for name in ("prefill", "decode_step", "decode"):
            arr, pt = getattr(ph, name), getattr(one, name)
            assert np.broadcast_to(arr.total_s, (3, 3, 2))[i, j, k] == pytest.approx(pt.total_s, rel=1e-12), (
                name
            )


def test_blocks_cover_a_range_in_order():
    shape = (5, 3, 4)
    for i0, i1 in [(0, 60), (1, 59), (7, 8), (11, 37), (0, 12), (12, 24), (13, 14)]:
        flat = []
        for cs, bs, os in _blocks(i0, i1, shape):
            idx = np.arange(60).reshape(shape)[cs, bs, os]
            flat.extend(idx.ravel().tolist())
        assert flat == list(range(i0, i1))
        assert len(list(_blocks(i0, i1, shape))) <= 5


def test_chunks_of_any_size_give_the_same_layout_frame():
    kw = dict(context_len=[1000, 5000, 9000], batch=[1, 2, 4], output_tokens=[10, 100], pp=2, sp=2)
    whole = sweep("llama-3-8b", "h100", **kw)
    import pandas as pd

    for chunk in (1, 5, 7, 18):
        parts = pd.concat(list(iter_sweep("llama-3-8b", "h100", chunk_points=chunk, **kw)), ignore_index=True)
        pd.testing.assert_frame_equal(parts.astype(object), whole.astype(object))


def test_flash_splits_on_a_grid_equal_the_sorted_pairs():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 500, size=(1, 40, 1)).astype(float)
    n = rng.integers(1, 5000, size=(25, 1, 6)).astype(float)
    grid = flash_splits(u, n, 216)
    uu, nn = np.broadcast_arrays(u, n)
    flat = flash_splits(uu.ravel(), nn.ravel(), 216)  # one axis: the sorted path
    assert grid.shape == (25, 40, 6)
    np.testing.assert_array_equal(grid.ravel(), flat)
    assert flash_splits(5.0, 100.0, 216) == flash_splits(np.array([5.0]), np.array([100.0]), 216)[0]
