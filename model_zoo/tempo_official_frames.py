"""Tempo-6B's frames as the authors sample, size and segment them (``infer.py``, ``app.py``,
``tempo/mm_datautils.py`` of github.com/FeiElysia/Tempo; arXiv 2604.08120).

Sampling: 2 fps from the source, at least 4 and at most 1024 frames, at ``round(linspace(0, total - 1, n))``
source indices (:func:`official_sample_plan`); every sampled frame ``i`` is timed ``i / real_fps`` with
``real_fps = n / (total / source_fps)``. Sizing: three resizes from the full-resolution frame (:class:`FrameRule`).
Segments: non-overlapping 8-frame windows; the last one is not padded (the authors' padding is commented
out), only a 1-frame tail is duplicated (the processor needs two frames), and an odd tail gets its last frame
repeated by qwen-vl-utils; a segment's answer-prompt time is ``(8 i + 4) / real_fps``, one decimal
(``compute_segment_timestamp``), whatever the segment's length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from model_zoo.preprocess import (
    VideoPreprocessConfig,
    check_frames,
    normalize_frames,
    patchify,
    resize_frames,
)
from model_zoo.tempo_official_config import MAX_FRAMES, MIN_FRAMES, SAMPLE_FPS, SEGMENT_FRAMES


@dataclass(frozen=True)
class SamplePlan:
    """The authors' frame sampling of one video.

    ``indices`` source frame indices; ``source_times`` their presentation times (index / source fps), where
    an app decoding by time should seek; ``real_fps`` = sampled frames / duration, the rate every Tempo
    timestamp uses (a sampled frame i sits at ``i / real_fps`` in the prompts).
    """

    indices: list[int]
    source_times: list[float]
    real_fps: float


def official_sample_indices(
    total_frames: int,
    source_fps: float,
    *,
    fps: float = SAMPLE_FPS,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
) -> list[int]:
    """``compute_sample_indices`` of infer.py / app.py: round(duration * fps) frames clamped to
    [min_frames, max_frames], at ``round(linspace(0, total - 1, n))``."""
    if total_frames <= 1:
        return [0]
    source_fps = source_fps if source_fps and source_fps > 0 else fps
    wanted = max(1, round(total_frames / source_fps * fps))
    count = min(max(wanted, min_frames), max_frames)
    if count == 1:
        return [total_frames - 1]
    return (
        np.clip(np.round(np.linspace(0, total_frames - 1, count)), 0, total_frames - 1).astype(int).tolist()
    )


def official_sample_plan(
    total_frames: int,
    source_fps: float,
    *,
    fps: float = SAMPLE_FPS,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
) -> SamplePlan:
    """The plan for a video of ``total_frames`` frames at ``source_fps`` on average (``load_video`` of infer.py:
    decord's ``len(vr)`` and ``get_avg_fps()``); ``real_fps = frames / (total_frames / source_fps)``."""
    total = max(1, int(total_frames))
    indices = official_sample_indices(
        total, source_fps, fps=fps, min_frames=min_frames, max_frames=max_frames
    )
    clip = total / source_fps if source_fps > 0 else 0.0
    real_fps = len(indices) / clip if clip > 0 else fps
    return SamplePlan(indices, [i / source_fps if source_fps > 0 else 0.0 for i in indices], real_fps)


# ---------------------------------------------------------------------------------------- frame size


@dataclass(frozen=True)
class FrameRule:
    """How the authors' stack sizes frames, in three steps (defaults: the released inference settings).

    1. ``resize_images`` (mm_datautils.py): a long edge above ``long_edge`` scaled down to it, each side
       rounded to a multiple of ``snap`` (16);
    2. ``fetch_image`` (qwen-vl-utils 0.0.14, ``image_patch_size=16``): sides rounded to ``factor`` (32) with
       image pixel bounds of ``image_min_tokens``..``image_max_tokens`` 32x32 cells;
    3. ``fetch_video``: the same rounding with video bounds ``video_min_tokens``..``video_max_tokens`` cells per
       frame (frames under 128 cells are scaled up).
    The processor then runs with ``do_resize=False``.
    """

    long_edge: int = 512
    snap: int = 16
    factor: int = 32
    image_min_tokens: int = 4
    image_max_tokens: int = 16384
    video_min_tokens: int = 128
    video_max_tokens: int = 768


#: The released inference settings.
OFFICIAL_RULE = FrameRule()


def qwen_smart_resize(
    height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """qwen-vl-utils' per-frame ``smart_resize``: sides to multiples of ``factor``, pixels in bounds."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {height}x{width}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frame_sizes(height: int, width: int, rule: FrameRule = FrameRule()) -> list[tuple[int, int]]:
    """(height, width) after each of the three steps; the last one is what the vision tower sees."""
    h, w = height, width
    if max(h, w) > rule.long_edge:
        ratio = rule.long_edge / max(h, w)
        h = max(rule.snap, int(round(h * ratio / rule.snap) * rule.snap))
        w = max(rule.snap, int(round(w * ratio / rule.snap) * rule.snap))
    cell = rule.factor**2
    first = (h, w)
    second = qwen_smart_resize(
        *first,
        factor=rule.factor,
        min_pixels=rule.image_min_tokens * cell,
        max_pixels=rule.image_max_tokens * cell,
    )
    third = qwen_smart_resize(
        *second,
        factor=rule.factor,
        min_pixels=rule.video_min_tokens * cell,
        max_pixels=rule.video_max_tokens * cell,
    )
    return [first, second, third]


def resize_official(frames: np.ndarray, rule: FrameRule = FrameRule()) -> np.ndarray:
    """[T, H, W, 3] uint8 through the three resizes (each skipped when it keeps the size)."""
    size = frames.shape[1:3]
    for step in frame_sizes(*size, rule):
        if tuple(step) != tuple(size):
            frames, size = resize_frames(frames, step), step
    return frames


# ------------------------------------------------------------------------------------------ segments


@dataclass
class SegmentBatch:
    """The video as the small VLM reads it: one entry per 8-frame segment.

    ``pixel_values`` [sum of patches, C * 2 * 16 * 16] and ``grids`` [S, 3] (groups, gh, gw) as the processor
    returns them for the batch; ``group_times`` per segment, the in-prompt time of each group (mean of its two
    frames' absolute times ``index / real_fps``, padding frames numbered on as qwen-vl-utils numbers them);
    ``frames`` the real frames of each segment; ``frame_size`` the resized (height, width).
    """

    pixel_values: torch.Tensor
    grids: torch.Tensor
    group_times: list[list[float]]
    frames: list[range]
    real_fps: float
    frame_size: tuple[int, int]

    @property
    def num_segments(self) -> int:
        return len(self.frames)

    def centre(self, i: int) -> float:
        """The answer prompt's time of segment i: ``(8 i + 4) / real_fps`` (``compute_segment_timestamp``)."""
        return (SEGMENT_FRAMES * i + SEGMENT_FRAMES / 2) / self.real_fps


def segment_video(
    frames: np.ndarray, real_fps: float, *, preprocess: VideoPreprocessConfig, rule: FrameRule = FrameRule()
) -> SegmentBatch:
    """Frames [T, H, W, 3] uint8 (already sampled) → the small VLM's inputs, 8 frames per segment.

    A 1-frame tail is duplicated (Tempo) and any odd tail padded with its last frame (qwen-vl-utils).
    """
    check_frames(frames, range(len(frames)))
    resized = resize_official(frames, rule)
    values, grids, times, spans = [], [], [], []
    step = preprocess.temporal_patch_size
    for start in range(0, len(resized), SEGMENT_FRAMES):
        chunk = resized[start : start + SEGMENT_FRAMES]
        chunk = np.concatenate([chunk, chunk[-1:].repeat(-len(chunk) % step, axis=0)])
        pixels, grid = patchify(normalize_frames(chunk, preprocess), preprocess)
        index = start + np.arange(len(chunk))
        times.append(
            [float((index[g] + index[g + step - 1]) / 2 / real_fps) for g in range(0, len(chunk), step)]
        )
        values.append(pixels)
        grids.append(grid)
        spans.append(range(start, min(start + SEGMENT_FRAMES, len(frames))))
    return SegmentBatch(
        torch.cat(values),
        torch.tensor(grids, dtype=torch.long),
        times,
        spans,
        real_fps,
        tuple(resized.shape[1:3]),
    )
