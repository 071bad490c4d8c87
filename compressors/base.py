"""Shared types of every compressor: what goes in, what comes out, and the backbone hooks a method may call.

Shape letters, the same everywhere in this project:
    T frames, G groups (Qwen3-VL: 2 consecutive frames per group), P tokens per group (h*w merged grid),
    D hidden size, K kept tokens, S segments, L DeepStack levels.

A compressor never imports ``model_zoo`` (and the reverse): the encoded video and the backbone's hooks reach
it as the small Protocols declared here, and what it returns is plain tensors that any engine can consume.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch

#: Per-layer keep rule used during prefill (XComp's LP-Comp). Called after 0-based decoder layer ``layer``
#: with ``alive`` = the original indices (into the concatenation of all visual segments' tokens, in order)
#: of the visual tokens still in the sequence; returns a bool mask over ``alive`` of those to keep. Text
#: tokens are never dropped. Returning ``None`` keeps everything. What remains after a drop is renumbered
#: with contiguous positions (as XComp's authors do), and decoding goes on from there at every layer.
KeepRule = Callable[[int, torch.Tensor], "torch.Tensor | None"]


class CompressionError(ValueError):
    """A compressor was given inputs it cannot work with (the message says what and what is valid)."""


@runtime_checkable
class EncodedVideo(Protocol):
    """The backbone's visual tokens for one video, encoded once and shared by every method.

    ``model_zoo``'s ``VisualTokens`` satisfies this structurally.
    """

    embeds: torch.Tensor  # [G, P, D] merger output, row-major over the (h, w) merged grid
    deepstack: list[torch.Tensor]  # L x [G, P, D], aligned token for token with ``embeds``
    grid: tuple[int, int]  # (h, w) merged grid of every group; P == h * w
    group_times: torch.Tensor  # [G] seconds: mean of the group's frame timestamps
    frames_per_group: int  # 2 on Qwen3-VL


@dataclass(frozen=True)
class SegmentSpan:
    """One temporal segment: ``frames`` index the sampled frames (real ones only), ``groups`` the encoded groups.

    Nothing pads a short segment: its groups hold its frames and, when the video's frame count is odd, in the
    last group the one duplicate of the last frame that Qwen3-VL itself adds to make the count even
    (``padded``; transformers' ``Qwen3VLVideoProcessor.patchify``). Every group holds at least one real frame.
    """

    index: int
    frames: range
    groups: range
    start: float
    end: float
    centre: float
    padded: int = 0  # duplicates of the last frame in its groups (0, or 1 after an odd frame count)


@dataclass
class VisualSegment:
    """One block of visual tokens handed to the answering LLM, optionally preceded by a text.

    ``positions`` are *local* (t, h, w) integers >= 0 inside the block; the engine offsets the block like
    Qwen3-VL offsets one image: token (t, h, w) of a block starting at text position p sits at
    (p + t, p + h, p + w), and the text after the block continues at p + max(positions) + 1.

    ``source``, when not None, says what the tensors are a deterministic function of within their encoded
    video, e.g. ``("tome", group, tokens)``: caches may then key the segment by it instead of its values
    (``pipeline.cache``). Leave it None unless the same source always gives the same tensors.
    """

    text: str | None  # e.g. "<12.5 seconds>", placed before the block; None for no text
    embeds: torch.Tensor  # [K, D]
    positions: torch.Tensor  # [K, 3] long, local (t, h, w)
    deepstack: list[torch.Tensor] = field(default_factory=list)  # L x [K, D]
    source: tuple | None = None

    def __post_init__(self) -> None:
        k = self.embeds.shape[0]
        if self.embeds.ndim != 2 or k == 0:
            raise CompressionError(f"a visual segment needs embeds [K>0, D], got {tuple(self.embeds.shape)}")
        if tuple(self.positions.shape) != (k, 3):
            raise CompressionError(f"positions must be [{k}, 3], got {tuple(self.positions.shape)}")
        if self.positions.dtype != torch.long or bool((self.positions < 0).any()):
            raise CompressionError("positions must be non-negative long integers")
        for level in self.deepstack:
            if level.shape != self.embeds.shape:
                raise CompressionError(
                    f"DeepStack features must match embeds {tuple(self.embeds.shape)}, got {tuple(level.shape)}"
                )

    @property
    def num_tokens(self) -> int:
        return int(self.embeds.shape[0])


@dataclass
class CompressionResult:
    """What one method hands to the answering LLM, plus everything the UI and run card report."""

    method: str
    segments: list[VisualSegment]  # in temporal order
    kept_frames: list[int]  # indices into the sampled frames, ascending (a duplicate frame is not one)
    raw_tokens: int  # visual tokens of all sampled frames, uncompressed
    segment_scores: list[float] | None = None  # per SegmentSpan, where the method scores segments
    segment_tokens: list[int] | None = None  # tokens given to each SegmentSpan into the LLM
    keep: KeepRule | None = None  # per-layer rule for prefill (LP-Comp), else None
    extra: dict = field(default_factory=dict)  # method-specific accounting (JSON-serialisable)

    @property
    def llm_tokens(self) -> int:
        """Visual tokens the LLM receives at its input (timestamp text not counted)."""
        return sum(s.num_tokens for s in self.segments)


@runtime_checkable
class BackboneHooks(Protocol):
    """What a compressor may ask of the backbone; implemented by ``model_zoo``'s backbone adapter."""

    num_layers: int  # decoder layers of the answering LLM

    def window_scores(
        self,
        segments: Sequence[VisualSegment],
        question: str,
        *,
        windows: Sequence[Sequence[Sequence[int]]],
        layers: Sequence[int],
        keep: KeepRule | None,
    ) -> list[torch.Tensor]:
        """QC-Comp's attention probe over one chunk (XComp, arXiv 2604.14149), as the authors compute it.

        The prompt [chat prefix, ``segments`` in order, ``question``] runs through the LLM, ``keep`` dropping
        visual tokens between layers (LP-Comp). At each chosen 0-based layer, each window (a list of clips,
        each a list of indices into ``segments``) re-runs that layer on its own rows of the layer's input
        [rows before the video, the window's segments, the question and its closing turn tokens] with its own
        positions. Returns per window ``[len(layers), clips]``: the attention from the question rows to each
        clip's visual tokens, averaged over heads, question rows and the clip's tokens. Full attention maps
        are never materialised.
        """
        ...

    def next_token_logits(
        self,
        prompts: Sequence[Sequence[VisualSegment]],
        *,
        system: str,
        user_text: str,
        words: Sequence[str],
    ) -> torch.Tensor:
        """Logits of ``words`` (each a single token) at the last prompt position, batched over prompts.

        Prompt b is the chat [system, user: prompts[b]'s segments then ``user_text``, generation prompt].
        Returns ``[len(prompts), len(words)]`` in float32.
        """
        ...


class Compressor(Protocol):
    """Every method: ``name`` in the registry, options as keyword-only constructor arguments."""

    name: str
    label: str  # shown in the UI column header

    def compress(
        self,
        video: EncodedVideo,
        segments: Sequence[SegmentSpan],
        question: str,
        *,
        budget: int,
        hooks: BackboneHooks,
    ) -> CompressionResult: ...

    def options(self) -> dict:
        """The method's settings, for the run card."""
        ...


class Method:
    """What every compressor shares: input checks, "a budget that covers the input changes nothing" (the
    stock layout is returned), and its options for the run card.

    A method is a frozen keyword-only dataclass subclassing this, with ``name``/``label`` class variables,
    and implements only :meth:`reduce` (called when the budget is below the raw token count; XComp, which
    always applies its stages, overrides :meth:`compress`).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    #: Whether the result depends on the question. False: the same video, options and budget always compress
    #: the same way, so a follow-up question may reuse the compression (``pipeline.cache.COMPRESSIONS``).
    question_conditioned: ClassVar[bool] = True

    def options(self) -> dict:
        return asdict(self)

    def compress(
        self,
        video: EncodedVideo,
        segments: Sequence[SegmentSpan],
        question: str,
        *,
        budget: int,
        hooks: BackboneHooks,
    ) -> CompressionResult:
        check_inputs(video, segments, budget)
        if budget >= raw_token_count(video):
            return passthrough(self.name, video, segments)
        return self.reduce(video, segments, question, budget=budget, hooks=hooks)

    def reduce(
        self,
        video: EncodedVideo,
        segments: Sequence[SegmentSpan],
        question: str,
        *,
        budget: int,
        hooks: BackboneHooks,
    ) -> CompressionResult:
        raise NotImplementedError


def timestamp_text(seconds: float) -> str:
    """Qwen3-VL's and Tempo's time marker: ``<12.5 seconds>`` (one decimal)."""
    return f"<{seconds:.1f} seconds>"


def raw_token_count(video: EncodedVideo) -> int:
    """Visual tokens of the whole video uncompressed (G * P)."""
    return int(video.embeds.shape[0] * video.embeds.shape[1])


def grid_positions(h: int, w: int, t: int = 0) -> torch.Tensor:
    """Local (t, row, col) positions of an h x w grid, row-major: ``[h*w, 3]`` long."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([torch.full_like(rows, t), rows, cols], dim=-1).reshape(-1, 3)


def group_segment(video: EncodedVideo, g: int) -> VisualSegment:
    """Group ``g`` exactly as the stock model sees it: its timestamp, then its full grid as one block."""
    h, w = video.grid
    return VisualSegment(
        text=timestamp_text(float(video.group_times[g])),
        embeds=video.embeds[g],
        positions=grid_positions(h, w),
        deepstack=[level[g] for level in video.deepstack],
    )


def frames_of_groups(
    video: EncodedVideo, groups: Sequence[int], segments: Sequence[SegmentSpan]
) -> list[int]:
    """Sampled-frame indices covered by ``groups`` (real frames: a duplicate is not one), ascending."""
    real = {f for s in segments for f in s.frames}
    fpg = video.frames_per_group
    return sorted({g * fpg + i for g in groups for i in range(fpg)} & real)


def passthrough(method: str, video: EncodedVideo, segments: Sequence[SegmentSpan]) -> CompressionResult:
    """The uncompressed video, laid out as the stock model lays it out (every group its own block).

    Every method but XComp returns this when the budget covers the raw tokens: a budget larger than the input
    changes nothing, so the answer then equals the stock model's.
    """
    groups = range(video.embeds.shape[0])
    return CompressionResult(
        method=method,
        segments=[group_segment(video, g) for g in groups],
        kept_frames=frames_of_groups(video, groups, segments),
        raw_tokens=raw_token_count(video),
        segment_tokens=[len(s.groups) * video.embeds.shape[1] for s in segments],
    )


# --- helpers every method shares ---------------------------------------------------------------------------


def check_inputs(video: EncodedVideo, segments: Sequence[SegmentSpan], budget: int) -> None:
    """Refuse inputs no method can work with; the message names what came and what is valid.

    Checks: ``budget`` a positive integer; ``embeds`` ``[G>0, P=h*w, D]``; every DeepStack level the same
    shape; ``group_times`` ``[G]``; segments non-empty, tiling the groups ``0..G-1`` in order, each with
    frames inside its own groups and a real frame in every one of them (no group of padding only).
    """
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1:
        raise CompressionError(f"budget must be a positive integer number of tokens, got {budget!r}")
    _check_video(video)
    _check_segments(video, segments)


def _check_video(video: EncodedVideo) -> None:
    shape = tuple(video.embeds.shape)
    h, w = video.grid
    if len(shape) != 3 or shape[0] == 0 or shape[1] != h * w:
        raise CompressionError(f"embeds must be [G>0, P={h}*{w}, D], got {shape}")
    for i, level in enumerate(video.deepstack):
        if tuple(level.shape) != shape:
            raise CompressionError(f"DeepStack level {i} must match embeds {shape}, got {tuple(level.shape)}")
    if tuple(video.group_times.shape) != shape[:1]:
        raise CompressionError(f"group_times must be [{shape[0]}], got {tuple(video.group_times.shape)}")
    if video.frames_per_group < 1:
        raise CompressionError(f"frames_per_group must be >= 1, got {video.frames_per_group}")


def _check_segments(video: EncodedVideo, segments: Sequence[SegmentSpan]) -> None:
    if len(segments) == 0:
        raise CompressionError("at least one segment is needed (segments must tile the encoded groups)")
    fpg, expected = video.frames_per_group, 0
    for s in segments:
        if s.groups.step != 1 or len(s.groups) == 0 or s.groups.start != expected:
            raise CompressionError(
                f"segments must tile the groups in order: segment {s.index} covers groups {s.groups}, "
                f"expected a non-empty range starting at {expected}"
            )
        spare = s.groups.stop * fpg - s.frames.stop
        if s.frames.start != s.groups.start * fpg or not 0 <= spare < fpg or s.padded != spare:
            raise CompressionError(
                f"segment {s.index}: frames {s.frames} must fill groups {s.groups} ({fpg} frames each, "
                f"the last group at least one real frame), with padded={spare}, got {s.padded}"
            )
        expected = s.groups.stop
    if expected != video.embeds.shape[0]:
        raise CompressionError(
            f"segments cover groups 0..{expected - 1}, the video has {video.embeds.shape[0]}"
        )


def real_groups(video: EncodedVideo, segments: Sequence[SegmentSpan]) -> list[int]:
    """Groups holding at least one real frame, ascending: every group of segments that pass
    :func:`check_inputs` (nothing pads a segment; a group never holds only a duplicate)."""
    fpg = video.frames_per_group
    return sorted({f // fpg for s in segments for f in s.frames})


def span_tokens(segments: Sequence[SegmentSpan], group_tokens: dict[int, int]) -> list[int]:
    """Tokens given to each span, from the tokens given to each group (absent groups count 0)."""
    return [sum(group_tokens.get(g, 0) for g in s.groups) for s in segments]


def empty_result(
    method: str, video: EncodedVideo, segments: Sequence[SegmentSpan], why: str
) -> CompressionResult:
    """Nothing fits: no visual tokens at all (ToMe's rule: an impossible budget does nothing, never raises).

    ``why`` goes into ``extra["note"]``; the pipeline then tells the user the budget is too small for the method.
    """
    return CompressionResult(
        method=method,
        segments=[],
        kept_frames=[],
        raw_tokens=raw_token_count(video),
        segment_tokens=[0] * len(segments),
        extra={"note": why},
    )


def build_segments(
    frame_times: Sequence[float],
    *,
    segment_frames: int = 8,
    frames_per_group: int = 2,
    num_groups: int | None = None,
) -> list[SegmentSpan]:
    """Spans of ``segment_frames`` frames over the encoded groups (the last may be short, never padded).

    ``frame_times`` are the sampled frames' timestamps (seconds). ``num_groups``, when given, is how many
    groups were encoded and must be ``ceil(T / frames_per_group)`` (an odd T gets one duplicate frame in its
    last group, as Qwen3-VL encodes it). A span's start and end are its first and last frame's times, its
    centre their midpoint.
    """
    if segment_frames < frames_per_group or segment_frames % frames_per_group:
        raise CompressionError(
            f"segment_frames must be a multiple of {frames_per_group}, got {segment_frames}"
        )
    real = len(frame_times)
    groups = math.ceil(real / frames_per_group)
    if num_groups is not None and num_groups != groups:
        raise CompressionError(
            f"{real} frames make {groups} groups of {frames_per_group}, not {num_groups}: nothing pads a video"
        )
    per = segment_frames // frames_per_group
    spans = []
    for i, g0 in enumerate(range(0, groups, per)):
        gs = range(g0, min(g0 + per, groups))
        frames = range(gs.start * frames_per_group, min(gs.stop * frames_per_group, real))
        start, end = float(frame_times[frames.start]), float(frame_times[frames.stop - 1])
        padded = gs.stop * frames_per_group - frames.stop
        spans.append(SegmentSpan(i, frames, gs, start, end, (start + end) / 2, padded=padded))
    return spans
