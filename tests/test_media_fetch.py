"""fetch against a local http.server on 127.0.0.1: downloads, typed refusals, caps, and clean temp folders.

The server lives on a loopback address, which fetch refuses by default; tests pass allow_private=True,
or make exactly 127.0.0.1 count as public (`public_loopback`) to test what happens after the first hop.
"""

from __future__ import annotations

import functools
import http.server
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

import media
from media import fetch, guarded_ytdlp, urlguard
from tests.videos import read_index

pytestmark = pytest.mark.network

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def public_loopback(monkeypatch):
    """Treat 127.0.0.1 (the test server) as a public address; every other private address stays refused."""
    real = urlguard.is_forbidden
    monkeypatch.setattr(urlguard, "is_forbidden", lambda ip: ip != LOOPBACK and real(ip))


def assert_nothing_left(folder):
    assert list(folder.iterdir()) == []


def test_direct_link_downloads_into_a_temp_folder_the_caller_removes(video_server, tmp_path):
    with fetch(video_server.url("clip.mp4"), out_dir=tmp_path, allow_private=True) as fetched:
        assert fetched.path.is_file() and fetched.path.parent == fetched.tmpdir
        assert fetched.info.duration == pytest.approx(4.0) and fetched.info.frame_count == 40
        frames = media.sample(fetched.path, fps=1, exact=True)
        assert [read_index(f) for f in frames.frames] == [5, 15, 25, 35]
    assert_nothing_left(tmp_path)


def test_page_with_a_video_tag_downloads_the_video(video_server, tmp_path):
    fetched = fetch(video_server.url("page.html?src=long.mp4"), out_dir=tmp_path, allow_private=True)
    try:
        assert fetched.info.duration == pytest.approx(12.0)
        assert fetched.url.endswith("page.html?src=long.mp4")
    finally:
        fetched.cleanup()
    assert_nothing_left(tmp_path)


def test_no_cookies_are_kept_or_sent(video_server, tmp_path):
    before = len(video_server.headers)
    fetch(video_server.url("page.html"), out_dir=tmp_path, allow_private=True).cleanup()
    sent = video_server.headers[before:]
    assert len(sent) >= 2  # the page (which sets a cookie), then the video
    assert not any("Cookie" in headers for headers in sent)


def test_missing_page_is_a_download_error_naming_the_status(video_server, tmp_path):
    with pytest.raises(media.DownloadError, match="404"):
        fetch(video_server.url("nothing-here.mp4"), out_dir=tmp_path, allow_private=True)
    assert_nothing_left(tmp_path)


def test_page_without_video_is_an_unsupported_url(video_server, tmp_path):
    with pytest.raises(media.UnsupportedURLError, match="No video was found"):
        fetch(video_server.url("novideo.html"), out_dir=tmp_path, allow_private=True)
    assert_nothing_left(tmp_path)


def test_page_with_several_videos_is_refused_as_a_playlist(video_server, tmp_path):
    with pytest.raises(media.UnsupportedURLError, match="playlist"):
        fetch(video_server.url("two.html"), out_dir=tmp_path, allow_private=True)
    assert_nothing_left(tmp_path)


def test_file_larger_than_the_cap_is_refused_and_removed(video_server, tmp_path):
    with pytest.raises(media.VideoTooLargeError, match="0.5 MB"):
        fetch(video_server.url("big.mp4"), out_dir=tmp_path, allow_private=True, max_size_mb=0.5)
    assert_nothing_left(tmp_path)


def test_size_cap_stops_a_download_of_unannounced_size_while_it_runs(video_server, tmp_path):
    total = 64 * 2**20
    with pytest.raises(media.VideoTooLargeError):
        fetch(
            video_server.url(f"stream.mp4?size={total}"), out_dir=tmp_path, allow_private=True, max_size_mb=1
        )
    assert_nothing_left(tmp_path)  # no .part file either
    time.sleep(0.2)
    assert video_server.bytes_sent["stream.mp4"] < total // 4


def test_an_endless_web_page_is_cut_off_at_the_byte_budget(video_server, tmp_path):
    total = 256 * 2**20
    url = video_server.url(f"stream.mp4?size={total}&type=text/html")
    with pytest.raises(media.VideoTooLargeError):
        fetch(url, out_dir=tmp_path, allow_private=True, max_size_mb=1)
    assert_nothing_left(tmp_path)
    time.sleep(0.2)
    assert video_server.bytes_sent["stream.mp4"] < total // 2  # read: 1 MB + the page allowance


def test_a_link_to_something_that_is_not_a_video_says_so(video_server, tmp_path):
    with pytest.raises(media.NotAVideoError, match="The link gave a file that is not a video"):
        fetch(video_server.url("stream.mp4?size=5000"), out_dir=tmp_path / "out", allow_private=True)
    assert_nothing_left(tmp_path / "out")


def test_video_longer_than_the_cap_is_refused_after_probing(video_server, tmp_path):
    with pytest.raises(media.VideoTooLongError, match="12 s"):
        fetch(video_server.url("long.mp4"), out_dir=tmp_path, allow_private=True, max_duration_s=5)
    assert_nothing_left(tmp_path)


def test_private_address_is_refused_without_the_flag_and_nothing_is_requested(video_server, tmp_path):
    before = len(video_server.requests)
    with pytest.raises(media.PrivateAddressError):
        fetch(video_server.url("clip.mp4"), out_dir=tmp_path)
    assert len(video_server.requests) == before
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "0x7f000001", "127.1", "localhost"])
def test_numeric_spellings_of_loopback_are_refused(video_server, tmp_path, host):
    before = len(video_server.requests)
    with pytest.raises(media.PrivateAddressError):
        fetch(video_server.url("clip.mp4", host=host), out_dir=tmp_path)
    assert len(video_server.requests) == before


def test_redirects_to_a_public_address_are_followed(video_server, tmp_path, public_loopback):
    target = video_server.url("clip.mp4")
    with fetch(video_server.url(f"redirect?to={target}"), out_dir=tmp_path) as fetched:
        assert fetched.info.frame_count == 40


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/clip.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/clip.mp4",
    ],
)
def test_a_redirect_to_a_private_address_is_refused(video_server, tmp_path, public_loopback, target):
    url = video_server.url("redirect?to=" + target.format(port=video_server.port))
    with pytest.raises(media.PrivateAddressError):
        fetch(url, out_dir=tmp_path)
    assert_nothing_left(tmp_path)


def test_a_redirect_to_a_file_url_is_refused(video_server, tmp_path, public_loopback):
    with pytest.raises(media.UnsupportedURLError):
        fetch(video_server.url("redirect?to=file:///etc/passwd"), out_dir=tmp_path)
    assert_nothing_left(tmp_path)


def test_a_host_that_turns_private_after_the_first_check_is_refused_at_connect(
    video_server, tmp_path, public_loopback, monkeypatch
):
    """DNS rebinding: the address is checked again when connecting, and the connection uses that address."""
    answers = iter(["127.0.0.1"])

    def rebinding(host, port):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers, "127.0.0.2"), port))]

    monkeypatch.setattr(urlguard, "resolve", rebinding)
    before = len(video_server.requests)
    with pytest.raises(media.PrivateAddressError, match="127.0.0.2"):
        fetch(f"http://rebind.test:{video_server.port}/clip.mp4", out_dir=tmp_path)
    assert len(video_server.requests) == before
    assert_nothing_left(tmp_path)


def test_file_urls_are_refused():
    with pytest.raises(media.UnsupportedURLError, match="starting with file:"):
        fetch("file:///etc/passwd")


def test_a_server_that_trickles_bytes_cannot_hold_the_download_past_the_timeout(video_server, tmp_path):
    started = time.monotonic()
    with pytest.raises(media.DownloadError, match="longer than 1.5 s"):
        fetch(video_server.url("trickle.mp4"), out_dir=tmp_path, allow_private=True, timeout_s=1.5)
    assert time.monotonic() - started < 6
    assert_nothing_left(tmp_path)


def test_keep_moves_the_video_out_removes_the_temp_folder_and_never_overwrites(video_server, tmp_path):
    kept = []
    for _ in range(2):
        fetched = fetch(video_server.url("clip.mp4"), out_dir=tmp_path / "work", allow_private=True)
        kept.append(fetched.keep(tmp_path / "kept"))
    assert [p.name for p in kept] == ["clip.mp4", "clip-1.mp4"]
    assert all(p.is_file() and p.parent == tmp_path / "kept" for p in kept)
    assert_nothing_left(tmp_path / "work")


# ------------------------------------------------------------------------------------------------ https


@pytest.fixture(scope="module")
def tls_server(video_server, tmp_path_factory):
    """The same files over HTTPS on 127.0.0.1, with a self-signed certificate made by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(video_server.folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_https_downloads_go_through_the_same_guarded_connection(tls_server, tmp_path, monkeypatch):
    base, cert = tls_server
    make_context = guarded_ytdlp.GuardedRH._make_sslcontext

    def trusting(self, *args, **kwargs):
        context = make_context(self, *args, **kwargs)
        context.load_verify_locations(cert)
        return context

    monkeypatch.setattr(guarded_ytdlp.GuardedRH, "_make_sslcontext", trusting)
    with fetch(f"{base}/clip.mp4", out_dir=tmp_path, allow_private=True) as fetched:
        assert fetched.info.frame_count == 40
    with pytest.raises(media.PrivateAddressError):
        fetch(f"{base}/clip.mp4", out_dir=tmp_path)


def test_an_untrusted_certificate_is_a_download_error(tls_server, tmp_path):
    base, _ = tls_server
    with pytest.raises(media.DownloadError, match="certificate could not be verified"):
        fetch(f"{base}/clip.mp4", out_dir=tmp_path, allow_private=True)
    assert_nothing_left(tmp_path)
