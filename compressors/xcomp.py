"""XComp: "One Token per Highly Selective Frame" — token merging, QC-Comp frame selection, LP-Comp.

Zhang et al., NeurIPS 2025, arXiv 2604.14149; authors' code github.com/ZheyuAqaZhang/XComp (MIT) at 61feb11,
evaluation model ``lmms-eval_videochat/benchmark_data/model/VideoChat-Flash-Qwen2_5-2B_res448_ver7``
(``modeling_videochat_flash.py``, ``modeling_qwen2_flash.py``) with the settings of
``lmms-eval_videochat/my_scripts_XComp/run.sh``; base model VideoChat-Flash-2B (28-layer Qwen2.5-1.5B LLM,
16 tokens per frame from a ToMe projector). The three stages always run in that order:

1. ToMe to 16 tokens per frame (``tome16_mlp_hd64``). On Qwen3-VL a group holds 2 frames whose tokens are
   already fused, so each group is merged to 32 tokens (16 per frame).
2. QC-Comp, when the budget cannot hold every group. As the authors' ``chat`` (``modeling_videochat_flash.py``
   ~1274-1349) and ``get_clip_scores`` (``modeling_qwen2_flash.py`` ~1273-1348) run it: the video is cut into
   chunks of 576 frames every 512 (cyclic: a chunk may wrap past the end to the start), the chunking repeated
   8 times, each shifted by 65 frames more (``EXTRA_PARAM_DUPLICATE=8``); each chunk's prompt [chat prefix,
   chunk, question, ``<|im_end|>``] runs through the LLM with LP-Comp active, and at every layer of the band
   6..23 (0-based, of 28; ``range(6, 24)``) the layer is re-run on each window of 8 clips of 8 frames, every
   4 clips (``segments_8_4``), from that layer's own input hidden states with the window's own positions
   (``model_zoo.engine_probe``): a clip scores the mean attention from the question rows and the closing
   turn tokens to its tokens, over heads. A clip held by fewer windows of its chunk than the most (the
   chunk's first and last 4 clips) is skipped (their 1e9 mark); a frame's score is, per layer, the mean over
   the chunks that scored it, summed over the band; the best frames are kept, back in temporal order.
3. LP-Comp (prefill): after 1-based decoder layer ``l`` each frame keeps its *last* ``N(l + 1)`` tokens,
   ``N(i) = 1 + int(15 * 0.5 * (1 + cos(i * pi / L)) + 0.5)`` (the authors' "Cosine" schedule with
   ``EXTRA_PARAM_ALWAYS_SUFFIX``), and what remains is renumbered with contiguous positions, decoding going
   on from there at every layer (``modeling_qwen2_flash.py`` ~1462-1463, ~1248-1249; the engine's
   ``relayout``). In 0-based terms layer ``j`` sees ``N(j + 1)`` tokens per frame — mean 8.25 over 28
   layers, 1 at the last ones — so the keep rule after 0-based layer ``j`` keeps ``N(j + 2)``.

Where ours departs from the authors, and why:
- no supervised compression tuning (training-free): LP-Comp's gains need it (paper: training-free
  progressive 39.7 vs 41.8 baseline on LVBench; 44.3 after tuning); ``lp_comp`` is a switch;
- the arena's shared budget decides how many frames are kept (``floor(B / 32)`` groups), so QC-Comp runs
  whenever the budget cannot hold every group; theirs runs only from 1024 sampled frames and keeps 2048;
- the unit is a group of 2 frames (Qwen3-VL fuses them; a lone frame cannot be split from its group): a clip
  is 4 groups, groups are selected (not frames), the 16 tokens per frame are 32 per group merged together,
  LP-Comp keeps a group's last ``2 N`` tokens, and the chunkings shift by 33 groups (66 frames, not 65);
- a video of at most one chunk (576 frames) is one chunk, not repeated or shifted (theirs would wrap it onto
  itself), its windows every 4 clips plus one flush with its end, and its edge clips keep the mean of the
  windows that hold them (no other chunk scores them);
- positions: Qwen3-VL's 3-D M-RoPE layout of the remaining rows replaces their 1-D ``arange``, for windows and
  after LP-Comp's drops alike (the text after a block continues past its extent);
- query rows: the question and its closing ``<|im_end|>\\n`` (Qwen3-VL's prompt has no time message to skip,
  their ``EXTRA_PARAM_QUERY_BIAS=27``); scores in float32 (theirs in bf16);
- token similarity for merging uses the features, not head-averaged keys (see ``compressors.tome``).
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
    Method,
    SegmentSpan,
    VisualSegment,
    check_inputs,
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


@dataclass(frozen=True)
class LPComp:
    """LP-Comp's keep rule (``compressors.base.KeepRule``) over visual blocks of ``sizes`` tokens, one block
    per group, in order: after 0-based layer ``j`` a block keeps its last ``min(size, frames_per_group *
    N(j + 2))`` tokens (the last layer keeps what it had). Called with ``alive``, the original indices of the
    visual tokens still present. A value (hashable): the same blocks and schedule give the same rule."""

    sizes: tuple[int, ...]
    num_layers: int
    frames_per_group: int = 2
    start_tokens: int = 16

    def __call__(self, layer: int, alive: torch.Tensor) -> torch.Tensor:
        n = lp_schedule(self.num_layers, self.start_tokens)
        quota = self.frames_per_group * n[min(layer + 2, self.num_layers)]
        sizes = torch.tensor(self.sizes, dtype=torch.long)
        starts = torch.cumsum(sizes, 0) - sizes
        block = torch.searchsorted(starts, alive.cpu(), right=True) - 1
        offset = alive.cpu() - starts[block]
        return (offset >= sizes[block] - quota).to(alive.device)


def lp_keep_rule(
    sizes: Sequence[int], num_layers: int, *, frames_per_group: int = 2, start_tokens: int = 16
) -> LPComp:
    """``LPComp`` over visual blocks of ``sizes`` tokens."""
    return LPComp(tuple(int(s) for s in sizes), num_layers, frames_per_group, start_tokens)


def qc_layers(num_layers: int) -> list[int]:
    """QC-Comp's layer band: 6..23 of 28 (0-based, inclusive), scaled to other depths (~21%–82%)."""
    lo = min(int(6 * num_layers / 28 + 0.5), num_layers - 1)
    hi = min(int(23 * num_layers / 28 + 0.5), num_layers - 1)
    return list(range(lo, max(lo, hi) + 1))


@dataclass(frozen=True)
class Plan:
    """QC-Comp's sizes in groups (``XComp.plan``): ``clip`` groups per clip; ``window`` and ``stride`` in
    clips; ``chunk``, ``chunk_stride`` and ``shift`` (how much further each repeated chunking starts) in
    groups; ``chunkings`` how many times the chunking is repeated."""

    clip: int
    window: int
    stride: int
    chunk: int
    chunk_stride: int
    chunkings: int
    shift: int


def chunk_starts(num_groups: int, plan: Plan) -> list[int]:
    """First group of every chunk: ``plan.chunkings`` rounds of chunks every ``chunk_stride`` groups, round r
    starting ``r * shift`` further, cyclic over the video (the authors' ``start = (i * stride + i // rounds *
    (8 // D + stride // D)) % frames``); a video of at most one chunk is one chunk from its start."""
    if num_groups <= plan.chunk:
        return [0]
    rounds = -(-num_groups // plan.chunk_stride)
    return [
        (i * plan.chunk_stride + (i // rounds) * plan.shift) % num_groups
        for i in range(plan.chunkings * rounds)
    ]


def qc_windows(
    num_clips: int, window_clips: int = 8, stride_clips: int = 4, *, flush: bool = True
) -> list[range]:
    """Windows of ``window_clips`` clips every ``stride_clips`` clips, as far as a whole window fits (the
    authors' ``segments_8_4``); with ``flush``, one more window flush with the end when the stride does not
    reach it. A chunk of at most one window is one window."""
    if num_clips <= window_clips:
        return [range(num_clips)]
    windows = [range(s, s + window_clips) for s in range(0, num_clips - window_clips + 1, stride_clips)]
    if flush and windows[-1].stop < num_clips:
        windows.append(range(num_clips - window_clips, num_clips))
    return windows


def chunk_clip_scores(
    segments: Sequence[VisualSegment],
    question: str,
    hooks: BackboneHooks,
    plan: Plan,
    *,
    layers: list[int],
    keep: LPComp | None,
    lone: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One chunk: each clip's score per band layer [layers, clips] (the mean over the windows holding it),
    which clips count [clips] (in a ``lone`` chunk all; else, as the authors, only those held by as many
    windows as any: the chunk's edge clips are skipped), and the number of windows scored."""
    clips = [range(i, min(i + plan.clip, len(segments))) for i in range(0, len(segments), plan.clip)]
    windows = qc_windows(len(clips), plan.window, plan.stride, flush=lone)
    asked = [[clips[c] for c in window] for window in windows]
    per_window = hooks.window_scores(segments, question, windows=asked, layers=layers, keep=keep)
    sums = torch.zeros(len(layers), len(clips), dtype=torch.float64)
    held = torch.zeros(len(clips), dtype=torch.float64)
    for window, scores in zip(windows, per_window, strict=True):
        if tuple(scores.shape) != (len(layers), len(window)):
            raise CompressionError(
                f"window_scores returned {tuple(scores.shape)}, expected [{len(layers)}, {len(window)}]"
            )
        sums[:, window.start : window.stop] += scores.double().cpu()
        held[window.start : window.stop] += 1
    counted = held > 0 if lone else held == held.max()
    return sums / held.clamp(min=1), counted, len(windows)


def select_groups(scores: torch.Tensor, keep: int) -> list[int]:
    """The ``keep`` best-scoring groups, back in temporal order (ties: the earlier first, as the authors'
    stable sort; NaN last)."""
    order = torch.argsort(torch.nan_to_num(scores.double(), nan=-math.inf), descending=True, stable=True)
    return sorted(order[: max(keep, 0)].tolist())


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


@dataclass
class Scores:
    """QC-Comp's outcome: a score per group [G] (NaN where no chunk scored it) and how many windows and
    chunks were scored."""

    groups: torch.Tensor
    windows: int
    chunks: int


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
    chunk_frames: int = 576
    chunk_stride: int = 512
    chunkings: int = 8
    lp_comp: bool = True

    def __post_init__(self) -> None:
        sizes = (self.tokens_per_frame, self.window_frames, self.window_stride, self.clip_frames)
        chunks = (self.chunk_frames, self.chunk_stride, self.chunkings)
        if (
            min(sizes + chunks) < 1
            or self.window_frames % self.clip_frames
            or self.window_stride % self.clip_frames
            or self.chunk_frames % self.clip_frames
            or self.chunk_stride > self.chunk_frames
        ):
            raise CompressionError(
                "XComp needs positive sizes, windows, stride and chunks in whole clips, and a chunk stride no "
                f"longer than a chunk; got {self.options()}"
            )

    def plan(self, frames_per_group: int) -> Plan:
        """QC-Comp's sizes in groups of ``frames_per_group`` frames (each repeated chunking starts one clip
        phase plus ``chunk_stride / chunkings`` further, the authors' ``8 // D + stride // D``)."""
        fpg = frames_per_group
        return Plan(
            clip=max(1, self.clip_frames // fpg),
            window=self.window_frames // self.clip_frames,
            stride=self.window_stride // self.clip_frames,
            chunk=max(1, self.chunk_frames // fpg),
            chunk_stride=max(1, self.chunk_stride // fpg),
            chunkings=self.chunkings,
            shift=max(1, self.clip_frames // self.chunkings // fpg)
            + self.chunk_stride // self.chunkings // fpg,
        )

    def compress(
        self,
        video: EncodedVideo,
        segments: Sequence[SegmentSpan],
        question: str,
        *,
        budget: int,
        hooks: BackboneHooks,
    ) -> CompressionResult:
        """As the authors, ToMe and LP-Comp always run, also when the budget covers the video (unlike the
        other methods, which then hand over the stock layout); QC-Comp runs when it cannot hold every group."""
        check_inputs(video, segments, budget)
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
        fpg = video.frames_per_group
        per_group = min(video.embeds.shape[1], fpg * self.tokens_per_frame)
        if budget < per_group:
            return empty_result(
                self.name, video, segments, f"budget {budget} is below one group ({per_group})"
            )
        real = real_groups(video, segments)
        blocks = [merge_group(video, g, per_group) for g in real]
        scores = None
        if budget // per_group < len(blocks):
            scores = self.scores(blocks, question, hooks, fpg)
        picked = (
            list(range(len(blocks))) if scores is None else select_groups(scores.groups, budget // per_group)
        )
        kept, groups = [blocks[i] for i in picked], [real[i] for i in picked]
        frames = frames_of_groups(video, groups, segments)
        return CompressionResult(
            method=self.name,
            segments=kept,
            kept_frames=frames,
            raw_tokens=raw_token_count(video),
            segment_scores=None if scores is None else _span_scores(segments, real, scores.groups),
            segment_tokens=span_tokens(segments, dict.fromkeys(groups, per_group)),
            keep=self.keep_rule(kept, hooks.num_layers, fpg),
            extra=self._report(kept, hooks.num_layers, fpg, scores, frames=len(frames)),
        )

    def keep_rule(self, blocks: Sequence[VisualSegment], num_layers: int, fpg: int) -> LPComp | None:
        """LP-Comp over ``blocks`` (None when ``lp_comp`` is off)."""
        if not self.lp_comp:
            return None
        sizes = [b.num_tokens for b in blocks]
        return lp_keep_rule(sizes, num_layers, frames_per_group=fpg, start_tokens=self.tokens_per_frame)

    def scores(self, blocks: list[VisualSegment], question: str, hooks: BackboneHooks, fpg: int) -> Scores:
        """Every group's QC-Comp score (module docstring, step 2): per band layer, the mean over the chunks
        that counted it of its clip's score there, summed over the band."""
        plan, layers = self.plan(fpg), qc_layers(hooks.num_layers)
        sums = torch.zeros(len(layers), len(blocks), dtype=torch.float64)
        counts = torch.zeros_like(sums)
        starts, windows = chunk_starts(len(blocks), plan), 0
        for start in starts:
            members = torch.tensor([(start + j) % len(blocks) for j in range(min(plan.chunk, len(blocks)))])
            chunk = [blocks[g] for g in members.tolist()]
            keep = self.keep_rule(chunk, hooks.num_layers, fpg)
            clip_scores, counted, scored = chunk_clip_scores(
                chunk, question, hooks, plan, layers=layers, keep=keep, lone=len(starts) == 1
            )
            windows += scored
            clip_of = torch.arange(len(chunk)) // plan.clip
            values = clip_scores[:, clip_of]  # [layers, members]
            use = counted[clip_of] & torch.isfinite(values)
            sums.index_add_(1, members, torch.where(use, values, 0.0))
            counts.index_add_(1, members, use.double())
        return Scores((sums / counts).sum(0), windows, len(starts))

    def _report(
        self, blocks: list[VisualSegment], num_layers: int, fpg: int, scores: Scores | None, *, frames: int
    ) -> dict:
        """Frames kept, tokens into the LLM, at the last layer and the mean over layers (LP-Comp), and which
        stages ran (QC-Comp with its windows and chunks)."""
        sizes = [b.num_tokens for b in blocks]
        counts = layer_counts(num_layers, self.tokens_per_frame) if self.lp_comp else [self.tokens_per_frame]
        per_layer = [sum(min(size, fpg * n) for size in sizes) for n in counts]
        stages = ["ToMe"] + (["QC-Comp"] if scores else []) + (["LP-Comp"] if self.lp_comp else [])
        qc = f"QC-Comp over {scores.windows} windows in {scores.chunks} chunks" if scores else None
        return {
            "frames_kept": frames,
            "groups_kept": len(sizes),
            "tokens_into_llm": sum(sizes),
            "tokens_at_last_layer": per_layer[-1],
            "mean_tokens_per_layer": sum(per_layer) / len(per_layer),
            "qc_layers": qc_layers(num_layers),
            "lp_comp": self.lp_comp,
            "qc_comp": scores is not None,
            "qc_comp_windows": 0 if scores is None else scores.windows,
            "qc_comp_chunks": 0 if scores is None else scores.chunks,
            "stages": stages,
            "stages_summary": "stages: " + " → ".join(qc if s == "QC-Comp" else s for s in stages),
        }


def _span_scores(segments: Sequence[SegmentSpan], real: list[int], scores: torch.Tensor) -> list[float]:
    """Each span's QC-Comp score: the mean score of its real groups (NaN when none was scored)."""
    by_group = {g: float(scores[i]) for i, g in enumerate(real)}
    out = []
    for s in segments:
        values = [by_group[g] for g in s.groups if g in by_group]
        out.append(sum(values) / len(values) if values else float("nan"))
    return out
