"""Video in: probe, sample timestamped frames, group them into segments, fetch from a URL, export moments.

Everything a visitor can get wrong raises a subclass of VideoError whose message is one plain sentence.
"""

from .errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    DownloadError,
    EmptyFileError,
    NotAVideoError,
    NoVideoStreamError,
    PrivateAddressError,
    ResolutionTooLargeError,
    UnsupportedURLError,
    VideoError,
    VideoNotFoundError,
    VideoTooLargeError,
    VideoTooLongError,
)
from .frames import Frames, Segment, sample, sample_at, segments
from .limits import DEFAULT_LIMITS, Limits
from .probe import VideoInfo, fingerprint, probe
from .sources import Fetched, fetch
from .urlguard import video_source

__all__ = [
    "DEFAULT_LIMITS",
    "CorruptVideoError",
    "DecodeTimeoutError",
    "DownloadError",
    "EmptyFileError",
    "Fetched",
    "Frames",
    "Limits",
    "NoVideoStreamError",
    "NotAVideoError",
    "PrivateAddressError",
    "ResolutionTooLargeError",
    "Segment",
    "UnsupportedURLError",
    "VideoError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoTooLargeError",
    "VideoTooLongError",
    "fetch",
    "fingerprint",
    "probe",
    "sample",
    "sample_at",
    "segments",
    "video_source",
]
