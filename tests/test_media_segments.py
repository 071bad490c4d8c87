"""segments: consecutive runs of sampled frames with times; a short last one stays short (nothing repeated)."""

from __future__ import annotations

import numpy as np
import pytest

from media import Frames, Segment, sample, segments


def fake_frames(count: int, step: float = 0.5) -> Frames:
    pictures = np.stack([np.full((4, 6, 3), i, dtype=np.uint8) for i in range(count)])
    return Frames(pictures, np.arange(count) * step + 0.25, np.arange(count, dtype=np.int64) * 3)


def test_a_short_last_segment_stays_short():
    frames = fake_frames(20)
    segs = segments(frames, segment_frames=8)
    assert [s.frames for s in segs] == [range(0, 8), range(8, 16), range(16, 20)]
    assert len(frames) == 20 and np.array_equal(frames.frames, fake_frames(20).frames), "frames untouched"


def test_segments_tile_the_frames_in_order():
    for count, size in [(20, 8), (16, 8), (12, 8), (13, 8), (1, 8), (3, 1), (7, 2)]:
        segs = segments(fake_frames(count), segment_frames=size)
        assert [s.index for s in segs] == list(range(len(segs)))
        assert [f for s in segs for f in s.frames] == list(range(count)), (count, size)
        assert all(len(s.frames) == size for s in segs[:-1]) and 1 <= len(segs[-1].frames) <= size


def test_segment_times_are_consecutive_with_centres_in_the_middle():
    frames = fake_frames(20)
    segs = segments(frames, segment_frames=8)
    assert [s.start for s in segs] == [0.25, 4.25, 8.25]
    assert [s.end for s in segs[:-1]] == [4.25, 8.25]
    assert segs[-1].end == pytest.approx(frames.timestamps[-1] + 0.5)
    for s in segs:
        assert s.centre == pytest.approx((s.start + s.end) / 2) and s.start < s.end


def test_a_single_frame_is_one_segment_of_one_frame():
    (only,) = segments(fake_frames(1), segment_frames=4)
    assert only.frames == range(1) and only.start == only.end == 0.25


def test_last_segment_ends_within_the_video(test_videos):
    frames = sample(test_videos["h264.mp4"], fps=5, max_frames=20, exact=True)
    segs = segments(frames, segment_frames=8)
    assert isinstance(segs[0], Segment)
    assert segs[-1].end <= frames.info.duration + 1e-9
    assert segs[0].start == frames.timestamps[0]


def test_segment_frames_must_be_positive():
    with pytest.raises(ValueError):
        segments(fake_frames(4), segment_frames=0)
