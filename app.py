"""The Gradio Space: layout, event wiring, and gr.Error at the edge. ``python app.py`` launches it.

Everything below this file is gradio-free (``pipeline``, ``media``, ``model_zoo``, ``compressors``). The
one GPU entry point is ``_gpu_run``: on ZeroGPU, ``spaces.GPU`` gives it a GPU for as long as
``pipeline.compare.estimate_gpu_seconds`` asks; elsewhere it is a no-op.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import inspect
import logging
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import spaces  # ZeroGPU: imported before anything initialises CUDA (importing torch does not)
import torch

import compressors
import media
import model_zoo
from media.clips import export_moments
from pipeline import compare as pc
from pipeline import report as rp
from pipeline import runcard
from pipeline.cache import configure_caches
from pipeline.limits import AppSettings
from pipeline.settings import COLUMNS, METHODS, OFFICIAL, Settings, SettingsError

ROOT = Path(__file__).parent
DEFAULT_BACKBONE = "qwen3vl-2b" if torch.cuda.is_available() else "tiny-random"
TINY_BANNER = (
    "⚠️ **The `tiny-random` backbone has random weights: its answers are noise.** It is here so the page "
    "works offline and for testing; pick a Qwen3-VL backbone for real answers."
)
USER_ERRORS = (
    media.VideoError,
    pc.QuestionError,
    SettingsError,
    runcard.CardError,
    model_zoo.ModelLoadError,
)
OUT_OF_MEMORY = pc.OUT_OF_MEMORY
UNEXPECTED = "Something went wrong on our side ({name}); please try again, and report it if it happens again."
#: The Space's limits (upload size, video caps, queue); ``build_demo`` sets them, ``python app.py --help`` lists them.
SETTINGS = AppSettings()
log = logging.getLogger("arena")


# --- the GPU entry point --------------------------------------------------------------------------------


def _gpu_seconds(prepared, question, settings) -> int:
    return pc.estimate_gpu_seconds(settings, prepared.real_frames)


@spaces.GPU(duration=_gpu_seconds)
def _gpu_run(prepared, question, settings):
    """Encode, compress and answer on the GPU; yields CPU-only events (they cross ZeroGPU's fork)."""
    yield from pc.run_methods(prepared, question, settings)


# --- the edge: every failure becomes one sentence ---------------------------------------------------------


def _visitor_error(err: Exception) -> gr.Error:
    """The sentence a visitor sees: theirs for what they can fix, one line for the rest (logged here)."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, USER_ERRORS):
        return gr.Error(str(err))
    if _is_out_of_memory(err):
        return gr.Error(OUT_OF_MEMORY)
    log.error("unexpected error in a handler", exc_info=err)
    return gr.Error(UNEXPECTED.format(name=type(err).__name__))


def _is_out_of_memory(err: Exception) -> bool:
    # torch raises OutOfMemoryError on CUDA but a plain RuntimeError when the CPU allocator fails
    cpu = isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or cpu


def at_the_edge(handler):
    """Wrap an event handler so that it raises only gr.Error, each with one sentence, never a traceback.

    Memory is freed after the ``except`` block: inside it, the traceback still holds the failed frames'
    tensors. Generator handlers stay generators (Gradio streams them); the signature is the handler's own.
    """

    def fail(error: gr.Error):
        if error.message == OUT_OF_MEMORY:
            pc.free_memory()
        raise error

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def streaming(*args, **kwargs):
            try:
                return (yield from handler(*args, **kwargs))
            except Exception as err:
                error = _visitor_error(err)
            fail(error)

        return streaming

    @functools.wraps(handler)
    def plain(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as err:
            error = _visitor_error(err)
        fail(error)

    return plain


# --- handlers ---------------------------------------------------------------------------------------------


def backbone_choices() -> list[tuple[str, str]]:
    labels = []
    for name in model_zoo.list_backbones():
        spec = model_zoo.get_backbone_spec(name)
        note = " — random weights, for testing" if name == "tiny-random" else f" — {spec.hub_id}"
        labels.append((name + note, name))
    return labels


@at_the_edge
def backbone_defaults(backbone: str):
    """When the backbone changes: its registry defaults, and the random-weights banner for tiny-random."""
    s = Settings.for_backbone(backbone)
    return (
        gr.update(value=s.budget),
        gr.update(value=s.fps),
        gr.update(value=s.max_frames),
        gr.update(value=s.segment_frames),
        gr.update(visible=backbone == "tiny-random"),
    )


def shown_columns(methods: list[str] | None) -> list:
    """One result column per selected method, so an unselected one takes no room."""
    return [gr.update(visible=m in (methods or [])) for m in COLUMNS]


def _settings(methods, backbone, budget, fps, max_frames, segment_frames, seed, max_new_tokens) -> Settings:
    return Settings.for_backbone(
        backbone,
        methods=[m for m in COLUMNS if m in (methods or [])],
        budget=int(budget),
        fps=float(fps),
        max_frames=int(max_frames),
        segment_frames=int(segment_frames),
        seed=int(seed),
        max_new_tokens=int(max_new_tokens),
    )


def _source(video: str | None, url: str | None) -> str:
    if video:
        return video
    if url and url.strip():
        return media.video_source(url)  # http(s) links only: never a path on the server
    raise gr.Error("Upload a video or paste a video URL first.")


@at_the_edge
def compare(
    video: str | None,
    url: str = "",
    question: str = "",
    methods: list[str] | None = None,
    backbone: str = DEFAULT_BACKBONE,
    budget: float = 4096,
    fps: float = 1.0,
    max_frames: float = 64,
    segment_frames: float = 8,
    seed: float = 0,
    max_new_tokens: float = 64,
    progress=gr.Progress(),  # noqa: B008 (gradio's idiom)
):
    """Compare the selected methods on one video and question; streams answers into their columns."""
    methods = list(METHODS) if methods is None else methods
    settings = _settings(methods, backbone, budget, fps, max_frames, segment_frames, seed, max_new_tokens)
    source = _source(video, url)
    events = pc.compare(source, question, settings=settings, **_compare_kwargs(source))
    yield from _stream(events, question, settings, progress)


class ScratchDirs:
    """Temporary folders for files the page hands out; only the newest ``keep`` survive, all go at exit.

    Downloaded videos stay for a few requests so "Kept moments" can cut them; run cards and clips are
    copied into Gradio's cache when returned, so older folders are no longer needed.
    """

    def __init__(self, prefix: str, keep: int) -> None:
        self.prefix, self.keep, self.dirs = prefix, keep, []
        atexit.register(self.clear)

    def new(self) -> Path:
        self.dirs.append(tempfile.mkdtemp(prefix=self.prefix))
        while len(self.dirs) > self.keep:
            shutil.rmtree(self.dirs.pop(0), ignore_errors=True)
        return Path(self.dirs[-1])

    def clear(self) -> None:
        while self.dirs:
            shutil.rmtree(self.dirs.pop(), ignore_errors=True)


SOURCES = ScratchDirs("arena-src-", keep=4)
OUTPUTS = ScratchDirs("arena-out-", keep=32)


def _compare_kwargs(source: str) -> dict:
    """The GPU runner and the Space's limits; a URL downloads into a fresh scratch folder."""
    workdir = SOURCES.new() if pc.is_url(source) else None
    return {"runner": _gpu_run, "limits": SETTINGS.media_limits(), "workdir": workdir}


def _stream(events, question, settings: Settings, progress, old_card: dict | None = None):
    yield {status: "Starting…", **_blank_columns(settings)}
    for event in events:
        if isinstance(event, pc.Progress):
            progress(event.fraction, desc=event.message)
            yield {status: event.message}
        elif isinstance(event, pc.AnswerDelta):
            yield {ui[event.method]["answer"]: event.text}
        elif isinstance(event, pc.MethodDone):
            yield _column_done(event.report)
        elif isinstance(event, pc.Finished):
            yield _finished(event, question, settings, old_card)


def _blank_columns(settings: Settings) -> dict:
    updates = {}
    for m in COLUMNS:
        chosen = m in settings.methods
        updates[ui[m]["answer"]] = "" if chosen else "(not selected)"
        updates[ui[m]["tokens"]] = ""
        updates[ui[m]["gallery"]] = None
        updates[ui[m]["moments"]] = gr.update(value=None, visible=False)
        updates[ui[m]["moments_btn"]] = gr.update(interactive=False)
    return updates


def _column_done(report: pc.MethodReport) -> dict:
    col = ui[report.method]
    return {
        col["answer"]: report.answer if not report.error else f"⚠️ {report.error}",
        col["tokens"]: rp.token_summary(report),
        col["gallery"]: None,  # filled once the whole comparison is in (frames live with the prepared video)
    }


def _finished(event: pc.Finished, question: str, settings: Settings, old_card: dict | None) -> dict:
    card = runcard.build(event, question, settings)
    card_path = OUTPUTS.new() / f"run-card-{card['video']['fingerprint'][:10]}.json"
    runcard.save(card, card_path)
    updates = {
        status: _status_line(event, old_card, card),
        tokens_plot: rp.tokens_frame(event.reports),
        timeline_plot: rp.timeline_figure(event.prepared, event.reports),
        timings_table: rp.timings_frame(event.reports, event.shared_timings),
        card_file: str(card_path),
        last_run: {"path": str(event.prepared.path), "kept": _kept_times(event)},
        **_blank_columns(settings),
    }
    for method, report in event.reports.items():
        updates.update(_column_done(report))  # every output final, so an API caller gets the whole result
        col = ui[method]
        updates[col["gallery"]] = rp.gallery_items(event.prepared, report)
        updates[col["moments_btn"]] = gr.update(interactive=bool(report.kept) and not report.error)
    return updates


def _kept_times(event: pc.Finished) -> dict:
    return {m: [f["timestamp"] for f in r.kept_frames] for m, r in event.reports.items()}


def _status_line(event: pc.Finished, old_card: dict | None, card: dict) -> str:
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


@at_the_edge
def rerun_card(card_file: str | None, video: str | None, url: str, progress=gr.Progress()):  # noqa: B008
    """Load a run card and re-run it (on its URL, or on the uploaded video); show what differs."""
    if not card_file:
        raise runcard.CardError("Choose a run card (.json) to load first.")
    card = runcard.load(card_file)
    typed = media.video_source(url) if url and url.strip() else None  # http(s) links only
    source = runcard.source_of(card, video or typed)
    events = runcard.replay(card, video=source, **_compare_kwargs(source))
    yield from _stream(events, card["question"], runcard.settings_of(card), progress, old_card=card)


@at_the_edge
def kept_moments(method: str, state: dict | None):
    """A short MP4 of what ``method`` looked at: about a second around each kept frame, in order."""
    if not state or not state.get("kept", {}).get(method):
        raise gr.Error("Run a comparison first: this method has no kept frames yet.")
    out = OUTPUTS.new() / f"kept-moments-{method}.mp4"
    return gr.update(value=str(export_moments(state["path"], state["kept"][method], out)), visible=True)


# --- layout -----------------------------------------------------------------------------------------------


def _css_id(method: str) -> str:
    return method.replace(".", "-")


def _choice_label(method: str) -> str:
    if method in OFFICIAL:
        return f"{method} (official weights, {model_zoo.get_variant(method).license}; needs a GPU)"
    return method


def _column_header(method: str) -> str:
    if method in OFFICIAL:
        variant = model_zoo.get_variant(method)
        return f"### {method}\n<small>{variant.label} · {variant.hub_id} · licence: {variant.license}</small>"
    return f"### {method}\n<small>{compressors.COMPRESSORS[method]().label}</small>"


ui: dict[str, dict] = {}


def _examples() -> list[list]:
    from examples import make_examples

    return make_examples.gallery_rows(ROOT / "examples")


def build_demo(default_backbone: str = DEFAULT_BACKBONE, settings: AppSettings | None = None) -> gr.Blocks:
    """The page; ``settings`` (default ``AppSettings()``) are the limits its handlers apply."""
    global status, tokens_plot, timeline_plot, timings_table, card_file, last_run, SETTINGS
    SETTINGS = settings or AppSettings()
    defaults = Settings.for_backbone(default_backbone)
    with gr.Blocks(title="Long-Video Token Compression Arena") as demo:
        gr.Markdown(
            "# Long-Video Token Compression Arena\n"
            "One video, one question, one backbone, one visual-token budget: see how **Espresso**, **XComp** "
            "and **Tempo** (training-free versions) answer, next to uniform frame sampling and average pooling."
        )
        banner = gr.Markdown(TINY_BANNER, visible=default_backbone == "tiny-random", elem_id="tiny-banner")
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.Video(label="Video (upload)", sources=["upload"], elem_id="video")
                url = gr.Textbox(label="…or a video URL (YouTube and other sites)", elem_id="url")
            with gr.Column(scale=3):
                question = gr.Textbox(label="Question", lines=2, elem_id="question")
                methods = gr.CheckboxGroup(
                    choices=[(_choice_label(m), m) for m in COLUMNS],
                    value=list(METHODS),
                    label="Methods",
                    elem_id="methods",
                )
                backbone = gr.Dropdown(
                    choices=backbone_choices(), value=default_backbone, label="Backbone", elem_id="backbone"
                )
                budget = gr.Slider(16, 16384, value=defaults.budget, step=16, label="Visual-token budget")
                with gr.Accordion("Advanced", open=False):
                    fps = gr.Slider(0.1, 4, value=defaults.fps, step=0.1, label="Frames per second")
                    max_frames = gr.Slider(2, 1024, value=defaults.max_frames, step=2, label="Max frames")
                    segment_frames = gr.Slider(
                        2, 32, value=defaults.segment_frames, step=2, label="Segment length"
                    )
                    seed = gr.Number(value=0, precision=0, label="Seed")
                    max_new_tokens = gr.Slider(
                        1, 512, value=defaults.max_new_tokens, step=1, label="Max new tokens"
                    )
                with gr.Row():
                    run = gr.Button("Compare", variant="primary", elem_id="compare")
                    gr.DeepLinkButton()
        status = gr.Markdown(elem_id="status")
        columns = {}
        with gr.Row(equal_height=False):
            for m in COLUMNS:
                with gr.Column(
                    min_width=160, visible=m in METHODS, elem_id=f"column-{_css_id(m)}"
                ) as columns[m]:
                    gr.Markdown(_column_header(m))
                    ui[m] = {
                        "answer": gr.Textbox(
                            label="Answer", lines=4, interactive=False, elem_id=f"answer-{_css_id(m)}"
                        ),
                        "tokens": gr.Markdown(elem_id=f"tokens-{_css_id(m)}"),
                        "gallery": gr.Gallery(
                            label="Kept frames", columns=3, height=260, elem_id=f"gallery-{_css_id(m)}"
                        ),
                        "moments_btn": gr.Button("Kept moments (MP4)", size="sm"),
                        "moments": gr.File(
                            label="Kept moments", visible=False, elem_id=f"moments-{_css_id(m)}"
                        ),
                    }
        with gr.Row():
            tokens_plot = gr.BarPlot(
                x="bar", y="tokens", color="kind", sort=None, label="Visual tokens per method"
            )
            timings_table = gr.Dataframe(label="Timings and memory", interactive=False)
        timeline_plot = gr.Plot(
            label="Per-segment allocation (bars), relevance (line) and kept frames (ticks)"
        )
        with gr.Row():
            card_file = gr.File(label="Run card (download)", interactive=False, elem_id="card")
            card_in = gr.File(label="Load a run card to re-run it", file_types=[".json"], elem_id="card-in")
            rerun = gr.Button("Re-run card")
        last_run = gr.State(None)
        inputs = [
            video,
            url,
            question,
            methods,
            backbone,
            budget,
            fps,
            max_frames,
            segment_frames,
            seed,
            max_new_tokens,
        ]
        outputs = [status, tokens_plot, timeline_plot, timings_table, card_file, last_run] + [
            c for m in COLUMNS for c in ui[m].values()
        ]
        run.click(compare, inputs, outputs, api_name="compare", concurrency_id="gpu")
        question.submit(compare, inputs, outputs, api_name=False, concurrency_id="gpu")
        rerun.click(rerun_card, [card_in, video, url], outputs, api_name="rerun_card", concurrency_id="gpu")
        methods.change(
            shown_columns, methods, [columns[m] for m in COLUMNS], api_name=False, show_progress="hidden"
        )
        backbone.change(
            backbone_defaults,
            backbone,
            [budget, fps, max_frames, segment_frames, banner],
            api_name="defaults",
        )
        for m in COLUMNS:
            ui[m]["moments_btn"].click(
                lambda state, m=m: kept_moments(m, state), last_run, ui[m]["moments"], api_name=f"moments_{m}"
            )
        gr.Examples(_examples(), [video, question], label="Examples (generated clips)")
        gr.Examples(
            [[None, "https://www.youtube.com/watch?v=aqz-KE-bpKQ", "What happens to the rabbit?"]],
            [video, url, question],
            label="URL examples (need network access)",
        )
    return demo


def launch(
    settings: AppSettings,
    *,
    backbone: str = DEFAULT_BACKBONE,
    host: str = "127.0.0.1",
    port: int | None = None,
    **launch_kwargs,
) -> gr.Blocks:
    """Build the page and serve it within ``settings``: queue size, concurrency and Gradio's upload cap."""
    configure_caches(settings.cache_settings())
    model_zoo.set_max_resident(settings.max_backbones)
    demo = build_demo(backbone, settings)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    demo.launch(server_name=host, server_port=port, max_file_size=settings.max_upload_bytes, **launch_kwargs)
    return demo


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, AppSettings]:
    """The command line: where to serve, which backbone, and the limits (``AppSettings``'s flags)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=model_zoo.list_backbones())
    # the platform's own variables (Hugging Face Spaces sets GRADIO_SERVER_NAME), not settings of ours
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    AppSettings.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args, AppSettings.from_args(args)
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> None:
    args, settings = parse_args(argv)
    print("Limits: " + ", ".join(f"{flag} {value}" for flag, value, _ in settings.rows()), flush=True)
    if spaces.config.Config.zero_gpu:  # ZeroGPU wants models placed at start-up, outside GPU functions
        model_zoo.load_backbone(args.backbone)
    launch(settings, backbone=args.backbone, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
