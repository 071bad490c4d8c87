"""Streaming greedy answers: one request (``Generation``) or several decoded together (``BatchGeneration``).

A ``Generation`` lays out nothing itself: the backbone (``model_zoo.qwen3_vl.Qwen3VLBackbone``) hands it a
checked ``PromptLayout``; it runs the prompt (``engine.prefill``, or ``engine.prefill_after`` over a prompt
prefix found in or put into a ``PrefixStore``) and decodes greedily (``engine.greedy_tokens``), streaming
text deltas. A ``BatchGeneration`` prefills each request alone and decodes them in lockstep
(``engine_batch.batched_greedy_tokens``); each request gets the tokens it gets alone.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from model_zoo import engine, engine_batch
from model_zoo.engine_layers import KeepRule, cache_lengths
from model_zoo.prompt import PromptLayout, VisualSegmentLike


class PrefixStore(Protocol):
    """Where computed prompt prefixes are kept (``pipeline.cache.PrefixCache``, or a dict-like of one's own)."""

    def get(self, key: Hashable) -> engine.PrefixKV | None: ...

    def put(self, key: Hashable, value: engine.PrefixKV) -> None: ...


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
        backbone,
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
            self.backbone.model, first, max_new_tokens=self.max_new_tokens, eos_ids=self.backbone.eos_ids
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
            kv_lengths=cache_lengths(first.cache),  # after prefill; ``_close`` adds the decoded tokens
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
    #: Text that starts the assistant's reply (``model_zoo.prompt.build_layout``); the answer excludes it.
    reply_prefix: str = ""


class BatchGeneration:
    """Greedy answers to several requests, decoded together; each equals its own ``generate``.

    Each request is prefilled alone (its own prompt length and keep rule), then all are decoded as one batch
    (``engine_batch.batched_greedy_tokens``): one step runs every request still going. Iterate the batch for
    ``(request index, text delta)`` pairs in lockstep, step by step; a request's last pair comes when it
    finishes (EOS or its max_new_tokens), and may carry an empty delta, so ``batch[i].done`` can be checked
    on every pair. ``batch[i]`` is request i's ``Generation`` (``text``, ``token_ids``, ``stats``; reading
    them finishes the whole batch). The batch streams once.
    """

    def __init__(self, backbone, generations: Sequence[Generation]) -> None:
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
        steps = engine_batch.batched_greedy_tokens(
            self.backbone.model,
            firsts,
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
