"""The evaluation's only call into the comparison pipeline: one video, one prompt, one budget, N methods.

Everything else in ``evaluation`` sees the plain ``Answers`` below, so when the pipeline's entry changes,
only this module does. Several questions and budgets of one video are run as consecutive calls: the
pipeline's caches (probe, frames, encoded tokens, question-independent compressions, Tempo's relevance
scores, prompt prefixes) serve every call after the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import media
from pipeline.compare import compare
from pipeline.events import Finished, MethodReport
from pipeline.request import Request
from pipeline.settings import Settings


@dataclass
class MethodAnswer:
    """One method's reply and what it looked at."""

    method: str
    output: str
    error: str | None
    tokens_llm: int | None  # visual tokens the LLM received
    tokens_raw: int | None  # visual tokens of all sampled frames, before compression
    kept_times: list[float]  # timestamps (s) of the frames the method kept
    timings: dict = field(default_factory=dict)  # compress, answer (s)


@dataclass
class Answers:
    """Every method's answer to one prompt about one video."""

    sampled_times: list[float]  # timestamps (s) of the sampled frames, padding excluded
    methods: dict[str, MethodAnswer]


def answer(video: Path, prompt: str, settings: Settings, limits: media.Limits) -> Answers:
    """Run ``settings.methods`` on ``video`` with ``prompt`` as the question at ``settings.budget``.

    Raises what ``pipeline.compare.compare`` raises before any model work: ``media.VideoError`` (missing or
    unreadable video), ``pipeline.video.QuestionError`` (prompt too long), ``SettingsError``,
    ``ModelLoadError``.
    A method that fails carries its one-sentence error in its ``MethodAnswer``.
    """
    finished = None
    for event in compare(Request(video, prompt, settings, limits)):
        if isinstance(event, Finished):
            finished = event
    prepared = finished.prepared
    times = [round(float(t), 3) for t in prepared.frames.timestamps[: prepared.real_frames]]
    methods = {m: _method_answer(r) for m, r in finished.reports.items()}
    return Answers(times, methods)


def _method_answer(report: MethodReport) -> MethodAnswer:
    tokens = report.tokens or {}
    timings = {k: report.timings[k] for k in ("compress", "answer") if report.timings.get(k) is not None}
    return MethodAnswer(
        method=report.method,
        output=report.answer,
        error=report.error,
        tokens_llm=tokens.get("llm_input"),
        tokens_raw=tokens.get("raw"),
        kept_times=[float(f["timestamp"]) for f in report.kept_frames],
        timings=timings,
    )
