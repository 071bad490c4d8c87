"""A comparison's events turned into updates of the page's components.

``Updates`` knows the page's components (``Outputs``) and nothing about how they are laid out. Answer text is
throttled: while tokens stream, the answers that grew are sent together at most every ``interval`` seconds
(the final text always goes out with its column's report), because every update is a message to the
browser or API client with every output it changes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from pipeline import report as rp
from pipeline import runcard
from pipeline.events import AnswerDelta, Event, Finished, MethodDone, MethodReport, Progress
from pipeline.settings import Settings
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

    def __init__(self, outputs: Outputs, files: ScratchDirs, *, interval: float = 0.1) -> None:
        self.out, self.files, self.interval = outputs, files, interval

    def stream(self, events, question: str, settings: Settings, progress, old_card=None) -> Iterator[dict]:
        yield {self.out.status: "Starting…", **self.blank(settings)}
        self._pending: dict[str, str] = {}  # answers grown since the last update
        self._sent = 0.0
        for event in events:
            update = self._update(event, question, settings, progress, old_card)
            if update:
                yield update

    def _update(self, event: Event, question, settings, progress, old_card) -> dict | None:
        if isinstance(event, Progress):
            progress(event.fraction, desc=event.message)
            return {self.out.status: event.message}
        if isinstance(event, AnswerDelta):
            self._pending[event.method] = event.text
            if time.monotonic() - self._sent < self.interval:
                return None
            self._sent = time.monotonic()
            grown, self._pending = self._pending, {}
            return {self.out.columns[m].answer: text for m, text in grown.items()}
        if isinstance(event, MethodDone):
            self._pending.pop(event.report.method, None)  # its report carries the final text
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
            updates[col.moments] = gr.update(value=None, visible=False)
            updates[col.moments_btn] = gr.update(interactive=False)
        return updates

    def column_done(self, report: MethodReport) -> dict:
        col = self.out.columns[report.method]
        return {
            col.answer: report.answer if not report.error else f"⚠️ {report.error}",
            col.tokens: rp.token_summary(report),
        }

    def finished(self, event: Finished, question: str, settings: Settings, old_card: dict | None) -> dict:
        card = runcard.build(event, question, settings)
        card_path = self.files.new() / f"run-card-{card['video']['fingerprint'][:10]}.json"
        runcard.save(card, card_path)
        out = self.out
        updates = {
            out.status: status_line(event, old_card, card),
            out.tokens_plot: rp.tokens_frame(event.reports),
            out.timeline_plot: rp.timeline_figure(event.prepared, event.reports),
            out.timings_table: rp.timings_frame(event.reports, event.shared_timings),
            out.card_file: str(card_path),
            out.last_run: {"path": str(event.prepared.path), "kept": kept_times(event)},
            **self.blank(settings),
        }
        for method, report in event.reports.items():
            updates.update(self.column_done(report))  # every output final, so an API caller gets it all
            col = out.columns[method]
            updates[col.gallery] = rp.gallery_items(event.prepared, report)
            updates[col.moments_btn] = gr.update(interactive=bool(report.kept) and not report.error)
        return updates


def kept_times(event: Finished) -> dict:
    return {m: [f["timestamp"] for f in r.kept_frames] for m, r in event.reports.items()}


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
