"""Opening a video file with PyAV safely, and reading its packet index without decoding.

Everything here is shared by `probe` and `sample`:
- `check_file` turns missing, empty and oversized files into typed errors before FFmpeg sees them;
- `open_video` opens with a demuxer allow-list and local files only, so a crafted upload (an HLS playlist
  or an ffconcat script renamed to .mp4) cannot make FFmpeg read other files or URLs;
- `scan_packets` walks the packets of the video stream once (no decoding, ~0.1 s for 10 min of video) and
  returns their presentation timestamps and keyframe flags: the ground truth for frame counts, the duration
  of truncated files, source frame indices and where seeking is cheap.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    EmptyFileError,
    NotAVideoError,
    NoVideoStreamError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from .limits import Limits

PathLike = str | os.PathLike

# Demuxers we accept (FFmpeg names). Playlist and script demuxers (hls, concat, ...) are left out on purpose.
ALLOWED_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf,mxf,ivf,obu,h264,hevc,m4v,nut,"
    "mp3,wav,flac,aac"
)
_OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ALLOWED_DEMUXERS}

# (offset, bytes) signatures of video containers: a file that starts like one but fails to open is corrupt,
# anything else that fails to open is simply not a video.
_CONTAINER_SIGNATURES = (
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"\x1a\x45\xdf\xa3"),
    (0, b"RIFF"),
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"DKIF"),
    (0, b"\x00\x00\x01\xba"),
)


# What demuxing a damaged file can raise: FFmpeg errors, and IndexError from PyAV when a stream appears
# mid-file (MPEG-TS allows it; found by tests/test_fuzz_media.py). Either way the readable part ends there.
DEMUX_ERRORS = (av.error.FFmpegError, IndexError)


class Deadline:
    """A wall-clock budget; `check()` raises DecodeTimeoutError once it is spent (None: no budget)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def check(self) -> None:
        if self._end is not None and time.monotonic() > self._end:
            raise DecodeTimeoutError(
                f"Reading the video took longer than {self.seconds:g} s; "
                "ask for fewer frames or use a shorter video."
            )


def check_file(path: PathLike, limits: Limits | None = None) -> Path:
    """Return `path` as a Path if it names a non-empty regular file within `limits.max_size_mb`."""
    p = Path(path)
    if not p.exists():
        raise VideoNotFoundError(
            f"The video file {p.name!r} was not found; check the path or upload it again."
        )
    if p.is_dir():
        raise NotAVideoError(f"{p.name!r} is a folder, not a video; upload a video file.")
    if not p.is_file():
        raise NotAVideoError(
            f"{p.name!r} is a device or another special file, not a video; give a video file."
        )
    size = p.stat().st_size
    if size == 0:
        raise EmptyFileError()
    if limits is not None and size > limits.max_size_bytes:
        raise VideoTooLargeError(
            f"The file is {size / 2**20:.0f} MB and the limit is {limits.max_size_mb:g} MB; "
            "choose a smaller file or a lower resolution."
        )
    return p


def _looks_like_container(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(188)
            ts_sync = f.read(1)
    except OSError:
        return False
    if head[:1] == b"\x47" and ts_sync == b"\x47":
        return True
    return any(head[off : off + len(sig)] == sig for off, sig in _CONTAINER_SIGNATURES)


# (offset, bytes, what it is) of image formats people mistake for videos: they get a sentence of their own.
_IMAGE_SIGNATURES = (
    (0, b"GIF8", "an animated GIF image"),
    (0, b"\x89PNG", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (8, b"WEBP", "a WebP image"),
)
ACCEPTED_FORMATS = "MP4, WebM, MKV, MOV or AVI"


def _image_kind(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    return next((kind for off, sig, kind in _IMAGE_SIGNATURES if head[off : off + len(sig)] == sig), None)


def _open_error(path: Path) -> Exception:
    image = _image_kind(path)
    if image is not None:
        return NotAVideoError(
            f"This file is {image}, not a video; convert it to a video and upload an {ACCEPTED_FORMATS} file."
        )
    if _looks_like_container(path):
        return CorruptVideoError()
    return NotAVideoError()


def open_container(path: PathLike) -> av.container.InputContainer:
    """Open a local file for reading (caller closes it); failures become NotAVideoError or CorruptVideoError."""
    p = check_file(path)
    try:
        return av.open(str(p), mode="r", options=dict(_OPEN_OPTIONS), metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeError, ValueError) as e:
        raise _open_error(p) from e


@contextlib.contextmanager
def open_video(path: PathLike) -> Iterator[av.container.InputContainer]:
    """`open_container` as a context manager."""
    container = open_container(path)
    try:
        yield container
    finally:
        container.close()


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first real video stream (cover art in audio files does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if container.streams.audio:
        raise NoVideoStreamError()
    raise NotAVideoError()


@dataclass(frozen=True)
class PacketIndex:
    """Timing of every video frame that demuxes whole, in presentation order.

    pts: [N] int64, sorted and unique, in units of `time_base`.
    keyframe: [N] bool, True where decoding can start.
    end_pts: when the last frame stops showing (pts units), so duration = (end_pts - pts[0]) * time_base.
    """

    pts: np.ndarray
    keyframe: np.ndarray
    time_base: Fraction
    end_pts: int

    def __len__(self) -> int:
        return len(self.pts)

    @property
    def times(self) -> np.ndarray:
        """[N] float64 seconds since the first frame."""
        return self.seconds(self.pts)

    @property
    def duration(self) -> float:
        return float((self.end_pts - int(self.pts[0])) * self.time_base)

    def seconds(self, pts: np.ndarray | int) -> np.ndarray | float:
        """Seconds since the first frame for one pts or an array of them."""
        return (np.asarray(pts, dtype=np.float64) - float(self.pts[0])) * float(self.time_base)

    def position(self, pts: int) -> int:
        """Index of the frame showing at `pts` (the last frame whose pts <= pts), 0 if before the first."""
        return max(0, int(np.searchsorted(self.pts, pts, side="right")) - 1)


def _frame_step(pts: np.ndarray, last_duration: int, stream: av.video.stream.VideoStream) -> int:
    """How long (pts units) the last frame shows: its packet duration, else the typical frame gap."""
    if last_duration > 0:
        return last_duration
    if len(pts) > 1:
        return max(1, int(np.median(np.diff(pts))))
    rate = stream.average_rate or stream.guessed_rate
    if rate and stream.time_base:
        return max(1, round(1 / (rate * stream.time_base)))
    return 1


def _demux(container: av.container.InputContainer, stream, deadline: Deadline) -> Iterator[av.Packet]:
    """Demux the stream's packets; a container damaged mid-way simply ends there."""
    packets = container.demux(stream)
    count = 0
    while True:
        count += 1
        if count % 256 == 1:
            deadline.check()
        try:
            packet = next(packets)
        except StopIteration:
            return
        except DEMUX_ERRORS:
            return
        yield packet


def _decode_packet(packet: av.Packet) -> list:
    """Frames from one packet; a packet the decoder rejects yields none (its frame is lost, not fatal)."""
    try:
        return packet.decode()
    except av.error.FFmpegError:
        return []


def scan_packets(
    container: av.container.InputContainer, stream, deadline: Deadline
) -> tuple[PacketIndex, av.VideoFrame | None]:
    """Read every packet of `stream` once; also decode until the first frame, returned for its rotation.

    Packets flagged corrupt (cut short by a truncated file) or discarded (edit lists) are left out, so the
    index describes the frames that really decode. Raises CorruptVideoError if there are none.
    """
    pts, keys, durations = [], [], []
    first = None
    for packet in _demux(container, stream, deadline):
        if first is None:
            frames = _decode_packet(packet)
            first = frames[0] if frames else None
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.size == 0 or packet.is_corrupt or packet.is_discard:
            continue
        pts.append(ts)
        keys.append(packet.is_keyframe)
        durations.append(packet.duration or 0)
    if not pts or first is None:
        raise CorruptVideoError()
    return _build_index(pts, keys, durations, stream), first


def _build_index(pts: list, keys: list, durations: list, stream) -> PacketIndex:
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    sorted_pts = np.asarray(pts, dtype=np.int64)[order]
    unique_pts, first_of = np.unique(sorted_pts, return_index=True)
    keyframe = np.logical_or.reduceat(np.asarray(keys, dtype=bool)[order], first_of)
    last = int(order[-1])
    step = _frame_step(unique_pts, int(durations[last]), stream)
    time_base = stream.time_base or Fraction(1, 1000)
    return PacketIndex(unique_pts, keyframe, time_base, int(unique_pts[-1]) + step)
