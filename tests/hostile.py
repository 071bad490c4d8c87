"""Helpers of the hostile-input suite (tests/test_hostile_*.py): a hostile web server on 127.0.0.1, a way to
measure a child process's peak memory, and the one-sentence check.

`HostileServer` serves what an attacker's site would: compression bombs, bodies in codings we do not read,
damaged compressed bodies, long redirect chains and loops, redirects to other schemes. Everything stays on
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import io
import os
import random
import subprocess
import threading
import urllib.parse
import zlib
from pathlib import Path

BOMB_BYTES = 256 * 2**20  # what the bomb unpacks to: far past every cap, from about a kilobyte on the wire


def gzip_stream(size: int, chunk: int = 1 << 20) -> bytes:
    """`size` zero bytes gzipped, compressed chunk by chunk so the zeros never sit in memory at once."""
    compressor, zeros = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16), bytes(chunk)
    parts = [compressor.compress(zeros) for _ in range(size // chunk)]
    return b"".join([*parts, compressor.flush()])


def encode(data: bytes, codings: list[str]) -> bytes:
    """`data` with each coding applied in turn: gzip, deflate (zlib-wrapped) or rawdeflate (no header)."""
    for coding in codings:
        if coding == "gzip":
            data = gzip.compress(data)
        elif coding == "deflate":
            data = zlib.compress(data)
        else:
            raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            data = raw.compress(data) + raw.flush()
    return data


def png_bytes() -> bytes:
    """A 64x48 PNG of noise (a few kB: cutting it anywhere past the header leaves it undecodable)."""
    from PIL import Image

    rng = random.Random(0)
    image = Image.frombytes("RGB", (64, 48), bytes(rng.randrange(256) for _ in range(64 * 48 * 3)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: HostileServer._Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.owner.requests.append(url.path)
        getattr(self, "_route_" + url.path.strip("/").replace("-", "_").replace(".", "_"), self._missing)(
            query
        )

    def _send(self, body: bytes, *, kind: str = "video/mp4", coding: str | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if coding:
            self.send_header("Content-Encoding", coding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _missing(self, query: dict) -> None:
        self.send_error(404)

    def _route_bomb(self, query: dict) -> None:
        """The bomb twice gzipped (about 1 kB), as a video (default) or as `type`."""
        self._send(self.server.owner.bomb, kind=query.get("type", "video/mp4"), coding="gzip, gzip")

    def _route_encoded(self, query: dict) -> None:
        """The clip, encoded with `enc` (comma-separated, in the order applied); the header says `says`."""
        codings = query["enc"].split(",")
        said = query.get("says") or ", ".join("deflate" if c == "rawdeflate" else c for c in codings)
        self._send(encode(self.server.owner.clip.read_bytes(), codings), coding=said)

    def _route_broken(self, query: dict) -> None:
        self._send(b"\x1f\x8b\x08\x00" + os.urandom(2000), coding="gzip")

    def _route_hop(self, query: dict) -> None:
        """`/hop?n=N`: N redirects, then the clip."""
        left = int(query["n"])
        self._redirect(f"/hop?n={left - 1}" if left > 0 else "/clip")

    def _route_loop(self, query: dict) -> None:
        self._redirect("/loop")

    def _route_redirect(self, query: dict) -> None:
        self._redirect(query["to"])

    def _route_stream_m3u8(self, query: dict) -> None:
        """A video offered only as an HLS stream (a playlist of one segment)."""
        playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n/clip\n#EXT-X-ENDLIST\n"
        self._send(playlist, kind="application/vnd.apple.mpegurl")

    def _route_frame_png(self, query: dict) -> None:
        """A small PNG, cut after `cut` bytes when given (what a file truncated by a concurrent write looks like)."""
        data = png_bytes()
        self._send(data[: int(query.get("cut", len(data)))], kind="image/png")

    def _route_clip(self, query: dict) -> None:
        self._send(self.server.owner.clip.read_bytes())


class HostileServer:
    """A threaded server on 127.0.0.1 with the routes of `_Handler`; `requests` lists the paths asked for."""

    class _Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        owner: HostileServer

    def __init__(self, clip: Path, bomb: bytes) -> None:
        self.clip, self.bomb = Path(clip), bomb
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.requests: list[str] = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def run_measured(
    args: list[str], *, timeout_s: float = 60, cwd: str | Path | None = None
) -> tuple[int, str, str, int]:
    """Run a child process; returns (exit code, stdout, stderr, its peak resident memory in bytes).

    The peak comes from the kernel's own accounting of that child (`os.wait4`), so nothing runs inside it.
    """
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env, text=True)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        out, err = proc.stdout.read(), proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        proc.stdout.close()
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, err, usage.ru_maxrss * 1024


def is_one_sentence(message: str) -> bool:
    """One line, no traceback, no internals: what a visitor may be shown."""
    text = str(message).strip()
    return (
        bool(text)
        and "\n" not in text
        and "Traceback" not in text
        and "Error:" not in text
        and text.count(". ") == 0
        and text[-1] in ".!?"
    )
