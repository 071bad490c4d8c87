"""Which commit of every checkpoint a comparison reads, fixed before it starts (issue 16.2).

A comparison's settings name checkpoints by hub id and branch (the registry's ``main``); ``pin`` resolves each
hub repo its selected columns read to a commit and writes it into ``Settings.revisions``, unless the
settings already pin it (a run card's replay). The GPU part loads exactly those commits; the run card records
them in its settings, so replaying a card reads the same weights even after the branch has moved.

A branch resolves once per process (``model_zoo.resolve_commit``): a server keeps answering with the commit it
loaded first, the one ``app.py`` places on the GPU at start-up, until it restarts. A repo that cannot be
resolved (offline and not cached, say) stays unpinned: its column's loader then says why in one sentence.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import model_zoo
from model_zoo.loading import HUB_ERRORS
from pipeline import columns
from pipeline.settings import Settings


def hub_repos(settings: Settings) -> dict[str, str]:
    """{hub id: revision asked} of every checkpoint the selected columns read: the shared backbone's (when a
    column on it is selected), and each own-weights column's checkpoint and base model that are hub ids (a
    server's local directory has no commit)."""
    repos: dict[str, str] = {}
    spec = model_zoo.get_backbone_spec(settings.backbone)
    if spec.hub_id and any(columns.COLUMNS[m].own_variant is None for m in settings.methods):
        repos[spec.hub_id] = spec.revision
    for method in settings.methods:
        variant = columns.COLUMNS[method].own_variant
        if variant is None:
            continue
        options = settings.options_for(method)
        registry = model_zoo.get_variant(variant)
        for key in ("checkpoint", "base_vlm"):
            name = options.get(key)
            if name and not Path(str(name)).is_dir():
                repos.setdefault(str(name), registry.revision if name == registry.hub_id else "main")
    return repos


def pin(settings: Settings) -> Settings:
    """``settings`` with the commit of every checkpoint it reads in ``revisions`` (its own pins kept)."""
    pinned = dict(settings.revisions)
    for hub_id, revision in hub_repos(settings).items():
        if hub_id in pinned:
            continue
        try:
            pinned[hub_id] = model_zoo.resolve_commit(hub_id, revision)
        except (*HUB_ERRORS, ValueError):  # ValueError: not a valid repo id (huggingface_hub's validation)
            continue
    if pinned == dict(settings.revisions):
        return settings
    return dataclasses.replace(settings, revisions=pinned)
