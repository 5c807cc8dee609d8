"""kernels.moe_align and kernels.moe_combine against plain PyTorch."""

import pytest
import torch

from perfmodel.kernels import KernelInputError, moe_align, moe_combine


@pytest.mark.parametrize(
    "t,k,hidden,dtype", [(5, 2, 48, torch.float32), (3, 8, 1100, torch.bfloat16), (1, 1, 7, torch.float16)]
)
def test_sums_each_tokens_rows_with_their_weights(t, k, hidden, dtype):
    torch.manual_seed(0)
    y = torch.randn(t * k, hidden, dtype=dtype)
    pos = torch.randperm(t * k).view(t, k)
    w = torch.rand(t, k, dtype=dtype)
    want = (y.float()[pos] * w.float().unsqueeze(-1)).sum(1)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(moe_combine(y, pos, w).float(), want, atol=tol, rtol=tol)


def test_refuses_mismatched_shapes_with_one_line():
    y = torch.randn(6, 4)
    with pytest.raises(KernelInputError, match="^y: 6 rows"):
        moe_combine(y, torch.zeros(2, 2, dtype=torch.int64), torch.ones(2, 2))
    with pytest.raises(KernelInputError, match="^pos"):
        moe_combine(y, torch.zeros(3, 2, dtype=torch.int64), torch.ones(2, 3))
    with pytest.raises(KernelInputError, match="^pos"):
        moe_combine(y, torch.zeros(3, 2, dtype=torch.int32), torch.ones(3, 2))


@pytest.mark.parametrize("t,k,e", [(1, 1, 1), (7, 3, 5), (300, 8, 128), (1500, 2, 8)])
def test_align_groups_pairs_by_expert_and_inverts(t, k, e):
    torch.manual_seed(1)
    idx = torch.randint(0, e, (t, k))
    offs, token, pos = moe_align(idx, e)
    flat = idx.view(-1)
    assert offs.dtype == torch.int32 and offs.tolist() == torch.bincount(flat, minlength=e).cumsum(0).tolist()
    assert sorted(pos.view(-1).tolist()) == list(range(t * k))  # a permutation of the slots
    start = torch.cat([offs.new_zeros(1), offs[:-1]]).long()
    slot = pos.view(-1)
    assert bool(((slot >= start[flat]) & (slot < offs.long()[flat])).all())  # each pair in its expert's rows
    assert torch.equal(token[slot], torch.arange(t * k) // k)  # the token of the pair in each slot


def test_align_refuses_bad_input_with_one_line():
    with pytest.raises(KernelInputError, match="^idx"):
        moe_align(torch.zeros(2, 2, dtype=torch.int32), 4)
    with pytest.raises(KernelInputError, match="^num_experts"):
        moe_align(torch.zeros(2, 2, dtype=torch.int64), 0)
