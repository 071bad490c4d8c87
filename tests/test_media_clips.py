"""export_moments: a short MP4 of the frames around each kept moment, in time order, captioned."""

from __future__ import annotations

import av
import numpy as np
import pytest

import media
from media.clips import export_moments
from tests.videos import make_clip, read_index, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", 4, fps=10, size=(320, 240))


def decoded_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_each_moment_contributes_the_frames_around_it_in_time_order(clip, tmp_path):
    out = export_moments(clip, [3.0, 1.0], tmp_path / "moments.mp4", window_s=1.0)
    shown = [read_index(img) for img in decoded_frames(out)]
    assert shown == list(range(5, 15)) + list(range(25, 35))


def test_output_is_a_playable_h264_mp4_at_the_source_rate(clip, tmp_path):
    info = media.probe(export_moments(clip, [2.0], tmp_path / "one.mp4", window_s=0.5))
    assert info.codec == "h264" and info.frame_count == 5
    assert info.fps == pytest.approx(10.0, rel=0.01)
    assert (info.width, info.height) == (320, 240)


def test_frames_carry_a_burned_in_caption(clip, tmp_path):
    out = export_moments(clip, [2.0], tmp_path / "cap.mp4", window_s=0.3)
    corner = decoded_frames(out)[0][:20, :120].astype(int)
    assert (corner > 200).all(axis=2).any() and (corner < 40).all(axis=2).any()  # white text on black


def test_rotated_video_is_exported_upright_and_long_side_is_capped(tmp_path):
    src = write_video(tmp_path / "rot.mp4", 20, size=(640, 360), rotation=90)
    info = media.probe(export_moments(src, [1.0], tmp_path / "rot_moments.mp4", max_side=320))
    assert (info.width, info.height) == (180, 320)


def test_times_outside_the_video_are_clamped_and_duplicates_merged(clip, tmp_path):
    out = export_moments(clip, [-5.0, 0.0, 99.0], tmp_path / "edges.mp4", window_s=0.2)
    shown = [read_index(img) for img in decoded_frames(out)]
    assert shown == [0, 0, 39, 39]  # before the start holds frame 0, past the end holds the last frame


def test_no_times_is_a_value_error(clip, tmp_path):
    with pytest.raises(ValueError):
        export_moments(clip, [], tmp_path / "none.mp4")


def test_unreadable_video_raises_a_video_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(media.NotAVideoError):
        export_moments(bad, [1.0], tmp_path / "out" / "m.mp4")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
