"""The columns of the comparison: one registry, one small protocol.

A column is a name the page, the API, the CLI, run cards and evaluations use (``xcomp``,
``tempo-6b.official``), what a visitor reads about it (``ColumnInfo``), and the runner that produces its
answer. A runner implements one method::

    run(job: Job, names: Sequence[str]) -> Iterator[Event]

It runs every selected column it owns on the job (the prepared video, the question, the settings) and yields
progress, answer deltas, and exactly one ``MethodDone`` per name, in the order given. Columns that share a
runner are handed to it together, so the training-free methods on the shared backbone encode the video once
and decode their answers as one batch (``pipeline.shared``); an author-released model is a runner of its own
(``pipeline.official``). The pipeline and the page never branch on a column's name: a new column is one
runner module plus one ``Column`` line in ``COLUMNS``.

A runner may also prepare CPU inputs of its own before the GPU call (Tempo-6B decodes its own frames)::

    prepare(job: Job, names: Sequence[str], limits: media.Limits) -> Iterator[Event], returning {name: input}

``compare`` runs it in the caller's process, outside ZeroGPU's GPU slice, and hands each input to ``run``
as ``job.inputs[name]``; a failure there is the runner's to report in its column (never raised).

Runners are named as ``"module:attribute"`` and imported on first use, so that reading the registry (the
settings do, to validate names) never imports model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import compressors
import model_zoo
from model_zoo.variants import METHOD_NOTES

if TYPE_CHECKING:
    from pipeline.events import Event
    from pipeline.request import Job


class ColumnRunner(Protocol):
    """Runs the selected columns it owns (see the module docstring)."""

    def run(self, job: Job, names: Sequence[str]) -> Iterator[Event]: ...

    def gpu_seconds(self, job: Job, names: Sequence[str]) -> float:
        """Seconds of GPU time the run may need (ZeroGPU asks for their sum over the runners)."""
        ...


@dataclass(frozen=True)
class ColumnInfo:
    """What the page and the run card say about a column."""

    label: str  # one line: what runs in the column
    about: str  # where it comes from: paper, weights, licence, how it differs from the paper
    licence: str = ""  # set for author-released weights, shown next to the column
    source: str = ""  # the hub id of its own weights ("" on the shared backbone)
    selected_by_default: bool = True
    needs_hub: bool = False  # downloads weights of its own (offered only where the Hub can be reached)
    choices: tuple[tuple[str, tuple], ...] = ()  # options a visitor may set, with their allowed values


@dataclass(frozen=True)
class Column:
    name: str
    info: ColumnInfo
    runner_path: str  # "module:attribute" of its ``ColumnRunner``
    own_variant: str | None = None  # a registry variant of its own (author-released weights), else the
    # shared backbone's ``<backbone>.<name>``

    @property
    def runner(self) -> ColumnRunner:
        module, _, attribute = self.runner_path.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def variant(self, backbone: str) -> model_zoo.Variant:
        """The registry variant this column runs on ``backbone`` (its options and defaults)."""
        return model_zoo.get_variant(self.own_variant or f"{backbone}.{self.name}")


SHARED = "pipeline.shared:RUNNER"


def _shared(method: str) -> Column:
    compressor = compressors.COMPRESSORS[method]()
    return Column(method, ColumnInfo(label=compressor.label, about=METHOD_NOTES[method]), SHARED)


def _official(name: str, runner_path: str) -> Column:
    variant = model_zoo.get_variant(name)
    info = ColumnInfo(
        label=variant.label,
        about=variant.notes,
        licence=variant.license,
        source=variant.hub_id or "",
        selected_by_default=False,
        needs_hub=True,
        choices=variant.choices,
    )
    return Column(name, info, runner_path, own_variant=name)


#: Every column, in page order: the training-free methods and baselines on the shared backbone, then the
#: author-released models.
COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        *(_shared(m) for m in compressors.COMPRESSORS),
        _official("tempo-6b.official", "pipeline.official:RUNNER"),
        _official("videochat-flash-2b.official", "pipeline.flash:VIDEOCHAT"),
        _official("xcomp-2b.official", "pipeline.flash:XCOMP"),
    )
}

#: The columns a comparison runs when none are named.
DEFAULT_COLUMNS: tuple[str, ...] = tuple(n for n, c in COLUMNS.items() if c.info.selected_by_default)


def runs(names: Sequence[str]) -> list[tuple[ColumnRunner, list[str]]]:
    """The runners of ``names`` (in column order), each with the names it runs, in order of first use."""
    groups: dict[str, list[str]] = {}
    for name in COLUMNS:
        if name in names:
            groups.setdefault(COLUMNS[name].runner_path, []).append(name)
    return [(COLUMNS[group[0]].runner, group) for group in groups.values()]


def prepare_inputs(job: Job, limits) -> Iterator[Event]:
    """The CPU inputs the selected columns' runners prepare before the GPU call (the module docstring), as
    {name: input}; runners without ``prepare`` add nothing."""
    inputs: dict = {}
    for runner, names in runs(job.settings.methods):
        prepare = getattr(runner, "prepare", None)
        if prepare is not None:
            inputs.update((yield from prepare(job, names, limits)))
    return inputs
