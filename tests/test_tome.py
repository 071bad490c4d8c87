"""Token merging: size-weighted bipartite soft matching (ToMe, arXiv 2210.09461)."""

import pytest
import torch

from compressors import tome
from compressors.base import CompressionError
from compressors.tome import merge, merge_like, merge_tracked


def _tokens(n, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_keeping_at_least_every_token_returns_the_input_unchanged():
    x = _tokens(7)
    merged, sizes, assignment = merge(x, 7)
    assert merged is x and torch.equal(sizes, torch.ones(7)) and torch.equal(assignment, torch.arange(7))
    given = torch.arange(1.0, 8.0)
    _, sizes, _ = merge(x, 100, given)
    assert torch.equal(sizes, given)


def test_merging_reaches_exactly_keep_tokens_with_a_consistent_assignment():
    for n in [2, 3, 16, 33, 100]:
        for keep in {1, 2, n // 3 or 1, n // 2 or 1, n - 1}:
            m = merge_tracked(_tokens(n, seed=n), keep)
            assert m.embeds.shape == (keep, 8) and m.sizes.shape == (keep,)
            assert sorted(set(m.assignment.tolist())) == list(range(keep))
            assert torch.equal(m.assignment[m.destinations], torch.arange(keep))
            assert torch.equal(torch.bincount(m.assignment, minlength=keep).float(), m.sizes)


def test_merging_keeps_the_size_weighted_sum():
    x = _tokens(40)
    sizes = torch.rand(40, generator=torch.Generator().manual_seed(1)) * 3 + 0.5
    for keep in [1, 5, 19, 39]:
        merged, out_sizes, _ = merge(x, keep, sizes)
        torch.testing.assert_close((merged * out_sizes[:, None]).sum(0), (x * sizes[:, None]).sum(0))
        torch.testing.assert_close(out_sizes.sum(), sizes.sum())


def test_identical_tokens_merge_first():
    x = _tokens(12, seed=4)
    x[7] = x[2]  # one in set A (even place), one in set B (odd place)
    _, sizes, assignment = merge(x, 11)
    assert assignment[2] == assignment[7]
    assert len(set(assignment.tolist())) == 11 and sizes.max() == 2
    x[9] = x[4]
    _, _, assignment = merge(x, 10)
    assert assignment[2] == assignment[7] and assignment[4] == assignment[9]


def test_outputs_keep_the_input_order_by_destination():
    m = merge_tracked(_tokens(64, seed=2), 9)
    assert torch.all(m.destinations[1:] > m.destinations[:-1])
    x = _tokens(64, seed=2)
    torch.testing.assert_close(m.embeds, merge_like(x, m.assignment))


def test_merge_like_repeats_the_merge_on_other_features():
    x = _tokens(30, seed=5)
    sizes = torch.rand(30, generator=torch.Generator().manual_seed(6)) + 0.1
    merged, _, assignment = merge(x, 8, sizes)
    torch.testing.assert_close(merge_like(x, assignment, sizes), merged, rtol=1e-5, atol=1e-5)
    other = torch.randn(30, 3)
    repeated = merge_like(other, assignment, sizes)
    members = assignment == assignment[0]
    want = (other[members] * sizes[members, None]).sum(0) / sizes[members].sum()
    torch.testing.assert_close(repeated[assignment[0]], want)


def test_each_step_merges_at_most_half_the_tokens(monkeypatch):
    seen = []
    step = tome._merge_step

    def spy(x, size, dest, r):
        seen.append((x.shape[0], r))
        return step(x, size, dest, r)

    monkeypatch.setattr(tome, "_merge_step", spy)
    merge(_tokens(100), 3)
    assert seen == [(100, 50), (50, 25), (25, 12), (13, 6), (7, 3), (4, 1)]


def test_merging_keeps_the_dtype():
    x = _tokens(20).to(torch.bfloat16)
    merged, _, _ = merge(x, 5)
    assert merged.dtype == torch.bfloat16


def test_impossible_requests_raise_a_compression_error():
    with pytest.raises(CompressionError, match="at least 1"):
        merge(_tokens(4), 0)
    with pytest.raises(CompressionError, match=r"\[N>0, D\]"):
        merge(torch.randn(3), 1)
    with pytest.raises(CompressionError, match="sizes"):
        merge(_tokens(4), 2, torch.ones(3))
