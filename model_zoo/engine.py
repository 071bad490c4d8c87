"""The inference engine: Qwen3-VL's text model answering from our own visual tokens and positions.

Contract. Input: a ``PromptLayout`` (token ids with one placeholder per visual token, the visual embeddings
and their DeepStack levels, 3-D positions). Output: greedy tokens, identical to stock ``model.generate`` when
the layout is the stock one (``tests/test_engine.py`` proves it token for token). How:

* prefill and decode are the library's own forward, ``Qwen3VLTextModel.forward``: ``inputs_embeds`` with the
  visual embeddings at the placeholders, 3-D (M-RoPE) ``position_ids``, ``visual_pos_masks`` and the
  DeepStack levels, and the library's ``DynamicCache``; decode step k sits at position M + 1 + k on all
  three axes, M the prompt's largest position (``compute_3d_position_ids``: text position + rope delta);
* where one such call cannot do the job, the same library layers run one at a time (``engine_layers``): a
  ``KeepRule`` dropping visual tokens after chosen layers during prefill (XComp's LP-Comp: each layer's cache
  keeps what that layer saw, and what remains is renumbered contiguously as XComp's authors do, so decoding
  continues at a per-layer position over per-layer lengths: ``PrefillResult.next_positions``), a prefix run
  through some layers only, QC-Comp's attention probe (``engine_probe``), and batched decoding of requests
  whose caches differ per layer (``engine_batch``);
* a prompt's prefix (everything before the question: chat prefix and visual tokens) can run once
  (``run_prefixes`` → ``PrefixKV``) and serve any number of questions: its keys and values go back into the
  library's forward as a ``DynamicCache`` (``past_key_values``) and only the question's rows run
  (``prefill_after``, ``extend_last_logits``), several prompts at once over right-padded prefixes with the
  library's 2-D padding mask (``tests/test_prefix.py``).

The model is a parameter (``Qwen3VLForConditionalGeneration``: ``model.model.language_model``,
``model.lm_head``); nothing here patches a class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from model_zoo.engine_layers import (
    EngineError,
    KeepRule,
    LayerMasks,
    SequenceState,
    Trace,
    cache_lengths,
    check_mask_attention,
    embed_sequence,
    new_cache,
    right_padded,
    run_layers,
    text_model,
)
from model_zoo.prompt import PromptLayout


@dataclass
class PrefillResult:
    """Logits [V] at the last prompt position, the library cache, and the visual tokens each layer saw."""

    logits: torch.Tensor
    cache: DynamicCache
    per_layer_visual: list[int] = field(default_factory=list)
    #: Per layer, where the first generated token sits (the prompt's largest position + 1 there: the same
    #: for every layer unless a keep rule renumbered what remained).
    next_positions: list[int] = field(default_factory=list)


def forward(
    model,
    embeds: torch.Tensor,
    positions: torch.Tensor,
    *,
    cache: DynamicCache | None = None,
    visual_mask: torch.Tensor | None = None,
    deepstack: Sequence[torch.Tensor] = (),
    padding: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Qwen3VLTextModel.forward`` on ``embeds`` [B, L, D] at ``positions`` [3, B, L]: hidden states
    [B, L, D] after the final norm. ``padding`` [B, cached + L]: the library's 2-D mask of real keys."""
    out = text_model(model)(
        inputs_embeds=embeds,
        position_ids=positions,
        attention_mask=padding,
        past_key_values=cache,
        use_cache=cache is not None,
        visual_pos_masks=visual_mask if deepstack else None,
        deepstack_visual_embeds=list(deepstack) if deepstack else None,
    )
    return out.last_hidden_state


def rows_inputs(
    model, layouts: Sequence[PromptLayout], spans: Sequence[tuple[int, int]], *, pad_id: int
) -> tuple[SequenceState, list[torch.Tensor]]:
    """The rows [start, end) of each layout, right-padded into one batch on the model's device: the state
    before layer 0 (embeddings [B, W, D], positions [3, B, W], visual mask [B, W], rows counted from each
    span's start) and the DeepStack levels of the visual tokens inside the spans (row-major over the batch).

    Causal attention means a real row never sees the pads after it, so the pads need no mask; they sit at
    positions continuing their row's, and their values never reach a real row.
    """
    width = max(end - start for start, end in spans)
    ids = torch.full((len(layouts), width), pad_id, dtype=torch.long)
    positions = torch.zeros(3, len(layouts), width, dtype=torch.long)
    visual = torch.zeros(len(layouts), width, dtype=torch.bool)
    embeds, deepstack = [], []
    for b, (x, (start, end)) in enumerate(zip(layouts, spans, strict=True)):
        n = end - start
        ids[b, :n], visual[b, :n] = x.input_ids[start:end], x.visual_mask[start:end]
        positions[:, b, :n] = x.positions[:, start:end]
        positions[:, b, n:] = int(x.positions[:, start:end].max()) + 1 + torch.arange(width - n)
        first, last = int(x.visual_mask[:start].sum()), int(x.visual_mask[:end].sum())
        embeds.append(x.embeds[first:last])
        deepstack.append([level[first:last] for level in x.deepstack])
    device = model.device
    visual = visual.to(device)
    hidden = embed_sequence(model, ids.to(device), visual, torch.cat(embeds))
    state = SequenceState.start(hidden, positions.to(device), visual, [start for start, _ in spans])
    return state, [torch.cat(level) for level in zip(*deepstack, strict=True)]


def run(
    model,
    state: SequenceState,
    *,
    depth: int | None = None,
    cache: DynamicCache | None = None,
    deepstack: Sequence[torch.Tensor] = (),
    keep: KeepRule | None = None,
    probe=None,
    padding: Sequence[torch.Tensor] | None = None,
    shifts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Trace]:
    """``state`` (B rows) through the first ``depth`` layers (default: all) over ``cache``: hidden states
    [B, L, D] (after the final norm when every layer ran) and, per layer, the visual tokens it saw (over the
    batch) and where the next token would sit (``Trace``).

    One library forward (``forward``) when that can do the job: every layer, no keep rule, no probe, no
    per-layer ``shifts`` of the positions, one mask for all layers (equal cache lengths, one ``padding``).
    Otherwise the same layers one by one (``engine_layers.run_layers``), each with its own positions and
    mask from ``padding[layer]`` (the library's 2-D mask of real keys [B, cached + L]).
    """
    total = len(text_model(model).layers)
    depth = total if depth is None else depth
    one_mask = (cache is None or len(set(cache_lengths(cache))) == 1) and (
        padding is None or all(p is padding[0] for p in padding)
    )
    if depth == total and keep is None and probe is None and shifts is None and one_mask:
        hidden = forward(
            model,
            state.hidden,
            state.positions,
            cache=cache,
            visual_mask=state.visual_mask,
            deepstack=deepstack,
            padding=None if padding is None else padding[0],
        )
        trace = Trace([int(state.visual_mask.sum())] * total, [int(state.positions[:, 0].max()) + 1] * total)
        return hidden, trace
    state, trace = run_layers(
        model,
        state,
        range(depth),
        cache=cache,
        deepstack=deepstack,
        keep=keep,
        probe=probe,
        masks=LayerMasks(model, cache, padding),
        shifts=shifts,
    )
    return (text_model(model).norm(state.hidden) if depth == total else state.hidden), trace


def last_rows(hidden: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """[B, W, D] → [B, D]: each row's last real position (span b has ``end - start`` real rows)."""
    last = torch.tensor([end - start - 1 for start, end in spans], device=hidden.device)
    return hidden[torch.arange(len(spans), device=hidden.device), last]


@torch.inference_mode()
def prefill(model, layout: PromptLayout, *, keep: KeepRule | None = None) -> PrefillResult:
    """Run the whole prompt through every layer, filling a ``DynamicCache``; logits at the last position.

    Without a keep rule this is one library forward; with one, the layers run one by one so that the rule
    can drop visual tokens between them, and after each drop the rest is renumbered (``relayout``): the
    result's ``next_positions`` say where decoding continues at each layer. The last token is text (the
    generation prompt), so a keep rule can never remove it.
    """
    spans = [(0, layout.input_ids.numel())]
    # One prompt: no right padding, so the pad id is never used.
    state, deepstack = rows_inputs(model, [layout], spans, pad_id=0)
    cache = new_cache(model)
    hidden, trace = run(model, state, cache=cache, deepstack=deepstack, keep=keep)
    return PrefillResult(model.lm_head(hidden[0, -1]), cache, trace.seen, trace.next_positions)


@torch.inference_mode()
def decode_step(model, token: int, positions: Sequence[int], cache: DynamicCache) -> torch.Tensor:
    """One greedy step: embed ``token``, run every layer l at ``positions[l]`` (all three axes); logits [V].

    One library forward over the cache; when a keep rule left the layers different lengths or positions,
    the layers run one by one so that each gets its own mask and position (``run``).
    """
    device = model.device
    ids = torch.tensor([[token]], device=device)
    at = torch.tensor(list(positions), device=device)
    shifts = None if bool((at == at[0]).all()) else (at - at[0])[:, None]  # [layers, 1]
    no_visual = torch.zeros_like(ids, dtype=torch.bool)
    start = at[0].view(1, 1, 1).expand(3, 1, 1)
    state = SequenceState.start(text_model(model).embed_tokens(ids), start, no_visual)
    hidden, _ = run(model, state, cache=cache, shifts=shifts)
    return model.lm_head(hidden[0, -1])


def greedy_tokens(
    model, first: PrefillResult, *, max_new_tokens: int, eos_ids: Sequence[int]
) -> Iterator[int]:
    """Greedy decoding after a prefill: yields token ids until one of ``eos_ids`` (yielded too) or
    ``max_new_tokens``. Step k (0-based) is fed at layer l's ``first.next_positions[l] + k``; ties go to the
    lowest id, like ``torch.argmax`` in stock ``generate``."""
    logits = first.logits
    for k in range(max_new_tokens):
        token = int(torch.argmax(logits.float()))
        yield token
        if token in eos_ids or k + 1 == max_new_tokens:
            return
        logits = decode_step(model, token, [n + k for n in first.next_positions], first.cache)


# ---------------------------------------------------------------------------------------------- prompt prefixes


@dataclass
class PrefixKV:
    """The first ``length`` rows of a prompt run through the first layers once, for any prompt that starts so.

    A prompt's prefix is everything before its user text (``prefix_length``): the chat prefix and every
    visual token. What follows is text only, so nothing computed for the prefix depends on the question, and
    a follow-up question runs only its own rows over these keys (``prefill_after``, ``extend_last_logits``)
    -- prefix caching, as serving engines do it. ``keys``/``values``: per layer [1, H_kv, P_l, d], what that
    layer's cache held after the prefix (P_l < ``length`` where a keep rule dropped visual tokens);
    ``per_layer_visual``: the visual tokens each layer saw; ``next_positions``: per layer, where the first
    row after the prefix sits (they differ once a keep rule renumbered the prefix). Extending copies the
    tensors into a new cache (``prefix_cache``), so one ``PrefixKV`` serves any number of prompts.
    """

    length: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    per_layer_visual: list[int]
    next_positions: list[int]

    def lengths(self) -> list[int]:
        """Cached rows per layer."""
        return [int(k.shape[-2]) for k in self.keys]

    def to(self, device: torch.device | str) -> PrefixKV:
        """This prefix with its tensors on ``device`` (itself when they are there already)."""
        device = torch.device(device)
        if all(k.device == device for k in self.keys):
            return self
        move = lambda tensors: [t.to(device) for t in tensors]  # noqa: E731
        return dataclasses.replace(self, keys=move(self.keys), values=move(self.values))


def prefix_length(layout: PromptLayout) -> int:
    """Rows before the user text (``user_span``): the part of the prompt a question does not change."""
    start = layout.user_span[0]
    if not 0 < start < layout.input_ids.numel() or bool(layout.visual_mask[start:].any()):
        raise EngineError(
            f"a prompt prefix must end before the user text and hold every visual token; got a user text at "
            f"row {start} of {layout.input_ids.numel()}"
        )
    return start


@torch.inference_mode()
def run_prefixes(
    model,
    layouts: Sequence[PromptLayout],
    *,
    pad_id: int,
    keep: KeepRule | None = None,
    depth: int | None = None,
    probe=None,
) -> list[PrefixKV]:
    """Each layout's prefix (``prefix_length``) through the first ``depth`` layers (default: all), the
    prefixes as one right-padded batch. A shallower prefix serves the attention probe (``engine_probe``).

    ``keep`` (a batch of one only) may drop visual tokens after any layer, exactly as in ``prefill``;
    ``probe(layer, state)`` reads each layer's input (``engine_layers.run_layers``).
    """
    if keep is not None and len(layouts) != 1:
        raise EngineError("a keep rule applies to one prompt at a time")
    total = len(text_model(model).layers)
    depth = total if depth is None else depth
    if not 1 <= depth <= total:
        raise EngineError(f"a prefix runs 1 to {total} layers, got {depth}")
    lengths = [prefix_length(x) for x in layouts]
    state, deepstack = rows_inputs(model, layouts, [(0, n) for n in lengths], pad_id=pad_id)
    cache = new_cache(model)
    _, trace = run(model, state, depth=depth, cache=cache, deepstack=deepstack, keep=keep, probe=probe)
    keys = [cache.layers[layer].keys for layer in range(depth)]
    values = [cache.layers[layer].values for layer in range(depth)]
    if len(layouts) == 1:
        return [PrefixKV(lengths[0], keys, values, trace.seen[:depth], trace.next_positions[:depth])]
    # No keep rule in a batch: every layer holds row b's first ``n`` keys (a copy each, so that keeping one
    # prefix does not keep the whole batch's buffer alive).
    return [
        PrefixKV(
            n,
            [k[b : b + 1, :, :n].clone() for k in keys],
            [v[b : b + 1, :, :n].clone() for v in values],
            [x.num_visual] * depth,
            [int(x.positions[:, :n].max()) + 1] * depth,
        )
        for b, (x, n) in enumerate(zip(layouts, lengths, strict=True))
    ]


def prefix_cache(model, prefixes: Sequence[PrefixKV], rows: int) -> tuple[DynamicCache, list | None]:
    """The prefixes as one library cache (per layer right-padded to its longest prefix; a copy, so the
    prefixes are never written) and, for a batch, per layer the 2-D mask [B, longest + rows] of real keys
    (False on each row's padding) that ``rows`` new rows attend with; layers with the same prefix lengths
    share one mask."""
    device, depth = model.device, len(prefixes[0].keys)
    data = []
    for layer in range(depth):
        keys = [p.keys[layer].to(device) for p in prefixes]
        values = [p.values[layer].to(device) for p in prefixes]
        width = max(k.shape[-2] for k in keys)
        data.append((right_padded(keys, width), right_padded(values, width)))
    cache = DynamicCache(ddp_cache_data=data, config=text_model(model).config)
    if len(prefixes) == 1:
        return cache, None
    per_layer = list(zip(*(p.lengths() for p in prefixes), strict=True))
    made = {}
    for lengths in dict.fromkeys(per_layer):
        real = (
            torch.arange(max(lengths), device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
        )
        made[lengths] = torch.cat([real, real.new_ones(len(prefixes), rows)], dim=1)
    return cache, [made[lengths] for lengths in per_layer]


def extend(
    model, layouts: Sequence[PromptLayout], prefixes: Sequence[PrefixKV], *, pad_id: int, probe=None
) -> tuple[torch.Tensor | None, DynamicCache, Trace]:
    """Run each layout's rows after its prefix over the prefix's keys, as one batch, through as many layers
    as the prefixes hold, each row at layer l from its prefix's ``next_positions[l]`` on: logits [B, V] at
    each layout's last row (None when the prefixes stop before the last layer), the cache (per layer: the
    right-padded prefixes, then the new rows) and the run's ``Trace``."""
    check_mask_attention(model, "reusing a prompt prefix")
    depth = len(prefixes[0].keys)
    for x, prefix in zip(layouts, prefixes, strict=True):
        if prefix.length != prefix_length(x) or len(prefix.keys) != depth:
            raise EngineError(
                f"the cached prefix ({prefix.length} rows, {len(prefix.keys)} layers) does not fit this "
                f"prompt ({prefix_length(x)} rows before the question, {depth} layers)"
            )
    spans = [(p.length, x.input_ids.numel()) for x, p in zip(layouts, prefixes, strict=True)]
    state, _ = rows_inputs(model, layouts, spans, pad_id=pad_id)
    cache, padding = prefix_cache(model, prefixes, state.hidden.shape[1])
    starts = torch.tensor([int(x.positions[0, p.length]) for x, p in zip(layouts, prefixes, strict=True)])
    shifts = torch.tensor([p.next_positions for p in prefixes]).t() - starts  # [layers, B]
    shifts = None if not shifts.any() else shifts.to(model.device)
    hidden, trace = run(model, state, depth=depth, cache=cache, probe=probe, padding=padding, shifts=shifts)
    logits = model.lm_head(last_rows(hidden, spans)) if depth == len(text_model(model).layers) else None
    return logits, cache, trace


@torch.inference_mode()
def prefill_after(model, layout: PromptLayout, prefix: PrefixKV, *, pad_id: int) -> PrefillResult:
    """``prefill`` of ``layout`` from its cached ``prefix``: only the rows after it run (the same arithmetic as
    a prefill that ran ``run_prefixes`` first, so a reused prefix answers bit for bit as a fresh one)."""
    logits, cache, trace = _logits_after(model, [layout], [prefix], pad_id=pad_id)
    return PrefillResult(logits[0], cache, list(prefix.per_layer_visual), trace.next_positions)


@torch.inference_mode()
def extend_last_logits(
    model, layouts: Sequence[PromptLayout], prefixes: Sequence[PrefixKV], *, pad_id: int
) -> torch.Tensor:
    """Logits [B, V] at each prompt's last row, only the rows after each cached prefix running, as one batch."""
    return _logits_after(model, layouts, prefixes, pad_id=pad_id)[0]


def _logits_after(model, layouts, prefixes, *, pad_id: int) -> tuple[torch.Tensor, DynamicCache, Trace]:
    if any(len(p.keys) != len(text_model(model).layers) for p in prefixes):
        raise EngineError("logits need prefixes through every layer")
    return extend(model, layouts, prefixes, pad_id=pad_id)


@torch.inference_mode()
def last_logits(model, layouts: Sequence[PromptLayout], *, pad_id: int) -> torch.Tensor:
    """Logits [B, V] at each whole prompt's last row, the prompts right-padded into one batch (no prefix, no
    mask: any attention kernel)."""
    spans = [(0, x.input_ids.numel()) for x in layouts]
    state, deepstack = rows_inputs(model, layouts, spans, pad_id=pad_id)
    hidden, _ = run(model, state, deepstack=deepstack)
    return model.lm_head(last_rows(hidden, spans))
