"""Espresso: fixed-length spatial + temporal compression per segment.

Yu, Dave, Ambrus, Mercat, "Espresso" (arXiv 2412.04729). No public code or weights. Per segment the frame
features ``[T, P, D]`` are split into spatial features (time collapsed, ``[P, D]``) and temporal features
(space collapsed, ``[T, D]``); a spatial compressor maps the first to ``p`` tokens, a temporal one the second
to ``t`` tokens (learned Q-Formers with ``p`` and ``t`` queries); the two are concatenated. Every segment
yields exactly ``p + t`` tokens whatever its content: a fixed-length, streaming-friendly representation.

Our training-free version (the Q-Former weights are not public): average pooling stands in for both
compressors, on Qwen3-VL groups (2 frames each) instead of frames.
- spatial: the segment's groups averaged → ``[h, w, D]`` → pooled to ``p`` cells;
- temporal: each group's tokens averaged → ``[G, D]`` → adaptive average pool over time to ``t`` tokens;
- ``p + t = floor(B / n)`` for ``n`` segments (at least 1 + 1), split by ``spatial_share`` — except that ``t``
  is capped at the segment's groups (one temporal slot per 2 frames on Qwen3-VL: more would only repeat
  tokens) and ``p`` at the grid's cells, the rest going to the other side; per segment the budget is capped
  at ``h*w + groups`` for the same reason (beyond that nothing distinct is left to give);
- ``p`` need not factor into a rectangle: the grid is pooled into ``rows`` bands of (near-)equal height, band
  ``i`` into ``p_i`` cells, with ``rows`` chosen to keep cells about square — exactly ``p`` cells, any ``p``;
- positions: a spatial token sits at the middle temporal index ``(t - 1) // 2`` and its cell's centre
  ``(h, w)`` in the original grid; temporal token ``k`` at time ``k`` and the grid centre;
- one ``<X.X seconds>`` text (the segment's centre) before each segment's tokens.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import (
    BackboneHooks,
    CompressionError,
    CompressionResult,
    EncodedVideo,
    Method,
    SegmentSpan,
    VisualSegment,
    empty_result,
    frames_of_groups,
    raw_token_count,
    timestamp_text,
)
from .pooling import adaptive_bin, bin_average, pool_matrix


def split_tokens(total: int, *, groups: int, cells: int, spatial_share: float = 0.75) -> tuple[int, int]:
    """``(p, t)`` spatial and temporal tokens with ``p + t == total`` (see the module docstring).

    ``t`` = ``total - round(total * spatial_share)``, at least 1, at most ``groups`` and ``total - 1``, but
    at least ``total - cells`` (then the temporal pool repeats tokens: only for short segments).
    """
    if total < 2:
        raise CompressionError(
            f"Espresso needs at least 2 tokens per segment (1 spatial + 1 temporal), got {total}"
        )
    t = total - math.floor(total * spatial_share + 0.5)
    t = max(min(max(t, 1), groups, total - 1), total - cells)
    return total - t, t


def compress_segment(
    tokens: torch.Tensor, total: int, spatial_share: float = 0.75
) -> tuple[torch.Tensor, torch.Tensor]:
    """One segment's fixed-length tokens: ``[G, h, w, D]`` → ``(tokens [total, D], positions [total, 3])``.

    Spatial tokens first (time-averaged grid pooled to ``p`` cells), then temporal tokens (space-averaged
    groups pooled over time to ``t``); ``p + t == total`` whatever the content. Pure linear pooling, so the
    same call on DeepStack features does to them exactly what it did to the tokens.
    """
    if tokens.ndim != 4 or 0 in tokens.shape:
        raise CompressionError(f"compress_segment needs tokens [G, h, w, D], got {tuple(tokens.shape)}")
    g, h, w, d = tokens.shape
    p, t = split_tokens(total, groups=g, cells=h * w, spatial_share=spatial_share)
    cell_w, cell_pos = _cell_weights(h, w, p)
    time_w = pool_matrix(g, t)
    flat = tokens.float()
    spatial = cell_w.to(tokens.device) @ flat.mean(0).reshape(h * w, d)
    temporal = time_w.to(tokens.device) @ flat.mean((1, 2))
    positions = torch.cat(
        [
            torch.cat([torch.full((p, 1), (t - 1) // 2), cell_pos], dim=1),
            torch.stack([torch.arange(t), torch.full((t,), (h - 1) // 2), torch.full((t,), (w - 1) // 2)], 1),
        ]
    )
    return torch.cat([spatial, temporal]).to(tokens.dtype), positions


@functools.lru_cache(maxsize=256)
def _cell_weights(h: int, w: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``([p, h*w], [p, 2])``: pooling weights of ``p`` cells over the grid, and each cell's centre (row, col).

    ``rows`` bands of near-equal height (about ``sqrt(p * h / w)`` so cells stay near square, at least
    ``ceil(p / w)`` so no band needs more cells than columns); band ``i`` gets ``p // rows`` cells, the first
    ``p % rows`` one more.
    """
    rows = min(max(round(math.sqrt(p * h / w)), -(-p // w), 1), h, p)
    weights, centres = [], []
    for i in range(rows):
        r0, r1 = adaptive_bin(i, rows, h)
        cells = p // rows + (i < p % rows)
        for j in range(cells):
            c0, c1 = adaptive_bin(j, cells, w)
            weights.append(torch.outer(bin_average(r0, r1, h), bin_average(c0, c1, w)).flatten())
            centres.append(((r0 + r1 - 1) // 2, (c0 + c1 - 1) // 2))
    return torch.stack(weights), torch.tensor(centres, dtype=torch.long)


@dataclass(frozen=True, kw_only=True)
class Espresso(Method):
    """Espresso, training-free: pooling stands in for the learned compressors (module docstring)."""

    name: ClassVar[str] = "espresso"
    question_conditioned: ClassVar[bool] = False
    label: ClassVar[str] = "Espresso (training-free: pooling stands in for the learned compressors)"

    spatial_share: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 < self.spatial_share < 1.0:
            raise CompressionError(
                f"spatial_share must lie strictly between 0 and 1, got {self.spatial_share}"
            )

    def reduce(
        self,
        video: EncodedVideo,
        segments: Sequence[SegmentSpan],
        question: str,
        *,
        budget: int,
        hooks: BackboneHooks,
    ) -> CompressionResult:
        h, w = video.grid
        total = min(budget // len(segments), h * w + max(len(s.groups) for s in segments))
        if total < 2:
            why = f"budget {budget} gives under 2 tokens to each of {len(segments)} segments"
            return empty_result(self.name, video, segments, why)
        p, t = split_tokens(total, groups=max(len(s.groups) for s in segments), cells=h * w)
        return CompressionResult(
            method=self.name,
            segments=[self._segment(video, s, total) for s in segments],
            kept_frames=frames_of_groups(video, range(video.embeds.shape[0]), segments),
            raw_tokens=raw_token_count(video),
            segment_tokens=[total] * len(segments),
            extra={"tokens_per_segment": total, "spatial_tokens": p, "temporal_tokens": t},
        )

    def _segment(self, video: EncodedVideo, span: SegmentSpan, total: int) -> VisualSegment:
        h, w = video.grid
        groups = list(span.groups)

        def run(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return compress_segment(
                features[groups].reshape(len(groups), h, w, -1), total, self.spatial_share
            )

        embeds, positions = run(video.embeds)
        deepstack = [run(level)[0] for level in video.deepstack]
        return VisualSegment(timestamp_text(span.centre), embeds, positions, deepstack)
