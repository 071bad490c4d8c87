"""Espresso (arXiv 2412.04729), training-free: fixed-length spatial + temporal pooling per segment."""

import pytest
import torch

from compressors.base import CompressionError, timestamp_text
from compressors.espresso import Espresso, compress_segment, split_tokens
from tests.fakes import FakeHooks, make_video


def _compress(video, segments, budget, **options):
    return Espresso(**options).compress(video, segments, "q", budget=budget, hooks=FakeHooks(video))


def test_every_segment_gets_the_same_tokens_whatever_the_content():
    shape = (12, 20, 8)  # 24 frames, 4 x 5 grid
    contents = [
        torch.randn(shape),
        torch.zeros(shape),
        torch.full(shape, 3.0),
        torch.randn(shape) * 1e4,
        torch.linspace(-1, 1, 12 * 20 * 8).reshape(shape),
    ]
    for budget in [6, 17, 40, 70]:
        counts = set()
        for embeds in contents:
            video, segments = make_video(24, grid=(4, 5), dim=8, embeds=embeds)
            result = _compress(video, segments, budget)
            counts |= {s.num_tokens for s in result.segments}
            assert len(result.segments) == 3
        assert counts == {budget // 3}, budget


def test_a_short_last_segment_still_gets_the_same_tokens():
    video, segments = make_video(19, grid=(4, 4))
    assert len(segments[-1].groups) == 2
    result = _compress(video, segments, 60)
    assert [s.num_tokens for s in result.segments] == [20, 20, 20]


def test_a_short_last_segment_averages_its_own_frames_only():
    video, segments = make_video(12, grid=(2, 2), dim=3)  # segments of 4 and 2 groups, nothing padded
    last = _compress(video, segments, 12).segments[1]  # 6 tokens: 4 spatial (the whole grid), 2 temporal
    torch.testing.assert_close(last.embeds[:4], video.embeds[4:6].mean(0))
    torch.testing.assert_close(last.embeds[4:], video.embeds[4:6].mean(1))


def test_split_follows_the_spatial_share_with_time_capped_at_the_groups():
    assert split_tokens(16, groups=4, cells=64) == (12, 4)
    assert split_tokens(8, groups=4, cells=64) == (6, 2)
    assert split_tokens(8, groups=4, cells=64, spatial_share=0.5) == (4, 4)
    assert split_tokens(40, groups=4, cells=64) == (36, 4)
    assert split_tokens(2, groups=4, cells=64) == (1, 1)
    assert split_tokens(68, groups=4, cells=64) == (64, 4)
    with pytest.raises(CompressionError, match="at least 2"):
        split_tokens(1, groups=4, cells=64)


def test_compress_segment_returns_exactly_total_tokens_for_any_total():
    tokens = torch.randn(4, 5, 7, 6)
    for total in range(2, 5 * 7 + 4 + 1):
        out, positions = compress_segment(tokens, total)
        assert out.shape == (total, 6) and positions.shape == (total, 3) and positions.dtype == torch.long
        assert positions.min() >= 0 and positions[:, 1].max() < 5 and positions[:, 2].max() < 7


def test_spatial_tokens_average_over_time_and_temporal_tokens_over_space():
    tokens = torch.randn(4, 3, 5, 2)
    out, positions = compress_segment(tokens, 3 * 5 + 4)  # every cell and every group: no pooling left
    torch.testing.assert_close(out[:15], tokens.mean(0).reshape(15, 2))
    torch.testing.assert_close(out[15:], tokens.mean((1, 2)))
    out, _ = compress_segment(tokens, 2)  # one spatial and one temporal token: both the segment mean
    torch.testing.assert_close(out[0], tokens.mean((0, 1, 2)))
    torch.testing.assert_close(out[1], tokens.mean((0, 1, 2)))


def test_spatial_cells_pool_blocks_of_the_grid():
    tokens = torch.randn(2, 4, 4, 3)
    out, positions = compress_segment(tokens, 6, spatial_share=0.7)  # p = 4: a 2 x 2 grid of 2 x 2 blocks
    grid = tokens.mean(0)
    torch.testing.assert_close(out[0], grid[:2, :2].mean((0, 1)))
    torch.testing.assert_close(out[3], grid[2:, 2:].mean((0, 1)))
    assert positions[:4, 1:].tolist() == [[0, 0], [0, 2], [2, 0], [2, 2]]


def test_positions_follow_the_espresso_rule():
    _, positions = compress_segment(torch.randn(4, 6, 8, 2), 16)  # p = 12, t = 4
    spatial, temporal = positions[:12], positions[12:]
    assert torch.all(spatial[:, 0] == (4 - 1) // 2)
    assert len({tuple(p) for p in spatial[:, 1:].tolist()}) == 12
    assert temporal.tolist() == [[0, 2, 3], [1, 2, 3], [2, 2, 3], [3, 2, 3]]


def test_one_timestamp_at_each_segment_centre_and_every_frame_kept():
    video, segments = make_video(30, grid=(3, 3))
    result = _compress(video, segments, 40)
    assert [s.text for s in result.segments] == [timestamp_text(s.centre) for s in segments]
    assert result.kept_frames == list(range(30))
    assert result.segment_tokens == [10] * 4
    assert result.extra == {"tokens_per_segment": 10, "spatial_tokens": 8, "temporal_tokens": 2}


def test_tokens_per_segment_stop_at_every_cell_plus_every_group():
    video, segments = make_video(32, grid=(3, 3))
    result = _compress(video, segments, 100)  # raw 144; 25 per segment asked, 9 + 4 distinct exist
    assert result.segment_tokens == [13] * 4


def test_under_two_tokens_per_segment_gives_nothing():
    video, segments = make_video(40, grid=(3, 3))
    result = _compress(video, segments, 9)
    assert result.segments == [] and "under 2 tokens" in result.extra["note"]


def test_spatial_share_must_be_a_fraction():
    with pytest.raises(CompressionError, match="spatial_share"):
        Espresso(spatial_share=1.0)
