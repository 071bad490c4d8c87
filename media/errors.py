"""Typed errors for everything that can go wrong with a video a visitor hands us.

Every error carries `message`: one plain sentence that tells the user what happened and what to do.
`str(error) == error.message`, so the UI and the CLI can show it as is. Each class has a default sentence;
raising code may pass a more specific one (with sizes, limits, the server's answer).
"""

from __future__ import annotations


class VideoError(Exception):
    """Base class: a video could not be read, sampled or downloaded, for a reason the user can act on."""

    default_message = "This video could not be used; try another file."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class VideoNotFoundError(VideoError):
    default_message = "The video file was not found; upload it again."


class EmptyFileError(VideoError):
    default_message = "The file is empty; upload a video that has content."


class NotAVideoError(VideoError):
    default_message = "This file is not a video; upload an MP4, WebM, MKV, MOV or AVI file."


class NoVideoStreamError(VideoError):
    default_message = "This file has sound but no picture; upload a file with a video track."


class CorruptVideoError(VideoError):
    default_message = "This video is corrupt or truncated and no frame could be read; upload a complete copy."


class VideoTooLongError(VideoError):
    default_message = "This video is too long; trim it or choose a shorter one."


class VideoTooLargeError(VideoError):
    default_message = "This video file is too large; choose a smaller file or a lower resolution."


class ResolutionTooLargeError(VideoError):
    default_message = "This video's resolution is too high; use a version of at most 4K."


class DecodeTimeoutError(VideoError):
    default_message = "Reading the video took too long; ask for fewer frames or use a shorter video."


class UnsupportedURLError(VideoError):
    default_message = "This link cannot be used; paste an http or https link to one video."


class PrivateAddressError(VideoError):
    default_message = "This link points to a private or local network address; paste a link to a public site."


class DownloadError(VideoError):
    default_message = "The video could not be downloaded; check the link and try again."


def duration_text(seconds: float) -> str:
    """A duration for people: '45 s', '12 min 5 s', '1 h 20 min'."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{seconds:.1f} s" if seconds < 10 else f"{secs} s"


def too_long(duration_s: float, limit_s: float) -> VideoTooLongError:
    return VideoTooLongError(
        f"This video lasts {duration_text(duration_s)} and the limit is {duration_text(limit_s)}; "
        "trim it or choose a shorter one."
    )


def too_large(limit_mb: float) -> VideoTooLargeError:
    return VideoTooLargeError(
        f"The video is larger than the {limit_mb:g} MB limit; choose a shorter or lower-resolution one."
    )


__all__ = [
    "CorruptVideoError",
    "DecodeTimeoutError",
    "DownloadError",
    "EmptyFileError",
    "NoVideoStreamError",
    "NotAVideoError",
    "PrivateAddressError",
    "ResolutionTooLargeError",
    "UnsupportedURLError",
    "VideoError",
    "VideoNotFoundError",
    "VideoTooLargeError",
    "VideoTooLongError",
    "duration_text",
    "too_large",
    "too_long",
]
