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

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, DynamicCache, Qwen3VLConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

from model_zoo.loading import dtype_for, resolve_device
from model_zoo.preprocess import VideoPreprocessConfig
from model_zoo.prompt import PromptLayout, SpecialIds, build_layout, encode_plain, encode_text
from model_zoo.qwen3_vl import grid_positions
from model_zoo.tempo_official_config import (
    ANSWER_PREFIX,
    ANSWER_SUFFIX,
    BASE_VLM,
    EMPTY_QUERY,
    HUB_ID,
    INFERENCE_RESERVE,
    TempoConfig,
    TempoLoadError,
    TempoModules,
    build_modules,
    read_config,
    timestamp_text,
)
from model_zoo.tempo_official_frames import OFFICIAL_RULE, FrameRule, SegmentBatch, segment_video
from model_zoo.tempo_official_weights import (
    META_PATTERNS,
    eos_ids_for,
    fetch_checkpoint,
    fetch_head_file,
    load_base_tokenizer,
    load_checkpoint,
    load_preprocess,
    relevance_weight,
    resolve_repo,
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

    def segment(
        self, frames: np.ndarray, real_fps: float, *, rule: FrameRule = OFFICIAL_RULE
    ) -> SegmentBatch:
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
    tempo_dir = fetch_checkpoint(path_or_hub_id, revision=revision)
    base_dir = resolve_repo(base_vlm, revision=base_revision, what="base VLM", patterns=META_PATTERNS)
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
