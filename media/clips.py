"""A short MP4 of the moments a method kept, for a reviewer to watch what it looked at.

The clip is assembled with moviepy's clip API: the source as one ``VideoClip`` whose frames our own sampler
decodes (PyAV: rotation right, truncated files honest, limits enforced), cut around each moment with
``subclipped``, the moment's timestamp overlaid as a ``TextClip`` (``CompositeVideoClip``), the cuts joined
by ``concatenate_videoclips`` and written by ``write_videofile`` (H.264, frames streamed one at a time, so
memory holds one moment's frames). moviepy's own reader is not used: with the bundled ffmpeg it squashes
rotated videos and repeats frames of truncated ones.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
    ticks = max(1, round(window_s * fps))
    source = SourceFrames(path, info, index, size, deadline, fps=fps, ticks=ticks, pad=window_s)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write(out_path, _assemble(source, moments, ticks / fps, info.duration), fps)
    return out_path


class SourceFrames:
    """The source's frames as a function of time, for a moviepy ``VideoClip``: the frame showing at ``t``
    seconds, ``t`` counted from ``pad`` seconds before the video starts (a cut may reach past either end and
    hold the first or last frame there). A time outside the frames decoded last decodes, in one pass, the frames
    of the ``ticks`` output frames from there on and keeps only those: one moment's frames in memory."""

    def __init__(self, path, info: VideoInfo, index, size, deadline, *, fps: float, ticks: int, pad: float):
        self.path, self.info, self.index, self.size, self.deadline = path, info, index, size, deadline
        self.fps, self.ticks, self.pad = fps, ticks, pad
        self.frames: dict[int, np.ndarray] = {}

    def position(self, seconds: float) -> int:
        """The source frame showing at ``seconds`` (the first before the start, the last past the end)."""
        return max(0, int(np.searchsorted(self.index.times, seconds, side="right")) - 1)

    def __call__(self, t: float) -> np.ndarray:
        seconds = t - self.pad + 0.5 / self.fps  # the middle of the output frame's tick
        position = self.position(seconds)
        if not self.frames or not min(self.frames) <= position <= max(self.frames):
            positions = [self.position(seconds + k / self.fps) for k in range(self.ticks)]
            self.frames = _moment_frames(
                self.path, self.info, self.index, positions, self.size, self.deadline
            )
        img = _held(self.frames, position)
        if img is None:
            raise CorruptVideoError()
        return img


def _assemble(source: SourceFrames, moments: list[float], length: float, duration: float):
    """One moviepy clip: per moment, the cut of ``length`` seconds centred on it, captioned, in order."""
    from moviepy import CompositeVideoClip, TextClip, VideoClip, concatenate_videoclips

    video = VideoClip(frame_function=source, duration=duration + 2 * source.pad)
    height = video.size[1]
    cuts = []
    for number, centre in enumerate(moments, start=1):
        start = source.pad + centre - length / 2
        caption = TextClip(
            text=f"{_clock(centre)} - moment {number}/{len(moments)}",
            font_size=max(10, height // 18),
            color="white",
            bg_color="black",
            margin=(4, 4),
            transparent=False,  # an opaque box: pasted, not alpha-blended, on every frame
            duration=length,
        ).with_position(("left", "top"))
        cuts.append(CompositeVideoClip([video.subclipped(start, start + length), caption], use_bgclip=True))
    return concatenate_videoclips(cuts, method="chain")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    if minutes >= 60:
        return duration_text(seconds)
    return f"{int(minutes)}:{secs:04.1f}"


def _write(out_path: Path, clip, fps: float) -> None:
    """Write ``clip`` as an H.264 MP4 (yuv420p, faststart) through moviepy, under a temporary name first."""
    with tempfile.NamedTemporaryFile(suffix=".mp4", dir=out_path.parent, delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        clip.write_videofile(
            str(partial),
            fps=max(1.0, math.floor(fps * 100) / 100),
            codec="libx264",
            preset="ultrafast",
            audio=False,
            pixel_format="yuv420p",
            ffmpeg_params=["-movflags", "+faststart"],
            logger=None,
        )
        partial.replace(out_path)
    finally:
        clip.close()
        partial.unlink(missing_ok=True)
