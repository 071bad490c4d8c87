"""The Space's limits: settings in one place (flags, defaults, docs), and a request past one gets one sentence."""

import dataclasses
import re
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import app
import media
from bench.load import local_app
from pipeline.compare import compare
from pipeline.limits import AppSettings
from pipeline.request import Request
from pipeline.settings import Settings
from tests.videos import make_clip, write_garbage

ROOT = Path(__file__).resolve().parent.parent
SMALL = AppSettings(max_upload_mb=0.25, max_duration_s=3, max_pixels=200 * 150, max_frames=4, queue_size=4)


def _is_one_sentence(message: str) -> bool:
    text = message.strip()
    return bool(text) and "\n" not in text and "Traceback" not in text and text.endswith(".")


# --- the settings --------------------------------------------------------------------------------------


def test_every_limit_is_a_flag_and_the_defaults_need_no_flags(monkeypatch):
    monkeypatch.setenv("ARENA_MAX_UPLOAD", "1mb")  # the old environment variables are not read any more
    monkeypatch.setenv("ARENA_QUEUE_SIZE", "1")
    _, settings = app.parse_args([])
    assert settings == AppSettings()
    flags = [
        "--max-upload-mb=200",
        "--max-duration=600",
        "--max-pixels=2073600",
        "--max-frames=256",
        "--max-decoded-mb=512",
        "--decode-time-limit=30",
        "--max-height=480",
        "--queue-size=4",
        "--concurrency=2",
        "--max-backbones=2",
        "--frame-cache-mb=100",
        "--token-cache-mb=0",
        "--prefix-cache-mb=64",
    ]
    _, settings = app.parse_args(flags)
    assert settings == AppSettings(
        max_upload_mb=200,
        max_duration_s=600,
        max_pixels=1920 * 1080,
        max_frames=256,
        max_decoded_mb=512,
        decode_time_limit_s=30,
        max_height=480,
        queue_size=4,
        concurrency=2,
        max_backbones=2,
        frame_cache_mb=100,
        token_cache_mb=0,
        prefix_cache_mb=64,
    )
    assert len(flags) == len(dataclasses.fields(AppSettings))


def test_a_setting_out_of_range_stops_the_app_with_one_line(capsys):
    with pytest.raises(SystemExit):
        app.parse_args(["--queue-size", "0"])
    assert "--queue-size must be a whole number of at least 1, not 0." in capsys.readouterr().err
    with pytest.raises(ValueError, match="--max-upload-mb must be a number above 0"):
        AppSettings(max_upload_mb=-1)


def test_the_media_limits_carry_every_video_cap():
    limits = SMALL.media_limits()
    assert limits == media.Limits(
        max_duration_s=3,
        max_size_mb=0.25,
        max_height=720,
        max_pixels=30000,
        max_frames=4,
        max_output_mb=1024,
        decode_time_limit_s=120,
    )
    assert SMALL.max_upload_bytes == 262144


def test_the_readme_security_section_shows_every_limit_with_its_default():
    text = (ROOT / "README.md").read_text()
    for flag, value, _meaning in AppSettings().rows():
        row = re.search(rf"^\| `{flag}` \| ([^|]+) \|", text, re.M)
        assert row, f"README.md (Security) has no table row for {flag}"
        assert row.group(1).strip().replace(",", "").startswith(value), (flag, row.group(1), value)


# --- a request past a limit, through the running app ----------------------------------------------------


@pytest.fixture(scope="module")
def client():
    with local_app(SMALL) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits")
    return {
        "fine": make_clip(folder / "fine.mp4", seconds=2, fps=8, size=(128, 96)),
        "long": make_clip(folder / "long.mp4", seconds=5, fps=2, size=(64, 48)),
        "wide": make_clip(folder / "wide.mp4", seconds=1, fps=2, size=(320, 240)),
        "heavy": write_garbage(folder / "heavy.mp4", size=300 * 1024),
    }


def _compare(client, video, url=""):
    """The typed ``/compare`` endpoint: the run card."""
    return client.predict(
        video=video,
        url=url,
        question="What is shown?",
        budget=48,
        fps=4,
        max_frames=16,
        max_new_tokens=2,
        methods=["uniform"],
        api_name="/compare",
    )


@pytest.mark.slow
def test_a_video_too_long_gets_one_sentence_with_the_limit(client, clips):
    with pytest.raises(AppError) as err:
        _compare(client, handle_file(str(clips["long"])))
    message = str(err.value)
    assert _is_one_sentence(message) and "lasts 5.0 s and the limit is 3.0 s" in message


@pytest.mark.slow
def test_a_video_with_too_many_pixels_gets_one_sentence_with_the_limit(client, clips):
    with pytest.raises(AppError) as err:
        _compare(client, handle_file(str(clips["wide"])))
    message = str(err.value)
    assert _is_one_sentence(message) and "320x240" in message and "30,000 pixels" in message


@pytest.mark.slow
def test_an_upload_too_large_is_refused_before_it_reaches_the_handler(client, clips):
    assert client.config["max_file_size"] == SMALL.max_upload_bytes  # the page and clients check it first
    with pytest.raises(ValueError, match="exceeds the maximum file size of 262144 bytes"):
        _compare(client, handle_file(str(clips["heavy"])))
    with open(clips["heavy"], "rb") as f:  # a client that does not check: the server refuses it
        response = httpx.post(client.upload_url, files=[("files", ("heavy.mp4", f))])
    assert response.status_code == 413
    assert "File size exceeded maximum allowed size of 262144 bytes" in response.text


@pytest.mark.slow
def test_frames_are_capped_by_the_setting_and_a_fine_video_still_works(client, clips):
    card = _compare(client, handle_file(str(clips["fine"])))  # asks for 8 frames, the cap is 4
    assert card["video"]["sampled_frames"] == 4 and card["results"]["uniform"]["answer"]


@pytest.mark.slow
def test_a_link_to_a_private_address_is_refused_by_the_app(client, video_server):
    asked_before = len(video_server.requests)  # the server is shared with other tests
    with pytest.raises(AppError) as err:
        _compare(client, None, url=video_server.url("clip.mp4"))
    message = str(err.value)
    assert _is_one_sentence(message) and "private or local network address" in message
    assert len(video_server.requests) == asked_before  # refused before any request was sent


@pytest.mark.slow
@pytest.mark.network
def test_a_download_too_large_for_the_settings_gets_one_sentence_and_leaves_nothing(video_server, tmp_path):
    settings = Settings.for_backbone("tiny-random", max_frames=4, max_new_tokens=1)
    limits = AppSettings(max_upload_mb=0.5).media_limits()  # big.mp4 is 1.2 MB
    request = Request(
        video_server.url("big.mp4"),
        "What?",
        settings,
        limits=limits,
        allow_private=True,
        workdir=tmp_path / "work",
    )
    events = compare(request)
    with pytest.raises(media.VideoTooLargeError) as err:
        list(events)
    assert _is_one_sentence(str(err.value)) and "0.5 MB limit" in str(err.value)
    assert not any(p.is_file() for p in (tmp_path / "work").rglob("*"))
