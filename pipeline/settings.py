"""Settings of one comparison: what is sampled, which backbone answers, the shared budget, method options.

Everything that changes an answer lives here, so a run card that stores these settings can re-run the
comparison exactly. Defaults come from the model zoo's variant registry (``<backbone>.<method>``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import model_zoo
from pipeline.columns import COLUMNS, DEFAULT_COLUMNS

#: What a backbone's registry entry decides when a comparison leaves it unset (None).
BACKBONE_DEFAULTS = ("budget", "fps", "max_frames", "segment_frames")


class SettingsError(ValueError):
    """A setting is out of range or names something that does not exist (message says what is valid)."""


@dataclass(frozen=True)
class Settings:
    """One comparison's settings; every method gets the same frames, backbone and budget.

    ``budget``, ``fps``, ``max_frames`` and ``segment_frames`` left at None take the backbone's defaults from
    the model zoo's registry (``BackboneSpec``), the one place they are defined.
    """

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
    official_checkpoint: str = "Vision-CAIR/Tempo-6B"  # hub id or local folder of tempo-6b.official
    official_base: str = "Qwen/Qwen3-VL-2B-Instruct"  # its small VLM's original checkpoint (relevance rows)

    def __post_init__(self) -> None:
        if self.backbone not in model_zoo.backbones:
            raise SettingsError(
                f"Unknown backbone {self.backbone!r}; choose from {', '.join(model_zoo.list_backbones())}."
            )
        spec = model_zoo.get_backbone_spec(self.backbone)
        for name in BACKBONE_DEFAULTS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(spec, name))
        unknown = [m for m in self.methods if m not in COLUMNS]
        if unknown:
            raise SettingsError(f"Unknown method {', '.join(unknown)}; choose from {', '.join(COLUMNS)}.")
        if not self.methods:
            raise SettingsError("Pick at least one method to compare.")
        checks = [
            (self.budget >= 1, "The token budget must be at least 1."),
            (self.fps > 0, "Frames per second must be above 0."),
            (self.max_frames >= 2, "Max frames must be at least 2."),
            (self.segment_frames >= 2 and self.segment_frames % 2 == 0, "Segment length must be even."),
            (self.max_side >= 32, "Max side must be at least 32 pixels."),
            (self.max_new_tokens >= 1, "Max new tokens must be at least 1."),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)

    @classmethod
    def for_backbone(cls, backbone: str, **overrides) -> Settings:
        """The registry's defaults for ``backbone``, with ``overrides`` (None means "the default")."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "methods" in given:
            given["methods"] = tuple(given["methods"])
        return cls(backbone=backbone, **given)

    def options_for(self, method: str) -> dict:
        """The method's options: the variant's defaults, then this comparison's overrides."""
        column = COLUMNS[method]
        try:
            options = column.variant(self.backbone).options_dict()
        except KeyError as err:
            raise SettingsError(str(err)) from None
        options.update(self.method_options.get(method, {}))
        if column.own_variant:  # where its weights are is the server's to say, never a method option's
            options.update(checkpoint=self.official_checkpoint, base_vlm=self.official_base)
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
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["methods"] = tuple(kwargs.get("methods", DEFAULT_COLUMNS))
        return cls(**kwargs)


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"espresso,tempo"`` or a list → a tuple in the page's column order, duplicates removed."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise SettingsError(f"Unknown method {', '.join(unknown)}; choose from {', '.join(COLUMNS)}.")
    return tuple(m for m in COLUMNS if m in names)
