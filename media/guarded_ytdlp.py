"""yt-dlp networking under our rules: the only request handler a fetch's YoutubeDL gets.

`GuardedYoutubeDL(params, state)` sends every request through `GuardedRH`: plain urllib with no proxy and
no cookie jar, http and https only; each connection made by `urlguard.connect` (every address the host
resolves to is checked, then the socket connects to that checked address, so DNS rebinding cannot slip
through); each redirect hop checked before urllib follows it; each response body charged to a byte budget
while it is read. A compressed body (gzip, deflate, even twice) is decoded as a stream whose decoded bytes
are charged too and may not pass `COMPRESSED_BODY_BYTES`, so a kilobyte that would inflate to gigabytes
stops at a cap (yt-dlp's own handler inflates a whole body in memory first). `FetchState` holds the limits and the first problem met, and a watchdog timer that shuts
the fetch's sockets down when its time is up. Nothing global is patched: these are subclasses used per fetch.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import socket
import threading
import urllib.parse
import urllib.request
import urllib.response
import zlib

import yt_dlp
from yt_dlp.networking import _urllib as ytdlp_urllib

from . import urlguard
from .errors import DownloadError, UnsupportedURLError, VideoError, too_large
from .limits import Limits

PAGE_ALLOWANCE_BYTES = 32 * 2**20  # web pages, player scripts and manifests read on top of the video itself
SCHEMES = ("http", "https")
DECODED = ("gzip", "x-gzip", "deflate")  # content codings we undo, as a stream; any other is refused
DECODE_CHUNK = 1 << 16  # compressed bytes read at a time
# Pages, scripts and manifests come compressed (a few MB unpacked); videos do not (yt-dlp asks for them as
# identity). So one compressed body may unpack to at most this much, whatever the video cap: yt-dlp reads a
# page whole into memory.
COMPRESSED_BODY_BYTES = 16 * 2**20
MAX_CODINGS = 2  # compressed twice at most (each layer is one more decoder in the chain)


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
        except UnsupportedURLError as e:
            raise self.fail(
                UnsupportedURLError(
                    "The link redirects to an address that is not an http or https web link; "
                    "paste a link to a video file or to a page that plays one."
                )
            ) from e
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


class _Inflated(io.RawIOBase):
    """One content coding (gzip or deflate) undone as a stream: at most `n` decoded bytes per read.

    The outer layer (`outer`; an inner layer of a body encoded twice feeds the next one) charges what it
    decodes to the fetch's budget and stops past `COMPRESSED_BODY_BYTES`. As yt-dlp does, only the first
    payload is decoded (trailing junk is ignored) and deflate may come with or without its zlib header.
    """

    def __init__(self, source, coding: str, state: FetchState, *, outer: bool) -> None:
        super().__init__()
        self._source, self._coding, self._state, self._outer = source, coding, state, outer
        self._decoded = 0
        self._decoder = None
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        while view.nbytes and not self._done:
            if not self._pending:
                self._pending = self._source.read(DECODE_CHUNK)
                if not self._pending:  # a truncated body ends where it ends; probing judges the file
                    self._done = True
                    break
            out = self._decode(view.nbytes)
            if out:
                if self._outer:
                    self._charge(len(out))
                view[: len(out)] = out
                return len(out)
        return 0

    def _charge(self, count: int) -> None:
        self._decoded += count
        if self._decoded > COMPRESSED_BODY_BYTES:
            raise self._state.fail(
                DownloadError(
                    f"The server's compressed answer unpacks to more than {COMPRESSED_BODY_BYTES >> 20} MB; "
                    "paste a link to a video file or to an ordinary web page."
                )
            )
        self._state.spend(count)

    def _decode(self, limit: int) -> bytes:
        try:
            if self._decoder is None:
                self._decoder = zlib.decompressobj(self._wbits(self._pending))
            out = self._decoder.decompress(self._pending, limit)
        except zlib.error as e:
            raise self._state.fail(
                DownloadError(
                    "The server sent a damaged compressed file; try again later or try another link."
                )
            ) from e
        self._pending = self._decoder.unconsumed_tail
        self._done = self._decoder.eof
        return out

    def _wbits(self, head: bytes) -> int:
        if self._coding != "deflate":
            return zlib.MAX_WBITS | 16  # gzip
        zlib_header = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _codings(headers) -> list[str]:
    """The response's content codings in the order they were applied (every header line), identity left out."""
    lines = headers.get_all("Content-Encoding") or []
    values = (part.strip().lower() for line in lines for part in line.split(","))
    return [v for v in values if v and v != "identity"]


class _GuardedHTTPHandler(ytdlp_urllib.HTTPHandler):
    """yt-dlp's urllib handler (headers), with our connections, counted responses and streamed decoding."""

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

    def http_response(self, req, resp):
        """Undo gzip/deflate (each layer, last applied first) as a stream; refuse any other coding."""
        codings = _codings(resp.headers)
        if not codings:
            return resp
        unknown = [c for c in codings if c not in DECODED]
        if unknown or len(codings) > MAX_CODINGS:
            shown = unknown[0][:20] if unknown else ", ".join(codings[: MAX_CODINGS + 1]) + ", …"
            raise self._state.fail(
                DownloadError(
                    f"The server sent the file compressed as {shown!r}, which cannot be unpacked here; try another link."
                )
            )
        stream = resp
        for depth, coding in enumerate(reversed(codings)):
            stream = _Inflated(stream, coding, self._state, outer=depth == len(codings) - 1)
        decoded = urllib.response.addinfourl(stream, resp.headers, resp.url, resp.code)
        decoded.msg = resp.msg
        return decoded

    https_response = http_response


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

    def _prepare_headers(self, request, headers) -> None:
        """Ask only for the codings `_GuardedHTTPHandler` decodes as a stream (yt-dlp also offers br)."""
        if headers.get("Accept-Encoding") != "identity":
            headers["Accept-Encoding"] = "gzip, deflate"

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
