"""A run card read back to be shown or cut into clips, checked as the untrusted input it is.

Opening a card (a shared one, one behind a link, one a visitor loaded) shows what the card says (answers,
token accounts, kept frames, segments, timings) without running anything, and "Kept moments" cuts a clip
around a column's kept frames. Whoever sent the card may have typed any of it, so every field read here is
checked for its type and size first; what does not fit is refused with one sentence (``CardError``), never
a traceback from deep inside a chart.

    card = from_object(sent)               # an API caller's card (a JSON object), as runcard.load checks a file
    reports = reports_of(card, prepared)   # {column: MethodReport} for the page's charts and galleries
    times = kept_times(card, "xcomp")      # seconds, for media.clips.export_moments
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from pipeline import runcard
from pipeline.bounds import SETTING_BOUNDS
from pipeline.events import MethodReport
from pipeline.runcard import CardError
from pipeline.video import PreparedVideo

#: At most this many kept frames or segments per column: a run samples at most this many frames.
MAX_FRAMES = int(SETTING_BOUNDS["max_frames"].high)
MAX_TEXT = 100_000  # characters of an answer or an error


def from_object(card: object) -> dict:
    """A card sent as a JSON object (an API caller's), checked exactly as ``runcard.load`` checks a file."""
    try:
        text = json.dumps(card, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise CardError(runcard.NOT_A_CARD) from None
    return runcard.load(text)


def reports_of(card: dict, prepared: PreparedVideo | None = None) -> dict[str, MethodReport]:
    """The card's results as reports, in the card's column order. ``prepared`` (the card's video sampled
    with the card's settings) places the kept frames among the sampled ones, for galleries; without it the
    reports keep no positions (charts, answers and the timeline need none)."""
    settings = runcard.settings_of(card)
    extra = [m for m in card["results"] if m not in settings.methods]
    if extra:
        raise CardError(f"The run card has results for {_names(extra)}, which its settings did not run.")
    positions = _positions(prepared)
    return {m: _report(m, card["results"][m], positions) for m in settings.methods if m in card["results"]}


def shared_timings(card: dict) -> dict[str, float]:
    """The card's shared timings (seconds by step), numbers only."""
    timings = card.get("shared_timings", {})
    return _numbers(timings, "shared_timings", scalars=True) if timings is not None else {}


def kept_times(card: dict, method: str) -> list[float]:
    """The timestamps (seconds) of the frames ``method`` kept in the card's run, in time order."""
    if not isinstance(method, str) or method not in card["results"]:
        ran = _names(list(card["results"])) or "no column"
        raise CardError(f"This run card has no column {str(method)[:40]!r}; it has {ran}.")
    frames = _kept_frames(card["results"][method], method)
    if not frames:
        raise CardError(f"{method} kept no frames in this run, so there are no moments to cut.")
    return sorted(f["timestamp"] for f in frames)


# --- checking one column's result -------------------------------------------------------------------------


def _report(method: str, result: dict, positions: dict[int, int] | None) -> MethodReport:
    frames = _kept_frames(result, method)
    kept = []
    if positions is not None:
        missing = [f["index"] for f in frames if f["index"] not in positions]
        if missing:
            raise CardError(
                f"The run card's {method} kept frame {missing[0]}, which this video's sampling does not give; "
                "the card and the video do not belong together."
            )
        kept = [positions[f["index"]] for f in frames]
    return MethodReport(
        method=method,
        label=_text(result.get("label", method), f"{method}'s label"),
        answer=_text(result.get("answer", ""), f"{method}'s answer"),
        error=None if result.get("error") is None else _text(result["error"], f"{method}'s error"),
        tokens=_numbers(result.get("tokens", {}), f"{method}'s tokens"),
        kept=kept,
        kept_frames=frames,
        segments=_segments(result.get("segments", []), method),
        timings=_timings(result.get("timings", {}), method),
        memory=_numbers(result.get("memory", {}), f"{method}'s memory", scalars=True),
    )


def _positions(prepared: PreparedVideo | None) -> dict[int, int] | None:
    if prepared is None:
        return None
    return {int(index): p for p, index in enumerate(prepared.frames.indices[: prepared.real_frames])}


def _kept_frames(result: dict, method: str) -> list[dict]:
    frames = _list(result.get("kept_frames", []), f"{method}'s kept_frames")
    checked = []
    for frame in frames:
        if (
            not isinstance(frame, dict)
            or not _whole(frame.get("index"))
            or not _number(frame.get("timestamp"))
        ):
            raise CardError(f"The run card's {method} kept_frames are not frames (index, timestamp).")
        if frame["index"] < 0 or frame["timestamp"] < 0:
            raise CardError(f"The run card's {method} kept_frames have negative frames or times.")
        checked.append({"index": frame["index"], "timestamp": float(frame["timestamp"])})
    return checked


def _segments(value, method: str) -> list[dict]:
    checked = []
    for s in _list(value, f"{method}'s segments"):
        if (
            not isinstance(s, dict)
            or not (_number(s.get("start")) and _number(s.get("end")))
            or not (s.get("score") is None or _number(s["score"]))
            or not (s.get("tokens") is None or _whole(s["tokens"]))
        ):
            raise CardError(f"The run card's {method} segments are not (start, end, score, tokens) records.")
        checked.append({k: s.get(k) for k in ("start", "end", "score", "tokens")})
    return checked


def _timings(value, method: str) -> dict:
    if not isinstance(value, dict):
        raise CardError(f"The run card's {method}'s timings are not a mapping; download a fresh card.")
    reused = value.get("reused", [])
    if not isinstance(reused, list) or not all(isinstance(r, str) and len(r) < 100 for r in reused):
        raise CardError(f"The run card's {method}'s timings name odd reused steps; download a fresh card.")
    numbers = _numbers({k: v for k, v in value.items() if k != "reused"}, f"{method}'s timings", scalars=True)
    return {**numbers, "reused": reused} if reused else numbers


def _numbers(value, what: str, *, scalars: bool = False) -> dict[str, float]:
    """A small mapping of names to numbers (``scalars``: also None, true and false, as timings hold)."""
    fits = _scalar if scalars else _number
    if (
        not isinstance(value, Mapping)
        or len(value) > 64
        or not all(isinstance(k, str) and len(k) < 100 and fits(v) for k, v in value.items())
    ):
        raise CardError(f"The run card's {what} are not numbers by name; download a fresh card.")
    return dict(value)


def _list(value, what: str) -> list:
    if not isinstance(value, list) or len(value) > MAX_FRAMES:
        raise CardError(
            f"The run card's {what} is not a list of at most {MAX_FRAMES}; download a fresh card."
        )
    return value


def _text(value, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise CardError(f"The run card's {what} is not text; download a fresh card.")
    return value


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _scalar(value) -> bool:
    return value is None or isinstance(value, bool) or _number(value)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(methods: list) -> str:
    return ", ".join(str(m)[:40] for m in methods[:6])
