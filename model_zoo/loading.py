"""Loading backbones: lazily on first use, cached, at most ``max_resident`` at a time (least recently used
goes first, and its GPU memory is given back).

Real checkpoints load by hub id through transformers' own classes (no remote code):
``AutoModelForImageTextToText`` (a ``Qwen3VLForConditionalGeneration``), ``AutoTokenizer``, and the
checkpoint's ``video_preprocessor_config.json`` for resizing and normalisation (its own
``AutoVideoProcessor`` prepares the frames where torchvision works, our port elsewhere); bf16 on CUDA, fp32 on CPU,
sdpa attention. The revision asked for (the registry's, or a run card's commit) is first resolved to its
commit (``resolve_commit``) and every file is read at that commit, so a branch that moves during a load
cannot mix two versions; the loaded backbone's ``spec.revision`` is that commit, which the run card records.
The weights go straight onto their device through accelerate (``device_map``): never built on the CPU and
moved, so the host holds no second copy and a cold start is shorter. Nothing here touches CUDA at import
time (ZeroGPU: ``app.py`` imports ``spaces`` first and places models at module level). When the files
cannot be fetched (offline, no cache, gated), the error is one sentence that names the offline
``tiny-random`` backbone.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RemoteEntryNotFoundError

from model_zoo.preprocess import VideoPreprocessConfig, torchvision_available
from model_zoo.qwen3_vl import Qwen3VLBackbone
from model_zoo.tiny import TINY_PREPROCESS, build_tiny
from model_zoo.variants import TINY, BackboneSpec, get_backbone_spec, list_backbones

#: What the hub raises when files cannot be had: offline mode, missing cache, network, gated or missing repo
#: or revision (all OSError subclasses in huggingface_hub 1.x/2.x, plus EntryNotFoundError).
HUB_ERRORS = (OSError, EntryNotFoundError)

#: A full git commit id, as the Hub names snapshots (``models--org--name/snapshots/<commit>``).
COMMIT = re.compile(r"[0-9a-f]{40}")


class ModelLoadError(RuntimeError):
    """A backbone could not be loaded; the message is one sentence saying why and what to use instead."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as given, else CUDA when available, else CPU (asked at load time, never at import)."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def dtype_for(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (the checkpoints' own precision), fp32 on CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create floating tensors in ``dtype`` inside the block (restores the previous default)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def tiny_backbone(spec: BackboneSpec, device: torch.device) -> Qwen3VLBackbone:
    """The offline random backbone; a private copy when it must move off the shared CPU instance."""
    model, tokenizer = build_tiny(0)
    if device.type != "cpu":
        model = copy.deepcopy(model).to(device=device, dtype=dtype_for(device))
    return Qwen3VLBackbone(spec, model, tokenizer, preprocess=TINY_PREPROCESS)


@functools.lru_cache(maxsize=256)
def resolve_commit(hub_id: str, revision: str) -> str:
    """The commit ``revision`` (a branch, tag or commit of ``hub_id``) names: a commit as given, else the
    Hub's answer (one small file fetched), or offline the cache's ``refs/<revision>``, as huggingface_hub
    resolves it. Once per process: a server keeps the commit it resolved first (the one it loaded) until it
    restarts (``resolve_commit.cache_clear()`` forgets). Raises what the hub raises when neither can say
    (``HUB_ERRORS``)."""
    if COMMIT.fullmatch(revision):
        return revision
    return Path(snapshot_download(hub_id, revision=revision, allow_patterns=["config.json"])).name


def fetch_preprocess_config(spec: BackboneSpec) -> VideoPreprocessConfig:
    """The checkpoint's video preprocessing numbers; the library defaults if it ships no video config."""
    try:
        path = hf_hub_download(spec.hub_id, "video_preprocessor_config.json", revision=spec.revision)
    except RemoteEntryNotFoundError:
        return VideoPreprocessConfig()
    return VideoPreprocessConfig.from_json(path)


def library_video_processor(spec: BackboneSpec):
    """The checkpoint's own video processor (``AutoVideoProcessor``) where torchvision works here (on a Space),
    else None: our port (``model_zoo.preprocess.preprocess_video``) prepares the frames then."""
    if not torchvision_available():
        return None
    # transformers' top-level AutoVideoProcessor is a placeholder that raises without torchvision
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    return AutoVideoProcessor.from_pretrained(spec.hub_id, revision=spec.revision)


def ensure_chat_template(tokenizer, spec: BackboneSpec) -> None:
    """Qwen3-VL keeps its chat template beside the processor; give it to the tokenizer when it lacks one."""
    if tokenizer.chat_template:
        return
    try:
        path = hf_hub_download(spec.hub_id, "chat_template.json", revision=spec.revision)
        tokenizer.chat_template = json.loads(Path(path).read_text())["chat_template"]
    except RemoteEntryNotFoundError:
        path = hf_hub_download(spec.hub_id, "chat_template.jinja", revision=spec.revision)
        tokenizer.chat_template = Path(path).read_text()


def hub_backbone(spec: BackboneSpec, device: torch.device, revision: str | None = None) -> Qwen3VLBackbone:
    """Load a real checkpoint by hub id at ``revision`` (default: the registry's), every file at the commit
    it resolves to, the weights straight onto ``device``; ModelLoadError when its files cannot be fetched."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen3VLForConditionalGeneration

    asked = revision or spec.revision
    try:
        spec = dataclasses.replace(spec, revision=resolve_commit(spec.hub_id, asked))
        preprocess = fetch_preprocess_config(spec)
        video_processor = library_video_processor(spec)
        tokenizer = AutoTokenizer.from_pretrained(spec.hub_id, revision=spec.revision)
        ensure_chat_template(tokenizer, spec)
        model = AutoModelForImageTextToText.from_pretrained(
            spec.hub_id,
            revision=spec.revision,
            dtype=dtype_for(device),
            attn_implementation="sdpa",
            device_map={"": device},  # accelerate places each tensor on the device as it is read
        )
    except HUB_ERRORS as exc:
        raise ModelLoadError(
            f"Cannot load backbone {spec.name!r} ({spec.hub_id} at revision {asked}) because its files "
            f"could not be fetched ({type(exc).__name__}); use the offline {TINY!r} backbone instead."
        ) from exc
    if not isinstance(model, Qwen3VLForConditionalGeneration):
        raise ModelLoadError(
            f"{spec.hub_id} loaded as {type(model).__name__}, not Qwen3VLForConditionalGeneration."
        )
    return Qwen3VLBackbone(
        spec, model.eval(), tokenizer, preprocess=preprocess, video_processor=video_processor
    )


def build_backbone(spec: BackboneSpec, device: torch.device, revision: str | None = None) -> Qwen3VLBackbone:
    """Load ``spec`` on ``device`` at ``revision`` (default: the registry's; no caching: see ``load_backbone``)."""
    if spec.family != "qwen3_vl":
        raise ModelLoadError(
            f"backbone {spec.name!r} has family {spec.family!r}; the only adapter is 'qwen3_vl'."
        )
    return tiny_backbone(spec, device) if spec.hub_id is None else hub_backbone(spec, device, revision)


class BackboneCache:
    """Loaded backbones by (name, device, revision asked), least recently used first; at most
    ``max_resident`` of them. A backbone asked for at a commit is found under the branch it was loaded by
    too (its ``spec.revision`` is the commit it resolved to).

    Evicting drops the cache's reference, runs the garbage collector and empties CUDA's cache, so the GPU
    memory comes back as long as no caller still holds the evicted backbone. Thread-safe (Gradio handlers
    run in threads).
    """

    def __init__(self, *, max_resident: int = 1) -> None:
        self.max_resident = max_resident
        self._resident: OrderedDict[tuple[str, str, str], Qwen3VLBackbone] = OrderedDict()
        self._lock = threading.RLock()

    def get(
        self, name: str, *, device: str | torch.device | None = None, revision: str | None = None
    ) -> Qwen3VLBackbone:
        spec = get_backbone_spec(name)
        where = resolve_device(device)
        asked = revision or spec.revision
        with self._lock:
            key = self._find(name, str(where), asked)
            if key is not None:
                self._resident.move_to_end(key)
                return self._resident[key]
            if _SERVED is not None:
                raise ModelLoadError(
                    f"This server answers only with the backbones it placed at start-up "
                    f"({', '.join(_SERVED)}), so it does not load {name!r} at {asked} now."
                )
            # Make room first, so that the new weights never sit beside more than max_resident - 1 others.
            self.shrink(self.max_resident - 1)
            backbone = build_backbone(spec, where, revision)
            self._resident[(name, str(where), asked)] = backbone
            return backbone

    def _find(self, name: str, device: str, asked: str) -> tuple[str, str, str] | None:
        for key, backbone in self._resident.items():
            if key[:2] == (name, device) and asked in (key[2], backbone.spec.revision):
                return key
        return None

    def resident(self) -> list[tuple[str, str]]:
        """(name, device) of the loaded backbones, least recently used first."""
        with self._lock:
            return [key[:2] for key in self._resident]

    def shrink(self, size: int | None = None) -> None:
        """Evict least recently used backbones until at most ``size`` (default ``max_resident``) remain."""
        limit = self.max_resident if size is None else size
        with self._lock:
            while len(self._resident) > max(limit, 0):
                _, backbone = self._resident.popitem(last=False)
                self._free(backbone)

    @staticmethod
    def _free(backbone: Qwen3VLBackbone) -> None:
        on_gpu = backbone.model is not None and backbone.device.type == "cuda"
        backbone.release()
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()


_CACHE = BackboneCache(max_resident=1)

#: The backbones this process serves, by name, with the commit each was placed at (``place_backbones``);
#: None: every registered backbone, loaded on first use.
_SERVED: dict[str, str] | None = None


def load_backbone(
    name: str, *, device: str | torch.device | None = None, revision: str | None = None
) -> Qwen3VLBackbone:
    """The backbone called ``name`` (see ``list_backbones()``), loaded on first use and cached.

    ``device`` defaults to CUDA when available, else CPU. ``revision`` (a branch, tag or commit of its hub
    repo) defaults to the registry's; ``backbone.spec.revision`` is the commit it resolved to. At most ``max_resident`` backbones stay loaded
    (``set_max_resident``; default 1). Raises ModelLoadError when the weights cannot be fetched and
    UnknownNameError (listing the valid names) for an unknown name.
    """
    return _CACHE.get(name, device=device, revision=revision)


def set_max_resident(count: int) -> None:
    """How many backbones may stay loaded at once (at least 1, and never fewer than ``place_backbones``
    placed: those are never evicted); evicts at once if more are loaded."""
    if count < 1:
        raise ValueError(f"max_resident must be >= 1, got {count}")
    _CACHE.max_resident = max(count, len(_SERVED or ()))
    _CACHE.shrink()


def resident_backbones() -> list[tuple[str, str]]:
    """(name, device) of the loaded backbones, least recently used first."""
    return _CACHE.resident()


def unload_all() -> None:
    """Evict every loaded backbone."""
    _CACHE.shrink(0)


def place_backbones(names: Sequence[str], *, device: str | torch.device | None = None) -> None:
    """Load ``names`` now and answer only with them from here on: ZeroGPU's rule (models placed at start-up,
    outside any GPU call; a GPU call then never loads weights). Room is made for all of them at once; each
    stays at the commit it resolved to now. Asking for another backbone, or another commit, is then a
    ``ModelLoadError`` here and a ``SettingsError`` in ``pipeline.settings`` before any work."""
    global _SERVED
    _SERVED = None  # placing anew: every registered backbone may load meanwhile
    set_max_resident(max(_CACHE.max_resident, len(names)))
    _SERVED = {name: load_backbone(name, device=device).spec.revision for name in names}


def served_backbones() -> dict[str, str | None]:
    """{name: commit} of the backbones this process answers with: those placed at start-up, else every
    registered one (commit None: resolved when it loads)."""
    return dict(_SERVED) if _SERVED is not None else dict.fromkeys(list_backbones())


def serve_all() -> None:
    """Answer with every registered backbone again, each loaded on first use (undoes ``place_backbones``)."""
    global _SERVED
    _SERVED = None
