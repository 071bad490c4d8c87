"""XComp: "One Token per Highly Selective Frame" — token merging, QC-Comp frame selection, LP-Comp.

Zhang et al., NeurIPS 2025, arXiv 2604.14149; authors' code github.com/ZheyuAqaZhang/XComp (MIT), base model
VideoChat-Flash-2B (28-layer Qwen2.5-1.5B LLM, 16 tokens per frame from a ToMe projector).

1. Per-frame reduction: ToMe to 16 tokens per frame (``tome16_mlp_hd64.py``). On Qwen3-VL a group holds
   2 frames whose tokens are already fused, so each group is merged to 32 tokens (16 per frame).
2. QC-Comp (inference only), when the sampled frames exceed ``k = floor(B / 16)``: windows of 64 frames,
   stride 32, in 8-frame clips (the authors' ``EXTRA_PARAM_SCORE_TYPE=segments_8_4``: windows of 8 clips,
   stride 4 clips, in ``get_clip_scores``); each window is a fresh sequence ``[prefix, window, question]``
   with local positions (the paper's fix for position bias); per layer in the band 6..23 (0-based, of 28:
   ``range(6, 24)`` in ``modeling_videochat_flash.py``) a clip scores the mean attention from the question
   rows to its tokens, averaged over heads; per clip the mean over the windows holding it, then the sum over
   the band; the top clips are kept until ``k`` frames, back in temporal order.
3. LP-Comp (prefill only): after 1-based decoder layer ``l`` each frame keeps its *last* ``N(l + 1)`` tokens,
   ``N(i) = 1 + int(15 * 0.5 * (1 + cos(i * pi / L)) + 0.5)`` (the authors' "Cosine" schedule with
   ``EXTRA_PARAM_ALWAYS_SUFFIX``: ``next_idx = prev_idx[-len(next_idx):]``). In 0-based terms layer ``j``
   sees ``N(j + 1)`` tokens per frame — mean 8.25 over 28 layers, 1 at the last ones — so the keep rule
   after 0-based layer ``j`` keeps ``N(j + 2)``.

Where ours departs (labelled training-free):
- no supervised compression tuning: LP-Comp's gains need it (paper: training-free progressive 39.7 vs 41.8
  baseline on LVBench; 44.3 after tuning); ``lp_comp`` is a switch;
- the selection unit is a group (2 frames), clips are 4 groups, and the budget buys ``floor(B / 32)`` groups
  (``2 * floor(B / 32)`` frames: a lone frame cannot be split from its group's fused tokens);
- the authors score frames on a full-video pass with cyclically shifted outer windows (clips at a window's
  edges marked 1e9 and skipped); we score each clip once per 64-frame window holding it, with one extra
  window flush with the end when the stride does not reach it, and select whole clips (a partial clip for the
  remainder, see :func:`select_clips`);
- token similarity for merging uses the features, not head-averaged features (see ``compressors.tome``).
"""

from __future__ import annotations

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
    KeepRule,
    Method,
    SegmentSpan,
    VisualSegment,
    empty_result,
    frames_of_groups,
    grid_positions,
    raw_token_count,
    real_groups,
    span_tokens,
    timestamp_text,
)
from .tome import merge_like, merge_tracked


def lp_schedule(num_layers: int, start_tokens: int = 16) -> list[int]:
    """LP-Comp's tokens per frame ``N(i)`` for ``i = 0..L``: ``1 + int((s-1) * 0.5 * (1 + cos(i*pi/L)) + 0.5)``.

    For ``L = 28``, ``s = 16``: ``[16,16,16,16,15,15,14,14,13,12,12,11,10,9,9,8,7,6,5,5,4,3,3,2,2,1,1,1,1]``.
    """
    if num_layers < 1 or start_tokens < 1:
        raise CompressionError(
            f"lp_schedule needs num_layers >= 1 and start_tokens >= 1, got {num_layers}, {start_tokens}"
        )
    span = start_tokens - 1
    return [
        1 + int(span * 0.5 * (1 + math.cos(i * math.pi / num_layers)) + 0.5) for i in range(num_layers + 1)
    ]


def layer_counts(num_layers: int, start_tokens: int = 16) -> list[int]:
    """Tokens per frame each 0-based decoder layer ``j`` sees under LP-Comp: ``N(j + 1)``, layer 0 ``N(0)``.

    Layer 0 sees the input (``N(0)``; for ``L = 28``, ``N(1) == N(0)`` so this matches the authors exactly).
    """
    n = lp_schedule(num_layers, start_tokens)
    return [n[0]] + n[2:]


def lp_keep_rule(
    sizes: Sequence[int], num_layers: int, *, frames_per_group: int = 2, start_tokens: int = 16
) -> KeepRule:
    """The LP-Comp keep rule over visual blocks of ``sizes`` tokens (one block per group, in order).

    After 0-based layer ``j`` a block keeps its last ``min(size, frames_per_group * N(j + 2))`` tokens (the
    last layer keeps what it had). ``alive`` holds original indices into the concatenated blocks.
    """
    n = lp_schedule(num_layers, start_tokens)
    size_t = torch.as_tensor(list(sizes), dtype=torch.long)
    starts = torch.cumsum(size_t, 0) - size_t

    def keep(layer: int, alive: torch.Tensor) -> torch.Tensor:
        quota = frames_per_group * n[min(layer + 2, num_layers)]
        block = torch.searchsorted(starts, alive.cpu(), right=True) - 1
        offset = alive.cpu() - starts[block]
        return (offset >= size_t[block] - quota).to(alive.device)

    return keep


def qc_layers(num_layers: int) -> list[int]:
    """QC-Comp's layer band: 6..23 of 28 (0-based, inclusive), scaled to other depths (~21%–82%)."""
    lo = min(int(6 * num_layers / 28 + 0.5), num_layers - 1)
    hi = min(int(23 * num_layers / 28 + 0.5), num_layers - 1)
    return list(range(lo, max(lo, hi) + 1))


def qc_windows(num_clips: int, window_clips: int = 8, stride_clips: int = 4) -> list[range]:
    """Windows of ``window_clips`` clips every ``stride_clips`` clips, plus one flush with the end if needed.

    64-frame windows, stride 32, of 8-frame clips (the authors' ``segments_8_4``). A video of at most one
    window is one window.
    """
    if num_clips <= window_clips:
        return [range(num_clips)]
    windows = [range(s, s + window_clips) for s in range(0, num_clips - window_clips + 1, stride_clips)]
    if windows[-1].stop < num_clips:
        windows.append(range(num_clips - window_clips, num_clips))
    return windows


def select_clips(
    clip_scores: Sequence[float] | torch.Tensor,
    frames_to_keep: int,
    clip_frames: int = 8,
    *,
    num_frames: int | None = None,
) -> list[int]:
    """Kept frame indices, ascending: the best clips whole until ``frames_to_keep`` frames.

    Clip ``c`` covers frames ``[c * clip_frames, (c+1) * clip_frames)``; the last clip is partial when
    ``num_frames`` (default ``len(clip_scores) * clip_frames``) says so. Clips go by score (ties: earlier
    first; NaN scores last); when the next clip holds more frames than remain, that many of its frames are
    taken, spread evenly across it (so it still covers its moment). Keeps ``min(frames_to_keep, num_frames)``
    frames. Any unit works: XComp on Qwen3-VL passes groups.
    """
    scores = torch.nan_to_num(torch.as_tensor(clip_scores, dtype=torch.float64), nan=-math.inf)
    total = len(scores) * clip_frames if num_frames is None else num_frames
    if clip_frames < 1 or -(-total // clip_frames) != len(scores):
        raise CompressionError(f"{len(scores)} clips of {clip_frames} cannot cover {total} frames")
    left, kept = min(max(frames_to_keep, 0), total), []
    for c in torch.argsort(scores, descending=True, stable=True).tolist():
        if left == 0:
            break
        frames = range(c * clip_frames, min((c + 1) * clip_frames, total))
        take = min(left, len(frames))
        kept += [frames[(2 * i + 1) * len(frames) // (2 * take)] for i in range(take)]
        left -= take
    return sorted(kept)


def merge_group(video: EncodedVideo, g: int, keep: int) -> VisualSegment:
    """Group ``g`` merged to ``keep`` tokens (ToMe, deterministic: its ``source`` says so), DeepStack alike,
    positions of the destinations."""
    m = merge_tracked(video.embeds[g], keep)
    h, w = video.grid
    return VisualSegment(
        text=timestamp_text(float(video.group_times[g])),
        embeds=m.embeds,
        positions=grid_positions(h, w)[m.destinations.cpu()],
        deepstack=[merge_like(level[g], m.assignment) for level in video.deepstack],
        source=("tome", g, keep),
    )


def clip_scores(
    clips: Sequence[Sequence[VisualSegment]],
    question: str,
    hooks: BackboneHooks,
    *,
    window_clips: int,
    stride_clips: int,
) -> torch.Tensor:
    """QC-Comp score per clip ``[C]``: per band layer the mean over windows holding it, summed over the band."""
    layers = qc_layers(hooks.num_layers)
    sums = torch.zeros(len(layers), len(clips))
    counts = torch.zeros(len(clips))
    for window in qc_windows(len(clips), window_clips, stride_clips):
        att = hooks.clip_attention([clips[c] for c in window], question, layers)
        if tuple(att.shape) != (len(layers), len(window)):
            raise CompressionError(
                f"clip_attention returned {tuple(att.shape)}, expected [{len(layers)}, {len(window)}]"
            )
        sums[:, window.start : window.stop] += att.float().cpu()
        counts[window.start : window.stop] += 1
    return (sums / counts).sum(0)


@dataclass(frozen=True, kw_only=True)
class XComp(Method):
    """XComp, training-free: ToMe to 16 tokens per frame, QC-Comp selection, LP-Comp keep rule."""

    name: ClassVar[str] = "xcomp"
    question_conditioned: ClassVar[bool] = True
    label: ClassVar[str] = "XComp (training-free: ToMe + QC-Comp + LP-Comp, no compression tuning)"

    tokens_per_frame: int = 16
    window_frames: int = 64
    window_stride: int = 32
    clip_frames: int = 8
    lp_comp: bool = True

    def __post_init__(self) -> None:
        sizes = (self.tokens_per_frame, self.window_frames, self.window_stride, self.clip_frames)
        if min(sizes) < 1 or self.window_frames % self.clip_frames or self.window_stride % self.clip_frames:
            raise CompressionError(
                f"XComp needs positive sizes, windows and stride in whole clips, got {self.options()}"
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
        fpg = video.frames_per_group
        per_group = min(video.embeds.shape[1], fpg * self.tokens_per_frame)
        if budget < per_group:
            return empty_result(
                self.name, video, segments, f"budget {budget} is below one group ({per_group})"
            )
        real = real_groups(video, segments)
        blocks = [merge_group(video, g, per_group) for g in real]
        picked, scores = self._select(blocks, budget // per_group, question, hooks, fpg)
        groups = [real[i] for i in picked]
        kept = [blocks[i] for i in picked]
        sizes = [b.num_tokens for b in kept]
        frames = frames_of_groups(video, groups, segments)
        extra = self._report(sizes, hooks.num_layers, fpg, kept_frames=len(frames))
        return CompressionResult(
            method=self.name,
            segments=kept,
            kept_frames=frames,
            raw_tokens=raw_token_count(video),
            segment_scores=_span_scores(segments, real, scores, max(1, self.clip_frames // fpg)),
            segment_tokens=span_tokens(segments, dict.fromkeys(groups, per_group)),
            keep=self._keep_rule(sizes, hooks.num_layers, fpg),
            extra=extra | {"qc_comp": scores is not None},
        )

    def _select(
        self, blocks: list[VisualSegment], groups_to_keep: int, question: str, hooks: BackboneHooks, fpg: int
    ) -> tuple[list[int], torch.Tensor | None]:
        """Indices into ``blocks`` to keep (all when they fit) and the clip scores (None without QC-Comp)."""
        if groups_to_keep >= len(blocks):
            return list(range(len(blocks))), None
        per_clip = max(1, self.clip_frames // fpg)
        clips = [blocks[i : i + per_clip] for i in range(0, len(blocks), per_clip)]
        windows = (self.window_frames // self.clip_frames, self.window_stride // self.clip_frames)
        scores = clip_scores(clips, question, hooks, window_clips=windows[0], stride_clips=windows[1])
        return select_clips(scores, groups_to_keep, per_clip, num_frames=len(blocks)), scores

    def _keep_rule(self, sizes: list[int], num_layers: int, fpg: int) -> KeepRule | None:
        if not self.lp_comp:
            return None
        return lp_keep_rule(sizes, num_layers, frames_per_group=fpg, start_tokens=self.tokens_per_frame)

    def _report(self, sizes: list[int], num_layers: int, fpg: int, *, kept_frames: int) -> dict:
        """Frames kept, tokens into the LLM, at the last layer, and the mean over layers (LP-Comp)."""
        counts = layer_counts(num_layers, self.tokens_per_frame) if self.lp_comp else [self.tokens_per_frame]
        per_layer = [sum(min(size, fpg * n) for size in sizes) for n in counts]
        return {
            "frames_kept": kept_frames,
            "groups_kept": len(sizes),
            "tokens_into_llm": sum(sizes),
            "tokens_at_last_layer": per_layer[-1],
            "mean_tokens_per_layer": sum(per_layer) / len(per_layer),
            "qc_layers": qc_layers(num_layers),
            "lp_comp": self.lp_comp,
        }


def _span_scores(
    segments: Sequence[SegmentSpan], real: list[int], scores: torch.Tensor | None, groups_per_clip: int
) -> list[float] | None:
    """Each span's QC-Comp score: the mean score of the clips its real groups belong to (None without QC-Comp)."""
    if scores is None:
        return None
    by_group = {g: float(scores[i // max(1, groups_per_clip)]) for i, g in enumerate(real)}
    out = []
    for s in segments:
        values = [by_group[g] for g in s.groups if g in by_group]
        out.append(sum(values) / len(values) if values else float("nan"))
    return out
