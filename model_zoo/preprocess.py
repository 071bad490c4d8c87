"""Qwen3-VL video preprocessing: the checkpoint's own video processor where torchvision imports (on a Space),
else our port (transformers' video processors need torchvision; the CPU wheels here have none that works).

``library_preprocess`` runs the library's processor (``AutoVideoProcessor``, a ``Qwen3VLVideoProcessor``) on
the frames as sampled. ``preprocess_video`` is the port:
frames in, ``pixel_values_videos`` and ``video_grid_thw`` out, laid out exactly as transformers 5.23 lays
them out (``models/qwen3_vl/video_processing_qwen3_vl.py``: ``smart_resize``, ``resize`` with the per-frame
pixel cap, ``patchify``), with the per-group timestamps the processor writes into the prompt
(``processing_qwen3_vl.py``: ``_calculate_timestamps``, the mean of a group's two frame times).

Resizing and normalising use the same operations as the library's PIL image processor
(``Qwen2VLImageProcessorPil``: PIL bicubic on uint8, rescale in float64 then float32, ``(x - mean) / std``),
so a video of one repeated still equals the image processor's output on that still, duplicated in time.

Shape letters: T frames, G = T / 2 groups, C channels, gh x gw patch grid (16 px patches).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class PreprocessError(ValueError):
    """Frames or timestamps the preprocessing cannot use (the message says what it got and what is valid)."""


@dataclass(frozen=True)
class VideoPreprocessConfig:
    """The checkpoint's video-preprocessing numbers (``video_preprocessor_config.json``).

    ``min_pixels`` / ``max_pixels`` are the library's ``size["shortest_edge"]`` / ``size["longest_edge"]``:
    bounds on the pixels of the *whole clip* (frames x height x width), as ``smart_resize`` applies them.
    With ``cap_pixels_per_frame`` (the reference qwen-vl-utils behaviour, which transformers 5.23 offers as
    ``cap_pixels_per_frame=True``), each frame additionally gets at most ``max_frame_tokens`` 32 x 32 cells
    and at most its even share of ``max_pixels``, and at least ``1.05 * min_pixels``.
    """

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 128 * 32 * 32
    max_pixels: int = 768 * 32 * 32
    max_frame_tokens: int = 768
    cap_pixels_per_frame: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def factor(self) -> int:
        """Side of one merged token in pixels (32 on Qwen3-VL): resized sides are multiples of it."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_json(cls, path: str | Path) -> VideoPreprocessConfig:
        """Read a checkpoint's ``video_preprocessor_config.json`` (missing keys keep the library defaults)."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_dict(cls, data: Mapping) -> VideoPreprocessConfig:
        size = data.get("size") or {}
        defaults = cls()
        return cls(
            patch_size=int(data.get("patch_size", defaults.patch_size)),
            merge_size=int(data.get("merge_size", defaults.merge_size)),
            temporal_patch_size=int(data.get("temporal_patch_size", defaults.temporal_patch_size)),
            min_pixels=int(size.get("shortest_edge", data.get("min_pixels", defaults.min_pixels))),
            max_pixels=int(size.get("longest_edge", data.get("max_pixels", defaults.max_pixels))),
            max_frame_tokens=int(data.get("max_video_tokens", defaults.max_frame_tokens)),
            image_mean=tuple(float(x) for x in data.get("image_mean", defaults.image_mean)),
            image_std=tuple(float(x) for x in data.get("image_std", defaults.image_std)),
        )


@dataclass
class VideoInputs:
    """What the vision tower takes, plus what the prompt needs.

    ``pixel_values_videos`` [G * gh * gw, C * 2 * 16 * 16] float32; ``video_grid_thw`` [1, 3] long = (G, gh, gw);
    ``group_times`` [G] float64 seconds; ``frame_size`` the resized (height, width); ``padded`` frames added
    (repeats of the last frame) to make T even.
    """

    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor
    group_times: torch.Tensor
    frame_size: tuple[int, int]
    num_frames: int
    padded: int


def smart_resize(
    num_frames: int,
    height: int,
    width: int,
    *,
    factor: int,
    temporal_factor: int,
    min_pixels: int,
    max_pixels: int,
) -> tuple[int, int]:
    """Resized (height, width): multiples of ``factor``, clip pixels within [min_pixels, max_pixels].

    The rule of transformers' Qwen3-VL ``smart_resize`` (video version: the bounds count every frame):
    round each side to the nearest multiple of ``factor``; if the clip is then too large, scale both sides
    down by sqrt(T*H*W / max_pixels) and floor to the factor; if too small, scale up and ceil.
    """
    if num_frames < temporal_factor:
        raise PreprocessError(f"need at least {temporal_factor} frames to resize a clip, got {num_frames}")
    if height < factor or width < factor:
        # Tiny frames are first blown up so that the short side reaches one factor (the library does this).
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise PreprocessError(f"aspect ratio must be below 200, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def clip_pixel_bounds(num_frames: int, config: VideoPreprocessConfig) -> tuple[int, int]:
    """(min_pixels, max_pixels) for a clip of ``num_frames``, with the per-frame cap when enabled.

    Mirrors ``Qwen3VLVideoProcessor.resize`` with ``cap_pixels_per_frame=True``: per-frame pixels =
    max(min(max_frame_tokens * factor^2, max_pixels // T), int(1.05 * min_pixels)), times T.
    """
    if not config.cap_pixels_per_frame:
        return config.min_pixels, config.max_pixels
    frame_cap = config.max_frame_tokens * config.factor**2
    per_frame = max(min(frame_cap, config.max_pixels // num_frames), int(config.min_pixels * 1.05))
    return config.min_pixels, per_frame * num_frames


def resized_frame_size(
    num_frames: int, height: int, width: int, config: VideoPreprocessConfig
) -> tuple[int, int]:
    """The (height, width) every frame of a ``num_frames`` clip of ``height x width`` frames is resized to."""
    min_pixels, max_pixels = clip_pixel_bounds(num_frames, config)
    return smart_resize(
        num_frames,
        height,
        width,
        factor=config.factor,
        temporal_factor=config.temporal_patch_size,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )


def group_timestamps(timestamps: Sequence[float], *, frames_per_group: int = 2) -> torch.Tensor:
    """[G] float64: mean of each group's first and last frame time (``_calculate_timestamps``).

    ``timestamps`` must already be padded to a multiple of ``frames_per_group``.
    """
    times = torch.as_tensor(np.asarray(timestamps, dtype=np.float64)).reshape(-1, frames_per_group)
    return (times[:, 0] + times[:, -1]) / 2


def normalize_frames(frames: np.ndarray, config: VideoPreprocessConfig) -> np.ndarray:
    """[T, H, W, 3] uint8 → [T, 3, H, W] float32, with the image processor's exact arithmetic.

    Rescale by 1/255 in float64 then cast to float32 (``image_transforms.rescale``), then
    ``(x - mean) / std`` in float32 (``image_transforms.normalize``).
    """
    scaled = (frames.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(config.image_mean, dtype=np.float32)
    std = np.asarray(config.image_std, dtype=np.float32)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(0, 3, 1, 2))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[T, H, W, 3] uint8 → [T, h, w, 3] uint8 with PIL bicubic, as ``Qwen2VLImageProcessorPil`` resizes."""
    height, width = size
    resized = [np.asarray(Image.fromarray(f).resize((width, height), resample=Image.BICUBIC)) for f in frames]
    return np.stack(resized)


def patchify(pixels: np.ndarray, config: VideoPreprocessConfig) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[T, C, H, W] → ([G * gh * gw, C * tp * p * p], (G, gh, gw)), the library's ``patchify`` layout.

    Patches are ordered (group, merged row, merged col, row in 2x2, col in 2x2), so that every four
    consecutive patches are one merged token and merged tokens come out row-major per group.
    """
    t, c, h, w = pixels.shape
    p, m, tp = config.patch_size, config.merge_size, config.temporal_patch_size
    g, gh, gw = t // tp, h // p, w // p
    blocks = pixels.reshape(g, tp, c, gh // m, m, p, gw // m, m, p)
    blocks = blocks.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (G, gh/m, gw/m, m, m, C, tp, p, p)
    flat = np.ascontiguousarray(blocks).reshape(g * gh * gw, c * tp * p * p)
    return torch.from_numpy(flat), (g, gh, gw)


def pad_to_groups(
    frames: np.ndarray, timestamps: Sequence[float], *, frames_per_group: int
) -> tuple[np.ndarray, list[float], int]:
    """Repeat the last frame (and its timestamp) until T is a multiple of ``frames_per_group``."""
    pad = -len(frames) % frames_per_group
    if pad:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    return frames, [float(x) for x in timestamps] + [float(timestamps[-1])] * pad, pad


def check_frames(frames: np.ndarray, timestamps: Sequence[float]) -> None:
    """Raise PreprocessError unless frames are [T>0, H, W, 3] uint8 with T timestamps."""
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
    ):
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {getattr(frames, 'shape', '')}"
        raise PreprocessError(f"frames must be a uint8 numpy array [T, H, W, 3] (RGB), got {got}")
    if len(frames) == 0:
        raise PreprocessError("frames is empty: need at least one frame")
    if len(timestamps) != len(frames):
        raise PreprocessError(
            f"need one timestamp per frame: {len(frames)} frames, {len(timestamps)} timestamps"
        )


def preprocess_video(
    frames: np.ndarray, timestamps: Sequence[float], config: VideoPreprocessConfig
) -> VideoInputs:
    """Frames [T, H, W, 3] uint8 RGB with their times (seconds) → ``VideoInputs`` for the vision tower.

    T is padded to a multiple of the temporal patch (2) by repeating the last frame, as the library's
    ``patchify`` and ``_calculate_timestamps`` both do. The resize budget counts the real frames (at least
    two), like the library, which resizes before padding.
    """
    check_frames(frames, timestamps)
    tp = config.temporal_patch_size
    size = resized_frame_size(max(len(frames), tp), frames.shape[1], frames.shape[2], config)
    padded_frames, padded_times, pad = pad_to_groups(frames, timestamps, frames_per_group=tp)
    pixels = normalize_frames(resize_frames(padded_frames, size), config)
    values, grid = patchify(pixels, config)
    return VideoInputs(
        pixel_values_videos=values,
        video_grid_thw=torch.tensor([grid], dtype=torch.long),
        group_times=group_timestamps(padded_times, frames_per_group=tp),
        frame_size=size,
        num_frames=len(frames),
        padded=pad,
    )


def torchvision_available() -> bool:
    """Whether torchvision imports here and works with this torch (a build for another torch fails on
    import): what transformers' video processors need."""
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:  # not installed, or built against another torch (RuntimeError on import)
        return False
    return True


def library_preprocess(
    processor, frames: np.ndarray, timestamps: Sequence[float], config: VideoPreprocessConfig
) -> VideoInputs:
    """``preprocess_video`` done by the checkpoint's own video processor (transformers' ``Qwen3VLVideoProcessor``):
    the frames as sampled (``do_sample_frames=False``), the per-frame pixel cap as ``config`` says; group
    times computed as ``preprocess_video`` computes them. Fewer frames than a temporal patch (which the
    library refuses) go through ``preprocess_video``."""
    check_frames(frames, timestamps)
    tp = int(processor.temporal_patch_size)
    if len(frames) < tp:
        return preprocess_video(frames, timestamps, config)
    out = processor(
        videos=[frames],
        do_sample_frames=False,
        cap_pixels_per_frame=config.cap_pixels_per_frame,
        return_tensors="pt",
    )
    grid = out["video_grid_thw"].long()
    pad = -len(frames) % tp
    times = [float(t) for t in timestamps] + [float(timestamps[-1])] * pad
    patch = int(processor.patch_size)
    return VideoInputs(
        pixel_values_videos=out["pixel_values_videos"].float(),
        video_grid_thw=grid,
        group_times=group_timestamps(times, frames_per_group=tp),
        frame_size=(int(grid[0, 1]) * patch, int(grid[0, 2]) * patch),
        num_frames=len(frames),
        padded=pad,
    )
