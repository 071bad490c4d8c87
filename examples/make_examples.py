"""Make the example clips shown under the page's examples (small, generated, never committed).

``python examples/make_examples.py [DIR]`` writes them to ``examples/clips/`` by default. Each clip has a
question whose answer is visible in only part of the video, so the methods' choices of frames matter.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = (320, 180)
FPS = 8


def _scene_colours(t: float) -> tuple[tuple[int, int, int], str]:
    scenes = [
        ((200, 40, 40), "RED"),
        ((40, 160, 60), "GREEN"),
        ((40, 70, 200), "BLUE"),
        ((220, 200, 40), "YELLOW"),
    ]
    return scenes[min(int(t // 10), len(scenes) - 1)]


def colour_scenes(t: float) -> Image.Image:
    """Four 10-second scenes of one colour each, its name written in the middle."""
    colour, name = _scene_colours(t)
    img = Image.new("RGB", SIZE, colour)
    draw = ImageDraw.Draw(img)
    draw.text((SIZE[0] // 2, SIZE[1] // 2), name, fill=(255, 255, 255), anchor="mm", font=_font(36))
    draw.text((8, 8), f"{t:5.1f}s", fill=(255, 255, 255), font=_font(14))
    return img


def moving_ball(t: float) -> Image.Image:
    """A ball crossing the frame left to right in 30 s; it turns from white to orange halfway."""
    img = Image.new("RGB", SIZE, (20, 20, 30))
    draw = ImageDraw.Draw(img)
    x = int(20 + (SIZE[0] - 40) * min(t / 30.0, 1.0))
    colour = (240, 240, 240) if t < 15 else (255, 140, 0)
    draw.ellipse((x - 14, SIZE[1] // 2 - 14, x + 14, SIZE[1] // 2 + 14), fill=colour)
    return img


def counter(t: float) -> Image.Image:
    """A big counter that shows the current whole second; a star appears only between 20 s and 24 s."""
    img = Image.new("RGB", SIZE, (245, 245, 240))
    draw = ImageDraw.Draw(img)
    draw.text((SIZE[0] // 2, SIZE[1] // 2), str(int(t)), fill=(10, 10, 10), anchor="mm", font=_font(64))
    if 20 <= t < 24:
        draw.regular_polygon((260, 50, 30), 5, fill=(230, 180, 0))
    return img


def _font(size: int):
    return ImageFont.load_default(size=size)


EXAMPLES: list[tuple[str, Callable[[float], Image.Image], float, str]] = [
    ("colour_scenes.mp4", colour_scenes, 40.0, "What colour is the last scene?"),
    ("moving_ball.mp4", moving_ball, 30.0, "What colour is the ball at the end?"),
    ("counter.mp4", counter, 32.0, "When does the star appear?"),
]


def write_clip(path: Path, draw: Callable[[float], Image.Image], seconds: float, fps: int = FPS) -> Path:
    """Encode ``draw(t)`` for t in [0, seconds) as H.264 in an MP4."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.asarray(draw(i / fps)), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def make_all(directory: str | Path) -> list[tuple[Path, str]]:
    """Write every example clip that is missing; returns (path, question) pairs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, draw, seconds, question in EXAMPLES:
        path = directory / name
        if not path.exists():
            write_clip(path.with_suffix(".tmp.mp4"), draw, seconds).rename(path)
        rows.append((path, question))
    return rows


def gallery_rows(examples_dir: str | Path) -> list[list]:
    """[video path, question] rows for ``gr.Examples``, making the clips on first use."""
    return [[str(p), q] for p, q in make_all(Path(examples_dir) / "clips")]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "clips"
    for path, question in make_all(target):
        print(f"{path}  —  {question}")
