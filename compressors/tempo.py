"""Tempo: a small VLM as a query-aware compressor, with Adaptive Token Allocation (ATA).

Fei et al., "Small Vision-Language Models are Smart Compressors for Long Video Understanding",
arXiv 2604.08120; authors' code github.com/FeiElysia/Tempo (Apache-2.0). The published model pairs
Qwen3-VL-2B (the compressor) with a Qwen3-4B answering LLM: per 8-frame segment the small VLM reads the
query and writes learned memory tokens; ATA gives each segment between 4 and 128 of them by its relevance
and keeps each segment's *first* k_i (strategy "head", the released setting); each kept segment reaches the
LLM as ``<X.X seconds>`` then its tokens, the time being ``(8 i + 4) / real_fps`` with one decimal
(``compute_segment_timestamp`` of ``tempo/mm_datautils.py``: the sampled frame 8 i + 4, frames timed
``index / real_fps``), whatever the segment's length.

Our training-free version on the shared backbone (the memory tokens and projector need Tempo's weights):
- relevance prior: the backbone answers Tempo's inference prompt ("prompt 1" of ``tempo/mm_datautils.py``,
  verbatim in :data:`SYSTEM_PROMPT`) for each segment's frames, each group as the stock model sees it, and
  ``s = sigmoid(logit("Yes") - logit("No"))`` at the last prompt position — what the authors' router reads
  (``Qwen3VLTower.compute_relevance``: the lm_head's Yes-minus-No row on the last prompt state);
- ATA unchanged (:func:`allocate_tokens`);
- each segment keeps ``k_i`` of its *own visual tokens* by token merging (``compressors.tome``: ToMe's
  size-weighted bipartite matching), not the first ``k_i`` memory tokens: raw visual tokens are not
  front-loaded, so head truncation would keep only the top rows of the first frame. This is not the authors'
  "tome" strategy either: theirs (``VLMMultimodalProcessor.tome_merge``, in ``tempo/vlm_multimodal_processor.py``)
  merges the *memory tokens* of a segment, removes up to ceil(n/2) tokens a step, averages each destination
  with its sources unweighted (no sizes carried between steps) and returns ``[unmerged, destinations]``.
  Positions are the merge destinations' original local ``(t, h, w)``;
- the segment's time is the middle of the span it covers (its first frame's time to the next segment's,
  from the frames' own timestamps): the authors' ``(8 i + 4) / real_fps`` for a full segment at an even
  rate, but a short last segment is timed at its own middle, not past the end of the video.
"""

from __future__ import annotations

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
    frames_of_groups,
    grid_positions,
    group_segment,
    raw_token_count,
    timestamp_text,
)
from .tome import merge_like, merge_tracked

#: Tempo's inference system prompt, verbatim (FeiElysia/Tempo ``tempo/mm_datautils.py``, "prompt 1").
SYSTEM_PROMPT = (
    "You are a query-conditioned visual compressor. "
    "Store in the provided memory tokens the minimal visual information needed to answer the Query. "
    "Ignore irrelevant details. "
    "Now, before compressing, answer exactly 'Yes' or 'No': is this segment relevant to the Query?"
)
#: The user turn after the segment's frames (same file).
USER_TEMPLATE = "\nQuery:\n{question}"
#: The two words whose logits make the relevance score.
WORDS = ("Yes", "No")


def allocate_tokens(
    scores: Sequence[float] | torch.Tensor, budget: int, min_tokens: int = 4, max_tokens: int = 128
) -> list[int]:
    """ATA: tokens per segment from relevance ``scores`` ``[S]`` under ``budget`` (Tempo, arXiv 2604.08120).

    The authors' ``adaptive_linear_budget_allocation`` (strategy "head"), step by step:
      1. if ``S * min_tokens > budget``: ``min_tokens = max(1, budget // S)``;
      2. flat scores (max - min < 1e-8): every segment ``min(max_tokens, budget // S)``;
      3. else ``k_i = m + floor(s_hat_i * (M - m))`` with ``s_hat`` the min-max normalised scores;
      4. only if that sums past the budget: ``k_i = m + floor(w_i * extra)``, ``w = s_hat / sum(s_hat)``,
         ``extra = budget - S * m``, the remainder +1 each to the largest ``w`` (ties: lower index first);
      5. clamp every ``k_i`` to ``[m, M]`` (as in the code, not applied to the flat case of step 2).

    Departure (ours): when ``budget < S`` even one token per segment does not fit, and the authors' code
    would give every segment 1 and exceed the budget; we give 1 token to the ``budget`` most relevant
    segments (ties: lower index) and 0 to the rest (dropped), or, with flat scores, to ``budget`` segments
    spread evenly over time. The sum never exceeds ``budget``; ``budget <= 0`` gives all zeros.
    """
    s = torch.as_tensor(scores, dtype=torch.float32).flatten()  # the authors score in float32
    n = int(s.numel())
    if n == 0 or budget <= 0:
        return [0] * n
    if budget < n:
        return _one_each(s, budget)
    m = min_tokens if n * min_tokens <= budget else max(1, budget // n)
    if float(s.max() - s.min()) < 1e-8:
        return [min(max_tokens, budget // n)] * n
    s_hat = (s - s.min()) / (s.max() - s.min())
    k = m + torch.floor(s_hat * (max_tokens - m)).long()
    if int(k.sum()) > budget:
        k = m + _split(s_hat / s_hat.sum(), budget - n * m)
    return k.clamp(m, max_tokens).tolist()


def _split(weights: torch.Tensor, extra: int) -> torch.Tensor:
    """``floor(w * extra)``, the remainder +1 each to the largest weights (ties: lower index first)."""
    k = torch.floor(weights * extra).long()
    remainder = extra - int(k.sum())
    order = torch.argsort(weights, descending=True, stable=True)
    k[order[:remainder]] += 1
    return k


def _one_each(s: torch.Tensor, budget: int) -> list[int]:
    """One token to ``budget`` (< S) segments: the most relevant, or evenly spread when scores are flat."""
    n = int(s.numel())
    if float(s.max() - s.min()) < 1e-8:
        chosen = [(2 * i + 1) * n // (2 * budget) for i in range(budget)]
    else:
        chosen = torch.argsort(s, descending=True, stable=True)[:budget].tolist()
    out = [0] * n
    for i in chosen:
        out[i] = 1
    return out


def relevance(
    video: EncodedVideo,
    segments: Sequence[SegmentSpan],
    question: str,
    hooks: BackboneHooks,
    *,
    batch_size: int = 8,
) -> list[float]:
    """Tempo's zero-shot relevance prior per segment, ``sigmoid(logit Yes - logit No)``, batched."""
    prompts = [[group_segment(video, g) for g in s.groups] for s in segments]
    user = USER_TEMPLATE.format(question=question)
    scores = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i : i + batch_size]
        logits = hooks.next_token_logits(batch, system=SYSTEM_PROMPT, user_text=user, words=WORDS)
        if tuple(logits.shape) != (len(batch), len(WORDS)):
            raise CompressionError(
                f"next_token_logits returned {tuple(logits.shape)}, expected [{len(batch)}, 2]"
            )
        scores += torch.sigmoid(logits[:, 0].float() - logits[:, 1].float()).tolist()
    return scores


def merge_segment(video: EncodedVideo, span: SegmentSpan, keep: int) -> VisualSegment:
    """One segment's tokens merged to ``keep`` (``compressors.tome``), DeepStack alike, after its time text
    (the middle of its span: see the module docstring).

    Tokens are the segment's groups in order, each row-major; a token's local position is
    ``(group within the segment, row, col)``, and a merged token takes its destination's.
    """
    groups = list(span.groups)
    h, w = video.grid
    flat = video.embeds[groups].reshape(-1, video.embeds.shape[-1])
    m = merge_tracked(flat, keep)
    positions = torch.cat([grid_positions(h, w, t=i) for i in range(len(groups))])[m.destinations.cpu()]
    deepstack = [merge_like(level[groups].reshape(flat.shape), m.assignment) for level in video.deepstack]
    return VisualSegment(timestamp_text(span.centre), m.embeds, positions, deepstack)


@dataclass(frozen=True, kw_only=True)
class Tempo(Method):
    """Tempo, training-free on the shared backbone (see the module docstring for the departures)."""

    name: ClassVar[str] = "tempo"
    question_conditioned: ClassVar[bool] = True
    label: ClassVar[str] = "Tempo (training-free: backbone relevance prior + ATA + token merging)"

    min_tokens: int = 4
    max_tokens: int = 128
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min_tokens <= self.max_tokens or self.batch_size < 1:
            raise CompressionError(
                f"Tempo needs 1 <= min_tokens <= max_tokens and batch_size >= 1, got {self.options()}"
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
        scores = relevance(video, segments, question, hooks, batch_size=self.batch_size)
        sizes = [len(s.groups) * video.embeds.shape[1] for s in segments]
        ata = allocate_tokens(scores, budget, self.min_tokens, min(self.max_tokens, max(sizes)))
        given = [min(k, size) for k, size in zip(ata, sizes, strict=True)]
        kept = [(s, k) for s, k in zip(segments, given, strict=True) if k > 0]
        groups = [g for s, _ in kept for g in s.groups]
        return CompressionResult(
            method=self.name,
            segments=[merge_segment(video, s, k) for s, k in kept],
            kept_frames=frames_of_groups(video, groups, segments),
            raw_tokens=raw_token_count(video),
            segment_scores=scores,
            segment_tokens=given,
            extra={
                "allocation": ata,
                "segments_kept": len(kept),
                "segments_dropped": len(segments) - len(kept),
            },
        )
