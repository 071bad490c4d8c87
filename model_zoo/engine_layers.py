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

    ``hidden`` [B, L, D]; ``cos``/``sin`` [B, L, d] rotary tables of each token's position;
    ``visual_mask`` [B, L]; ``visual_index`` [B, L] index of each visual token into the layout's visual
    tokens (row-major over the batch), -1 for text.
    """

    hidden: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    visual_mask: torch.Tensor
    visual_index: torch.Tensor

    @classmethod
    def start(cls, model, hidden: torch.Tensor, positions: torch.Tensor, visual_mask: torch.Tensor):
        """State before layer 0: embeddings [B, L, D] at ``positions`` [3, B, L], ``visual_mask`` [B, L]."""
        cos, sin = text_model(model).rotary_emb(hidden, positions)
        index = torch.full(visual_mask.shape, -1, dtype=torch.long, device=visual_mask.device)
        index[visual_mask] = torch.arange(int(visual_mask.sum()), device=visual_mask.device)
        return cls(hidden, cos, sin, visual_mask, index)

    def select(self, keep: torch.Tensor) -> SequenceState:
        """Keep the tokens where ``keep`` [L] is True (batch size 1)."""
        return SequenceState(
            self.hidden[:, keep],
            self.cos[:, keep],
            self.sin[:, keep],
            self.visual_mask[:, keep],
            self.visual_index[:, keep],
        )


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
    return SequenceState.start(model, hidden, positions, visual_mask)


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
) -> tuple[SequenceState, list[int]]:
    """Run decoder ``layers`` on ``state``; returns the new state and the visual tokens each layer saw.

    ``probe(l, state)`` is called with the input of layer l (before it runs); DeepStack level l is added
    after layer l; ``keep`` is asked after layer l (prefill only, batch of one). ``masks`` makes each
    layer's mask (default: causal over ``cache``).
    """
    decoder = text_model(model)
    masks = masks or LayerMasks(model, cache)
    seen = []
    for idx in layers:
        if probe is not None:
            probe(idx, state)
        seen.append(int(state.visual_mask.sum()))
        state.hidden = decoder.layers[idx](
            state.hidden,
            attention_mask=masks(idx, state.hidden),
            position_embeddings=(state.cos, state.sin),
            past_key_values=cache,
            use_cache=cache is not None,
        )
        if idx < len(deepstack):
            add_deepstack(state, deepstack[idx])
        if keep is not None:
            state = apply_keep(state, keep, idx)
    return state, seen
