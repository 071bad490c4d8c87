"""The two objects a comparison passes around: what was asked (``Request``) and the GPU part's work (``Job``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import media
from pipeline.settings import Settings

if TYPE_CHECKING:  # pipeline.video imports this module
    from pipeline.video import PreparedVideo


@dataclass(frozen=True)
class Request:
    """One comparison as asked: the video (a file, or an http(s) link), the question, the settings, and the
    server's limits on what the video may cost.

    ``allow_private`` lets links reach local addresses (tests and the CLI's own user only); ``workdir`` is
    where a downloaded video is kept (None: a temporary folder removed when the comparison ends).
    """

    source: str | os.PathLike
    question: str
    settings: Settings = field(default_factory=Settings)
    limits: media.Limits = field(default_factory=media.Limits)
    allow_private: bool = False
    workdir: Path | None = None


@dataclass(frozen=True)
class Job:
    """What the GPU part runs: every selected column on one prepared video and one question.

    ``inputs``: what a column's runner prepared for itself before the GPU call ({column name: input},
    ``pipeline.columns.prepare_inputs``). CPU data only (on ZeroGPU it is pickled into the GPU worker).
    """

    prepared: PreparedVideo
    question: str
    settings: Settings
    inputs: Mapping[str, object] = field(default_factory=dict)
