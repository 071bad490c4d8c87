"""The inference engine: Qwen3-VL's text decoder run layer by layer on our own visual tokens and positions.

Contract. Input: a ``PromptLayout`` (token ids with one placeholder per visual token, the visual embeddings
and their DeepStack levels, 3-D positions). Output: greedy tokens, identical to stock ``model.generate`` when
the layout is the stock one (``tests/test_engine.py`` proves it token for token). In between, one loop over
the decoder layers serves prefill, decode and the attention probe, so that:

* a ``KeepRule`` (``compressors.base``) called after 0-based layer l with the original indices of the visual
  tokens still alive may drop visual tokens during prefill; later layers see fewer tokens, and each layer's
  KV cache keeps exactly what that layer saw, so decoding runs with per-layer KV lengths (XComp's LP-Comp);
* DeepStack level i is added after layer i to the visual tokens still present (``Qwen3VLTextModel.forward``,
  ``_deepstack_process``), each token getting its own features whatever was dropped before;
* decode step k sits at position M + 1 + k on all three axes, M the prompt's largest position
  (``compute_3d_position_ids``: text position + rope delta);
* attention of chosen query rows can be computed from the layer's own q/k (after q_norm/k_norm and rotary,
  GQA expanded) without materialising an L x L map and with any attention implementation;
* several prefilled requests can be decoded together (``batched_greedy_tokens``): their per-layer caches
  are merged into right-padded buffers with one additive mask per layer (``BatchKV``), each row keeps its
  own positions, and each request gets the tokens it gets alone (``tests/test_engine_batch.py``);
* a prompt's prefix (everything before the question: chat prefix and visual tokens) can run once
  (``run_prefixes`` → ``PrefixKV``) and serve any number of questions, each running only its own rows over
  the cached keys (``prefill_after``, ``extend_last_logits``, ``query_attention(prefix=)``), several
  prompts at once over right-padded prefixes (``extend_masks``; ``tests/test_prefix.py``).

The model is a parameter (``Qwen3VLForConditionalGeneration``: ``model.model.language_model``,
``model.lm_head``); nothing here patches a class.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers.activations import SiLUActivation
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen3_vl.modeling_qwen3_vl import eager_attention_forward, rotate_half

from model_zoo.prompt import PromptLayout

#: Same signature as ``compressors.base.KeepRule`` (declared again here: the two packages do not import
#: each other). Returns a bool mask over ``alive`` of the tokens to keep, or None to keep all.
KeepRule = Callable[[int, torch.Tensor], "torch.Tensor | None"]


class EngineError(ValueError):
    """A request the engine cannot run (the message says what it got and what is valid)."""


class LayerKV:
    """Key/value cache with one independent entry per decoder layer.

    Implements the one method Qwen3-VL's attention calls (``update``). Layers may hold different lengths:
    after a prefill drop, a layer keeps the keys of the tokens it saw.
    """

    def __init__(self, num_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """Append this step's [B, H_kv, q, d] keys/values; return the layer's full keys/values."""
        if self.keys[layer_idx] is not None:
            key_states = torch.cat([self.keys[layer_idx], key_states], dim=-2)
            value_states = torch.cat([self.values[layer_idx], value_states], dim=-2)
        self.keys[layer_idx], self.values[layer_idx] = key_states, value_states
        return key_states, value_states

    def lengths(self) -> list[int]:
        """Cached tokens per layer."""
        return [0 if k is None else int(k.shape[-2]) for k in self.keys]

    def clear(self) -> None:
        """Drop every layer's tensors (after they were moved elsewhere, e.g. into a ``BatchKV``)."""
        self.keys = [None] * len(self.keys)
        self.values = [None] * len(self.values)


@dataclass
class SequenceState:
    """The sequence as it flows through the layers (B rows, L tokens, D hidden, d head dim).

    ``hidden`` [B, L, D]; ``cos``/``sin`` [B, L, d] rotary tables of each token's position;
    ``visual_mask`` [B, L]; ``visual_index`` [B, L] index of each visual token into the layout's visual
    tokens (row-major over the batch), -1 for text.
    """

    hidden: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    visual_mask: torch.Tensor
    visual_index: torch.Tensor

    def select(self, keep: torch.Tensor) -> SequenceState:
        """Keep the tokens where ``keep`` [L] is True (batch size 1)."""
        return SequenceState(
            self.hidden[:, keep],
            self.cos[:, keep],
            self.sin[:, keep],
            self.visual_mask[:, keep],
            self.visual_index[:, keep],
        )


@dataclass
class PrefillResult:
    """Logits [V] at the last prompt position, the cache, and the visual tokens each layer saw."""

    logits: torch.Tensor
    cache: LayerKV
    per_layer_visual: list[int] = field(default_factory=list)


def text_model(model):
    """The Qwen3-VL text decoder (``Qwen3VLTextModel``) of a ``Qwen3VLForConditionalGeneration``."""
    return model.model.language_model


def causal_mask(model, q_len: int, kv_len: int, like: torch.Tensor) -> torch.Tensor | None:
    """Additive causal mask [1, 1, q, kv] (query row i sits at key kv - q + i); None where a kernel needs none.

    A single decode query attends to the whole cache, and a prefill from an empty cache (q == kv) is exactly
    the sdpa / flash kernels' own ``is_causal``; only eager attention, or several queries after cached keys
    (a prompt continued over a cache: ``is_causal`` would align the triangle top-left), need the mask.
    """
    if q_len == 1 or (q_len == kv_len and text_model(model).config._attn_implementation != "eager"):
        return None
    rows = torch.arange(q_len, device=like.device)[:, None] + (kv_len - q_len)
    future = torch.arange(kv_len, device=like.device)[None, :] > rows
    mask = torch.zeros(q_len, kv_len, dtype=like.dtype, device=like.device)
    return mask.masked_fill(future, torch.finfo(like.dtype).min)[None, None]


def embed_sequence(
    model, input_ids: torch.Tensor, visual_mask: torch.Tensor, embeds: torch.Tensor
) -> torch.Tensor:
    """[B, L] ids → [B, L, D] embeddings with the visual tokens' embeddings at the placeholders."""
    hidden = text_model(model).embed_tokens(input_ids)
    if embeds.numel():
        hidden[visual_mask] = embeds.to(hidden.device, hidden.dtype)
    return hidden


def initial_state(model, input_ids, positions, visual_mask, embeds) -> SequenceState:
    """State before layer 0 for ``input_ids`` [B, L], ``positions`` [3, B, L], ``visual_mask`` [B, L]."""
    hidden = embed_sequence(model, input_ids, visual_mask, embeds)
    cos, sin = text_model(model).rotary_emb(hidden, positions)
    index = torch.full(visual_mask.shape, -1, dtype=torch.long, device=visual_mask.device)
    index[visual_mask] = torch.arange(int(visual_mask.sum()), device=visual_mask.device)
    return SequenceState(hidden, cos, sin, visual_mask, index)


def layout_state(model, layout: PromptLayout) -> SequenceState:
    """``initial_state`` of one prompt layout (batch of one), on the model's device."""
    device = model.device
    return initial_state(
        model,
        layout.input_ids[None].to(device),
        layout.positions[:, None].to(device),
        layout.visual_mask[None].to(device),
        layout.embeds,
    )


def add_deepstack(state: SequenceState, features: torch.Tensor) -> None:
    """Add one DeepStack level ([N, D] over the layout's visual tokens) to the visual tokens still present.

    Same arithmetic as ``Qwen3VLTextModel._deepstack_process``: hidden[mask] + features, written back.
    """
    rows = state.visual_index[state.visual_mask]
    hidden = state.hidden.clone()
    hidden[state.visual_mask] = hidden[state.visual_mask] + features.to(hidden.device, hidden.dtype)[rows]
    state.hidden = hidden


def apply_keep(state: SequenceState, keep: KeepRule, layer: int) -> SequenceState:
    """Ask ``keep`` which alive visual tokens survive layer ``layer``; drop the others (text always stays)."""
    alive = state.visual_index[0][state.visual_mask[0]]
    decision = keep(layer, alive.clone())
    if decision is None:
        return state
    decision = torch.as_tensor(decision, device=alive.device)
    if decision.dtype != torch.bool or tuple(decision.shape) != (alive.numel(),):
        raise EngineError(
            f"keep rule after layer {layer} must return a bool mask of shape ({alive.numel()},) or None, "
            f"got {decision.dtype} {tuple(decision.shape)}"
        )
    tokens = ~state.visual_mask[0]
    tokens[state.visual_mask[0]] = decision
    return state.select(tokens)


def run_layers(
    model,
    state: SequenceState,
    layers: range,
    *,
    cache: LayerKV | None = None,
    deepstack: Sequence[torch.Tensor] = (),
    keep: KeepRule | None = None,
    probe: Callable[[int, SequenceState], None] | None = None,
    masks: Sequence[torch.Tensor] | None = None,
) -> tuple[SequenceState, list[int]]:
    """Run decoder ``layers`` on ``state``; returns the new state and the visual tokens each layer saw.

    ``probe(l, state)`` is called with the input of layer l (before it runs); DeepStack level l is added
    after layer l; ``keep`` is asked after layer l (prefill only, batch of one). ``masks[l]``, when given, is
    layer l's additive attention mask (``extend_masks``: padded prefixes); else ``causal_mask``.
    """
    decoder = text_model(model)
    seen = []
    for idx in layers:
        if probe is not None:
            probe(idx, state)
        seen.append(int(state.visual_mask.sum()))
        if masks is not None:
            mask = masks[idx]
        else:
            past = 0 if cache is None else cache.lengths()[idx]
            mask = causal_mask(model, state.hidden.shape[1], past + state.hidden.shape[1], state.hidden)
        state.hidden = decoder.layers[idx](
            state.hidden,
            position_embeddings=(state.cos, state.sin),
            attention_mask=mask,
            past_key_values=cache,
            use_cache=cache is not None,
        )
        if idx < len(deepstack):
            add_deepstack(state, deepstack[idx])
        if keep is not None:
            state = apply_keep(state, keep, idx)
    return state, seen


def final_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm and LM head: [..., D] → [..., V]."""
    return model.lm_head(text_model(model).norm(hidden))


@torch.inference_mode()
def prefill(model, layout: PromptLayout, *, keep: KeepRule | None = None) -> PrefillResult:
    """Run the whole prompt through every layer, filling a ``LayerKV``; logits at the last position.

    The last token is text (the generation prompt), so a keep rule can never remove it.
    """
    decoder = text_model(model)
    cache = LayerKV(len(decoder.layers))
    state, seen = run_layers(
        model,
        layout_state(model, layout),
        range(len(decoder.layers)),
        cache=cache,
        deepstack=layout.deepstack,
        keep=keep,
    )
    return PrefillResult(logits=final_logits(model, state.hidden[0, -1]), cache=cache, per_layer_visual=seen)


@torch.inference_mode()
def decode_step(model, token: int, position: int, cache: LayerKV) -> torch.Tensor:
    """One greedy step: embed ``token`` at ``position`` (all three axes), run every layer; logits [V]."""
    device = model.device
    ids = torch.tensor([[token]], device=device)
    positions = torch.full((3, 1, 1), position, dtype=torch.long, device=device)
    state = initial_state(model, ids, positions, torch.zeros_like(ids, dtype=torch.bool), ids.new_zeros(0, 0))
    state, _ = run_layers(model, state, range(len(text_model(model).layers)), cache=cache)
    return final_logits(model, state.hidden[0, -1])


# ---------------------------------------------------------------------------------------------- prompt prefixes


@dataclass
class PrefixKV:
    """The first ``length`` rows of a prompt run through every layer once, for any prompt starting with them.

    A prompt's prefix is everything before its user text (``prefix_length``): the chat prefix and every
    visual token. What follows is text only, so nothing computed for the prefix depends on the question, and
    a follow-up question runs only its own rows over these keys (``prefill_after``, ``extend_last_logits``)
    -- prefix caching, as serving engines do it. ``keys``/``values``: per layer [1, H_kv, P_l, d], what
    that layer's ``LayerKV`` held after the prefix (P_l < ``length`` where a keep rule dropped visual
    tokens); ``per_layer_visual``: the visual tokens each layer saw. Extending never writes these tensors
    (``LayerKV.update`` concatenates), so one ``PrefixKV`` serves any number of prompts.
    """

    length: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    per_layer_visual: list[int]

    def lengths(self) -> list[int]:
        """Cached rows per layer."""
        return [int(k.shape[-2]) for k in self.keys]

    def to(self, device: torch.device | str) -> PrefixKV:
        """This prefix with its tensors on ``device`` (itself when they are there already)."""
        device = torch.device(device)
        if all(k.device == device for k in self.keys):
            return self
        move = lambda tensors: [t.to(device) for t in tensors]  # noqa: E731
        return PrefixKV(self.length, move(self.keys), move(self.values), list(self.per_layer_visual))


def prefix_length(layout: PromptLayout) -> int:
    """Rows before the user text (``user_span``): the part of the prompt a question does not change."""
    start = layout.user_span[0]
    if not 0 < start < layout.input_ids.numel() or bool(layout.visual_mask[start:].any()):
        raise EngineError(
            f"a prompt prefix must end before the user text and hold every visual token; got a user text at "
            f"row {start} of {layout.input_ids.numel()}"
        )
    return start


def rows_state(
    model, layouts: Sequence[PromptLayout], spans: Sequence[tuple[int, int]], *, pad_id: int
) -> tuple[SequenceState, list[torch.Tensor]]:
    """The rows [start, end) of each layout, right-padded into one batch: its state before layer 0 and its
    DeepStack levels (the visual tokens inside the spans, row-major over the batch).

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
    state = initial_state(model, ids.to(device), positions.to(device), visual.to(device), torch.cat(embeds))
    return state, [torch.cat(levels) for levels in zip(*deepstack, strict=True)]


@torch.inference_mode()
def run_prefixes(
    model,
    layouts: Sequence[PromptLayout],
    *,
    pad_id: int,
    keep: KeepRule | None = None,
    depth: int | None = None,
) -> list[PrefixKV]:
    """Each layout's prefix (``prefix_length``) through the first ``depth`` layers (default: all), the
    prefixes as one right-padded batch. A shallower prefix serves the attention probe (``query_attention``).

    ``keep`` (a batch of one only) may drop visual tokens after any layer, exactly as in ``prefill``.
    """
    if keep is not None and len(layouts) != 1:
        raise EngineError("a keep rule applies to one prompt at a time")
    total = len(text_model(model).layers)
    depth = total if depth is None else depth
    if not 1 <= depth <= total:
        raise EngineError(f"a prefix runs 1 to {total} layers, got {depth}")
    lengths = [prefix_length(x) for x in layouts]
    state, deepstack = rows_state(model, layouts, [(0, n) for n in lengths], pad_id=pad_id)
    cache = LayerKV(depth)
    _, seen = run_layers(model, state, range(depth), cache=cache, deepstack=deepstack, keep=keep)
    if len(layouts) == 1:
        return [PrefixKV(lengths[0], cache.keys, cache.values, seen)]
    # No keep rule in a batch: every layer holds row b's first ``n`` keys (a copy each, so that keeping one
    # prefix does not keep the whole batch's buffer alive).
    return [
        PrefixKV(
            n,
            [k[b : b + 1, :, :n].clone() for k in cache.keys],
            [v[b : b + 1, :, :n].clone() for v in cache.values],
            [int(x.visual_mask.sum())] * len(seen),
        )
        for b, (x, n) in enumerate(zip(layouts, lengths, strict=True))
    ]


def extend_masks(prefixes: Sequence[PrefixKV], rows: int, like: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, the additive mask [B, 1, rows, P_max + rows] of ``rows`` new rows after padded prefixes:
    row b sees its own P_b prefix keys (not the padding up to P_max) and the new rows up to itself. Masked
    entries hold the dtype's most negative finite value (as in ``BatchKV``: a row always sees its own key)."""
    lowest, device, batch = torch.finfo(like.dtype).min, like.device, len(prefixes)
    future = torch.ones(rows, rows, dtype=torch.bool, device=device).triu(1).expand(batch, -1, -1)
    per_layer = list(zip(*(p.lengths() for p in prefixes), strict=True))
    built: dict[tuple[int, ...], torch.Tensor] = {}  # layers with the same prefix lengths share one mask
    for layer_lengths in dict.fromkeys(per_layer):
        lengths = torch.tensor(layer_lengths, device=device)
        padding = torch.arange(max(layer_lengths), device=device)[None, :] >= lengths[:, None]  # [B, P_max]
        blocked = torch.cat([padding[:, None, :].expand(-1, rows, -1), future], dim=-1)  # [B, rows, P + rows]
        mask = torch.zeros(blocked.shape, dtype=like.dtype, device=device).masked_fill(blocked, lowest)
        built[layer_lengths] = mask[:, None]
    return [built[layer_lengths] for layer_lengths in per_layer]


def _extend(
    model,
    layouts: Sequence[PromptLayout],
    prefixes: Sequence[PrefixKV],
    *,
    pad_id: int,
    probe: Callable[[int, SequenceState], None] | None = None,
) -> tuple[SequenceState, LayerKV, list[tuple[int, int]]]:
    """Run each layout's rows after its prefix over the prefix's keys, as one batch, through as many layers
    as the prefixes hold: the state after them, the cache (per layer: the right-padded prefixes, then the
    new rows) and each layout's [start, end) rows that ran."""
    check_mask_attention(model, "reusing a prompt prefix")
    depth = len(prefixes[0].keys)
    for x, prefix in zip(layouts, prefixes, strict=True):
        if prefix.length != prefix_length(x) or len(prefix.keys) != depth:
            raise EngineError(
                f"the cached prefix ({prefix.length} rows, {len(prefix.keys)} layers) does not fit this "
                f"prompt ({prefix_length(x)} rows before the question, {depth} layers)"
            )
    spans = [(p.length, x.input_ids.numel()) for x, p in zip(layouts, prefixes, strict=True)]
    state, _ = rows_state(model, layouts, spans, pad_id=pad_id)
    cache = LayerKV(depth)
    for layer in range(depth):
        keys = [p.keys[layer].to(state.hidden.device) for p in prefixes]
        values = [p.values[layer].to(state.hidden.device) for p in prefixes]
        width = max(k.shape[-2] for k in keys)
        cache.keys[layer] = keys[0] if len(keys) == 1 else right_padded(keys, width)
        cache.values[layer] = values[0] if len(values) == 1 else right_padded(values, width)
    masks = extend_masks(prefixes, state.hidden.shape[1], state.hidden)
    state, _ = run_layers(model, state, range(depth), cache=cache, masks=masks, probe=probe)
    return state, cache, spans


@torch.inference_mode()
def last_logits(model, layouts: Sequence[PromptLayout], *, pad_id: int) -> torch.Tensor:
    """Logits [B, V] at each whole prompt's last row, the prompts right-padded into one batch (no prefix:
    any attention kernel, since no mask is needed)."""
    spans = [(0, x.input_ids.numel()) for x in layouts]
    state, deepstack = rows_state(model, layouts, spans, pad_id=pad_id)
    state, _ = run_layers(model, state, range(len(text_model(model).layers)), deepstack=deepstack)
    last = torch.tensor([end - 1 for _, end in spans], device=state.hidden.device)
    return final_logits(model, state.hidden[torch.arange(len(layouts), device=last.device), last])


def _logits_after(model, layouts, prefixes, *, pad_id: int) -> tuple[torch.Tensor, LayerKV]:
    """Logits [B, V] at each layout's last row after its full-depth prefix, and the cache (``_extend``)."""
    if any(len(p.keys) != len(text_model(model).layers) for p in prefixes):
        raise EngineError("logits need prefixes through every layer")
    state, cache, spans = _extend(model, layouts, prefixes, pad_id=pad_id)
    last = torch.tensor([end - start - 1 for start, end in spans], device=state.hidden.device)
    rows = torch.arange(len(layouts), device=state.hidden.device)
    return final_logits(model, state.hidden[rows, last]), cache


@torch.inference_mode()
def prefill_after(model, layout: PromptLayout, prefix: PrefixKV, *, pad_id: int) -> PrefillResult:
    """``prefill`` of ``layout`` from its cached ``prefix``: only the rows after it run (the same arithmetic as
    a prefill that ran ``run_prefixes`` first, so a reused prefix answers bit for bit as a fresh one)."""
    logits, cache = _logits_after(model, [layout], [prefix], pad_id=pad_id)
    return PrefillResult(logits=logits[0], cache=cache, per_layer_visual=list(prefix.per_layer_visual))


@torch.inference_mode()
def extend_last_logits(
    model, layouts: Sequence[PromptLayout], prefixes: Sequence[PrefixKV], *, pad_id: int
) -> torch.Tensor:
    """Logits [B, V] at each prompt's last row, only the rows after each cached prefix running, as one batch."""
    return _logits_after(model, layouts, prefixes, pad_id=pad_id)[0]


def greedy_tokens(
    model, first: PrefillResult, *, start_position: int, max_new_tokens: int, eos_ids: Sequence[int]
) -> Iterator[int]:
    """Greedy decoding after a prefill: yields token ids until one of ``eos_ids`` (yielded too) or
    ``max_new_tokens``. Step k (0-based) is fed at ``start_position + k``; ties go to the lowest id, like
    ``torch.argmax`` in stock ``generate``."""
    logits = first.logits
    for k in range(max_new_tokens):
        token = int(torch.argmax(logits.float()))
        yield token
        if token in eos_ids or k + 1 == max_new_tokens:
            return
        logits = decode_step(model, token, start_position + k, first.cache)


# ---------------------------------------------------------------------------------------------- batched decoding


#: Attention implementations whose kernels take an additive 4-D mask (``BatchKV``'s padding, ``extend_masks``).
MASK_ATTENTION = ("eager", "sdpa")


class BatchKV:
    """The per-layer caches of B prefilled requests, merged for decoding them together.

    Layer l keeps one right-padded buffer [B, H_kv, C_l, d]. Row b holds its own prefill's P[b][l] keys at
    [0, P[b][l]) -- where its ``LayerKV`` had them, in the same order -- and decode step s writes at
    P[b][l] + s, so a row's real keys always stay contiguous from index 0, exactly as in its own cache;
    whatever follows them is padding (zeros, never NaN). Lengths differ per row (prompt length, keep rule)
    and per layer (LP-Comp), so the padding differs too: every layer gets its own additive mask
    [B, 1, 1, W_l], 0 on real keys and the dtype's most negative finite value on padding. A finite value,
    not -inf: the query always sees its own key, so after the max subtraction a padded score underflows to
    exactly 0 in softmax (padding contributes 0 x finite V = 0), and no all-masked row can make NaN.

    Implements ``update`` (the one method Qwen3-VL's attention calls), like ``LayerKV``. Per step:
    ``begin_step`` unmasks the slots the step writes, the layers run, ``end_step`` advances.
    """

    def __init__(self, caches: Sequence[LayerKV], steps: Sequence[int]) -> None:
        """``caches``: one prefilled ``LayerKV`` per row (moved in: each is emptied); ``steps``: the most
        decode steps each row will run (its max_new_tokens - 1), which sizes the buffers once."""
        self.num_layers = len(caches[0].keys)
        self.prefill = [cache.lengths() for cache in caches]  # [B][L]
        self.keys, self.values = [], []
        for layer in range(self.num_layers):
            capacity = max(p[layer] + n for p, n in zip(self.prefill, steps, strict=True))
            self.keys.append(right_padded([c.keys[layer] for c in caches], capacity))
            self.values.append(right_padded([c.values[layer] for c in caches], capacity))
        for cache in caches:
            cache.clear()
        self.lengths = torch.tensor(self.prefill, device=self.keys[0].device).t().contiguous()  # [L, B]
        width = max(k.shape[2] for k in self.keys)
        self.masks = padding_masks(self.lengths, width, self.keys[0].dtype)  # [L, B, 1, 1, W]
        self.step = 0
        self.lean: tuple[list[LeanLayer], Callable] | None = None  # set by ``batch_decode_step``
        self._write: torch.Tensor | None = None
        self._widths: list[int] = []
        self._index_rows()

    def _index_rows(self) -> None:
        """Index tensors and the longest prefill per layer for the rows now in the batch."""
        rows = len(self.prefill)
        self._rows = torch.arange(rows, device=self.lengths.device)
        self._layer_index = torch.arange(self.num_layers, device=self.lengths.device)[:, None].expand(
            -1, rows
        )
        self._row_index = self._rows.expand(self.num_layers, -1)
        self._longest = [max(p[layer] for p in self.prefill) for layer in range(self.num_layers)]

    def begin_step(self) -> None:
        """Unmask, in every layer and row, the slot this step writes (P[b][l] + step): one indexed write."""
        self._write = self.lengths + self.step  # [L, B]
        self.masks[self._layer_index, self._row_index, 0, 0, self._write] = 0
        # Keys attended this step: up to the longest row's new key.
        self._widths = [longest + self.step + 1 for longest in self._longest]

    def end_step(self) -> None:
        self.step += 1

    def attention_mask(self, layer: int) -> torch.Tensor:
        """Additive mask [B, 1, 1, W_l] of ``layer`` for this step (a view; see the class docstring)."""
        return self.masks[layer, :, :, :, : self._widths[layer]]

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """Write this step's [B, H_kv, 1, d] keys/values at each row's slot; return [B, H_kv, W_l, d] views."""
        slot = self._write[layer_idx].view(-1, 1, 1, 1).expand_as(key_states)  # [B, H_kv, 1, d]
        self.keys[layer_idx].scatter_(2, slot, key_states)
        self.values[layer_idx].scatter_(2, slot, value_states)
        width = self._widths[layer_idx]
        return self.keys[layer_idx][:, :, :width], self.values[layer_idx][:, :, :width]

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (0-based in the current batch, in order): finished requests leave the batch."""
        index = torch.tensor(list(rows), device=self._rows.device)
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        self.masks = self.masks.index_select(1, index)
        self.lengths = self.lengths.index_select(1, index)
        self.prefill = [self.prefill[r] for r in rows]
        self._index_rows()


def right_padded(rows: Sequence[torch.Tensor], capacity: int) -> torch.Tensor:
    """One [1, H_kv, n_b, d] cache tensor per row → [B, H_kv, capacity, d]: row b's n_b entries first, in
    their order, zeros after (finite, so a masked slot can never turn a weight of 0 into NaN)."""
    first = rows[0]
    out = first.new_zeros(len(rows), first.shape[1], capacity, first.shape[-1])
    for b, row in enumerate(rows):
        out[b, :, : row.shape[-2]] = row[0]
    return out


def padding_masks(lengths: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Real lengths [L, B] → additive masks [L, B, 1, 1, width]: 0 on each row's first ``lengths`` slots,
    the dtype's most negative finite value after (see ``BatchKV``). The [1, 1] broadcasts over heads and the
    single query, the shape eager attention and sdpa both take."""
    real = torch.arange(width, device=lengths.device) < lengths[:, :, None]  # [L, B, W]
    masks = torch.zeros(real.shape, dtype=dtype, device=lengths.device)
    return masks.masked_fill(~real, torch.finfo(dtype).min)[:, :, None, None]


def supports_masks(model) -> bool:
    """Whether the model's attention kernel takes an additive 4-D mask (eager, sdpa)."""
    return text_model(model).config._attn_implementation in MASK_ATTENTION


def check_mask_attention(model, what: str) -> None:
    """``what`` (batched decoding, prefix reuse) needs an attention kernel that takes an additive 4-D mask."""
    if not supports_masks(model):
        implementation = text_model(model).config._attn_implementation
        raise EngineError(f"{what} supports {' and '.join(MASK_ATTENTION)} attention, got {implementation!r}")


@dataclass(frozen=True)
class LeanLayer:
    """One decoder layer's parameters, read once, for ``lean_decode_layer`` (no module is called).

    ``qk_norm`` [H + H_kv, d] is q_norm's weight on each query head then k_norm's on each key head (the
    same values the modules broadcast), so both norms run as one; ``qk_eps`` is their (equal) epsilon.
    """

    input_norm: torch.Tensor
    post_norm: torch.Tensor
    qk_norm: torch.Tensor
    eps: tuple[float, float, float]  # input, post-attention, q_norm/k_norm
    q: tuple[torch.Tensor, torch.Tensor | None]
    k: tuple[torch.Tensor, torch.Tensor | None]
    v: tuple[torch.Tensor, torch.Tensor | None]
    o: tuple[torch.Tensor, torch.Tensor | None]
    gate: tuple[torch.Tensor, torch.Tensor | None]
    up: tuple[torch.Tensor, torch.Tensor | None]
    down: tuple[torch.Tensor, torch.Tensor | None]
    heads: int
    head_dim: int
    attention: torch.nn.Module  # ``self_attn``, handed to the attention function as the library does


def lean_layer(layer) -> LeanLayer:
    """Read a ``Qwen3VLTextDecoderLayer``'s parameters (the tensors themselves; only the small q/k norm
    weights are laid out per head)."""
    attn, mlp = layer.self_attn, layer.mlp
    if not isinstance(mlp.act_fn, (torch.nn.SiLU, SiLUActivation)):
        raise EngineError(f"the lean decode step supports SiLU-gated MLPs, got {type(mlp.act_fn).__name__}")
    if attn.q_norm.variance_epsilon != attn.k_norm.variance_epsilon:
        raise EngineError("the lean decode step needs q_norm and k_norm to share their epsilon")

    def linear(module) -> tuple[torch.Tensor, torch.Tensor | None]:
        return module.weight, module.bias

    d = int(attn.head_dim)
    heads = attn.q_proj.weight.shape[0] // d
    kv_heads = attn.k_proj.weight.shape[0] // d
    qk_norm = torch.cat([attn.q_norm.weight.expand(heads, d), attn.k_norm.weight.expand(kv_heads, d)])
    return LeanLayer(
        input_norm=layer.input_layernorm.weight,
        post_norm=layer.post_attention_layernorm.weight,
        qk_norm=qk_norm,
        eps=(
            float(layer.input_layernorm.variance_epsilon),
            float(layer.post_attention_layernorm.variance_epsilon),
            float(attn.q_norm.variance_epsilon),
        ),
        q=linear(attn.q_proj),
        k=linear(attn.k_proj),
        v=linear(attn.v_proj),
        o=linear(attn.o_proj),
        gate=linear(mlp.gate_proj),
        up=linear(mlp.up_proj),
        down=linear(mlp.down_proj),
        heads=heads,
        head_dim=d,
        attention=attn,
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``Qwen3VLTextRMSNorm.forward``: the same operations in the same order (float32 statistics); the
    casts are skipped when they are identities (float32 input)."""
    dtype = x.dtype
    if dtype == torch.float32:
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return weight * x.to(dtype)


@dataclass(frozen=True)
class Rotation:
    """One step's rotary tables, laid out once for every layer: ``cos`` [B, 1, 1, d] and ``sin`` with
    ``rotate_half``'s sign folded in, so ``x * cos + x[..., half] * sin`` is ``apply_rotary_pos_emb``: the
    same products ((-a) * s and a * (-s) are the same float), gathered instead of sliced and concatenated."""

    cos: torch.Tensor
    sin: torch.Tensor
    half: torch.Tensor  # [d]: index i + d/2 then i

    @classmethod
    def of(cls, cos: torch.Tensor, sin: torch.Tensor) -> Rotation:
        """From the rotary embedding's [B, n, d] tables."""
        d = cos.shape[-1]
        half = torch.arange(d, device=cos.device).roll(d // 2)
        sign = torch.ones(d, dtype=sin.dtype, device=sin.device)
        sign[: d // 2] = -1
        return cls(cos[:, :, None], (sin * sign)[:, :, None], half)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate [B, n, heads, d]."""
        return x * self.cos + x.index_select(-1, self.half) * self.sin


def lean_decode_layer(
    lean: LeanLayer,
    hidden: torch.Tensor,
    rotation: Rotation,
    mask: torch.Tensor | None,
    cache,
    layer_idx: int,
    attention_fn: Callable,
) -> torch.Tensor:
    """``Qwen3VLTextDecoderLayer.forward`` for one decode query per row, from the layer's own parameters.

    ``hidden`` [B, 1, D]; ``rotation`` the step's rotary tables; ``cache`` any object with ``update``
    (``BatchKV``, ``LayerKV``); ``attention_fn`` the library's attention function of the model's
    implementation (``attention_function``), called as ``Qwen3VLTextAttention`` calls it. The same
    arithmetic on the same values as the library's modules (norms, projections, rotary, cache update,
    attention, o_proj, SiLU-gated MLP, residuals), bitwise (``tests/test_engine_lean.py``); what is skipped
    is the module machinery, identity casts, and the per-tensor repetition: q and k are normalised and
    rotated as one tensor (each head's values go through the same elementwise operations and the same
    per-head reduction as in their own tensors).
    """
    b, n = hidden.shape[:2]
    d, heads = lean.head_dim, lean.heads
    eps_in, eps_post, eps_qk = lean.eps
    x = rms_norm(hidden, lean.input_norm, eps_in)
    qk = torch.cat([F.linear(x, *lean.q), F.linear(x, *lean.k)], -1).view(b, n, -1, d)
    qk = rotation(rms_norm(qk, lean.qk_norm, eps_qk))
    q, k = qk[:, :, :heads].transpose(1, 2), qk[:, :, heads:].transpose(1, 2)
    v = F.linear(x, *lean.v).view(b, n, -1, d).transpose(1, 2)
    k, v = cache.update(k, v, layer_idx)
    out, _ = attention_fn(lean.attention, q, k, v, mask, dropout=0.0, scaling=lean.attention.scaling)
    hidden = hidden + F.linear(out.reshape(b, n, -1).contiguous(), *lean.o)
    x = rms_norm(hidden, lean.post_norm, eps_post)
    return hidden + F.linear(F.silu(F.linear(x, *lean.gate)) * F.linear(x, *lean.up), *lean.down)


def lean_layers(model) -> list[LeanLayer]:
    """``lean_layer`` of every decoder layer of ``model``."""
    return [lean_layer(layer) for layer in text_model(model).layers]


def attention_function(model) -> Callable:
    """The attention function Qwen3-VL's attention module resolves for the model's implementation."""
    implementation = text_model(model).config._attn_implementation
    return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)


@torch.inference_mode()
def batch_decode_step(model, tokens: Sequence[int], positions: Sequence[int], cache: BatchKV) -> torch.Tensor:
    """One greedy step for B rows: row b embeds ``tokens[b]`` at ``positions[b]`` (all three axes, its own
    rotary angle), every layer attends over its own cached keys (``cache.attention_mask``); logits [B, V].

    The same operations per row as ``decode_step``, run by ``lean_decode_layer`` (bitwise the library layer's
    output, without its module-call overhead; the layers' parameters are read once per batch); only the
    batch dimension and the masked padding differ, which can change fp32 rounding (a GEMM over B rows is
    not bitwise B GEMMs over one, a fused attention kernel sums a longer row), never the math: the padding
    itself adds exact zeros.
    """
    device = model.device
    decoder = text_model(model)
    if cache.lean is None:
        cache.lean = (lean_layers(model), attention_function(model))
    layers, attention_fn = cache.lean
    ids = torch.tensor(list(tokens), device=device)[:, None]  # [B, 1]
    position_ids = torch.tensor(list(positions), device=device).view(1, -1, 1).expand(3, -1, 1)  # [3, B, 1]
    hidden = decoder.embed_tokens(ids)  # [B, 1, D]
    rotation = Rotation.of(*decoder.rotary_emb(hidden, position_ids))  # once for all layers
    cache.begin_step()
    for idx, lean in enumerate(layers):
        hidden = lean_decode_layer(
            lean, hidden, rotation, cache.attention_mask(idx), cache, idx, attention_fn
        )
    cache.end_step()
    return final_logits(model, hidden[:, -1])


def batched_greedy_tokens(
    model,
    firsts: Sequence[PrefillResult],
    *,
    start_positions: Sequence[int],
    max_new_tokens: Sequence[int],
    eos_ids: Sequence[int],
) -> Iterator[list[tuple[int, int]]]:
    """Greedy decoding of several prefilled requests together; ``greedy_tokens`` for each, in lockstep.

    Yields, per step, ``(request, token)`` for every request still running (step 0: the prefill logits).
    Request i stops after one of ``eos_ids`` (yielded too) or ``max_new_tokens[i]`` tokens and then leaves
    the batch; its step k is fed at ``start_positions[i] + k``. The prefill caches are moved into one
    ``BatchKV`` (each ``firsts[i].cache`` is emptied) when the first decode step is needed.
    """
    check_mask_attention(model, "batched decoding")
    eos = set(eos_ids)
    active = list(range(len(firsts)))
    logits = torch.stack([first.logits for first in firsts])  # [B, V]
    cache: BatchKV | None = None
    for step in itertools.count():
        tokens = logits.float().argmax(-1).tolist()
        yield list(zip(active, tokens, strict=True))
        going = [j for j, b in enumerate(active) if tokens[j] not in eos and step + 1 < max_new_tokens[b]]
        if not going:
            return
        if cache is None:
            cache = BatchKV(
                [firsts[active[j]].cache for j in going], [max_new_tokens[active[j]] - 1 for j in going]
            )
        elif len(going) < len(active):
            cache.keep_rows(going)
        active = [active[j] for j in going]
        logits = batch_decode_step(
            model, [tokens[j] for j in going], [start_positions[b] + step for b in active], cache
        )


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply rotary tables [B, n, d] to [B, H, n, d] (Qwen3-VL's ``apply_rotary_pos_emb``, one tensor)."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


def row_attention(
    layer, state: SequenceState, rows: torch.Tensor, past: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) of query ``rows`` at ``layer``'s input, causal: [H, R, P + L] float32.

    Computed from the layer's own projections (input norm, q/k proj, q_norm/k_norm, rotary), keys expanded
    for grouped-query attention as ``repeat_kv`` does (query head h reads key head h // groups). Only the
    R requested rows are materialised, never L x L. ``past`` [1, H_kv, P, d]: the layer's cached keys of P
    earlier tokens (a ``PrefixKV``), which every row sees before the state's own L tokens.
    """
    attn = layer.self_attn
    x = layer.input_layernorm(state.hidden)  # [1, L, D]
    d = attn.head_dim
    q = attn.q_norm(attn.q_proj(x[:, rows]).view(1, rows.numel(), -1, d)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(x).view(1, x.shape[1], -1, d)).transpose(1, 2)
    q = rotary(q, state.cos[:, rows], state.sin[:, rows])
    k = rotary(k, state.cos, state.sin)
    before = 0 if past is None else past.shape[-2]
    if past is not None:
        k = torch.cat([past.to(k.dtype), k], dim=-2)
    k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2))[0] * attn.scaling  # [H, R, P + L]
    future = torch.arange(k.shape[-2], device=rows.device)[None, :] > rows[:, None] + before
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


@torch.inference_mode()
def query_attention(
    model,
    layout: PromptLayout,
    *,
    rows: torch.Tensor,
    columns: Sequence[torch.Tensor],
    layers: Sequence[int],
    reduce: str = "mean",
    prefix: PrefixKV | None = None,
) -> torch.Tensor:
    """Attention from query ``rows`` to each column set, at each of ``layers``: [len(layers), len(columns)].

    Per layer: attention probabilities of the rows (``row_attention``), averaged over heads; per column set,
    the rows' attention mass on it ("sum") or its mean per column ("mean"); then averaged over the rows.
    Only layers up to max(layers) run. Follows XComp's QC-Comp scoring (arXiv 2604.14149), whose windows
    are fresh sequences with their own local positions (the layout's). With ``prefix`` (the layout's
    ``PrefixKV``, at least max(layers) + 1 deep, no token dropped) only the rows after it run, and every
    query row must be among them.
    """
    if reduce not in ("mean", "sum"):
        raise EngineError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    decoder = text_model(model)
    if not layers or any(not 0 <= int(i) < len(decoder.layers) for i in layers):
        raise EngineError(f"layers must be 0-based indices in [0, {len(decoder.layers)}), got {list(layers)}")
    rows = rows.to(model.device)
    wanted = {int(i) for i in layers}
    found: dict[int, torch.Tensor] = {}
    start = 0 if prefix is None else prefix.length

    def probe(idx: int, state: SequenceState) -> None:
        if idx in wanted:
            past = None if prefix is None else prefix.keys[idx].to(state.hidden.device)
            per_column = row_attention(decoder.layers[idx], state, rows - start, past).mean(0)  # [R, L]
            found[idx] = torch.stack([column_score(per_column, c, reduce) for c in columns])

    if prefix is None:
        state = layout_state(model, layout)
        run_layers(model, state, range(max(wanted) + 1), deepstack=layout.deepstack, probe=probe)
        return torch.stack([found[int(i)] for i in layers]).cpu()
    if len(prefix.keys) <= max(wanted) or any(n != prefix.length for n in prefix.lengths()):
        raise EngineError(f"the prefix must hold all its {prefix.length} rows in layers 0..{max(wanted)}")
    if int(rows.min()) < start:
        raise EngineError(f"query rows must come after the {start}-row prefix")
    # One prompt: no right padding, so the pad id is never used.
    _extend(model, [layout], [prefix], pad_id=0, probe=probe)
    return torch.stack([found[int(i)] for i in layers]).cpu()


def column_score(attention: torch.Tensor, columns: torch.Tensor, reduce: str) -> torch.Tensor:
    """Mean over rows of the attention [R, L] on ``columns``: summed over them, or averaged per column."""
    mass = attention[:, columns.to(attention.device)].sum(-1)
    if reduce == "mean":
        mass = mass / max(columns.numel(), 1)
    return mass.mean()
