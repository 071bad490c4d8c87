"""Run cards: a JSON record of one comparison that a reviewer can download, load back and re-run.

A card holds everything that decides the answers (backbone and revision, every setting and method option,
the video's content fingerprint, the question) and what came out (answers, token accounting, kept frames,
per-segment scores and allocations, timings). ``diff`` compares two cards on what must reproduce: answers
and accounting, never timings.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import media
import model_zoo
from pipeline import __version__
from pipeline.compare import compare
from pipeline.events import Event, Finished, MethodReport
from pipeline.request import Request
from pipeline.settings import Settings

SCHEMA_VERSION = 1
MAX_CARD_BYTES = 8 * 2**20  # a card of 1,024 frames and six columns is well under 1 MB
NOT_A_CARD = "That file is not a run card: download one from a comparison and load it here."
WRONG_VIDEO = "That video is not the one this card was made from (its fingerprint differs)."
_REPRODUCIBLE = ("answer", "error", "tokens", "kept_frames", "segments")


class CardError(ValueError):
    """A run card that cannot be read or re-run (the message says what to do)."""


@functools.cache
def git_commit() -> str:
    """The app's commit: the Space's ``SPACE_COMMIT``-style variable, else git, else "unknown" (asked once
    per process: it was a git subprocess on every run card)."""
    for var in ("ARENA_COMMIT", "SPACE_COMMIT", "GIT_COMMIT"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build(finished: Finished, question: str, settings: Settings) -> dict:
    """The run card of a finished comparison (plain JSON types only). Its settings are those the comparison
    ran with (``finished.settings``, when it says), every checkpoint pinned to the commit it read
    (``Settings.revisions``), so ``replay`` reads the same weights; ``backbone.commit`` repeats the
    backbone's."""
    settings = finished.settings or settings
    spec = model_zoo.get_backbone_spec(settings.backbone)
    prepared = finished.prepared
    return {
        "schema_version": SCHEMA_VERSION,
        "app": {"version": __version__, "git_commit": git_commit()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backbone": {
            "name": spec.name,
            "hub_id": spec.hub_id,
            "revision": spec.revision,
            "commit": settings.revisions.get(spec.hub_id),
        },
        "settings": settings.to_dict(),
        "video": {
            "fingerprint": prepared.fingerprint,
            "source_url": prepared.url,
            "file_name": prepared.path.name,
            "duration": round(prepared.info.duration, 3),
            "sampled_frames": prepared.real_frames,
        },
        "question": question,
        "shared_timings": _rounded(finished.shared_timings),
        "results": {m: _result(r) for m, r in finished.reports.items()},
    }


def _result(report: MethodReport) -> dict:
    return {
        "label": report.label,
        "answer": report.answer,
        "error": report.error,
        "tokens": report.tokens,
        "kept_frames": report.kept_frames,
        "segments": report.segments,
        "timings": _rounded(report.timings),
        "memory": report.memory,
        "extra": report.extra,
    }


def _rounded(timings: Mapping) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()}


def dumps(card: dict) -> str:
    return json.dumps(card, indent=2, sort_keys=False, default=_json_default)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save(card: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_text(dumps(card))
    return path


def load(path_or_text: str | os.PathLike) -> dict:
    """A card from a file path or JSON text, checked as the untrusted input it is; CardError or SettingsError
    (one sentence) for what is not a card of a schema we know, or asks for settings out of bounds.

    At most ``MAX_CARD_BYTES`` are read; nesting too deep for the parser, numbers too long to convert, and
    fields of the wrong type are refused like broken JSON.
    """
    try:
        data = _read(path_or_text) if _is_path(path_or_text) else str(path_or_text).encode()
    except OSError:
        raise CardError(NOT_A_CARD) from None
    if len(data) > MAX_CARD_BYTES:
        raise CardError(f"That file is larger than a run card can be ({MAX_CARD_BYTES >> 20} MB).")
    try:
        card = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: also ints past 4,300 digits
        raise CardError(NOT_A_CARD) from None
    if (
        not isinstance(card, dict)
        or type(card.get("schema_version")) is not int
        or card["schema_version"] != SCHEMA_VERSION
    ):
        raise CardError(
            f"That is not a run card of schema version {SCHEMA_VERSION}; re-run it with this app."
        )
    _check_fields(card)
    settings_of(card)  # refuses settings out of bounds before anything runs
    return card


def _read(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:  # never more than a card can be, whatever the file (/dev/zero, say)
        return f.read(MAX_CARD_BYTES + 1)


_FIELDS = {"settings": dict, "video": dict, "question": str, "results": dict}


def _check_fields(card: dict) -> None:
    for key, kind in _FIELDS.items():
        if key not in card:
            raise CardError(f"The run card has no {key!r}; download a fresh one from a comparison.")
        if not isinstance(card[key], kind):
            raise CardError(f"The run card's {key!r} is not a {_KIND_NAMES[kind]}; download a fresh card.")
    video = card["video"]
    if not isinstance(video.get("fingerprint"), str) or not isinstance(video.get("source_url"), str | None):
        raise CardError(
            "The run card's video has no fingerprint or an odd source_url; download a fresh card."
        )
    if not all(isinstance(result, dict) for result in card["results"].values()):
        raise CardError("The run card's results are not one record per method; download a fresh card.")


_KIND_NAMES = {dict: "mapping", str: "text"}


def _is_path(value) -> bool:
    return isinstance(value, os.PathLike) or (isinstance(value, str) and not value.lstrip().startswith("{"))


def settings_of(card: dict) -> Settings:
    return Settings.from_dict(card["settings"])


def source_of(card: dict, video: str | os.PathLike | None = None) -> str | os.PathLike:
    """Where to read the card's video: ``video`` (the caller's own, checked by the caller) if given, else the
    card's source URL, which must be an http(s) link: a card is not its reader's own input."""
    if video:
        return video
    source = card["video"].get("source_url")
    if not source:
        raise CardError("This card was made from an uploaded file: give that video file to re-run it.")
    try:
        return media.video_source(source)
    except media.VideoError as err:
        raise CardError(
            "The card's source_url is not an http or https link; give the video itself to re-run the card."
        ) from err


def replay(card: dict, *, video=None, **request) -> Iterator[Event]:
    """Re-run a card's comparison (same settings, question and methods) on its video; stream the events.

    ``request`` holds the other ``Request`` fields (limits, allow_private, workdir). Raises CardError when
    the video's fingerprint differs from the card's.
    """
    asked = Request(source_of(card, video), card["question"], settings_of(card), **request)
    for event in compare(asked):
        if isinstance(event, Finished) and event.prepared.fingerprint != card["video"]["fingerprint"]:
            raise CardError(WRONG_VIDEO)
        yield event


def diff(old: dict, new: dict) -> list[str]:
    """Differences in what must reproduce (answers, errors, token accounting, kept frames, segments)."""
    lines = []
    for method in sorted(set(old["results"]) | set(new["results"])):
        a, b = old["results"].get(method), new["results"].get(method)
        if a is None or b is None:
            lines.append(f"{method}: only in the {'new' if a is None else 'old'} run")
            continue
        for key in _REPRODUCIBLE:
            if _canonical(a.get(key)) != _canonical(b.get(key)):
                lines.append(f"{method}.{key}: {_short(a.get(key))} → {_short(b.get(key))}")
    return lines


def _canonical(value):
    return json.loads(json.dumps(value, sort_keys=True, default=_json_default))


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value, default=_json_default)
    return text if len(text) <= limit else text[: limit - 1] + "…"
