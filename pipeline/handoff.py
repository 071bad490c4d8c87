"""Arrays handed to the GPU worker by file, not by value: what keeps ZeroGPU's call arguments small.

On ZeroGPU, ``spaces.GPU`` runs the GPU part in a forked worker that it starts once and reuses while idle;
each call's arguments travel to it pickled through a queue (``spaces.zero.wrappers``: ``arg_queue.put``,
``multiprocessing``'s ``ForkingPickler``). Decoded frames are the only large argument: 1,024 frames of
640 x 360 are 0.7 GB, pickled, copied and unpickled on every call.

``to_file`` writes an array once to an ``.npy`` file and returns it memory-mapped read-only, as a
``FileArray``: an ``ndarray`` that pickles as its file's path, so the worker maps the same file (the same
page-cache pages, nothing copied) and the pickled call stays a few kilobytes whatever the frame count.
Slices and results of arithmetic are plain arrays again and pickle by value.

Files live in ``/dev/shm`` when it has room (memory, like the array they replace), else in the temporary
directory, in one folder per process. A file goes when the last ``FileArray`` of it in this process does (a
cache eviction, say), and the folder when the process exits; a forked worker never removes the caller's files.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np

SHM = Path("/dev/shm")
PREFIX = "arena-handoff-"
_folders: dict[Path, Path] = {}  # root -> this process's folder in it
_lock = threading.Lock()


class FileArray(np.ndarray):
    """A read-only array mapped from an ``.npy`` file; pickles as (path, shape, dtype) (module docstring)."""

    path: Path | None = None  # set on the array ``to_file`` returns only, never on views of it

    def __array_finalize__(self, obj) -> None:
        self.path = None

    def __reduce_ex__(self, protocol):
        if self.path is None:  # a view or a computed array: by value, as a plain ndarray
            return np.asarray(self).__reduce_ex__(protocol)
        return open_file, (str(self.path), self.shape, self.dtype.str)


def open_file(path: str | os.PathLike, shape: tuple[int, ...], dtype: str) -> FileArray:
    """The array in ``path`` mapped read-only, checked against the ``shape`` and ``dtype`` it was written with."""
    mapped = np.load(path, mmap_mode="r")
    if mapped.shape != tuple(shape) or mapped.dtype.str != dtype:
        raise ValueError(f"{path} holds {mapped.shape} {mapped.dtype.str}, expected {tuple(shape)} {dtype}")
    array = mapped.view(FileArray)
    array.path = Path(path)
    return array


def to_file(array: np.ndarray, *, folder: str | os.PathLike | None = None) -> FileArray:
    """``array`` written once to a new ``.npy`` file in ``folder`` (default ``handoff_folder()``) and mapped
    back read-only; the file is removed when the returned array (and every view of it) is gone."""
    if isinstance(array, FileArray) and array.path is not None:
        return array
    array = np.ascontiguousarray(array)
    root = Path(folder) if folder is not None else handoff_folder(array.nbytes)
    fd, name = tempfile.mkstemp(suffix=".npy", dir=root)
    with os.fdopen(fd, "wb") as f:
        np.save(f, array, allow_pickle=False)
    mapped = open_file(name, array.shape, array.dtype.str)
    weakref.finalize(mapped, _remove, name, os.getpid())
    return mapped


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker inherits the caller's arrays; the files stay the caller's
        Path(path).unlink(missing_ok=True)


def handoff_folder(nbytes: int = 0) -> Path:
    """This process's folder for an array of ``nbytes``: in ``/dev/shm`` while it has twice that free (and at
    least 1 GiB: a container's default 64 MB ``/dev/shm`` is never used), else in the temporary directory.
    Created on first use and removed when the process exits; folders left there by processes that no longer
    run (killed before their exit handlers) are removed then too."""
    root = SHM if _has_room(SHM, 2 * nbytes) else Path(tempfile.gettempdir())
    with _lock:
        folder = _folders.get(root)
        if folder is None or not folder.is_dir():
            _remove_orphans(root)
            folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
            atexit.register(_remove_folder, folder, os.getpid())
            _folders[root] = folder
        return folder


def _has_room(root: Path, nbytes: int) -> bool:
    try:
        stats = os.statvfs(root)
    except OSError:
        return False
    return os.access(root, os.W_OK) and stats.f_bavail * stats.f_frsize >= max(nbytes, 1 << 30)


def _remove_folder(folder: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_orphans(root: Path) -> None:
    """Remove handoff folders of processes that are gone (a killed app never ran its exit handlers)."""
    for folder in root.glob(f"{PREFIX}*"):
        pid = folder.name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
