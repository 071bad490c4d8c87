"""The evaluation's only call into the comparison pipeline: one video, all its questions x budgets x methods.

Everything else in ``evaluation`` sees the plain ``Answers`` below (and ``Ask``, the pipeline's plain
record of one question: the prompt, the text the selectors read, the reply prefix), so when the pipeline's
entry changes, only this module does. A video's questions and budgets go into the pipeline as one
multi-question request (``pipeline.many.compare_many``): the video is sampled and encoded once, each
question's Tempo relevance scores are computed once for all budgets, question-independent compressions once
per budget, and every answer of every question, budget and method is decoded in one batch, each token for
token what it would be alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import media
from pipeline.events import FinishedMany, MethodReport
from pipeline.many import compare_many
from pipeline.request import Ask, ManyRequest
from pipeline.settings import Settings

__all__ = ["Answers", "Ask", "MethodAnswer", "answer_video"]


@dataclass
class MethodAnswer:
    """One method's reply and what it looked at."""

    method: str
    output: str  # the reply, without the reply prefix
    error: str | None
    tokens_llm: int | None  # visual tokens the LLM received
    tokens_raw: int | None  # visual tokens of all sampled frames, before compression
    kept_times: list[float]  # timestamps (s) of the frames the method kept
    timings: dict = field(default_factory=dict)  # compress, answer (s)


@dataclass
class Answers:
    """Every method's answer to one question at one budget about one video."""

    sampled_times: list[float]  # timestamps (s) of the sampled frames, padding excluded
    methods: dict[str, MethodAnswer]


def answer_video(
    video: Path, asks: Sequence[Ask], budgets: Sequence[int], settings: Settings, limits: media.Limits
) -> dict[tuple[int, int], Answers]:
    """Run ``settings.methods`` on ``video`` for every ask at every budget, in one pipeline request.

    Returns ``Answers`` per (index in ``asks``, budget). Raises what ``pipeline.many.compare_many`` raises
    before any model work: ``media.VideoError`` (missing or unreadable video), ``pipeline.video.QuestionError``
    (a prompt too long for ``settings.BOUNDS``), ``SettingsError``, ``ModelLoadError``. A method that fails
    in a cell carries its one-sentence error in that cell's ``MethodAnswer``.
    """
    finished = None
    for event in compare_many(ManyRequest(video, tuple(asks), tuple(budgets), settings, limits)):
        if isinstance(event, FinishedMany):
            finished = event
    prepared = finished.prepared
    times = [round(float(t), 3) for t in prepared.frames.timestamps[: prepared.real_frames]]
    answers: dict[tuple[int, int], Answers] = {}
    for (index, budget, method), report in finished.reports.items():
        answers.setdefault((index, budget), Answers(times, {})).methods[method] = _method_answer(report)
    return answers


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
