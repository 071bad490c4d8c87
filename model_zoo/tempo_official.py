"""Tempo-6B (``tempo-6b.official``): the authors' released checkpoint, rebuilt on transformers' Qwen3 classes.

Paper: Fei et al., "Small Vision-Language Models are Smart Compressors for Long Video Understanding",
arXiv 2604.08120. Authors' code: github.com/FeiElysia/Tempo (read for every fact below, none of its lines
used); weights: ``Vision-CAIR/Tempo-6B`` (academic, non-commercial licence), which also need the base
``Qwen/Qwen3-VL-2B-Instruct`` (its config, tokenizer, preprocessing numbers and two output-embedding rows).

Parts (``tempo/language_model/modeling_tempo_qwen.py``, ``tempo/multimodal_encoder/qwen3vl_encoder.py``,
``tempo/multimodal_projector/builder.py``), under the checkpoint's own state-dict names:

* answering LLM, ``Qwen3ForCausalLM`` (Qwen3-4B): ``model.embed_tokens.*``, ``model.layers.*``,
  ``model.norm.*``, ``lm_head.*`` (absent when ``tie_word_embeddings``: the head is then the embedding);
* small VLM, ``Qwen3VLForConditionalGeneration`` with its ``lm_head`` removed (Qwen3-VL-2B architecture,
  built from the *base* model's config): ``model.vision_tower_aux_list.0.vlm.model.{visual,language_model}.*``;
* learned memory tokens ``[1, N, 2048]``: ``model.vision_tower_aux_list.0.compression_tokens``;
* projector 2048 -> 2560: ``model.mm_projector.*`` (``weight``/``bias`` for ``linear``, ``0.*``/``2.*`` for
  ``mlp2x_gelu``);
* relevance head, not in the checkpoint: row("Yes") - row("No") of the base model's output embedding (tied
  to its input embedding), applied in float32 to the small VLM's last hidden state just before the first
  memory token; score = sigmoid (``Qwen3VLTower.smart_init_dynamic_compress`` / ``compute_relevance``).

Inference (``infer.py``, ``app.py``, ``tempo/mm_datautils.py``, ``tempo/tempo_arch.py``): frames at 2 fps
(4..1024, ``round(linspace)`` indices, ``real_fps = frames / duration``), sized as below, cut into 8-frame
segments (a 1-frame tail duplicated); per segment the small VLM reads [system prompt, user: the segment's
video with absolute in-prompt times, "\\nQuery:\\n{question}", generation prompt] followed by N memory
tokens, all segments in one right-padded batch; ATA (``compressors.tempo.allocate_tokens``, min 4, max N)
turns the scores into k_i; each segment keeps its *first* k_i memory features, projected, after the text
``<{(8i + 4) / real_fps:.1f} seconds>``; the answering LLM reads them inside the "qwen" chat template and
decodes greedily. The flow that needs ATA lives in ``pipeline/official.py`` (``model_zoo`` does not import
``compressors``); everything model-specific is here.

Departures (ours): sdpa attention instead of flash-attention 2 (same maths); the third frame resize
(``qwen-vl-utils`` upscaling frames below 128 tokens) uses PIL bicubic where the authors' stack uses
torchvision's; a question so long that no visual token fits gets none (the authors' slice would then cut
from the wrong end).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoTokenizer, DynamicCache, Qwen3Config, Qwen3ForCausalLM, Qwen3VLConfig
from transformers.initialization import no_init_weights
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

from model_zoo.loading import HUB_ERRORS, ModelLoadError, default_dtype, dtype_for, resolve_device
from model_zoo.preprocess import (
    VideoPreprocessConfig,
    check_frames,
    normalize_frames,
    patchify,
    resize_frames,
)
from model_zoo.prompt import PromptLayout, SpecialIds, build_layout, encode_plain, encode_text
from model_zoo.qwen3_vl import grid_positions

HUB_ID = "Vision-CAIR/Tempo-6B"
BASE_VLM = "Qwen/Qwen3-VL-2B-Instruct"
MODEL_TYPE = "tempo_qwen"

#: Checkpoint prefixes of the small VLM + memory tokens, and of the projector; the LLM has none.
COMPRESSOR_PREFIX = "model.vision_tower_aux_list.0."
PROJECTOR_PREFIX = "model.mm_projector."

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

#: Files fetched from the Hub: configs, tokenizer, chat template; weights only where needed.
_META_PATTERNS = ["*.json", "*.txt", "*.jinja", "tokenizer*", "*.model"]


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


# ---------------------------------------------------------------------------------- checkpoint files


def safetensors_files(directory: Path) -> list[Path]:
    """The checkpoint's safetensors shards (``model.safetensors`` or the index's shards)."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [directory / name for name in sorted(set(weight_map.values()))]
    single = directory / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise TempoLoadError(
        f"No model.safetensors (or index) in {directory}; only safetensors are loaded, found {found[:12]}."
    )


def checkpoint_shapes(files: Sequence[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """{tensor name: (shape, file)} without reading any tensor data."""
    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            names = handle.keys()  # a safe_open handle is not iterable
            for key in names:
                shapes[key] = (tuple(handle.get_slice(key).get_shape()), path)
    return shapes


def summarize_keys(keys: Iterable[str], *, limit: int = 12) -> str:
    """Keys grouped by their pattern (layer numbers as ``*``), e.g. ``model.layers.*.mlp.up_proj.weight (36)``."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        groups.setdefault(re.sub(r"\.\d+\.", ".*.", key), []).append(key)
    lines = [
        names[0] if len(names) == 1 else f"{pattern} ({len(names)} keys)" for pattern, names in groups.items()
    ]
    more = f"; and {len(lines) - limit} more patterns" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def check_keys(
    where: str, found: Iterable[str], required: Iterable[str], optional: Iterable[str] = ()
) -> None:
    """TempoLoadError naming every missing and every unexpected key, unless ``found`` matches exactly."""
    found, required = set(found), set(required)
    missing = sorted(required - found)
    unexpected = sorted(found - required - set(optional))
    if not missing and not unexpected:
        return
    lines = [
        f"The checkpoint at {where} does not match Tempo-6B's official key names "
        f"({len(missing)} missing, {len(unexpected)} unexpected), so it was not loaded."
    ]
    if missing:
        lines.append(f"  missing: {summarize_keys(missing)}")
    if unexpected:
        lines.append(f"  unexpected: {summarize_keys(unexpected)}")
    raise TempoLoadError("\n".join(lines))


def check_shapes(where: str, shapes: dict, targets: dict[str, torch.Tensor]) -> None:
    """TempoLoadError listing tensors whose checkpoint shape differs from the model built from config.json."""
    wrong = [
        f"{key}: checkpoint {list(shapes[key][0])}, model {list(t.shape)}"
        for key, t in targets.items()
        if key in shapes and tuple(shapes[key][0]) != tuple(t.shape)
    ]
    if wrong:
        more = f"; and {len(wrong) - 8} more" if len(wrong) > 8 else ""
        raise TempoLoadError(
            f"The checkpoint at {where} has {len(wrong)} tensors shaped unlike its config.json: "
            + "; ".join(wrong[:8])
            + more
        )


@torch.no_grad()
def load_checkpoint(modules: TempoModules, directory: Path, *, tied: bool) -> None:
    """Strictly load the safetensors in ``directory`` into ``modules`` (names and shapes checked first)."""
    targets = modules.official_tensors()
    optional = {"lm_head.weight"} if tied else set()
    shapes = checkpoint_shapes(safetensors_files(directory))
    check_keys(str(directory), shapes, set(targets) - optional, optional)
    check_shapes(str(directory), shapes, {k: v for k, v in targets.items() if k not in optional})
    device = next(modules.parameters()).device
    by_file: dict[Path, list[str]] = {}
    for key, (_, path) in shapes.items():
        if key not in optional:
            by_file.setdefault(path, []).append(key)
    for path, keys in by_file.items():
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            for key in keys:
                targets[key].copy_(handle.get_tensor(key))


# ------------------------------------------------------------------------------------- repositories


def resolve_repo(name: str | Path, *, revision: str | None, what: str, patterns: Sequence[str]) -> Path:
    """A local directory as is; otherwise a Hub repo id fetched (or found in the cache) at ``revision``."""
    path = Path(name)
    if path.is_dir():
        return path
    if path.is_absolute() or str(name).startswith((".", "~")) or str(name).count("/") != 1:
        raise TempoLoadError(f"The {what} {str(name)!r} is neither a local directory nor a Hub repo id.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), revision=revision, allow_patterns=list(patterns)))
    except (*HUB_ERRORS, ValueError) as exc:
        raise TempoLoadError(
            f"Cannot fetch the {what} {name} at revision {revision or 'main'} ({type(exc).__name__}); "
            f"the official Tempo variant needs Hub access (or a local copy) of {HUB_ID} and {BASE_VLM}."
        ) from exc


#: Where the relevance rows live in the base VLM: its output head, or the input embedding it is tied to.
HEAD_KEYS = ("lm_head.weight", "model.language_model.embed_tokens.weight")


def fetch_head_file(repo: str, directory: Path, *, revision: str | None) -> Path:
    """The (local or downloaded) safetensors shard of the base VLM holding its output head or embedding."""
    index = directory / "model.safetensors.index.json"
    filename = "model.safetensors"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        filename = next((weight_map[k] for k in HEAD_KEYS if k in weight_map), None)
        if filename is None:
            raise TempoLoadError(f"The base VLM {repo} has neither {' nor '.join(HEAD_KEYS)} in its index.")
    if (directory / filename).exists():
        return directory / filename
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except HUB_ERRORS as exc:
        raise TempoLoadError(
            f"Cannot fetch {filename} of the base VLM {repo} ({type(exc).__name__})."
        ) from exc


# ------------------------------------------------------------------------------------------ base VLM


def load_base_tokenizer(directory: Path):
    """The base VLM's tokenizer, with the processor's chat template when the tokenizer has none."""
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if not tokenizer.chat_template:
        if (directory / "chat_template.json").exists():
            tokenizer.chat_template = json.loads((directory / "chat_template.json").read_text())[
                "chat_template"
            ]
        elif (directory / "chat_template.jinja").exists():
            tokenizer.chat_template = (directory / "chat_template.jinja").read_text()
        else:
            raise TempoLoadError(f"The base VLM at {directory} has no chat template.")
    return tokenizer


def load_preprocess(directory: Path) -> VideoPreprocessConfig:
    """Patch size, temporal patch, merge size, mean and std from the base VLM's processor config."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if (directory / name).exists():
            return VideoPreprocessConfig.from_json(directory / name)
    return VideoPreprocessConfig()


def word_id(tokenizer, word: str) -> int:
    """The vocabulary id of ``word`` (``tokenizer.get_vocab()[word]``, as the authors look it up)."""
    vocab = tokenizer.get_vocab()
    if word not in vocab:
        raise TempoLoadError(f"The base VLM's vocabulary has no entry {word!r} for the relevance head.")
    return int(vocab[word])


def relevance_weight(
    weights: Path, tokenizer, vlm_config: Qwen3VLConfig, *, dtype: torch.dtype
) -> torch.Tensor:
    """[D] float32: row("Yes") - row("No") of the base model's output embedding (``lm_head``, or the input
    embedding when tied), the difference taken in the model's load dtype as the authors' bf16 head does."""
    yes, no = word_id(tokenizer, "Yes"), word_id(tokenizer, "No")
    with safe_open(str(weights), framework="pt") as handle:
        keys = set(handle.keys())
        name = HEAD_KEYS[0]
        if name not in keys:
            if not vlm_config.tie_word_embeddings or HEAD_KEYS[1] not in keys:
                raise TempoLoadError(
                    f"The base VLM file {weights} has no {name} (and no tied embedding to use)."
                )
            name = HEAD_KEYS[1]
        rows = handle.get_slice(name)
        row_yes, row_no = rows[yes : yes + 1].to(dtype), rows[no : no + 1].to(dtype)
    return (row_yes - row_no)[0].float()


# ------------------------------------------------------------------------------------------ sampling


@dataclass(frozen=True)
class SamplePlan:
    """The authors' frame sampling of one video.

    ``indices`` source frame indices; ``source_times`` their presentation times (index / source fps), where
    an app decoding by time should seek; ``real_fps`` = sampled frames / duration, the rate every Tempo
    timestamp uses (a sampled frame i sits at ``i / real_fps`` in the prompts).
    """

    indices: list[int]
    source_times: list[float]
    real_fps: float


def official_sample_indices(
    total_frames: int, source_fps: float, *, fps: float = 2.0, min_frames: int = 4, max_frames: int = 1024
) -> list[int]:
    """``compute_sample_indices`` of infer.py / app.py: round(duration * fps) frames clamped to
    [min_frames, max_frames], at ``round(linspace(0, total - 1, n))``."""
    if total_frames <= 1:
        return [0]
    source_fps = source_fps if source_fps and source_fps > 0 else fps
    wanted = max(1, round(total_frames / source_fps * fps))
    count = min(max(wanted, min_frames), max_frames)
    if count == 1:
        return [total_frames - 1]
    return (
        np.clip(np.round(np.linspace(0, total_frames - 1, count)), 0, total_frames - 1).astype(int).tolist()
    )


def official_sample_plan(
    duration: float, source_fps: float, *, fps: float = 2.0, min_frames: int = 4, max_frames: int = 1024
) -> SamplePlan:
    """The plan for a video of ``duration`` seconds at ``source_fps`` (its frames: round(duration * source_fps))."""
    total = max(1, round(duration * source_fps))
    indices = official_sample_indices(
        total, source_fps, fps=fps, min_frames=min_frames, max_frames=max_frames
    )
    clip = total / source_fps if source_fps > 0 else 0.0
    real_fps = len(indices) / clip if clip > 0 else fps
    return SamplePlan(indices, [i / source_fps if source_fps > 0 else 0.0 for i in indices], real_fps)


# ---------------------------------------------------------------------------------------- frame size


@dataclass(frozen=True)
class FrameRule:
    """How the authors' stack sizes frames, in three steps (defaults: the released inference settings).

    1. ``resize_images`` (mm_datautils.py): a long edge above ``long_edge`` scaled down to it, each side
       rounded to a multiple of ``snap`` (16);
    2. ``fetch_image`` (qwen-vl-utils 0.0.14, ``image_patch_size=16``): sides rounded to ``factor`` (32) with
       image pixel bounds of ``image_min_tokens``..``image_max_tokens`` 32x32 cells;
    3. ``fetch_video``: the same rounding with video bounds ``video_min_tokens``..``video_max_tokens`` cells per
       frame (frames under 128 cells are scaled up).
    The processor then runs with ``do_resize=False``.
    """

    long_edge: int = 512
    snap: int = 16
    factor: int = 32
    image_min_tokens: int = 4
    image_max_tokens: int = 16384
    video_min_tokens: int = 128
    video_max_tokens: int = 768


#: The released inference settings.
OFFICIAL_RULE = FrameRule()


def qwen_smart_resize(
    height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """qwen-vl-utils' per-frame ``smart_resize``: sides to multiples of ``factor``, pixels in bounds."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {height}x{width}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frame_sizes(height: int, width: int, rule: FrameRule = FrameRule()) -> list[tuple[int, int]]:
    """(height, width) after each of the three steps; the last one is what the vision tower sees."""
    h, w = height, width
    if max(h, w) > rule.long_edge:
        ratio = rule.long_edge / max(h, w)
        h = max(rule.snap, int(round(h * ratio / rule.snap) * rule.snap))
        w = max(rule.snap, int(round(w * ratio / rule.snap) * rule.snap))
    cell = rule.factor**2
    first = (h, w)
    second = qwen_smart_resize(
        *first,
        factor=rule.factor,
        min_pixels=rule.image_min_tokens * cell,
        max_pixels=rule.image_max_tokens * cell,
    )
    third = qwen_smart_resize(
        *second,
        factor=rule.factor,
        min_pixels=rule.video_min_tokens * cell,
        max_pixels=rule.video_max_tokens * cell,
    )
    return [first, second, third]


def resize_official(frames: np.ndarray, rule: FrameRule = FrameRule()) -> np.ndarray:
    """[T, H, W, 3] uint8 through the three resizes (each skipped when it keeps the size)."""
    size = frames.shape[1:3]
    for step in frame_sizes(*size, rule):
        if tuple(step) != tuple(size):
            frames, size = resize_frames(frames, step), step
    return frames


# ------------------------------------------------------------------------------------------ segments


@dataclass
class SegmentBatch:
    """The video as the small VLM reads it: one entry per 8-frame segment.

    ``pixel_values`` [sum of patches, C * 2 * 16 * 16] and ``grids`` [S, 3] (groups, gh, gw) as the processor
    returns them for the batch; ``group_times`` per segment, the in-prompt time of each group (mean of its two
    frames' absolute times ``index / real_fps``, padding frames numbered on as qwen-vl-utils numbers them);
    ``frames`` the real frames of each segment; ``frame_size`` the resized (height, width).
    """

    pixel_values: torch.Tensor
    grids: torch.Tensor
    group_times: list[list[float]]
    frames: list[range]
    real_fps: float
    frame_size: tuple[int, int]

    @property
    def num_segments(self) -> int:
        return len(self.frames)

    def centre(self, i: int) -> float:
        """The answer prompt's time of segment i: ``(8 i + 4) / real_fps`` (``compute_segment_timestamp``)."""
        return (SEGMENT_FRAMES * i + SEGMENT_FRAMES / 2) / self.real_fps


def segment_video(
    frames: np.ndarray, real_fps: float, *, preprocess: VideoPreprocessConfig, rule: FrameRule = FrameRule()
) -> SegmentBatch:
    """Frames [T, H, W, 3] uint8 (already sampled) → the small VLM's inputs, 8 frames per segment.

    A 1-frame tail is duplicated (Tempo) and any odd tail padded with its last frame (qwen-vl-utils).
    """
    check_frames(frames, range(len(frames)))
    resized = resize_official(frames, rule)
    values, grids, times, spans = [], [], [], []
    step = preprocess.temporal_patch_size
    for start in range(0, len(resized), SEGMENT_FRAMES):
        chunk = resized[start : start + SEGMENT_FRAMES]
        chunk = np.concatenate([chunk, chunk[-1:].repeat(-len(chunk) % step, axis=0)])
        pixels, grid = patchify(normalize_frames(chunk, preprocess), preprocess)
        index = start + np.arange(len(chunk))
        times.append(
            [float((index[g] + index[g + step - 1]) / 2 / real_fps) for g in range(0, len(chunk), step)]
        )
        values.append(pixels)
        grids.append(grid)
        spans.append(range(start, min(start + SEGMENT_FRAMES, len(frames))))
    return SegmentBatch(
        torch.cat(values),
        torch.tensor(grids, dtype=torch.long),
        times,
        spans,
        real_fps,
        tuple(resized.shape[1:3]),
    )


@dataclass
class _Block:
    """One group of a segment for ``build_layout``: its time text and its visual tokens."""

    text: str
    embeds: torch.Tensor
    positions: torch.Tensor
    deepstack: list[torch.Tensor] = field(default_factory=list)


@dataclass
class Compressed:
    """The small VLM's output: ``memory`` [S, N, D_vlm] last-layer memory states, ``scores`` [S] in (0, 1)."""

    memory: torch.Tensor
    scores: list[float]


# ---------------------------------------------------------------------------------------------- answer


@dataclass
class AnswerPrompt:
    """The answering LLM's input: ``embeds`` [1, L, D_llm] and where each piece sits.

    ``parts`` in order: ("text", ids) for the chat text and each timestamp, ("visual", segment, count) for a
    segment's projected tokens; ``delivered[i]`` visual tokens of segment i that fit the context (after the
    cut from the end); ``cut`` embeddings removed by that cut (timestamps included).
    """

    embeds: torch.Tensor
    parts: list[tuple]
    delivered: list[int]
    cut: int

    @property
    def length(self) -> int:
        return int(self.embeds.shape[1])


class AnswerStream:
    """A greedy answer, streamed: iterate for text deltas; ``text``, ``token_ids`` and ``stats`` afterwards
    (reading ``text`` finishes the generation). Stops at an EOS id (``<|im_end|>`` included, not kept)."""

    def __init__(self, llm, tokenizer, prompt: AnswerPrompt, *, max_new_tokens: int, eos_ids: Sequence[int]):
        self.llm, self.tokenizer, self.prompt = llm, tokenizer, prompt
        self.max_new_tokens, self.eos_ids = max_new_tokens, set(eos_ids)
        self.token_ids: list[int] = []
        self.stats: dict[str, float] = {}
        self._text = ""
        self._stream: Iterator[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._stream is None:
            self._stream = self._run()
        return self._stream

    @property
    def text(self) -> str:
        for _ in self:
            pass
        return self._text

    @torch.inference_mode()
    def _tokens(self) -> Iterator[int]:
        cache = DynamicCache(config=self.llm.config)
        start = time.perf_counter()
        out = self.llm(
            inputs_embeds=self.prompt.embeds, past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        self.stats["prefill_s"] = time.perf_counter() - start
        for _ in range(self.max_new_tokens):
            token = int(out.logits[0, -1].argmax())
            if token in self.eos_ids:
                return
            yield token
            ids = torch.tensor([[token]], device=self.prompt.embeds.device)
            out = self.llm(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)

    def _run(self) -> Iterator[str]:
        start = time.perf_counter()
        for token in self._tokens():
            self.token_ids.append(token)
            delta = self._delta(final=False)
            if delta:
                yield delta
        self.stats.update(decode_s=time.perf_counter() - start - self.stats.get("prefill_s", 0.0))
        self.stats["new_tokens"] = len(self.token_ids)
        tail = self._delta(final=True)
        if tail:
            yield tail

    def _delta(self, *, final: bool) -> str:
        """Text added since the last delta, held back while it ends inside a multi-byte character."""
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if (text.endswith("\ufffd") and not final) or not text.startswith(self._text):
            return ""
        delta, self._text = text[len(self._text) :], text
        return delta


# ----------------------------------------------------------------------------------------- the model


class TempoOfficialModel:
    """Tempo-6B loaded: the modules, both tokenizers, preprocessing numbers and the relevance head.

    Build it with :func:`load_tempo_checkpoint`. Its steps (``segment``, ``compress``, ``answer_prompt``,
    ``answer``) are what ``pipeline.official.TempoOfficial.run`` chains with ATA in between.
    """

    def __init__(self, modules, config, vlm_config, tokenizer, vlm_tokenizer, preprocess, relevance, eos_ids):
        self.modules: TempoModules = modules
        self.config: TempoConfig = config
        self.vlm_config: Qwen3VLConfig = vlm_config
        self.tokenizer = tokenizer
        self.vlm_tokenizer = vlm_tokenizer
        self.preprocess: VideoPreprocessConfig = preprocess
        self.relevance = relevance  # [D_vlm] float32
        self.eos_ids = tuple(eos_ids)
        self.ids = SpecialIds(
            vision_start=vlm_config.vision_start_token_id,
            vision_end=vlm_config.vision_end_token_id,
            video_pad=vlm_config.video_token_id,
            pad=vlm_tokenizer.pad_token_id,
        )

    @property
    def device(self) -> torch.device:
        return self.modules.compressor.compression_tokens.device

    @property
    def num_memory_tokens(self) -> int:
        return self.config.num_memory_tokens

    @property
    def _vlm(self) -> Qwen3VLModel:
        return self.modules.compressor.vlm.model

    def segment(self, frames: np.ndarray, real_fps: float, *, rule: FrameRule = FrameRule()) -> SegmentBatch:
        return segment_video(frames, real_fps, preprocess=self.preprocess, rule=rule)

    # ---------------------------------------------------------------- small VLM

    def _groups(self, batch: SegmentBatch, chunk: range) -> list[list[_Block]]:
        """Each segment's groups as prompt blocks: one vision pass over the chunk's segments."""
        grids = batch.grids[chunk.start : chunk.stop]
        patches = batch.grids.prod(-1).tolist()
        first, last = sum(patches[: chunk.start]), sum(patches[: chunk.stop])
        out = self._vlm.get_video_features(
            batch.pixel_values[first:last].to(self.device), grids.to(self.device), return_dict=True
        )
        merge = self.vlm_config.vision_config.spatial_merge_size
        segments = []
        for j, (g, gh, gw) in enumerate(grids.tolist()):
            h, w = gh // merge, gw // merge
            embeds = out.pooler_output[j].reshape(g, h * w, -1)
            levels = [level[j].reshape(g, h * w, -1) for level in out.deepstack_features]
            times = batch.group_times[chunk.start + j]
            positions = grid_positions(h, w)
            segments.append(
                [
                    _Block(timestamp_text(times[i]), embeds[i], positions, [x[i] for x in levels])
                    for i in range(g)
                ]
            )
        return segments

    def segment_prompt(
        self, blocks: list[_Block], question: str, *, system: str, user_template: str
    ) -> PromptLayout:
        """One segment's prompt: [system, user: its groups then ``user_template``, generation prompt]."""
        query = question if question.strip() else EMPTY_QUERY
        levels = len(self.vlm_config.vision_config.deepstack_visual_indexes)
        user = user_template.format(question=query)
        return build_layout(
            self.vlm_tokenizer, self.ids, blocks, user, system=system, deepstack_levels=levels
        )

    @torch.inference_mode()
    def _memory_pass(self, layouts: Sequence[PromptLayout]) -> tuple[torch.Tensor, list[float]]:
        """One right-padded batch: each prompt then N memory tokens; returns memory states and scores."""
        n, device = self.num_memory_tokens, self.device
        lengths = [x.input_ids.numel() for x in layouts]
        total = max(lengths) + n
        text = self._vlm.language_model
        memory = self.modules.compressor.compression_tokens[0]
        hidden = torch.zeros(len(layouts), total, memory.shape[-1], dtype=memory.dtype, device=device)
        positions = torch.zeros(3, len(layouts), total, dtype=torch.long)
        visual = torch.zeros(len(layouts), total, dtype=torch.bool)
        for b, (x, length) in enumerate(zip(layouts, lengths, strict=True)):
            row = text.embed_tokens(x.input_ids.to(device))
            row[x.visual_mask.to(device)] = x.embeds.to(device, row.dtype)
            hidden[b, :length], hidden[b, length : length + n] = row, memory
            positions[:, b, :length] = x.positions
            # Memory tokens (then padding) continue the text positions after the prompt's largest one.
            positions[:, b, length:] = x.max_position + 1 + torch.arange(total - length)
            visual[b, :length] = x.visual_mask
        deepstack = [
            torch.cat([x.deepstack[i] for x in layouts]).to(device) for i in range(len(layouts[0].deepstack))
        ]
        out = text(
            inputs_embeds=hidden,
            position_ids=positions.to(device),
            visual_pos_masks=visual.to(device),
            deepstack_visual_embeds=deepstack,
            use_cache=False,
        ).last_hidden_state
        rows = torch.arange(len(layouts), device=device)
        last = torch.tensor(lengths, device=device)
        before = out[rows, last - 1].float()  # the state just before the first memory token
        scores = torch.sigmoid(before @ self.relevance.to(device)).tolist()
        states = torch.stack([out[b, length : length + n] for b, length in enumerate(lengths)])
        return states, scores

    def compress(
        self,
        batch: SegmentBatch,
        question: str,
        *,
        system: str,
        user_template: str,
        chunk_size: int | None = None,
    ) -> Compressed:
        """Relevance scores and memory states of every segment (``chunk_size`` segments per forward pass;
        None: all in one batch, as the authors run them)."""
        step = chunk_size or batch.num_segments
        states, scores = [], []
        for start in range(0, batch.num_segments, step):
            chunk = range(start, min(start + step, batch.num_segments))
            with torch.inference_mode():
                groups = self._groups(batch, chunk)
            layouts = [
                self.segment_prompt(g, question, system=system, user_template=user_template) for g in groups
            ]
            memory, score = self._memory_pass(layouts)
            states.append(memory)
            scores += score
        return Compressed(torch.cat(states), scores)

    # ---------------------------------------------------------------- answering LLM

    def _text_embeds(self, text: str, *, question: str | None = None) -> tuple[list[int], torch.Tensor]:
        """Ids and embeddings of ``text``; a ``{question}`` slot in it is filled as plain text (``encode_plain``:
        special-token strings a visitor types stay text, never control tokens)."""
        if question is None:
            ids = encode_text(self.tokenizer, text)
        else:
            head, tail = text.split("{question}")
            ids = encode_plain(self.tokenizer, head + question) + encode_text(self.tokenizer, tail)
        embed = self.modules.llm.get_input_embeddings()
        return ids, embed(torch.tensor(ids, dtype=torch.long, device=self.device))

    @torch.inference_mode()
    def answer_prompt(
        self, kept: Sequence[torch.Tensor], centres: Sequence[float], question: str, *, context_limit: int
    ) -> AnswerPrompt:
        """The LLM input for ``kept[i]`` [k_i, D_vlm] (the first k_i memory states of segment i, k_i = 0 drops
        it) at ``centres[i]`` seconds; visual embeddings beyond ``context_limit - 16 - text`` are cut from the
        end (``prepare_inputs_labels_for_multimodal``)."""
        pre_ids, pre = self._text_embeds(ANSWER_PREFIX)
        post_ids, post = self._text_embeds(ANSWER_SUFFIX, question=question)
        sizes = [int(k.shape[0]) for k in kept]
        projected = list(self.modules.projector(torch.cat(list(kept)).to(self.device)).split(sizes))
        pieces, parts = [], []
        for i, (tokens, centre) in enumerate(zip(projected, centres, strict=True)):
            if tokens.shape[0] == 0:
                continue
            ids, stamp = self._text_embeds(timestamp_text(centre))
            pieces += [stamp, tokens.to(stamp.dtype)]
            parts += [("text", ids), ("visual", i, int(tokens.shape[0]))]
        visual = torch.cat(pieces) if pieces else pre[:0]
        room = max(0, context_limit - INFERENCE_RESERVE - len(pre_ids) - len(post_ids))
        parts, delivered = _cut_parts(parts, room, len(kept))
        embeds = torch.cat([pre, visual[:room], post])[:context_limit]
        return AnswerPrompt(
            embeds=embeds[None],
            parts=[("text", pre_ids), *parts, ("text", post_ids)],
            delivered=delivered,
            cut=max(0, visual.shape[0] - room),
        )

    def answer(self, prompt: AnswerPrompt, *, max_new_tokens: int) -> AnswerStream:
        return AnswerStream(
            self.modules.llm, self.tokenizer, prompt, max_new_tokens=max_new_tokens, eos_ids=self.eos_ids
        )


def _cut_parts(parts: list[tuple], room: int, segments: int) -> tuple[list[tuple], list[int]]:
    """Keep the first ``room`` embeddings of the visual parts; per-segment delivered token counts."""
    kept, delivered, used = [], [0] * segments, 0
    for part in parts:
        size = len(part[1]) if part[0] == "text" else part[2]
        take = max(0, min(size, room - used))
        used += take
        if take == 0:
            continue
        if part[0] == "text":
            kept.append(("text", part[1][:take]))
        else:
            kept.append(("visual", part[1], take))
            delivered[part[1]] = take
    return kept, delivered


# ---------------------------------------------------------------------------------------------- loading


def eos_ids_for(directory: Path, tokenizer) -> list[int]:
    """Stop ids: ``<|im_end|>`` (the stop string of the "qwen" template) and the generation config's EOS."""
    ids = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    path = directory / "generation_config.json"
    if path.exists():
        eos = json.loads(path.read_text()).get("eos_token_id")
        ids += [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return [i for i in dict.fromkeys(ids) if isinstance(i, int) and i >= 0]


def load_tempo_checkpoint(
    path_or_hub_id: str | Path = HUB_ID,
    *,
    revision: str | None = None,
    base_vlm: str | Path = BASE_VLM,
    base_revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> TempoOfficialModel:
    """Load Tempo-6B (local directory or Hub id) with its base VLM; bf16 on CUDA, fp32 on CPU by default.

    Raises TempoLoadError (a ``ModelLoadError``): one sentence when files cannot be had or the config is not
    Tempo's; the missing and unexpected checkpoint keys, grouped, when names differ (nothing is loaded then);
    the tensors whose shapes disagree with ``config.json``.
    """
    where = resolve_device(device)
    dtype = dtype or dtype_for(where)
    tempo_dir = resolve_repo(
        path_or_hub_id,
        revision=revision,
        what="Tempo checkpoint",
        patterns=[*_META_PATTERNS, "*.safetensors"],
    )
    base_dir = resolve_repo(base_vlm, revision=base_revision, what="base VLM", patterns=_META_PATTERNS)
    config = read_config(tempo_dir)
    try:
        vlm_config = Qwen3VLConfig.from_pretrained(str(base_dir))
        tokenizer = AutoTokenizer.from_pretrained(str(tempo_dir), config=config.llm)  # not tempo_qwen's
    except (OSError, ValueError) as exc:
        raise TempoLoadError(f"Cannot read the configs or tokenizers ({type(exc).__name__}: {exc}).") from exc
    vlm_config._attn_implementation = "sdpa"
    vlm_tokenizer = load_base_tokenizer(base_dir)
    weights = fetch_head_file(str(base_vlm), base_dir, revision=base_revision)
    relevance = relevance_weight(weights, vlm_tokenizer, vlm_config, dtype=dtype).to(where)
    modules = build_modules(config, vlm_config, device=where, dtype=dtype)
    load_checkpoint(modules, tempo_dir, tied=config.tied)
    return TempoOfficialModel(
        modules,
        config,
        vlm_config,
        tokenizer,
        vlm_tokenizer,
        load_preprocess(base_dir),
        relevance,
        eos_ids_for(tempo_dir, tokenizer),
    )
