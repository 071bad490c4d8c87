"""Least-recently-used caches bounded in bytes, for work shared across methods and follow-up questions.

Six caches, one per kind of shared work, each keyed by what decides its value:

* ``PROBES``    file identity (path, device, inode, size, mtime) → content fingerprint, and
  ("content", fingerprint) → ``VideoInfo``: a follow-up on the same file re-reads nothing, the same video
  uploaded again (a new path: API clients send the file with every call) is hashed but not probed again;
* ``FRAMES``    (fingerprint, sampling settings) → the sampled, segmented frames (uint8, CPU);
* ``TOKENS``    (fingerprint, sampling settings, backbone, dtype) → the encoded visual tokens (CPU copy);
* ``RELEVANCE`` (fingerprint, sampling settings, backbone, dtype, question, prompt args, which groups) →
  Tempo's per-segment Yes/No logits (CPU float32), through :class:`CachedHooks`;
* ``COMPRESSIONS`` (the ``TOKENS`` key, method, its options, budget, seed) → the ``CompressionResult`` of a
  method whose compression does not depend on the question (``question_conditioned`` False: Espresso,
  uniform, pool), its tensors on the CPU; a follow-up question reuses it instead of compressing again;
* ``PREFIXES``  a prompt prefix's per-layer keys and values (``model_zoo.engine.PrefixKV``: the chat prefix
  and the visual tokens, everything before the question), through :class:`PrefixCache`: for a Tempo
  relevance prompt the ``RELEVANCE`` key without the question, for a question-independent method's answer
  its ``COMPRESSIONS`` key; a follow-up question then runs only its own tokens through the LLM.

Values are CPU data only: a cache never holds GPU memory past a request (on ZeroGPU the GPU is gone when the
request ends). Sizes are settings (:class:`CacheSettings`, :func:`configure_caches`), never environment
variables; a size of 0 turns a cache off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

MB = 1 << 20


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


def key_bytes(key: Any) -> int:
    """A key's own size: characters of its strings and bytes, 8 per other atom (for caches of small values)."""
    if isinstance(key, (str, bytes)):
        return len(key)
    if isinstance(key, (tuple, list, frozenset)):
        return sum(key_bytes(k) for k in key)
    return 8


class ByteLRU:
    """A thread-safe LRU map whose total size (``nbytes`` of the values) stays at most ``max_bytes``.

    A value larger than the whole cache is not stored. ``on_evict(value)`` runs for every value pushed out.
    ``max_items`` additionally bounds the number of entries (for values that hold almost no bytes);
    ``count_keys`` adds each key's :func:`key_bytes` to its entry's size (for values smaller than their keys).
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        on_evict: Callable[[Any], None] | None = None,
        max_items: int | None = None,
        count_keys: bool = False,
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.max_items = max_items
        self.count_keys = count_keys
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
        size = nbytes(value) + (key_bytes(key) if self.count_keys else 0)
        with self._lock:
            if key in self._items:
                self._size -= self._items.pop(key)[1]
            if size <= self.max_bytes and self.max_items != 0:
                self._items[key] = (value, size)
                self._size += size
            evicted = self._shrink()
        self._evicted(evicted)

    def resize(self, max_bytes: int, *, max_items: int | None = None) -> None:
        """New bounds; least recently used entries go until the cache fits them."""
        with self._lock:
            self.max_bytes, self.max_items = int(max_bytes), max_items
            evicted = self._shrink()
        self._evicted(evicted)

    def _shrink(self) -> list[Any]:
        """Pop least recently used entries until within bounds (lock held); returns the values popped."""
        evicted = []
        too_many = lambda: self.max_items is not None and len(self._items) > self.max_items  # noqa: E731
        while self._items and (self._size > self.max_bytes or too_many()):
            _, (old, old_size) = self._items.popitem(last=False)
            self._size -= old_size
            evicted.append(old)
        return evicted

    def _evicted(self, values: list[Any]) -> None:
        if self._on_evict is not None:
            for value in values:
                self._on_evict(value)

    def clear(self) -> None:
        with self._lock:
            values = [v for v, _ in self._items.values()]
            self._items.clear()
            self._size = 0
        self._evicted(values)

    def reset_counters(self) -> None:
        with self._lock:
            self.hits = self.misses = 0

    def stats(self) -> dict:
        """Entries, bytes held, the bound, hits and misses (for benchmarks and logs)."""
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": self._size,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }

    @property
    def size_bytes(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items


# --- the pipeline's caches and their settings ---------------------------------------------------------------


class CacheSettingsError(ValueError):
    """A cache size that is negative or not a number (the message names it)."""


@dataclass(frozen=True, kw_only=True)
class CacheSettings:
    """Bounds of the shared caches, in MB (2**20 bytes) of CPU memory; 0 turns a cache off.

    Defaults fit a CPU Space with 16 GB, or a GPU Space's host memory: 1024 frames sampled at 640 x 360 are
    about 0.7 GB of frames; their Qwen3-VL-2B tokens in bf16 (main + 3 DeepStack levels, ~135 tokens per
    group at that frame count) about 1.1 GB. Relevance scores are a few bytes per segment and question.
    """

    frames_mb: float = 2048
    tokens_mb: float = 2048
    relevance_mb: float = 16
    compressions_mb: float = 256  # compressed tokens of question-independent methods (at most the budget's)
    #: Prompt prefixes' keys/values: Qwen3-VL-2B in bf16 holds 112 KiB per token (28 layers x 2 x 8 KV
    #: heads x 128), so Tempo's prompts for those 1024 frames (~69k tokens) would need ~8 GB and only
    #: shorter videos keep them; three answers at a 4096-token budget are ~1.4 GB.
    prefixes_mb: float = 2048
    probes: int = 256  # videos whose probe and fingerprint are remembered (each a few hundred bytes)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise CacheSettingsError(f"cache size {f.name} must be a number >= 0, got {value!r}")


_SETTINGS = CacheSettings()
PROBES = ByteLRU(MB, max_items=_SETTINGS.probes, count_keys=True)
FRAMES = ByteLRU(int(_SETTINGS.frames_mb * MB))
TOKENS = ByteLRU(int(_SETTINGS.tokens_mb * MB))
RELEVANCE = ByteLRU(int(_SETTINGS.relevance_mb * MB), count_keys=True)
COMPRESSIONS = ByteLRU(int(_SETTINGS.compressions_mb * MB), count_keys=True)
PREFIXES = ByteLRU(int(_SETTINGS.prefixes_mb * MB), count_keys=True)
CACHES: dict[str, ByteLRU] = {
    "probes": PROBES,
    "frames": FRAMES,
    "tokens": TOKENS,
    "relevance": RELEVANCE,
    "compressions": COMPRESSIONS,
    "prefixes": PREFIXES,
}


def configure_caches(settings: CacheSettings | None = None, **sizes: float) -> CacheSettings:
    """Resize the shared caches (``configure_caches(frames_mb=512, tokens_mb=1024)``); returns what is in force.

    Sizes not given keep their current value (``settings`` replaces them all first). Shrinking evicts the
    least recently used entries at once. The app and the CLI call this at start-up.
    """
    global _SETTINGS
    unknown = sorted(set(sizes) - {f.name for f in dataclasses.fields(CacheSettings)})
    if unknown:
        valid = ", ".join(f.name for f in dataclasses.fields(CacheSettings))
        raise CacheSettingsError(f"unknown cache setting {', '.join(unknown)}; valid: {valid}")
    new = dataclasses.replace(settings or _SETTINGS, **sizes)
    PROBES.resize(MB if new.probes else 0, max_items=int(new.probes))
    FRAMES.resize(int(new.frames_mb * MB))
    TOKENS.resize(int(new.tokens_mb * MB))
    RELEVANCE.resize(int(new.relevance_mb * MB))
    COMPRESSIONS.resize(int(new.compressions_mb * MB))
    PREFIXES.resize(int(new.prefixes_mb * MB))
    _SETTINGS = new
    return new


def cache_settings() -> CacheSettings:
    """The bounds in force."""
    return _SETTINGS


def clear_caches() -> None:
    """Empty every shared cache and reset its hit and miss counters."""
    for cache in CACHES.values():
        cache.clear()
        cache.reset_counters()


def cache_stats() -> dict[str, dict]:
    """Per cache: entries, bytes, bound, hits, misses."""
    return {name: cache.stats() for name, cache in CACHES.items()}


def file_identity(path: str | os.PathLike) -> tuple:
    """What tells a file apart without reading it: real path, device, inode, size, modification time (ns).

    A file rewritten in place gets a new mtime, so its probe is not reused; the content fingerprint (not this)
    keys every cache of decoded or encoded data.
    """
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# --- prompt prefixes -------------------------------------------------------------------------------------


class PrefixCache:
    """``PREFIXES`` as the backbone's ``PrefixStore``: an entry holds the ``PrefixKV``'s tensors on the CPU
    (never GPU memory past a request; on a CPU backbone the computed tensors themselves, which nothing writes
    in place); the backbone moves what it gets to its device. The engine checks only that a prefix has the
    prompt's length: keys must carry everything that decides a prefix (``CachedHooks``,
    ``pipeline.shared.Compressed``)."""

    def __init__(self, cache: ByteLRU = PREFIXES) -> None:
        self._cache = cache

    def get(self, key: Hashable):
        return self._cache.get(key)

    def put(self, key: Hashable, value) -> None:
        if self._cache.max_bytes > 0:  # a cache turned off costs no copy
            self._cache.put(key, value.to("cpu"))


# --- Tempo's relevance scores, cached at the backbone-hooks seam ---------------------------------------------


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _group_of(tensor: torch.Tensor, whole: torch.Tensor) -> int | None:
    """``g`` when ``tensor`` is exactly the view ``whole[g]``, else None (O(1): storage, offset, strides)."""
    if (
        tensor.shape != whole.shape[1:]
        or tensor.dtype != whole.dtype
        or tensor.device != whole.device
        or tensor.stride() != whole.stride()[1:]
        or tensor.untyped_storage().data_ptr() != whole.untyped_storage().data_ptr()
    ):
        return None
    g, rest = divmod(tensor.storage_offset() - whole.storage_offset(), whole.stride(0))
    return g if rest == 0 and 0 <= g < whole.shape[0] else None


def _segment_key(segment, video) -> tuple | None:
    """A prompt segment as (text, origin, digest of its positions), else None (not cacheable). The origin
    is the group g when the segment is one whole encoded group of ``video`` (embeds and every DeepStack
    level views of that group), else the segment's declared ``source`` (``VisualSegment.source``)."""
    g = _group_of(segment.embeds, video.embeds)
    whole = (
        g is not None
        and len(segment.deepstack) == len(video.deepstack)
        and all(_group_of(s, v) == g for s, v in zip(segment.deepstack, video.deepstack, strict=True))
    )
    origin = g if whole else getattr(segment, "source", None)
    if origin is None:
        return None
    positions = segment.positions.detach().cpu().contiguous().numpy().tobytes()
    return (segment.text, origin, hashlib.blake2b(positions, digest_size=8).hexdigest())


class _FoundCounter:
    """A ``PrefixStore`` passing through to another, counting the prefixes found in it."""

    def __init__(self, store) -> None:
        self.store, self.found = store, 0

    def get(self, key: Hashable):
        value = self.store.get(key)
        self.found += value is not None
        return value

    def put(self, key: Hashable, value) -> None:
        self.store.put(key, value)


class CachedHooks:
    """The backbone's hooks (``compressors.base.BackboneHooks``) answered from the caches where they can be.

    Relevance. Tempo (``compressors.tempo.relevance``) asks the backbone for the Yes/No logits of every
    segment, batched; those depend on the video, its sampling, the backbone, the question and the prompt,
    not on the budget, so a re-run with another budget or method set reuses them from :data:`RELEVANCE`. A
    call is cached when every segment of every prompt has a key (``_segment_key``: one whole group of this
    request's encoded ``video``, how Tempo builds its prompts); the key is ``video_key`` + question + system
    + user text + words + the segment keys in batch order, and the value the [B, len(words)] float32 CPU
    tensor the backbone returned (so cached values are bit for bit the computed ones).

    Prompt prefixes. Everything before the question (system prompt, segments) does not depend on it: with
    ``prefixes``, each relevance prompt's prefix is kept under ``video_key`` + system + its segment keys,
    and each QC-Comp chunk's (XComp's ``window_scores``) under ``video_key`` + the layers + the keep rule +
    its segment keys (ToMe'd groups, keyed by their ``source``), so a new question about the same video runs
    only its own tokens. Segments without a key are computed and not kept. ``computed``, when given, receives
    ``("relevance", key, value)`` for every score entry this object puts (``pipeline.events.Computed``).
    """

    def __init__(
        self,
        backbone,
        video,
        *,
        video_key: tuple,
        question: str,
        cache: ByteLRU = RELEVANCE,
        prefixes: PrefixCache | None = None,
        computed: list | None = None,
    ):
        self._backbone, self._video, self._cache = backbone, video, cache
        self._video_key = video_key
        self._prefixes = None if prefixes is None else _FoundCounter(prefixes)
        self._computed = computed  # ("relevance", key, value) appended for every entry put
        self._key = (*video_key, question)
        self.computed = 0  # calls that reached the backbone
        self.reused = 0  # calls answered from the cache

    def __getattr__(self, name: str):
        return getattr(self._backbone, name)

    @property
    def num_layers(self) -> int:
        return self._backbone.num_layers

    def reuse_counts(self) -> tuple[int, int]:
        """(relevance calls answered from the cache, prompt prefixes found in the store) so far."""
        return self.reused, 0 if self._prefixes is None else self._prefixes.found

    def window_scores(self, segments, question, *, windows, layers, keep=None) -> list[torch.Tensor]:
        if self._prefixes is None:
            return self._backbone.window_scores(segments, question, windows=windows, layers=layers, keep=keep)
        groups = self._prompt_groups(segments)
        # A keep rule decides the prefix: only one that is a value (a frozen dataclass, XComp's LPComp) can
        # be part of a key; any other (a lambda) would be keyed by an id that a later one may reuse.
        valued = keep is None or (dataclasses.is_dataclass(keep) and _hashable(keep))
        key = None
        if groups is not None and valued:
            key = (*self._video_key, "scoring prefix", tuple(map(int, layers)), keep, groups)
        return self._backbone.window_scores(
            segments,
            question,
            windows=windows,
            layers=layers,
            keep=keep,
            prefixes=self._prefixes,
            prefix_key=key,
        )

    def next_token_logits(
        self, prompts: Sequence[Sequence[Any]], *, system: str, user_text: str, words: Sequence[str]
    ) -> torch.Tensor:
        groups = [self._prompt_groups(prompt) for prompt in prompts]
        key = None if None in groups else (*self._key, system, user_text, tuple(words), tuple(groups))
        cached = None if key is None else self._cache.get(key)
        if cached is not None:
            self.reused += 1
            return cached.clone()
        reuse = {}
        if self._prefixes is not None:
            keys = [None if g is None else (*self._video_key, "prompt prefix", system, g) for g in groups]
            reuse = {"prefixes": self._prefixes, "prefix_keys": keys}
        logits = self._backbone.next_token_logits(
            prompts, system=system, user_text=user_text, words=words, **reuse
        )
        self.computed += 1
        if key is not None:
            kept = logits.detach().to("cpu", copy=True)
            self._cache.put(key, kept)
            if self._computed is not None:
                self._computed.append(("relevance", key, kept))
        return logits

    def _prompt_groups(self, prompt: Sequence[Any]) -> tuple | None:
        """The prompt as its segments' keys (``_segment_key``), or None when one is not a whole group."""
        keys = tuple(_segment_key(segment, self._video) for segment in prompt)
        return None if not keys or None in keys else keys
