"""Tiny random Tempo-6B checkpoints written under the authors' exact key names, for the Tempo-6B tests.

The checkpoint is assembled here from transformers' own classes and literal prefixes (not from the modules
under test), with a ``config.json`` as the authors' ``TempoConfig`` saves it, as ``model.safetensors`` or as
the ``pytorch_model.bin`` the authors' saver writes, next to a tiny "base VLM" directory (config, tokenizer,
weights holding the Yes/No rows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

from model_zoo.tempo_official_frames import FrameRule
from model_zoo.tiny import build_tiny, build_tokenizer, tiny_config

N_MEMORY = 16
#: Small frames for CPU: 64 x 64 stays 64 x 64 (2 x 2 merged tokens per group) under this rule.
TINY_RULE = FrameRule(long_edge=64, video_min_tokens=4)


def llm_config(tokenizer, *, tied: bool) -> dict:
    """A Qwen3 text config as the authors' Tempo config.json carries it (transformers 4.57 field names)."""
    return {
        "architectures": ["TempoQwenForCausalLM"],
        "model_type": "tempo_qwen",
        "vocab_size": len(tokenizer),
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 24,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "tie_word_embeddings": tied,
        "initializer_range": 0.08,
        "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "torch_dtype": "float32",
        # Tempo's own keys
        "num_compression_tokens": N_MEMORY,
        "mm_projector_type": "linear",
        "mm_vision_tower_aux_list": ["Qwen/Qwen3-VL-2B-Instruct"],
        "mm_hidden_size": 128,
        "visual_token_budget": 8192,
        "tokenizer_model_max_length": 16384,
    }


def official_state(config: dict, vlm_seed: int, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors under the official names, spelled out from the prefixes of the authors' checkpoint."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "rope_scaling")}
        llm = Qwen3ForCausalLM(Qwen3Config(**text))
        small, _ = build_tiny(vlm_seed)
        d_vlm, d_llm = small.config.text_config.hidden_size, config["hidden_size"]
        state = {k: v.clone() for k, v in llm.state_dict().items()}
        if config["tie_word_embeddings"]:
            del state["lm_head.weight"]  # a tied head is not saved
        for key, value in small.state_dict().items():
            if not key.startswith("lm_head."):  # the small VLM's head is deleted
                state["model.vision_tower_aux_list.0.vlm." + key] = value.clone()
        state["model.vision_tower_aux_list.0.compression_tokens"] = torch.randn(1, N_MEMORY, d_vlm)
        if config["mm_projector_type"] == "linear":
            state["model.mm_projector.weight"] = torch.randn(d_llm, d_vlm) * 0.1
            state["model.mm_projector.bias"] = torch.randn(d_llm) * 0.1
        else:  # mlp2x_gelu: Linear, GELU, Linear
            state["model.mm_projector.0.weight"] = torch.randn(d_llm, d_vlm) * 0.1
            state["model.mm_projector.0.bias"] = torch.randn(d_llm) * 0.1
            state["model.mm_projector.2.weight"] = torch.randn(d_llm, d_llm) * 0.1
            state["model.mm_projector.2.bias"] = torch.randn(d_llm) * 0.1
    return {k: v.contiguous() for k, v in state.items()}


def write_tempo(
    directory: Path, *, tied: bool = True, projector: str = "linear", edit=None, bin: bool = False
) -> Path:
    """A tiny Tempo checkpoint in ``directory``: ``model.safetensors``, or with ``bin`` the authors'
    ``pytorch_model.bin`` (``torch.save`` of the state dict); ``edit(config, state)`` changes it first."""
    tokenizer = build_tokenizer()
    directory.mkdir(parents=True)
    config = llm_config(tokenizer, tied=tied) | {"mm_projector_type": projector}
    state = official_state(config, vlm_seed=1, seed=2)
    if edit:
        edit(config, state)
    if bin:
        torch.save(state, directory / "pytorch_model.bin")
    else:
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    im_end, eot = (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [im_end, eot]}))
    tokenizer.save_pretrained(str(directory))
    return directory


def write_base(directory: Path, *, tied: bool = False) -> Path:
    """The tiny "Qwen3-VL-2B-Instruct": config, tokenizer with chat template, processor numbers, weights."""
    tokenizer = build_tokenizer()
    directory.mkdir(parents=True)
    model, _ = build_tiny(0)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    config = tiny_config(tokenizer)
    if tied:
        config.tie_word_embeddings = True
        del state["lm_head.weight"]
    config.save_pretrained(str(directory))
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(directory))
    processor = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3}
    (directory / "video_preprocessor_config.json").write_text(
        json.dumps(processor | {"image_std": [0.5] * 3})
    )
    return directory


def frames_for(count: int, *, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


@dataclass
class Setup:
    """A tiny Tempo checkpoint (safetensors) and its base VLM under ``root``."""

    root: Path
    tempo: Path
    base: Path


def read_file(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (handle is not iterable)


def make_setup(root: Path) -> Setup:
    return Setup(root, write_tempo(root / "tempo"), write_base(root / "base"))
