"""Fuzz: a few hundred mutated small videos (cut, bit-flipped, zeroed, spliced) go through probe and sample.

Claims: only VideoError subclasses come out; no call runs past its time limit (a hang in native code is
caught by running the cases in worker processes under a global timeout); no temporary file is left behind.
Seeded, so a failure names a case that reproduces: `mutated(seed_video, case_number)`.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

SEEDS = [
    "h264.mp4",
    "vp9.webm",
    "av1.mkv",
    "mpeg4.avi",
    "hevc10.mp4",
    "vfr.mp4",
    "with_audio.mp4",
    "faststart.mp4",
    "rot90.mp4",
    "odd.webm",
    "h264.ts",
]
CASES_PER_SEED = 50  # 550 mutated files
CASE_TIME_LIMIT_S = 10.0
TOTAL_TIMEOUT_S = 150.0


def _cut(data: bytearray, rng) -> bytearray:
    return data[: int(rng.integers(1, len(data)))]


def _flip_bits(data: bytearray, rng) -> bytearray:
    for _ in range(int(rng.integers(1, 64))):
        i = int(rng.integers(len(data)))
        data[i] ^= 1 << int(rng.integers(8))
    return data


def _zero_range(data: bytearray, rng) -> bytearray:
    start = int(rng.integers(len(data)))
    length = int(rng.integers(1, max(2, len(data) // 3)))
    data[start : start + length] = bytes(len(data[start : start + length]))
    return data


def _splice(data: bytearray, rng) -> bytearray:
    a, b = sorted(int(x) for x in rng.integers(0, len(data), 2))
    where = int(rng.integers(len(data)))
    return data[:where] + data[a:b] + data[where:]


def _scramble_header(data: bytearray, rng) -> bytearray:
    n = min(len(data), int(rng.integers(4, 128)))
    data[:n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return data


MUTATIONS = [_cut, _flip_bits, _zero_range, _splice, _scramble_header]


def mutated(source: bytes, case: int) -> bytes:
    """Case `case` of a seed video: one to three mutations, chosen by a generator seeded with `case`."""
    rng = np.random.default_rng(case)
    data = bytearray(source)
    for _ in range(int(rng.integers(1, 4))):
        if len(data) < 2:
            break
        data = MUTATIONS[int(rng.integers(len(MUTATIONS)))](data, rng)
    return bytes(data)


def run_case(path: str) -> tuple[str, str, float]:
    """In a worker: probe and sample one file. Returns (path, outcome, seconds); outcome 'ok' or error class."""
    import media

    started = time.monotonic()
    outcome = "ok"
    try:
        media.probe(path, limits=media.Limits(decode_time_limit_s=CASE_TIME_LIMIT_S))
        media.sample(path, fps=4, max_frames=8, max_side=64, time_limit_s=CASE_TIME_LIMIT_S)
    except media.VideoError as e:
        outcome = type(e).__name__
    except Exception as e:  # noqa: BLE001 - the point of the test is to report anything untyped
        outcome = f"UNTYPED {type(e).__name__}: {e}"
    return path, outcome, time.monotonic() - started


def make_cases(test_videos, folder: Path) -> list[str]:
    paths = []
    for seed in SEEDS:
        source = test_videos[seed].read_bytes()
        for case in range(CASES_PER_SEED):
            path = folder / f"{Path(seed).stem}-{case:03d}{Path(seed).suffix}"
            path.write_bytes(mutated(source, case))
            paths.append(str(path))
    return paths


def test_mutated_videos_raise_only_typed_errors_never_hang_and_leave_no_temp_files(
    test_videos, tmp_path, monkeypatch
):
    cases = make_cases(test_videos, tmp_path)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))  # the workers' tempfile.gettempdir()

    results = {}
    pool = multiprocessing.get_context("spawn").Pool(2)
    try:
        outcomes = pool.imap_unordered(run_case, cases)  # chunksize 1: next(timeout) works
        deadline = time.monotonic() + TOTAL_TIMEOUT_S
        for _ in cases:
            path, outcome, seconds = outcomes.next(timeout=max(0.1, deadline - time.monotonic()))
            results[path] = (outcome, seconds)
    except multiprocessing.TimeoutError:
        pending = sorted(set(cases) - set(results))
        pytest.fail(f"{len(pending)} cases still running after {TOTAL_TIMEOUT_S} s, e.g. {pending[:3]}")
    finally:
        pool.terminate()
        pool.join()

    untyped = {p: o for p, (o, _) in results.items() if o.startswith("UNTYPED")}
    assert not untyped, untyped
    slow = {p: s for p, (_, s) in results.items() if s > 2 * CASE_TIME_LIMIT_S + 1}
    assert not slow, slow
    assert list(private_tmp.iterdir()) == []
    kinds = {o for o, _ in results.values()}
    assert "ok" in kinds and len(kinds) >= 3, kinds  # the mutations reach both success and several errors
