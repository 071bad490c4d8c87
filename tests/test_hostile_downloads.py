"""Hostile sites: compression bombs, codings we do not read, damaged bodies, redirect chains and loops.

Every test talks to `tests.hostile.HostileServer` on 127.0.0.1. A download is capped by the bytes *after*
decoding: a kilobyte that unpacks to 256 MB ends with one sentence, and the process's peak memory (the
kernel's own count for a child process) stays within a few tens of MB of a run that fails at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import media
from tests.hostile import is_one_sentence, run_measured

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20
HEADROOM = 48 * MB  # how far above a run that fails at once a bomb may take the process


@pytest.fixture(scope="module")
def server(hostile_server):
    assert len(hostile_server.bomb) < 4096  # about a kilobyte on the wire
    return hostile_server


def _fetch(url: str, tmp_path: Path, **kwargs) -> media.Fetched:
    return media.fetch(url, out_dir=tmp_path, allow_private=True, timeout_s=30, **kwargs)


def _cli_fetch(url: str, out: Path, *extra: str):
    args = [sys.executable, "cli.py", "fetch", url, "--out", str(out), "--allow-private", *extra]
    return run_measured(args, cwd=ROOT)


# --- compression bombs ------------------------------------------------------------------------------------


def test_cli_fetch_of_a_double_gzip_bomb_exits_2_with_one_sentence_in_bounded_memory(server, tmp_path):
    code, _, err, normal = _cli_fetch(server.url("missing.mp4"), tmp_path, "--max-size-mb", "20")
    assert code == 2 and "404" in err  # the same command failing at once: its normal size
    code, out, err, peak = _cli_fetch(server.url("bomb"), tmp_path, "--max-size-mb", "20")
    assert code == 2 and out == ""
    assert is_one_sentence(err) and "compressed answer unpacks to more than 16 MB" in err, err
    assert peak - normal < HEADROOM, f"peak {peak / MB:.0f} MB against {normal / MB:.0f} MB normally"
    assert list(tmp_path.iterdir()) == []


PIPELINE_RUN = """
import json, resource, sys
import media
from pipeline.compare import compare
from pipeline.request import Request
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def run(url):
    try:
        request = Request(url, "What is shown?", limits=media.Limits(max_size_mb=20), allow_private=True)
        for _ in compare(request):
            pass
    except media.VideoError as err:
        return str(err)
missing = run(sys.argv[1]); normal = peak()
bomb = run(sys.argv[2])
print(json.dumps({"missing": missing, "bomb": bomb, "normal": normal, "peak": peak()}))
"""


def test_the_pipeline_entry_the_app_uses_stops_the_bomb_in_bounded_memory(server):
    args = [sys.executable, "-c", PIPELINE_RUN, server.url("missing.mp4"), server.url("bomb")]
    code, out, err, _ = run_measured(args, cwd=ROOT, timeout_s=120)
    assert code == 0, err
    result = json.loads(out)
    assert "404" in result["missing"]
    assert is_one_sentence(result["bomb"]) and "more than 16 MB" in result["bomb"]
    assert result["peak"] - result["normal"] < HEADROOM, result


def test_a_compressed_page_bomb_stops_at_the_compressed_body_cap_under_the_default_video_cap(
    server, tmp_path
):
    code, _, _, normal = _cli_fetch(server.url("missing.mp4"), tmp_path)
    code, _, err, peak = _cli_fetch(server.url("bomb?type=text/html"), tmp_path)  # yt-dlp reads pages whole
    assert code == 2 and is_one_sentence(err) and "more than 16 MB" in err, err
    assert peak - normal < HEADROOM, f"peak {peak / MB:.0f} MB against {normal / MB:.0f} MB"


def test_a_video_cap_below_the_compressed_body_cap_applies_to_decoded_bytes(server, tmp_path):
    code, _, err, _ = _cli_fetch(server.url("bomb"), tmp_path, "--max-size-mb", "5")
    assert code == 2 and is_one_sentence(err) and "larger than the 5 MB limit" in err, err


# --- codings: decoded as a stream, byte for byte; others refused ----------------------------------------


@pytest.mark.parametrize("codings", ["gzip", "deflate", "rawdeflate", "gzip,gzip", "deflate,gzip"])
def test_a_compressed_video_is_decoded_byte_for_byte(server, tmp_path, codings):
    with _fetch(server.url(f"encoded?enc={codings}"), tmp_path) as fetched:
        assert fetched.path.read_bytes() == server.clip.read_bytes()
        assert fetched.info.duration > 1


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("encoded?enc=gzip&says=br", "'br'"),
        ("encoded?enc=gzip&says=zstd", "'zstd'"),
        ("encoded?enc=gzip,gzip,gzip", "gzip, gzip, gzip"),
        ("broken", "damaged"),
    ],
)
def test_unknown_too_many_or_damaged_codings_are_one_sentence_and_leave_nothing(server, tmp_path, url, words):
    with pytest.raises(media.DownloadError) as caught:
        _fetch(server.url(url), tmp_path)
    assert is_one_sentence(caught.value.message) and words in caught.value.message, caught.value.message
    assert list(tmp_path.iterdir()) == []


# --- redirects --------------------------------------------------------------------------------------------


def test_a_short_redirect_chain_is_followed(server, tmp_path):
    with _fetch(server.url("hop?n=3"), tmp_path) as fetched:
        assert fetched.path.read_bytes() == server.clip.read_bytes()


@pytest.mark.parametrize("path", ["hop?n=40", "loop"])
def test_long_redirect_chains_and_loops_end_with_one_sentence(server, tmp_path, path):
    before = len(server.requests)
    with pytest.raises(media.DownloadError) as caught:
        _fetch(server.url(path), tmp_path)
    assert is_one_sentence(caught.value.message) and "redirects too many times" in caught.value.message
    assert len(server.requests) - before <= 24  # a bounded number of hops, each tried at most twice


@pytest.mark.parametrize(
    "target",
    ["data:video/mp4;base64,AAAA", "javascript:alert(1)", "file:///etc/passwd", "ftp://127.0.0.1/v.mp4"],
)
def test_a_redirect_to_another_scheme_is_refused_before_it_is_followed(server, tmp_path, target):
    with pytest.raises(media.UnsupportedURLError) as caught:
        _fetch(server.url(f"redirect?to={target}"), tmp_path)
    assert is_one_sentence(caught.value.message) and "redirects" in caught.value.message
    assert list(tmp_path.iterdir()) == []
