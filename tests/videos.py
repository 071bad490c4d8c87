"""Generate small test videos whose frames encode their own index, so tests can check WHICH frames came back.

Each frame shows a bar code of its index: the top three quarters are `bits` vertical bars (most significant
bit on the left, white = 1, black = 0), wide enough to survive compression and scaling; the bottom quarter
is red on the left and blue on the right, so tests can tell which way up a frame is. `read_index` reads the
bar code back. Everything is encoded in-process with PyAV (no subprocess), in a few tens of milliseconds.

Others may import `make_clip(path, seconds, fps=..., size=(w, h))` for end-to-end tests.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder prints its banner to stderr otherwise

BITS = 10
RED, BLUE = (220, 30, 30), (30, 30, 220)
WHITE, BLACK = 235, 16


def bits_for(width: int) -> int:
    """Bars that fit: at least 4 pixels each, at most BITS."""
    return max(1, min(BITS, width // 4))


def index_frame(index: int, width: int, height: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB frame showing `index` as a bar code over an orientation marker."""
    bits = bits_for(width)
    img = np.zeros((height, width, 3), dtype=np.uint8)
    top = max(1, height * 3 // 4)
    for b in range(bits):
        x0, x1 = b * width // bits, (b + 1) * width // bits
        on = (index >> (bits - 1 - b)) & 1
        img[:top, x0:x1] = WHITE if on else BLACK
    img[top:, : width // 2] = RED
    img[top:, width // 2 :] = BLUE
    return img


def read_index(img: np.ndarray, bits: int | None = None) -> int:
    """Read the bar code of an upright frame (any size): the inverse of `index_frame`."""
    height, width = img.shape[:2]
    bits = bits or bits_for(width)
    grey = img[: max(1, height * 3 // 4)].astype(np.float64).mean(axis=2)
    band = grey[height // 8 : max(height // 8 + 1, height * 5 // 8)]
    value = 0
    for b in range(bits):
        x0, x1 = b * width / bits, (b + 1) * width / bits
        lo, hi = int(x0 + (x1 - x0) / 4), max(int(x0 + (x1 - x0) / 4) + 1, int(x1 - (x1 - x0) / 4))
        value = value << 1 | int(band[:, lo:hi].mean() > 128)
    return value


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Undo a display rotation (degrees counter-clockwise) so `read_index` can read the frame."""
    return np.rot90(img, -(rotation // 90)) if rotation else img


def marker_side(img: np.ndarray) -> str:
    """Where the red half of the marker is in a displayed frame: 'bottom-left', 'top-left', ..."""
    h, w = img.shape[:2]
    red = (img[..., 0].astype(int) - img[..., 2].astype(int)) > 100
    ys, xs = np.nonzero(red)
    vertical = "bottom" if ys.mean() > h / 2 else "top"
    horizontal = "right" if xs.mean() > w / 2 else "left"
    return f"{vertical}-{horizontal}"


def write_video(
    path: str | os.PathLike,
    frames: int,
    *,
    fps: float = 10,
    size: tuple[int, int] = (96, 64),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    pts_ms: Sequence[int] | None = None,
    rotation: int | None = None,
    options: dict | None = None,
    container_options: dict | None = None,
    audio: bool = False,
    draw: Callable[[int, int, int], np.ndarray] = index_frame,
) -> Path:
    """Encode `frames` index frames to `path` (container from the extension). Returns the path.

    pts_ms: presentation times in milliseconds (variable frame rate); default i * 1000 / fps.
    gop: keyframe interval in frames. rotation: display rotation, degrees counter-clockwise.
    """
    path = Path(path)
    width, height = size
    times = list(pts_ms) if pts_ms is not None else [round(i * 1000 / fps) for i in range(frames)]
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(
            codec, rate=Fraction(fps).limit_denominator(1000), options=_codec_options(codec, options)
        )
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = Fraction(1, 1000)
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = _add_audio(out) if audio else None
        for i, ms in enumerate(times):
            frame = av.VideoFrame.from_ndarray(draw(i, width, height), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None:
            _write_tone(out, sound, seconds=(times[-1] + 1000 / fps) / 1000 if times else 0.1)
    return path


def _codec_options(codec: str, options: dict | None) -> dict:
    defaults = {
        "libx264": {"preset": "veryfast", "crf": "14", "x264-params": "scenecut=0"},
        "libx265": {"preset": "ultrafast", "crf": "14", "x265-params": "log-level=error"},
        "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"},
        "libsvtav1": {"preset": "12", "crf": "25"},
        "mpeg4": {"qscale": "3"},
    }.get(codec, {})
    return {**defaults, **(options or {})}


def _add_audio(out):
    sound = out.add_stream("aac", rate=16000)
    sound.layout = "mono"
    return sound


def _write_tone(out, sound, *, seconds: float) -> None:
    rate, block = 16000, 1024
    total = max(block, int(seconds * rate))
    t = np.arange(total) / rate
    wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, total - block + 1, block):
        frame = av.AudioFrame.from_ndarray(wave[None, start : start + block], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        out.mux(sound.encode(frame))
    out.mux(sound.encode())


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> Path:
    """An AAC-in-M4A file with a tone and no video track."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        _write_tone(out, _add_audio(out), seconds=seconds)
    return path


def truncate(src: str | os.PathLike, dst: str | os.PathLike, fraction: float) -> Path:
    """Copy the first `fraction` of the bytes of `src` to `dst` (a download cut short)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def write_garbage(path: str | os.PathLike, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a video-looking name."""
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return Path(path)


def make_clip(
    path: str | os.PathLike, seconds: float, fps: float = 10, size: tuple[int, int] = (96, 64)
) -> Path:
    """A small H.264 MP4 of index frames lasting `seconds`: the quick clip for end-to-end tests."""
    return write_video(path, max(1, round(seconds * fps)), fps=fps, size=size, gop=int(fps * 2))


# ------------------------------------------------------------------------------------- the catalogue

VFR_PTS_MS = [i * 100 for i in range(10)] + [1000 + i * 250 for i in range(10)]  # 10 fps, then 4 fps

# name -> how to make it. Index frames unless said otherwise; small and short so all of them take < 1 s.
CATALOGUE: dict[str, Callable[[Path], Path]] = {
    "h264.mp4": lambda p: write_video(p, 40, gop=10),
    "h264_long_gop.mp4": lambda p: write_video(p, 200, fps=20, gop=100),
    "h264.ts": lambda p: write_video(p, 40, gop=10),  # MPEG-TS: the first frame's pts is not 0
    "vp9.webm": lambda p: write_video(p, 40, codec="libvpx-vp9", gop=10),
    "av1.mkv": lambda p: write_video(p, 40, codec="libsvtav1", gop=10),
    "mpeg4.avi": lambda p: write_video(p, 40, codec="mpeg4", gop=10),
    "hevc10.mp4": lambda p: write_video(p, 40, codec="libx265", pix_fmt="yuv420p10le", gop=10),
    "vfr.mp4": lambda p: write_video(p, len(VFR_PTS_MS), pts_ms=VFR_PTS_MS),
    "rot90.mp4": lambda p: write_video(p, 20, rotation=90),
    "rot-90.mp4": lambda p: write_video(p, 20, rotation=-90),
    "tiny.mp4": lambda p: write_video(p, 5, size=(16, 16)),
    "odd.webm": lambda p: write_video(p, 8, size=(33, 17), codec="libvpx-vp9"),
    "odd444.mp4": lambda p: write_video(p, 8, size=(45, 31), pix_fmt="yuv444p"),
    "single.mp4": lambda p: write_video(p, 1),
    "with_audio.mp4": lambda p: write_video(p, 20, audio=True),
    "big_frames.mp4": lambda p: write_video(p, 4, size=(1280, 720), gop=2),
    "faststart.mp4": lambda p: write_video(
        p, 60, size=(160, 96), gop=10, container_options={"movflags": "faststart"}
    ),
    "audio_only.m4a": lambda p: write_audio_only(p, seconds=1.0),
    "garbage.mp4": lambda p: write_garbage(p),
    "empty.mp4": lambda p: (p.write_bytes(b""), p)[1],
}

# derived from another entry: (source, how)
DERIVED: dict[str, tuple[str, Callable[[Path, Path], Path]]] = {
    "truncated.mp4": ("faststart.mp4", lambda src, dst: truncate(src, dst, 0.5)),
    "truncated_no_index.mp4": ("h264.mp4", lambda src, dst: truncate(src, dst, 0.6)),
    "truncated.webm": ("vp9.webm", lambda src, dst: truncate(src, dst, 0.5)),
    "corrupt_header.mp4": ("h264.mp4", lambda src, dst: _zero_after(src, dst, 32)),
}


def _zero_after(src: Path, dst: Path, offset: int) -> Path:
    data = bytearray(Path(src).read_bytes())
    data[offset:] = bytes(len(data) - offset)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


class VideoSet:
    """Makes catalogue videos on first use inside `folder` and hands back their paths."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def __getitem__(self, name: str) -> Path:
        path = self.folder / name
        if path.exists():
            return path
        if name in DERIVED:
            source, how = DERIVED[name]
            return how(self[source], path)
        return CATALOGUE[name](path)

    def missing(self) -> Path:
        return self.folder / "does-not-exist.mp4"


# --------------------------------------------------------------------------------- a local web server


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from the server's folder, plus a few made-up pages (see VideoServer)."""

    server: VideoServer._Server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.owner.requests.append(url.path)
        self.server.owner.headers.append(dict(self.headers))
        route = getattr(self, "_route_" + url.path.strip("/").replace(".", "_").replace("-", "_"), None)
        if route is not None:
            route(query)
        else:
            super().do_GET()

    def _html(self, body: str) -> None:
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Set-Cookie", "session=secret; Path=/")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route_page_html(self, query: dict) -> None:
        self._html(
            f'<html><body><h1>A clip</h1><video src="{query.get("src", "clip.mp4")}" controls></video></body></html>'
        )

    def _route_two_html(self, query: dict) -> None:
        self._html('<html><body><video src="clip.mp4"></video><video src="long.mp4"></video></body></html>')

    def _route_novideo_html(self, query: dict) -> None:
        self._html("<html><head><title>Nothing here</title></head><body><p>Just text.</p></body></html>")

    def _route_redirect(self, query: dict) -> None:
        self.send_response(302)
        self.send_header("Location", query["to"])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _route_stream_mp4(self, query: dict) -> None:
        """`size` bytes of zeros with no Content-Length: the client only learns the size by reading."""
        size, chunk = int(query.get("size", 16 * 2**20)), b"\0" * 65536
        self.send_response(200)
        self.send_header("Content-Type", query.get("type", "video/mp4"))
        self.end_headers()
        sent = 0
        try:
            while sent < size:
                self.wfile.write(chunk[: size - sent])
                sent += min(len(chunk), size - sent)
                self.server.owner.bytes_sent["stream.mp4"] = sent
        except OSError:
            pass

    def _route_trickle_mp4(self, query: dict) -> None:
        """Announces a small video, then sends one byte every 0.2 s."""
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


class VideoServer:
    """A threaded http.server on 127.0.0.1 serving `folder`, with made-up routes for URL tests:

    /page.html?src=NAME  a page with one <video> tag     /two.html       a page with two videos
    /novideo.html        a page without video           /redirect?to=U  302 to U
    /stream.mp4?size=N&type=T  N bytes of type T (default video/mp4), no Content-Length
    /trickle.mp4         one byte every 0.2 s
    `requests` lists the paths asked for, `headers` their request headers (pages set a cookie), and
    `bytes_sent["stream.mp4"]` what the stream route wrote.
    """

    class _Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        owner: VideoServer

    def __init__(self, folder: str | os.PathLike) -> None:
        handler = functools.partial(_Handler, directory=str(folder))
        self.folder = Path(folder)
        self._server = self._Server(("127.0.0.1", 0), handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bytes_sent: dict[str, int] = {}
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> VideoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
