"""A short MP4 of the moments a method kept, for a reviewer to watch what it looked at.

Frames are decoded with our own sampler (PyAV: rotation right, truncated files honest, limits enforced)
and written with moviepy's ffmpeg writer, streamed one frame at a time so memory stays flat. moviepy's own
reader is not used: with the bundled ffmpeg it squashes rotated videos and repeats frames of truncated ones.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .container import Deadline, PathLike
from .errors import CorruptVideoError, duration_text
from .frames import Decoder, exact_steps, inspect_within_limits, iter_decoded, output_size
from .limits import DEFAULT_LIMITS, Limits
from .probe import VideoInfo

MAX_MOMENTS = 64
MAX_WINDOW_S = 10.0
MAX_OUTPUT_FPS = 15.0


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """H.264 in yuv420p needs even sides."""
    return max(2, size[0] // 2 * 2), max(2, size[1] // 2 * 2)


def _window_positions(times: np.ndarray, centre: float, window_s: float, fps: float) -> list[int]:
    """Source frame shown at each output tick of the window [centre - window_s/2, centre + window_s/2)."""
    ticks = max(1, round(window_s * fps))
    starts = centre - window_s / 2 + (np.arange(ticks) + 0.5) / fps
    return [max(0, int(np.searchsorted(times, t, side="right")) - 1) for t in starts]


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    """Burn `text` into the top-left corner of an [H, W, 3] uint8 frame, on a dark box."""
    picture = Image.fromarray(img)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(10, img.shape[0] // 18))
    left, top, right, bottom = draw.textbbox((4, 4), text, font=font)
    draw.rectangle((0, 0, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def _moment_frames(path: PathLike, info: VideoInfo, index, positions: list[int], size, deadline):
    """{source position: [H, W, 3] frame} for the given positions (decoded once each, in order)."""
    steps = exact_steps(positions, index.keyframe)
    with Decoder(path, index, [s.position for s in steps], deadline) as decoder:
        decoded = iter_decoded(decoder, steps, size, info.rotation)
        return {position: rgb for rgb, _, position in decoded}


def _held(frames: dict[int, np.ndarray], position: int) -> np.ndarray | None:
    """The decoded frame showing at `position`: itself, or the latest decoded one before it."""
    earlier = [p for p in frames if p <= position]
    return frames[max(earlier)] if earlier else (frames[min(frames)] if frames else None)


def export_moments(
    path: PathLike,
    times: Sequence[float],
    out_path: str | Path,
    *,
    window_s: float = 1.0,
    max_side: int | None = 480,
    limits: Limits | None = None,
) -> Path:
    """Write an H.264 MP4 with ~window_s of video around each time (seconds), in time order.

    Each moment's frames carry a caption with its timestamp and number ("0:12.5 - moment 3/8"). Times are
    clamped to the video, duplicates merged; at most MAX_MOMENTS moments of at most MAX_WINDOW_S each.
    Raises ValueError for no times, and the VideoErrors of `sample` for a video we cannot read.
    """
    if len(times) == 0:
        raise ValueError("export_moments needs at least one time")
    limits = limits or DEFAULT_LIMITS
    deadline = Deadline(limits.decode_time_limit_s)
    info, index = inspect_within_limits(path, limits, deadline)
    moments = sorted({min(max(float(t), 0.0), info.duration) for t in times})[:MAX_MOMENTS]
    window_s = min(max(window_s, 1e-3), MAX_WINDOW_S)
    fps = min(info.fps, MAX_OUTPUT_FPS)
    size = _even(output_size(info, max_side))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write(out_path, size, fps, _moment_images(path, info, index, moments, window_s, fps, size, deadline))
    return out_path


def _moment_images(path, info, index, moments, window_s, fps, size, deadline):
    """Captioned frames of every moment, in order, one at a time."""
    times = index.times
    for number, centre in enumerate(moments, start=1):
        positions = _window_positions(times, centre, window_s, fps)
        frames = _moment_frames(path, info, index, positions, size, deadline)
        caption = f"{_clock(centre)} - moment {number}/{len(moments)}"
        for position in positions:
            img = _held(frames, position)
            if img is not None:
                yield _caption(img, caption)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    if minutes >= 60:
        return duration_text(seconds)
    return f"{int(minutes)}:{secs:04.1f}"


def _write(out_path: Path, size: tuple[int, int], fps: float, images) -> None:
    """Stream frames to an MP4 through moviepy's ffmpeg writer; written under a temporary name first."""
    from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

    with tempfile.NamedTemporaryFile(suffix=".mp4", dir=out_path.parent, delete=False) as tmp:
        partial = Path(tmp.name)
    writer = FFMPEG_VideoWriter(
        str(partial),
        size,
        max(1.0, math.floor(fps * 100) / 100),
        codec="libx264",
        preset="ultrafast",
        ffmpeg_params=["-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    )
    written = 0
    try:
        for img in images:
            writer.write_frame(img)
            written += 1
        writer.close()
        if written == 0:
            raise CorruptVideoError()
        partial.replace(out_path)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
