"""Checkpoint files of VideoChat-Flash and XComp, read safely and matched strictly against our modules.

Formats and safe reading as ``model_zoo.checkpoint`` (shared with Tempo-6B): safetensors, else
``pytorch_model.bin`` read with ``torch.load(weights_only=True)``, which refuses pickled code. Names and
shapes are checked before any tensor is copied; a mismatch is one sentence naming the missing and unexpected
keys (grouped by pattern), and nothing is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from model_zoo.checkpoint import WeightSource, summarize_keys
from model_zoo.loading import ModelLoadError


class VideoChatFlashLoadError(ModelLoadError):
    """VideoChat-Flash or XComp weights cannot be loaded; the message is one sentence saying why."""


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
    source = WeightSource.open(where, VideoChatFlashLoadError)
    check_names(str(where), what, source.shapes, targets, optional)
    check_shapes(str(where), source.shapes, targets)
    source.copy_into(targets)
