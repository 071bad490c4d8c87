"""One comparison: a ``Request`` in (a video, a question, settings), a stream of events out.

The shared work (fetch, probe, sample, segment) happens once per request in this process
(``pipeline.video``); then the GPU part, ``run_on_gpu``, runs every selected column on the prepared video
through its runner (``pipeline.columns``) and streams answers and reports. The page, the API, the CLI and
the evaluation command all drive ``compare``.

ZeroGPU: ``run_on_gpu`` is ``run_methods`` under ``spaces.GPU``, which on a ZeroGPU Space runs it in a
forked GPU worker for as long as ``estimate_gpu_seconds`` asks (everywhere else ``spaces.GPU`` returns the
function itself). The worker is forked on a GPU's first call and reused while idle; the call's ``Job`` reaches
it pickled, its frames as a file reference (``pipeline.handoff``), and its events come back pickled. What the
worker computed comes back in ``Encoded`` and ``Computed`` events and ``compare`` keeps it in this process's
caches, which the next fresh worker inherits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import spaces  # before anything initialises CUDA (importing torch does not)

from pipeline import cache, columns, revisions
from pipeline.events import Computed, Encoded, Event, Finished, MethodDone, MethodReport, Progress
from pipeline.request import Job, Request
from pipeline.video import check_question, download_folder, prepared_video

#: Most seconds of GPU one request may ask ZeroGPU for (asking more costs the visitor quota it may not have).
MAX_GPU_SECONDS = 300


def estimate_gpu_seconds(job: Job) -> int:
    """ZeroGPU duration to ask for: what each selected column's runner says its work needs."""
    seconds = sum(runner.gpu_seconds(job, names) for runner, names in columns.runs(job.settings.methods))
    return int(min(MAX_GPU_SECONDS, seconds))


def run_methods(job: Job) -> Iterator[Event]:
    """Every selected column on ``job``, runner by runner; ``MethodDone`` events come in column order."""
    order = ColumnOrder(job.settings.methods)
    for runner, names in columns.runs(job.settings.methods):
        for event in runner.run(job, names):
            if isinstance(event, MethodDone):
                yield from order.done(event.report)
            else:
                yield event
    yield Progress("done", 1.0, "Done.")


#: The GPU part as the request calls it (see the module docstring).
run_on_gpu = spaces.GPU(duration=estimate_gpu_seconds)(run_methods)

Runner = Callable[[Job], Iterator[Event]]


class ColumnOrder:
    """Releases ``MethodDone`` events in column order: a finished column waits for the columns before it
    (``Finished.reports`` keeps the order the events came in)."""

    def __init__(self, methods: Sequence[str]) -> None:
        self.methods, self.reports, self.released = list(methods), {}, 0

    def done(self, report: MethodReport) -> Iterator[MethodDone]:
        self.reports[report.method] = report
        while self.released < len(self.methods) and self.methods[self.released] in self.reports:
            yield MethodDone(self.reports[self.methods[self.released]])
            self.released += 1


def compare(request: Request, *, runner: Runner | None = None) -> Iterator[Event]:
    """The whole comparison as a stream of events; the last one is ``Finished`` with every report.

    User mistakes (bad video or URL, empty question, bad settings) raise typed errors before any GPU work;
    a column that fails reports its error in its own ``MethodReport`` and the others still answer.
    ``runner`` replaces ``run_on_gpu`` (tests run it in a forked process, as ZeroGPU does).
    """
    started = time.perf_counter()
    question = check_question(request.question, request.settings.BOUNDS.max_question_chars)
    with download_folder(request) as workdir:
        yield from _compare(request, question, workdir, runner or run_on_gpu, started)


def _compare(
    request: Request, question: str, workdir: Path | None, runner: Runner, started: float
) -> Iterator[Event]:
    prepared = yield from prepared_video(request, workdir)
    reports: dict[str, MethodReport] = {}
    shared = dict(prepared.timings)
    job = Job(prepared, question, revisions.pin(request.settings))
    inputs = yield from columns.prepare_inputs(job, request.limits)  # CPU work before the GPU call
    for event in runner(dataclasses.replace(job, inputs=inputs)):
        if isinstance(event, MethodDone):
            reports[event.report.method] = event.report
        elif isinstance(event, Encoded):
            shared.update(event.timings)
            keep_computed(event)
        elif isinstance(event, Computed):
            keep_computed(event)
        yield event
    shared["total"] = time.perf_counter() - started  # the whole pipeline, as the run card records it
    yield Finished(prepared, reports, shared, job.settings)


def keep_computed(event: Encoded | Computed) -> None:
    """Keep in this process's caches what the GPU part computed (in another process on ZeroGPU)."""
    entries = event.entries if isinstance(event, Computed) else []
    if isinstance(event, Encoded) and event.fresh is not None:
        entries = [("tokens", *event.fresh)]
    for name, key, value in entries:
        if key not in cache.CACHES[name]:
            cache.CACHES[name].put(key, value)
