"""Reproducible revisions (issue 16.2): a run card records the commit every checkpoint was read at, and a
replay reads that commit even after the branch moved. Offline, from a Hub cache laid out as huggingface_hub
lays it out (``tests/hubcache.py``)."""

from __future__ import annotations

import dataclasses

import pytest

import model_zoo
from model_zoo import loading
from pipeline import revisions, runcard
from pipeline.bounds import SettingsError
from pipeline.compare import compare
from pipeline.events import Finished
from pipeline.request import Request
from pipeline.settings import Settings
from tests import hubcache
from tests.videos import make_clip

REPO = "org/tiny-vl"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
QUESTION = "What happens in the video?"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """``qwen3vl-2b`` served by a fake Hub cache: commits A (seed 0) and B (seed 1), main at B."""
    cache = tmp_path / "hub"
    hubcache.write_tiny_snapshot(cache, REPO, COMMIT_A, seed=0)
    hubcache.write_tiny_snapshot(cache, REPO, COMMIT_B, seed=1)
    hubcache.point(cache, REPO, COMMIT_B)
    hubcache.use_cache(monkeypatch, cache)
    spec = dataclasses.replace(model_zoo.get_backbone_spec("qwen3vl-2b"), hub_id=REPO, revision="main")
    monkeypatch.setitem(model_zoo.backbones, "qwen3vl-2b", spec)
    monkeypatch.setattr(loading, "_CACHE", loading.BackboneCache(max_resident=1))
    loading.resolve_commit.cache_clear()
    yield cache
    loading.resolve_commit.cache_clear()


def settings(**overrides) -> Settings:
    values = dict(methods=("uniform", "pool"), budget=64, max_frames=8, max_side=96, max_new_tokens=3)
    return Settings(backbone="qwen3vl-2b", **(values | overrides))


def finished(events) -> Finished:
    return [e for e in events if isinstance(e, Finished)][-1]


def test_the_card_records_the_commit_and_a_replay_reads_it_after_the_branch_moved(hub, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=2, fps=4)
    asked = settings()
    card = runcard.build(finished(compare(Request(clip, QUESTION, asked))), QUESTION, asked)
    assert card["settings"]["revisions"] == {REPO: COMMIT_B}
    assert card["backbone"]["commit"] == COMMIT_B
    assert loading._CACHE.get("qwen3vl-2b", device="cpu").spec.revision == COMMIT_B

    hubcache.point(hub, REPO, COMMIT_A)  # the branch moves on the Hub; a new process resolves it anew
    loading.resolve_commit.cache_clear()
    loading.unload_all()
    loading._CACHE.shrink(0)

    again = runcard.load(runcard.dumps(card))
    replayed = finished(runcard.replay(again, video=clip))
    assert replayed.settings.revisions == {REPO: COMMIT_B}
    assert [b.spec.revision for b in loading._CACHE._resident.values()] == [COMMIT_B]
    assert runcard.diff(card, runcard.build(replayed, QUESTION, runcard.settings_of(again))) == []

    fresh = finished(compare(Request(clip, QUESTION, settings())))  # unpinned: today's main
    assert fresh.settings.revisions == {REPO: COMMIT_A}


def test_pin_resolves_only_what_the_selected_columns_read(hub):
    assert revisions.pin(settings()).revisions == {REPO: COMMIT_B}
    kept = settings(revisions={REPO: COMMIT_A})
    assert revisions.pin(kept) is kept
    assert revisions.pin(Settings(backbone=model_zoo.TINY)).revisions == {}


@pytest.mark.parametrize(
    "pins",
    [
        {REPO: "main"},
        {REPO: "A" * 40},
        {"not a repo": COMMIT_A},
        {f"o/r{i}": COMMIT_A for i in range(9)},
        ["x"],
    ],
)
def test_a_pin_is_a_full_commit_of_a_repo_id_or_one_sentence(pins):
    with pytest.raises(SettingsError) as info:
        Settings(revisions=pins)
    assert str(info.value).endswith(".") and str(info.value).count(". ") == 0
