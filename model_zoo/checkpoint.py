"""Checkpoint files read safely, for the author-released models loaded under their own key names.

Formats: ``model.safetensors`` (or ``model.safetensors.index.json`` and its shards), else ``pytorch_model.bin``
(or its index and shards). A ``.bin`` is read with ``torch.load(weights_only=True, mmap=True)``: only tensors
and plain containers are unpickled (any other pickled object is refused, never run) and the file is mapped,
not read into memory twice. Names and shapes are known before any tensor is copied (safetensors headers,
the mapped ``.bin``), so a caller can match them strictly and load nothing when they differ.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from model_zoo.loading import ModelLoadError

#: What a broken or hostile weight file raises when opened or unpickled.
FILE_ERRORS = (OSError, SafetensorError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)

#: (shard index, single file) of each format, in the order they are looked for.
FORMATS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


class CheckpointError(ModelLoadError):
    """A checkpoint's files cannot be read; the message is one sentence saying why."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, printable characters only, at most ``limit`` of them."""
    text = next((line for line in str(exc).splitlines() if line.strip()), "")
    return "".join(c for c in text if c.isprintable() and c != "\x1b").strip()[:limit]


def weight_files(directory: Path, error: type[ModelLoadError] = CheckpointError) -> list[Path]:
    """The checkpoint's weight files: safetensors first, else ``.bin``, single or sharded by an index."""
    for index, single in FORMATS:
        if (directory / index).exists():
            try:
                weight_map = json.loads((directory / index).read_text())["weight_map"]
                return [directory / name for name in sorted(set(weight_map.values()))]
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise error(
                    f"Cannot read the shard index {directory / index} ({type(exc).__name__}: {first_line(exc)})."
                ) from exc
        if (directory / single).exists():
            return [directory / single]
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise error(
        f"No model.safetensors or pytorch_model.bin (nor a shard index) in {directory}; found {found[:12]}."
    )


def read_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``.bin`` state dict, unpickled with ``weights_only=True`` and memory-mapped.

    Raises ``pickle.UnpicklingError`` for a file holding anything but tensors and plain containers, and
    ValueError when what it holds is not a flat {name: tensor} dict.
    """
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError("it is not a state dict of named tensors")
    return state


@dataclass
class WeightSource:
    """Tensor names and shapes of a checkpoint; safetensors are read when copied, ``.bin`` shards are mapped.

    ``error``: the class of the one-sentence error raised for a file that cannot be read, when opened or
    when copied (a shard truncated or changed after its header was read).
    """

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    held: dict[str, torch.Tensor] = field(default_factory=dict)
    error: type[ModelLoadError] = CheckpointError
    where: Path | None = None  # the checkpoint's folder, for the messages

    @classmethod
    def open(cls, directory: Path, error: type[ModelLoadError] = CheckpointError) -> WeightSource:
        """Every tensor's name and shape in ``directory``; ``error`` (one sentence) for unreadable files."""
        source = cls(error=error, where=directory)
        for path in weight_files(directory, error):
            try:
                source._add(path)
            except pickle.UnpicklingError as exc:
                raise error(
                    f"Cannot read the weight file {path}: it holds pickled objects besides tensors, which are "
                    "never loaded (torch.load with weights_only=True); use safetensors or a plain state dict."
                ) from exc
            except FILE_ERRORS as exc:
                raise error(
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
        for key, tensor in read_bin(path).items():
            self.shapes[key], self.held[key] = tuple(tensor.shape), tensor

    def copy_into(self, targets: dict[str, torch.Tensor]) -> None:
        """Copy every target's tensor from the checkpoint (names and shapes checked by the caller)."""
        try:
            self._copy(targets)
        except FILE_ERRORS as exc:
            raise self.error(
                f"Cannot read the weights in {self.where} ({type(exc).__name__}: {first_line(exc)})."
            ) from exc

    @torch.no_grad()
    def _copy(self, targets: dict[str, torch.Tensor]) -> None:
        by_file: dict[Path, list[str]] = {}
        for key, target in targets.items():
            if key in self.held:
                target.copy_(self.held[key])
            else:
                by_file.setdefault(self.files[key], []).append(key)
        for path, keys in by_file.items():
            device = str(targets[keys[0]].device)  # read straight to where the model lives
            with safe_open(str(path), framework="pt", device=device) as handle:
                for key in keys:
                    targets[key].copy_(handle.get_tensor(key))


def summarize_keys(keys: Iterable[str], *, limit: int = 12) -> str:
    """Keys grouped by their pattern (layer numbers as ``*``), at most ``limit`` patterns, e.g.
    ``model.layers.*.mlp.up_proj.weight (36 keys); model.norm.weight``."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        groups.setdefault(re.sub(r"\.\d+\.", ".*.", key), []).append(key)
    items = [names[0] if len(names) == 1 else f"{p} ({len(names)} keys)" for p, names in groups.items()]
    more = f" and {len(items) - limit} more patterns" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more
