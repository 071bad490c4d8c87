"""Checkpoint files of VideoChat-Flash and XComp, read safely and matched strictly against our modules.

Formats: ``model.safetensors`` (or ``model.safetensors.index.json`` and its shards), else ``pytorch_model.bin``
(or its index and shards) read with ``torch.load(weights_only=True)``, which refuses pickled code. Names and
shapes are checked before any tensor is copied; a mismatch is one sentence naming the missing and unexpected
keys (grouped by pattern), and nothing is loaded.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from model_zoo.checkpoint import summarize_keys
from model_zoo.loading import ModelLoadError

#: What a broken or hostile weight file raises when opened or unpickled (weights_only refuses code).
FILE_ERRORS = (OSError, SafetensorError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)

_FORMATS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


class VideoChatFlashLoadError(ModelLoadError):
    """VideoChat-Flash or XComp weights cannot be loaded; the message is one sentence saying why."""


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors first, else ``.bin``, single or sharded by an index."""
    for index, single in _FORMATS:
        if (directory / index).exists():
            try:
                weight_map = json.loads((directory / index).read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise VideoChatFlashLoadError(
                    f"Cannot read the shard index {directory / index} ({type(exc).__name__}: {first_line(exc)})."
                ) from exc
            return [directory / name for name in sorted(set(weight_map.values()))]
        if (directory / single).exists():
            return [directory / single]
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise VideoChatFlashLoadError(
        f"No model.safetensors or pytorch_model.bin (nor a shard index) in {directory}; found {found[:12]}."
    )


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, printable characters only, at most ``limit`` of them."""
    text = next((line for line in str(exc).splitlines() if line.strip()), "")
    return "".join(c for c in text if c.isprintable() and c != "\x1b").strip()[:limit]


@dataclass
class WeightSource:
    """Tensor names and shapes of a checkpoint; safetensors are read lazily, ``.bin`` shards are held."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    held: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def open(cls, directory: Path) -> WeightSource:
        source = cls()
        for path in weight_files(directory):
            try:
                source._add(path)
            except FILE_ERRORS as exc:
                raise VideoChatFlashLoadError(
                    f"Cannot read the weight file {path} ({type(exc).__name__}: {first_line(exc)})."
                ) from exc
        return source

    def _add(self, path: Path) -> None:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                    self.shapes[key] = tuple(handle.get_slice(key).get_shape())
                    self.files[key] = path
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("not a state dict of tensors")
        for key, tensor in state.items():
            self.shapes[key], self.held[key] = tuple(tensor.shape), tensor

    @torch.no_grad()
    def copy_into(self, targets: dict[str, torch.Tensor]) -> None:
        """Copy every target's tensor from the checkpoint (names and shapes already checked)."""
        by_file: dict[Path, list[str]] = {}
        for key in targets:
            if key in self.held:
                targets[key].copy_(self.held[key])
            else:
                by_file.setdefault(self.files[key], []).append(key)
        for path, keys in by_file.items():
            with safe_open(str(path), framework="pt") as handle:
                for key in keys:
                    targets[key].copy_(handle.get_tensor(key))


def check_names(where: str, what: str, found: Iterable[str], required: Iterable[str], optional=()) -> None:
    """One sentence naming the missing and unexpected keys, unless ``found`` matches ``required`` exactly."""
    found, required = set(found), set(required)
    missing, unexpected = required - found, found - required - set(optional)
    if not missing and not unexpected:
        return
    parts = [
        f"missing {summarize_keys(missing)}" if missing else "",
        f"unexpected {summarize_keys(unexpected)}" if unexpected else "",
    ]
    raise VideoChatFlashLoadError(
        f"The checkpoint at {where} does not use {what}'s key names ({len(missing)} missing, {len(unexpected)} "
        f"unexpected), so nothing was loaded: {'; '.join(p for p in parts if p)}."
    )


def check_shapes(where: str, shapes: dict[str, tuple[int, ...]], targets: dict[str, torch.Tensor]) -> None:
    """One sentence listing the tensors whose checkpoint shape differs from the modules built from the config."""
    wrong = [
        f"{k} {list(shapes[k])} vs {list(t.shape)}" for k, t in targets.items() if shapes[k] != tuple(t.shape)
    ]
    if wrong:
        more = f" and {len(wrong) - 6} more" if len(wrong) > 6 else ""
        raise VideoChatFlashLoadError(
            f"The checkpoint at {where} has {len(wrong)} tensors shaped unlike its config (checkpoint vs "
            f"model), so nothing was loaded: {', '.join(wrong[:6])}{more}."
        )


def load_strict(where: Path, what: str, targets: dict[str, torch.Tensor], optional=()) -> None:
    """Check names and shapes of the checkpoint in ``where`` against ``targets``, then copy every tensor."""
    source = WeightSource.open(where)
    check_names(str(where), what, source.shapes, targets, optional)
    check_shapes(str(where), source.shapes, targets)
    try:
        source.copy_into(targets)
    except FILE_ERRORS as exc:  # a shard truncated or changed after its header was read
        raise VideoChatFlashLoadError(
            f"Cannot read the weights in {where} ({type(exc).__name__}: {first_line(exc)})."
        ) from exc
