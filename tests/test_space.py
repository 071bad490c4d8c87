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


# --- the columns with the authors' own weights ------------------------------------------------------------


@pytest.fixture
def own_weights(monkeypatch):
    """Each own-weights column's runner holding a stand-in ``Resident`` that records the keys it loads:
    {column: [keys]} (the real residents, never fixed, come back after the test)."""
    from pipeline import authors
    from pipeline.columns import COLUMNS

    loads = {name: [] for name, column in COLUMNS.items() if column.own_variant}
    for name in loads:
        loader = lambda *key, name=name: loads[name].append(key) or object()  # noqa: E731
        monkeypatch.setattr(COLUMNS[name].runner, "model", authors.Resident(loader, name))
    return loads


def test_on_zerogpu_only_the_placed_authors_columns_load_and_only_at_start_up(own_weights):
    from pipeline import authors
    from pipeline.columns import COLUMNS
    from pipeline.revisions import pin

    authors.place_columns(["tempo-6b.official"])
    assert [len(keys) for keys in own_weights.values()] == [1, 0, 0], "the named column alone, loaded now"
    assert authors.servable("tempo-6b.official")
    assert not authors.servable("xcomp-2b.official") and not authors.servable("videochat-flash-2b.official")
    tempo = COLUMNS["tempo-6b.official"].runner.model
    tempo(*authors.weights_key(pin(Settings(methods=("tempo-6b.official",))), "tempo-6b.official"))
    xcomp = COLUMNS["xcomp-2b.official"].runner.model
    with pytest.raises(model_zoo.ModelLoadError) as refused:
        xcomp(*authors.weights_key(pin(Settings(methods=("xcomp-2b.official",))), "xcomp-2b.official"))
    assert is_one_sentence(str(refused.value)) and "xcomp-2b.official" in str(refused.value)
    other = Settings(methods=("tempo-6b.official",), revisions={"Vision-CAIR/Tempo-6B": "b" * 40})
    with pytest.raises(model_zoo.ModelLoadError):
        tempo(*authors.weights_key(other, "tempo-6b.official"))  # another commit of a placed column
    assert [len(keys) for keys in own_weights.values()] == [1, 0, 0], "nothing loaded after start-up"


def test_a_column_not_placed_says_why_in_its_column_and_the_others_answer(own_weights, tmp_path):
    from pipeline import authors
    from pipeline.compare import compare
    from pipeline.request import Request
    from tests.videos import make_clip

    authors.place_columns([])
    clip = make_clip(tmp_path / "clip.mp4", seconds=4, fps=8, size=(160, 96))
    settings = Settings.for_backbone(
        "tiny-random", methods=("uniform", "xcomp-2b.official"), max_frames=4, max_new_tokens=2
    )
    done = list(compare(Request(clip, "What is shown?", settings)))[-1]
    assert done.reports["uniform"].error is None and done.reports["uniform"].answer
    error = done.reports["xcomp-2b.official"].error
    assert is_one_sentence(error) and "not loaded when this server started" in error
    assert not any(own_weights.values()), "no weights loaded inside the run"
