"""The comparison page: its components and the handlers that serve them, as one object.

``Page`` holds the Space's limits, its scratch folders and, once ``build`` has laid it out, its components;
every handler is a method closing over them, so two pages built in one process never share state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
from gradio import FileData

import media
from media.clips import export_moments
from pipeline import cardview, runcard
from pipeline import report as rp
from pipeline.bounds import SETTING_BOUNDS
from pipeline.columns import COLUMNS, DEFAULT_COLUMNS
from pipeline.compare import compare
from pipeline.events import Finished
from pipeline.limits import AppSettings
from pipeline.request import Request
from pipeline.settings import Settings
from pipeline.video import content_fingerprint, download, is_url
from ui import cards
from ui.edge import at_the_edge, visitor_error
from ui.evaltab import COMPARE_TAB, EVAL_TAB, EvalTab
from ui.frames import FrameImages
from ui.inputs import (
    PAGE_INPUTS,
    backbone_choices,
    banner_for,
    choice_label,
    column_header,
    css_id,
    link_cleared,
    offered_columns,
    path_of,
    settings_from,
    source,
    starting,
    upload_cleared,
)
from ui.scratch import ScratchDirs
from ui.updates import Outputs, Updates, empty_timings
from ui.widgets import column_outputs, slider

#: How running events show progress: not at all, as our status line says each step. Gradio's full overlay
#: animates every output while tokens stream, which kept a browser's CPU busy (measured: more than a core on
#: this machine), and any overlay stamps a bare "Error" over every output of a failed event, where the status
#: line and the columns say what happened in words.
PROGRESS = "hidden"
#: Gradio's cache (uploads and the files handed out) is swept every 10 minutes of what is older than an hour.
UPLOAD_LIFETIME = (600, 3600)
INTRO = (
    "# Long-Video Token Compression Arena\n"
    "One video, one question, one backbone, one visual-token budget: see how **Espresso**, **XComp** "
    "and **Tempo** (training-free versions) answer, next to uniform frame sampling and average pooling."
)


#: Every endpoint an API client may call: the documented two, then the page's own streaming events.
API_ENDPOINTS = ("compare", "kept_moments", "compare_page", "rerun_card")


class Page:
    """The page (see the module docstring). ``build()`` returns the ``gr.Blocks``."""

    def __init__(self, settings: AppSettings, backbone: str, examples: list[list] | None = None) -> None:
        self.settings, self.backbone, self.examples = settings, backbone, examples or []
        self.sources = ScratchDirs("arena-src-")  # downloaded videos, kept for "Kept moments"
        self.files = ScratchDirs("arena-out-")  # run cards, gallery frames, clips
        self.images = FrameImages()
        self.out: Outputs | None = None
        self.shared = cards.shared_cards()

    # --- handlers -----------------------------------------------------------------------------------

    def request(self, source: str, question: str, settings: Settings) -> Request:
        """A request within the Space's limits; a link downloads into a fresh scratch folder."""
        workdir = self.sources.new() if is_url(source) else None
        return Request(source, question, settings, limits=self.settings.media_limits(), workdir=workdir)

    def compare_page(
        self,
        video: str | None,
        url: str,
        question: str,
        methods: list[str] | None,
        backbone: str,
        budget: float,
        fps: float,
        max_frames: float,
        segment_frames: float,
        seed: float,
        max_new_tokens: float,
    ):
        """Compare the selected methods on one video and question; streams answers into their columns."""
        methods = list(DEFAULT_COLUMNS) if methods is None else methods

        def run(updates: Updates):
            yield updates.say(starting(video, url))
            settings = settings_from(
                methods, backbone, budget, fps, max_frames, segment_frames, seed, max_new_tokens
            )
            events = compare(self.request(source(video, url), question, settings))
            yield from updates.stream(events, question, settings)

        yield from self._run(methods, run)

    def compare(
        self,
        question: str,
        video: FileData | None = None,
        url: str = "",
        methods: list[str] | None = None,
        backbone: str | None = None,
        budget: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        segment_frames: int | None = None,
        seed: int = 0,
        max_new_tokens: int | None = None,
    ) -> dict:
        """Compare token-compression methods for long-video VLMs on one video and one question.

        Every method gets the same backbone, the same sampled frames and the same visual-token budget. Give
        the video as a file or as an http(s) link (one of them); everything but the question is optional.

        Args:
            question: what to ask about the video, at most 2,000 characters.
            video: a video file (mp4, webm, mov, mkv, ...).
            url: an http(s) link to a video (YouTube and other sites), when no file is given.
            methods: columns to run, from espresso, xcomp, tempo, uniform, pool, tempo-6b.official (default: the first five).
            backbone: the shared backbone, e.g. qwen3vl-2b (default: the page's).
            budget: most visual tokens the answering LLM may receive (default: the backbone's).
            fps: frames sampled per second of video (default: the backbone's).
            max_frames: most frames sampled (default: the backbone's).
            segment_frames: frames per segment, even (default: the backbone's).
            seed: random seed.
            max_new_tokens: most tokens in each answer (default: 64).

        Returns:
            The run card: settings, video, and per method the answer, error, token account, kept frames with
            their timestamps, per-segment scores and allocations, and timings.
        """
        chosen = list(DEFAULT_COLUMNS) if methods is None else methods
        settings = settings_from(
            chosen, backbone or self.backbone, budget, fps, max_frames, segment_frames, seed, max_new_tokens
        )
        path = path_of(video)
        if path and url and str(url).strip():
            raise gr.Error("Give a video file or a URL, not both.")
        finished = drain(compare(self.request(source(path, url), question, settings)))
        return runcard.build(finished, question.strip(), settings)

    def rerun_card(self, card_file: str | None, video: str | None, url: str):
        """Load a run card and re-run it, showing what differs: on the card's own link when it was made from
        one (nothing else is asked for), else on the video given."""

        def run(updates: Updates):
            if not card_file:
                raise runcard.CardError("Choose a run card (.json) to load first.")
            card = runcard.load(card_file)
            settings = runcard.settings_of(card)
            updates.select(settings.methods)
            link = card["video"].get("source_url")
            yield updates.say("Re-running the card on its link…" if link else "Re-running the card…")
            given = None if link else video or (media.video_source(url) if url and url.strip() else None)
            events = compare(self.request(str(runcard.source_of(card, given)), card["question"], settings))
            yield from updates.stream(events, card["question"], settings, card)

        yield from self._run((), run)

    def open_card(self, card_file: str | None, video: str | None):
        """Show a run card a visitor loaded as it ran, without running anything (kept frames too when the
        uploaded video is the card's)."""

        def run(updates: Updates):
            card = runcard.load(card_file)
            own = cards.own_video(card, video)
            prepared = cards.sampled(card, own, self.settings.media_limits()) if own else None
            yield cards.show(updates, card, prepared, self.files.new())

        yield from self._run((), run)

    def open_shared(self, index: int) -> list:
        """One of the shared cards, shown at once with its example clip's kept frames; its video, question
        and methods fill the inputs, so Compare or Re-run card runs it again."""
        path, card = self.shared[index]
        clip = cards.example_clip(card)
        prepared = cards.sampled(card, clip, self.settings.media_limits()) if clip else None
        methods = [m for m in runcard.settings_of(card).methods if m in offered_columns()]
        updates = Updates(self.out, self.files, self.images, methods)
        shown = cards.show(updates, card, prepared, self.files.new())
        return [*shown, str(clip) if clip else None, card["question"], methods, str(path)]

    def tokens_of(self, card_file: str | None):
        """The token chart of the card the page shows (an example from the cache comes without one)."""
        return rp.tokens_frame(cardview.reports_of(runcard.load(card_file))) if card_file else None

    def example(self, video: str | None, question: str):
        """An example clip and its question compared with the page's defaults (``gr.Examples`` caches what
        it shows, ``Outputs.cached``: no clip or session state, which Gradio's cache cannot hold)."""
        kept = [c in self.out.cached() for c in self.out.components()]
        *_, values = self.compare_page(video, "", question, None, self.backbone, *[None] * 6)
        return [v for v, keep in zip(values, kept, strict=True) if keep]

    def _run(self, methods, run: Callable[[Updates], Iterator[list]]) -> Iterator[list]:
        """Every output of the page while ``run`` streams them. A refusal or failure is written into the
        status line, where it stays, and into each selected column that did not finish; then it is raised,
        for the toast."""
        updates = Updates(self.out, self.files, self.images, methods if isinstance(methods, list) else ())
        try:
            yield from run(updates)
            return
        except Exception as err:  # turned into its sentence here, outside the except block (see ui.edge)
            error = visitor_error(err)
        yield updates.failed(error.message)
        raise error

    def moments_button(self, method: str, last_run: dict | None, card_file: str | None, video: str | None):
        """The page's "Kept moments" button: the clip of what ``method`` looked at in the run card the page
        shows, cut from the video that run read (kept for the session), else from the uploaded video, else
        from the card's link, downloaded again."""
        if not card_file:
            raise gr.Error("Run a comparison first: this method has no kept frames yet.")
        card = runcard.load(card_file)
        if last_run and last_run.get("fingerprint") == card["video"]["fingerprint"]:
            video = last_run["path"]
        return gr.update(value=str(self.moments(card, method, video)), visible=True)

    def kept_moments(self, method: str, card: dict, video: FileData | None = None) -> FileData:
        """Cut a short MP4 of what one method looked at: about a second of the video around each frame it kept, in time order, with the time written on it.

        Args:
            method: the column whose kept frames to show, e.g. xcomp (one of the run card's results).
            card: the run card /compare returned.
            video: the video file the card was made from; leave it out when the card was made from a link (the link is downloaded again).

        Returns:
            The MP4 file.
        """
        path = self.moments(cardview.from_object(card), method, path_of(video))
        return FileData(path=str(path), orig_name=path.name, mime_type="video/mp4")

    def moments(self, card: dict, method: str, video: str | None) -> Path:
        """The kept-moments clip of ``method`` in ``card`` (checked), cut from ``video`` or the card's link."""
        times = cardview.kept_times(card, method)
        source = self.card_video(card, video)
        out = self.files.new() / f"kept-moments-{method}.mp4"
        return export_moments(source, times, out, limits=self.settings.media_limits())

    def card_video(self, card: dict, video: str | None) -> Path:
        """The card's video on this server: ``video`` when given, else the card's link downloaded again
        (http(s) only); either must be the very video the card was made from (its fingerprint)."""
        if video:
            path = Path(video)
        else:
            source = runcard.source_of(card)  # one sentence for a card made from an upload, or not a link
            path = download(str(source), self.settings.media_limits(), self.sources.new())
        if content_fingerprint(path) != card["video"]["fingerprint"]:
            raise runcard.CardError(runcard.WRONG_VIDEO)
        return path

    def backbone_defaults(self, backbone: str):
        """When the backbone changes: its registry defaults, and the random-weights banner for tiny-random."""
        s = Settings(backbone=backbone)
        return s.budget, s.fps, s.max_frames, s.segment_frames, banner_for(backbone)

    @staticmethod
    def shown_columns(methods: list[str] | None) -> list:
        """One result column per selected method, so an unselected one takes no room."""
        return [gr.update(visible=m in (methods or [])) for m in COLUMNS]

    # --- layout -------------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        defaults = Settings(backbone=self.backbone)
        with gr.Blocks(title="Long-Video Token Compression Arena", delete_cache=UPLOAD_LIFETIME) as demo:
            gr.Markdown(INTRO)
            with gr.Tabs(selected=COMPARE_TAB) as tabs:
                with gr.Tab("Compare", id=COMPARE_TAB):
                    banner = gr.Markdown(banner_for(self.backbone), elem_id="tiny-banner")
                    inputs, sliders, run = self._inputs(defaults)
                    self.out, boxes = self._results()
                    self._wire(inputs, sliders, run, banner, boxes)
                with gr.Tab("Evaluation", id=EVAL_TAB, elem_id="evaluation-tab"):
                    evaluations = EvalTab()
                    evaluations.build()
            evaluations.wire(inputs[0], inputs[2], self.out.status, tabs)
        return keep_helpers_private(demo)

    def _inputs(self, defaults: Settings):
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.Video(label="Video (upload)", sources=["upload"], elem_id="video")
                url = gr.Textbox(label="…or a video URL (YouTube and other sites)", elem_id="url")
            with gr.Column(scale=3):
                question = gr.Textbox(label="Question", lines=2, elem_id="question")
                methods = gr.CheckboxGroup(
                    choices=[(choice_label(m), m) for m in offered_columns()],
                    value=list(DEFAULT_COLUMNS),
                    label="Methods",
                    elem_id="methods",
                )
                backbone = gr.Dropdown(
                    choices=backbone_choices(), value=self.backbone, label="Backbone", elem_id="backbone"
                )
                budget = slider("budget", defaults, "Visual-token budget")
                with gr.Accordion("Advanced", open=False):
                    fps = slider("fps", defaults, "Frames per second")
                    max_frames = slider("max_frames", defaults, "Max frames")
                    segment_frames = slider("segment_frames", defaults, "Segment length")
                    seed = gr.Number(
                        value=defaults.seed,
                        precision=0,
                        minimum=SETTING_BOUNDS["seed"].low,
                        maximum=SETTING_BOUNDS["seed"].high,
                        label="Seed",
                        elem_id="seed",
                    )
                    max_new_tokens = slider("max_new_tokens", defaults, "Max new tokens")
                with gr.Row():
                    run = gr.Button("Compare", variant="primary", elem_id="compare")
                    # a link to share exists once there are results to share (then Share via Link opens them)
                    self.share = gr.DeepLinkButton(interactive=False)
        named = locals()
        sliders = [budget, fps, max_frames, segment_frames]
        return [named[name] for name in PAGE_INPUTS], sliders, run

    def _results(self) -> tuple[Outputs, dict]:
        status = gr.Markdown(elem_id="status")
        boxes, columns = {}, {}
        with gr.Row(equal_height=False, elem_id="results"):
            for m in COLUMNS:
                visible = m in DEFAULT_COLUMNS
                with gr.Column(min_width=160, visible=visible, elem_id=f"column-{css_id(m)}") as boxes[m]:
                    gr.Markdown(column_header(m))
                    columns[m] = column_outputs(m)
        tokens_plot = gr.BarPlot(
            x="bar",
            y="tokens",
            color="kind",
            sort=None,
            label="Visual tokens per method",
            elem_id="tokens-plot",
        )
        timings_table = gr.Dataframe(
            empty_timings(), label="Timings and memory", interactive=False, wrap=True, elem_id="timings"
        )
        timeline_plot = gr.Plot(
            label="Per-segment allocation (bars), relevance (line) and kept frames (ticks)",
            elem_id="timeline",
        )
        with gr.Row():
            card_file = gr.File(label="Run card (download)", interactive=False, elem_id="card")
            self.card_in = gr.File(
                label="Open a run card (its results show; Re-run card runs it again)",
                file_types=[".json"],
                elem_id="card-in",
            )
            self.rerun = gr.Button("Re-run card")
        last_run = gr.State(None)
        out = Outputs(status, tokens_plot, timeline_plot, timings_table, card_file, last_run, columns)
        return out, boxes

    def _wire(self, inputs, sliders, run, banner, boxes) -> None:
        video, url, question, methods, backbone = inputs[:5]
        outputs = self.out.components()
        # the API first, so that no page event takes its names (an event is named after its function)
        gr.api(at_the_edge(self.compare), api_name="compare", concurrency_id="gpu")
        gr.api(at_the_edge(self.kept_moments), api_name="kept_moments")
        compare_page = at_the_edge(self.compare_page)
        ran = run.click(
            compare_page,
            inputs,
            outputs,
            api_name="compare_page",
            api_visibility="undocumented",
            concurrency_id="gpu",
            show_progress=PROGRESS,
        )
        asked = question.submit(
            compare_page, inputs, outputs, api_name=False, concurrency_id="gpu", show_progress=PROGRESS
        )
        rerun = self.rerun.click(
            at_the_edge(self.rerun_card),
            [self.card_in, video, url],
            outputs,
            api_name="rerun_card",
            api_visibility="undocumented",
            concurrency_id="gpu",
            show_progress=PROGRESS,
        )
        for event in (ran, asked, rerun):  # results to share: Share via Link opens them
            event.success(at_the_edge(_shareable), None, self.share, queue=False)
        # one video at a time, the last one given: a video clears the link, a link clears the video
        video.change(at_the_edge(link_cleared), video, url, queue=False, show_progress="hidden")
        url.change(at_the_edge(upload_cleared), url, video, queue=False, show_progress="hidden")
        shown = at_the_edge(self.shown_columns)
        methods.change(shown, methods, list(boxes.values()), show_progress="hidden")
        backbone.change(at_the_edge(self.backbone_defaults), backbone, [*sliders, banner])
        for m, col in self.out.columns.items():
            moments = at_the_edge(functools.partial(self.moments_button, m))
            col.moments_btn.click(moments, [self.out.last_run, self.out.card_file, video], col.moments)
        self._wire_cards(inputs, outputs)
        self._wire_examples(video, url, question)

    def _wire_examples(self, video, url, question) -> None:
        """The example clips, cached lazily (each runs once, then opens from Gradio's cache), and the URL example."""
        if self.examples:
            examples = gr.Examples(
                self.examples,
                [video, question],
                self.out.cached(),
                fn=at_the_edge(self.example),
                cache_examples=True,
                cache_mode="lazy",
                label="Examples (generated clips; each runs once, then opens from the cache)",
                elem_id="examples",
            )
            shown = examples.cache_event.then(
                at_the_edge(self.tokens_of), self.out.card_file, self.out.tokens_plot
            )
            shown.success(at_the_edge(_shareable), None, self.share, queue=False)
        gr.Examples(
            [[None, "https://www.youtube.com/watch?v=aqz-KE-bpKQ", "What happens to the rabbit?"]],
            [video, url, question],
            label="URL examples (need network access)",
        )

    def _wire_cards(self, inputs, outputs) -> None:
        """A loaded card opens at once; a shared card (the gallery) too, filling the inputs."""
        video, _, question, methods = inputs[:4]
        opened = self.card_in.upload(
            at_the_edge(self.open_card), [self.card_in, video], outputs, show_progress=PROGRESS
        )
        opened.success(at_the_edge(_shareable), None, self.share, queue=False)
        if not self.shared:
            return
        gallery = gr.Dataset(
            components=[gr.Textbox(visible=False) for _ in cards.HEADERS],
            headers=cards.HEADERS,
            samples=cards.gallery_rows(self.shared),
            type="index",
            label="Shared run cards: open one to see its answers, kept frames and timeline (nothing runs)",
            elem_id="shared-cards",
        )
        extra = [video, question, methods, self.card_in]
        shown = gallery.click(at_the_edge(self.open_shared), gallery, outputs + extra, show_progress=PROGRESS)
        shown.success(at_the_edge(_shareable), None, self.share, queue=False)


def _shareable():
    return gr.update(interactive=True)


def keep_helpers_private(demo: gr.Blocks) -> gr.Blocks:
    """Every event but the API's and the page's own two streaming events is private: gradio_client and MCP
    see ``/compare`` and ``/kept_moments`` (documented) and ``/compare_page``, ``/rerun_card``
    (undocumented, positional); the page's helpers (backbone defaults, shown columns, the buttons, examples,
    Gradio's own share button) are for the page only."""
    for fn in demo.fns.values():
        if fn.api_name not in API_ENDPOINTS:
            fn.api_visibility = "private"
    return demo


def drain(events) -> Finished:
    """The last event of a comparison (``Finished``), every event before it consumed."""
    finished = None
    for event in events:
        finished = event
    return finished
