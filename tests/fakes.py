"""Fakes for compressor tests (and anyone else's): an encoded video and backbone hooks, no model needed.

``make_video`` builds a ``FakeVideo`` satisfying ``compressors.base.EncodedVideo``, with its segments.
``FakeHooks`` satisfies ``BackboneHooks``: it recognises groups by their timestamp text, lets a test say which
groups draw the question's attention or read as relevant, and records every call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from compressors.base import SegmentSpan, VisualSegment, build_segments, timestamp_text


@dataclass
class FakeVideo:
    """``EncodedVideo`` with plain tensors: embeds [G, P, D], deepstack L x [G, P, D]."""

    embeds: torch.Tensor
    deepstack: list[torch.Tensor]
    grid: tuple[int, int]
    group_times: torch.Tensor
    frames_per_group: int = 2


def make_video(
    frames: int = 32,
    *,
    grid: tuple[int, int] = (4, 6),
    dim: int = 16,
    levels: int = 3,
    seed: int = 0,
    fps: float = 1.0,
    segment_frames: int = 8,
    embeds: torch.Tensor | None = None,
) -> tuple[FakeVideo, list[SegmentSpan]]:
    """A fake encoded video of ``frames`` sampled frames and its segments, as the pipeline makes them.

    ``ceil(frames / 2)`` groups: nothing pads a short last segment; an odd count ends in a group holding the
    last frame and its duplicate (Qwen3-VL's own rule). DeepStack level ``i`` is ``(i + 2) * embeds``: any
    linear compression applied identically to both keeps that relation, which tests check. ``embeds``
    overrides the random ones (``[G, P, D]``).
    """
    fpg = 2
    groups = -(-frames // fpg)
    h, w = grid
    if embeds is None:
        embeds = torch.randn(groups, h * w, dim, generator=torch.Generator().manual_seed(seed))
    times = torch.arange(frames, dtype=torch.float64) / fps
    video = FakeVideo(
        embeds=embeds,
        deepstack=[(i + 2) * embeds for i in range(levels)],
        grid=grid,
        group_times=_group_times(times, groups, fpg),
    )
    return video, build_segments(times.tolist(), segment_frames=segment_frames, num_groups=groups)


def _group_times(times: torch.Tensor, groups: int, fpg: int) -> torch.Tensor:
    """Mean timestamp of each group's frames, a duplicate frame repeating the last time."""
    padded = torch.cat([times, times[-1:].expand(groups * fpg - len(times))])
    return padded.reshape(groups, fpg).mean(1).float()


@dataclass
class FakeHooks:
    """Backbone hooks whose answers a test controls.

    ``attention``: per group, extra attention a clip holding it receives in a window (default 0; base 1).
    ``relevant``: per group, the Yes-minus-No logit it adds to a segment's prompt (default 0).
    Every call is recorded in ``calls`` as ``(hook name, details dict)``.
    """

    video: FakeVideo
    num_layers: int = 28
    attention: dict[int, float] = field(default_factory=dict)
    relevant: dict[int, float] = field(default_factory=dict)
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def groups_of(self, segments: Iterable[VisualSegment]) -> list[int]:
        """Groups behind visual segments, read from their timestamp text."""
        by_text = {timestamp_text(float(t)): g for g, t in enumerate(self.video.group_times)}
        return [by_text[s.text] for s in segments if s.text in by_text]

    def window_scores(
        self,
        segments: Sequence[VisualSegment],
        question: str,
        *,
        windows: Sequence[Sequence[Sequence[int]]],
        layers: Sequence[int],
        keep=None,
        **reuse,  # prefixes / prefix_key: nothing to reuse in a fake
    ) -> list[torch.Tensor]:
        groups = self.groups_of(segments)
        clips = [[[groups[s] for s in clip] for clip in window] for window in windows]
        details = {
            "groups": groups,
            "windows": clips,
            "question": question,
            "layers": list(layers),
            "keep": keep,
        }
        self.calls.append(("window_scores", details))
        scores = []
        for window in clips:
            row = torch.tensor([1.0 + sum(self.attention.get(g, 0.0) for g in clip) for clip in window])
            scores.append(row.expand(len(layers), -1).clone())
        return scores

    def next_token_logits(
        self,
        prompts: Sequence[Sequence[VisualSegment]],
        *,
        system: str,
        user_text: str,
        words: Sequence[str],
        **reuse,  # prefixes / prefix_keys: nothing to reuse in a fake
    ) -> torch.Tensor:
        groups = [self.groups_of(p) for p in prompts]
        details = {"groups": groups, "system": system, "user_text": user_text, "words": list(words)}
        self.calls.append(("next_token_logits", details))
        margin = torch.tensor([sum(self.relevant.get(g, 0.0) for g in gs) for gs in groups])
        return torch.stack([margin, torch.zeros_like(margin)], dim=1)
