"""segments: consecutive groups of sampled frames with times, the last one padded and saying so."""

from __future__ import annotations

import numpy as np
import pytest

from media import Frames, Segment, sample, segments


def fake_frames(count: int, step: float = 0.5) -> Frames:
    pictures = np.stack([np.full((4, 6, 3), i, dtype=np.uint8) for i in range(count)])
    return Frames(pictures, np.arange(count) * step + 0.25, np.arange(count, dtype=np.int64) * 3)


def test_short_last_segment_is_padded_with_its_last_frame_and_says_how_many():
    padded, segs = segments(fake_frames(20), segment_frames=8)
    assert len(padded) == 24 and [s.padded for s in segs] == [0, 0, 4]
    assert np.array_equal(padded.frames[20:], np.repeat(padded.frames[19:20], 4, axis=0))
    assert padded.timestamps[20:].tolist() == [padded.timestamps[19]] * 4
    assert padded.indices[20:].tolist() == [57] * 4
    assert np.array_equal(padded.frames[:20], fake_frames(20).frames)


def test_segments_cover_consecutive_frame_ranges():
    _, segs = segments(fake_frames(20), segment_frames=8)
    assert [s.index for s in segs] == [0, 1, 2]
    assert [s.frames for s in segs] == [range(0, 8), range(8, 16), range(16, 24)]


def test_segment_times_are_consecutive_with_centres_in_the_middle():
    frames = fake_frames(20)
    _, segs = segments(frames, segment_frames=8)
    assert [s.start for s in segs] == [0.25, 4.25, 8.25]
    assert [s.end for s in segs[:-1]] == [4.25, 8.25]
    assert segs[-1].end == pytest.approx(frames.timestamps[-1] + 0.5)
    for s in segs:
        assert s.centre == pytest.approx((s.start + s.end) / 2) and s.start < s.end


def test_exact_multiple_needs_no_padding():
    frames = fake_frames(16)
    padded, segs = segments(frames, segment_frames=8)
    assert padded is frames and [s.padded for s in segs] == [0, 0]


def test_one_frame_per_segment_and_a_single_frame():
    _, segs = segments(fake_frames(3), segment_frames=1)
    assert len(segs) == 3 and all(s.padded == 0 for s in segs)
    padded, (only,) = segments(fake_frames(1), segment_frames=4)
    assert len(padded) == 4 and only.padded == 3 and only.start == only.end == 0.25


def test_last_segment_ends_within_the_video(test_videos):
    frames = sample(test_videos["h264.mp4"], fps=5, max_frames=20, exact=True)
    _, segs = segments(frames, segment_frames=8)
    assert isinstance(segs[0], Segment)
    assert segs[-1].end <= frames.info.duration + 1e-9
    assert segs[0].start == frames.timestamps[0]


def test_segment_frames_must_be_positive():
    with pytest.raises(ValueError):
        segments(fake_frames(4), segment_frames=0)
