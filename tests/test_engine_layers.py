"""The engine's layer-by-layer path is the library's forward, bit for bit, wherever both can run.

Prefill and decode go through ``Qwen3VLTextModel.forward``; keep rules, probes and shallow prefixes need the
layers run one at a time (``engine_layers.run_layers``: the library's own layers and masks, our loop and
DeepStack addition). The contract: with nothing to do between the layers, that loop gives exactly the
library forward's hidden states and caches, for a whole prompt (DeepStack included), a right-padded batch,
and question rows over padded cached prefixes, with sdpa and eager attention.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model_zoo import engine as eng
from model_zoo.engine_layers import cache_lengths, new_cache
from tests.test_engine import CLIPS, QUESTIONS, SYSTEM
from tests.test_prefix import segments_of


@pytest.fixture(params=["sdpa", "eager"])
def backbone(request, sdpa, eager):
    return sdpa if request.param == "sdpa" else eager


def nothing(layer, state) -> None:
    """A probe that reads nothing: it only makes the engine run the layers one by one."""


def same_caches(a, b) -> None:
    assert cache_lengths(a) == cache_lengths(b)
    for x, y in zip(a.layers, b.layers, strict=True):
        assert torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)


@torch.inference_mode()
def test_the_layer_loop_equals_the_library_forward_on_whole_prompts(backbone):
    model = backbone.model
    layouts = [backbone.layout(segments_of(c, seed=i), QUESTIONS[i % 2]) for i, c in enumerate(CLIPS)]
    for batch in ([layouts[3]], layouts):  # one prompt, then four right-padded ones
        spans = [(0, x.input_ids.numel()) for x in batch]
        state, deepstack = eng.rows_inputs(model, batch, spans, pad_id=backbone.ids.pad)
        twin = dataclasses.replace(state)
        library, looped = new_cache(model), new_cache(model)
        expected, seen = eng.run(model, state, cache=library, deepstack=deepstack)
        got, looped_seen = eng.run(model, twin, cache=looped, deepstack=deepstack, probe=nothing)
        assert torch.equal(got, expected) and looped_seen == seen
        same_caches(looped, library)


@torch.inference_mode()
def test_the_layer_loop_equals_the_library_forward_over_padded_prefixes(backbone):
    model, pad = backbone.model, backbone.ids.pad
    layouts = [
        backbone.layout(segments_of(CLIPS[3]), QUESTIONS[1]),
        backbone.layout(segments_of(CLIPS[0]), "Why?", system=SYSTEM),
        backbone.layout(segments_of(CLIPS[1], seed=2), "What colour is the largest object in the scene?"),
    ]
    prefixes = eng.run_prefixes(model, layouts, pad_id=pad)
    expected, library, _ = eng.extend(model, layouts, prefixes, pad_id=pad)
    got, looped, _ = eng.extend(model, layouts, prefixes, pad_id=pad, probe=nothing)
    assert torch.equal(got, expected)
    same_caches(looped, library)
