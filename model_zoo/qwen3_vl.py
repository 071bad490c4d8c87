"""The Qwen3-VL backbone adapter: encode a video once, answer from any set of visual tokens.

``Qwen3VLBackbone`` wraps a transformers ``Qwen3VLForConditionalGeneration`` and its tokenizer. It implements
``compressors.base.BackboneHooks`` structurally (``num_layers``, ``clip_attention``, ``next_token_logits``)
without importing ``compressors``: segments are any objects with ``text``/``embeds``/``positions``/
``deepstack`` (``model_zoo.prompt.VisualSegmentLike``). ``generate`` answers one request; ``generate_many``
answers several in one batched decode, each exactly as ``generate`` would.

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

import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from model_zoo import engine
from model_zoo.engine import KeepRule
from model_zoo.preprocess import VideoInputs, VideoPreprocessConfig, preprocess_video
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


class PrefixStore(Protocol):
    """Where computed prompt prefixes are kept (``pipeline.cache.PrefixCache``, or a dict-like of one's own)."""

    def get(self, key: Hashable) -> engine.PrefixKV | None: ...

    def put(self, key: Hashable, value: engine.PrefixKV) -> None: ...


def grid_positions(h: int, w: int) -> torch.Tensor:
    """Local (0, row, col) positions of an h x w merged grid, row-major: [h*w, 3] long."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that timings measure it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Generation:
    """A streaming greedy answer. Iterate it for text deltas as tokens are generated. ``text``, ``token_ids``
    (EOS included when produced, as stock ``generate`` returns it) and ``stats`` finish the generation first
    when it has not finished yet. A generation streams once.

    ``stats``: ``visual_tokens`` visual tokens the LLM received; ``prompt_tokens`` prompt length;
    ``per_layer_visual`` visual tokens each decoder layer saw in prefill; ``kv_lengths`` cached tokens per
    layer at the end; ``new_tokens``; ``prefill_s``; ``decode_s``; ``prefix_reused`` (True when the prompt
    prefix came from the store, False when it was computed, None without a key). A generation decoded in a batch
    (``BatchGeneration``) also has ``decode_batch``, the requests decoded together, and its ``decode_s`` is
    the wall time of the batched steps it took part in (shared with the others, not divided among them).
    """

    def __init__(
        self,
        backbone: Qwen3VLBackbone,
        layout: PromptLayout,
        *,
        keep: KeepRule | None,
        max_new_tokens: int,
        prefix: tuple[PrefixStore, Hashable] | None = None,
    ) -> None:
        self.backbone, self.layout, self.keep, self.max_new_tokens = backbone, layout, keep, max_new_tokens
        self.prefix = prefix
        self._token_ids: list[int] = []
        self._stats: dict = {}
        self._text = ""
        self._stream: Iterator[str] | None = None
        self.done = False

    def __iter__(self) -> Iterator[str]:
        if self._stream is None:
            self._stream = self._run()
        return self._stream

    def _finish(self) -> None:
        if not self.done:  # once done (even while a batch still streams), everything is final
            for _ in self:
                pass

    @property
    def text(self) -> str:
        self._finish()
        return self._text

    @property
    def token_ids(self) -> list[int]:
        self._finish()
        return list(self._token_ids)

    @property
    def stats(self) -> dict:
        self._finish()
        return dict(self._stats)

    def _run(self) -> Iterator[str]:
        first = self._prefill()
        steps = engine.greedy_tokens(
            self.backbone.model,
            first,
            start_position=self.layout.max_position + 1,
            max_new_tokens=self.max_new_tokens,
            eos_ids=self.backbone.eos_ids,
        )
        while True:
            tick = time.perf_counter()
            token = next(steps, None)
            _synchronize(self.backbone.device)
            self._stats["decode_s"] += time.perf_counter() - tick
            if token is None:
                break
            delta = self._push(token)
            if delta:
                yield delta
        tail = self._close()
        if tail:
            yield tail

    def _prefill(self) -> engine.PrefillResult:
        """Run the prompt (timed) and record what the model received; decode time starts at 0."""
        start = time.perf_counter()
        reused = None
        if self.prefix is None:
            first = engine.prefill(self.backbone.model, self.layout, keep=self.keep)
        else:
            store, key = self.prefix
            (prefix,), (reused,) = self.backbone.prompt_prefixes([self.layout], [key], store, keep=self.keep)
            first = engine.prefill_after(
                self.backbone.model, self.layout, prefix, pad_id=self.backbone.ids.pad
            )
        _synchronize(self.backbone.device)
        self._stats.update(
            prefix_reused=reused,
            visual_tokens=self.layout.num_visual,
            prompt_tokens=int(self.layout.input_ids.numel()),
            per_layer_visual=first.per_layer_visual,
            prefill_s=time.perf_counter() - start,
            decode_s=0.0,
            kv_lengths=first.cache.lengths(),  # after prefill; ``_close`` adds the decoded tokens
        )
        return first

    def _push(self, token: int) -> str:
        """Take the next generated token; the text it adds (may be empty)."""
        self._token_ids.append(token)
        return self._new_text()

    def _close(self) -> str:
        """The generation is over: final stats, and the text still held back (may be empty)."""
        fed = max(len(self._token_ids) - 1, 0)  # the last token is never fed back
        self._stats.update(
            new_tokens=len(self._token_ids), kv_lengths=[n + fed for n in self._stats["kv_lengths"]]
        )
        self.done = True
        return self._new_text(final=True)

    def _new_text(self, *, final: bool = False) -> str:
        """Text added since the last delta; held back while it ends inside a multi-byte character."""
        text = self.backbone.tokenizer.decode(
            self._token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        if not final and (text.endswith("\ufffd") or not text.startswith(self._text)):
            return ""
        delta = text[len(self._text) :] if text.startswith(self._text) else ""
        self._text = text  # the final text is always the whole decode
        return delta


@dataclass(frozen=True)
class GenerationRequest:
    """One answer to decode in a batch: the arguments of ``Qwen3VLBackbone.generate``."""

    question: str
    segments: Sequence[VisualSegmentLike]
    keep: KeepRule | None = None
    max_new_tokens: int = 128
    system: str | None = None
    #: Key of the prompt prefix (everything before the question) in the store given to ``generate_many``.
    prefix_key: Hashable | None = None


class BatchGeneration:
    """Greedy answers to several requests, decoded together; each equals its own ``generate``.

    Each request is prefilled alone (its own prompt length and keep rule), then all are decoded as one batch
    (``engine.batched_greedy_tokens``): one step runs every request still going. Iterate the batch for
    ``(request index, text delta)`` pairs in lockstep, step by step; a request's last pair comes when it
    finishes (EOS or its max_new_tokens), and may carry an empty delta, so ``batch[i].done`` can be checked
    on every pair. ``batch[i]`` is request i's ``Generation`` (``text``, ``token_ids``, ``stats``; reading
    them finishes the whole batch). The batch streams once.
    """

    def __init__(self, backbone: Qwen3VLBackbone, generations: Sequence[Generation]) -> None:
        self.backbone = backbone
        self.generations = list(generations)
        self._stream: Iterator[tuple[int, str]] | None = None
        for index, generation in enumerate(self.generations):
            generation._stream = self._member(index)

    def __len__(self) -> int:
        return len(self.generations)

    def __getitem__(self, index: int) -> Generation:
        return self.generations[index]

    def __iter__(self) -> Iterator[tuple[int, str]]:
        if self._stream is None:
            self._stream = self._run()
        return self._stream

    def _member(self, index: int) -> Iterator[str]:
        """Request ``index``'s own stream: drives the batch, yields that request's deltas."""
        for i, delta in self:
            if i == index and delta:
                yield delta

    def _run(self) -> Iterator[tuple[int, str]]:
        firsts = []
        for generation in self.generations:
            firsts.append(generation._prefill())
            generation._stats["decode_batch"] = len(self.generations)
        steps = engine.batched_greedy_tokens(
            self.backbone.model,
            firsts,
            start_positions=[g.layout.max_position + 1 for g in self.generations],
            max_new_tokens=[g.max_new_tokens for g in self.generations],
            eos_ids=self.backbone.eos_ids,
        )
        del firsts  # the engine moves the prefill caches into its batch cache
        eos = set(self.backbone.eos_ids)
        while True:
            tick = time.perf_counter()
            step = next(steps, None)
            _synchronize(self.backbone.device)
            wall = time.perf_counter() - tick
            if step is None:
                return
            for index, token in step:
                yield from self._advance(index, token, wall, eos)

    def _advance(self, index: int, token: int, wall: float, eos: set[int]) -> Iterator[tuple[int, str]]:
        """Give request ``index`` its token from a step that took ``wall`` seconds; close it when it stops."""
        generation = self.generations[index]
        generation._stats["decode_s"] += wall
        delta = generation._push(token)
        if token in eos or len(generation._token_ids) == generation.max_new_tokens:
            yield index, delta + generation._close()
        elif delta:
            yield index, delta


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
    ) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
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
        """Frames → ``pixel_values_videos`` / ``video_grid_thw`` / group times (``model_zoo.preprocess``)."""
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
        self, segments: Sequence[VisualSegmentLike], user_text: str, *, system: str | None = None
    ) -> PromptLayout:
        """The prompt [system?, user: segments then ``user_text``, generation prompt] as ids and positions."""
        return build_layout(
            self.tokenizer,
            self.ids,
            segments,
            user_text,
            system=system,
            deepstack_levels=self.deepstack_levels,
            outer_vision_tokens=self.outer_vision_tokens,
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
    ) -> Generation:
        """Greedy answer to ``question`` about ``segments`` (in order), streamed as a ``Generation``.

        The prompt is checked now (placeholders = tokens, shapes, DeepStack levels); the model runs while the
        ``Generation`` is iterated. ``keep`` may drop visual tokens after chosen layers during prefill. With
        ``prefixes`` and a ``prefix_key``, the prompt prefix comes from (or goes into) that store.
        """
        request = GenerationRequest(question, segments, keep, max_new_tokens, system, prefix_key)
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
            raise engine.EngineError("generate_many needs at least one request")
        return BatchGeneration(self, [self._generation(r, prefixes) for r in requests])

    def _generation(self, request: GenerationRequest, prefixes: PrefixStore | None) -> Generation:
        """A ``Generation`` for ``request``, its prompt laid out and checked (nothing runs yet)."""
        if request.max_new_tokens < 1:
            raise engine.EngineError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}")
        layout = self.layout(request.segments, request.question, system=request.system)
        reuse = prefixes is not None and request.prefix_key is not None and engine.supports_masks(self.model)
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
        depth: int | None = None,
    ) -> tuple[list[engine.PrefixKV], list[bool]]:
        """Each layout's prompt prefix on the model's device, from ``store`` under its key when there, else
        computed (those missing run as one batch; through ``depth`` layers, default all) and put there under
        its key; and whether each was found. A key of None is neither looked up nor stored; a key must
        decide the depth too."""
        prefixes = [None if store is None or key is None else store.get(key) for key in keys]
        reused = [prefix is not None for prefix in prefixes]
        missing = [i for i, prefix in enumerate(prefixes) if prefix is None]
        if missing:
            computed = engine.run_prefixes(
                self.model, [layouts[i] for i in missing], pad_id=self.ids.pad, keep=keep, depth=depth
            )
            for i, prefix in zip(missing, computed, strict=True):
                prefixes[i] = prefix
                if store is not None and keys[i] is not None:
                    store.put(keys[i], prefix)
        return [prefix.to(self.device) for prefix in prefixes], reused

    # ------------------------------------------------------------------ hooks for the compressors

    def clip_attention(
        self,
        clips: Sequence[Sequence[VisualSegmentLike]],
        question: str,
        layers: Sequence[int],
        *,
        prefixes: PrefixStore | None = None,
        prefix_key: Hashable | None = None,
    ) -> torch.Tensor:
        """[len(layers), len(clips)] float32: attention from the question's tokens to each clip's visual tokens.

        One fresh sequence [chat prefix, every clip's segments, question, chat suffix] with its own local
        positions; per layer, softmax(QK^T/sqrt(d)) for the question rows only, averaged over heads, question
        rows and the clip's tokens (XComp's QC-Comp, arXiv 2604.14149). Works with sdpa models. The part
        before the question runs first, through layers 0..max(layers) only (from ``prefixes`` under
        ``prefix_key`` when there), then the question's rows over it.
        """
        if not clips or any(len(clip) == 0 for clip in clips):
            raise engine.EngineError("every clip needs at least one segment")
        if not layers or any(not 0 <= int(i) < self.num_layers for i in layers):
            raise engine.EngineError(
                f"layers must be 0-based indices in [0, {self.num_layers}), got {list(layers)}"
            )
        layout = self.layout([seg for clip in clips for seg in clip], question)
        bounds = np.cumsum([0, *(len(clip) for clip in clips)])
        columns = [
            torch.cat(layout.segment_columns[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        start, end = layout.user_span
        if end <= start:
            raise engine.EngineError("the question is empty: no query rows to read attention from")
        prefix = None
        if engine.supports_masks(self.model):  # else the whole sequence runs, with any attention kernel
            depth = max(int(i) for i in layers) + 1
            (prefix,), _ = self.prompt_prefixes([layout], [prefix_key], prefixes, depth=depth)
        return engine.query_attention(
            self.model,
            layout,
            rows=torch.arange(start, end),
            columns=columns,
            layers=layers,
            reduce="mean",
            prefix=prefix,
        ).float()

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
            raise engine.EngineError(f"{len(keys)} prefix keys for {len(layouts)} prompts")
        if engine.supports_masks(self.model):
            found, _ = self.prompt_prefixes(layouts, keys, prefixes)
            logits = engine.extend_last_logits(self.model, layouts, found, pad_id=self.ids.pad)
        else:  # a kernel without additive masks: the whole prompts, right-padded, nothing reused
            logits = engine.last_logits(self.model, layouts, pad_id=self.ids.pad)
        return logits[:, word_ids].float().cpu()
