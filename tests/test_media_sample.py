"""sample: which frames come back, with which timestamps, within which limits.

Every test video shows its own frame index as a bar code, so `read_index(frame)` tells which source frame
a returned picture really is; `indices` and `timestamps` must agree with it.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import media
from media import Limits, sample
from media.frames import SEEK_COST, SNAP_AFTER, Frames, exact_steps, plan_steps
from tests.videos import VFR_PTS_MS, marker_side, read_index, upright

CODECS = ["h264.mp4", "vp9.webm", "av1.mkv", "mpeg4.avi", "hevc10.mp4"]


def shown_indices(frames: Frames, rotation: int = 0) -> list[int]:
    return [read_index(upright(img, rotation)) for img in frames.frames]


@pytest.mark.parametrize("name", CODECS)
def test_returned_pictures_are_the_source_frames_their_indices_name(test_videos, name):
    frames = sample(test_videos[name], fps=2.5, max_frames=100, exact=True)
    assert len(frames) == 10
    assert shown_indices(frames) == frames.indices.tolist()
    np.testing.assert_allclose(frames.timestamps, frames.indices / 10.0, atol=1e-9)


def test_timestamps_count_from_the_first_frame_when_the_stream_starts_late(test_videos):
    frames = sample(test_videos["h264.ts"], fps=2.5, exact=True)
    assert shown_indices(frames) == frames.indices.tolist() == list(range(2, 40, 4))
    np.testing.assert_allclose(frames.timestamps, frames.indices / 10.0, atol=1e-9)


def test_frames_are_uint8_rgb_arrays_with_matching_timestamps_and_indices(test_videos):
    frames = sample(test_videos["h264.mp4"], fps=1)
    assert frames.frames.dtype == np.uint8 and frames.frames.shape == (4, 64, 96, 3)
    assert frames.timestamps.dtype == np.float64 and frames.indices.dtype == np.int64
    assert frames.info == media.probe(test_videos["h264.mp4"]).__class__(**{**frames.info.to_dict()})
    red_left = frames.frames[0, 60, 10]
    assert red_left[0] > 150 and red_left[2] < 100  # RGB order, not BGR


def test_each_frame_is_the_one_showing_at_the_centre_of_its_bin(test_videos):
    frames = sample(test_videos["h264.mp4"], fps=1, exact=True)  # 4 s -> bins centred on 0.5, 1.5, 2.5, 3.5 s
    assert frames.indices.tolist() == [5, 15, 25, 35]
    assert shown_indices(frames) == [5, 15, 25, 35]


def test_when_max_frames_is_exceeded_frames_spread_uniformly_over_the_whole_video(test_videos):
    frames = sample(test_videos["h264.mp4"], fps=10, max_frames=8, exact=True)  # 40 wanted, 8 allowed
    assert frames.indices.tolist() == [2, 7, 12, 17, 22, 27, 32, 37]
    assert shown_indices(frames) == frames.indices.tolist()
    assert frames.timestamps[0] < 0.5 and frames.timestamps[-1] > 3.5


def test_asking_for_more_frames_than_exist_returns_each_frame_once(test_videos):
    frames = sample(test_videos["h264.mp4"], fps=30, max_frames=256)
    assert frames.indices.tolist() == list(range(40))
    assert shown_indices(frames) == list(range(40))


def test_variable_frame_rate_timestamps_come_from_pts(test_videos):
    frames = sample(test_videos["vfr.mp4"], fps=4, max_frames=100, exact=True)
    shown = shown_indices(frames)
    assert shown == frames.indices.tolist()
    np.testing.assert_allclose(frames.timestamps, [VFR_PTS_MS[i] / 1000 for i in shown], atol=1e-9)
    # bins of 0.25 s: the 10 fps part gives every other-ish frame, the 4 fps part every frame
    assert shown[-10:] == list(range(10, 20))


@pytest.mark.parametrize(
    "name, rotation, marker", [("rot90.mp4", 90, "bottom-right"), ("rot-90.mp4", 270, "top-left")]
)
def test_rotation_is_applied_to_the_pictures(test_videos, name, rotation, marker):
    frames = sample(test_videos[name], fps=5, max_frames=10, max_side=None)
    assert frames.frames.shape[1:] == (96, 64, 3)  # stored 96x64 (w x h), displayed 64 wide, 96 tall
    assert shown_indices(frames, rotation) == frames.indices.tolist()
    assert marker_side(frames.frames[0]) == marker


def test_long_side_is_scaled_to_max_side_keeping_the_aspect_ratio(test_videos):
    frames = sample(test_videos["big_frames.mp4"], fps=10, max_side=320)
    assert frames.frames.shape[1:] == (180, 320, 3)
    assert shown_indices(frames) == frames.indices.tolist()
    full = sample(test_videos["big_frames.mp4"], fps=10, max_side=None)
    assert full.frames.shape[1:] == (720, 1280, 3)


def test_ten_bit_video_comes_back_as_eight_bit_rgb(test_videos):
    frames = sample(test_videos["hevc10.mp4"], fps=1)
    assert frames.frames.dtype == np.uint8
    assert shown_indices(frames) == frames.indices.tolist()


@pytest.mark.parametrize(
    "name, shape", [("tiny.mp4", (16, 16, 3)), ("odd.webm", (17, 33, 3)), ("odd444.mp4", (31, 45, 3))]
)
def test_tiny_and_odd_sized_videos_sample_at_their_own_size(test_videos, name, shape):
    frames = sample(test_videos[name], fps=100)
    assert frames.frames.shape[1:] == shape
    assert frames.indices.tolist() == list(range(len(frames)))


def test_single_frame_video_gives_one_frame_at_time_zero(test_videos):
    frames = sample(test_videos["single.mp4"], fps=1, max_frames=16)
    assert len(frames) == 1 and frames.indices.tolist() == [0] and frames.timestamps.tolist() == [0.0]
    assert read_index(frames.frames[0]) == 0


def test_truncated_video_returns_only_frames_that_really_decode(test_videos):
    info = media.probe(test_videos["truncated.mp4"])
    frames = sample(test_videos["truncated.mp4"], fps=100, max_frames=256)
    assert 0 < len(frames) <= info.frame_count
    assert shown_indices(frames) == frames.indices.tolist()  # no repeated last frame passed off as later ones
    assert len(set(frames.indices.tolist())) == len(frames)


def test_sparse_request_takes_a_keyframe_in_the_bin_instead_of_decoding_far_from_one(test_videos):
    path = test_videos["h264_long_gop.mp4"]  # 10 s at 20 fps, keyframes at frames 0 and 100
    fast = sample(path, fps=0.2)  # two bins of 5 s: centres at frames 50 and 150
    exact = sample(path, fps=0.2, exact=True)
    assert exact.indices.tolist() == [50, 150]
    assert fast.indices.tolist() == [0, 100]
    assert shown_indices(fast) == [0, 100] and shown_indices(exact) == [50, 150]


@pytest.mark.parametrize("name", CODECS + ["vfr.mp4", "h264_long_gop.mp4"])
def test_default_mode_timestamps_always_match_the_pictures(test_videos, name):
    frames = sample(test_videos[name], fps=3, max_frames=7)
    assert shown_indices(frames) == frames.indices.tolist()
    assert np.all(np.diff(frames.indices) > 0)


# ------------------------------------------------------------------------------------------- limits


def test_video_longer_than_the_limit_is_refused_with_both_durations(test_videos):
    with pytest.raises(media.VideoTooLongError) as caught:
        sample(test_videos["h264.mp4"], limits=Limits(max_duration_s=2))
    assert "4.0 s" in caught.value.message and "2.0 s" in caught.value.message


def test_resolution_over_the_limit_is_refused_before_any_frame_is_decoded(test_videos, monkeypatch):
    probe_module = importlib.import_module("media.probe")  # `media.probe` is the function

    def must_not_run(*args, **kwargs):
        raise AssertionError("frames were read before the resolution check")

    monkeypatch.setattr(probe_module, "scan_packets", must_not_run)
    with pytest.raises(media.ResolutionTooLargeError, match="1280x720"):
        sample(test_videos["big_frames.mp4"], limits=Limits(max_pixels=640 * 360))


def test_file_larger_than_the_limit_is_refused_before_opening(test_videos):
    with pytest.raises(media.VideoTooLargeError, match="limit"):
        sample(test_videos["h264.mp4"], limits=Limits(max_size_mb=0.001))


def test_output_that_would_not_fit_the_memory_cap_is_refused(test_videos):
    with pytest.raises(media.ResolutionTooLargeError, match="lower max_side or max_frames"):
        sample(test_videos["big_frames.mp4"], fps=10, max_side=None, limits=Limits(max_output_mb=1))


def test_frame_count_is_capped_by_the_limits_whatever_is_asked(test_videos):
    frames = sample(test_videos["h264.mp4"], fps=10, max_frames=1000, limits=Limits(max_frames=3))
    assert len(frames) == 3


def test_decoding_past_the_time_limit_raises_decode_timeout(test_videos):
    with pytest.raises(media.DecodeTimeoutError, match="longer than"):
        sample(test_videos["h264.mp4"], fps=10, time_limit_s=1e-9)


def test_bad_arguments_are_value_errors_not_video_errors(test_videos):
    with pytest.raises(ValueError):
        sample(test_videos["h264.mp4"], fps=0)
    with pytest.raises(ValueError):
        sample(test_videos["h264.mp4"], max_frames=0)
    with pytest.raises(ValueError):
        sample(test_videos["h264.mp4"], max_side=0)


def test_frames_refuse_mismatched_shapes():
    with pytest.raises(ValueError):
        Frames(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3), np.zeros(2, np.int64))


# ------------------------------------------------------------------------------------------ planning


def _index(n: int, fps: float, gop: int) -> tuple[np.ndarray, np.ndarray]:
    times = np.arange(n) / fps
    keyframe = np.arange(n) % gop == 0
    return times, keyframe


def test_dense_request_within_one_keyframe_interval_is_one_sequential_pass():
    times, keyframe = _index(3000, 30, gop=3000)
    steps = plan_steps(times, keyframe, 100.0, 100, exact=True)
    assert len(steps) == 100 and all(step.seek_to is None for step in steps)


def test_seeks_happen_only_when_they_skip_more_than_the_seek_cost():
    times, keyframe = _index(18000, 30, gop=250)
    for exact in (True, False):
        steps = plan_steps(times, keyframe, 600.0, 600, exact=exact)
        previous = -1
        for step in steps:
            if step.seek_to is not None:
                assert keyframe[step.seek_to] and step.seek_to - previous - 1 > SEEK_COST
            previous = step.position


def test_sparse_request_never_decodes_far_from_a_keyframe_by_default_and_hits_bin_centres_when_exact():
    times, keyframe = _index(18000, 30, gop=250)
    fast = plan_steps(times, keyframe, 600.0, 64, exact=False)
    exact = plan_steps(times, keyframe, 600.0, 64, exact=True)
    for step in fast:  # a keyframe, or a frame reached by decoding fewer than SNAP_AFTER frames
        key = np.flatnonzero(keyframe[: step.position + 1])[-1]
        assert keyframe[step.position] or SEEK_COST + step.position - key + 1 <= SNAP_AFTER
    width = 600.0 / 64
    for k, step in enumerate(exact):
        assert times[step.position] <= (k + 0.5) * width < times[step.position] + 1 / 30 + 1e-9
    for k, step in enumerate(fast):
        assert k * width <= times[step.position] < (k + 1) * width  # still one frame from each bin


def test_exact_frames_are_kept_when_they_are_cheap():
    times, keyframe = _index(1000, 30, gop=250)
    steps = plan_steps(times, keyframe, 1000 / 30, 100, exact=False)  # 10 frames apart < SNAP_AFTER
    assert SNAP_AFTER > 10
    assert [s.position for s in steps] == [int(((k + 0.5) * (1000 / 30) / 100) * 30) for k in range(100)]


def test_plans_move_forward_and_never_repeat_a_frame():
    times, keyframe = _index(50, 10, gop=7)
    steps = plan_steps(times, keyframe, 5.0, 500, exact=False)
    positions = [s.position for s in steps]
    assert positions == sorted(set(positions)) and len(positions) == 50


def test_exact_steps_visit_the_given_frames_in_order_once():
    _, keyframe = _index(300, 30, gop=100)
    steps = exact_steps([250, 5, 5, 120], keyframe)
    assert [s.position for s in steps] == [5, 120, 250]
    assert steps[1].seek_to == 100 and steps[2].seek_to == 200
