"""VideoChat-Flash-2B and the official XComp, rebuilt on transformers' ``Qwen2ForCausalLM`` (no remote code).

Papers: VideoChat-Flash, Li et al., arXiv 2501.00574 (``OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448``, model
card licence apache-2.0, code MIT); XComp, "One Token per Highly Selective Frame", Zhang et al., NeurIPS 2025,
arXiv 2604.14149 (github.com/ZheyuAqaZhang/XComp, MIT; a fine-tune of that model whose ``model.safetensors``
the authors publish on a file-sharing drive). Authors' files, read for every fact below (none of their
lines used), under XComp's ``lmms-eval_videochat/``: ``benchmark_data/model/VideoChat-Flash-Qwen2_5-2B_res448_ver7/``
(the Hub model's remote code as they run it: ``modeling_videochat_flash.py``, ``mm_utils.py``,
``conversation.py``, ``generation_config.json``), ``lmms_eval/models/videochat_flash.py``,
``my_scripts_XComp/run.sh`` and ``readme.md``.

Parts and checkpoint names (module attribute paths of ``VideoChatFlashQwenForCausalLM``; XComp saves the same
names from ``llava_qwen.LlavaQwenForCausalLM`` and loads them into that class):
``model.embed_tokens.*``, ``model.layers.*``, ``model.norm.*``, ``lm_head.*`` (absent when tied): the Qwen2 LLM;
``model.vision_tower.vision_tower.encoder.*``: UMT-L (``model_zoo.umt``); ``model.mm_projector.mlp.{0,2}.*``: the
ToMe projector. No other tensor is expected (the newline parameters exist only for ``*unpad`` / newline
settings the config does not use; XComp's condensers have no weights).

Inference (``chat`` in modeling_videochat_flash.py, ``load_video`` / ``get_frame_indices`` in mm_utils.py):
frames = 8 x floor(fps x duration / 8), clamped to [min, max] (``SamplingRule``), the middle frame of each of
that many equal intervals; prompt ``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n``
+ video + ``\\nThe video lasts for {d:.2f} seconds, and {n} frames are uniformly sampled from it. {question}
<|im_end|>\\n<|im_start|>assistant\\n`` ("qwen_2" template); greedy decoding with the checkpoint's repetition
penalty, stop at ``<|im_end|>`` / ``<|endoftext|>``.

XComp as ``run.sh`` runs it: the base model's config, tokenizer and generation settings with XComp's
``model.safetensors`` (its own config.json, if any, is not read: it says 8-frame clips, its training setting,
where ``run.sh`` runs the base's 4); LP-Comp in every
forward; from 1024 sampled frames QC-Comp first scores them (``chat`` l. 1274-1353): segments of 512 + 64
frames every 512, cyclically, repeated ``duplicates`` times shifted by 8/d + 512/d frames; each segment runs
the model (prefill) and scores its 8-frame clips at every layer (``videochat_flash_llm``); a frame's score sums
over layers 6..23 its mean over the segments where its clip was not an edge clip; the best ``k`` frames,
back in temporal order, are answered with.

Departures (ours): bf16 on CUDA (the model card's dtype; the authors' eval scripts use fp16); frames come
decoded by the caller and are taken as the video's, evenly spaced; the budget B allows k = B // 128 * 8
frames (16 tokens each, whole 8-frame units): when more frames are sampled
and QC-Comp does not run (fewer than 1024 frames, or VideoChat-Flash), the k frames are taken evenly from
them (the authors would feed them all); a frame QC-Comp could not score ranks last (the authors divide by
zero); scoring runs prefill only (the authors also decode a discarded answer).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from transformers.initialization import no_init_weights

from model_zoo import umt
from model_zoo import videochat_flash_llm as llm_ops
from model_zoo.loading import HUB_ERRORS, default_dtype, dtype_for
from model_zoo.preprocess import check_frames
from model_zoo.prompt import encode_plain, encode_text
from model_zoo.videochat_flash_frames import (
    VIDEOCHAT_FLASH_SAMPLING,
    XCOMP_SAMPLING,
    FlashRunError,
    SamplingRule,
    frames_for_budget,
    middle_indices,
    official_frame_indices,
    qc_segments,
    select_frames,
)
from model_zoo.videochat_flash_weights import VideoChatFlashLoadError, load_strict

HUB_ID = "OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448"
#: The pinned commit of HUB_ID. None (the Hub's main) until the maintainer pins one: no stored material
#: carries a commit id of that repository.
REVISION: str | None = None
LICENSE = "apache-2.0"  # model card of HUB_ID (its code: MIT)
XCOMP_LICENSE = "MIT"
XCOMP_WEIGHTS_URL = "https://drive.google.com/file/d/1fubZjI640E2JZKWooX0xC2CsV8aCQyRh/view?usp=sharing"

VISION_PREFIX = "model.vision_tower.vision_tower.encoder."
PROJECTOR_PREFIX = "model.mm_projector."
SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
ASSISTANT_TURN = "<|im_start|>assistant\n"
STOP = "<|im_end|>"  # the "qwen_2" template's separator, the authors' stop string

_TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
    "attention_dropout", "bos_token_id", "eos_token_id", "initializer_range",
)  # fmt: skip
_META = ["*.json", "*.txt", "tokenizer*", "vocab*", "merges*"]
_WEIGHTS = ["model.safetensors*", "pytorch_model.bin*"]


@dataclass(frozen=True, kw_only=True)
class XCompOptions:
    """XComp's inference settings. ``lp_schedule``: tokens per frame N(0..L) (``compressors.xcomp.lp_schedule``;
    None turns LP-Comp off); ``qc_layers``: the layers whose clip scores are summed (the authors' 6..23 of 28,
    ``compressors.xcomp.qc_layers``); the rest are ``run.sh``'s environment and ``chat``'s constants."""

    lp_schedule: tuple[int, ...] | None
    qc_layers: tuple[int, ...]
    windows: llm_ops.ScoreWindows = llm_ops.ScoreWindows()
    segment_frames: int = 512  # ``max_segments = stride = 512``
    duplicates: int = 2  # EXTRA_PARAM_DUPLICATE in the example scripts
    min_frames: int = 1024  # QC-Comp runs only from this many sampled frames


@dataclass
class FlashConfig:
    """What ``config.json`` says: the Qwen2 text config, the UMT sizes, the projector input width."""

    text: Qwen2Config
    vision: umt.UMTConfig
    mm_hidden_size: int


def read_config(directory: Path, vision: umt.UMTConfig | None = None) -> FlashConfig:
    """Parse ``config.json`` of a VideoChat-Flash checkpoint (UMT tower, ``tome16_mlp_hd64`` projector)."""
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VideoChatFlashLoadError(f"Cannot read {path} ({type(exc).__name__}: {exc}).") from exc
    tower, projector = str(data.get("mm_vision_tower", "")), data.get("mm_projector_type")
    if "umt" not in tower or projector != "tome16_mlp_hd64" or "num_hidden_layers" not in data:
        raise VideoChatFlashLoadError(
            f"{path} is not a VideoChat-Flash config (vision tower {tower!r}, projector {projector!r})."
        )
    text = {k: data[k] for k in _TEXT_KEYS if k in data}
    scaling = dict(data.get("rope_scaling") or {})  # null in the 2B model's config: plain RoPE
    kind = scaling.pop("rope_type", scaling.pop("type", "default"))
    rope = {**scaling, "rope_type": kind, "rope_theta": float(data.get("rope_theta", 1e6))}
    base = vision or umt.UMTConfig(image_size=448 if "umt-hd" in tower else 224)  # ``build_vision_tower``
    sizes = dict(
        frames=int(data.get("mm_local_num_frames", 4)),
        select_layer=int(data.get("mm_vision_select_layer", -2)),
    )
    return FlashConfig(
        text=Qwen2Config(**text, rope_parameters=rope, use_sliding_window=False),
        vision=umt.UMTConfig(**{**base.__dict__, **sizes}),
        mm_hidden_size=int(data.get("mm_hidden_size", base.width)),
    )


class FlashModules(nn.Module):
    """The three trained parts; ``official_tensors`` names each tensor as the checkpoint does."""

    def __init__(self, config: FlashConfig) -> None:
        super().__init__()
        if config.mm_hidden_size != config.vision.width:
            raise VideoChatFlashLoadError(
                f"mm_hidden_size {config.mm_hidden_size} differs from the UMT width {config.vision.width}."
            )
        self.llm = Qwen2ForCausalLM(config.text)
        self.vision = umt.UMTEncoder(config.vision)
        self.projector = umt.ToMeProjector(config.vision.width, config.text.hidden_size, config.vision.heads)

    def official_tensors(self) -> dict[str, torch.Tensor]:
        named = dict(self.llm.state_dict(keep_vars=True))
        named |= {VISION_PREFIX + k: v for k, v in self.vision.state_dict(keep_vars=True).items()}
        return named | {PROJECTOR_PREFIX + k: v for k, v in self.projector.state_dict(keep_vars=True).items()}


def build_modules(config: FlashConfig, *, device, dtype) -> FlashModules:
    """Empty modules on ``device`` in ``dtype`` (every tensor is loaded next), sdpa attention."""
    config.text._attn_implementation = "sdpa"
    with torch.device(device), default_dtype(dtype), no_init_weights():
        modules = FlashModules(config)
    if config.text.tie_word_embeddings:
        modules.llm.tie_weights()  # post_init's tie is skipped under no_init_weights
    return modules.eval()


# ----------------------------------------------------------------------------------------------- the model


class ClipFeatures:
    """Projected features of 4-frame clips, keyed by the given frames' indices (each clip encoded once per
    run: QC-Comp's segments share most of theirs). Times preprocessing and encoding into ``timings``."""

    def __init__(
        self, modules: FlashModules, frames: np.ndarray, timings: dict[str, float], batch: int
    ) -> None:
        self.modules, self.frames, self.timings, self.batch = modules, frames, timings, batch
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    @torch.inference_mode()
    def __call__(self, indices: Sequence[int]) -> torch.Tensor:
        """[len(indices) * 16, D] for frames ``indices`` (into the given frames), clips of consecutive ones."""
        f = self.modules.vision.config.frames
        keys = [tuple(indices[i : i + f]) for i in range(0, umt.clip_count(len(indices), f) * f, f)]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        for start in range(0, len(missing), self.batch):
            self._encode(missing[start : start + self.batch])
        return torch.cat([self.cache[k] for k in keys])

    def _encode(self, keys: list[tuple[int, ...]]) -> None:
        tick = time.perf_counter()
        size = self.modules.vision.config.image_size
        pixels = umt.preprocess_frames(self.frames[[i for k in keys for i in k]], size)
        self.timings["preprocess_s"] = self.timings.get("preprocess_s", 0.0) + time.perf_counter() - tick
        tick = time.perf_counter()
        vision = self.modules.vision
        pixels = pixels.to(vision.patch_embed.proj.weight.device, vision.patch_embed.proj.weight.dtype)
        features = umt.encode_frames(vision, self.modules.projector, pixels, batch=len(keys))
        for key, value in zip(keys, features.split(umt.TOKENS_PER_FRAME * len(keys[0])), strict=True):
            self.cache[key] = value
        self.timings["encode_s"] = self.timings.get("encode_s", 0.0) + time.perf_counter() - tick


@dataclass
class FlashRun:
    """One answer. Iterate for text deltas; ``text`` waits for the whole (stripped) answer.

    Frames are indices into the frames given to ``run`` (``frame_indices`` may repeat a frame, as the
    authors' sampler does for short videos). ``raw_tokens``: encoder patches of the sampled frames (784 each);
    ``llm_tokens``: visual tokens into the LLM (16 per kept frame); ``layer_tokens``: visual tokens each
    decoder layer sees (LP-Comp); ``frame_scores``: QC-Comp's score per sampled frame (None when it did not
    run); ``timings``: ``preprocess_s`` and ``encode_s`` over every frame encoded, ``select_s`` QC-Comp's
    whole time (its encoding included), then the stream's ``prefill_s`` / ``decode_s`` in ``stream.stats``;
    ``notes``: where this run departed from the authors' flow.
    """

    method: str
    question: str
    budget: int
    frame_indices: list[int]
    kept_frames: list[int]
    frame_scores: list[float] | None
    raw_tokens: int
    llm_tokens: int
    layer_tokens: list[int]
    prompt_tokens: int
    stream: llm_ops.FlashAnswer
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        return iter(self.stream)

    @property
    def text(self) -> str:
        return self.stream.text.strip()


def plan_drops(xcomp: XCompOptions | None, layers: int) -> dict[int, int]:
    """LP-Comp's drops for ``layers`` decoder layers ({} without XComp); refuses options that do not fit."""
    if xcomp is None:
        return {}
    if not xcomp.qc_layers or any(not 0 <= j < layers for j in xcomp.qc_layers):
        raise FlashRunError(f"qc_layers must lie in 0..{layers - 1}, got {list(xcomp.qc_layers)}")
    return llm_ops.lp_drops(xcomp.lp_schedule, layers)


class VideoChatFlash:
    """VideoChat-Flash-2B loaded (``load_videochat_flash``), or XComp (``load_xcomp``: with ``xcomp``)."""

    def __init__(self, modules, config, tokenizer, *, penalty, eos_ids, sampling, xcomp=None) -> None:
        self.modules: FlashModules = modules
        self.config: FlashConfig = config
        self.tokenizer = tokenizer
        self.penalty, self.eos_ids = float(penalty), tuple(eos_ids)
        self.sampling: SamplingRule = sampling
        self.xcomp: XCompOptions | None = xcomp
        self.drops = plan_drops(xcomp, config.text.num_hidden_layers)

    @property
    def method(self) -> str:
        return "videochat-flash" if self.xcomp is None else "xcomp"

    def _prompt(self, visual: torch.Tensor, frames: int, before: list[int], after: list[int], gen: list[int]):
        embed = self.modules.llm.get_input_embeddings()
        device = embed.weight.device
        text = [embed(torch.tensor(ids, dtype=torch.long, device=device)) for ids in (before, after + gen)]
        embeds = torch.cat([text[0], visual.to(text[0].dtype), text[1]])
        start = len(before)
        return llm_ops.FlashPrompt(embeds, start, frames, start + visual.shape[0] + len(after))

    def _texts(self, duration: float, frames: int, question: str) -> tuple[list[int], list[int], list[int]]:
        message = (
            f"The video lasts for {duration:.2f} seconds, and {frames} frames are uniformly sampled from it."
        )
        tok = self.tokenizer
        # the question is the visitor's: typed special-token strings stay plain text (``encode_plain``)
        after = encode_plain(tok, f"\n{message} {question}") + encode_text(tok, f"{STOP}\n")
        return encode_text(tok, SYSTEM_TURN), after, encode_text(tok, ASSISTANT_TURN)

    def _qc_select(self, picked, features, texts, keep) -> tuple[list[int], list[float]]:
        """QC-Comp: score every sampled frame over the authors' cyclic segments; the best ``keep``, in order."""
        opts = self.xcomp
        extra = 2 * opts.windows.stride * llm_ops.CLIP_FRAMES  # ``max_segments += b * 8 * 2``
        segments = qc_segments(
            len(picked), stride=opts.segment_frames, extra=extra, duplicates=opts.duplicates
        )
        scores = []
        for segment in segments:
            visual = features([picked[i] for i in segment])
            prompt = self._prompt(visual, len(segment), texts[0], texts[1], [])  # no assistant turn: not read
            scores.append(
                llm_ops.segment_scores(self.modules.llm, prompt, self.drops, opts.qc_layers, opts.windows)
            )
        return select_frames(segments, scores, len(picked), keep)

    def _choose(self, picked, features, texts, keep, timings, notes) -> tuple[list[int], list[float] | None]:
        """Positions in ``picked`` to answer from, and QC-Comp's frame scores (None when it does not run)."""
        if len(picked) <= keep:
            return list(range(len(picked))), None
        if self.xcomp is not None and len(picked) >= self.xcomp.min_frames:
            tick = time.perf_counter()
            chosen, scores = self._qc_select(picked, features, texts, keep)
            timings["select_s"] = time.perf_counter() - tick
            return chosen, scores
        notes.append(f"{len(picked)} sampled frames exceed the budget's {keep}: {keep} taken evenly")
        return middle_indices(keep, len(picked)), None

    def run(
        self,
        frames: np.ndarray,
        duration: float,
        question: str,
        *,
        budget: int,
        max_new_tokens: int = 1024,
        encode_batch: int = 8,
    ) -> FlashRun:
        """Answer ``question`` about ``frames`` [T, H, W, 3] uint8 RGB spanning ``duration`` seconds.

        The given frames are taken as the video's, evenly spaced: the authors' rule picks from them
        (identity when they were decoded at ``official_frame_indices`` of the source). Frame selection and
        encoding run now (``timings``); prefill with LP-Comp and decoding run while the result is iterated.
        """
        check_frames(frames, range(len(frames)))
        if not (math.isfinite(duration) and duration > 0) or max_new_tokens < 1:
            raise FlashRunError(
                f"need a duration > 0 s and max_new_tokens >= 1, got {duration} and {max_new_tokens}"
            )
        keep, timings, notes = frames_for_budget(budget), {}, []
        picked = official_frame_indices(duration, len(frames), self.sampling)
        features = ClipFeatures(self.modules, frames, timings, encode_batch)
        texts = self._texts(duration, len(picked), question)
        chosen, scores = self._choose(picked, features, texts, keep, timings, notes)
        kept = [picked[i] for i in chosen]
        prompt = self._prompt(features(kept), len(kept), *texts)
        counts = llm_ops.layer_counts(self.drops, self.config.text.num_hidden_layers, umt.TOKENS_PER_FRAME)
        stream = llm_ops.FlashAnswer(
            self.modules.llm, self.tokenizer, prompt,
            drops=self.drops, penalty=self.penalty, max_new_tokens=max_new_tokens, eos_ids=self.eos_ids,
        )  # fmt: skip
        return FlashRun(
            method=self.method,
            question=question,
            budget=budget,
            frame_indices=picked,
            kept_frames=kept,
            frame_scores=scores,
            raw_tokens=len(picked) * self.config.vision.patches,
            llm_tokens=len(kept) * umt.TOKENS_PER_FRAME,
            layer_tokens=[len(kept) * n for n in counts],
            prompt_tokens=prompt.length,
            stream=stream,
            timings=timings,
            notes=notes,
        )


# --------------------------------------------------------------------------------------------------- loading


def resolve(name: str | Path, *, revision: str | None, what: str, patterns: Sequence[str]) -> Path:
    """A local directory as is; a Hub repo id fetched (or found in the cache) at ``revision``."""
    path = Path(name)
    if path.is_dir():
        return path
    if path.is_absolute() or str(name).startswith((".", "~")) or str(name).count("/") != 1:
        raise VideoChatFlashLoadError(
            f"The {what} {str(name)!r} is neither a local directory nor a Hub repo id."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), revision=revision, allow_patterns=list(patterns)))
    except (*HUB_ERRORS, ValueError) as exc:
        raise VideoChatFlashLoadError(
            f"Cannot fetch the {what} {name} at revision {revision or 'main'} ({type(exc).__name__}); it needs "
            "Hub access or a local copy."
        ) from exc


def pick_device(device: str | torch.device | None) -> torch.device:
    """``device`` as given; by default CUDA, and without one a one-sentence refusal (2B on CPU: minutes)."""
    if device is not None:
        return torch.device(device)
    if not torch.cuda.is_available():
        raise VideoChatFlashLoadError(
            "VideoChat-Flash and XComp need a CUDA GPU, and none is available here."
        )
    return torch.device("cuda")


def generation_settings(directory: Path, tokenizer) -> tuple[float, list[int]]:
    """(repetition penalty, stop ids) from ``generation_config.json``, the template's stop and the tokenizer."""
    path, data = directory / "generation_config.json", {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise VideoChatFlashLoadError(f"Cannot read {path} ({type(exc).__name__}: {exc}).") from exc
    eos = data.get("eos_token_id")
    ids = [tokenizer.convert_tokens_to_ids(STOP), *([eos] if isinstance(eos, int) else eos or [])]
    ids.append(tokenizer.eos_token_id)
    stops = [i for i in dict.fromkeys(ids) if isinstance(i, int) and i >= 0]
    return float(data.get("repetition_penalty") or 1.0), stops


def assemble(
    base: Path, weights: Path, *, what: str, device, dtype, vision, sampling, xcomp
) -> VideoChatFlash:
    """Config, tokenizer and generation settings from ``base``; strictly loaded weights from ``weights``."""
    where = pick_device(device)
    config = read_config(base, vision)
    plan_drops(xcomp, config.text.num_hidden_layers)  # before any weight is read
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base), config=config.text)  # not videochat_flash_qwen's
    except (OSError, ValueError) as exc:
        raise VideoChatFlashLoadError(f"Cannot read the tokenizer in {base} ({type(exc).__name__}).") from exc
    penalty, eos_ids = generation_settings(base, tokenizer)
    modules = build_modules(config, device=where, dtype=dtype or dtype_for(where))
    optional = {"lm_head.weight"} if config.text.tie_word_embeddings else set()
    targets = {k: v for k, v in modules.official_tensors().items() if k not in optional}
    load_strict(weights, what, targets, optional)
    return VideoChatFlash(
        modules, config, tokenizer, penalty=penalty, eos_ids=eos_ids, sampling=sampling, xcomp=xcomp
    )


def load_videochat_flash(
    path_or_hub_id: str | Path = HUB_ID,
    *,
    revision: str | None = REVISION,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    sampling: SamplingRule = VIDEOCHAT_FLASH_SAMPLING,
    vision: umt.UMTConfig | None = None,
) -> VideoChatFlash:
    """VideoChat-Flash-2B from a directory or the Hub; bf16 on CUDA. ``device=None`` needs CUDA (an explicit
    device is honoured). ``vision`` overrides the UMT-L sizes (tests). Raises ``VideoChatFlashLoadError`` (a
    ``model_zoo.ModelLoadError``) with one sentence: no GPU, files not fetched, not this model's config, or
    key names / shapes unlike the checkpoint's (nothing loaded then)."""
    pick_device(device)
    directory = resolve(path_or_hub_id, revision=revision, what="checkpoint", patterns=[*_META, *_WEIGHTS])
    return assemble(
        directory, directory, what="VideoChat-Flash-2B", device=device, dtype=dtype, vision=vision,
        sampling=sampling, xcomp=None,
    )  # fmt: skip


def load_xcomp(
    weights: str | Path,
    *,
    options: XCompOptions,
    weights_revision: str | None = None,
    base: str | Path = HUB_ID,
    base_revision: str | None = REVISION,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    sampling: SamplingRule = XCOMP_SAMPLING,
    vision: umt.UMTConfig | None = None,
) -> VideoChatFlash:
    """XComp as ``run.sh`` runs it: ``base``'s config, tokenizer and generation settings (VideoChat-Flash-2B)
    with the ``model.safetensors`` (or ``.bin``) in ``weights``, a directory or a Hub repo id set by the
    Space's maintainer. Errors as ``load_videochat_flash``."""
    pick_device(device)
    base_dir = resolve(base, revision=base_revision, what="base model", patterns=_META)
    weights_dir = resolve(weights, revision=weights_revision, what="XComp weights", patterns=_WEIGHTS)
    return assemble(
        base_dir, weights_dir, what="XComp", device=device, dtype=dtype, vision=vision, sampling=sampling,
        xcomp=options,
    )  # fmt: skip
