"""The URL field is for http(s) links only: paths, other schemes and malformed links are refused in one sentence.

`media.video_source` is the one check (the page's URL box and the API call it with allow_paths=False, and
so does replaying a run card's `source_url`); only the CLI's own user may name local files. Text that names
a file that exists and text that names nothing get the very same sentence, so nothing about the server's
files can be learned from the wording. The page and the API are attacked in tests/test_hostile_api.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import media
from pipeline import runcard
from pipeline.settings import Settings
from tests.hostile import is_one_sentence

ROOT = Path(__file__).resolve().parent.parent

NOT_LINKS = [
    "/etc/passwd",
    "/etc/does-not-exist",
    "/dev/zero",
    "../../etc/passwd",
    "etc/passwd",
    "clip.mp4",
    "~/video.mp4",
    "//evil.example/video.mp4",
    "www.youtube.com/watch?v=aqz-KE-bpKQ",
    "\\\\server\\share\\video.mp4",
]
OTHER_SCHEMES = [
    "file:///etc/passwd",
    "FILE:/etc/passwd",
    "data:video/mp4;base64,AAAAIGZ0eXBpc29t",
    "javascript:alert(document.cookie)",
    "ftp://example.com/video.mp4",
    "gopher://127.0.0.1:25/",
    "C:\\Windows\\win.ini",
]
MALFORMED = [
    "http://[::1/",
    "https://[example.com/v.mp4",
    "http://example.com:99999/",
    "http://",
    "https:///v",
]


@pytest.mark.parametrize("text", NOT_LINKS)
def test_text_without_a_scheme_is_refused_with_the_same_sentence_whether_or_not_a_file_exists(text):
    with pytest.raises(media.UnsupportedURLError) as caught:
        media.video_source(text)
    assert caught.value.message == media.urlguard.NOT_A_LINK
    assert is_one_sentence(caught.value.message) and "https://" in caught.value.message


@pytest.mark.parametrize("text", OTHER_SCHEMES)
def test_other_schemes_are_refused_naming_what_is_accepted(text):
    with pytest.raises(media.UnsupportedURLError) as caught:
        media.video_source(text)
    message = caught.value.message
    assert is_one_sentence(message) and "https://" in message and text.split(":")[0].lower() + ":" in message


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_links_are_one_sentence_not_a_value_error(text):
    with pytest.raises(media.UnsupportedURLError) as caught:
        media.video_source(text)
    assert is_one_sentence(caught.value.message)


@pytest.mark.parametrize("text", [None, 42, "", "   "])
def test_nothing_or_not_text_is_refused(text):
    with pytest.raises(media.UnsupportedURLError):
        media.video_source(text)


def test_web_links_pass_unchanged_but_stripped():
    assert media.video_source("  https://example.com/v.mp4 \n") == "https://example.com/v.mp4"
    assert media.video_source("HTTP://Example.com/a?b=c") == "HTTP://Example.com/a?b=c"
    assert media.video_source("http://[2001:db8::1]:8080/v.mp4") == "http://[2001:db8::1]:8080/v.mp4"


def test_only_the_cli_may_name_local_files(tmp_path):
    odd = tmp_path / "clip:1.mp4"  # a colon makes it look like a scheme; the file exists, so it is a file
    odd.write_bytes(b"x")
    assert media.video_source("clips/a.mp4", allow_paths=True) == Path("clips/a.mp4")
    assert media.video_source(str(odd), allow_paths=True) == odd
    assert media.video_source("https://example.com/v.mp4", allow_paths=True) == "https://example.com/v.mp4"
    with pytest.raises(media.UnsupportedURLError):
        media.video_source("data:video/mp4;base64,AAAA", allow_paths=True)


def test_fetch_refuses_an_unbalanced_ipv6_link_with_one_sentence():
    with pytest.raises(media.UnsupportedURLError) as caught:
        media.fetch("http://[::1/")
    assert is_one_sentence(caught.value.message)


# --- a run card's source_url: never a path, whoever replays it --------------------------------------------


def _card(source_url) -> dict:
    return {
        "schema_version": runcard.SCHEMA_VERSION,
        "settings": Settings().to_dict(),
        "video": {"fingerprint": "0" * 64, "source_url": source_url},
        "question": "What is shown?",
        "results": {},
    }


@pytest.mark.parametrize(
    "source_url", ["/etc/passwd", "file:///etc/passwd", "data:video/mp4;base64,AA", "x.mp4"]
)
def test_a_cards_source_url_must_be_a_web_link(source_url):
    with pytest.raises(runcard.CardError) as caught:
        runcard.source_of(_card(source_url))
    assert is_one_sentence(caught.value.args[0]) and "source_url" in caught.value.args[0]
    assert runcard.source_of(_card("https://example.com/v.mp4")) == "https://example.com/v.mp4"


@pytest.mark.slow
def test_the_cli_replays_no_card_whose_source_url_is_a_path(tmp_path):
    card = tmp_path / "card.json"
    card.write_text(json.dumps(_card("/etc/passwd")))
    run = subprocess.run(
        [sys.executable, "cli.py", "replay", str(card)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and run.stdout == ""
    assert is_one_sentence(run.stderr) and "source_url" in run.stderr, run.stderr


@pytest.mark.slow
def test_the_cli_refuses_an_unbalanced_ipv6_link_with_exit_2(tmp_path):
    run = subprocess.run(
        [sys.executable, "cli.py", "fetch", "http://[::1/", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and is_one_sentence(run.stderr), run.stderr
