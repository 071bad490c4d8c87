"""Tempo-6B's loader on tiny random checkpoints written under the authors' key names (``tests.tempo_checkpoints``):
every key strict, safetensors and the authors' ``pytorch_model.bin`` alike (``weights_only``), one sentence
for what cannot load; and the relevance head read from the base VLM.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model_zoo import ModelLoadError
from model_zoo import tempo_official as official
from model_zoo.tempo_official_config import BASE_VLM, TempoLoadError
from model_zoo.tiny import build_tokenizer
from pipeline.official import load_tempo_official
from tests.tempo_checkpoints import N_MEMORY, TINY_RULE, make_setup, read_file, write_base, write_tempo


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("tempo_official"))


@pytest.fixture(scope="module")
def tempo(setup):
    return load_tempo_official(setup.tempo, base_vlm=setup.base, device="cpu", rule=TINY_RULE)


# ---------------------------------------------------------------------------------------------- loading


def test_every_official_key_loads_exactly(setup, tempo):
    written = read_file(setup.tempo / "model.safetensors")
    loaded = tempo.model.modules.official_tensors()
    assert "model.vision_tower_aux_list.0.vlm.model.visual.patch_embed.proj.weight" in written
    assert (
        "model.vision_tower_aux_list.0.vlm.model.language_model.layers.0.self_attn.q_proj.weight" in written
    )
    assert "model.layers.1.mlp.down_proj.weight" in written and "model.mm_projector.weight" in written
    assert set(written) == set(loaded) - {"lm_head.weight"}
    for key, value in written.items():
        assert torch.equal(loaded[key].detach(), value), key
    assert tempo.model.num_memory_tokens == N_MEMORY and tempo.model.config.base_vlm == BASE_VLM


def test_tied_config_uses_the_embedding_as_head(tempo):
    llm = tempo.model.modules.llm
    assert tempo.model.config.tied
    assert llm.lm_head.weight.data_ptr() == llm.model.embed_tokens.weight.data_ptr()


def test_untied_config_loads_its_own_head(setup):
    path = write_tempo(setup.root / "untied", tied=False)
    model = official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")
    llm = model.modules.llm
    assert llm.lm_head.weight.data_ptr() != llm.model.embed_tokens.weight.data_ptr()
    assert torch.equal(llm.lm_head.weight, read_file(path / "model.safetensors")["lm_head.weight"])


def test_untied_config_without_head_is_refused(setup):
    path = write_tempo(setup.root / "untied_headless", tied=False, edit=lambda c, s: s.pop("lm_head.weight"))
    with pytest.raises(TempoLoadError, match=r"missing: lm_head\.weight"):
        official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")


def test_renamed_key_is_refused_with_one_readable_message(setup):
    def rename(config, state):
        state["model.mm_projector.proj.weight"] = state.pop("model.mm_projector.weight")

    path = write_tempo(setup.root / "renamed", edit=rename)
    with pytest.raises(ModelLoadError) as caught:
        load_tempo_official(path, base_vlm=setup.base, device="cpu")
    message = str(caught.value)
    first, *rest = message.splitlines()
    assert first.endswith(".") and "1 missing, 1 unexpected" in first and "official key names" in first
    assert rest == ["  missing: model.mm_projector.weight", "  unexpected: model.mm_projector.proj.weight"]


def test_many_missing_keys_are_grouped_by_pattern(setup):
    def drop_layers(config, state):
        for key in [k for k in state if k.startswith("model.layers.")]:
            del state[key]

    path = write_tempo(setup.root / "no_layers", edit=drop_layers)
    with pytest.raises(TempoLoadError) as caught:
        official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")
    assert "model.layers.*.mlp.up_proj.weight (2 keys)" in str(caught.value)
    assert "  unexpected:" not in str(caught.value) and "0 unexpected" in str(caught.value)


def test_shape_disagreeing_with_config_is_named(setup):
    path = write_tempo(setup.root / "shape", edit=lambda c, s: c.update(num_compression_tokens=8))
    with pytest.raises(TempoLoadError, match=r"compression_tokens: checkpoint \[1, 16, 128\], model \[1, 8"):
        official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")


def test_other_model_types_and_missing_tempo_keys_are_refused(setup):
    path = write_tempo(setup.root / "qwen3", edit=lambda c, s: c.update(model_type="qwen3"))
    with pytest.raises(TempoLoadError, match="expected 'tempo_qwen'"):
        official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")
    path = write_tempo(setup.root / "no_n", edit=lambda c, s: c.pop("num_compression_tokens"))
    with pytest.raises(TempoLoadError, match="num_compression_tokens"):
        official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")


def test_unreachable_hub_is_one_sentence(setup):
    with pytest.raises(ModelLoadError) as caught:
        load_tempo_official("Vision-CAIR/Tempo-6B", base_vlm=setup.base, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "Vision-CAIR/Tempo-6B" in message and BASE_VLM in message
    with pytest.raises(ModelLoadError, match="neither a local directory nor a Hub repo id"):
        load_tempo_official(setup.root / "does-not-exist", base_vlm=setup.base, device="cpu")


def test_the_authors_bin_checkpoint_loads_exactly_like_safetensors(setup, tempo):
    path = write_tempo(setup.root / "as_bin", bin=True)
    assert not (path / "model.safetensors").exists()
    model = official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")
    loaded, reference = model.modules.official_tensors(), tempo.model.modules.official_tensors()
    assert set(loaded) == set(reference)
    for key, value in reference.items():
        assert torch.equal(loaded[key].detach(), value.detach()), key


def test_a_sharded_bin_checkpoint_loads_through_its_index(setup, tempo):
    path = write_tempo(setup.root / "sharded_bin", bin=True)
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    (path / "pytorch_model.bin").unlink()
    names = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, path / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")
    assert torch.equal(
        model.modules.compressor.compression_tokens, tempo.model.modules.compressor.compression_tokens
    )


def test_a_bin_checkpoint_keeps_strict_key_matching(setup):
    def rename(config, state):
        state["model.mm_projector.proj.weight"] = state.pop("model.mm_projector.weight")

    path = write_tempo(setup.root / "renamed_bin", edit=rename, bin=True)
    with pytest.raises(TempoLoadError, match="1 missing, 1 unexpected"):
        official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")


class Planted:
    """A pickled object whose unpickling would leave a file behind: it must never be unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_bin_holding_a_pickled_object_is_refused_in_one_sentence(setup, tmp_path):
    marker = tmp_path / "unpickled"
    path = write_tempo(setup.root / "planted_bin", bin=True)
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "extra": Planted(marker)}, path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as caught:
        official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".") and "pickled objects" in message
    assert not marker.exists(), "the planted object was unpickled"


def test_a_folder_without_weights_is_one_sentence(setup):
    path = setup.root / "no_weights"
    shutil.copytree(setup.tempo, path)
    (path / "model.safetensors").unlink()
    with pytest.raises(TempoLoadError, match="No model.safetensors or pytorch_model.bin") as caught:
        official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")
    assert "\n" not in str(caught.value)


def test_mlp2x_gelu_projector(setup):
    path = write_tempo(setup.root / "mlp", projector="mlp2x_gelu")
    model = official.load_tempo_checkpoint(path, base_vlm=setup.base, device="cpu")
    w = read_file(path / "model.safetensors")
    x = torch.randn(3, 128)
    hidden = torch.nn.functional.gelu(x @ w["model.mm_projector.0.weight"].T + w["model.mm_projector.0.bias"])
    expected = hidden @ w["model.mm_projector.2.weight"].T + w["model.mm_projector.2.bias"]
    torch.testing.assert_close(model.modules.projector(x), expected)


# -------------------------------------------------------------------------------------------- relevance


def test_relevance_head_is_yes_minus_no_of_the_base_head(setup, tempo):
    base = read_file(setup.base / "model.safetensors")["lm_head.weight"]
    vocab = build_tokenizer().get_vocab()
    expected = base[vocab["Yes"]] - base[vocab["No"]]
    assert tempo.model.relevance.dtype == torch.float32
    torch.testing.assert_close(tempo.model.relevance, expected)


def test_tied_base_reads_the_rows_from_its_embedding(setup):
    base = write_base(setup.root / "base_tied", tied=True)
    model = official.load_tempo_checkpoint(setup.tempo, base_vlm=base, device="cpu")
    embed = read_file(base / "model.safetensors")["model.language_model.embed_tokens.weight"]
    vocab = build_tokenizer().get_vocab()
    torch.testing.assert_close(model.relevance, embed[vocab["Yes"]] - embed[vocab["No"]])
