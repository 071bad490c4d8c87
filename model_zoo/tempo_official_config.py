"""Tempo-6B's configuration and modules: what ``config.json`` says, and the three trained parts built from it.

Fei et al., arXiv 2604.08120; authors' code github.com/FeiElysia/Tempo (``tempo/language_model/
modeling_tempo_qwen.py``, ``tempo/multimodal_encoder/qwen3vl_encoder.py``, ``tempo/multimodal_projector/
builder.py``), read for every fact below, none of its lines used. The constants are the authors' inference
settings, each with the file that sets it. ``model_zoo.tempo_official`` is the overview and the model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3VLConfig
from transformers.initialization import no_init_weights
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

from model_zoo.loading import ModelLoadError, default_dtype

HUB_ID = "Vision-CAIR/Tempo-6B"
BASE_VLM = "Qwen/Qwen3-VL-2B-Instruct"
MODEL_TYPE = "tempo_qwen"

#: Checkpoint prefixes of the small VLM + memory tokens, and of the projector; the LLM has none.
COMPRESSOR_PREFIX = "model.vision_tower_aux_list.0."
PROJECTOR_PREFIX = "model.mm_projector."

SAMPLE_FPS = 2.0  # video_fps (infer.py, app.py)
MIN_FRAMES, MAX_FRAMES = (
    4,
    1024,
)  # min_frames_num, max_frames_num of compute_sample_indices (infer.py, app.py)
SEGMENT_FRAMES = 8  # frame_windows = frame_stride = 8 (infer.py, app.py)
MIN_TOKENS = 4  # ATA's per-segment minimum (tempo_arch.py)
DEFAULT_BUDGET = 8192  # visual_token_budget when the config has none (tempo_arch.py)
DEMO_CONTEXT_LIMIT = 16384  # tokenizer_model_max_length set by infer.py / app.py
INFERENCE_RESERVE = 16  # inference_max_length: tokens kept free for the answer (tempo_arch.py)
EMPTY_QUERY = "Describe this content."  # what the small VLM reads for an empty question (mm_datautils.py)

#: The answering LLM's chat text around the video ("qwen" template of tempo/conversation.py, with the
#: ``<image>`` placeholder split out as ``tokenizer_image_token`` does).
ANSWER_PREFIX = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
ANSWER_SUFFIX = "\n{question}<|im_end|>\n<|im_start|>assistant\n"

#: Config keys that belong to Tempo, not to the Qwen3 text config they sit beside.
_TEMPO_KEYS = ("model_type", "architectures", "auto_map", "transformers_version")


class TempoLoadError(ModelLoadError):
    """The Tempo checkpoint or its base VLM cannot be loaded; the first line says why in one sentence."""


def timestamp_text(seconds: float) -> str:
    """Tempo's and Qwen3-VL's time marker, one decimal: ``<12.5 seconds>``."""
    return f"<{seconds:.1f} seconds>"


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TempoConfig:
    """What ``config.json`` says: the Qwen3 text config plus Tempo's keys (read at load time).

    ``tokenizer_model_max_length`` is the config's own (None when absent); the authors' infer.py and app.py
    overwrite it with 16384 (:data:`DEMO_CONTEXT_LIMIT`) before answering, and so does our run by default.
    """

    llm: Qwen3Config
    num_memory_tokens: int
    projector_type: str
    base_vlm: str
    visual_token_budget: int
    tokenizer_model_max_length: int | None

    @property
    def tied(self) -> bool:
        return bool(self.llm.tie_word_embeddings)


def read_config(directory: Path) -> TempoConfig:
    """Parse ``directory/config.json``; TempoLoadError when it is not a Tempo (``tempo_qwen``) config."""
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TempoLoadError(f"Cannot read the Tempo config {path} ({type(exc).__name__}: {exc}).") from exc
    if data.get("model_type") != MODEL_TYPE:
        raise TempoLoadError(f"{path} has model_type {data.get('model_type')!r}, expected {MODEL_TYPE!r}.")
    if "num_compression_tokens" not in data:
        raise TempoLoadError(f"{path} lacks num_compression_tokens (the number of memory tokens).")
    towers = data.get("mm_vision_tower_aux_list") or [BASE_VLM]
    if len(towers) != 1:
        raise TempoLoadError(f"{path} lists {len(towers)} vision towers; Tempo-6B has exactly one: {towers}.")
    text = {k: v for k, v in data.items() if k not in _TEMPO_KEYS}
    # TempoQwenForCausalLM.__init__ forces rope_scaling to None: plain RoPE at the config's theta.
    theta = text.pop("rope_theta", None) or (text.pop("rope_parameters", None) or {}).get("rope_theta", 1e6)
    text.pop("rope_scaling", None)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": float(theta)}
    return TempoConfig(
        llm=Qwen3Config(**text),
        num_memory_tokens=int(data["num_compression_tokens"]),
        projector_type=str(data.get("mm_projector_type", "linear")),
        base_vlm=str(towers[0]),
        visual_token_budget=int(data.get("visual_token_budget", DEFAULT_BUDGET)),
        tokenizer_model_max_length=data.get("tokenizer_model_max_length"),
    )


# --------------------------------------------------------------------------------------------- modules


class SmallVLM(nn.Module):
    """``Qwen3VLForConditionalGeneration`` without ``lm_head`` (the authors delete it): only ``.model``."""

    def __init__(self, config: Qwen3VLConfig) -> None:
        super().__init__()
        self.model = Qwen3VLModel(config)


class MemoryCompressor(nn.Module):
    """``vision_tower_aux_list[0]``: the small VLM and its learned memory tokens ``[1, N, D_vlm]``."""

    def __init__(self, config: Qwen3VLConfig, num_tokens: int) -> None:
        super().__init__()
        self.vlm = SmallVLM(config)
        self.compression_tokens = nn.Parameter(torch.zeros(1, num_tokens, config.text_config.hidden_size))


def build_projector(kind: str, d_in: int, d_out: int) -> nn.Module:
    """``linear``, ``mlp{n}x_gelu`` or ``identity``, as ``build_vision_projector`` builds them."""
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match:
        layers: list[nn.Module] = [nn.Linear(d_in, d_out)]
        for _ in range(1, int(match.group(1))):
            layers += [nn.GELU(), nn.Linear(d_out, d_out)]
        return nn.Sequential(*layers)
    if kind == "identity" and d_in == d_out:
        return nn.Identity()
    raise TempoLoadError(
        f"mm_projector_type {kind!r} ({d_in} -> {d_out}) is not one of linear, mlpNx_gelu, identity."
    )


class TempoModules(nn.Module):
    """The three trained parts; ``official_tensors()`` names every tensor as the authors' checkpoint does."""

    def __init__(self, config: TempoConfig, vlm_config: Qwen3VLConfig) -> None:
        super().__init__()
        self.llm = Qwen3ForCausalLM(config.llm)
        self.compressor = MemoryCompressor(vlm_config, config.num_memory_tokens)
        d_vlm = vlm_config.text_config.hidden_size
        self.projector = build_projector(config.projector_type, d_vlm, config.llm.hidden_size)

    def official_tensors(self) -> dict[str, torch.Tensor]:
        """{checkpoint name: this model's tensor}; with tied embeddings ``lm_head.weight`` is the embedding."""
        named = dict(self.llm.state_dict(keep_vars=True))
        named.update(
            {COMPRESSOR_PREFIX + k: v for k, v in self.compressor.state_dict(keep_vars=True).items()}
        )
        named.update({PROJECTOR_PREFIX + k: v for k, v in self.projector.state_dict(keep_vars=True).items()})
        return named


def build_modules(config: TempoConfig, vlm_config: Qwen3VLConfig, *, device, dtype) -> TempoModules:
    """Empty modules directly on ``device`` in ``dtype`` (no random init: every tensor is loaded next)."""
    with torch.device(device), default_dtype(dtype), no_init_weights():
        modules = TempoModules(config, vlm_config)
    if config.tied:
        modules.llm.tie_weights()  # post_init's tie is skipped under no_init_weights
    return modules.eval()
