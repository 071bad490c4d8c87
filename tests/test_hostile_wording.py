"""Wording: every refusal is one sentence a visitor understands, naming what to do instead.

Sentences that used to confuse: "not this kind of links" (a link without a scheme), yt-dlp's "Use
--list-formats for a list of available formats" (a site that only streams), a GIF called "not a video", a
device such as /dev/zero called a folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import media
from media import guarded_ytdlp, sources
from tests.hostile import is_one_sentence

ROOT = Path(__file__).resolve().parent.parent
ACCEPTED = "MP4, WebM, MKV, MOV or AVI"


def _save_image(path: Path, **kwargs) -> Path:
    frames = [Image.new("RGB", (32, 24), (40 * i, 0, 0)) for i in range(4)]
    frames[0].save(path, **kwargs)
    return path


IMAGES = {
    "anim.gif": (
        {"save_all": True, "append_images": [], "duration": 100, "loop": 0},
        "an animated GIF image",
    ),
    "still.png": ({}, "a PNG image"),
    "still.jpg": ({}, "a JPEG image"),
    "still.webp": ({}, "a WebP image"),
}


@pytest.mark.parametrize("name", IMAGES)
def test_an_image_is_called_an_image_and_the_accepted_formats_are_named(tmp_path, name):
    kwargs, kind = IMAGES[name]
    with pytest.raises(media.NotAVideoError) as caught:
        media.probe(_save_image(tmp_path / name, **kwargs))
    message = caught.value.message
    assert is_one_sentence(message) and kind in message and ACCEPTED in message


@pytest.mark.parametrize(
    ("path", "words"), [("/dev/zero", "device"), ("/dev/null", "device"), ("/", "folder")]
)
def test_a_device_is_not_called_a_folder(path, words):
    with pytest.raises(media.NotAVideoError) as caught:
        media.probe(path)
    assert is_one_sentence(caught.value.message) and words in caught.value.message


@pytest.mark.slow
def test_the_cli_says_device_for_dev_zero():
    run = subprocess.run(
        [sys.executable, "cli.py", "probe", "/dev/zero"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and is_one_sentence(run.stderr) and "device" in run.stderr, run.stderr


def test_a_link_without_a_scheme_gets_no_this_kind_of_links():
    for text in ("www.example.com/v.mp4", "javascript:alert(1)"):
        with pytest.raises(media.UnsupportedURLError) as caught:
            media.urlguard.parse_url(text)
        assert "this kind of" not in caught.value.message and "https://" in caught.value.message


def _selector_problem(formats: list[dict]) -> str:
    state = guarded_ytdlp.FetchState(media.Limits(), 5, allow_private=False)
    assert sources._format_selector(state)({"formats": formats}) == []
    return state.problem.message


@pytest.mark.parametrize(
    ("formats", "words"),
    [
        ([{"protocol": "m3u8_native", "vcodec": "avc1", "url": "x"}], "only as a stream (HLS or DASH)"),
        ([{"protocol": "http_dash_segments", "vcodec": None, "url": "x"}], "only as a stream (HLS or DASH)"),
        ([{"protocol": "https", "vcodec": "avc1", "has_drm": True, "url": "x"}], "copy-protected"),
        ([{"protocol": "https", "vcodec": "none", "acodec": "mp4a", "url": "x"}], "No video with a picture"),
        ([], "No video with a picture"),
    ],
)
def test_no_usable_format_is_one_sentence_not_list_formats(formats, words):
    message = _selector_problem(formats)
    assert is_one_sentence(message) and words in message and "--list-formats" not in message


@pytest.mark.network
def test_a_site_that_only_streams_gets_one_sentence_end_to_end(hostile_server, tmp_path):
    with pytest.raises(media.UnsupportedURLError) as caught:
        media.fetch(hostile_server.url("stream.m3u8"), out_dir=tmp_path, allow_private=True, timeout_s=30)
    message = caught.value.message
    assert is_one_sentence(message) and "stream" in message and "--list-formats" not in message
    assert list(tmp_path.iterdir()) == []
