"""yt-dlp networking under our rules: the only request handler a fetch's YoutubeDL gets.

`GuardedYoutubeDL(params, state)` sends every request through `GuardedRH`: plain urllib with no proxy and
no cookie jar, http and https only; each connection made by `urlguard.connect` (every address the host
resolves to is checked, then the socket connects to that checked address, so DNS rebinding cannot slip
through); each redirect hop checked before urllib follows it; each response body charged to a byte budget
while it is read. `FetchState` holds the limits and the first problem met, and a watchdog timer that shuts
the fetch's sockets down when its time is up. Nothing global is patched: these are subclasses used per fetch.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import urllib.parse
import urllib.request

import yt_dlp
from yt_dlp.networking import _urllib as ytdlp_urllib

from . import urlguard
from .errors import DownloadError, VideoError, too_large
from .limits import Limits

PAGE_ALLOWANCE_BYTES = 32 * 2**20  # web pages, player scripts and manifests read on top of the video itself
SCHEMES = ("http", "https")


class Refused(OSError):
    """Raised inside yt-dlp's networking to stop it; the typed reason waits in `FetchState.problem`."""


class FetchState:
    """What one fetch allows and what went wrong, shared by the connection, response and progress hooks.

    A watchdog timer shuts every socket of the fetch down when `timeout_s` is spent, so a server that
    trickles bytes cannot hold a request past the deadline.
    """

    def __init__(self, limits: Limits, timeout_s: float, allow_private: bool) -> None:
        self.limits, self.timeout_s, self.allow_private = limits, timeout_s, allow_private
        self.budget = limits.max_size_bytes + PAGE_ALLOWANCE_BYTES
        self.received = 0
        self.problem: VideoError | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._expired = False
        self._timer = threading.Timer(timeout_s, self.expire)
        self._timer.daemon = True

    def __enter__(self) -> FetchState:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def fail(self, error: VideoError) -> Refused:
        """Remember the first problem; returns an OSError for yt-dlp's networking to carry."""
        if self.problem is None:
            self.problem = error
        return Refused(error.message)

    def _timeout_error(self) -> DownloadError:
        return DownloadError(
            f"The download took longer than {self.timeout_s:g} s; try a shorter video or try later."
        )

    def expire(self) -> None:
        with self._lock:
            self._expired = True
            self.fail(self._timeout_error())
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def spend(self, count: int) -> None:
        self.received += count
        if self.received > self.budget:
            raise self.fail(too_large(self.limits.max_size_mb))

    def connect(self, address, timeout=None, source_address=None) -> socket.socket:
        """Connection factory for http.client: guarded by urlguard, watched by the timer."""
        if not isinstance(timeout, int | float):
            timeout = self.timeout_s
        try:
            sock = urlguard.connect(address, min(timeout, self.timeout_s), allow_private=self.allow_private)
        except VideoError as e:
            raise self.fail(e) from e
        with self._lock:
            if self._expired:
                sock.close()
                raise self.fail(self._timeout_error())
            self._sockets.append(
                sock.dup()
            )  # the dup survives TLS wrapping; shutting it down ends the connection
        return sock

    def check_hop(self, url: str) -> None:
        try:
            urlguard.check_url(url, allow_private=self.allow_private)
        except VideoError as e:
            raise self.fail(e) from e


class _CountingReader:
    """Wraps an HTTP response's socket file; every byte read is charged to the fetch's budget as it arrives."""

    def __init__(self, raw, state: FetchState) -> None:
        self._raw, self._state = raw, state

    def _allow(self, n: int | None) -> int:
        room = max(0, self._state.budget - self._state.received) + 1  # one byte past the cap trips it
        return room if n is None or n < 0 else min(n, room)

    def read(self, n: int | None = None) -> bytes:
        if n is not None and n >= 0:
            return self._charged(self._raw.read(self._allow(n)))
        parts = []
        while chunk := self._charged(self._raw.read(self._allow(1 << 16))):
            parts.append(chunk)
        return b"".join(parts)

    def read1(self, n: int = -1) -> bytes:
        return self._charged(self._raw.read1(self._allow(n if n >= 0 else 1 << 16)))

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        count = self._raw.readinto(view[: self._allow(len(view))]) or 0
        self._state.spend(count)
        return count

    def readline(self, limit: int = -1) -> bytes:
        return self._charged(self._raw.readline(limit))

    def _charged(self, data: bytes) -> bytes:
        self._state.spend(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _CountingHTTPResponse(http.client.HTTPResponse):
    def __init__(self, sock, *args, state: FetchState, **kwargs) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = _CountingReader(self.fp, state)


class _GuardedHTTPHandler(ytdlp_urllib.HTTPHandler):
    """yt-dlp's urllib handler (compression, headers), with our connections and counted responses."""

    def __init__(self, state: FetchState, **kwargs) -> None:
        super().__init__(**kwargs)
        self._state = state

    def _connection(self, base, *args, **kwargs):
        conn = base(*args, **kwargs)
        conn._create_connection = self._state.connect
        conn.response_class = functools.partial(_CountingHTTPResponse, state=self._state)
        return conn

    def http_open(self, req):
        return self.do_open(functools.partial(self._connection, http.client.HTTPConnection), req)

    def https_open(self, req):
        conn = functools.partial(self._connection, http.client.HTTPSConnection)
        return self.do_open(conn, req, context=self._context)


class _GuardedRedirectHandler(ytdlp_urllib.RedirectHandler):
    def __init__(self, state: FetchState) -> None:
        super().__init__()
        self._state = state

    def http_error_302(self, req, fp, code, msg, headers):
        """Check the next hop (scheme and every address) before urllib looks at it."""
        location = headers.get("location") or headers.get("uri")
        if location:
            self._state.check_hop(urllib.parse.urljoin(req.full_url, location))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class GuardedRH(ytdlp_urllib.UrllibRH):
    """yt-dlp request handler: http(s) only, no proxy, no cookie jar, guarded connections and redirects."""

    _SUPPORTED_URL_SCHEMES = SCHEMES
    RH_NAME = "guarded-urllib"

    def __init__(self, *, state: FetchState, **kwargs) -> None:
        kwargs["enable_file_urls"] = False
        super().__init__(**kwargs)
        self._state = state

    def _create_instance(self, proxies, cookiejar, legacy_ssl_support=None):
        opener = urllib.request.OpenerDirector()
        context = self._make_sslcontext(legacy_ssl_support=legacy_ssl_support)
        for handler in (
            _GuardedHTTPHandler(self._state, context=context),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _GuardedRedirectHandler(self._state),
            urllib.request.UnknownHandler(),
        ):
            opener.add_handler(handler)
        opener.addheaders = []
        return opener


class GuardedYoutubeDL(yt_dlp.YoutubeDL):
    """A YoutubeDL whose every request goes through `GuardedRH` (per instance; nothing global is patched)."""

    def __init__(self, params: dict, state: FetchState) -> None:
        self._fetch_state = state
        super().__init__(params)

    @functools.cached_property
    def _request_director(self):
        return self.build_request_director([functools.partial(GuardedRH, state=self._fetch_state)])
