"""The lean decode layer (``engine.lean_decode_layer``) is the library's decoder layer, bit for bit.

Batched decoding runs each decoder layer from its own parameters (no module calls). The contract: for a
decode step, with sdpa and eager attention, over a batch with different prompt lengths and per-layer KV
lengths (a keep rule), the lean layer's output and the keys/values it writes into the cache are bitwise the
library ``Qwen3VLTextDecoderLayer``'s, layer by layer, step by step; and so are the whole step's logits.
"""

from __future__ import annotations

import copy

import pytest
import torch

from model_zoo import EngineError
from model_zoo import engine as eng
from tests.test_engine import CLIPS, QUESTIONS
from tests.test_engine_batch import halve_then_last_five, uncompressed_segments


@pytest.fixture(params=["sdpa", "eager"])
def backbone(request, sdpa, eager):
    return sdpa if request.param == "sdpa" else eager


def prefilled(backbone) -> tuple[list, list[int], list[int]]:
    """Three prefills (different lengths; one with a keep rule): caches, first tokens, start positions."""
    layouts = [
        backbone.layout(uncompressed_segments(CLIPS[0], 0), QUESTIONS[1]),
        backbone.layout(uncompressed_segments(CLIPS[3], 3), QUESTIONS[0]),
        backbone.layout(uncompressed_segments(CLIPS[1], 1), QUESTIONS[0]),
    ]
    keeps = [None, halve_then_last_five, None]
    firsts = [eng.prefill(backbone.model, x, keep=k) for x, k in zip(layouts, keeps, strict=True)]
    tokens = [int(f.logits.argmax()) for f in firsts]
    return [f.cache for f in firsts], tokens, [x.max_position + 1 for x in layouts]


def library_step(model, tokens, positions, cache: eng.BatchKV, lean_cache: eng.BatchKV) -> torch.Tensor:
    """One batched step through the library's layer modules; each layer's output is checked against the lean
    layer fed the same input (on its own copy of the cache). Returns the library's logits."""
    decoder = eng.text_model(model)
    layers, attention_fn = eng.lean_layers(model), eng.attention_function(model)
    ids = torch.tensor(tokens)[:, None]
    position_ids = torch.tensor(positions).view(1, -1, 1).expand(3, -1, 1)
    hidden = decoder.embed_tokens(ids)
    cos, sin = decoder.rotary_emb(hidden, position_ids)
    cache.begin_step()
    lean_cache.begin_step()
    for idx, layer in enumerate(decoder.layers):
        mask = cache.attention_mask(idx)
        lean = eng.lean_decode_layer(
            layers[idx], hidden, eng.Rotation.of(cos, sin), mask, lean_cache, idx, attention_fn
        )
        hidden = layer(
            hidden, position_embeddings=(cos, sin), attention_mask=mask, past_key_values=cache, use_cache=True
        )
        assert torch.equal(lean, hidden), f"layer {idx}: max |diff| {(lean - hidden).abs().max()}"
        assert torch.equal(lean_cache.keys[idx], cache.keys[idx])
        assert torch.equal(lean_cache.values[idx], cache.values[idx])
    cache.end_step()
    lean_cache.end_step()
    return eng.final_logits(model, hidden[:, -1])


@torch.inference_mode()
def test_lean_layer_is_the_library_layer_bit_for_bit(backbone):
    model = backbone.model
    caches, tokens, starts = prefilled(backbone)
    twins = [copy.deepcopy(c) for c in caches]
    cache = eng.BatchKV(caches, [6] * 3)
    lean_cache = eng.BatchKV(twins, [6] * 3)
    for step in range(6):
        positions = [s + step for s in starts]
        logits = library_step(model, tokens, positions, cache, lean_cache)
        tokens = logits.argmax(-1).tolist()


@torch.inference_mode()
def test_lean_step_logits_equal_the_library_step(backbone):
    """``batch_decode_step`` (lean) against the same step through the library's modules: equal logits."""
    model = backbone.model
    caches, tokens, starts = prefilled(backbone)
    twins = [copy.deepcopy(c) for c in caches]
    reference, lean_reference = eng.BatchKV(caches, [5] * 3), eng.BatchKV(twins, [5] * 3)
    caches, _, _ = prefilled(backbone)
    lean = eng.BatchKV(caches, [5] * 3)
    for step in range(5):
        positions = [s + step for s in starts]
        expected = library_step(model, tokens, positions, reference, lean_reference)
        got = eng.batch_decode_step(model, tokens, positions, lean)
        assert torch.equal(got, expected)
        tokens = got.argmax(-1).tolist()


@torch.inference_mode()
def test_lean_layer_with_a_single_request_cache(sdpa):
    """Batch of one over a ``LayerKV`` (no mask, sdpa): still the library layer's output and cache."""
    model = sdpa.model
    caches, tokens, starts = prefilled(sdpa)
    cache, twin = caches[1], copy.deepcopy(caches[1])
    decoder = eng.text_model(model)
    hidden = decoder.embed_tokens(torch.tensor([[tokens[1]]]))
    cos, sin = decoder.rotary_emb(hidden, torch.full((3, 1, 1), starts[1]))
    attention_fn = eng.attention_function(model)
    for idx, layer in enumerate(decoder.layers):
        lean = eng.lean_decode_layer(
            eng.lean_layer(layer), hidden, eng.Rotation.of(cos, sin), None, twin, idx, attention_fn
        )
        hidden = layer(hidden, position_embeddings=(cos, sin), past_key_values=cache, use_cache=True)
        assert torch.equal(lean, hidden) and torch.equal(twin.keys[idx], cache.keys[idx])


def test_lean_layer_refuses_another_activation(sdpa):
    layer = copy.deepcopy(eng.text_model(sdpa.model).layers[0])
    layer.mlp.act_fn = torch.nn.GELU()
    with pytest.raises(EngineError, match="SiLU"):
        eng.lean_layer(layer)
