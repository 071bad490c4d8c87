"""Least-recently-used caches bounded in bytes, for work shared across methods and follow-up questions.

Keys are tuples such as (video fingerprint, sampling settings, backbone). Values are CPU data only: a cache
never holds GPU memory past a request (on ZeroGPU the GPU is gone when the request ends).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch


def nbytes(value: Any) -> int:
    """Bytes held by tensors and arrays inside ``value`` (dataclasses, lists, tuples, dicts walked)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dict__"):
        return nbytes(vars(value))
    return 0


class ByteLRU:
    """A thread-safe LRU map whose total size (``nbytes`` of the values) stays at most ``max_bytes``.

    A value larger than the whole cache is not stored. ``on_evict(value)`` runs for every value pushed out.
    """

    def __init__(self, max_bytes: int, *, on_evict: Callable[[Any], None] | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._on_evict = on_evict
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = nbytes(value)
        evicted = []
        with self._lock:
            if key in self._items:
                self._size -= self._items.pop(key)[1]
            if size <= self.max_bytes:
                self._items[key] = (value, size)
                self._size += size
            while self._size > self.max_bytes:
                _, (old, old_size) = self._items.popitem(last=False)
                self._size -= old_size
                evicted.append(old)
        for old in evicted:
            if self._on_evict is not None:
                self._on_evict(old)

    def clear(self) -> None:
        with self._lock:
            values = [v for v, _ in self._items.values()]
            self._items.clear()
            self._size = 0
        for value in values:
            if self._on_evict is not None:
                self._on_evict(value)

    @property
    def size_bytes(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items
