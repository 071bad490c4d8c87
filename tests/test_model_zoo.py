"""The registries, the tiny backbone and loading: names are the API, failures say what to do instead."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

import model_zoo
from compressors.base import BackboneHooks
from model_zoo import loading
from model_zoo.tiny import build_tiny, build_tokenizer
from model_zoo.variants import METHOD_OPTIONS, TINY

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
    def __init__(self, name):
        self.name, self.model, self.device = name, object(), torch.device("cpu")

    def release(self):
        self.model = None


def test_least_recently_used_backbone_is_evicted_and_released(monkeypatch):
    monkeypatch.setattr(loading, "build_backbone", lambda spec, device: _FakeBackbone(spec.name))
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


def test_a_checkpoint_loads_through_the_hub_path_with_its_own_preprocessing_and_template(
    tmp_path, monkeypatch
):
    """The real-checkpoint path end to end, offline: a saved tiny checkpoint stands in for the hub repo."""
    model, tokenizer = build_tiny(0)
    model.save_pretrained(tmp_path)
    template = tokenizer.chat_template
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None  # Qwen3-VL ships its template beside the processor, not in the tokenizer
    bare.save_pretrained(tmp_path)
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    video_config = {"size": {"shortest_edge": 4096, "longest_edge": 65536}, "image_mean": [0.4, 0.5, 0.6]}
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(video_config))
    requested = []

    def fake_download(repo_id, filename, *, revision):
        requested.append((repo_id, filename, revision))
        return str(tmp_path / filename)

    monkeypatch.setattr(loading, "hf_hub_download", fake_download)
    spec = dataclasses.replace(
        model_zoo.get_backbone_spec("qwen3vl-2b"), hub_id=str(tmp_path), revision="abc123"
    )
    backbone = loading.build_backbone(spec, torch.device("cpu"))
    assert {(f, r) for _, f, r in requested} == {
        ("video_preprocessor_config.json", "abc123"),
        ("chat_template.json", "abc123"),
    }
    assert backbone.dtype == torch.float32 and backbone.tokenizer.chat_template == template
    assert eng_attention(backbone) == "sdpa"
    assert (backbone.preprocess.min_pixels, backbone.preprocess.max_pixels) == (4096, 65536)
    assert backbone.preprocess.image_mean == (0.4, 0.5, 0.6)
    assert torch.equal(backbone.model.lm_head.weight, model.lm_head.weight)


def eng_attention(backbone) -> str:
    return backbone.model.model.language_model.config._attn_implementation
