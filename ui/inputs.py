"""What the page offers and how its inputs become a comparison: the columns and backbones on offer, the
settings from the page's or the API's values, which video a run reads, and the first status it shows.

Gradio only for its error type: a missing video is the visitor's to fix, said in one sentence.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr
import spaces
import torch
from gradio import FileData

import media
import model_zoo
from pipeline import authors
from pipeline.columns import COLUMNS, DEFAULT_COLUMNS
from pipeline.settings import Settings, official_weights, parse_methods

TINY_BANNER = (
    "⚠️ **The `tiny-random` backbone has random weights: its answers are noise.** It is here so the page "
    "works offline and for testing; pick a Qwen3-VL backbone for real answers."
)

#: The page's Compare inputs, in the order its event takes them (``page_args`` for API clients).
PAGE_INPUTS = (
    "video",
    "url",
    "question",
    "methods",
    "backbone",
    "budget",
    "fps",
    "max_frames",
    "segment_frames",
    "seed",
    "max_new_tokens",
)


def page_args(**values) -> list:
    """Positional arguments of the page's own ``/compare_page`` event (an undocumented endpoint takes no
    keywords) from values by name; a setting left out takes the backbone's default (tiny-random's when no
    backbone is named), as the page's sliders would show it."""
    unknown = set(values) - set(PAGE_INPUTS)
    if unknown:
        raise TypeError(f"the page has no input {', '.join(sorted(unknown))}")
    defaults = dataclasses.asdict(Settings(backbone=values.get("backbone") or model_zoo.TINY))
    values = {**defaults, "url": "", "video": None, "methods": list(DEFAULT_COLUMNS), **values}
    return [values[name] for name in PAGE_INPUTS]


def settings_from(
    methods, backbone, budget, fps, max_frames, segment_frames, seed, max_new_tokens
) -> Settings:
    """The comparison's settings from the page's or the API's values as sent (None: the backbone's default):
    ``Settings`` refuses a value out of bounds or of the wrong type with one sentence (``pipeline.bounds``)."""
    return Settings.for_backbone(
        backbone,
        methods=parse_methods(methods or []),
        budget=budget,
        fps=fps,
        max_frames=max_frames,
        segment_frames=segment_frames,
        seed=seed,
        max_new_tokens=max_new_tokens,
    )


def banner_for(backbone: str) -> str:
    """The random-weights warning for the tiny backbone, nothing for a real one (a value, not a visibility:
    Share via Link keeps a component's value)."""
    return TINY_BANNER if model_zoo.get_backbone_spec(backbone).hub_id is None else ""


def backbone_choices() -> list[tuple[str, str]]:
    labels = []
    for name in model_zoo.served_backbones():  # on ZeroGPU only those placed at start-up
        spec = model_zoo.get_backbone_spec(name)
        note = " — random weights, for testing" if spec.hub_id is None else f" — {spec.hub_id}"
        labels.append((name + note, name))
    return labels


def css_id(name: str) -> str:
    return name.replace(".", "-")


def offered_columns() -> list[str]:
    """The columns this machine can run, in page order: every one on the shared backbone; one with weights
    of its own (``ColumnInfo.needs_hub``) only with a GPU and its weights within reach (downloaded already,
    given to this server, or the Hub online) and, where columns were placed at start-up (ZeroGPU), only one
    placed (``authors.servable``). An API caller may still ask for any column; one this machine cannot run
    answers with its reason."""
    gpu = torch.cuda.is_available() or bool(spaces.config.Config.zero_gpu)
    return [m for m, c in COLUMNS.items() if not c.info.needs_hub or (gpu and _can_serve(m))]


def _can_serve(name: str) -> bool:
    return _weights_within_reach(name) and authors.servable(name)


def _weights_within_reach(name: str) -> bool:
    """Every weight the column loads (its checkpoint and base model) is a folder on this server, already
    downloaded, or downloadable (the Hub not switched off)."""
    import huggingface_hub
    from huggingface_hub import constants

    def within_reach(source: str) -> bool:
        if Path(source).is_dir() or not constants.HF_HUB_OFFLINE:
            return True
        return isinstance(huggingface_hub.try_to_load_from_cache(source, "config.json"), str)

    return all(within_reach(str(source)) for source in official_weights(name).values())


def choice_label(name: str) -> str:
    info = COLUMNS[name].info
    return f"{name} (official weights, {info.licence}; needs a GPU)" if info.licence else name


def column_header(name: str) -> str:
    info = COLUMNS[name].info
    if info.licence:
        return f"### {name}\n<small>{info.label} · {info.source} · licence: {info.licence}</small>"
    return f"### {name}\n<small>{info.label}</small>"


def starting(video: str | None, url: str | None) -> str:
    """The first status of a run: which video it reads."""
    if video and url and url.strip():
        return "Starting on the uploaded video; the link is not used (clear the video to use the link)…"
    if video:
        return "Starting on the uploaded video…"
    return "Starting on the link…" if url and url.strip() else "Starting…"


def source(video: str | None, url: str | None) -> str:
    """The video a run reads: the upload, else the link (http(s) only: never a path on the server)."""
    if video:
        return video
    if url and url.strip():
        return media.video_source(url)
    raise gr.Error("Upload a video or paste a video URL first.")


def path_of(video: FileData | dict | str | None) -> str | None:
    """The server path of a file an API caller sent (Gradio checked it is an upload of theirs)."""
    if isinstance(video, dict):
        return video.get("path")
    return getattr(video, "path", video)


def link_cleared(video: str | None):
    """When a video is given (uploaded or an example), the link is cleared: one video at a time."""
    return "" if video else gr.skip()


def upload_cleared(url: str | None):
    """When a link is typed or pasted, the uploaded video is cleared: one video at a time."""
    return None if url and url.strip() else gr.skip()
