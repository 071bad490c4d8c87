"""What a video is: duration, rate, size as displayed, codec; and a content fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from fractions import Fraction

import av

from .container import (
    Deadline,
    PacketIndex,
    PathLike,
    check_file,
    open_video,
    scan_packets,
    video_stream,
)
from .errors import CorruptVideoError, ResolutionTooLargeError
from .limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class VideoInfo:
    """A video as a viewer sees it.

    duration: seconds that actually decode (a truncated file reports what is left, not what its header says).
    fps: average frames per second (frame_count / duration).
    frame_count: frames in the stream.
    width, height: as displayed, with rotation and non-square pixels applied.
    rotation: degrees counter-clockwise the stored picture is turned for display: 0, 90, 180 or 270.
    codec: FFmpeg's codec name (h264, hevc, vp9, av1, mpeg4, ...).
    has_audio: whether there is an audio stream.
    size_bytes, path: the file.
    """

    duration: float
    fps: float
    frame_count: int
    width: int
    height: int
    rotation: int
    codec: str
    has_audio: bool
    size_bytes: int
    path: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def normalise_rotation(degrees: float) -> int:
    """Nearest quarter turn in [0, 360): PyAV reports -90 for 270 and may report non-right angles."""
    return int(round(degrees / 90.0)) % 4 * 90


def display_size(width: int, height: int, sar: Fraction | None, rotation: int) -> tuple[int, int]:
    """(width, height) on screen: stretched by the sample aspect ratio, then turned by the rotation."""
    if sar and sar > 0 and sar != 1:
        width = max(1, round(width * sar))
    return (height, width) if rotation % 180 == 90 else (width, height)


def check_resolution(stream, limits: Limits) -> None:
    """Refuse a stream whose stored frames exceed `limits.max_pixels`, before any of them is decoded."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > limits.max_pixels:
        raise ResolutionTooLargeError(
            f"This video is {width}x{height}, more than the {limits.max_pixels:,} pixels per frame we decode; "
            "use a lower-resolution copy."
        )


def inspect(container, path: PathLike, deadline: Deadline) -> tuple[VideoInfo, PacketIndex, object]:
    """Probe an open container: (VideoInfo, packet index of the video stream, that stream)."""
    stream = video_stream(container)
    index, first = scan_packets(container, stream, deadline)
    # the scan consumed the demuxer; a later decode must seek or reopen
    rotation = normalise_rotation(first.rotation)
    width, height = display_size(first.width, first.height, stream.sample_aspect_ratio, rotation)
    duration = index.duration
    if duration <= 0:
        raise CorruptVideoError()
    info = VideoInfo(
        duration=duration,
        fps=len(index) / duration,
        frame_count=len(index),
        width=width,
        height=height,
        rotation=rotation,
        codec=stream.codec.canonical_name if stream.codec else "unknown",
        has_audio=bool(container.streams.audio),
        size_bytes=check_file(path).stat().st_size,
        path=str(path),
    )
    return info, index, stream


def probe(path: PathLike, *, limits: Limits | None = None) -> VideoInfo:
    """Describe the video at `path`. Reads every packet once and decodes one frame.

    Raises VideoNotFoundError, EmptyFileError, NotAVideoError, NoVideoStreamError, CorruptVideoError,
    or DecodeTimeoutError after `limits.decode_time_limit_s`.
    """
    limits = limits or DEFAULT_LIMITS
    deadline = Deadline(limits.decode_time_limit_s)
    with open_video(path) as container:
        try:
            info, _, _ = inspect(container, path, deadline)
        except av.error.FFmpegError as e:
            raise CorruptVideoError() from e
    return info


def fingerprint(path: PathLike) -> str:
    """A stable content id: hex BLAKE2b-128 of the file's bytes (same bytes, same id, whatever the name)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(check_file(path), "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
