"""Per-request folders for the files the page hands out or keeps a while (downloads, run cards, clips, frames).

Each request gets a folder of its own. No other request deletes it while it is young: a folder goes when it is
older than ``ttl_s`` (a visitor may still click "Kept moments" on a downloaded video until then), or, when the
folders together pass ``max_mb``, oldest first but only once older than ``min_age_s``. Everything goes when
the app exits, on SIGTERM too (``remove_on_sigterm``: a Space is stopped with SIGTERM).
"""

from __future__ import annotations

import atexit
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

MB = 1 << 20
_ALL: list[ScratchDirs] = []


class ScratchDirs:
    """Folders named ``<prefix>*`` in the temporary directory (see the module docstring)."""

    def __init__(
        self,
        prefix: str,
        *,
        ttl_s: float = 3600,
        max_mb: float = 4096,
        min_age_s: float = 600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix, self.ttl_s, self.max_bytes, self.min_age_s = prefix, ttl_s, int(max_mb * MB), min_age_s
        self.clock = clock
        self.dirs: list[tuple[float, Path]] = []  # (created, folder), oldest first
        self._lock = threading.Lock()
        _ALL.append(self)
        atexit.register(self.clear)

    def new(self) -> Path:
        """A fresh folder for one request (older folders past their time are removed first)."""
        with self._lock:
            now = self.clock()
            self._reap(now)
            folder = Path(tempfile.mkdtemp(prefix=self.prefix))
            self.dirs.append((now, folder))
            return folder

    def _reap(self, now: float) -> None:
        keep = []
        for created, folder in self.dirs:
            if now - created > self.ttl_s:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                keep.append((created, folder))
        total = sum(_size(folder) for _, folder in keep)
        while keep and total > self.max_bytes and now - keep[0][0] > self.min_age_s:
            _, folder = keep.pop(0)
            total -= _size(folder)
            shutil.rmtree(folder, ignore_errors=True)
        self.dirs = keep

    def clear(self) -> None:
        with self._lock:
            for _, folder in self.dirs:
                shutil.rmtree(folder, ignore_errors=True)
            self.dirs = []


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def remove_on_sigterm() -> None:
    """On SIGTERM, remove every scratch folder, then end as SIGTERM would have (call from the main thread)."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        for scratch in list(_ALL):
            scratch.clear()
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
