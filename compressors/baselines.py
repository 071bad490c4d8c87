"""The two baselines every method is compared with, under the same budget.

- ``uniform``: what a stock VLM does with too long a video — sample frames uniformly so that
  groups x tokens-per-group fits the budget, each group at the backbone's normal resolution, laid out exactly
  as the stock processor lays it out (its timestamp, then its grid as one block).
- ``pool``: keep every group and average-pool each group's token grid to the largest grid that fits — the
  pooling projector that Espresso (arXiv 2412.04729) and XComp (arXiv 2604.14149) argue against.

Both work on the groups of the frames as sampled (``real_groups``: a short last segment is never padded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import (
    BackboneHooks,
    CompressionResult,
    EncodedVideo,
    Method,
    SegmentSpan,
    VisualSegment,
    empty_result,
    frames_of_groups,
    grid_positions,
    group_segment,
    raw_token_count,
    real_groups,
    span_tokens,
    timestamp_text,
)
from .pooling import apply_pool, grid_pool_matrix


def spread(n: int, k: int) -> list[int]:
    """``k`` of ``range(n)`` spread evenly: the centre of each of ``k`` equal bins (all of them if k >= n)."""
    if k >= n:
        return list(range(n))
    return [(2 * i + 1) * n // (2 * k) for i in range(k)]


def pooled_grid(h: int, w: int, cap: int) -> tuple[int, int]:
    """The largest ``(h', w')`` with ``h' <= h``, ``w' <= w``, ``h' * w' <= cap`` keeping ``h:w`` where possible.

    Scale both sides by ``sqrt(cap / (h * w))`` (rounded down, at least 1), then widen and heighten as far as
    ``cap`` allows. ``cap >= 1``.
    """
    scale = math.sqrt(cap / (h * w))
    rows = min(h, max(1, math.floor(h * scale)))
    cols = min(w, max(1, cap // rows))
    rows = min(h, max(1, cap // cols))
    return rows, cols


@dataclass(frozen=True, kw_only=True)
class Uniform(Method):
    """Uniform frame sampling at the stock resolution: ``floor(B / P)`` groups spread over the video."""

    name: ClassVar[str] = "uniform"
    question_conditioned: ClassVar[bool] = False
    label: ClassVar[str] = "Uniform sampling (stock Qwen3-VL layout)"

    def reduce(
        self,
        video: EncodedVideo,
        segments: Sequence[SegmentSpan],
        question: str,
        *,
        budget: int,
        hooks: BackboneHooks,
    ) -> CompressionResult:
        per_group = video.embeds.shape[1]
        real = real_groups(video, segments)
        k = budget // per_group
        if k == 0:
            return empty_result(
                self.name, video, segments, f"budget {budget} is below one group ({per_group})"
            )
        groups = [real[i] for i in spread(len(real), k)]
        return CompressionResult(
            method=self.name,
            segments=[group_segment(video, g) for g in groups],
            kept_frames=frames_of_groups(video, groups, segments),
            raw_tokens=raw_token_count(video),
            segment_tokens=span_tokens(segments, dict.fromkeys(groups, per_group)),
            extra={"groups_kept": len(groups), "groups_total": len(real)},
        )


@dataclass(frozen=True, kw_only=True)
class Pool(Method):
    """Every group average-pooled to the largest grid with ``G * h' * w' <= B``; DeepStack pooled alike."""

    name: ClassVar[str] = "pool"
    question_conditioned: ClassVar[bool] = False
    label: ClassVar[str] = "Average pooling (every frame, smaller grid)"

    def reduce(
        self,
        video: EncodedVideo,
        segments: Sequence[SegmentSpan],
        question: str,
        *,
        budget: int,
        hooks: BackboneHooks,
    ) -> CompressionResult:
        groups = real_groups(video, segments)
        if budget < len(groups):
            why = f"budget {budget} is below one token for each of {len(groups)} groups"
            return empty_result(self.name, video, segments, why)
        h, w = pooled_grid(*video.grid, budget // len(groups))
        return CompressionResult(
            method=self.name,
            segments=pooled_groups(video, groups, (h, w)),
            kept_frames=frames_of_groups(video, groups, segments),
            raw_tokens=raw_token_count(video),
            segment_tokens=span_tokens(segments, dict.fromkeys(groups, h * w)),
            extra={"pooled_grid": [h, w], "tokens_per_group": h * w},
        )


def pool_grid(features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """``[..., P, D]`` on an ``h x w`` grid → ``[..., h' * w', D]`` adaptive average pooled, row-major."""
    return apply_pool(grid_pool_matrix(*grid, *size), features)


def pooled_groups(video: EncodedVideo, groups: list[int], size: tuple[int, int]) -> list[VisualSegment]:
    """``groups`` pooled to ``size`` in one matmul per feature set, each its own stock-layout block."""
    embeds = pool_grid(video.embeds[groups], video.grid, size)
    levels = [pool_grid(level[groups], video.grid, size) for level in video.deepstack]
    positions = grid_positions(*size)
    return [
        VisualSegment(
            text=timestamp_text(float(video.group_times[g])),
            embeds=embeds[i],
            positions=positions,
            deepstack=[level[i] for level in levels],
        )
        for i, g in enumerate(groups)
    ]
