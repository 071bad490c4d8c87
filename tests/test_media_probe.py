"""probe and fingerprint: what a video is, as displayed, and typed errors for what is not a usable video."""

from __future__ import annotations

import shutil

import pytest

import media
from media import probe
from tests.videos import write_video

CODECS = {
    "h264.mp4": "h264",
    "vp9.webm": "vp9",
    "av1.mkv": "av1",
    "mpeg4.avi": "mpeg4",
    "hevc10.mp4": "hevc",
}


@pytest.mark.parametrize("name, codec", CODECS.items())
def test_probe_reports_duration_rate_count_size_and_codec_for_each_codec(test_videos, name, codec):
    info = probe(test_videos[name])
    assert info.codec == codec
    assert info.frame_count == 40
    assert info.duration == pytest.approx(4.0, abs=1e-6)
    assert info.fps == pytest.approx(10.0)
    assert (info.width, info.height) == (96, 64)
    assert info.rotation == 0
    assert info.has_audio is False


@pytest.mark.parametrize("name, rotation", [("rot90.mp4", 90), ("rot-90.mp4", 270)])
def test_probe_gives_size_as_displayed_for_rotated_video(test_videos, name, rotation):
    info = probe(test_videos[name])
    assert info.rotation == rotation
    assert (info.width, info.height) == (64, 96)  # stored 96x64, shown upright


def test_probe_of_variable_frame_rate_video_uses_the_real_timestamps(test_videos):
    info = probe(test_videos["vfr.mp4"])
    assert info.frame_count == 20
    # 10 frames at 10 fps, then 10 frames at 4 fps: the last one ends at 3.25 + 0.25
    assert info.duration == pytest.approx(3.5, abs=1e-6)
    assert info.fps == pytest.approx(20 / 3.5)


def test_probe_of_truncated_file_reports_the_duration_that_decodes_not_the_header(test_videos):
    whole = probe(test_videos["faststart.mp4"])
    cut = probe(test_videos["truncated.mp4"])
    assert whole.duration == pytest.approx(6.0)
    assert 0.5 < cut.duration < 0.75 * whole.duration
    assert cut.frame_count < whole.frame_count
    frames = media.sample(test_videos["truncated.mp4"], fps=100, max_frames=100, exact=True)
    assert frames.timestamps[-1] < cut.duration


def test_probe_of_truncated_webm_reports_what_is_left(test_videos):
    info = probe(test_videos["truncated.webm"])
    assert 0 < info.duration < 4.0
    assert info.frame_count < 40


@pytest.mark.parametrize(
    "name, size", [("tiny.mp4", (16, 16)), ("odd.webm", (33, 17)), ("odd444.mp4", (45, 31))]
)
def test_probe_handles_tiny_and_odd_sizes(test_videos, name, size):
    info = probe(test_videos[name])
    assert (info.width, info.height) == size
    assert info.frame_count > 0


def test_probe_of_single_frame_video_has_one_frame_and_its_duration(test_videos):
    info = probe(test_videos["single.mp4"])
    assert info.frame_count == 1
    assert info.duration == pytest.approx(0.1)


def test_probe_notices_audio(test_videos):
    assert probe(test_videos["with_audio.mp4"]).has_audio is True


def test_video_info_to_dict_is_json_ready(test_videos):
    import json

    data = probe(test_videos["h264.mp4"]).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) >= {
        "duration",
        "fps",
        "frame_count",
        "width",
        "height",
        "rotation",
        "codec",
        "has_audio",
    }


@pytest.mark.parametrize(
    "name, error, words",
    [
        ("garbage.mp4", media.NotAVideoError, "not a video"),
        ("empty.mp4", media.EmptyFileError, "empty"),
        ("audio_only.m4a", media.NoVideoStreamError, "no picture"),
        ("truncated_no_index.mp4", media.CorruptVideoError, "corrupt or truncated"),
        ("corrupt_header.mp4", media.CorruptVideoError, "corrupt or truncated"),
    ],
)
def test_unusable_files_raise_a_typed_error_with_one_plain_sentence(test_videos, name, error, words):
    with pytest.raises(error) as caught:
        probe(test_videos[name])
    message = caught.value.message
    assert str(caught.value) == message
    assert words in message
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message


def test_missing_path_raises_video_not_found(test_videos):
    with pytest.raises(media.VideoNotFoundError, match="was not found"):
        probe(test_videos.missing())


def test_a_folder_is_not_a_video(tmp_path):
    with pytest.raises(media.NotAVideoError):
        probe(tmp_path)


def test_every_error_is_a_video_error():
    for name in media.__all__:
        obj = getattr(media, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, media.VideoError)
            assert obj().message.endswith(".")


def test_a_playlist_disguised_as_mp4_is_refused_without_reading_what_it_points_to(tmp_path, test_videos):
    secret = shutil.copy(test_videos["h264.mp4"], tmp_path / "secret.mp4")
    playlist = tmp_path / "upload.mp4"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:4,\nfile://{secret}\n#EXT-X-ENDLIST\n")
    script = tmp_path / "upload2.mp4"
    script.write_text(f"ffconcat version 1.0\nfile '{secret}'\n")
    for path in (playlist, script):
        with pytest.raises(media.NotAVideoError):
            probe(path)


def test_fingerprint_depends_on_content_not_name(tmp_path, test_videos):
    original = test_videos["h264.mp4"]
    copy = shutil.copy(original, tmp_path / "renamed-copy.bin")
    assert media.fingerprint(original) == media.fingerprint(copy)
    assert len(media.fingerprint(original)) == 32
    int(media.fingerprint(original), 16)
    assert media.fingerprint(test_videos["vp9.webm"]) != media.fingerprint(original)


def test_fingerprint_changes_when_one_byte_changes(tmp_path):
    a = write_video(tmp_path / "a.mp4", 5)
    b = tmp_path / "b.mp4"
    data = bytearray(a.read_bytes())
    data[-1] ^= 1
    b.write_bytes(bytes(data))
    assert media.fingerprint(a) != media.fingerprint(b)
