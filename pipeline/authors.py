"""What every column with the authors' own weights shares: its own frames, one resident model, one report.

Such a column (``tempo-6b.official``, ``videochat-flash-2b.official``, ``xcomp-2b.official``) samples its own
frames as the authors do, before the GPU call (``ColumnRunner.prepare``: ``OwnFrames``, cached per video),
keeps one model loaded (``Resident``: loaded on first use, so nothing downloads unless the column is ticked),
and reports its answer in its own column: a failure (no GPU, no Hub, a video it cannot sample) is one
sentence there and never takes the other columns down (``AuthorsRunner``). Its kept frames are its own
(source index and time, in the run card); the page shows the shared frames nearest to them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import media
import model_zoo
from pipeline import cache, handoff
from pipeline.accounting import OUT_OF_MEMORY, MemoryMeter, failure, free_memory
from pipeline.events import AnswerDelta, Event, MethodDone, MethodReport, Progress
from pipeline.request import Job
from pipeline.settings import Settings
from pipeline.video import PreparedVideo


@dataclass
class OwnFrames:
    """A column's frames of one video, sampled as its authors sample them (CPU data: crosses ZeroGPU's boundary).

    ``frames`` [T, H, W, 3] uint8 with each frame's source timestamp (pts) and index; ``duration`` the clip
    length the authors divide by; ``error`` the one sentence of a video that could not be sampled so.
    """

    frames: media.Frames | None
    duration: float
    error: str | None = None

    def __len__(self) -> int:
        return 0 if self.frames is None else len(self.frames)


def own_frames(prepared: PreparedVideo, key: Hashable, sample: Callable[[], OwnFrames]) -> OwnFrames:
    """``sample()``, cached in the frame cache under (the video's fingerprint, ``key``) when it succeeded."""
    full_key = (prepared.fingerprint, *key) if isinstance(key, tuple) else (prepared.fingerprint, key)
    own = cache.FRAMES.get(full_key)
    if own is None:
        own = sample()
        if own.error is None:
            cache.FRAMES.put(full_key, own)
    return own


def sample_positions(
    path, positions: Sequence[int], size: tuple[int, int], duration: float, limits
) -> OwnFrames:
    """The source frames at ``positions``, resized to ``size`` (width, height), as ``OwnFrames``; the pixels
    go to the GPU call as a file reference (``pipeline.handoff``), never pickled by value."""
    try:
        frames = media.sample_at(path, positions, size=size, limits=limits)
    except media.VideoError as err:
        return OwnFrames(None, duration, str(err))
    return OwnFrames(dataclasses.replace(frames, frames=handoff.to_file(frames.frames)), duration)


def nearest_positions(times: np.ndarray, wanted: Sequence[float]) -> list[int]:
    """Positions in ``times`` (ascending) nearest to each of ``wanted``, ascending, without repeats."""
    if len(times) == 0:
        return []
    right = np.clip(np.searchsorted(times, wanted), 1, len(times) - 1)
    closer_left = np.abs(times[right - 1] - wanted) <= np.abs(times[right] - wanted)
    return sorted({int(p) for p in np.where(closer_left, right - 1, right)})


def keep_own_frames(
    report: MethodReport, prepared: PreparedVideo, own: OwnFrames, kept: Sequence[int]
) -> None:
    """``report``'s kept frames: its own (positions ``kept`` in ``own``), shown as the nearest shared ones."""
    frames, kept = own.frames, sorted(set(kept))
    report.kept_frames = [
        {"index": int(frames.indices[p]), "timestamp": round(float(frames.timestamps[p]), 3)} for p in kept
    ]
    report.kept = nearest_positions(prepared.frames.timestamps, frames.timestamps[kept])


#: The options (``Settings.options_for``) that decide which weights an own-weights column loads: its
#: ``Resident`` key, in the order its loader takes them (the commits are ``Settings.revisions``' pins).
PINNED_WEIGHTS = ("checkpoint", "base_vlm", "revision", "base_revision")

#: Seconds a GPU call asks for on top when a column's model is not loaded in this process (it then loads
#: inside the call; never on ZeroGPU, where ``place_columns`` loads at start-up or the column is refused): a
#: guess for reading a 2-6B bf16 checkpoint (4-12 GB) from disk and building it, not measured.
LOAD_SECONDS = 60.0


class Resident:
    """One loaded model, loaded by ``load(*key)`` on first use and replaced when another key is asked for;
    once ``fixed`` (ZeroGPU: ``place_columns``), it answers only with what it holds and never loads."""

    def __init__(self, load: Callable, name: str = "this column") -> None:
        self.load, self.name, self._held, self.fixed = load, name, None, False

    def holds(self, key: tuple) -> bool:
        """Whether the model loaded for ``key`` is the one held (a call with it loads nothing)."""
        return self._held is not None and self._held[0] == key

    def __call__(self, *key):
        if not self.holds(key):
            if self.fixed:
                raise model_zoo.ModelLoadError(
                    f"{self.name}'s weights were not loaded when this server started, so it cannot run "
                    "here; choose other columns."
                )
            self._held = None  # the old model goes before the new one loads
            self._held = (key, self.load(*key))
        return self._held[1]


def weights_key(settings: Settings, name: str) -> tuple:
    """The ``Resident`` key of column ``name`` under ``settings``: its ``PINNED_WEIGHTS`` options."""
    options = settings.options_for(name)
    return tuple(options[k] for k in PINNED_WEIGHTS)


def place_columns(names: Sequence[str]) -> None:
    """ZeroGPU's rule for the columns with weights of their own (as ``model_zoo.place_backbones`` for the
    shared backbones): load ``names`` now, at start-up and outside any GPU call, at the commits their
    registry revisions resolve to, and from then on let every such column answer only with what it holds
    (a column not placed, or asked for other weights, is its one sentence; no GPU call ever loads weights)."""
    from pipeline.columns import COLUMNS  # the registry names this module's runners: imported on use
    from pipeline.revisions import pin

    for name, column in COLUMNS.items():
        if column.own_variant is None:
            continue
        resident = column.runner.model
        resident.fixed = False
        if name in names:
            resident(*weights_key(pin(Settings(methods=(name,))), name))
        resident.fixed = True


def servable(name: str, settings: Settings | None = None) -> bool:
    """Whether own-weights column ``name`` can answer in this process (always, unless columns were placed:
    then only with the weights it holds)."""
    from pipeline.columns import COLUMNS
    from pipeline.revisions import pin

    resident = COLUMNS[name].runner.model
    return not resident.fixed or resident.holds(weights_key(pin(settings or Settings(methods=(name,))), name))


def stream_answer(report: MethodReport, start: Callable[[], Any]) -> Iterator[Event]:
    """``start()`` (compression and prefill, timed as ``compress``) gives a run that streams text deltas and
    holds the whole ``text``; its answer streams into ``report`` (timed as ``answer``). Returns the run."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        run = start()
        report.timings["compress"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        for delta in run:
            report.answer += delta
            yield AnswerDelta(report.method, report.answer)
    report.answer = run.text
    report.timings["answer"] = time.perf_counter() - t1
    return run


class AuthorsRunner:
    """The ``ColumnRunner`` skeleton of a column with its own weights: per column, ``answer(report, job, name,
    own)`` (a generator of events filling ``report``) inside one try, so a failure is its column's sentence.
    Subclasses set ``model`` (a ``Resident``) and implement ``prepare``, ``answer`` and ``gpu_seconds``."""

    def prepare(self, job: Job, names: Sequence[str], limits: media.Limits) -> Iterator[Event]:
        raise NotImplementedError

    def load_seconds(self, job: Job, names: Sequence[str]) -> float:
        """``LOAD_SECONDS`` for each column whose weights (``PINNED_WEIGHTS``) are not the held model's, unless
        the columns were placed."""
        if self.model.fixed:  # placed at start-up: a GPU call never loads (``place_columns``)
            return 0.0
        keys = [weights_key(job.settings, name) for name in names]
        return sum(0.0 if self.model.holds(key) else LOAD_SECONDS for key in keys)

    def answer(self, report: MethodReport, job: Job, name: str, own: OwnFrames) -> Iterator[Event]:
        raise NotImplementedError

    def run(self, job: Job, names: Sequence[str]) -> Iterator[Event]:
        for i, name in enumerate(names):
            yield Progress("compress", 0.8 + 0.2 * i / len(names), f"{name}: compressing and answering…")
            report = yield from self._column(job, name)
            yield MethodDone(report)

    def _column(self, job: Job, name: str) -> Iterator[Event]:
        report = MethodReport(method=name, label=model_zoo.get_variant(name).label)
        memory = MemoryMeter("cuda" if torch.cuda.is_available() else "cpu")
        try:
            own = job.inputs.get(name)
            if own is None:  # a job that did not go through ``compare``: sample here
                own = (yield from self.prepare(job, [name], media.Limits()))[name]
            if own.error is not None:
                raise media.VideoError(own.error)
            yield from self.answer(report, job, name, own)
        except media.VideoError as err:
            report.error = err.message
        except model_zoo.ModelLoadError as err:  # written for the visitor: no Hub, no GPU, weights not placed
            report.error = str(err)
        except Exception as err:  # one column failing must not take the other columns down
            report.error = failure(err)
        if report.error == OUT_OF_MEMORY:
            free_memory()  # outside the except: the traceback, and the memory it held, are gone
        report.memory = memory.stop()
        return report
