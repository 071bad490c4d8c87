"""evaluation.needle and ``cli.py needle``: the card lands exactly in its span, every source frame survives in
order, and the questions' gold letters name the card's word and colour."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

import cli
from evaluation import benchmarks, needle
from tests.videos import make_clip, read_index, write_garbage


def decoded(path) -> tuple[list[float], list[np.ndarray]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [float(f.time) for f in frames], [f.to_ndarray(format="rgb24") for f in frames]


def is_card(image: np.ndarray, colour: str) -> bool:
    corner = image[:4, :4].reshape(-1, 3).mean(0)
    return bool(np.abs(corner - needle.COLOURS[colour]).max() < 30)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("needle")
    sources = [make_clip(folder / "one.mp4", 6, fps=10), make_clip(folder / "two.mp4", 4, fps=10)]
    return sources, needle.make_benchmark(sources, folder / "bench", seed=3, seconds=0.5)


def test_the_card_fills_exactly_its_span_and_every_source_frame_follows_in_order(made):
    sources, path = made
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2 * len(sources)
    for source, row in zip(sources, rows[::2], strict=True):
        span = row["needle"]
        times, images = decoded(path.parent / row["video"])
        inside = [span["start"] <= t < span["end"] for t in times]
        assert sum(inside) == 5  # 0.5 s at 10 fps
        assert all(is_card(img, span["colour"]) == flag for img, flag in zip(images, inside, strict=True))
        source_frames = [read_index(img) for img, flag in zip(images, inside, strict=True) if not flag]
        with av.open(str(source)) as container:
            count = container.streams.video[0].frames
        assert source_frames == list(range(count))
        assert 0.1 * count / 10 <= span["start"] <= 0.9 * count / 10 + 0.1  # within the middle 80%


def test_the_questions_read_back_and_their_gold_letters_name_the_card(made):
    _, path = made
    questions = benchmarks.read(path, "jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for q, row in zip(questions, rows, strict=True):
        gold = q.options["ABCD".index(q.answer)]
        kind = q.groups["kind"]
        assert gold == row["needle"]["word" if kind == "word" else "colour"]
        assert len(set(q.options)) == 4 and q.needle == (row["needle"]["start"], row["needle"]["end"])
        assert q.video_path(path.parent).is_file() and q.groups["position"] in ("early", "middle", "late")


def test_the_seed_decides_the_needles(made, tmp_path):
    sources, path = made
    again = needle.make_benchmark(sources, tmp_path / "again", seed=3, seconds=0.5)
    assert again.read_text() == path.read_text()
    other = needle.make_benchmark(sources, tmp_path / "other", seed=4, seconds=0.5)
    assert other.read_text() != path.read_text()


def test_cli_needle_prints_the_benchmark_and_refuses_an_unreadable_video(made, tmp_path, capsys):
    sources, _ = made
    assert cli.main(["needle", str(sources[1]), "--out", str(tmp_path / "a"), "--seconds", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["questions"] == 2 and printed["videos"] == ["videos/two_needle.mp4"]
    bad = write_garbage(tmp_path / "bad.mp4")
    assert cli.main(["needle", str(bad), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
