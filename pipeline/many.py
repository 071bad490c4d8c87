"""Several questions and budgets about one video in one request: a ``ManyRequest`` in, events out.

    for event in compare_many(ManyRequest(video, (Ask(p1), Ask(p2, reply_prefix="Best option: (")),
                                          budgets=(1024, 4096), settings=settings)):
        ...  # the last event is FinishedMany: a report per (question index, budget, method)

The video is fetched, probed, sampled and segmented once (``pipeline.video.prepare``), as for one question,
and the runners prepare their own CPU inputs once (``pipeline.columns.prepare_inputs``: Tempo-6B's frames);
then the GPU part (``run_many_on_gpu``) hands every (question, budget) cell to each column's runner. The
shared backbone's runner (``pipeline.shared``) encodes once and decodes every answer of every cell and
method in one batch; a runner without ``run_many`` (a column with a model of its own) runs the cells one by
one as one-question jobs of their prompt. ``AnswerDelta`` and ``MethodDone`` carry their cell.

The page's one-question request is ``pipeline.compare``; this is for the evaluation and for anyone driving
the pipeline from code. The questions are checked against the settings' bounds (``Settings.BOUNDS``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import spaces

from pipeline import columns, revisions
from pipeline.compare import MAX_GPU_SECONDS, keep_computed
from pipeline.events import (
    AnswerDelta,
    Computed,
    Encoded,
    Event,
    FinishedMany,
    MethodDone,
    MethodReport,
    Progress,
)
from pipeline.request import Ask, ManyJob, ManyRequest
from pipeline.video import QuestionError, check_question, download_folder, prepared_video


def estimate_gpu_seconds(job: ManyJob) -> int:
    """ZeroGPU duration to ask for: every cell as its own one-question job would ask (an upper bound)."""
    seconds = sum(
        runner.gpu_seconds(job.single(i, b), names)
        for runner, names in columns.runs(job.settings.methods)
        for i, b in job.cells()
    )
    return int(min(MAX_GPU_SECONDS, seconds))


def run_many(job: ManyJob) -> Iterator[Event]:
    """Every selected column on every cell of ``job``, runner by runner."""
    for runner, names in columns.runs(job.settings.methods):
        many = getattr(runner, "run_many", None)
        yield from many(job, names) if many is not None else cell_by_cell(runner, job, names)
    yield Progress("done", 1.0, "Done.")


def cell_by_cell(runner: columns.ColumnRunner, job: ManyJob, names) -> Iterator[Event]:
    """A runner without ``run_many``: each cell as a one-question job, its answers tagged with the cell."""
    for index, budget in job.cells():
        for event in runner.run(job.single(index, budget), names):
            if isinstance(event, AnswerDelta | MethodDone):
                event = dataclasses.replace(event, cell=(index, budget))
            yield event


#: The GPU part as ``compare_many`` calls it (``spaces.GPU`` is the function itself off ZeroGPU).
run_many_on_gpu = spaces.GPU(duration=estimate_gpu_seconds)(run_many)

ManyRunner = Callable[[ManyJob], Iterator[Event]]


def check_asks(request: ManyRequest) -> tuple[Ask, ...]:
    """The asks with their texts stripped and checked; QuestionError or SettingsError (one sentence) before
    any work. Every text is bounded by the settings' question length; every budget by their bounds."""
    asks = request.asks
    if not isinstance(asks, tuple | list) or not asks or not all(isinstance(a, Ask) for a in asks):
        raise QuestionError("Give at least one question (a list of Ask).")
    budgets = request.budgets
    if not isinstance(budgets, tuple | list) or not budgets:
        raise QuestionError("Give at least one budget.")
    for budget in budgets:
        dataclasses.replace(request.settings, budget=budget)  # SettingsError when out of bounds
    limit = request.settings.BOUNDS.max_question_chars
    checked = []
    for ask in asks:
        selection = None if ask.selection is None else check_question(ask.selection, limit)
        if not isinstance(ask.reply_prefix, str) or len(ask.reply_prefix) > limit:
            raise QuestionError(f"A reply prefix must be text of at most {limit} characters.")
        checked.append(Ask(check_question(ask.prompt, limit), selection, ask.reply_prefix))
    return tuple(checked)


def compare_many(request: ManyRequest, *, runner: ManyRunner | None = None) -> Iterator[Event]:
    """The whole multi-question request as a stream of events; the last one is ``FinishedMany``.

    Errors as ``pipeline.compare.compare``: a bad video, question, budget or setting raises its typed error
    before any GPU work; a method failing in a cell reports its error in that cell's ``MethodReport``.
    """
    started = time.perf_counter()
    asks = check_asks(request)
    with download_folder(request) as workdir:
        yield from _compare_many(request, asks, workdir, runner or run_many_on_gpu, started)


def _compare_many(
    request: ManyRequest, asks: tuple[Ask, ...], workdir: Path | None, runner: ManyRunner, started: float
) -> Iterator[Event]:
    prepared = yield from prepared_video(request, workdir)
    budgets = tuple(dict.fromkeys(request.budgets))
    settings = revisions.pin(dataclasses.replace(request.settings, budget=budgets[0]))
    reports: dict[tuple[int, int, str], MethodReport] = {}
    shared = dict(prepared.timings)
    job = ManyJob(prepared, asks, budgets, settings)
    inputs = yield from columns.prepare_inputs(job.single(0, budgets[0]), request.limits)  # once per video
    for event in runner(dataclasses.replace(job, inputs=inputs)):
        if isinstance(event, MethodDone):
            reports[(*event.cell, event.report.method)] = event.report
        elif isinstance(event, Encoded):
            shared.update(event.timings)
            keep_computed(event)
        elif isinstance(event, Computed):
            keep_computed(event)
        yield event
    shared["total"] = time.perf_counter() - started
    yield FinishedMany(prepared, reports, shared)
