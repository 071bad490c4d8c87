"""What one comparison may ask for: the bounds of every setting and method option, defined once.

The page's sliders show ``SETTING_BOUNDS`` (range and step), and ``Settings`` checks every value against it
whoever sent it: the page, the API, the CLI or a run card. A card is untrusted input like any other, so
its method options are checked too (``OPTION_BOUNDS``: known names, right types, sane ranges). A value out
of bounds, of the wrong type (a bool or a float where a whole number belongs, text), NaN or infinite gets
one sentence naming the setting and its valid range.

The upper bounds keep one request from holding the only GPU slot for minutes or allocating gigabytes:
``segment_frames: 20000`` or ``max_new_tokens: 10**9`` are refused before any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """A setting is out of range or names something that does not exist (message says what is valid)."""


@dataclass(frozen=True)
class Bound:
    """The valid values of one setting: a ``kind`` (int, float or bool) and, for numbers, ``low``..``high``.

    ``step`` is the page slider's step; any value in range is accepted, on the step or not.
    """

    label: str
    kind: type
    low: float = 0
    high: float = 0
    step: float = 1

    def check(self, value):
        """``value`` itself when it is valid; SettingsError (one sentence) otherwise."""
        if not self._fits(value):
            raise SettingsError(f"{self.label[:1].upper()}{self.label[1:]} must be {self.describe()}.")
        return value

    def _fits(self, value) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        return math.isfinite(value) and self.low <= value <= self.high

    def describe(self) -> str:
        """'a whole number from 16 to 16384', 'a number from 0.1 to 4', 'true or false'."""
        if self.kind is bool:
            return "true or false"
        if self.kind is int:
            return f"a whole number from {self.low} to {self.high}"
        return f"a number from {self.low:g} to {self.high:g}"


#: Every numeric setting of a comparison, with the page's label, range and slider step.
SETTING_BOUNDS: dict[str, Bound] = {
    "budget": Bound("the visual-token budget", int, 16, 16384, 16),
    "fps": Bound("frames per second", float, 0.1, 4.0, 0.1),
    "max_frames": Bound("max frames", int, 2, 1024, 2),
    "segment_frames": Bound("the segment length (frames)", int, 2, 32, 2),
    "max_side": Bound("max side (pixels)", int, 32, 1280, 32),
    "max_new_tokens": Bound("max new tokens", int, 1, 512, 1),
    "seed": Bound("the seed", int, 0, 2**32 - 1, 1),
}

#: The longest question the page accepts (characters).
MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class RequestBounds:
    """Everything one request may ask for: each numeric setting's ``Bound`` and the question's length.

    ``PAGE_BOUNDS`` is what the public page, the API, the CLI and run cards get (``Settings.BOUNDS``). A
    caller running its own videos on its own machine (the evaluation, ``evaluation.settings``) declares wider
    bounds in a ``Settings`` subclass of its own: a class attribute, not a field, so no page value or run
    card (``Settings.from_dict``) can reach it.
    """

    settings: Mapping[str, Bound]
    max_question_chars: int

    def __post_init__(self) -> None:
        missing = sorted(set(SETTING_BOUNDS) - set(self.settings))
        if missing:
            raise ValueError(f"request bounds lack {', '.join(missing)}")


PAGE_BOUNDS = RequestBounds(SETTING_BOUNDS, MAX_QUESTION_CHARS)

#: Every option a comparison may set for a method (``Settings.method_options``), as the compressor's keyword.
#: Whether the options fit together (XComp's windows in whole clips, say) is the compressor's own check.
OPTION_BOUNDS: dict[str, dict[str, Bound]] = {
    "espresso": {"spatial_share": Bound("Espresso's spatial_share", float, 0.05, 0.95, 0.05)},
    "xcomp": {
        "tokens_per_frame": Bound("XComp's tokens_per_frame", int, 1, 1024),
        "window_frames": Bound("XComp's window_frames", int, 1, 1024),
        "window_stride": Bound("XComp's window_stride", int, 1, 1024),
        "clip_frames": Bound("XComp's clip_frames", int, 1, 64),
        "chunk_frames": Bound("XComp's chunk_frames", int, 1, 4096),
        "chunk_stride": Bound("XComp's chunk_stride", int, 1, 4096),
        "chunkings": Bound("XComp's chunkings", int, 1, 16),
        "lp_comp": Bound("XComp's lp_comp", bool),
    },
    "tempo": {
        "min_tokens": Bound("Tempo's min_tokens", int, 1, 1024),
        "max_tokens": Bound("Tempo's max_tokens", int, 1, 16384),
        "batch_size": Bound("Tempo's batch_size", int, 1, 64),
    },
    "uniform": {},
    "pool": {},
}


def check_options(method: str, options) -> dict:
    """A method's options (a mapping of known names to valid values) as a plain dict; SettingsError otherwise."""
    known = OPTION_BOUNDS.get(method)
    if known is None:
        raise SettingsError(
            f"There is no method {method!s:.40} to set options for; use {', '.join(OPTION_BOUNDS)}."
        )
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise SettingsError(f"The options of {method} must be a mapping of option names to values.")
    unknown = sorted(set(options) - set(known))
    if unknown:
        valid = ", ".join(known) or "none"
        raise SettingsError(f"{method} has no option {unknown[0]!s:.40}; its options are: {valid}.")
    return {name: known[name].check(value) for name, value in options.items()}


__all__ = [
    "MAX_QUESTION_CHARS",
    "OPTION_BOUNDS",
    "PAGE_BOUNDS",
    "SETTING_BOUNDS",
    "Bound",
    "RequestBounds",
    "SettingsError",
    "check_options",
]
