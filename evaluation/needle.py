"""A needle benchmark from any videos: a short card (a word on a coloured background) inserted at a known
random time, and two multiple-choice questions about it (its word, its colour), in our jsonl layout.

    make_benchmark([video, ...], out_dir, seed=0, seconds=2.0) -> out_dir / "needle.jsonl"

Each source is re-encoded (H.264, constant frame rate, its own frame rate and stored size, long side at
most ``max_side``; audio and a display rotation are dropped) with the card's frames spliced in at frame ``round(t * fps)``, t drawn uniformly in the
middle 80% of the source; the card's span [start, end) in the new video is exact (frame i is at i / fps).
``cli.py eval`` then reports, besides accuracy, how often each method kept a frame inside that span: a
measure of frame selection that needs no answer at all (long-video needle tests such as MLVU's
"needle QA", arXiv 2406.04264, score the answer only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

import media
from evaluation.benchmarks import LETTERS

WORDS = ("APPLE", "TIGER", "ROCKET", "PIANO", "CASTLE", "LEMON", "ROBOT", "GUITAR", "ISLAND", "CANDLE")
COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 160, 70),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (130, 60, 180),
    "orange": (240, 130, 30),
}
OPTIONS = 4
BENCHMARK = "needle.jsonl"


class NeedleError(ValueError):
    """A needle benchmark that cannot be made as asked (the message says what to fix)."""


@dataclass(frozen=True)
class Needle:
    """One inserted card: its word and colour, and its span in the new video (seconds)."""

    word: str
    colour: str
    start: float
    end: float


def card(word: str, colour: str, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8: ``word`` in large white letters on a ``colour`` background, a dark outline."""
    width, height = size
    img = Image.new("RGB", size, COLOURS[colour])
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(10, min(height // 4, width // (len(word) + 1))))
    draw.text(
        (width // 2, height // 2),
        word,
        fill=(255, 255, 255),
        anchor="mm",
        font=font,
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    return np.asarray(img)


def _even_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def insert(
    source: Path, target: Path, *, word: str, colour: str, at: float, seconds: float, max_side: int = 640
) -> Needle:
    """Write ``source`` to ``target`` with a ``seconds``-long card spliced in at ``at`` seconds."""
    try:
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            fps = Fraction(stream.average_rate or 25).limit_denominator(1001)
            size = _even_size(stream.codec_context.width, stream.codec_context.height, max_side)
            at_frame = round(at * fps)
            frames = round(seconds * fps) or 1
            with av.open(str(target), "w") as out:
                encoder = out.add_stream("libx264", rate=fps)
                encoder.width, encoder.height, encoder.pix_fmt = size[0], size[1], "yuv420p"
                written = 0
                for frame in container.decode(stream):
                    if written == at_frame:
                        written += _write(out, encoder, [card(word, colour, size)] * frames)
                    written += _write(
                        out, encoder, [frame.to_ndarray(format="rgb24", width=size[0], height=size[1])]
                    )
                if written <= at_frame:  # the source ended before ``at`` (its header overstated it)
                    at_frame = written
                    _write(out, encoder, [card(word, colour, size)] * frames)
                out.mux(encoder.encode())
    except (av.FFmpegError, OSError) as err:
        target.unlink(missing_ok=True)
        raise NeedleError(
            f"Cannot re-encode {source.name} ({type(err).__name__}); try another video."
        ) from None
    return Needle(word, colour, round(float(at_frame / fps), 4), round(float((at_frame + frames) / fps), 4))


def _write(out, encoder, images: list[np.ndarray]) -> int:
    for image in images:
        out.mux(encoder.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    return len(images)


def _choices(rng: np.random.Generator, truth: str, pool) -> tuple[list[str], str]:
    """``OPTIONS`` options (the truth and distractors from ``pool``) in random order, and the gold letter."""
    others = [p for p in pool if p != truth]
    options = [truth, *rng.choice(others, size=OPTIONS - 1, replace=False).tolist()]
    order = rng.permutation(OPTIONS)
    options = [options[i] for i in order]
    return options, LETTERS[options.index(truth)]


def _position(start: float, duration: float) -> str:
    third = start / max(duration, 1e-9) * 3
    return ("early", "middle", "late")[min(int(third), 2)]


def _questions(name: str, needle: Needle, duration: float, rng: np.random.Generator) -> list[dict]:
    words, word_answer = _choices(rng, needle.word, WORDS)
    colours, colour_answer = _choices(rng, needle.colour, list(COLOURS))
    common = {
        "video": f"videos/{name}",
        "duration": round(duration, 3),
        "needle": {"start": needle.start, "end": needle.end, "word": needle.word, "colour": needle.colour},
    }
    position = _position(needle.start, duration)
    stem = Path(name).stem
    return [
        {
            "qid": f"{stem}/word",
            "question": "A card with a word on it appears briefly in the video. What word is written on the card?",
            "options": words,
            "answer": word_answer,
            "groups": {"kind": "word", "position": position},
            **common,
        },
        {
            "qid": f"{stem}/colour",
            "question": "A card appears briefly in the video. What colour is the card?",
            "options": colours,
            "answer": colour_answer,
            "groups": {"kind": "colour", "position": position},
            **common,
        },
    ]


def make_benchmark(
    videos: list[Path], out: Path, *, seed: int = 0, seconds: float = 2.0, max_side: int = 640
) -> Path:
    """Insert one card into each of ``videos`` (written to ``out/videos/``) and write ``out/needle.jsonl``
    (two questions per video). Raises ``media.VideoError`` for a source that cannot be read."""
    if not videos:
        raise NeedleError("Give at least one video to insert a needle into.")
    if seconds <= 0:
        raise NeedleError("The needle must last more than 0 seconds (--seconds).")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows, names = [], set()
    for i, source in enumerate(videos):
        info = media.probe(source)
        rng = np.random.default_rng([seed, i])
        name = _unique(f"{Path(source).stem}_needle.mp4", names)
        at = float(rng.uniform(0.1, 0.9) * info.duration)
        word, colour = str(rng.choice(WORDS)), str(rng.choice(list(COLOURS)))
        needle = insert(
            Path(source),
            out / "videos" / name,
            word=word,
            colour=colour,
            at=at,
            seconds=seconds,
            max_side=max_side,
        )
        duration = media.probe(out / "videos" / name).duration
        rows += _questions(name, needle, duration, rng)
    path = out / BENCHMARK
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _unique(name: str, taken: set[str]) -> str:
    stem, n = Path(name).stem, 1
    while name in taken:
        n += 1
        name = f"{stem}{n}.mp4"
    taken.add(name)
    return name
