"""The official Tempo-6B variant (``tempo-6b.official``) run end to end, as the authors' demo runs it.

Tempo (Fei et al., arXiv 2604.08120; github.com/FeiElysia/Tempo ``infer.py`` / ``app.py``): the small VLM
scores and compresses every 8-frame segment, ATA turns the scores into a token budget per segment, the
first k_i memory tokens of each segment reach the answering LLM after ``<t seconds>``, and the LLM answers
greedily. The model itself (modules, strict loader, small-VLM pass, answer prompt) is
``model_zoo.tempo_official``; this module adds what ``model_zoo`` may not import: ATA and the relevance
prompt from ``compressors.tempo`` (one copy of each, shared with the training-free Tempo column).

Frames. The column samples its own, as the authors do, not the arena's shared frames: before the GPU call
(``TempoOfficialRunner.prepare``) it decodes the source file with media's PyAV sampler at the authors' plan
(``model_zoo.tempo_official_frames.official_sample_plan``: 2 fps, 4..1024 frames at ``round(linspace(0,
total - 1, n))`` source indices), each frame resized from full resolution to a 512 long edge with PIL
bicubic (``resize_images`` of ``tempo/mm_datautils.py``), and times them ``i / real_fps`` with
``real_fps = n / (total / source_fps)``. Its budget is its own too: the paper's 4K or 8K (a choice of the
column, the same weights), not the arena's shared one. :meth:`TempoOfficial.run` also takes frames decoded
otherwise: it applies the same count rule (``round(linspace)`` subsampling above 1024, repeats under 4) and
treats them as evenly spaced over ``duration``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import media
from compressors.tempo import SYSTEM_PROMPT, USER_TEMPLATE, allocate_tokens
from model_zoo import tempo_official as official
from model_zoo.preprocess import PreprocessError, check_frames
from model_zoo.tempo_official_config import (
    BASE_VLM,
    DEMO_CONTEXT_LIMIT,
    HUB_ID,
    MAX_FRAMES,
    MIN_FRAMES,
    MIN_TOKENS,
    SAMPLE_FPS,
)
from model_zoo.tempo_official_frames import (
    OFFICIAL_RULE,
    FrameRule,
    SegmentBatch,
    frame_sizes,
    official_sample_plan,
)
from pipeline.accounting import rounded
from pipeline.authors import (
    AuthorsRunner,
    OwnFrames,
    Resident,
    keep_own_frames,
    own_frames,
    sample_positions,
    stream_answer,
    weights_key,
)
from pipeline.events import Event, MethodReport, Progress
from pipeline.request import Job

VARIANT = "tempo-6b.official"

#: ATA's signature (``compressors.tempo.allocate_tokens``): scores, budget, min_tokens, max_tokens → k_i.
Allocator = Callable[..., list[int]]


@dataclass(frozen=True)
class OfficialSegment:
    """One 8-frame segment: frames (indices into the run's frames), times (s), score and tokens."""

    index: int
    frames: range
    start: float
    end: float
    centre: float  # the ``<t seconds>`` the LLM reads: (8 i + 4) / real_fps
    score: float
    allocated: int  # ATA's k_i
    delivered: int  # tokens the LLM received (k_i unless the context cut reached this segment)


@dataclass
class OfficialRun:
    """One answer of Tempo-6B. Iterate it for text deltas; ``text`` waits for the whole answer.

    Accounting, as the other columns report it: ``raw_tokens`` visual tokens the small VLM encoded (every
    sampled frame, uncompressed; a 1-frame tail counts its duplicate, as the small VLM encodes it); ``llm_tokens`` projected visual tokens the LLM
    received; ``segment_scores`` / ``segment_tokens`` (ATA's allocation) per segment; ``kept_frames`` indices
    (into ``frames`` as given to ``run``) of the frames whose segment reached the LLM.
    """

    question: str
    budget: int
    real_fps: float
    frame_indices: list[int]
    frame_times: list[float]
    segments: list[OfficialSegment]
    raw_tokens: int
    prompt: official.AnswerPrompt
    stream: official.AnswerStream
    timings: dict[str, float] = field(default_factory=dict)
    variant: str = VARIANT

    def __iter__(self) -> Iterator[str]:
        return iter(self.stream)

    @property
    def text(self) -> str:
        return self.stream.text

    @property
    def segment_scores(self) -> list[float]:
        return [s.score for s in self.segments]

    @property
    def segment_tokens(self) -> list[int]:
        return [s.allocated for s in self.segments]

    @property
    def llm_tokens(self) -> int:
        return sum(s.delivered for s in self.segments)

    @property
    def kept_frames(self) -> list[int]:
        return [self.frame_indices[f] for s in self.segments if s.delivered > 0 for f in s.frames]

    @property
    def prompt_tokens(self) -> int:
        return self.prompt.length


def official_frame_selection(
    count: int, *, min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES
) -> list[int]:
    """Indices into ``count`` evenly spaced frames under the authors' count rule (identity when it fits)."""
    if count < 1:
        raise PreprocessError("need at least one frame")
    target = min(max(count, min_frames), max_frames)
    return np.round(np.linspace(0, count - 1, target)).astype(int).tolist()


def build_segments(batch: SegmentBatch, scores, allocation, delivered) -> list[OfficialSegment]:
    fps = batch.real_fps
    return [
        OfficialSegment(
            index=i,
            frames=span,
            start=span.start / fps,
            end=span.stop / fps,
            centre=batch.centre(i),
            score=float(scores[i]),
            allocated=int(allocation[i]),
            delivered=int(delivered[i]),
        )
        for i, span in enumerate(batch.frames)
    ]


class TempoOfficial:
    """Tempo-6B with its inference flow; build it with :func:`load_tempo_official`.

    ``rule`` sizes frames (the authors' three resizes by default); ``chunk_size`` bounds how many segments
    share one small-VLM forward pass (None: all, as the authors run them; results are the same).
    """

    def __init__(
        self,
        model: official.TempoOfficialModel,
        *,
        allocate: Allocator = allocate_tokens,
        rule: FrameRule = OFFICIAL_RULE,
        max_frames: int = MAX_FRAMES,
        chunk_size: int | None = None,
    ) -> None:
        self.model = model
        self.allocate = allocate
        self.rule = rule
        self.max_frames = max_frames
        self.chunk_size = chunk_size

    def run(
        self,
        frames: np.ndarray,
        duration: float,
        question: str,
        *,
        budget: int = 4096,
        max_new_tokens: int = 128,
        context_limit: int | None = None,
    ) -> OfficialRun:
        """Answer ``question`` about ``frames`` [T, H, W, 3] uint8 RGB spanning ``duration`` seconds.

        Compression runs now (timed in ``timings``); the answer is generated while the result is iterated.
        ``context_limit`` defaults to 16384, the ``tokenizer_model_max_length`` the authors' infer.py and app.py
        set (``model.config.tokenizer_model_max_length`` holds the checkpoint's own value).
        """
        if budget < 1 or max_new_tokens < 1:
            raise ValueError(f"budget and max_new_tokens must be >= 1, got {budget} and {max_new_tokens}")
        check_frames(frames, range(len(frames)))
        picked = official_frame_selection(len(frames), max_frames=self.max_frames)
        real_fps = len(picked) / duration if duration > 0 else 2.0
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        batch = self.model.segment(np.ascontiguousarray(frames[picked]), real_fps, rule=self.rule)
        timings["preprocess_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        compressed = self.model.compress(
            batch, question, system=SYSTEM_PROMPT, user_template=USER_TEMPLATE, chunk_size=self.chunk_size
        )
        timings["compress_s"] = time.perf_counter() - tick
        n = self.model.num_memory_tokens
        allocation = self.allocate(compressed.scores, budget, min_tokens=MIN_TOKENS, max_tokens=n)
        kept = [compressed.memory[i, :k] for i, k in enumerate(allocation)]  # "head": the first k_i tokens
        centres = [batch.centre(i) for i in range(batch.num_segments)]
        limit = context_limit or DEMO_CONTEXT_LIMIT
        prompt = self.model.answer_prompt(kept, centres, question, context_limit=limit)
        segments = build_segments(batch, compressed.scores, allocation, prompt.delivered)
        return OfficialRun(
            question=question,
            budget=budget,
            real_fps=real_fps,
            frame_indices=picked,
            frame_times=[i / real_fps for i in range(len(picked))],
            segments=segments,
            raw_tokens=raw_token_count(batch, self.model.vlm_config.vision_config.spatial_merge_size),
            prompt=prompt,
            stream=self.model.answer(prompt, max_new_tokens=max_new_tokens),
            timings=timings,
        )


def raw_token_count(batch: SegmentBatch, merge: int) -> int:
    """Visual tokens the small VLM encoded: groups x (gh / merge) x (gw / merge), summed over segments."""
    return int((batch.grids[:, 0] * (batch.grids[:, 1] // merge) * (batch.grids[:, 2] // merge)).sum())


def load_tempo_official(
    path_or_hub_id: str | Path = HUB_ID,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    base_vlm: str | Path = BASE_VLM,
    base_revision: str | None = None,
    **options,
) -> TempoOfficial:
    """Load Tempo-6B and its base VLM (``model_zoo.tempo_official.load_tempo_checkpoint``) for :meth:`run`.

    Raises ``model_zoo.tempo_official_config.TempoLoadError`` (a ``model_zoo.ModelLoadError``) with one sentence,
    or with the missing and unexpected checkpoint keys listed. ``options`` go to :class:`TempoOfficial`.
    """
    model = official.load_tempo_checkpoint(
        path_or_hub_id,
        revision=revision,
        base_vlm=base_vlm,
        base_revision=base_revision,
        device=device,
        dtype=dtype,
    )
    return TempoOfficial(model, **options)


def allocation_table(run: OfficialRun) -> list[dict]:
    """Rows for the UI's per-segment allocation (what the authors' demo plots): one per segment."""
    return [
        {
            "segment": s.index,
            "start": round(s.start, 2),
            "end": round(s.end, 2),
            "time": f"<{s.centre:.1f} seconds>",
            "score": round(s.score, 4),
            "tokens": s.allocated,
            "delivered": s.delivered,
        }
        for s in run.segments
    ]


# --- the column ---------------------------------------------------------------------------------------


def sample_own_frames(path, info: media.VideoInfo, limits: media.Limits) -> OwnFrames:
    """The authors' plan on ``info`` (2 fps, 4..1024 frames, at most ``limits.max_frames``), decoded from ``path``
    at full resolution and resized to the 512 long edge (the first of ``FrameRule``'s resizes)."""
    plan = official_sample_plan(info.frame_count, info.fps, max_frames=min(MAX_FRAMES, limits.max_frames))
    height, width = frame_sizes(info.height, info.width, OFFICIAL_RULE)[0]
    duration = info.frame_count / info.fps if info.fps > 0 else info.duration
    return sample_positions(path, plan.indices, (width, height), duration, limits)


class TempoOfficialRunner(AuthorsRunner):
    """``ColumnRunner`` of ``tempo-6b.official``: the authors' model on frames it samples itself (before the
    GPU call, ``prepare``), at its own 4K or 8K budget, reporting what the authors' demo shows (per-segment
    relevance and ATA allocation). One model stays resident, loaded on first use (``model``; tests swap in a
    tiny checkpoint)."""

    def __init__(self) -> None:
        self.model = Resident(
            lambda checkpoint, base_vlm, revision, base_revision: load_tempo_official(
                checkpoint, revision=revision, base_vlm=base_vlm, base_revision=base_revision
            ),
            VARIANT,
        )

    def prepare(self, job: Job, names: Sequence[str], limits: media.Limits) -> Iterator[Event]:
        """Each column's own frames (``OwnFrames``), decoded here, outside the GPU call; cached per video."""
        prepared = job.prepared
        yield Progress("sample", 0.12, f"{VARIANT}: sampling its own frames at 2 fps (at most 1024)…")
        key = (VARIANT, min(MAX_FRAMES, limits.max_frames), OFFICIAL_RULE.long_edge)
        own = own_frames(prepared, key, lambda: sample_own_frames(prepared.path, prepared.info, limits))
        return dict.fromkeys(names, own)

    def gpu_seconds(self, job: Job, names: Sequence[str]) -> float:
        """Per column: loading its model when it is not held (``load_seconds``), its frames (its own when
        prepared, else 2 fps of the video, at most 1024) and answer."""
        guess = min(MAX_FRAMES, max(MIN_FRAMES, round(SAMPLE_FPS * job.prepared.info.duration)))
        frames = [len(own) if isinstance(own := job.inputs.get(n), OwnFrames) else guess for n in names]
        work = sum(4 + count * 0.02 + job.settings.max_new_tokens * 0.05 for count in frames)
        return self.load_seconds(job, names) + work

    def answer(self, report: MethodReport, job: Job, name: str, own: OwnFrames) -> Iterator[Event]:
        options = job.settings.options_for(name)
        model = self.model(*weights_key(job.settings, name))
        yield from _answer(report, model, job, own, options["visual_token_budget"])


def _answer(
    report: MethodReport, model: TempoOfficial, job: Job, own: OwnFrames, budget: int
) -> Iterator[Event]:
    """Compress (timed), stream the answer into ``report``, then account for it."""
    run = yield from stream_answer(
        report,
        lambda: model.run(
            own.frames.frames,
            own.duration,
            job.question,
            budget=budget,
            max_new_tokens=job.settings.max_new_tokens,
        ),
    )
    _account(report, run, job.prepared, own)


def _account(report: MethodReport, run: OfficialRun, prepared, own: OwnFrames) -> None:
    """Tokens per frame over its own frames; kept frames are its own (source index and time), shown in the
    gallery as the shared frames nearest to them; its frame count beside the shared one in ``extra``."""
    frames = own.frames
    keep_own_frames(report, prepared, own, run.kept_frames)
    report.segments = [
        {"start": round(s.start, 3), "end": round(s.end, 3), "score": rounded(s.score), "tokens": s.delivered}
        for s in run.segments
    ]
    report.tokens = {
        "raw": run.raw_tokens,
        "llm_input": run.llm_tokens,
        "per_frame": round(run.llm_tokens / max(1, len(run.frame_indices)), 3),
        "ratio": round(run.raw_tokens / max(1, run.llm_tokens), 3),
    }
    report.extra = {
        "frames": len(run.frame_indices),
        "fps": SAMPLE_FPS,
        "shared_frames": prepared.real_frames,
        "frame_size": list(frames.frames.shape[1:3]),
        "budget": run.budget,
        "real_fps": round(run.real_fps, 4),
        "allocation": allocation_table(run),
    }


RUNNER = TempoOfficialRunner()


__all__: Sequence[str] = (
    "VARIANT",
    "OfficialRun",
    "OfficialSegment",
    "OwnFrames",
    "RUNNER",
    "TempoOfficial",
    "TempoOfficialRunner",
    "allocation_table",
    "load_tempo_official",
    "official_frame_selection",
    "sample_own_frames",
)
