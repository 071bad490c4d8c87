"""Soak: 50 comparisons in a row through pipeline.compare leave memory and the temporary folder where they were.

Tiny settings (4 frames, one new token, all five methods) so the loop takes well under a minute on 2 cores.
The sources rotate over four uploaded files and two links served from 127.0.0.1 (a direct file and a page
with a <video> tag), so downloads are part of the loop, and the shared caches are shrunk to hold about one
video, so every run samples, encodes and evicts instead of answering from the cache.
"""

import gc
import os
import tempfile
import tracemalloc
from pathlib import Path

import pytest
import torch

from pipeline import cache
from pipeline import events as ev
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from pipeline.compare import compare
from pipeline.request import Request
from pipeline.settings import Settings
from pipeline.video import is_url
from tests.videos import make_clip

pytestmark = pytest.mark.slow

RUNS = 50
MB = 1 << 20
# Resident memory: measured here (2 cores, glibc), RSS rises 10-20 MB over the first ~100 decodes after the
# warm-up and then stays flat (sampling alone: +19 MB after 100 runs, +22 MB after 600; the model part alone
# with frames cached: flat). That is allocator and decoder-thread arenas settling, not objects kept alive.
# 64 MB is three times that plateau, and below what a real leak of models adds over 50 runs: loading the
# backbone again each run adds 250 MB. Kept frames (a run samples at most 0.9 MB: 4 frames of ~320x240, 45 MB
# over 50 runs) are caught by the traced bound below.
RSS_GROWTH_BOUND = 64 * MB
# Without the allocator's noise: Python objects and numpy arrays (tracemalloc) and live torch tensors. The
# loop keeps about 0.3 MB of test-server request logs; a run's frames alone are up to 0.9 MB.
TRACED_GROWTH_BOUND = 2 * MB


def rss_bytes() -> int:
    """Resident memory of this process, from /proc/self/statm (resident pages x page size)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def folder_usage(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile.gettempdir() is a folder of this test's own: other tests running beside it cannot disturb the count."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def small_caches():
    before = cache.cache_settings()
    cache.clear_caches()
    # frames: one served 96x64 clip's 4 frames (72 KB) fit, two do not; the uploads' never do
    cache.configure_caches(frames_mb=0.1, tokens_mb=0.5, relevance_mb=0.01, probes=2)
    yield
    cache.clear_caches()
    cache.configure_caches(before)


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("soak")
    sizes = [(320, 240), (288, 224), (352, 256), (320, 320)]
    return [
        str(make_clip(folder / f"clip{i}.mp4", seconds=3 + i, fps=4, size=s)) for i, s in enumerate(sizes)
    ]


def _compare(source: str) -> ev.Finished:
    settings = Settings.for_backbone("tiny-random", fps=1, max_frames=4, max_new_tokens=1, budget=48)
    events = compare(Request(source, "What is shown?", settings, allow_private=is_url(source)))
    finished = [e for e in events if isinstance(e, ev.Finished)][-1]
    assert all(not r.error and r.answer for r in finished.reports.values()), finished.reports
    assert set(finished.reports) == set(METHODS)
    return finished


@pytest.mark.network
def test_fifty_comparisons_leave_memory_and_the_temporary_folder_as_they_were(
    uploads, video_server, private_tmp, small_caches
):
    links = [video_server.url("clip.mp4"), video_server.url("page.html?src=long.mp4")]
    sources = uploads + links
    start_usage, asked_before = folder_usage(private_tmp), len(video_server.requests)  # the server is shared
    for source in sources * 2:  # warm-up: the backbone, PyAV, yt-dlp's extractors, allocator pools
        _compare(source)
    tensors = live_tensors()
    tracemalloc.start(1)
    start_traced, start_rss, samples = tracemalloc.get_traced_memory()[0], rss_bytes(), []
    for run in range(RUNS):
        _compare(sources[run % len(sources)])
        if run % 10 == 9:
            gc.collect()
            samples.append(round((rss_bytes() - start_rss) / MB, 1))
    growth, traced = rss_bytes() - start_rss, tracemalloc.get_traced_memory()[0] - start_traced
    tracemalloc.stop()
    report = (
        f"RSS grew {growth / MB:.1f} MB over {RUNS} runs (every 10 runs: {samples} MB); "
        f"Python and numpy memory grew {traced / MB:.2f} MB; live tensors {tensors} -> {live_tensors()}"
    )
    print(report)
    assert growth < RSS_GROWTH_BOUND, report
    assert traced < TRACED_GROWTH_BOUND, report
    assert live_tensors() <= tensors, report
    assert folder_usage(private_tmp) == start_usage, sorted(p.name for p in private_tmp.rglob("*"))
    downloads = [p for p in video_server.requests[asked_before:] if p.endswith(("clip.mp4", "long.mp4"))]
    assert len(downloads) >= (RUNS + 2 * len(sources)) // 3  # a third of the runs downloaded their video
    assert len(cache.FRAMES) <= 1 and cache.FRAMES.misses >= RUNS  # the loop did the work every time
