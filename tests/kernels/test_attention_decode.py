import importlib

import pytest
import torch

from perfmodel import kernels
from perfmodel.kernels import DecodeConfig
from perfmodel.kernels.reference import attention_decode_ref
from perfmodel import decode_schedule as ds

# (B, Hq, Hkv, Lmax, D): GQA ratios 1, 2, 4, 7; Lmax 1 and odd lengths
SHAPES = [(3, 7, 1, 37, 64), (2, 4, 2, 1, 64), (4, 2, 2, 50, 128), (3, 8, 2, 70, 64), (5, 4, 1, 33, 64)]
SCHEDULES = ["split_kv", "stream_k"]


def _inputs(b, hq, hkv, lmax, d, dtype):
    q = torch.randn(b, hq, d).to(dtype)
    k = torch.randn(b, hkv, lmax, d).to(dtype)
    v = torch.randn(b, hkv, lmax, d).to(dtype)
    lens = torch.randint(1, lmax + 1, (b,), dtype=torch.int32)
    lens[0] = 1
    lens[-1] = lmax  # ragged, including 1 and Lmax
    return q, k, v, lens


@pytest.mark.parametrize("num_splits", [None, 1, 3, 200])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fp16_matches_reference(shape, schedule, num_splits, seed, check, poisoned):
    q, k, v, lens = _inputs(*shape, torch.float16)
    with poisoned():  # also poisons the partial buffers: unwritten partials would show up
        o = kernels.attention_decode(q, k, v, lens, num_splits=num_splits, schedule=schedule)
    assert o.shape == q.shape and o.dtype == q.dtype
    check(o, attention_decode_ref(q, k, v, lens), torch.float16, seed, f"{shape} lens={lens.tolist()}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_other_dtypes(schedule, dtype, seed, check, poisoned):
    q, k, v, lens = _inputs(3, 8, 2, 45, 64, dtype)
    with poisoned():
        o = kernels.attention_decode(q, k, v, lens, schedule=schedule, num_splits=5)
    check(o, attention_decode_ref(q, k, v, lens), dtype, seed)


def test_schedules_agree_and_accept_enum(seed):
    q, k, v, lens = _inputs(2, 4, 2, 61, 64, torch.float32)
    a = kernels.attention_decode(q, k, v, lens, schedule=kernels.DecodeSchedule.SPLIT_KV)
    b = kernels.attention_decode(q, k, v, lens.long(), schedule=kernels.DecodeSchedule.STREAM_K, sm_scale=0.2)
    c = kernels.attention_decode(q, k, v, lens, schedule="stream_k", sm_scale=0.2)
    torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, attention_decode_ref(q, k, v, lens).float(), rtol=1e-4, atol=1e-4)


def test_strided_cache_view(seed, check):
    kv = torch.randn(2, 2, 3, 40, 64, dtype=torch.float16)  # [B, K/V, Hkv, L, D]
    q = torch.randn(2, 6, 64, dtype=torch.float16)
    lens = torch.tensor([40, 7], dtype=torch.int32)
    for schedule in SCHEDULES:
        o = kernels.attention_decode(q, kv[:, 0], kv[:, 1], lens, schedule=schedule)
        check(o, attention_decode_ref(q, kv[:, 0], kv[:, 1], lens), torch.float16, seed)


def _bad_cases():
    q, k, v, lens = _inputs(2, 4, 2, 9, 64, torch.float16)
    yield (q, k, v, torch.tensor([0, 3], dtype=torch.int32)), {}, "kv_lens"
    yield (q, k, v, torch.tensor([10, 3], dtype=torch.int32)), {}, "kv_lens"
    yield (q, k, v, torch.tensor([1, 2, 3], dtype=torch.int32)), {}, "kv_lens"
    yield (q, k, v, lens.float()), {}, "kv_lens"
    yield (q, k, v, lens), {"schedule": "round_robin"}, "schedule"
    yield (q, k, v, lens), {"num_splits": 0}, "num_splits"
    yield (q[:, :3], k, v, lens), {}, "q"  # 3 % 2 != 0
    yield (q[:1], k, v, lens), {}, "q"
    yield (q, k, v.float(), lens), {}, "v_cache"
    yield (q, k, v[:, :, :8], lens), {}, "v_cache"
    yield (q, k.transpose(2, 3), v.transpose(2, 3), lens), {}, "k_cache"
    yield (q, k[..., :32], v[..., :32], lens), {}, "q"
    yield (q.float(), k, v, lens), {}, "k_cache"
    yield (q, k, v, lens), {"sm_scale": 0}, "sm_scale"
    yield (q, k, v, lens), {"config": {"fused_merge": True}}, "config"


@pytest.mark.parametrize("args,kw,name", list(_bad_cases()))
def test_bad_input_names_the_argument(args, kw, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        kernels.attention_decode(*args, **kw)


def test_counts_read_cache_once():
    op = {
        "op": "attention",
        "phase": "decode",
        "batch": 3,
        "q_len": 1,
        "kv_len": 1000,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "causal": True,
        "dtype": "fp16",
    }
    assert kernels.attention_decode.flops(op) == 4 * 3 * 32 * 128 * 1000
    kv_bytes = 2 * 3 * 8 * 1000 * 128 * 2
    assert kernels.attention_decode.bytes_moved(op) == kv_bytes + 2 * 3 * 32 * 128 * 2


# Stream-K paths: a pair inside one program's run is written straight to the output; a split
# pair is merged either inside the stream-K kernel (fused, by the last program to finish its
# tiles) or by the reduction kernel. Program counts from 1 (every pair direct) to more programs
# than tiles (empty programs, every pair split).
STREAM_K_CASES = [
    # (B, Hq, Hkv, Lmax, D, lens or None for ragged with 1 and Lmax, num_splits)
    (3, 7, 1, 37, 64, None, 2),  # GQA 7
    (4, 4, 2, 50, 64, None, 5),  # GQA 2
    (2, 8, 2, 70, 128, None, 13),  # GQA 4
    (5, 3, 3, 33, 64, None, 200),  # GQA 1, more programs than tiles
    (2, 4, 1, 64, 64, [64, 64], 8),  # every pair split evenly
    (3, 8, 2, 45, 64, [45, 45, 45], 7),  # uniform lengths, runs straddling pairs
    # programs a multiple of the pairs: the reduction's guessed slots are used (uniform) or
    # not (ragged); 3 per pair is not a power of two; 4 per pair with one-tile pairs leaves
    # programs without tiles
    (2, 4, 2, 64, 64, [64, 64], 12),
    (3, 8, 2, 45, 64, None, 12),
    (2, 2, 1, 16, 64, [16, 16], 8),
    (3, 4, 2, 40, 64, [1, 40, 17], 1),  # one program: every pair written directly
    (1, 2, 1, 1, 64, [1], None),  # a single one-token pair
]


# the merge inside the stream-K kernel or the reduction kernel (which loads the guessed slots first
# where the programs divide evenly over the pairs); without the fused merge a program walks its
# tiles in one loop where its run crosses a pair boundary, piece by piece otherwise
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("case", STREAM_K_CASES)
def test_stream_k_merge_paths(case, fused, seed, check, poisoned):
    config = DecodeConfig(fused_merge=fused)
    b, hq, hkv, lmax, d, lens, ns = case
    q, k, v, kv_lens = _inputs(b, hq, hkv, lmax, d, torch.float16)
    if lens is not None:
        kv_lens = torch.tensor(lens, dtype=torch.int32)
    with poisoned():  # output, partials and the counter-free buffers start as NaN
        o = kernels.attention_decode(q, k, v, kv_lens, num_splits=ns, schedule="stream_k", config=config)
    check(o, attention_decode_ref(q, k, v, kv_lens), torch.float16, seed, f"{case} lens={kv_lens.tolist()}")


def _check_stream_k_case(case, seed, check, poisoned, config):
    # one STREAM_K_CASES entry through the stream-K schedule against the float64 reference
    b, hq, hkv, lmax, d, lens, ns = case
    q, k, v, kv_lens = _inputs(b, hq, hkv, lmax, d, torch.float16)
    if lens is not None:
        kv_lens = torch.tensor(lens, dtype=torch.int32)
    with poisoned():
        o = kernels.attention_decode(q, k, v, kv_lens, num_splits=ns, schedule="stream_k", config=config)
    check(o, attention_decode_ref(q, k, v, kv_lens), torch.float16, seed, f"{case} lens={kv_lens.tolist()}")


@pytest.mark.parametrize("lens", [[45, 45, 45], [45, 1, 30]])
def test_stream_k_fused_counters_left_at_zero(lens, seed, check, monkeypatch):
    # the fused merge reuses one counter workspace per stream and relies on every call leaving
    # it at zero: repeated calls stay correct and the workspace is all zero after each
    import sys

    mod = sys.modules["perfmodel.kernels.attention_decode"]
    monkeypatch.setattr(mod, "_COUNTERS", {})
    q, k, v, _ = _inputs(3, 8, 2, 45, 64, torch.float32)
    kv_lens = torch.tensor(lens, dtype=torch.int32)
    ref = attention_decode_ref(q, k, v, kv_lens)
    for ns in (7, 5, 7):
        o = kernels.attention_decode(
            q, k, v, kv_lens, num_splits=ns, schedule="stream_k", config=DecodeConfig(fused_merge=True)
        )
        check(o, ref, torch.float32, seed, f"lens={lens} programs={ns}")
        (buf,) = mod._COUNTERS.values()
        assert int(buf.abs().sum()) == 0


@pytest.mark.parametrize("fused", [True, False])
def test_stream_k_64_bit_offsets(fused, seed, check, poisoned):
    # the 64-bit program-offset path (taken on the GPU only for huge caches), forced here
    config = DecodeConfig(fused_merge=fused, wide_offsets=True)
    q, k, v, kv_lens = _inputs(3, 8, 2, 45, 64, torch.float16)
    with poisoned():
        o = kernels.attention_decode(q, k, v, kv_lens, num_splits=7, schedule="stream_k", config=config)
    check(o, attention_decode_ref(q, k, v, kv_lens), torch.float16, seed, f"lens={kv_lens.tolist()}")


@pytest.mark.parametrize(
    "programs,sms,setting,expect",
    [
        (8, 8, None, True),  # one wave: fused
        (9, 8, None, False),  # more programs than SMs: the reduction kernel
        (128, 132, None, True),
        (264, 132, None, False),
        (264, 132, True, True),
        (8, 8, False, False),
    ],
)
def test_fused_merge_rule(programs, sms, setting, expect):
    assert ds.fused_merge(programs, sms, DecodeConfig(fused_merge=setting)) is expect


def _spy_launches(monkeypatch, name):
    """Record ``(grid, keyword arguments)`` of every launch of ``perfmodel.kernels._decode_kernels.<name>``
    (the launches still run)."""
    import sys

    dk = sys.modules["perfmodel.kernels.attention_decode"]._dk
    real = getattr(dk, name)
    seen = []

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((grid, kwargs))
                return real[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(dk, name, Spy())
    return seen


def test_stream_k_default_merges_in_kernel_at_one_wave(seed, check, monkeypatch):
    # by default (one wave on the interpreter's 8 "SMs") no reduction kernel is launched, and
    # beyond one wave it is
    calls = _spy_launches(monkeypatch, "_reduce_kernel")
    q, k, v, lens = _inputs(2, 8, 2, 45, 64, torch.float32)
    ref = attention_decode_ref(q, k, v, lens)
    for ns, launches in ((8, 0), (9, 1)):
        o = kernels.attention_decode(q, k, v, lens, num_splits=ns, schedule="stream_k")
        check(o, ref, torch.float32, seed, f"programs={ns}")
        assert len(calls) == launches
        calls.clear()


def test_stream_k_fused_and_reduced_agree(seed):
    q, k, v, lens = _inputs(3, 8, 2, 45, 64, torch.float32)
    out = {}
    for fused in (True, False):
        out[fused] = kernels.attention_decode(
            q, k, v, lens, num_splits=7, schedule="stream_k", config=DecodeConfig(fused_merge=fused)
        )
    torch.testing.assert_close(out[True], out[False], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "num_splits,sms,pairs,max_tiles,expect",
    [
        (None, 132, 8, 16, 128),  # small cache: capped at the tiles
        (None, 132, 8, 64, 128),  # 1 per SM rounded down to a multiple of 8 pairs
        (None, 132, 16, 64, 128),
        (None, 132, 8, 1000, 264),  # large cache: 2 per SM, a multiple of the 8 pairs
        (None, 132, 7, 1000, 259),  # 2 per SM rounded down to a multiple of 7
        (None, 132, 200, 1000, 200),  # 200 pairs, 264 programs: rounded down to one per pair
        (None, 132, 300, 1000, 264),  # more pairs than programs: no rounding
        (None, 132, 1, 1, 1),
        (7, 132, 8, 1, 7),
    ],
)
def test_stream_k_program_count(num_splits, sms, pairs, max_tiles, expect):
    assert ds.stream_k_programs(pairs, max_tiles, sms, num_splits=num_splits) == expect


@pytest.mark.parametrize(
    "pairs,max_tiles,expect",
    # small caches: 2 per SM; more pairs than SMs: not small, 1 per SM
    [
        (8, 64, 264),
        (16, 64, 256),
        (8, 1000, 128),
        (132, 16, 264),
        (133, 15, 132),
        (200, 10, 132),
        (300, 7, 132),
    ],
)
def test_stream_k_program_count_small_cache_rule(pairs, max_tiles, expect):
    # the small-cache count and the large-cache count are separate settings (swapped here)
    config = DecodeConfig(small_programs_per_sm=2, programs_per_sm=1)
    assert ds.stream_k_programs(pairs, max_tiles, 132, config) == expect


def test_model_prices_the_kernels_stream_k_program_count():
    # the cost model prices the launcher's default program count (one rule, called with arrays there
    # and ints here)
    import numpy as np

    from perfmodel.costs.attention import SplitRule, triton_decode_pieces

    for sms in (132, 7):
        for pairs in (1, 2, 5, 8, 16, 64, 131, 132, 133, 200, 264, 600, 4096):
            for max_tiles in (1, 2, 3, 4, 16, 17, 100, 1000, 4096):
                kernel = ds.stream_k_programs(pairs, max_tiles, sms)
                model, _ = triton_decode_pieces(
                    np.float64(pairs), max_tiles * ds.BLOCK_N, 2 * sms, SplitRule.STREAM_K, sms, 128
                )
                assert model == kernel, (sms, pairs, max_tiles)


def test_stream_k_aligned_runs_do_not_cross_pairs():
    # uniform lengths: with a program count that is a multiple of the pairs, every run lies
    # inside one pair (the partition of split-KV); checked on the plan arithmetic itself
    for pairs, tiles_per_pair in ((8, 16), (8, 64), (16, 64), (64, 16), (7, 300), (24, 1000)):
        p = ds.stream_k_programs(pairs, tiles_per_pair, 132)
        total = pairs * tiles_per_pair
        for i in range(p):
            lo, hi = i * total // p, (i + 1) * total // p
            assert hi > lo and lo // tiles_per_pair == (hi - 1) // tiles_per_pair, (pairs, i)


@pytest.mark.parametrize("lens", [[64, 64, 64], [1, 64, 33]])
def test_stream_k_default_programs_small_sms(lens, seed, check, poisoned, monkeypatch):
    # default program count on a pretend 7-SM device (12 aligned programs: 2 per pair), uniform and
    # ragged lengths
    import sys

    mod = sys.modules["perfmodel.kernels.attention_decode"]
    monkeypatch.setattr(mod, "num_sms", lambda device: 7)
    q, k, v, _ = _inputs(3, 8, 2, 64, 64, torch.float16)
    kv_lens = torch.tensor(lens, dtype=torch.int32)
    with poisoned():  # output, partials and the reduction's plan start poisoned
        o = kernels.attention_decode(q, k, v, kv_lens, schedule="stream_k")
    check(o, attention_decode_ref(q, k, v, kv_lens), torch.float16, seed, f"lens={lens}")


@pytest.mark.parametrize(
    "schedule,programs,pairs,expect",
    [
        ("stream_k", 128, 8, 16),
        ("stream_k", 132, 4, 33),
        ("stream_k", 132, 8, 0),
        ("stream_k", 128, 128, 0),
        ("stream_k", 128, 1, 0),
        ("split_kv", 128, 8, 0),
    ],
)
def test_reduce_guess(schedule, programs, pairs, expect):
    assert ds.reduce_guess(ds.DecodeSchedule(schedule), programs, pairs) == expect


def test_stream_k_batch_limit(monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules["perfmodel.kernels.attention_decode"], "MAX_STREAM_K_BATCH", 2)
    q, k, v, lens = _inputs(3, 4, 2, 8, 64, torch.float32)
    with pytest.raises(kernels.KernelInputError, match=r"^q: stream_k supports a batch of at most 2, got 3"):
        kernels.attention_decode(q, k, v, lens, schedule="stream_k")


def test_programmatic_dependent_launch_only_on_a_hopper_gpu(monkeypatch):
    # the interpreter and CPU tensors never get the launch attribute or the griddepcontrol code
    ad = importlib.import_module("perfmodel.kernels.attention_decode")
    assert not ad.pdl_supported(torch.device("cpu"))
    monkeypatch.setattr(ad, "interpreting", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert not ad.pdl_supported(torch.device("cuda", 0))
    monkeypatch.setattr(ad, "interpreting", lambda: False)
    assert ad.pdl_supported(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert not ad.pdl_supported(torch.device("cuda", 0))


def test_model_prices_the_kernels_fused_merge_rule():
    # the cost model calls the launcher's merge rule with arrays: the same answer as one by one
    import numpy as np

    for sms in (7, 132):
        programs = np.array([1, 6, 7, 8, 128, 131, 132, 133, 264], dtype=np.float64)
        model = ds.fused_merge(programs, sms)
        for i, n in enumerate(programs.astype(int)):
            assert ds.fused_merge(int(n), sms) == bool(model[i]), (n, sms)


def test_model_counts_the_fused_merge_loads_as_the_kernel_takes_them():
    # the cost model counts the loads of the fused merge in blocks of the BLOCK_S the launcher passes
    from perfmodel.kernels._common import next_pow2

    for group in range(1, 33):
        block_s = ds.merge_block_s(group)  # as launch_decode passes BLOCK_S
        assert block_s == max(1, ds.FUSED_MERGE_ROWS // next_pow2(group))
        for pieces in (1, 2, 16, 17, 33, 132):
            assert float(ds.merge_loads(pieces, group)) == -(-pieces // block_s), (group, pieces)


# phantom tiles before each pair (unequal tile counts only, one-wave kernel): run boundaries that
# fall in them move to the pair boundary; 1 phantom tile, and 5 (more than some runs, so some
# programs hold no tile)
@pytest.mark.parametrize("phantom", [1, 5])
@pytest.mark.parametrize("case", [c for c in STREAM_K_CASES if c[6] in (2, 5, 7, 12, 13, 200)])
def test_stream_k_phantom_tiles(case, phantom, seed, check, poisoned):
    import sys

    mod = sys.modules["perfmodel.kernels.attention_decode"]
    _check_stream_k_case(case, seed, check, poisoned, DecodeConfig(phantom_tiles=phantom, fused_merge=True))
    # the counters are left at zero
    assert all(int(buf.abs().sum()) == 0 for buf in mod._COUNTERS.values())


@pytest.mark.parametrize("phantom", [0, 2])
@pytest.mark.parametrize("lens", [[64, 64, 64], [1, 64, 33], [64, 64, 60]])
def test_stream_k_phantom_default_programs(phantom, lens, seed, check, poisoned, monkeypatch):
    # a pretend 7-SM device, 6 pairs of at most 4 tiles: one wave, fused merge, 6 aligned programs;
    # with phantom tiles on, the grid holds all 7 programs and ragged tile counts use them all
    # ([64, 64, 60] has equal tile counts: the aligned partition)
    import sys

    mod = sys.modules["perfmodel.kernels.attention_decode"]
    monkeypatch.setattr(mod, "num_sms", lambda device: 7)
    launches = _spy_launches(monkeypatch, "_stream_k_kernel")
    q, k, v, _ = _inputs(3, 8, 2, 64, 64, torch.float16)
    kv_lens = torch.tensor(lens, dtype=torch.int32)
    with poisoned():
        o = kernels.attention_decode(
            q, k, v, kv_lens, schedule="stream_k", config=DecodeConfig(phantom_tiles=phantom)
        )
    check(o, attention_decode_ref(q, k, v, kv_lens), torch.float16, seed, f"phantom={phantom} lens={lens}")
    assert [grid for grid, _ in launches] == [(7,) if phantom else (6,)]
    assert all(int(buf.abs().sum()) == 0 for buf in mod._COUNTERS.values())


@pytest.mark.parametrize("fused", [True, False])
def test_stream_k_phantom_only_with_the_fused_merge(fused, seed, check, poisoned, monkeypatch):
    # by default the phantom tiles go to the one-wave (fused) kernel only; the multi-wave kernel
    # gets PHANTOM=0, its code as before phantom tiles
    launches = _spy_launches(monkeypatch, "_stream_k_kernel")
    q, k, v, _ = _inputs(3, 8, 2, 64, 64, torch.float16)
    kv_lens = torch.tensor([1, 64, 33], dtype=torch.int32)
    with poisoned():
        o = kernels.attention_decode(
            q, k, v, kv_lens, schedule="stream_k", config=DecodeConfig(fused_merge=fused)
        )
    check(o, attention_decode_ref(q, k, v, kv_lens), torch.float16, seed, f"fused={fused}")
    assert [kw["PHANTOM"] for _, kw in launches] == [ds.DEFAULT_CONFIG.phantom_tiles if fused else 0]
    assert ds.DEFAULT_CONFIG.phantom_tiles > 0
