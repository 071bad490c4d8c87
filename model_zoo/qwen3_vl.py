"""The Qwen3-VL backbone adapter: encode a video once, answer from any set of visual tokens.

``Qwen3VLBackbone`` wraps a transformers ``Qwen3VLForConditionalGeneration`` and its tokenizer. It implements
``compressors.base.BackboneHooks`` structurally (``num_layers``, ``clip_attention``, ``next_token_logits``)
without importing ``compressors``: segments are any objects with ``text``/``embeds``/``positions``/
``deepstack`` (``model_zoo.prompt.VisualSegmentLike``). ``generate`` answers one request; ``generate_many``
answers several in one batched decode, each exactly as ``generate`` would (the streaming answers live in
``model_zoo.generation``; the model runs in ``model_zoo.engine``).

Prompt prefixes. Every prompt is [chat prefix, visual tokens, question, chat suffix]; everything before the
question is an ``engine.PrefixKV`` that a ``PrefixStore`` (any object with ``get``/``put``) may keep under a
key the caller chooses. ``generate``/``generate_many`` (``GenerationRequest.prefix_key``),
``next_token_logits`` (``prefix_keys``) and ``clip_attention`` (``prefix_key``) then run a follow-up
question's own rows only. With a key, ``generate`` runs the prefix on its own first, so an answer is bit for
bit the same whether its prefix was found or computed; ``next_token_logits`` and ``clip_attention`` always
split the prompt that way (computed prefixes run as one batch, so a prefix found in the store is bit for bit
the one that batch computed, and within fp32 rounding of one computed alone). ``generate`` without a key
runs the prompt whole; a model whose attention kernel takes no additive mask (flash) reuses nothing.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model_zoo import engine, engine_probe
from model_zoo.engine_layers import EngineError, KeepRule, supports_masks
from model_zoo.generation import BatchGeneration, Generation, GenerationRequest, PrefixStore
from model_zoo.preprocess import VideoInputs, VideoPreprocessConfig, library_preprocess, preprocess_video
from model_zoo.prompt import PromptLayout, SpecialIds, VisualSegmentLike, build_layout, encode_text
from model_zoo.variants import BackboneSpec


@dataclass
class VisualTokens:
    """One video's visual tokens, encoded once (satisfies ``compressors.base.EncodedVideo``).

    ``embeds`` [G, P, D] merger output, row-major over the merged (h, w) ``grid``; ``deepstack`` levels x
    [G, P, D] aligned token for token; ``group_times`` [G] float64 seconds (mean of the group's two frame
    times); ``positions`` [G, P, 3] each token's local (t, h, w) when its group is laid out as the stock
    model lays it out (its own block, t = 0); ``grid_thw`` the (G, gh, gw) patch grid (``video_grid_thw``);
    ``frame_size`` the resized (height, width); ``num_frames`` real frames, ``padded`` repeats added.
    """

    embeds: torch.Tensor
    deepstack: list[torch.Tensor]
    grid: tuple[int, int]
    group_times: torch.Tensor
    positions: torch.Tensor
    grid_thw: tuple[int, int, int]
    frame_size: tuple[int, int]
    num_frames: int
    padded: int
    frames_per_group: int = 2

    @property
    def num_groups(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def tokens_per_group(self) -> int:
        return int(self.embeds.shape[1])


def grid_positions(h: int, w: int) -> torch.Tensor:
    """Local (0, row, col) positions of an h x w merged grid, row-major: [h*w, 3] long."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)


class Qwen3VLBackbone:
    """A loaded Qwen3-VL checkpoint (or the tiny random one) with the hooks every method needs.

    ``outer_vision_tokens`` chooses the prompt layout transformers 5.x produces (an extra
    ``<|vision_start|>``/``<|vision_end|>`` around the video) instead of the Qwen reference one (default);
    see ``model_zoo.prompt``.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        model,
        tokenizer,
        *,
        preprocess: VideoPreprocessConfig,
        outer_vision_tokens: bool = False,
        video_processor=None,
    ) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.video_processor = video_processor
        self.outer_vision_tokens = outer_vision_tokens
        config = model.config
        self.num_layers: int = config.text_config.num_hidden_layers
        self.deepstack_levels = len(config.vision_config.deepstack_visual_indexes)
        self.ids = SpecialIds(
            vision_start=config.vision_start_token_id,
            vision_end=config.vision_end_token_id,
            video_pad=config.video_token_id,
            # Any real id works for padding: right pads are never seen by a real token.
            pad=next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None),
        )
        self._check_tokenizer()
        self.eos_ids = self._eos_ids()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def _check_tokenizer(self) -> None:
        """The tokenizer must map the special strings to the ids the model config expects."""
        expected = {
            "<|vision_start|>": self.ids.vision_start,
            "<|vision_end|>": self.ids.vision_end,
            "<|video_pad|>": self.ids.video_pad,
        }
        got = {token: self.tokenizer.convert_tokens_to_ids(token) for token in expected}
        if got != expected:
            raise ValueError(
                f"tokenizer and model disagree on special token ids: model {expected}, tokenizer {got}"
            )

    def _eos_ids(self) -> tuple[int, ...]:
        """Stop ids: the generation config's EOS ids and ``<|im_end|>`` (the end of an assistant turn)."""
        eos = self.model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return tuple(dict.fromkeys([*eos, *([im_end] if isinstance(im_end, int) else [])]))

    def release(self) -> None:
        """Drop the references to the weights (the loader then frees GPU memory)."""
        self.model = None

    # ------------------------------------------------------------------ encode

    def preprocess_frames(
        self,
        frames: np.ndarray,
        timestamps: Sequence[float],
        *,
        preprocess: VideoPreprocessConfig | None = None,
    ) -> VideoInputs:
        """Frames → ``pixel_values_videos`` / ``video_grid_thw`` / group times (``model_zoo.preprocess``): the
        checkpoint's own video processor when it was loaded (``video_processor``, where torchvision works) and
        no other ``preprocess`` is asked for, else our port."""
        if preprocess is None and self.video_processor is not None:
            return library_preprocess(self.video_processor, frames, timestamps, self.preprocess)
        return preprocess_video(frames, timestamps, preprocess or self.preprocess)

    @torch.inference_mode()
    def encode(
        self,
        frames: np.ndarray,
        timestamps: Sequence[float],
        *,
        preprocess: VideoPreprocessConfig | None = None,
    ) -> VisualTokens:
        """Frames [T, H, W, 3] uint8 RGB and their times (s) → ``VisualTokens`` [G, P, D], in ONE vision pass.

        T is padded to even by repeating the last frame. The vision tower attends within each group of two
        frames (``cu_seqlens`` per temporal patch), so one batched pass equals per-group passes.
        """
        inputs = self.preprocess_frames(frames, timestamps, preprocess=preprocess)
        out = self.model.model.get_video_features(
            inputs.pixel_values_videos.to(self.device),
            inputs.video_grid_thw.to(self.device),
            return_dict=True,
        )
        g, gh, gw = (int(x) for x in inputs.video_grid_thw[0])
        merge = self.model.config.vision_config.spatial_merge_size
        h, w = gh // merge, gw // merge
        return VisualTokens(
            embeds=out.pooler_output[0].reshape(g, h * w, -1),
            deepstack=[level[0].reshape(g, h * w, -1) for level in out.deepstack_features],
            grid=(h, w),
            group_times=inputs.group_times,
            positions=grid_positions(h, w).repeat(g, 1, 1).to(self.device),
            grid_thw=(g, gh, gw),
            frame_size=inputs.frame_size,
            num_frames=inputs.num_frames,
            padded=inputs.padded,
        )

    # ------------------------------------------------------------------ prompts

    def layout(
        self,
        segments: Sequence[VisualSegmentLike],
        user_text: str,
        *,
        system: str | None = None,
        reply_prefix: str = "",
    ) -> PromptLayout:
        """The prompt [system?, user: segments then ``user_text``, generation prompt, ``reply_prefix``] as ids
        and positions."""
        return build_layout(
            self.tokenizer,
            self.ids,
            segments,
            user_text,
            system=system,
            deepstack_levels=self.deepstack_levels,
            outer_vision_tokens=self.outer_vision_tokens,
            reply_prefix=reply_prefix,
        )

    # ------------------------------------------------------------------ answering

    def generate(
        self,
        question: str,
        segments: Sequence[VisualSegmentLike],
        *,
        keep: KeepRule | None = None,
        max_new_tokens: int = 128,
        system: str | None = None,
        prefix_key: Hashable | None = None,
        prefixes: PrefixStore | None = None,
        reply_prefix: str = "",
    ) -> Generation:
        """Greedy answer to ``question`` about ``segments`` (in order), streamed as a ``Generation``.

        The prompt is checked now (placeholders = tokens, shapes, DeepStack levels); the model runs while the
        ``Generation`` is iterated. ``keep`` may drop visual tokens after chosen layers during prefill. With
        ``prefixes`` and a ``prefix_key``, the prompt prefix comes from (or goes into) that store. A
        ``reply_prefix`` starts the reply (``build_layout``); the answer is what follows it.
        """
        request = GenerationRequest(
            question, segments, keep, max_new_tokens, system, prefix_key, reply_prefix=reply_prefix
        )
        return self._generation(request, prefixes)

    def generate_many(
        self, requests: Sequence[GenerationRequest], *, prefixes: PrefixStore | None = None
    ) -> BatchGeneration:
        """Greedy answers to several requests, decoded together as one batch (``BatchGeneration``).

        Token for token the same answers as ``generate`` on each request alone (``tests/test_engine_batch.py``);
        faster because one decode step serves them all. Prompts are checked now, in order. Requests with a
        ``prefix_key`` take their prompt prefix from ``prefixes`` (or put it there).
        """
        if not requests:
            raise EngineError("generate_many needs at least one request")
        return BatchGeneration(self, [self._generation(r, prefixes) for r in requests])

    def _generation(self, request: GenerationRequest, prefixes: PrefixStore | None) -> Generation:
        """A ``Generation`` for ``request``, its prompt laid out and checked (nothing runs yet)."""
        if request.max_new_tokens < 1:
            raise EngineError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}")
        layout = self.layout(
            request.segments, request.question, system=request.system, reply_prefix=request.reply_prefix
        )
        reuse = prefixes is not None and request.prefix_key is not None and supports_masks(self.model)
        return Generation(
            self,
            layout,
            keep=request.keep,
            max_new_tokens=request.max_new_tokens,
            prefix=(prefixes, request.prefix_key) if reuse else None,
        )

    def prompt_prefixes(
        self,
        layouts: Sequence[PromptLayout],
        keys: Sequence[Hashable | None],
        store: PrefixStore | None,
        *,
        keep: KeepRule | None = None,
    ) -> tuple[list[engine.PrefixKV], list[bool]]:
        """Each layout's prompt prefix on the model's device, from ``store`` under its key when there, else
        computed (those missing run as one batch) and put there under its key; and whether each was found. A
        key of None is neither looked up nor stored; a key must decide ``keep`` too."""
        prefixes = [None if store is None or key is None else store.get(key) for key in keys]
        reused = [prefix is not None for prefix in prefixes]
        missing = [i for i, prefix in enumerate(prefixes) if prefix is None]
        if missing:
            computed = engine.run_prefixes(
                self.model, [layouts[i] for i in missing], pad_id=self.ids.pad, keep=keep
            )
            for i, prefix in zip(missing, computed, strict=True):
                prefixes[i] = prefix
                if store is not None and keys[i] is not None:
                    store.put(keys[i], prefix)
        return [prefix.to(self.device) for prefix in prefixes], reused

    # ------------------------------------------------------------------ hooks for the compressors

    def window_scores(
        self,
        segments: Sequence[VisualSegmentLike],
        question: str,
        *,
        windows: Sequence[Sequence[Sequence[int]]],
        layers: Sequence[int],
        keep: KeepRule | None = None,
        prefixes: PrefixStore | None = None,
        prefix_key: Hashable | None = None,
    ) -> list[torch.Tensor]:
        """XComp's QC-Comp probe over one chunk (arXiv 2604.14149; ``engine_probe``): per window, [len(layers),
        clips] float32.

        The prompt [chat prefix, ``segments``, ``question``, chat suffix] runs through layers 0..max(layers),
        ``keep`` dropping visual tokens between them (LP-Comp); at each of ``layers``, each window (its clips,
        each a list of indices into ``segments``) re-runs the layer on its own sequence [rows before the first
        segment, the window's segments, the rows after the last one up to the assistant turn] with its own
        positions, and a clip scores the mean attention of the query rows (``query_rows``) on its visual
        tokens. The part before the question runs first (from ``prefixes`` under ``prefix_key`` when there;
        a key must decide ``keep`` and ``layers`` too), then the question's rows over it; a model whose
        attention kernel takes no additive mask (flash) runs the whole prompt at once.
        """
        if not windows or any(not clip for window in windows for clip in window):
            raise EngineError("every window needs clips, and every clip at least one segment")
        if not layers or any(not 0 <= int(i) < self.num_layers for i in layers):
            raise EngineError(f"layers must be 0-based indices in [0, {self.num_layers}), got {list(layers)}")
        layout = self.layout(segments, question)
        queries = self.query_rows(layout)
        built = self._windows(layout, segments, windows, queries)
        prefix = None
        if supports_masks(self.model):  # else the whole prompt runs, with any attention kernel
            prefix = prefixes.get(prefix_key) if prefixes is not None and prefix_key is not None else None
            if prefix is None:
                prefix = engine_probe.scoring_prefix(self.model, layout, keep=keep, layers=layers)
                if prefixes is not None and prefix_key is not None:
                    prefixes.put(prefix_key, prefix)
            prefix = prefix.to(self.device)
        return engine_probe.window_attention(
            self.model, layout, prefix, keep=keep, layers=layers, windows=built, queries=queries
        )

    def query_rows(self, layout: PromptLayout) -> torch.Tensor:
        """XComp's query rows: the question and the rows closing its turn (``<|im_end|>``, newline), up to the
        assistant turn's ``<|im_start|>`` (the authors' ``[video end + bias, first_conv_length)``)."""
        start, end = layout.user_span
        opener = self.tokenizer.convert_tokens_to_ids("<|im_start|>")
        found = (layout.input_ids[end:] == opener).nonzero()
        if end <= start or not len(found):
            raise EngineError("no query rows: the question is empty or no assistant turn follows it")
        return torch.arange(start, end + int(found[-1]))

    def _windows(self, layout, segments, windows, queries) -> list[engine_probe.Window]:
        """Each window's rows and clips (``engine_probe.Window``) in ``layout``, made of ``segments``."""
        columns = layout.segment_columns
        starts = [
            int(c[0]) - 1 - len(encode_text(self.tokenizer, s.text or ""))
            for s, c in zip(segments, columns, strict=True)
        ]
        spans = [torch.arange(a, int(c[-1]) + 2) for a, c in zip(starts, columns, strict=True)]
        before = torch.arange(starts[0])
        after = torch.arange(int(columns[-1][-1]) + 2, int(queries[-1]) + 1)
        built = []
        for window in windows:
            inside = sorted({s for clip in window for s in clip})
            rows = torch.cat([before, *(spans[s] for s in inside), after])
            clips = tuple(torch.cat([columns[s] for s in clip]) for clip in window)
            built.append(engine_probe.Window(rows, clips))
        return built

    def word_ids(self, words: Sequence[str]) -> list[int]:
        """One token id per word; ValueError naming the word when it is not a single token."""
        ids = []
        for word in words:
            tokens = encode_text(self.tokenizer, word)
            if len(tokens) != 1:
                pieces = self.tokenizer.convert_ids_to_tokens(tokens)
                raise ValueError(f"{word!r} must be a single token to read its logit, but it is {pieces}")
            ids.append(tokens[0])
        return ids

    def next_token_logits(
        self,
        prompts: Sequence[Sequence[VisualSegmentLike]],
        *,
        system: str,
        user_text: str,
        words: Sequence[str],
        prefixes: PrefixStore | None = None,
        prefix_keys: Sequence[Hashable | None] | None = None,
    ) -> torch.Tensor:
        """[len(prompts), len(words)] float32 logits of ``words`` at each prompt's last position.

        Prompt b is the chat [system, user: prompts[b]'s segments then ``user_text``, generation prompt]; the
        prompts run as one right-padded batch (Tempo's relevance prior, arXiv 2604.08120): first the prompt
        prefixes (all but ``user_text`` and the chat suffix; those under ``prefix_keys[b]`` in ``prefixes``
        are reused), then the rest of every prompt over them.
        """
        word_ids = self.word_ids(words)
        if not prompts:
            return torch.zeros(0, len(word_ids))
        layouts = [self.layout(p, user_text, system=system) for p in prompts]
        keys = [None] * len(layouts) if prefix_keys is None else list(prefix_keys)
        if len(keys) != len(layouts):
            raise EngineError(f"{len(keys)} prefix keys for {len(layouts)} prompts")
        if supports_masks(self.model):
            found, _ = self.prompt_prefixes(layouts, keys, prefixes)
            logits = engine.extend_last_logits(self.model, layouts, found, pad_id=self.ids.pad)
        else:  # a kernel without additive masks: the whole prompts, right-padded, nothing reused
            logits = engine.last_logits(self.model, layouts, pad_id=self.ids.pad)
        return logits[:, word_ids].float().cpu()
