"""Folders for the files the page hands out (run cards, kept-moments clips, downloaded videos)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path


class ScratchDirs:
    """Temporary folders for files the page hands out; only the newest ``keep`` survive, all go at exit.

    Downloaded videos stay for a few requests so "Kept moments" can cut them; run cards and clips are
    copied into Gradio's cache when returned, so older folders are no longer needed.
    """

    def __init__(self, prefix: str, keep: int) -> None:
        self.prefix, self.keep, self.dirs = prefix, keep, []
        self._lock = threading.Lock()
        atexit.register(self.clear)

    def new(self) -> Path:
        with self._lock:
            self.dirs.append(tempfile.mkdtemp(prefix=self.prefix))
            while len(self.dirs) > self.keep:
                shutil.rmtree(self.dirs.pop(0), ignore_errors=True)
            return Path(self.dirs[-1])

    def clear(self) -> None:
        with self._lock:
            while self.dirs:
                shutil.rmtree(self.dirs.pop(), ignore_errors=True)
