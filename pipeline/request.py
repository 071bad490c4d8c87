"""What a comparison passes around: what was asked (``Request``) and the GPU part's work (``Job``); for several
questions and budgets about one video, ``Ask``, ``ManyRequest`` and ``ManyJob``."""

from __future__ import annotations

import dataclasses
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


# --- several questions and budgets about one video (the evaluation; anyone driving the pipeline from code) ---


@dataclass(frozen=True)
class Ask:
    """One question of a multi-question request.

    ``prompt``: the user text the answering LLM reads after the visual tokens (a benchmark's whole
    multiple-choice prompt, say). ``selection``: the text the question-conditioned selectors read instead
    (Tempo's relevance prompt, XComp's clip attention; None: the prompt itself). ``reply_prefix``: text that
    starts the assistant's reply (MLVU primes ``Best option: (``); the answer is what the model adds to it.
    Columns with models of their own (``pipeline.official``) read ``prompt`` only.
    """

    prompt: str
    selection: str | None = None
    reply_prefix: str = ""

    @property
    def selection_text(self) -> str:
        return self.prompt if self.selection is None else self.selection


@dataclass(frozen=True)
class ManyRequest:
    """Several questions (``asks``) at several budgets about one video, every selected column on each: one
    video prepared and encoded once, every answer decoded in one batch (``pipeline.many.compare_many``).

    The settings' own ``budget`` is ignored; each of ``budgets`` is checked against the settings' bounds.
    """

    source: str | os.PathLike
    asks: tuple[Ask, ...]
    budgets: tuple[int, ...]
    settings: Settings = field(default_factory=Settings)
    limits: media.Limits = field(default_factory=media.Limits)
    allow_private: bool = False
    workdir: Path | None = None


@dataclass(frozen=True)
class ManyJob:
    """The GPU part's work for a ``ManyRequest``: every selected column on every (question, budget) cell.

    ``inputs``: what the columns' runners prepared before the GPU call, once for every cell (``Job.inputs``).
    CPU data only (pickled into the GPU worker on ZeroGPU). ``settings.budget`` is the first budget.
    """

    prepared: PreparedVideo
    asks: tuple[Ask, ...]
    budgets: tuple[int, ...]
    settings: Settings
    inputs: Mapping[str, object] = field(default_factory=dict)

    def cells(self) -> list[tuple[int, int]]:
        """Every (question index, budget), questions first."""
        return [(index, budget) for index in range(len(self.asks)) for budget in self.budgets]

    def settings_at(self, budget: int) -> Settings:
        return dataclasses.replace(self.settings, budget=budget)

    def single(self, index: int, budget: int) -> Job:
        """The cell as a one-question ``Job`` (for runners without ``run_many``: the prompt only)."""
        return Job(self.prepared, self.asks[index].prompt, self.settings_at(budget), self.inputs)
