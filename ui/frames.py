"""Kept frames as image files for the galleries: each frame encoded once, shared by every column and request.

A gallery given arrays makes Gradio encode every image of every column on every request (and two requests
showing the same frame write the same cache file at the same time). Instead each frame becomes a JPEG once
(the encoded bytes are kept, bounded, in memory, keyed by the video's fingerprint, the frame's source index
and its size), and each request writes the frames it shows into its own folder, one file per frame for all
its columns. The browser gets the frame at its sampled size (at most ``max_side`` pixels, 640 by default):
small enough for a thumbnail, whole when clicked.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.cache import MB, ByteLRU
from pipeline.events import MethodReport
from pipeline.report import gallery_frames
from pipeline.video import PreparedVideo

QUALITY = 85


class FrameImages:
    """Encoded kept frames (see the module docstring); ``max_mb`` bounds the bytes kept in memory."""

    def __init__(self, max_mb: float = 64) -> None:
        self.encoded = ByteLRU(int(max_mb * MB))

    def gallery(self, prepared: PreparedVideo, report: MethodReport, folder: Path) -> list[tuple[str, str]]:
        """(image file, caption) for the kept frames of ``report``, the files in ``folder`` (one per frame)."""
        return [
            (str(self.file(prepared, p, folder)), caption) for p, caption in gallery_frames(prepared, report)
        ]

    def file(self, prepared: PreparedVideo, position: int, folder: Path) -> Path:
        """The frame at ``position`` of the sampled frames as a JPEG in ``folder`` (written once per folder)."""
        path = folder / f"frame-{int(prepared.frames.indices[position]):07d}.jpg"
        if not path.exists():
            path.write_bytes(self.jpeg(prepared, position))
        return path

    def jpeg(self, prepared: PreparedVideo, position: int) -> bytes:
        frame = prepared.frames.frames[position]
        key = (prepared.fingerprint, int(prepared.frames.indices[position]), frame.shape)
        data = self.encoded.get(key)
        if data is None:
            data = np.frombuffer(encode_jpeg(frame), dtype=np.uint8)
            self.encoded.put(key, data)
        return data.tobytes()


def encode_jpeg(frame: np.ndarray, quality: int = QUALITY) -> bytes:
    """[H, W, 3] uint8 RGB → JPEG bytes."""
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=quality)
    return out.getvalue()
