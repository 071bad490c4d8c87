"""Token-compression methods for long-video VLMs, all on one encoded video, one question and one budget.

``COMPRESSORS`` maps each method's name to its class; :func:`build` makes one from its keyword options.
Every class has ``name``, ``label``, ``options()`` and ``compress(video, segments, question, *, budget,
hooks) -> CompressionResult`` (see ``compressors.base``). A new method is one file plus one line here.
"""

from __future__ import annotations

import dataclasses

from .base import CompressionError, Compressor
from .baselines import Pool, Uniform
from .espresso import Espresso
from .tempo import Tempo
from .xcomp import XComp

COMPRESSORS: dict[str, type] = {
    "espresso": Espresso,
    "xcomp": XComp,
    "tempo": Tempo,
    "uniform": Uniform,
    "pool": Pool,
}


def build(name: str, **options) -> Compressor:
    """The method called ``name`` with ``options`` (keyword-only settings); errors list what is valid."""
    if name not in COMPRESSORS:
        raise CompressionError(f"unknown compressor {name!r}; choose one of {', '.join(COMPRESSORS)}")
    cls = COMPRESSORS[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        allowed = ", ".join(valid) or "none"
        raise CompressionError(f"{name} has no option {', '.join(unknown)}; its options: {allowed}")
    return cls(**options)


__all__ = ["COMPRESSORS", "CompressionError", "build"]
