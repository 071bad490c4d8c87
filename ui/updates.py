"""A comparison's events turned into updates of the page's components.

``Updates`` knows the page's components (``Outputs``) and nothing about how they are laid out. The comparison
runs in a thread of its own and the page takes its events in batches, one update per batch, at most one
every ``interval`` seconds (``batches``): while tokens stream, each column's latest text goes out about ten
times a second, and the final text always goes out with its column's report. Every update holds every
output (``Updates.values``), so what a link shares is what the page shows.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

import gradio as gr
import pandas as pd

from pipeline import report as rp
from pipeline import runcard
from pipeline.events import AnswerDelta, Event, Finished, MethodDone, MethodReport, Progress
from pipeline.settings import Settings
from pipeline.video import PreparedVideo
from ui.frames import FrameImages
from ui.scratch import ScratchDirs


@dataclass
class ColumnOutputs:
    """One column's components."""

    answer: gr.Textbox
    tokens: gr.Markdown
    gallery: gr.Gallery
    moments_btn: gr.Button
    moments: gr.Video


#: The order of a comparison's outputs: the shared ones, the session state, then each column's parts.
SHARED_FIELDS = ("status", "tokens_plot", "timeline_plot", "timings_table", "card_file", "last_run")
COLUMN_FIELDS = ("answer", "tokens", "gallery", "moments")
NOT_SENT_TO_CLIENTS = ("last_run",)  # gradio_client receives no session state


def page_result(values, columns) -> dict:
    """The page event's values as an API client receives them, by name: ``status``, ..., ``card_file``,
    then ``"<column>.answer"``, ``"<column>.tokens"``, ``"<column>.gallery"``, ``"<column>.moments"`` for each
    of ``columns`` (the page's, in order)."""
    names = [n for n in SHARED_FIELDS if n not in NOT_SENT_TO_CLIENTS]
    names += [f"{c}.{p}" for c in columns for p in COLUMN_FIELDS]
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
        shared = [getattr(self, name) for name in SHARED_FIELDS]
        return shared + [getattr(col, part) for col in self.columns.values() for part in COLUMN_FIELDS]

    def cached(self) -> list:
        """The outputs an example's cache holds: every one but the session state and the clips, which
        Gradio's cache cannot hold (it writes an empty one and cannot read it back), and the token chart,
        which it reads back in a form the browser cannot draw (Gradio 6.31: the page's script fails)."""
        left_out = [self.last_run, self.tokens_plot, *(col.moments for col in self.columns.values())]
        return [c for c in self.components() if all(c is not other for other in left_out)]

    def blank(self, methods) -> dict:
        """Every output as a run starts: nothing shown, the columns not selected saying so."""
        view = {
            self.status: "",
            self.tokens_plot: None,
            self.timeline_plot: None,
            self.timings_table: empty_timings(),
            self.card_file: None,
            self.last_run: None,
        }
        for method, col in self.columns.items():
            view[col.answer] = "" if method in methods else "(not selected)"
            view[col.tokens] = ""
            view[col.gallery] = None
            view[col.moments] = None
        return view


def empty_timings() -> pd.DataFrame:
    """The timings table before a run: its headers, no rows."""
    return pd.DataFrame(columns=rp.TIMINGS_COLUMNS)


class Updates:
    """One run's view of the page: every output's value, sent whole after each batch of events.

    Every update holds every output, never a partial one: Gradio keeps a session's values for Share via
    Link only for outputs given a value, and rebuilds (and forgets, for the link) any output left out of an
    update. Unchanged outputs cost little, as Gradio sends a generator's outputs as diffs.
    """

    def __init__(
        self,
        outputs: Outputs,
        files: ScratchDirs,
        images: FrameImages,
        methods,
        *,
        interval: float = 0.1,
    ) -> None:
        self.out, self.files, self.images, self.interval = outputs, files, images, interval
        self.select(methods or ())
        self.done: set[str] = set()

    def select(self, methods) -> None:
        """The run's columns are ``methods`` (known once a card is read): every output blank again."""
        self.methods = [m for m in self.out.columns if m in methods]
        self.view = self.out.blank(self.methods)

    def values(self) -> list:
        return [self.view[c] for c in self.out.components()]

    def say(self, status: str) -> list:
        """Every output, with ``status`` in the status line."""
        self.view[self.out.status] = status
        return self.values()

    def stream(self, events, question: str, settings: Settings, old_card=None) -> Iterator[list]:
        """Every output after each batch of events (``batches``): the comparison runs on while the page sends."""
        for batch in batches(events, self.interval):
            for event in batch:
                self._apply(event, question, settings, old_card)
            yield self.values()

    def failed(self, message: str) -> list:
        """Every output once the run stopped with ``message``: it stays in the status line, and each selected
        column that did not finish says why."""
        for method in self.methods:
            if method not in self.done:
                self.view[self.out.columns[method].answer] = f"Not run: {message}"
        return self.say(f"⚠️ {message}")

    def _apply(self, event: Event, question, settings, old_card) -> None:
        if isinstance(event, Progress):
            # the models are done, the page is not: it still prepares images and charts
            self.view[self.out.status] = "Preparing the results…" if event.stage == "done" else event.message
        elif isinstance(event, AnswerDelta):  # later text in the same batch replaces earlier text
            self.view[self.out.columns[event.method].answer] = event.text
        elif isinstance(event, MethodDone):
            self.column_done(event.report)
        elif isinstance(event, Finished):
            self.finished(event, question, settings, old_card)

    def column_done(self, report: MethodReport) -> None:
        """A column's answer (or its error, once) and its token account."""
        col = self.out.columns[report.method]
        self.view[col.answer] = report.answer if not report.error else f"⚠️ {report.error}"
        self.view[col.tokens] = "" if report.error else rp.token_summary(report)
        self.done.add(report.method)

    def finished(self, event: Finished, question: str, settings: Settings, old_card: dict | None) -> None:
        """Every result output: the run card, charts, timings and each column's gallery."""
        started = time.perf_counter()
        folder = self.files.new()  # this request's own: its run card and the frames its galleries show
        card = runcard.build(event, question, settings)
        card_path = runcard.save(card, folder / f"run-card-{card['video']['fingerprint'][:10]}.json")
        self.results(event.prepared, event.reports, folder, card_path)
        self.view[self.out.last_run] = {
            "path": str(event.prepared.path),
            "fingerprint": event.prepared.fingerprint,
        }
        self.view[self.out.status] = status_line(event, old_card, card)
        page_s = time.perf_counter() - started
        self.view[self.out.timings_table] = rp.timings_frame(
            event.reports, event.shared_timings, page_s=page_s
        )

    def results(self, prepared: PreparedVideo | None, reports: dict, folder: Path, card_path: Path) -> None:
        """Answers, token accounts, charts, galleries (from ``prepared``'s frames, when given) and the card."""
        for report in reports.values():
            self.column_done(report)
            if prepared is not None:
                self.view[self.out.columns[report.method].gallery] = self.images.gallery(
                    prepared, report, folder
                )
        self.view[self.out.tokens_plot] = rp.tokens_frame(reports)
        self.view[self.out.timeline_plot] = rp.timeline_figure(reports)
        self.view[self.out.card_file] = str(card_path)


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
        if old_card["video"]["fingerprint"] != card["video"]["fingerprint"]:
            text += "\n\n**This is not the card's video** (its fingerprint differs): expect differences."
        differences = runcard.diff(old_card, card)
        text += (
            "\n\n**Re-run matches the card.**"
            if not differences
            else "\n\n**Re-run differs from the card:**\n" + "\n".join(f"- {d}" for d in differences)
        )
    return text
