"""The real app attacked through its API (gradio_client, as any visitor's script would): one sentence each.

One app (tiny-random backbone) serves the whole module on 127.0.0.1. What a visitor can type or send is
tried as an attacker would: paths and other schemes in the URL box, a run card whose source_url is a path,
a compression bomb behind a link.
"""

from __future__ import annotations

import ipaddress
import json

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from media import urlguard
from pipeline import runcard
from pipeline.settings import Settings
from tests.app_server import running_app
from tests.hostile import is_one_sentence

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def _compare(client, video=None, url="", question="What is shown?", **settings):
    kwargs = {
        "methods": ["uniform"],
        "budget": 48,
        "fps": 2,
        "max_frames": 4,
        "max_new_tokens": 2,
        **settings,
    }
    return client.predict(video=video, url=url, question=question, api_name="/compare", **kwargs)


def _refusal(call, *args, **kwargs) -> str:
    with pytest.raises(AppError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert is_one_sentence(message), message
    return message


# --- the URL box: http(s) links only ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "/etc/passwd",
        "/etc/does-not-exist",
        "/dev/zero",
        "../../../etc/hostname",
        "app.py",
        "file:///etc/passwd",
        "data:video/mp4;base64,AAAAIGZ0eXBpc29t",
        "javascript:alert(1)",
    ],
)
def test_the_url_box_takes_web_links_only(client, text):
    message = _refusal(_compare, client, url=text)
    assert "https://" in message and "passwd" not in message and "folder" not in message


def test_an_unbalanced_ipv6_link_is_one_sentence(client):
    assert "not a valid web address" in _refusal(_compare, client, url="http://[::1/")


@pytest.mark.parametrize("path", ["/etc/passwd", "/dev/zero", "app.py"])
def test_a_server_path_sent_as_the_uploaded_video_never_reaches_the_handler(app_url, path):
    """Raw API call (gradio_client would upload the caller's own file): Gradio refuses paths not uploaded."""
    video = {"path": path, "meta": {"_type": "gradio.FileData"}}
    page = [video, "", "What is shown?", ["uniform"], "tiny-random", 48, 2, 4, 8, 0, 2]
    typed = ["What is shown?", video]
    for endpoint, data in (("compare", typed), ("compare_page", page)):
        job = httpx.post(app_url + f"gradio_api/call/{endpoint}", json={"data": data}, timeout=30).json()
        events = httpx.get(app_url + f"gradio_api/call/{endpoint}/{job['event_id']}", timeout=60).text
        assert "event: error" in events and "root:" not in events and "not a video" not in events, endpoint


@pytest.mark.parametrize("source_url", ["/etc/passwd", "file:///etc/passwd", "app.py"])
def test_a_card_whose_source_url_is_a_path_is_refused(client, tmp_path, source_url):
    card = {
        "schema_version": runcard.SCHEMA_VERSION,
        "settings": Settings().to_dict(),
        "video": {"fingerprint": "0" * 64, "source_url": source_url},
        "question": "What is shown?",
        "results": {},
    }
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    message = _refusal(client.predict, handle_file(str(path)), None, "", api_name="/rerun_card")
    assert "source_url" in message


def test_a_compression_bomb_behind_a_link_is_one_sentence(client, hostile_server, monkeypatch):
    loopback = ipaddress.ip_address("127.0.0.1")
    real = urlguard.is_forbidden
    monkeypatch.setattr(urlguard, "is_forbidden", lambda ip: ip != loopback and real(ip))  # the app runs here
    message = _refusal(_compare, client, url=hostile_server.url("bomb"))
    assert "compressed answer unpacks to more than 16 MB" in message


# --- run cards: the same bounds as the sliders ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("segment_frames", 20000, "segment length"),
        ("max_new_tokens", 10**9, "Max new tokens"),
        ("seed", 2**70, "seed"),
        ("fps", 1e308, "Frames per second"),
        ("budget", 48.5, "visual-token budget"),
    ],
)
def test_a_mutated_card_is_refused_on_the_page_with_one_sentence(client, tmp_path, field, value, words):
    card = {
        "schema_version": runcard.SCHEMA_VERSION,
        "settings": {**Settings().to_dict(), field: value},
        "video": {"fingerprint": "0" * 64, "source_url": "https://example.com/v.mp4"},
        "question": "What is shown?",
        "results": {},
    }
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    assert words in _refusal(client.predict, handle_file(str(path)), None, "", api_name="/rerun_card")


def test_a_deeply_nested_card_is_refused_on_the_page_with_one_sentence(client, tmp_path):
    path = tmp_path / "card.json"
    path.write_text('{"settings": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "not a run card" in _refusal(
        client.predict, handle_file(str(path)), None, "", api_name="/rerun_card"
    )
