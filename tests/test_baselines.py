"""The baselines: uniform frame sampling at stock resolution, and average pooling of every group."""

import torch

from compressors.base import grid_positions, group_segment, timestamp_text
from compressors.baselines import Pool, Uniform, pool_grid, pooled_grid, spread
from tests.fakes import FakeHooks, make_video


def test_spread_takes_the_centre_of_equal_bins():
    assert spread(10, 3) == [1, 5, 8]
    assert spread(8, 8) == list(range(8)) and spread(3, 10) == [0, 1, 2]


def test_uniform_keeps_floor_budget_over_p_groups_spread_evenly_in_stock_layout():
    video, segments = make_video(80, grid=(4, 5))  # 40 groups of 20
    result = Uniform().compress(video, segments, "q", budget=199, hooks=FakeHooks(video))
    groups = spread(40, 9)
    assert result.llm_tokens == 180
    assert result.kept_frames == [f for g in groups for f in (2 * g, 2 * g + 1)]
    for got, g in zip(result.segments, groups, strict=True):
        want = group_segment(video, g)
        assert got.text == want.text and torch.equal(got.embeds, want.embeds)
        assert torch.equal(got.positions, want.positions)


def test_uniform_spreads_over_the_groups_of_the_frames_as_sampled():
    video, segments = make_video(19, grid=(2, 2))  # 10 groups, the last holding frame 18 and its duplicate
    result = Uniform().compress(video, segments, "q", budget=36, hooks=FakeHooks(video))
    assert result.extra == {"groups_kept": 9, "groups_total": 10}
    assert result.kept_frames == [f for g in spread(10, 9) for f in (2 * g, 2 * g + 1) if f < 19]


def test_pooled_grid_is_the_largest_that_fits_keeping_the_aspect():
    assert pooled_grid(16, 16, 64) == (8, 8)
    assert pooled_grid(16, 16, 20) == (4, 5)
    assert pooled_grid(12, 20, 60) == (6, 10)
    assert pooled_grid(2, 30, 10) == (1, 10)
    assert pooled_grid(4, 6, 1000) == (4, 6)
    assert pooled_grid(5, 5, 1) == (1, 1)


def test_pool_keeps_every_group_on_the_largest_fitting_grid():
    video, segments = make_video(40, grid=(8, 12))  # 20 groups of 96
    result = Pool().compress(video, segments, "q", budget=500, hooks=FakeHooks(video))
    assert result.extra["pooled_grid"] == [4, 6]
    assert result.llm_tokens == 20 * 24 <= 500
    assert result.kept_frames == list(range(40))
    assert [s.text for s in result.segments] == [timestamp_text(float(t)) for t in video.group_times]
    assert all(torch.equal(s.positions, grid_positions(4, 6)) for s in result.segments)


def test_pooled_tokens_are_block_averages():
    video, segments = make_video(16, grid=(4, 6), dim=3)
    result = Pool().compress(video, segments, "q", budget=48, hooks=FakeHooks(video))  # 8 groups x (2, 3)
    grid = video.embeds[5].reshape(4, 6, 3)
    torch.testing.assert_close(result.segments[5].embeds[0], grid[:2, :2].mean((0, 1)))
    torch.testing.assert_close(result.segments[5].embeds[5], grid[2:, 4:].mean((0, 1)))
    torch.testing.assert_close(pool_grid(video.embeds[5], (4, 6), (4, 6)), video.embeds[5])
