"""The registries, the tiny backbone and loading: names are the API, failures say what to do instead."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch

import model_zoo
from compressors.base import BackboneHooks
from model_zoo import loading
from model_zoo.preprocess import preprocess_video
from model_zoo.tiny import build_tiny, build_tokenizer
from model_zoo.variants import METHOD_OPTIONS, TINY
from tests import hubcache

GPU_BACKBONES = ["qwen3vl-2b", "qwen3vl-4b", "qwen3vl-8b"]
METHODS = ["espresso", "xcomp", "tempo", "uniform", "pool"]


def test_every_backbone_has_every_method():
    expected = {f"{b}.{m}" for b in [*GPU_BACKBONES, TINY] for m in METHODS}
    assert set(model_zoo.list_variants()) == expected
    assert set(model_zoo.variants) == expected


@pytest.mark.parametrize("name", model_zoo.list_variants())
def test_variant_is_consistent_with_its_backbone(name):
    variant = model_zoo.get_variant(name)
    spec = model_zoo.get_backbone_spec(variant.backbone)
    assert variant.name == f"{variant.backbone}.{variant.method}" == name
    assert (variant.hub_id, variant.revision, variant.license) == (spec.hub_id, spec.revision, spec.license)
    assert variant.license == "apache-2.0" and variant.revision
    assert variant.fps == 1.0 and variant.segment_frames == 8
    assert variant.options_dict() == METHOD_OPTIONS[variant.method]
    assert variant.label and variant.notes
    if spec.needs_gpu:
        assert (variant.budget, variant.max_frames) == (4096, 1024)
        assert variant.hub_id == f"Qwen/Qwen3-VL-{variant.backbone.split('-')[1].upper()}-Instruct"
    else:
        assert variant.budget <= 256 and variant.max_frames <= 32 and variant.hub_id is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        variant.budget = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", model_zoo.list_variants())
def test_variant_options_are_accepted_by_its_compressor(name):
    compressors = pytest.importorskip("compressors")
    build = getattr(compressors, "build", None)
    if build is None:
        pytest.skip("compressors.build is not available in this checkout")
    variant = model_zoo.get_variant(name)
    assert build(variant.method, **variant.options_dict()).name == variant.method


def test_backbone_specs_match_the_published_depths():
    depths = {name: model_zoo.get_backbone_spec(name).num_layers for name in model_zoo.list_backbones()}
    assert depths == {"qwen3vl-2b": 28, "qwen3vl-4b": 36, "qwen3vl-8b": 36, TINY: 4}


@pytest.mark.parametrize("lookup", [model_zoo.get_variant, model_zoo.get_backbone_spec])
def test_unknown_names_list_the_valid_ones(lookup):
    with pytest.raises(KeyError) as info:
        lookup("qwen3vl-2b.magic")
    message = str(info.value)
    assert "qwen3vl-2b.magic" in message
    valid = model_zoo.list_variants() if lookup is model_zoo.get_variant else model_zoo.list_backbones()
    assert all(name in message for name in valid)


# ---------------------------------------------------------------------------------------------- tiny


def test_tiny_builds_fresh_in_under_two_seconds():
    start = time.perf_counter()
    build_tokenizer.__wrapped__()
    model, tokenizer = build_tiny.__wrapped__(seed=3)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"tiny backbone took {elapsed:.2f} s"
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert model.config.text_config.num_hidden_layers == 4


def test_tiny_is_deterministic_under_a_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = build_tiny.__wrapped__(seed=7)
    after = torch.rand(1)
    b, _ = build_tiny.__wrapped__(seed=7)
    c, _ = build_tiny.__wrapped__(seed=8)
    assert torch.equal(before, after)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert build_tiny(0) is build_tiny(0)  # cached


def test_tiny_tokenizer_carries_the_real_special_tokens_and_template():
    model, tokenizer = build_tiny(0)
    config = model.config
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") == config.video_token_id
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == config.vision_start_token_id
    assert tokenizer.convert_tokens_to_ids("<|vision_end|>") == config.vision_end_token_id
    for word in ("Yes", "No"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Why?"}]},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Why?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert all(
        i < config.text_config.vocab_size
        for i in tokenizer.convert_tokens_to_ids(tokenizer.all_special_tokens)
    )


# ---------------------------------------------------------------------------------------------- loading


def test_tiny_backbone_loads_offline_and_is_cached():
    backbone = model_zoo.load_backbone(TINY)
    assert isinstance(backbone, model_zoo.Qwen3VLBackbone)
    assert model_zoo.load_backbone(TINY) is backbone
    assert backbone.num_layers == 4 and backbone.dtype == torch.float32
    assert isinstance(backbone, BackboneHooks)


def test_a_real_checkpoint_fails_fast_offline_naming_the_tiny_backbone(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(loading, "_CACHE", loading.BackboneCache(max_resident=1))
    start = time.perf_counter()
    with pytest.raises(model_zoo.ModelLoadError) as info:
        model_zoo.load_backbone("qwen3vl-2b", device="cpu")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "'tiny-random'" in message and "Qwen/Qwen3-VL-2B-Instruct" in message
    assert message.endswith(".") and message.count(". ") == 0, "one sentence"
    assert loading.resident_backbones() == []


class _FakeBackbone:
    def __init__(self, spec):
        self.spec, self.model, self.device = spec, object(), torch.device("cpu")

    def release(self):
        self.model = None


def test_least_recently_used_backbone_is_evicted_and_released(monkeypatch):
    monkeypatch.setattr(loading, "build_backbone", lambda spec, device, revision: _FakeBackbone(spec))
    cache = loading.BackboneCache(max_resident=2)
    a = cache.get("qwen3vl-2b", device="cpu")
    cache.get("qwen3vl-4b", device="cpu")
    assert cache.get("qwen3vl-2b", device="cpu") is a  # touch: 4b becomes the oldest
    cache.get("qwen3vl-8b", device="cpu")
    assert [name for name, _ in cache.resident()] == ["qwen3vl-2b", "qwen3vl-8b"]
    cache.max_resident = 1
    cache.shrink()
    assert [name for name, _ in cache.resident()] == ["qwen3vl-8b"]
    assert a.model is None  # released


def test_max_resident_setting_is_validated_and_applied(monkeypatch):
    monkeypatch.setattr(loading, "_CACHE", loading.BackboneCache(max_resident=1))
    with pytest.raises(ValueError):
        model_zoo.set_max_resident(0)
    model_zoo.set_max_resident(2)
    assert loading._CACHE.max_resident == 2


def test_importing_the_zoo_does_not_initialise_cuda():
    code = "import model_zoo, torch; print(torch.cuda.is_initialized())"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def fake_hub_spec(monkeypatch, tmp_path):
    """``qwen3vl-2b`` read from a fake Hub cache: commits A (seed 0) and B (seed 1), main pointing at B."""
    hubcache.write_tiny_snapshot(tmp_path, "org/tiny-vl", COMMIT_A, seed=0)
    hubcache.write_tiny_snapshot(tmp_path, "org/tiny-vl", COMMIT_B, seed=1)
    hubcache.point(tmp_path, "org/tiny-vl", COMMIT_B)
    hubcache.use_cache(monkeypatch, tmp_path)
    return dataclasses.replace(
        model_zoo.get_backbone_spec("qwen3vl-2b"), hub_id="org/tiny-vl", revision="main"
    )


def test_a_checkpoint_loads_through_the_hub_path_at_the_commit_its_branch_names(tmp_path, monkeypatch):
    """The real-checkpoint path end to end, offline, from a Hub cache laid out as huggingface_hub's: every
    file at the commit ``main`` resolves to, the weights placed by accelerate (a device map, no move)."""
    spec = fake_hub_spec(monkeypatch, tmp_path)
    from transformers import AutoModelForImageTextToText

    asked = []
    real = AutoModelForImageTextToText.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        asked.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", classmethod(spy))
    monkeypatch.setattr(torch.nn.Module, "to", _refuse_move)
    backbone = loading.build_backbone(spec, torch.device("cpu"))
    assert [(k["revision"], k["device_map"]) for k in asked] == [(COMMIT_B, {"": torch.device("cpu")})]
    assert backbone.spec.revision == COMMIT_B
    assert torch.equal(backbone.model.lm_head.weight, build_tiny(1)[0].lm_head.weight)
    assert (
        backbone.dtype == torch.float32 and backbone.tokenizer.chat_template == build_tiny(0)[1].chat_template
    )
    assert eng_attention(backbone) == "sdpa"
    assert (backbone.preprocess.min_pixels, backbone.preprocess.max_pixels) == (4096, 65536)


class _LibraryProcessor:
    """Stands in for the checkpoint's ``Qwen3VLVideoProcessor`` (no torchvision here): answers as the library
    does (``pixel_values_videos``, ``video_grid_thw``) from our port, and records how it was called."""

    patch_size, temporal_patch_size = 16, 2

    def __init__(self, config):
        self.config, self.calls = config, []

    def __call__(self, videos, **kwargs):
        self.calls.append(kwargs)
        out = preprocess_video(videos[0], list(range(len(videos[0]))), self.config)
        return {"pixel_values_videos": out.pixel_values_videos + 1, "video_grid_thw": out.video_grid_thw}


def test_the_checkpoints_own_video_processor_prepares_frames_where_torchvision_works(tmp_path, monkeypatch):
    spec = fake_hub_spec(monkeypatch, tmp_path)
    frames = np.random.default_rng(0).integers(0, 256, (6, 64, 96, 3), dtype=np.uint8)
    times = [0.5 * i for i in range(6)]
    without = loading.build_backbone(spec, torch.device("cpu"))
    assert without.video_processor is None  # torchvision does not import here: our port
    ours = without.preprocess_frames(frames, times)

    # transformers' top-level AutoVideoProcessor is a placeholder that raises without torchvision
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    loaded = []

    def from_pretrained(hub_id, *, revision):
        loaded.append((hub_id, revision))
        return _LibraryProcessor(without.preprocess)

    monkeypatch.setattr(loading, "torchvision_available", lambda: True)
    monkeypatch.setattr(AutoVideoProcessor, "from_pretrained", from_pretrained)
    backbone = loading.build_backbone(spec, torch.device("cpu"))
    assert loaded == [("org/tiny-vl", COMMIT_B)]
    theirs = backbone.preprocess_frames(frames, times)
    assert backbone.video_processor.calls == [
        {"do_sample_frames": False, "cap_pixels_per_frame": True, "return_tensors": "pt"}
    ]
    assert torch.equal(theirs.pixel_values_videos, ours.pixel_values_videos + 1)  # the library's, not ours
    assert torch.equal(theirs.group_times, ours.group_times) and theirs.frame_size == ours.frame_size


def _refuse_move(self, *args, **kwargs):
    raise AssertionError("the loader moved a built model instead of loading it onto its device")


def test_a_pinned_commit_loads_that_commit_whatever_the_branch_names_now(tmp_path, monkeypatch):
    spec = fake_hub_spec(monkeypatch, tmp_path)
    pinned = loading.build_backbone(spec, torch.device("cpu"), revision=COMMIT_A)
    assert pinned.spec.revision == COMMIT_A
    assert torch.equal(pinned.model.lm_head.weight, build_tiny(0)[0].lm_head.weight)
    assert loading.resolve_commit("org/tiny-vl", "main") == COMMIT_B
    with pytest.raises(model_zoo.ModelLoadError, match="tiny-random"):
        loading.build_backbone(spec, torch.device("cpu"), revision="c" * 40)  # not in the cache, offline


def test_the_cache_finds_a_backbone_by_the_commit_its_branch_resolved_to(tmp_path, monkeypatch):
    spec = fake_hub_spec(monkeypatch, tmp_path)
    monkeypatch.setitem(model_zoo.backbones, "qwen3vl-2b", spec)
    cache = loading.BackboneCache(max_resident=1)
    by_branch = cache.get("qwen3vl-2b", device="cpu")
    assert cache.get("qwen3vl-2b", device="cpu", revision=COMMIT_B) is by_branch
    other = cache.get("qwen3vl-2b", device="cpu", revision=COMMIT_A)
    assert other.spec.revision == COMMIT_A and by_branch.model is None  # evicted, released


def eng_attention(backbone) -> str:
    return backbone.model.model.language_model.config._attn_implementation
