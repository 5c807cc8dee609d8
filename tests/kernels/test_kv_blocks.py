import pytest
import torch

from perfmodel import kernels
from perfmodel.kernels.reference import gather_kv_blocks_ref, scatter_kv_blocks_ref


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float8_e4m3fn])
@pytest.mark.parametrize("shape", [(10, 2, 5, 64), (7, 3, 16, 128), (4, 1, 1, 64)])
def test_gather_then_scatter_round_trip(shape, dtype, seed, poisoned):
    pages = torch.randn(shape).to(dtype)
    n = shape[0] // 2 + 1
    ids = torch.randperm(shape[0])[:n]
    with poisoned():
        buf = kernels.gather_kv_blocks(pages, ids)
    assert torch.equal(buf.view(torch.uint8), gather_kv_blocks_ref(pages, ids).view(torch.uint8))
    src = torch.randn(buf.shape).to(dtype)
    expected = scatter_kv_blocks_ref(pages, ids, src)
    out = kernels.scatter_kv_blocks(pages, ids.int(), src)
    assert out is pages
    assert torch.equal(pages.view(torch.uint8), expected.view(torch.uint8))  # untouched blocks unchanged


def _bad_cases():
    pages = torch.randn(6, 2, 4, 64)
    ids = torch.tensor([1, 4])
    src = torch.randn(2, 2, 4, 64)
    yield kernels.gather_kv_blocks, (pages, torch.tensor([6])), "block_ids"
    yield kernels.gather_kv_blocks, (pages, torch.tensor([-1])), "block_ids"
    yield kernels.gather_kv_blocks, (pages, ids.float()), "block_ids"
    yield kernels.gather_kv_blocks, (pages.transpose(0, 1), ids), "pages"
    yield kernels.gather_kv_blocks, (torch.randn(6), ids), "pages"
    yield kernels.scatter_kv_blocks, (pages, torch.tensor([3, 3]), src), "block_ids"
    yield kernels.scatter_kv_blocks, (pages, ids, src.half()), "src"
    yield kernels.scatter_kv_blocks, (pages, ids, src[:1]), "src"
    yield kernels.scatter_kv_blocks, (pages, ids, src.transpose(2, 3).contiguous().transpose(2, 3)), "src"


@pytest.mark.parametrize("fn,args,name", list(_bad_cases()))
def test_bad_input_names_the_argument(fn, args, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        fn(*args)


def test_counts():
    from perfmodel.kernels.kv_blocks import kv_block_copy_op

    op = kv_block_copy_op(num_blocks=10, kv_heads=8, block_size=16, head_dim=128, dtype="bf16")
    assert kernels.gather_kv_blocks.bytes_moved(op) == 2 * 10 * 8 * 16 * 128 * 2
    assert kernels.scatter_kv_blocks.flops(op) == 0
