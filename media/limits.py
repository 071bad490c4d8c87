"""Work limits for one request: how much video we agree to download, decode and hold in memory.

The Space is public, so every limit is checked *before* the expensive step it protects: file size before
opening, duration and source resolution from the container header before any large frame is decoded, the
size of the output array before it is allocated, and a wall-clock budget while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Caps applied by `probe`, `sample` and `fetch`. Defaults suit a CPU Space with 16 GB of memory.

    max_duration_s: longest video accepted (seconds).
    max_size_mb: largest file accepted, on disk or while downloading (MB = 2**20 bytes).
    max_height: preferred download resolution (the best format at most this tall is chosen).
    max_pixels: largest source frame (width x height) we decode; larger ones are refused before decoding.
    max_frames: most frames one `sample` call returns, whatever it asks for.
    max_output_mb: largest decoded frame array one `sample` call may allocate.
    decode_time_limit_s: wall-clock budget for reading one video (probe plus decode).
    """

    max_duration_s: float = 3600.0
    max_size_mb: float = 500.0
    max_height: int = 720
    max_pixels: int = 3840 * 2160
    max_frames: int = 1024
    max_output_mb: float = 1024.0
    decode_time_limit_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("max_duration_s", "max_size_mb", "max_height", "max_pixels", "max_frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_output_mb <= 0 or self.decode_time_limit_s <= 0:
            raise ValueError("Limits.max_output_mb and Limits.decode_time_limit_s must be positive")

    @property
    def max_size_bytes(self) -> int:
        return int(self.max_size_mb * 2**20)


DEFAULT_LIMITS = Limits()
