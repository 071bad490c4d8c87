"""Greedy decoding of several prefilled requests together, each getting the tokens it gets alone.

Custom because the library's caches cannot hold it: requests differ in prompt length, and a keep rule
(XComp's LP-Comp) leaves each request's layers holding different lengths, so every layer needs its own
padding mask, which ``Qwen3VLTextModel.forward`` (one mask for all layers) cannot take. The layers
themselves are the library's ``Qwen3VLTextDecoderLayer``, called as its forward calls them; ours are the
loop, the batch cache (``BatchKV``) and its masks. ``tests/test_engine_batch.py``: batched tokens equal each
request's own ``generate``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
from transformers import DynamicCache

from model_zoo.engine_layers import check_mask_attention, final_logits, right_padded, text_model


class BatchKV:
    """The per-layer caches of B prefilled requests, merged for decoding them together.

    Layer l keeps one right-padded buffer [B, H_kv, C_l, d]. Row b holds its own prefill's P[b][l] keys at
    [0, P[b][l]) -- where its cache had them, in the same order -- and decode step s writes at
    P[b][l] + s, so a row's real keys always stay contiguous from index 0, exactly as in its own cache;
    whatever follows them is padding (zeros, never NaN). Lengths differ per row (prompt length, keep rule)
    and per layer (LP-Comp), so the padding differs too: every layer gets its own additive mask
    [B, 1, 1, W_l], 0 on real keys and the dtype's most negative finite value on padding. A finite value,
    not -inf: the query always sees its own key, so after the max subtraction a padded score underflows to
    exactly 0 in softmax (padding contributes 0 x finite V = 0), and no all-masked row can make NaN.

    Implements ``update`` (the one cache method Qwen3-VL's attention calls). Per step: ``begin_step``
    unmasks the slots the step writes, the layers run, ``end_step`` advances.
    """

    def __init__(self, caches: Sequence[DynamicCache], steps: Sequence[int]) -> None:
        """``caches``: one prefilled library cache per row (moved in: each is reset, holding nothing after);
        ``steps``: the most decode steps each row will run (its max_new_tokens - 1), which sizes the buffers
        once."""
        self.num_layers = len(caches[0])
        self.prefill = [
            [c.get_seq_length(layer) for layer in range(self.num_layers)] for c in caches
        ]  # [B][L]
        self.keys, self.values = [], []
        for layer in range(self.num_layers):
            capacity = max(p[layer] + n for p, n in zip(self.prefill, steps, strict=True))
            self.keys.append(right_padded([c.layers[layer].keys for c in caches], capacity))
            self.values.append(right_padded([c.layers[layer].values for c in caches], capacity))
        for cache in caches:
            cache.reset()
        self.lengths = torch.tensor(self.prefill, device=self.keys[0].device).t().contiguous()  # [L, B]
        width = max(k.shape[2] for k in self.keys)
        self.masks = padding_masks(self.lengths, width, self.keys[0].dtype)  # [L, B, 1, 1, W]
        self.step = 0
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


def padding_masks(lengths: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Real lengths [L, B] → additive masks [L, B, 1, 1, width]: 0 on each row's first ``lengths`` slots,
    the dtype's most negative finite value after (see ``BatchKV``). The [1, 1] broadcasts over heads and the
    single query, the shape eager attention and sdpa both take."""
    real = torch.arange(width, device=lengths.device) < lengths[:, :, None]  # [L, B, W]
    masks = torch.zeros(real.shape, dtype=dtype, device=lengths.device)
    return masks.masked_fill(~real, torch.finfo(dtype).min)[:, :, None, None]


@torch.inference_mode()
def batch_decode_step(
    model, tokens: Sequence[int], positions: Sequence[Sequence[int]], cache: BatchKV
) -> torch.Tensor:
    """One greedy step for B rows: row b embeds ``tokens[b]`` and sits at ``positions[b][l]`` in layer l (all
    three axes: its own rotary angle, per layer once a keep rule renumbered its prompt), every layer attends
    over its own cached keys (``cache.attention_mask``); logits [B, V].

    The same library layers and operations per row as a single request's decode step; only the batch
    dimension and the masked padding differ, which can change fp32 rounding (a GEMM over B rows is not
    bitwise B GEMMs over one, a fused attention kernel sums a longer row), never the math: the padding
    itself adds exact zeros.
    """
    device = model.device
    decoder = text_model(model)
    ids = torch.tensor(list(tokens), device=device)[:, None]  # [B, 1]
    hidden = decoder.embed_tokens(ids)  # [B, 1, D]
    # Every layer's position in one call: the layers stand in the sequence dimension, [3, B, layers].
    at = torch.tensor([list(p) for p in positions], device=device)[None].expand(3, -1, -1)
    cos, sin = decoder.rotary_emb(hidden, at)  # [B, layers, d]
    cache.begin_step()
    for idx, layer in enumerate(decoder.layers):
        hidden = layer(
            hidden,
            attention_mask=cache.attention_mask(idx),
            position_embeddings=(cos[:, idx : idx + 1], sin[:, idx : idx + 1]),
            past_key_values=cache,
            use_cache=True,
        )
    cache.end_step()
    return final_logits(model, hidden[:, -1])


def batched_greedy_tokens(
    model, firsts: Sequence, *, max_new_tokens: Sequence[int], eos_ids: Sequence[int]
) -> Iterator[list[tuple[int, int]]]:
    """Greedy decoding of several prefilled requests (``engine.PrefillResult``) together; ``greedy_tokens``
    for each, in lockstep.

    Yields, per step, ``(request, token)`` for every request still running (step 0: the prefill logits).
    Request i stops after one of ``eos_ids`` (yielded too) or ``max_new_tokens[i]`` tokens and then leaves
    the batch; its step k is fed at ``firsts[i].next_positions[l] + k`` in layer l. The prefill caches are
    moved into one ``BatchKV`` (each ``firsts[i].cache`` is emptied) when the first decode step is needed.
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
        positions = [[n + step for n in firsts[b].next_positions] for b in active]
        logits = batch_decode_step(model, [tokens[j] for j in going], positions, cache)
