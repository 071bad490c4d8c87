"""What a comparison streams: progress, answer text as it grows, one report per column, the final result.

Every event holds CPU data only: on ZeroGPU the GPU part runs in a forked worker and its events cross the
process boundary pickled (``pipeline.compare.run_on_gpu``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the prepared video is only referenced here, never built
    from pipeline.settings import Settings
    from pipeline.video import PreparedVideo


@dataclass
class Progress:
    stage: str  # fetch, probe, sample, encode, compress, answer, done
    fraction: float  # 0..1 of the whole request
    message: str


#: A multi-question request's (question index, budget): which of its answers an event belongs to.
Cell = tuple[int, int]


@dataclass
class AnswerDelta:
    method: str
    text: str  # the answer so far
    cell: Cell | None = None  # None in a one-question request (``pipeline.compare``)


@dataclass
class MethodReport:
    """Everything one column shows and the run card stores for one method."""

    method: str
    label: str
    answer: str = ""
    error: str | None = None
    tokens: dict = field(default_factory=dict)  # raw, llm_input, per_frame, ratio (+ last_layer for XComp)
    kept: list[int] = field(default_factory=list)  # positions in the sampled frames
    kept_frames: list[dict] = field(default_factory=list)  # {index (source frame), timestamp}
    segments: list[dict] = field(default_factory=list)  # {start, end, score, tokens}
    timings: dict = field(default_factory=dict)  # seconds: compress, answer, prefill, decode; "reused": what
    # came from the caches (compression, relevance scores, prompt prefixes)
    memory: dict = field(default_factory=dict)  # MB
    extra: dict = field(default_factory=dict)


@dataclass
class MethodDone:
    report: MethodReport
    cell: Cell | None = None  # None in a one-question request (``pipeline.compare``)


@dataclass
class Encoded:
    """The shared encode is done. ``fresh`` carries (cache key, CPU tokens) when they were computed in this
    request, so the caller's process can keep them: on ZeroGPU the GPU work runs in a forked process whose
    caches vanish with it, while the caller's survive (and a fork inherits them for the next request)."""

    timings: dict  # seconds spent on the work shared by every method (encode)
    fresh: tuple | None = None


@dataclass
class Computed:
    """The small cache entries this request computed, as (cache name in ``cache.CACHES``, key, CPU value):
    Tempo's relevance scores and the question-independent compressions. Like ``Encoded.fresh``, they let the
    caller's process keep them when the GPU work ran in a forked process (ZeroGPU), so that a re-run with
    another budget, or a follow-up, finds them there. Prompt prefixes stay behind: at real size they are
    gigabytes of keys, too much to copy back on every request."""

    entries: list[tuple[str, Hashable, object]]


@dataclass
class Finished:
    prepared: PreparedVideo
    reports: dict[str, MethodReport]  # in column order
    shared_timings: dict  # seconds: fetch, probe (with fingerprint), decode, encode; total (the whole run)
    settings: Settings | None = None  # what ran: the request's, each checkpoint pinned to its commit


@dataclass
class FinishedMany:
    """The end of a multi-question request (``pipeline.many``): a report per (question index, budget,
    method), in the order the answers finished."""

    prepared: PreparedVideo
    reports: dict[tuple[int, int, str], MethodReport]
    shared_timings: dict  # as ``Finished.shared_timings``


Event = Progress | Encoded | AnswerDelta | MethodDone | Computed | Finished | FinishedMany
