"""Which URLs we agree to fetch: http(s) only, and only hosts whose every address is public.

The address check runs three times for a download: on the URL before yt-dlp sees it (a clear error, early),
on every redirect hop, and when each socket connects (`connect`, which connects to the very address it
checked, so a DNS answer that changes between check and use cannot slip a private address in).
Numeric spellings (`http://2130706433/`, `http://0x7f.1/`, `http://[::ffff:127.0.0.1]/`) are resolved by
the system resolver exactly as the connection would resolve them, then checked as addresses.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from .errors import DownloadError, PrivateAddressError, UnsupportedURLError

ALLOWED_SCHEMES = ("http", "https")
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


def parse_url(url: str) -> SplitResult:
    """Split an http(s) URL with a host; anything else raises UnsupportedURLError."""
    if not isinstance(url, str) or not url.strip():
        raise UnsupportedURLError("The link is empty; paste an http or https link to a video.")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        shown = f"{parts.scheme}://" if parts.scheme else "this kind of"
        raise UnsupportedURLError(
            f"Only http and https links can be used, not {shown} links; paste a web link."
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as e:
        raise UnsupportedURLError("The link's port number is not valid; check the link.") from e
    if not parts.hostname:
        raise UnsupportedURLError("The link has no host name; paste a full http or https link.")
    return parts


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
