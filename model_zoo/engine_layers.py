"""Qwen3-VL's decoder layers one at a time: the part of the engine the library's forward cannot do in one call.

``Qwen3VLTextModel.forward`` runs every layer on one sequence with one mask and one set of positions. This
module runs the same library layers (``Qwen3VLTextDecoderLayer``, called with the arguments the library's
forward gives them) in our own loop, for what that call cannot express:

* a ``KeepRule`` asked after each layer which visual tokens survive it (XComp's LP-Comp): later layers see
  fewer tokens, and each layer's cache keeps what that layer saw, so cache lengths differ per layer;
* a prompt prefix run through only some layers, or extended when its layers hold different lengths;
* a probe reading a layer's input before the layer runs (the attention probe of XComp's QC-Comp).

Ours is only the loop: each layer's mask comes from the library's ``create_causal_mask`` (sized against that
layer's cache), the rotary tables from the model's ``rotary_emb``, and DeepStack level i is added after layer
i to the visual tokens still present with ``Qwen3VLTextModel._deepstack_process``'s arithmetic (each token
its own features, whatever was dropped before). With no keep rule this loop is the library's forward bit
for bit (``tests/test_engine_layers.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask

#: Same signature as ``compressors.base.KeepRule`` (declared again here: the two packages do not import
#: each other). Returns a bool mask over ``alive`` of the tokens to keep, or None to keep all.
KeepRule = Callable[[int, torch.Tensor], "torch.Tensor | None"]

#: Attention implementations whose kernels take an additive or boolean 4-D mask (padded batches).
MASK_ATTENTION = ("eager", "sdpa")


class EngineError(ValueError):
    """A request the engine cannot run (the message says what it got and what is valid)."""


def text_model(model):
    """The Qwen3-VL text decoder (``Qwen3VLTextModel``) of a ``Qwen3VLForConditionalGeneration``."""
    return model.model.language_model


def attention_implementation(model) -> str:
    """The attention kernel the text model's layers use ("sdpa", "eager", "flash_attention_2", ...).

    The one place the engine reads a private library attribute: transformers keeps the choice in
    ``config._attn_implementation`` and offers no public getter for it.
    """
    return text_model(model).config._attn_implementation


def supports_masks(model) -> bool:
    """Whether the model's attention kernel takes a 4-D mask (eager, sdpa): needed for padded batches."""
    return attention_implementation(model) in MASK_ATTENTION


def check_mask_attention(model, what: str) -> None:
    """``what`` (batched decoding, prefix reuse) needs an attention kernel that takes a 4-D mask."""
    if not supports_masks(model):
        raise EngineError(
            f"{what} supports {' and '.join(MASK_ATTENTION)} attention, got {attention_implementation(model)!r}"
        )


def new_cache(model) -> DynamicCache:
    """An empty library cache with one (dynamic, full-attention) layer per decoder layer."""
    return DynamicCache(config=text_model(model).config)


def cache_lengths(cache: DynamicCache) -> list[int]:
    """Cached tokens per layer."""
    return [cache.get_seq_length(layer) for layer in range(len(cache))]


def final_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm and LM head: [..., D] → [..., V]."""
    return model.lm_head(text_model(model).norm(hidden))


@dataclass
class SequenceState:
    """The sequence as it flows through the layers (B rows, L tokens, D hidden, d head dim).

    ``hidden`` [B, L, D]; ``positions`` [3, B, L] each token's (t, h, w) position at the current layer;
    ``visual_mask`` [B, L]; ``visual_index`` [B, L] index of each visual token into the visual tokens of
    the whole batch (row-major), -1 for text; ``rows`` [B, L] each token's row in the sequence it started
    as. ``rotary`` holds the (cos, sin) tables [B, L, d] of ``positions`` + ``shift`` (per row) once made.
    """

    hidden: torch.Tensor
    positions: torch.Tensor
    visual_mask: torch.Tensor
    visual_index: torch.Tensor
    rows: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    shift: torch.Tensor | None = None

    @classmethod
    def start(cls, hidden, positions, visual_mask, first_rows: Sequence[int] | None = None) -> SequenceState:
        """State before layer 0: embeddings [B, L, D] at ``positions`` [3, B, L], ``visual_mask`` [B, L]; row
        b's rows counted from ``first_rows[b]`` (default 0: the rows after a prefix of that length)."""
        device = visual_mask.device
        index = torch.full(visual_mask.shape, -1, dtype=torch.long, device=device)
        index[visual_mask] = torch.arange(int(visual_mask.sum()), device=device)
        rows = torch.arange(visual_mask.shape[1], device=device).expand(visual_mask.shape)
        if first_rows is not None:
            rows = rows + torch.tensor(list(first_rows), device=device)[:, None]
        return cls(hidden, positions, visual_mask, index, rows)

    def tables(self, model, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary tables of ``positions`` + ``shift`` [B] (made by the model's ``rotary_emb``, again only
        when the positions or the shift changed)."""
        if self.rotary is None or not torch.equal(shift, self.shift):
            positions = self.positions + shift.view(1, -1, 1)
            self.rotary, self.shift = text_model(model).rotary_emb(self.hidden, positions), shift
        return self.rotary

    def select(self, keep: torch.Tensor) -> SequenceState:
        """Keep the tokens where ``keep`` [L] is True (batch size 1), laid out afresh (``relayout``)."""
        positions = relayout(self.positions[:, 0], self.visual_mask[0], keep)[:, None]
        return SequenceState(
            self.hidden[:, keep],
            positions,
            self.visual_mask[:, keep],
            self.visual_index[:, keep],
            self.rows[:, keep],
        )


def relayout(positions: torch.Tensor, visual: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Positions [3, n] of the ``keep``-ed tokens of one sequence, laid out afresh by Qwen3-VL's rule.

    ``positions`` [3, L] and ``visual`` [L] describe the sequence as it is; ``keep`` [L] picks the n tokens
    that stay, in order. Each visual token keeps its local (t, h, w) offset from its block's start (the
    position after the text token before it); the kept tokens are then laid out as ``model_zoo.prompt`` lays
    out a prompt: text tokens advance by one from 0, a block starts at the cursor and the text after it
    continues past the block's extent (its largest kept local offset + 1), a block left empty takes no room.
    So the remaining sequence is numbered contiguously, the M-RoPE form of the 1-D renumbering XComp's
    authors do after every LP-Comp drop (``position_ids = arange(len)``, ``modeling_qwen2_flash.py``
    ~1462); keeping every token of a prompt gives its own positions back.
    """
    index = torch.arange(positions.shape[1], device=positions.device)
    before = torch.cummax(torch.where(visual, -1, index), 0).values.clamp(min=0)  # text at or before
    local = positions - positions[0, before] - 1  # [3, L]: a visual token's offset in its block
    kept, block, local = visual[keep], before[keep], local[:, keep]
    extent = torch.zeros_like(index).scatter_reduce(
        0, block[kept], local[:, kept].amax(0) + 1, reduce="amax", include_self=True
    )
    same_block_next = torch.cat([kept[1:] & (block[1:] == block[:-1]), kept.new_zeros(1)])
    advance = torch.where(kept, torch.where(same_block_next, 0, extent[block]), 1)
    cursor = advance.cumsum(0) - advance  # where each kept token's text or block starts
    return torch.where(kept, cursor + local, cursor.expand(3, -1))


def embed_sequence(
    model, input_ids: torch.Tensor, visual_mask: torch.Tensor, embeds: torch.Tensor
) -> torch.Tensor:
    """[B, L] ids → [B, L, D] embeddings with the visual tokens' embeddings at the placeholders."""
    hidden = text_model(model).embed_tokens(input_ids)
    if embeds.numel():
        hidden[visual_mask] = embeds.to(hidden.device, hidden.dtype)
    return hidden


def right_padded(rows: Sequence[torch.Tensor], capacity: int) -> torch.Tensor:
    """One [1, H_kv, n_b, d] cache tensor per row → [B, H_kv, capacity, d]: row b's n_b entries first, in
    their order, zeros after (finite, so a masked slot can never turn a weight of 0 into NaN). A single
    row already ``capacity`` long is returned as it is."""
    first = rows[0]
    if len(rows) == 1 and first.shape[-2] == capacity:
        return first
    out = first.new_zeros(len(rows), first.shape[1], capacity, first.shape[-1])
    for b, row in enumerate(rows):
        out[b, :, : row.shape[-2]] = row[0]
    return out


def add_deepstack(state: SequenceState, features: torch.Tensor) -> None:
    """Add one DeepStack level ([N, D] over the layout's visual tokens) to the visual tokens still present.

    ``Qwen3VLTextModel._deepstack_process``'s arithmetic (hidden[mask] + features, on a copy), each token
    taking its own row of ``features`` by ``visual_index``.
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


class LayerMasks:
    """Each layer's attention mask, made by the library's ``create_causal_mask`` against that layer's cache.

    ``padding`` (optional) holds, per layer, the 2-D mask [B, cached + new] of real (True) and padded
    (False) keys, for batches whose cached prefixes are right-padded. Layers with the same cached length
    and the same padding tensor share one mask.
    """

    def __init__(
        self, model, cache: DynamicCache | None, padding: Sequence[torch.Tensor] | None = None
    ) -> None:
        self.config = text_model(model).config
        self.cache, self.padding = cache, padding
        self._made: dict[tuple, torch.Tensor | None] = {}

    def __call__(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        cached = 0 if self.cache is None else self.cache.get_seq_length(layer)
        padding = None if self.padding is None else self.padding[layer]
        key = (cached, hidden.shape[1], id(padding))
        if key not in self._made:
            self._made[key] = create_causal_mask(
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=padding,
                past_key_values=self.cache,
                layer_idx=layer,
            )
        return self._made[key]


@dataclass
class Trace:
    """Per layer of a run: the visual tokens it saw and the position right after its last token, where the
    next token sits at that layer (for a batch of one; layers differ once a keep rule renumbered)."""

    seen: list[int]
    next_positions: list[int]


def run_layers(
    model,
    state: SequenceState,
    layers: range,
    *,
    cache: DynamicCache | None = None,
    deepstack: Sequence[torch.Tensor] = (),
    keep: KeepRule | None = None,
    probe: Callable[[int, SequenceState], None] | None = None,
    masks: LayerMasks | None = None,
    shifts: torch.Tensor | None = None,
) -> tuple[SequenceState, Trace]:
    """Run decoder ``layers`` on ``state``; returns the new state and what each layer saw (``Trace``).

    ``probe(l, state)`` is called with the input of layer l (before it runs); DeepStack level l is added
    after layer l; ``keep`` is asked after layer l (prefill only, batch of one), and what remains is laid out
    afresh (``relayout``). ``masks`` makes each layer's mask (default: causal over ``cache``); ``shifts``
    [layers, B] moves row b's positions by ``shifts[l, b]`` at layer l (rows continuing a renumbered prefix).
    """
    decoder = text_model(model)
    masks = masks or LayerMasks(model, cache)
    unshifted = torch.zeros(state.hidden.shape[0], dtype=torch.long, device=state.hidden.device)
    trace = Trace([], [])
    for idx in layers:
        if probe is not None:
            probe(idx, state)
        shift = unshifted if shifts is None else shifts[idx]
        trace.seen.append(int(state.visual_mask.sum()))
        trace.next_positions.append(int(state.positions[:, 0].max() + shift[0]) + 1)
        state.hidden = decoder.layers[idx](
            state.hidden,
            attention_mask=masks(idx, state.hidden),
            position_embeddings=state.tables(model, shift),
            past_key_values=cache,
            use_cache=cache is not None,
        )
        if idx < len(deepstack):
            add_deepstack(state, deepstack[idx])
        if keep is not None:
            state = apply_keep(state, keep, idx)
    return state, trace
