"""The Space's ZeroGPU rules (issue 16.1): a supported Python, the default checkpoint preloaded at build time,
and only backbones placed at start-up offered, so a GPU call never loads backbone weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import model_zoo
from model_zoo import loading
from pipeline.bounds import SettingsError
from pipeline.settings import Settings
from tests import hubcache
from tests.hostile import is_one_sentence

README = Path(__file__).resolve().parents[1] / "README.md"

#: The Python versions ZeroGPU supports (huggingface/hub-docs, docs/hub/spaces-zerogpu.md, "Supported
#: Versions", as of 2026-08).
ZEROGPU_PYTHONS = {"3.12.12", "3.10.13"}


def front_matter() -> dict:
    text = README.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_front_matter_asks_for_a_python_zerogpu_supports():
    assert front_matter()["python_version"] in ZEROGPU_PYTHONS


def test_the_default_checkpoint_is_preloaded_at_build_time_at_the_registry_revision():
    spec = model_zoo.get_backbone_spec(model_zoo.GPU_DEFAULT)
    entries = [entry.split() for entry in front_matter()["preload_from_hub"]]
    mine = [parts for parts in entries if parts[0] == spec.hub_id]
    assert mine, f"{spec.hub_id} is not in preload_from_hub"
    # "<repo>" preloads the branch the registry follows; "<repo> <files> <commit>" must be the registry's pin
    assert all(len(parts) == 1 and spec.revision == "main" or parts[-1] == spec.revision for parts in mine)
    assert {parts[0] for parts in entries} <= set(front_matter()["models"])


@pytest.fixture
def placed(tmp_path, monkeypatch):
    """``qwen3vl-2b`` from a fake Hub cache (main at commit B), placed as app.py places it on ZeroGPU."""
    cache = tmp_path / "hub"
    hubcache.write_tiny_snapshot(cache, "org/tiny-vl", "a" * 40, seed=0)
    hubcache.write_tiny_snapshot(cache, "org/tiny-vl", "b" * 40, seed=1)
    hubcache.point(cache, "org/tiny-vl", "b" * 40)
    hubcache.use_cache(monkeypatch, cache)
    spec = dataclasses.replace(
        model_zoo.get_backbone_spec("qwen3vl-2b"), hub_id="org/tiny-vl", revision="main"
    )
    monkeypatch.setitem(model_zoo.backbones, "qwen3vl-2b", spec)
    monkeypatch.setattr(loading, "_CACHE", loading.BackboneCache(max_resident=1))
    loading.resolve_commit.cache_clear()
    model_zoo.place_backbones(["qwen3vl-2b"], device="cpu")
    yield
    model_zoo.serve_all()
    loading.resolve_commit.cache_clear()


def test_only_the_placed_backbones_are_offered_and_nothing_else_loads(placed):
    from ui.page import backbone_choices

    assert model_zoo.served_backbones() == {"qwen3vl-2b": "b" * 40}
    assert [value for _, value in backbone_choices()] == ["qwen3vl-2b"]
    assert Settings(backbone="qwen3vl-2b").backbone == "qwen3vl-2b"
    for other in ("qwen3vl-8b", model_zoo.TINY):
        with pytest.raises(SettingsError) as info:
            Settings(backbone=other)
        assert is_one_sentence(str(info.value)) and "qwen3vl-2b" in str(info.value)
        with pytest.raises(model_zoo.ModelLoadError):  # and should anything ask the loader anyway
            model_zoo.load_backbone(other, device="cpu")
    assert model_zoo.load_backbone("qwen3vl-2b", device="cpu").spec.revision == "b" * 40


def test_the_servers_limit_on_loaded_backbones_never_evicts_a_placed_one(placed):
    """app.py places the backbones, then launch() applies --max-backbones: the placed ones stay."""
    model_zoo.place_backbones([model_zoo.TINY, "qwen3vl-2b"], device="cpu")
    model_zoo.set_max_resident(1)
    assert sorted(name for name, _ in model_zoo.resident_backbones()) == ["qwen3vl-2b", model_zoo.TINY]
    assert list(model_zoo.served_backbones()) == [model_zoo.TINY, "qwen3vl-2b"]


def test_a_card_pinned_to_another_commit_is_refused_before_any_work(placed):
    Settings(backbone="qwen3vl-2b", revisions={"org/tiny-vl": "b" * 40})
    with pytest.raises(SettingsError) as info:
        Settings(backbone="qwen3vl-2b", revisions={"org/tiny-vl": "a" * 40})
    assert is_one_sentence(str(info.value)) and "replay" in str(info.value)
    with pytest.raises(model_zoo.ModelLoadError):
        model_zoo.load_backbone("qwen3vl-2b", device="cpu", revision="a" * 40)


def test_without_placing_every_registered_backbone_is_offered():
    assert list(model_zoo.served_backbones()) == model_zoo.list_backbones()


def test_an_authors_column_asks_for_loading_its_model_only_when_it_is_not_held(monkeypatch):
    from types import SimpleNamespace

    from pipeline import official
    from pipeline.authors import LOAD_SECONDS, PINNED_WEIGHTS, Resident
    from pipeline.request import Job

    resident = Resident(lambda *weights: object())
    monkeypatch.setattr(official.RUNNER, "model", resident)
    settings = Settings(methods=("tempo-6b.official",))
    job = Job(SimpleNamespace(info=SimpleNamespace(duration=10.0)), "q", settings)
    cold = official.RUNNER.gpu_seconds(job, ["tempo-6b.official"])
    resident(*(settings.options_for("tempo-6b.official")[k] for k in PINNED_WEIGHTS))
    assert cold - official.RUNNER.gpu_seconds(job, ["tempo-6b.official"]) == pytest.approx(LOAD_SECONDS)
