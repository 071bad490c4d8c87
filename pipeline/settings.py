"""Settings of one comparison: what is sampled, which backbone answers, the shared budget, method options.

Everything that changes an answer lives here, so a run card that stores these settings can re-run the
comparison exactly. Defaults come from the model zoo's variant registry (``<backbone>.<method>``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import compressors
import model_zoo
from pipeline.bounds import PAGE_BOUNDS, RequestBounds, SettingsError, check_options
from pipeline.columns import COLUMNS, DEFAULT_COLUMNS

#: What a backbone's registry entry decides when a comparison leaves it unset (None).
BACKBONE_DEFAULTS = ("budget", "fps", "max_frames", "segment_frames")


@dataclass(frozen=True)
class Settings:
    """One comparison's settings; every method gets the same frames, backbone and budget.

    ``budget``, ``fps``, ``max_frames`` and ``segment_frames`` left at None take the backbone's defaults from
    the model zoo's registry (``BackboneSpec``), the one place they are defined. Every value is then checked
    against ``pipeline.bounds`` (the page's sliders show the same bounds), whoever gave it: the page, the
    API, the CLI or a run card. Which weights a column of its own loads is not a setting: the registry
    says, or the server's maintainer (``use_official_weights``); such a column takes only the options its
    registry entry offers as choices (``ColumnInfo.choices``: Tempo-6B's 4K or 8K budget).

    ``revisions`` pins the commit of each checkpoint read ({hub id: 40-hex commit}); left empty, each is the
    registry's revision resolved when the comparison starts (``pipeline.revisions.pin``), and the run card
    records what it resolved to, so a replay reads the same weights.

    ``BOUNDS`` (a class attribute, never a field: no page value or run card can set it) are the page's; the
    evaluation checks its own settings against wider ones in a subclass (``evaluation.settings``).
    """

    BOUNDS: ClassVar[RequestBounds] = PAGE_BOUNDS

    backbone: str = model_zoo.TINY
    methods: tuple[str, ...] = DEFAULT_COLUMNS
    budget: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    segment_frames: int | None = None
    max_side: int = 640
    seed: int = 0
    max_new_tokens: int = 64
    method_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    revisions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_backbone(self.backbone)
        spec = model_zoo.get_backbone_spec(self.backbone)
        for name in BACKBONE_DEFAULTS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(spec, name))
        object.__setattr__(self, "methods", _checked_methods(self.methods))
        for name, bound in self.BOUNDS.settings.items():
            bound.check(getattr(self, name))
        if self.segment_frames % 2:
            raise SettingsError("The segment length must be an even number of frames, from 2 to 32.")
        _check_method_options(self.method_options)
        object.__setattr__(self, "revisions", _checked_revisions(self.revisions))
        _check_placed_commit(self.backbone, self.revisions)

    @classmethod
    def for_backbone(cls, backbone: str, **overrides) -> Settings:
        """The registry's defaults for ``backbone``, with ``overrides`` (None means "the default")."""
        return cls(backbone=backbone, **{k: v for k, v in overrides.items() if v is not None})

    def options_for(self, method: str) -> dict:
        """The method's options: the variant's defaults, then this comparison's overrides.

        A column with weights of its own gets the registry's (or the server's) checkpoint and base ids,
        never a request's or a card's.
        """
        column = COLUMNS[method]
        try:
            options = column.variant(self.backbone).options_dict()
        except KeyError as err:
            raise SettingsError(str(err)) from None
        options.update(self.method_options.get(method, {}))
        if column.own_variant:
            weights = official_weights(column.own_variant)
            pins = {
                "revision": self.revisions.get(weights["checkpoint"]),
                "base_revision": self.revisions.get(weights["base_vlm"]),
            }
            return options | weights | pins
        return options

    def sampling_key(self) -> tuple:
        """What decides the sampled frames (a cache key part)."""
        return (self.fps, self.max_frames, self.segment_frames, self.max_side)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["methods"] = list(self.methods)
        data["method_options"] = {m: self.options_for(m) for m in self.methods}
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Settings:
        """Settings as ``to_dict`` wrote them (a run card's), checked like any other; SettingsError otherwise.

        Unknown keys are ignored (older cards); the options of a column with weights of its own, weights
        included, are the registry's and the server's, so a card's copy of them is a record, not read back,
        but for the choices a visitor made (``ColumnInfo.choices``).
        """
        if not isinstance(data, Mapping):
            raise SettingsError("The card's settings must be a mapping of setting names to values.")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs.setdefault("methods", DEFAULT_COLUMNS)
        options = kwargs.get("method_options")
        if isinstance(options, Mapping):
            kwargs["method_options"] = {
                m: _chosen(m, o) if _own_weights(m) else o for m, o in options.items()
            }
        return cls(**kwargs)


def _own_weights(name) -> bool:
    return name in COLUMNS and COLUMNS[name].own_variant is not None


def _chosen(name: str, options) -> dict:
    """Of a card's record of a column's own options, the ones a visitor chose (``ColumnInfo.choices``)."""
    allowed = dict(COLUMNS[name].info.choices)
    return {k: v for k, v in options.items() if k in allowed} if isinstance(options, Mapping) else options


def check_choices(method: str, options) -> None:
    """SettingsError unless every option of ``method`` (a column of its own weights) is one a visitor may
    choose, with one of its allowed values (``ColumnInfo.choices``, from the registry's variant)."""
    if not isinstance(options, Mapping):
        raise SettingsError(f"The options of {method} must be a mapping of option names to values.")
    allowed = dict(COLUMNS[method].info.choices)
    for name, value in options.items():
        if name not in allowed:
            valid = ", ".join(allowed) or "none"
            raise SettingsError(
                f"{method} has no option {name!s:.40} to choose: its options are the server's, "
                f"but for its choices: {valid}."
            )
        if not any(type(value) is type(v) and value == v for v in allowed[name]):
            values = " or ".join(str(v) for v in allowed[name])
            raise SettingsError(f"{method}'s {name} must be {values}, not {value!s:.40}.")


def _check_backbone(backbone) -> None:
    served = model_zoo.served_backbones()
    if isinstance(backbone, str) and backbone in model_zoo.backbones and backbone not in served:
        raise SettingsError(
            f"This server answers with {', '.join(served)} only: {backbone} is not loaded here."
        )
    if not isinstance(backbone, str) or backbone not in served:
        shown = f" {backbone!r}" if isinstance(backbone, str) and len(backbone) <= 40 else ""
        raise SettingsError(f"Unknown backbone{shown}; choose from {', '.join(served)}.")


def _check_placed_commit(backbone: str, revisions: Mapping[str, str]) -> None:
    """SettingsError when the server placed ``backbone`` at one commit and ``revisions`` pin another."""
    placed = model_zoo.served_backbones()[backbone]
    pinned = revisions.get(model_zoo.get_backbone_spec(backbone).hub_id)
    if placed and pinned and pinned != placed:
        raise SettingsError(
            f"This server runs {backbone} at commit {placed[:12]} only, not {pinned[:12]}; replay the card "
            "where that commit can be loaded (python cli.py replay card.json)."
        )


def _checked_methods(methods) -> tuple[str, ...]:
    if not isinstance(methods, list | tuple) or not all(isinstance(m, str) for m in methods):
        raise SettingsError(f"Methods must be a list of names from {', '.join(COLUMNS)}.")
    if not methods:
        raise SettingsError("Pick at least one method to compare.")
    unknown = [m[:40] for m in methods if m not in COLUMNS]
    if unknown:
        raise SettingsError(f"Unknown method {', '.join(unknown[:3])}; choose from {', '.join(COLUMNS)}.")
    return tuple(methods)


#: A hub repo id (``org/name``) and a full commit id, as a run card may pin them.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
MAX_PINS = 8


def _checked_revisions(revisions) -> dict[str, str]:
    """``revisions`` as a plain dict; SettingsError unless it maps at most ``MAX_PINS`` hub ids to commits."""
    if not isinstance(revisions, Mapping) or len(revisions) > MAX_PINS:
        raise SettingsError(f"Revisions must map at most {MAX_PINS} hub ids to their commits.")
    for hub_id, commit in revisions.items():
        if not isinstance(hub_id, str) or not _HUB_ID.fullmatch(hub_id):
            raise SettingsError("A pinned revision must name a hub repo as org/name.")
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
            raise SettingsError(f"The revision of {hub_id} must be a full 40-character commit id.")
    return dict(revisions)


def _check_method_options(method_options) -> None:
    """Known methods, known option names, values in ``OPTION_BOUNDS``, and options that fit together."""
    if not isinstance(method_options, Mapping):
        raise SettingsError("Method options must be a mapping from method names to their options.")
    for method, options in method_options.items():
        if _own_weights(method):
            check_choices(method, options)
            continue
        checked = check_options(method, options)
        try:
            compressors.build(method, **checked)
        except compressors.CompressionError as err:
            raise SettingsError(
                f"The {method} options do not fit together: {str(err).rstrip('.')}."
            ) from None


_OFFICIAL_WEIGHTS: dict[str, dict[str, str]] = {}


def use_official_weights(name: str, *, checkpoint: str | os.PathLike, base_vlm: str | os.PathLike) -> None:
    """Load the weights of the column ``name`` (``tempo-6b.official``) from elsewhere on this server.

    The server maintainer's choice (and the tests', to point at a tiny local checkpoint), never a request's
    or a run card's: without it, the weights are the registry's hub ids (``model_zoo.variants``).
    """
    model_zoo.get_variant(name)
    _OFFICIAL_WEIGHTS[name] = {"checkpoint": str(checkpoint), "base_vlm": str(base_vlm)}


def reset_official_weights() -> None:
    """Back to the registry's weights for every column with weights of its own."""
    _OFFICIAL_WEIGHTS.clear()


def official_weights(name: str) -> dict[str, str]:
    """``{"checkpoint": ..., "base_vlm": ...}`` of a column's own weights: the server's choice, else the registry's."""
    variant = model_zoo.get_variant(name)
    registry = {"checkpoint": variant.hub_id, "base_vlm": variant.options_dict()["base_vlm"]}
    return dict(_OFFICIAL_WEIGHTS.get(name, registry))


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"espresso,tempo"`` or a list → a tuple in the page's column order, duplicates removed."""
    names = text.split(",") if isinstance(text, str) else text
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise SettingsError(f"Methods must be a list of names from {', '.join(COLUMNS)}.")
    names = [n.strip() for n in names if n.strip()]
    unknown = [n[:40] for n in names if n not in COLUMNS]
    if unknown:
        raise SettingsError(f"Unknown method {', '.join(unknown[:3])}; choose from {', '.join(COLUMNS)}.")
    return tuple(m for m in COLUMNS if m in names)
