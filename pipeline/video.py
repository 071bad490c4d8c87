"""The shared work of a request: fetch (links), probe, fingerprint, sample and segment the video, once.

Every column sees the same ``PreparedVideo``. Probes and frames are cached (``pipeline.cache``) so a follow-up
question on the same file skips them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import media
from compressors.base import SegmentSpan
from pipeline import cache, handoff
from pipeline.bounds import PAGE_BOUNDS
from pipeline.events import Progress
from pipeline.request import ManyRequest, Request
from pipeline.settings import Settings


class QuestionError(ValueError):
    """The question is empty or too long (the message says what to do)."""


MAX_QUESTION_CHARS = PAGE_BOUNDS.max_question_chars


@dataclass
class PreparedVideo:
    """The sampled video every method sees (CPU data only: it crosses ZeroGPU's process boundary, its
    frames as a file reference: ``pipeline.handoff``)."""

    path: Path
    url: str | None
    info: media.VideoInfo
    fingerprint: str
    frames: media.Frames  # the sampled frames as sampled: nothing repeated, nothing padded
    segments: list[media.Segment]  # tiling the frames; the last one may be short
    timings: dict = field(default_factory=dict)

    @property
    def real_frames(self) -> int:
        """Frames sampled (every one is real: no padding is ever added here)."""
        return len(self.frames)

    @property
    def spans(self) -> list[SegmentSpan]:
        """The segments over Qwen3-VL's groups of 2 frames (``segment_frames`` is even: Settings checks); an
        odd frame count ends in a group holding the last frame and the duplicate Qwen3-VL adds."""
        fpg = 2
        spans = []
        for s in self.segments:
            groups = range(s.frames.start // fpg, -(-s.frames.stop // fpg))
            padded = groups.stop * fpg - s.frames.stop
            spans.append(SegmentSpan(s.index, s.frames, groups, s.start, s.end, s.centre, padded=padded))
        return spans

    def frame_ref(self, position: int) -> dict:
        return {
            "index": int(self.frames.indices[position]),
            "timestamp": round(float(self.frames.timestamps[position]), 3),
        }


def is_url(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and "://" in source


def check_question(question: str, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question stripped; QuestionError (one sentence) when it is not text, empty, or over ``max_chars``
    (the request's ``Settings.BOUNDS``)."""
    if question is not None and not isinstance(question, str):  # an API caller's number, list, ...
        raise QuestionError("The question must be text; type a question about the video.")
    question = (question or "").strip()
    if not question:
        raise QuestionError("Type a question about the video first.")
    if len(question) > max_chars:
        raise QuestionError(f"Shorten the question to at most {max_chars} characters.")
    return question


def prepare(request: Request | ManyRequest, workdir: Path | None) -> Iterator[Progress | PreparedVideo]:
    """Fetch (links), probe, fingerprint, sample and segment; yields progress, then the ``PreparedVideo``.

    A fetched file lives in ``workdir``; the caller removes it.
    """
    settings = request.settings
    t0 = time.perf_counter()
    if is_url(request.source):
        yield Progress("fetch", 0.02, "Downloading the video…")
    path = _local_path(request, workdir)
    fetch_s = time.perf_counter() - t0
    yield Progress("probe", 0.08, "Reading the video…")
    t_probe = time.perf_counter()
    info, fingerprint = _probe(path)
    probe_s = time.perf_counter() - t_probe
    key = (fingerprint, settings.sampling_key())
    cached = cache.FRAMES.get(key)
    t1 = time.perf_counter()
    if cached is None:
        yield Progress(
            "sample", 0.1, f"Sampling frames at {settings.fps:g} fps (at most {settings.max_frames})…"
        )
        cached = _sample(path, settings, request.limits)
        cache.FRAMES.put(key, cached)
    frames, segs = cached
    timings = {"fetch": fetch_s, "probe": probe_s, "decode": time.perf_counter() - t1}
    url = str(request.source) if is_url(request.source) else None
    yield PreparedVideo(path, url, info, fingerprint, frames, list(segs), timings)


@contextmanager
def download_folder(request: Request | ManyRequest) -> Iterator[Path | None]:
    """Where ``prepare`` keeps a link's download: the request's ``workdir``, else (for a link) a temporary
    folder removed when the block ends; None for a local file without a workdir."""
    if request.workdir is not None or not is_url(request.source):
        yield request.workdir
        return
    folder = Path(tempfile.mkdtemp(prefix="arena-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prepared_video(
    request: Request | ManyRequest, workdir: Path | None
) -> Generator[Progress, None, PreparedVideo]:
    """``prepare``, its progress yielded on; returns the ``PreparedVideo`` (``yield from`` it)."""
    prepared = None
    for event in prepare(request, workdir):
        if isinstance(event, PreparedVideo):
            prepared = event
        else:
            yield event
    return prepared


def _local_path(request: Request, workdir: Path | None) -> Path:
    """The video file: the source itself, or a link downloaded into ``workdir`` within the limits."""
    if not is_url(request.source):
        return Path(request.source)
    return download(str(request.source), request.limits, workdir, allow_private=request.allow_private)


def download(url: str, limits: media.Limits, workdir: Path | None, *, allow_private: bool = False) -> Path:
    """A video link downloaded into ``workdir`` within ``limits`` (``media.fetch``'s VideoErrors)."""
    fetched = media.fetch(
        url,
        out_dir=workdir,
        max_size_mb=limits.max_size_mb,
        max_duration_s=limits.max_duration_s,
        max_height=limits.max_height,
        allow_private=allow_private,
    )
    return Path(fetched.path)


def _sample(path: Path, settings: Settings, limits: media.Limits) -> tuple:
    """(the sampled frames, their segments) under ``settings`` and ``limits``.

    The pixels are kept in a file mapped read-only (``pipeline.handoff``): the GPU call then receives the
    file's path instead of the pixels (ZeroGPU pickles its arguments into the GPU worker).
    """
    sampled = media.sample(
        path, fps=settings.fps, max_frames=settings.max_frames, max_side=settings.max_side, limits=limits
    )
    sampled = dataclasses.replace(sampled, frames=handoff.to_file(sampled.frames))
    return sampled, media.segments(sampled, segment_frames=settings.segment_frames)


def _probe(path: Path) -> tuple[media.VideoInfo, str]:
    """``media.probe`` and ``media.fingerprint`` of ``path``: the fingerprint remembered while the file is
    unchanged (same path, inode, size, mtime), the probe while the content is (a second upload of the same
    video, under another name, is hashed but not probed again)."""
    fingerprint = content_fingerprint(path)
    info = cache.PROBES.get(("content", fingerprint))
    if info is None:
        info = media.probe(path)
        cache.PROBES.put(("content", fingerprint), info)
    return dataclasses.replace(info, path=str(path)), fingerprint


def content_fingerprint(path: Path) -> str:
    """``media.fingerprint`` of ``path``, remembered while the file is unchanged (same path, inode, size,
    mtime): a follow-up, or "Kept moments" checking a card's video, does not hash the file again."""
    try:
        identity = cache.file_identity(path)
    except OSError:  # missing or unreadable: media raises the one-sentence VideoError for it
        identity = None
    fingerprint = None if identity is None else cache.PROBES.get(identity)
    if fingerprint is None:
        fingerprint = media.fingerprint(path)
        if identity is not None:
            cache.PROBES.put(identity, fingerprint)
    return fingerprint
