"""A comparison's events turned into updates of the page's components.

``Updates`` knows the page's components (``Outputs``) and nothing about how they are laid out. The comparison
runs in a thread of its own and the page takes its events in batches, one update per batch, at most one
every ``interval`` seconds (``batches``): while tokens stream, each column's latest text goes out about ten
times a second, and the final text always goes out with its column's report.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from queue import Queue

import gradio as gr

from pipeline import report as rp
from pipeline import runcard
from pipeline.events import AnswerDelta, Event, Finished, MethodDone, MethodReport, Progress
from pipeline.settings import Settings
from ui.frames import FrameImages
from ui.scratch import ScratchDirs


@dataclass
class ColumnOutputs:
    """One column's components."""

    answer: gr.Textbox
    tokens: gr.Markdown
    gallery: gr.Gallery
    moments_btn: gr.Button
    moments: gr.File


#: The order of a comparison's outputs: the shared ones, the session state, then each column's parts.
SHARED_FIELDS = ("status", "tokens_plot", "timeline_plot", "timings_table", "card_file")
COLUMN_FIELDS = ("answer", "tokens", "gallery", "moments_btn", "moments")
NOT_SENT_TO_CLIENTS = ("last_run", "moments_btn")  # gradio_client receives no state and no buttons


def page_result(values, columns) -> dict:
    """The page event's values as an API client receives them, by name: ``status``, ..., ``card_file``,
    then ``"<column>.answer"``, ``"<column>.tokens"``, ``"<column>.gallery"``, ``"<column>.moments"`` for each
    of ``columns`` (the page's, in order)."""
    names = [n for n in SHARED_FIELDS if n not in NOT_SENT_TO_CLIENTS]
    parts = [p for p in COLUMN_FIELDS if p not in NOT_SENT_TO_CLIENTS]
    names += [f"{c}.{p}" for c in columns for p in parts]
    if len(values) != len(names):
        raise ValueError(f"the page event returned {len(values)} values, expected {len(names)}")
    return dict(zip(names, values, strict=True))


@dataclass
class Outputs:
    """Every component a comparison updates."""

    status: gr.Markdown
    tokens_plot: gr.BarPlot
    timeline_plot: gr.Plot
    timings_table: gr.Dataframe
    card_file: gr.File
    last_run: gr.State
    columns: dict[str, ColumnOutputs]

    def components(self) -> list:
        """In a fixed order (the ``*_FIELDS`` above), as an event's ``outputs``."""
        shared = [getattr(self, name) for name in (*SHARED_FIELDS, "last_run")]
        return shared + [getattr(col, part) for col in self.columns.values() for part in COLUMN_FIELDS]


class Updates:
    """Turns the events of one comparison into dicts of component updates (see the module docstring)."""

    def __init__(
        self, outputs: Outputs, files: ScratchDirs, images: FrameImages, *, interval: float = 0.1
    ) -> None:
        self.out, self.files, self.images, self.interval = outputs, files, images, interval

    def stream(self, events, question: str, settings: Settings, progress, old_card=None) -> Iterator[dict]:
        """One update per batch of events (``batches``): the comparison runs on while the page sends."""
        yield {self.out.status: "Starting…", **self.blank(settings)}
        for batch in batches(events, self.interval):
            update: dict = {}
            for event in batch:
                update.update(self._update(event, question, settings, progress, old_card) or {})
            if update:
                yield update

    def _update(self, event: Event, question, settings, progress, old_card) -> dict | None:
        if isinstance(event, Progress):
            # the models are done, the page is not: it still prepares images and charts
            message = "Preparing the results…" if event.stage == "done" else event.message
            progress(event.fraction, desc=message)
            return {self.out.status: message}
        if isinstance(event, AnswerDelta):  # later text in the same batch replaces earlier text
            return {self.out.columns[event.method].answer: event.text}
        if isinstance(event, MethodDone):
            return self.column_done(event.report)
        if isinstance(event, Finished):
            return self.finished(event, question, settings, old_card)
        return None

    def blank(self, settings: Settings) -> dict:
        updates = {}
        for method, col in self.out.columns.items():
            updates[col.answer] = "" if method in settings.methods else "(not selected)"
            updates[col.tokens] = ""
            updates[col.gallery] = None
            updates[col.moments] = None  # plain values: a property update (gr.update) costs a config rebuild
        return updates

    def column_done(self, report: MethodReport) -> dict:
        col = self.out.columns[report.method]
        return {
            col.answer: report.answer if not report.error else f"⚠️ {report.error}",
            col.tokens: rp.token_summary(report),
        }

    def finished(self, event: Finished, question: str, settings: Settings, old_card: dict | None) -> dict:
        """Every result output (only what changed: columns not run were blanked when the run started)."""
        started = time.perf_counter()
        folder = self.files.new()  # this request's own: its run card and the frames its galleries show
        card = runcard.build(event, question, settings)
        card_path = runcard.save(card, folder / f"run-card-{card['video']['fingerprint'][:10]}.json")
        out = self.out
        updates = {
            out.status: status_line(event, old_card, card),
            out.tokens_plot: rp.tokens_frame(event.reports),
            out.timeline_plot: rp.timeline_figure(event.prepared, event.reports),
            out.card_file: str(card_path),
            out.last_run: {"path": str(event.prepared.path), "fingerprint": event.prepared.fingerprint},
        }
        for method, report in event.reports.items():
            updates.update(self.column_done(report))
            col = out.columns[method]
            updates[col.gallery] = self.images.gallery(event.prepared, report, folder)
        page_s = time.perf_counter() - started
        updates[out.timings_table] = rp.timings_frame(event.reports, event.shared_timings, page_s=page_s)
        return updates


def batches(events: Iterator[Event], interval: float) -> Iterator[list[Event]]:
    """The events, in order, in batches at most one per ``interval`` seconds (the first at once).

    The events are produced in a thread of their own, so the comparison never waits while the page turns a
    batch into an update and sends it (a generator handler is paused between its updates; streaming every
    token that way made the model run at the page's pace). Exceptions reach the caller in order; when the
    caller stops early (the visitor left), the producer stops at its next event and closes ``events``.
    """
    queue: Queue = Queue()
    stop = threading.Event()
    context = contextvars.copy_context()  # the request's context (ZeroGPU's GPU call reads it)

    def produce() -> None:
        try:
            for event in events:
                queue.put(("event", event))
                if stop.is_set():
                    break
        except BaseException as err:  # handed to the consumer, raised there
            queue.put(("error", err))
        finally:
            events.close()
            queue.put(("end", None))

    thread = threading.Thread(target=context.run, args=(produce,), daemon=True, name="comparison")
    thread.start()
    try:
        last = -interval
        while True:
            batch, end = _drain(queue, wait=max(0.0, last + interval - time.monotonic()))
            last = time.monotonic()
            if batch:
                yield batch
            if isinstance(end, BaseException):
                raise end
            if end:
                return
    finally:
        stop.set()


def _drain(queue: Queue, wait: float) -> tuple[list[Event], bool | BaseException]:
    """Sleep ``wait`` seconds, then take everything queued (waiting for one item if there is none): the
    events, and whether the stream ended there (True, or the exception it ended with)."""
    time.sleep(wait)
    items = [queue.get()]
    while not queue.empty():
        items.append(queue.get_nowait())
    batch = []
    for kind, value in items:
        if kind == "error":
            return batch, value
        if kind == "end":
            return batch, True
        batch.append(value)
    return batch, False


def status_line(event: Finished, old_card: dict | None, card: dict) -> str:
    t = event.shared_timings
    text = (
        f"Done: {event.prepared.real_frames} frames sampled in {t.get('decode', 0):.1f} s, "
        f"encoded once in {t.get('encode', 0):.1f} s for {len(event.reports)} methods."
    )
    if old_card is not None:
        differences = runcard.diff(old_card, card)
        text += (
            "\n\n**Re-run matches the card.**"
            if not differences
            else "\n\n**Re-run differs from the card:**\n" + "\n".join(f"- {d}" for d in differences)
        )
    return text
