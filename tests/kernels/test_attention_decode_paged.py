import pytest
import torch

from perfmodel import kernels
from perfmodel.kernels.reference import attention_decode_paged_ref, attention_decode_ref, paged_to_contiguous


def _paged(b, hq, hkv, d, page, lens, dtype, spare=3):
    max_blocks = -(-max(lens) // page) + 1  # one unused column
    nb = b * max_blocks + spare
    kp = torch.randn(nb, hkv, page, d).to(dtype)
    vp = torch.randn(nb, hkv, page, d).to(dtype)
    q = torch.randn(b, hq, d).to(dtype)
    table = torch.randperm(nb)[: b * max_blocks].reshape(b, max_blocks).to(torch.int32)
    return q, kp, vp, table, torch.tensor(lens, dtype=torch.int32)


@pytest.mark.parametrize("schedule", ["split_kv", "stream_k"])
@pytest.mark.parametrize(
    "page,hq,hkv,lens",
    [(16, 8, 2, [1, 40, 23]), (5, 7, 1, [33, 1]), (1, 4, 4, [6, 2, 9]), (64, 4, 1, [70, 64])],
)
def test_matches_reference(page, hq, hkv, lens, schedule, seed, check, poisoned):
    q, kp, vp, table, kv_lens = _paged(len(lens), hq, hkv, 64, page, lens, torch.float16)
    with poisoned():
        o = kernels.attention_decode_paged(q, kp, vp, table, kv_lens, schedule=schedule)
    check(o, attention_decode_paged_ref(q, kp, vp, table, kv_lens), torch.float16, seed, f"page {page}")


def test_paged_reference_is_the_contiguous_one(seed):
    q, kp, vp, table, kv_lens = _paged(2, 4, 2, 64, 8, [17, 30], torch.float64)
    k = paged_to_contiguous(kp, table, 30)
    v = paged_to_contiguous(vp, table, 30)
    torch.testing.assert_close(
        attention_decode_paged_ref(q, kp, vp, table, kv_lens), attention_decode_ref(q, k, v, kv_lens)
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_other_dtypes(dtype, seed, check):
    q, kp, vp, table, kv_lens = _paged(2, 4, 2, 128, 16, [50, 3], dtype)
    o = kernels.attention_decode_paged(q, kp, vp, table, kv_lens, num_splits=2)
    check(o, attention_decode_paged_ref(q, kp, vp, table, kv_lens), dtype, seed)


def _bad_cases():
    q, kp, vp, table, lens = _paged(2, 4, 2, 64, 8, [17, 30], torch.float16)
    bad = table.clone()
    bad[1, 0] = kp.shape[0]
    yield (q, kp, vp, bad, lens), "block_table"
    bad = table.clone()
    bad[0, 1] = -1
    yield (q, kp, vp, bad, lens), "block_table"
    yield (q, kp, vp, table.float(), lens), "block_table"
    yield (q, kp, vp, table[:1], lens), "q"
    yield (q, kp, vp, table, torch.tensor([17, table.shape[1] * 8 + 1], dtype=torch.int32)), "kv_lens"
    yield (q, kp, vp[:, :1], table, lens), "v_pages"
    yield (q, kp, vp, table.t().contiguous().t(), lens), "block_table"


@pytest.mark.parametrize("args,name", list(_bad_cases()))
def test_bad_input_names_the_argument(args, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        kernels.attention_decode_paged(*args)


def test_unused_table_entries_are_not_read(seed, check):
    q, kp, vp, table, lens = _paged(2, 4, 2, 64, 8, [9, 30], torch.float16)
    table[0, 2:] = 10**6  # beyond sequence 0's two pages: never read, never checked
    o = kernels.attention_decode_paged(q, kp, vp, table, lens)
    t2 = table.clone()
    t2[0, 2:] = 0
    check(o, attention_decode_paged_ref(q, kp, vp, t2, lens), torch.float16, seed)


@pytest.mark.parametrize("lens", [[1, 41, 23], [41, 41, 41]])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("num_splits", [None, 1, 9])
def test_stream_k_merge_paths(fused, num_splits, lens, seed, check, poisoned):
    q, kp, vp, table, kv_lens = _paged(3, 8, 2, 64, 5, lens, torch.float16)
    with poisoned():
        o = kernels.attention_decode_paged(
            q, kp, vp, table, kv_lens, num_splits, "stream_k", config=kernels.DecodeConfig(fused_merge=fused)
        )
    check(o, attention_decode_paged_ref(q, kp, vp, table, kv_lens), torch.float16, seed, f"{num_splits}")
