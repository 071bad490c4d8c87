"""Which URLs we agree to fetch: http(s) only, and only hosts whose every address is public.

`video_source` is where a typed video field is read: an http(s) link, or (the CLI only) a local path.

The address check runs three times for a download: on the URL before yt-dlp sees it (a clear error, early),
on every redirect hop, and when each socket connects (`connect`, which connects to the very address it
checked, so a DNS answer that changes between check and use cannot slip a private address in).
Numeric spellings (`http://2130706433/`, `http://0x7f.1/`, `http://[::ffff:127.0.0.1]/`) are resolved by
the system resolver exactly as the connection would resolve them, then checked as addresses.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from .errors import DownloadError, PrivateAddressError, UnsupportedURLError

ALLOWED_SCHEMES = ("http", "https")
ACCEPTED = "paste a link that starts with https:// or http://"
NOT_A_LINK = (
    "Only web links are accepted here; paste a link that starts with https:// or http://, "
    "or upload the video file."
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo client, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_forbidden(ip: IPAddress) -> bool:
    """True for loopback, private, link-local, multicast, reserved, unspecified and other non-global addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and is_forbidden(inner):
            return True
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def _scheme(text: str) -> str | None:
    """The scheme of `text` ('https', 'data', 'file', ...), or None when it has none (a path, a bare host)."""
    found = _SCHEME.match(text)
    return found.group(1).lower() if found else None


def parse_url(url: str) -> SplitResult:
    """Split an http(s) URL with a host; anything else raises UnsupportedURLError (one sentence)."""
    if not isinstance(url, str) or not url.strip():
        raise UnsupportedURLError("The link is empty; paste an http or https link to a video.")
    url = url.strip()
    scheme = _scheme(url)
    if scheme is None:
        raise UnsupportedURLError(NOT_A_LINK)
    if scheme not in ALLOWED_SCHEMES:
        raise UnsupportedURLError(f"Links starting with {scheme[:20]}: cannot be used; {ACCEPTED}.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as e:  # unbalanced [ ] around an IPv6 address, a bad port, odd characters
        raise UnsupportedURLError(
            "This link is not a valid web address (check its port and any [ ] around an IPv6 address); "
            "copy it again from the browser's address bar."
        ) from e
    if not parts.hostname:
        raise UnsupportedURLError("The link has no host name; paste a full http or https link.")
    return parts


def video_source(text: str, *, allow_paths: bool = False) -> str | Path:
    """What a video field names: an http(s) link, or a local file only where `allow_paths` (the CLI).

    The page's URL box, the API and a run card's `source_url` pass allow_paths=False: there, text without a
    scheme, `data:`, `javascript:`, `file:` and every other scheme, absolute and relative paths are all
    refused (UnsupportedURLError naming what is accepted), so a visitor cannot open the server's own files.
    Returns the stripped link (a str) or a Path. Hosts are not resolved here (`check_url` does it when
    fetching).
    """
    if allow_paths and isinstance(text, str) and text.strip():
        candidate = text.strip()
        if _scheme(candidate) is None or Path(candidate).is_file():  # a file may have ':' in its name
            return Path(candidate)
    parse_url(text)
    return text.strip()


def default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)


def resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo for a TCP connection; an unknown host raises DownloadError."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise DownloadError(f"The host {host!r} could not be found; check the link.") from e


def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[tuple]:
    """Resolve `host` and refuse it if ANY of its addresses is forbidden (unless allow_private)."""
    infos = resolve(host, port)
    if not allow_private:
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if is_forbidden(ip):
                raise PrivateAddressError(
                    f"The link's host {host!r} leads to {ip}, a private or local network address; "
                    "only public sites can be used."
                )
    return infos


def check_url(url: str, *, allow_private: bool = False) -> SplitResult:
    """Validate scheme and host of `url`; returns its parts. Raises UnsupportedURLError or PrivateAddressError."""
    parts = parse_url(url)
    checked_addresses(parts.hostname, default_port(parts), allow_private=allow_private)
    return parts


def connect(address: tuple[str, int], timeout: float | None, *, allow_private: bool) -> socket.socket:
    """Open a TCP connection to (host, port), only to addresses that passed `checked_addresses`."""
    host, port = address
    last_error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, sockaddr in checked_addresses(host, port, allow_private=allow_private):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            last_error = e
    raise last_error
