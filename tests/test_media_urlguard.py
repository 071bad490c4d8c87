"""URL safety without a server: schemes, and every spelling of a private address (resolved locally, no DNS)."""

from __future__ import annotations

import ipaddress

import pytest

import media
from media import urlguard
from media.sources import choose_format

PRIVATE_HOSTS = [
    "127.0.0.1",
    "127.1",
    "2130706433",  # decimal 127.0.0.1
    "0x7f.1",  # hex
    "0x7f000001",
    "017700000001",  # octal
    "localhost",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "[fe80::1]",  # link-local
    "[fc00::1]",  # unique local
    "[ff02::1]",  # multicast
    "[2002:7f00:1::]",  # 6to4 around 127.0.0.1
    "[64:ff9b::a00:1]",  # NAT64 around 10.0.0.1
]


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_private_and_local_addresses_are_refused_in_every_spelling(host):
    with pytest.raises(media.PrivateAddressError) as caught:
        urlguard.check_url(f"http://{host}:8080/video.mp4")
    assert "private or local network address" in caught.value.message


@pytest.mark.parametrize("ip", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "2a00:1450:4001::200e"])
def test_public_addresses_are_allowed(ip):
    assert not urlguard.is_forbidden(ipaddress.ip_address(ip))


def test_allow_private_lifts_the_address_check():
    assert urlguard.check_url("http://127.0.0.1:1/x.mp4", allow_private=True).hostname == "127.0.0.1"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/video.mp4",
        "gopher://127.0.0.1/",
        "data:video/mp4;base64,AAAA",
        "javascript:alert(1)",
        "example.com/video.mp4",
        "",
        "   ",
        "http://",
        "http://example.com:99999/x",
    ],
)
def test_only_http_and_https_links_with_a_host_are_accepted(url):
    with pytest.raises(media.UnsupportedURLError):
        urlguard.check_url(url)


def test_userinfo_does_not_hide_the_real_host():
    with pytest.raises(media.PrivateAddressError):
        urlguard.check_url("http://example.com@127.0.0.1/video.mp4")


def test_connect_refuses_before_opening_a_socket(monkeypatch):
    def no_socket(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(urlguard.socket, "socket", no_socket)
    with pytest.raises(media.PrivateAddressError):
        urlguard.connect(("127.0.0.1", 9), 1.0, allow_private=False)


def test_a_host_with_one_private_address_among_public_ones_is_refused(monkeypatch):
    def answers(host, port, type=0):
        return [(2, 1, 6, "", ("93.184.215.14", port)), (2, 1, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(urlguard.socket, "getaddrinfo", answers)
    with pytest.raises(media.PrivateAddressError, match="10.0.0.7"):
        urlguard.check_url("https://mixed.example/video.mp4")


def test_unknown_host_is_a_download_error(monkeypatch):
    def fails(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(urlguard.socket, "getaddrinfo", fails)
    with pytest.raises(media.DownloadError, match="could not be found"):
        urlguard.check_url("https://no-such-host.invalid/video.mp4")


# ------------------------------------------------------------------------------------ format choice


def fmt(fid, height=None, protocol="https", vcodec="avc1", acodec="none", size=None):
    return {
        "format_id": fid,
        "height": height,
        "protocol": protocol,
        "vcodec": vcodec,
        "acodec": acodec,
        "filesize": size,
    }


def test_format_choice_prefers_the_tallest_at_most_max_height():
    formats = [fmt("a", 360, acodec="mp4a"), fmt("b", 720), fmt("c", 1080), fmt("d", 480)]
    chosen, _ = choose_format(formats, max_height=720, max_bytes=10**9)
    assert chosen["format_id"] == "b"


def test_format_choice_falls_back_to_the_smallest_taller_one():
    chosen, _ = choose_format([fmt("c", 1080), fmt("e", 2160)], max_height=720, max_bytes=10**9)
    assert chosen["format_id"] == "c"


def test_format_choice_skips_streams_audio_and_oversized_files():
    formats = [
        fmt("hls", 720, protocol="m3u8_native"),
        fmt("dash", 720, protocol="http_dash_segments"),
        fmt("audio", None, vcodec="none", acodec="opus"),
        fmt("huge", 720, size=10**10),
    ]
    chosen, too_big = choose_format(formats, max_height=720, max_bytes=10**9)
    assert chosen is None and too_big
    chosen, _ = choose_format([*formats, fmt("ok", 240)], max_height=720, max_bytes=10**9)
    assert chosen["format_id"] == "ok"
