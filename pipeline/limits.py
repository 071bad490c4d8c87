"""The Space's limits in one place: what a visitor may send, and how much work one request may cause.

``AppSettings`` is the only place these numbers are set. ``python app.py --help`` lists each one as a flag
(``--max-upload-mb 200 --queue-size 8 ...``); nothing here is read from environment variables. The media
caps become a ``media.Limits`` (checked by probe, sample and fetch before the work they protect); the upload
size becomes Gradio's ``max_file_size``; the queue numbers go to ``demo.queue``. README.md ("Security") shows the
defaults (a test keeps it in step with this file).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import media
from pipeline.cache import CacheSettings

MB = 1 << 20


def _setting(default: float, flag: str, help: str, *, zero_allowed: bool = False):
    return field(default=default, metadata={"flag": flag, "help": help, "zero_allowed": zero_allowed})


@dataclass(frozen=True)
class AppSettings:
    """Limits of the public Space. Defaults suit one GPU (or a CPU box) with 16 GB of memory and ~50 GB disk.

    The video caps are checked before the expensive step each protects: the file size while uploading
    (Gradio) or downloading (yt-dlp), duration and frame size from the container header before frames are
    decoded, the decoded array's size before it is allocated, and a wall-clock budget while decoding.
    """

    max_upload_mb: float = _setting(
        500.0, "--max-upload-mb", "largest video file accepted, uploaded or downloaded (MB)"
    )
    max_duration_s: float = _setting(3600.0, "--max-duration", "longest video accepted (seconds)")
    max_pixels: int = _setting(3840 * 2160, "--max-pixels", "largest frame decoded, width x height")
    max_frames: int = _setting(1024, "--max-frames", "most frames sampled from one video")
    max_decoded_mb: float = _setting(1024.0, "--max-decoded-mb", "largest decoded frame array (MB)")
    decode_time_limit_s: float = _setting(
        120.0, "--decode-time-limit", "wall-clock budget for reading one video (seconds)"
    )
    max_height: int = _setting(720, "--max-height", "tallest format chosen when downloading (pixels)")
    queue_size: int = _setting(16, "--queue-size", "requests waiting at most; more get 'busy, try again'")
    concurrency: int = _setting(1, "--concurrency", "comparisons run at the same time (one per GPU)")
    max_backbones: int = _setting(
        1, "--max-backbones", "backbones kept loaded at once (the least recently used goes)"
    )
    frame_cache_mb: float = _setting(
        2048.0, "--frame-cache-mb", "decoded frames kept for follow-ups (MB, 0: off)", zero_allowed=True
    )
    token_cache_mb: float = _setting(
        2048.0,
        "--token-cache-mb",
        "encoded visual tokens kept for follow-ups (MB, 0: off)",
        zero_allowed=True,
    )
    prefix_cache_mb: float = _setting(
        float(CacheSettings.prefixes_mb),
        "--prefix-cache-mb",
        "prompt prefixes (keys/values before the question) kept for follow-ups (MB, 0: off)",
        zero_allowed=True,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, flag = getattr(self, f.name), f.metadata["flag"]
            if isinstance(f.default, int) and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{flag} must be a whole number of at least 1, not {value!r}.")
            if f.metadata["zero_allowed"] and isinstance(value, (int, float)) and value == 0:
                continue
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{flag} must be a number above 0, not {value!r}.")

    @property
    def max_upload_bytes(self) -> int:
        """Gradio's ``max_file_size`` (bytes)."""
        return int(self.max_upload_mb * MB)

    def media_limits(self) -> media.Limits:
        """The caps that ``media.probe``, ``media.sample`` and ``media.fetch`` enforce."""
        return media.Limits(
            max_duration_s=self.max_duration_s,
            max_size_mb=self.max_upload_mb,
            max_height=self.max_height,
            max_pixels=self.max_pixels,
            max_frames=self.max_frames,
            max_output_mb=self.max_decoded_mb,
            decode_time_limit_s=self.decode_time_limit_s,
        )

    def cache_settings(self) -> CacheSettings:
        """The bounds of the pipeline's frame, token and prompt-prefix caches (CPU memory)."""
        return CacheSettings(
            frames_mb=self.frame_cache_mb, tokens_mb=self.token_cache_mb, prefixes_mb=self.prefix_cache_mb
        )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per setting, its default shown in ``--help``."""
        group = parser.add_argument_group("limits (defaults suit the public Space)")
        for f in dataclasses.fields(cls):
            group.add_argument(
                f.metadata["flag"],
                dest=f.name,
                metavar="N",
                type=type(f.default),
                default=f.default,
                help=f"{f.metadata['help']} (default: {_show(f.default)})",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AppSettings:
        """The settings named by ``add_arguments``'s flags; ValueError with one sentence when one is out of range."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def rows(self) -> list[tuple[str, str, str]]:
        """(flag, value, meaning) for every setting: what README.md ("Security") and the start-up log show."""
        return [
            (f.metadata["flag"], _show(getattr(self, f.name)), f.metadata["help"])
            for f in dataclasses.fields(self)
        ]


def _show(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


__all__ = ["AppSettings"]
