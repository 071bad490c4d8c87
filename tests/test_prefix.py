"""Prompt-prefix reuse answers exactly like running the whole prompt, and its caches keep what they should.

A prompt is [chat prefix, visual tokens, question, chat suffix]; everything before the question is an
``engine.PrefixKV`` run once (``run_prefixes``) and extended by each question's own rows (``prefill_after``,
``extend_last_logits``, the library's masks per layer). The contract checked here, on the tiny model in fp32,
sdpa and eager: with a prefix store the greedy tokens equal the whole-prompt ones, a reused prefix gives the
computed one's logits bit for bit, a follow-up question over a cached prefix equals a fresh prompt, keep rules
survive the split, batches of found and missing prefixes equal each prompt alone, wrong prefixes and layouts are
refused, and ``pipeline.cache.PrefixCache`` keeps bounded CPU data. On an attention kernel without additive
masks (flash), ``next_token_logits`` and ``window_scores`` run the whole prompt, as they did before prefixes.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from compressors.xcomp import lp_keep_rule
from model_zoo import TINY, EngineError, load_backbone
from model_zoo import engine as eng
from model_zoo.engine_layers import LayerMasks, cache_lengths, supports_masks, text_model
from model_zoo.qwen3_vl import GenerationRequest
from pipeline import cache
from tests.test_engine import CLIPS, QUESTIONS, SYSTEM, WORDS, halve_then_last_five, uncompressed

USER_TEXT = "\nQuery:\nWhere is the ball?"


class Store:
    """A dict-backed ``PrefixStore`` that records every get and put."""

    def __init__(self) -> None:
        self.entries: dict = {}
        self.gets: list = []
        self.puts: list = []

    def get(self, key):
        self.gets.append(key)
        return self.entries.get(key)

    def put(self, key, value) -> None:
        self.puts.append(key)
        self.entries[key] = value


@pytest.fixture(params=["sdpa", "eager"])
def backbone(request, sdpa, eager):
    return sdpa if request.param == "sdpa" else eager


_SEGMENTS: dict = {}


def segments_of(clip, seed: int = 0):
    """Every group of a clip as its own segment (cached: encoding is the slow part)."""
    if (clip, seed) not in _SEGMENTS:
        _SEGMENTS[clip, seed] = uncompressed(load_backbone(TINY, device="cpu"), clip, seed=seed)[1]
    return _SEGMENTS[clip, seed]


@pytest.fixture
def logits_path(monkeypatch):
    """Every logits vector the single-request path produces, in order: the prefill's, then each decode step's."""
    seen: list[torch.Tensor] = []
    real_after, real_prefill, real_step = eng.prefill_after, eng.prefill, eng.decode_step

    def recorded(fn, pick):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            seen.append(pick(out).clone())
            return out

        return wrapper

    monkeypatch.setattr(eng, "prefill_after", recorded(real_after, lambda r: r.logits))
    monkeypatch.setattr(eng, "prefill", recorded(real_prefill, lambda r: r.logits))
    monkeypatch.setattr(eng, "decode_step", recorded(real_step, lambda logits: logits))
    return seen


def snapshot(prefix: eng.PrefixKV) -> list[torch.Tensor]:
    return [t.clone() for t in (*prefix.keys, *prefix.values)]


def same_stats(a: dict, b: dict) -> None:
    for key in ("visual_tokens", "prompt_tokens", "per_layer_visual", "kv_lengths", "new_tokens"):
        assert a[key] == b[key], key


# ---------------------------------------------------------------------------------------------- generate


@pytest.mark.parametrize("clip", CLIPS)
def test_a_prefix_store_answers_like_the_whole_prompt_and_a_reused_prefix_bit_for_bit(
    backbone, clip, logits_path
):
    segments = segments_of(clip)
    whole = backbone.generate(QUESTIONS[0], segments, max_new_tokens=24)
    assert whole.token_ids and whole.stats["prefix_reused"] is None
    logits_path.clear()
    store = Store()
    first = backbone.generate(QUESTIONS[0], segments, max_new_tokens=24, prefix_key="video", prefixes=store)
    assert first.token_ids == whole.token_ids
    assert first.stats["prefix_reused"] is False and store.puts == ["video"]
    same_stats(first.stats, whole.stats)
    first_path = list(logits_path)
    assert len(first_path) == len(first.token_ids)  # prefill_after, then one decode step per fed token
    kept = snapshot(store.entries["video"])

    logits_path.clear()
    second = backbone.generate(QUESTIONS[0], segments, max_new_tokens=24, prefix_key="video", prefixes=store)
    assert second.token_ids == first.token_ids
    assert second.stats["prefix_reused"] is True and store.puts == ["video"], "found: not stored again"
    same_stats(second.stats, first.stats)
    assert len(logits_path) == len(first_path)
    for a, b in zip(first_path, logits_path, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(kept, snapshot(store.entries["video"]), strict=True):
        assert torch.equal(a, b), "extending a prefix never writes into it"


def test_a_reused_prefix_runs_no_prefix_rows(sdpa, monkeypatch):
    calls = []
    real = eng.run_prefixes
    monkeypatch.setattr(eng, "run_prefixes", lambda *a, **k: calls.append(1) or real(*a, **k))
    segments, store = segments_of(CLIPS[1]), Store()
    for _ in range(3):
        generation = sdpa.generate(QUESTIONS[0], segments, max_new_tokens=2, prefix_key="k", prefixes=store)
        assert len(generation.token_ids) == 2
    assert calls == [1]
    # a store without a key, or a key without a store, runs the whole prompt and stores nothing
    for kwargs in ({"prefixes": store}, {"prefix_key": "other"}):
        generation = sdpa.generate(QUESTIONS[0], segments, max_new_tokens=2, **kwargs)
        assert generation.stats["prefix_reused"] is None
    assert calls == [1] and store.puts == ["k"] and None not in store.gets


@pytest.mark.parametrize("clip", CLIPS[1:])
def test_a_follow_up_question_over_a_cached_prefix_equals_a_fresh_prompt(backbone, clip):
    segments, store = segments_of(clip, seed=1), Store()
    asked = backbone.generate(QUESTIONS[0], segments, max_new_tokens=16, prefix_key="v", prefixes=store)
    assert asked.stats["prefix_reused"] is False
    kept = snapshot(store.entries["v"])
    for question in (QUESTIONS[1], "Describe the colours."):
        follow_up = backbone.generate(question, segments, max_new_tokens=16, prefix_key="v", prefixes=store)
        fresh = backbone.generate(question, segments, max_new_tokens=16)
        assert follow_up.token_ids == fresh.token_ids
        assert follow_up.stats["prefix_reused"] is True
        same_stats(follow_up.stats, fresh.stats)
        assert follow_up.token_ids != asked.token_ids, "the question's own rows decide the answer"
    assert store.puts == ["v"]
    for a, b in zip(kept, snapshot(store.entries["v"]), strict=True):
        assert torch.equal(a, b)


def test_a_keep_rule_survives_the_split_and_a_reused_prefix_keeps_its_drops(backbone):
    segments, store = segments_of(CLIPS[3]), Store()
    kwargs = {"keep": halve_then_last_five, "max_new_tokens": 16}
    whole = backbone.generate(QUESTIONS[0], segments, **kwargs)
    first = backbone.generate(QUESTIONS[0], segments, prefix_key="kept", prefixes=store, **kwargs)
    again = backbone.generate(QUESTIONS[1], segments, prefix_key="kept", prefixes=store, **kwargs)
    assert first.token_ids == whole.token_ids
    same_stats(first.stats, whole.stats)
    assert len(set(first.stats["per_layer_visual"])) > 1, "the rule really dropped tokens"
    assert again.stats["prefix_reused"] is True
    assert again.token_ids == backbone.generate(QUESTIONS[1], segments, **kwargs).token_ids
    assert store.entries["kept"].per_layer_visual == whole.stats["per_layer_visual"]


def test_batched_requests_share_a_prefix_and_each_answers_as_alone(backbone):
    segments, other, store = segments_of(CLIPS[2]), segments_of(CLIPS[0]), Store()
    requests = [
        GenerationRequest(QUESTIONS[0], segments, max_new_tokens=20, prefix_key="a"),
        GenerationRequest(QUESTIONS[1], segments, max_new_tokens=12, prefix_key="a"),
        GenerationRequest(QUESTIONS[1], other, max_new_tokens=16),
        GenerationRequest(QUESTIONS[0], other, max_new_tokens=16, keep=halve_then_last_five, prefix_key="b"),
    ]
    batch = backbone.generate_many(requests, prefixes=store)
    for request, batched in zip(requests, batch.generations, strict=True):
        alone = backbone.generate(
            request.question, request.segments, keep=request.keep, max_new_tokens=request.max_new_tokens
        )
        assert batched.token_ids == alone.token_ids
        same_stats(batched.stats, alone.stats)
    assert [g.stats["prefix_reused"] for g in batch.generations] == [False, True, None, False]
    assert store.puts == ["a", "b"]


# ---------------------------------------------------------------------------------------------- engine


@pytest.mark.parametrize(
    "keep",
    [None, halve_then_last_five, lambda layer, alive: torch.zeros(alive.numel(), dtype=torch.bool)],
    ids=["keep-all", "halve-then-five", "drop-all-after-layer-0"],
)
@pytest.mark.parametrize("clip", [CLIPS[0], CLIPS[3]])
def test_prefill_after_a_prefix_equals_the_whole_prefill(backbone, clip, keep):
    model = backbone.model
    layout = backbone.layout(segments_of(clip), QUESTIONS[1], system="Answer briefly.")
    whole = eng.prefill(model, layout, keep=keep)
    (prefix,) = eng.run_prefixes(model, [layout], pad_id=backbone.ids.pad, keep=keep)
    assert prefix.length == eng.prefix_length(layout) == layout.user_span[0]
    assert prefix.per_layer_visual == whole.per_layer_visual
    suffix = layout.input_ids.numel() - prefix.length
    assert prefix.lengths() == [n - suffix for n in cache_lengths(whole.cache)]
    after = eng.prefill_after(model, layout, prefix, pad_id=backbone.ids.pad)
    assert after.per_layer_visual == whole.per_layer_visual
    assert cache_lengths(after.cache) == cache_lengths(whole.cache)
    torch.testing.assert_close(after.logits, whole.logits)
    for layer in range(backbone.num_layers):
        torch.testing.assert_close(after.cache.layers[layer].keys, whole.cache.layers[layer].keys)
        torch.testing.assert_close(after.cache.layers[layer].values, whole.cache.layers[layer].values)
    if keep is not None:
        assert len(set(whole.per_layer_visual)) > 1


def test_prefixes_run_as_a_padded_batch_equal_each_run_alone(backbone):
    model, pad = backbone.model, backbone.ids.pad
    layouts = [backbone.layout(segments_of(c, seed=i), QUESTIONS[0]) for i, c in enumerate(CLIPS[:3])]
    together = eng.run_prefixes(model, layouts, pad_id=pad)
    assert len({p.length for p in together}) == 3, "different lengths: the batch is really padded"
    for layout, prefix in zip(layouts, together, strict=True):
        (alone,) = eng.run_prefixes(model, [layout], pad_id=pad)
        assert prefix.length == alone.length and prefix.lengths() == [alone.length] * backbone.num_layers
        assert prefix.per_layer_visual == alone.per_layer_visual == [layout.num_visual] * backbone.num_layers
        for a, b in zip((*prefix.keys, *prefix.values), (*alone.keys, *alone.values), strict=True):
            assert a.shape[0] == 1
            assert a.untyped_storage().nbytes() == a.element_size() * a.nelement(), "not a view of the batch"
            torch.testing.assert_close(a, b)
        after = eng.prefill_after(model, layout, prefix, pad_id=pad)
        torch.testing.assert_close(after.logits, eng.prefill(model, layout).logits)


def test_extend_last_logits_of_padded_prefixes_equal_each_prompt_alone(backbone):
    model, pad = backbone.model, backbone.ids.pad
    layouts = [
        backbone.layout(segments_of(CLIPS[3]), QUESTIONS[1]),
        backbone.layout(segments_of(CLIPS[0]), "Why?", system=SYSTEM),
        backbone.layout(segments_of(CLIPS[1], seed=2), "What colour is the largest object in the scene?"),
    ]
    prefixes = [eng.run_prefixes(model, [x], pad_id=pad)[0] for x in layouts]
    prefixes[1] = eng.run_prefixes(model, [layouts[1]], pad_id=pad, keep=halve_then_last_five)[0]
    assert len({p.length for p in prefixes}) == 3
    suffixes = {x.input_ids.numel() - p.length for x, p in zip(layouts, prefixes, strict=True)}
    assert len(suffixes) == 3, "different numbers of new rows: the new rows are padded too"
    logits = eng.extend_last_logits(model, layouts, prefixes, pad_id=pad)
    assert logits.shape == (3, backbone.model.lm_head.out_features)
    keeps = [None, halve_then_last_five, None]
    for row, (layout, keep) in enumerate(zip(layouts, keeps, strict=True)):
        torch.testing.assert_close(logits[row], eng.prefill(model, layout, keep=keep).logits)


# ---------------------------------------------------------------------------------------------- next_token_logits


def test_next_token_logits_cold_and_warm_are_bitwise_equal_and_each_key_is_stored_once(backbone):
    prompts = [segments_of(c, seed=i) for i, c in enumerate(CLIPS)]
    keys = ["p0", None, "p2", "p3"]
    plain = backbone.next_token_logits(prompts, system=SYSTEM, user_text=USER_TEXT, words=WORDS)
    store = Store()
    cold = backbone.next_token_logits(
        prompts, system=SYSTEM, user_text=USER_TEXT, words=WORDS, prefixes=store, prefix_keys=keys
    )
    assert store.puts == ["p0", "p2", "p3"] and set(store.entries) == {"p0", "p2", "p3"}
    warm = backbone.next_token_logits(
        prompts, system=SYSTEM, user_text=USER_TEXT, words=WORDS, prefixes=store, prefix_keys=keys
    )
    assert store.puts == ["p0", "p2", "p3"], "found prefixes are not stored again, None never"
    assert None not in store.gets
    assert cold.shape == (4, len(WORDS)) and cold.dtype == torch.float32
    assert torch.equal(cold, plain), "an empty store computes exactly what no store computes"
    for row in (0, 2, 3):
        assert torch.equal(warm[row], cold[row]), f"found prefix {row}: bit for bit the computed one"
    # no key: its prefix runs again, now in a batch of one instead of four (fp32 rounding only)
    torch.testing.assert_close(warm[1], cold[1])
    for a, b in zip(cold, cold[1:], strict=False):
        assert not torch.equal(a, b)


def test_next_token_logits_mixing_found_and_missing_prefixes_equal_each_prompt_alone(backbone):
    model = backbone.model
    prompts = [segments_of(c, seed=i + 3) for i, c in enumerate([CLIPS[2], CLIPS[0], CLIPS[3], CLIPS[1]])]
    store = Store()
    # prompts 0 and 2 were seen before (each alone, with another question); 1 and 3 are new, 3 has no key
    for i in (0, 2):
        backbone.next_token_logits(
            [prompts[i]], system=SYSTEM, user_text="Is it red?", words=WORDS, prefixes=store, prefix_keys=[i]
        )
    assert store.puts == [0, 2]
    mixed = backbone.next_token_logits(
        prompts, system=SYSTEM, user_text=USER_TEXT, words=WORDS, prefixes=store, prefix_keys=[0, 1, 2, None]
    )
    assert store.puts == [0, 2, 1]
    word_ids = backbone.word_ids(WORDS)
    for i, prompt in enumerate(prompts):
        layout = backbone.layout(prompt, USER_TEXT, system=SYSTEM)
        expected = eng.prefill(model, layout).logits[word_ids].float()
        torch.testing.assert_close(mixed[i], expected)


def test_next_token_logits_refuse_a_key_count_that_is_not_the_prompt_count(sdpa):
    prompts = [segments_of(CLIPS[0]), segments_of(CLIPS[1])]
    with pytest.raises(EngineError, match="prefix keys"):
        sdpa.next_token_logits(
            prompts, system=SYSTEM, user_text=USER_TEXT, words=WORDS, prefixes=Store(), prefix_keys=["a"]
        )


def test_window_scores_over_a_cached_scoring_prefix_equal_a_fresh_run_and_the_whole_prompt(backbone, flash):
    segments, store = segments_of(CLIPS[3]), Store()
    windows = [[[0, 1], [2]], [[3], [4, 5]]]
    keep = lp_keep_rule([s.embeds.shape[0] for s in segments], backbone.num_layers)
    kwargs = {"windows": windows, "layers": [1, 3], "keep": keep}
    cold = backbone.window_scores(segments, QUESTIONS[0], prefixes=store, prefix_key="qc", **kwargs)
    assert (
        store.puts == ["qc"]
        and len(store.entries["qc"].keys) == 4
        and sorted(store.entries["qc"].raw_keys) == [1, 3]
    )
    kept = snapshot(store.entries["qc"])
    warm = backbone.window_scores(segments, QUESTIONS[0], prefixes=store, prefix_key="qc", **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(warm, cold, strict=True)) and store.puts == ["qc"]
    fresh = backbone.window_scores(segments, QUESTIONS[0], **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(fresh, cold, strict=True))
    follow_up = backbone.window_scores(segments, QUESTIONS[1], prefixes=store, prefix_key="qc", **kwargs)
    alone = backbone.window_scores(segments, QUESTIONS[1], **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(follow_up, alone, strict=True))
    assert not torch.equal(follow_up[0], cold[0]), "the question's own rows decide the scores"
    for a, b in zip(kept, snapshot(store.entries["qc"]), strict=True):
        assert torch.equal(a, b), "scoring never writes into its prefix"
    whole = flash.window_scores(
        segments, QUESTIONS[0], **kwargs
    )  # no additive masks: the whole prompt at once
    for a, b in zip(whole, cold, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(EngineError, match="prefix"):
        backbone.window_scores(
            segments, QUESTIONS[0], prefixes=store, prefix_key="qc", windows=windows, layers=[2]
        )


# ---------------------------------------------------------------------------------------------- masks


def zero_prefix(length: int, per_layer: list[int], heads: int = 2, dim: int = 4) -> eng.PrefixKV:
    keys = [torch.zeros(1, heads, n, dim) for n in per_layer]
    return eng.PrefixKV(length, keys, [k.clone() for k in keys], list(per_layer), [length] * len(per_layer))


def visible(model, kv, padding, layer: int, rows: int, batch: int) -> torch.Tensor:
    """Which keys each new row attends at ``layer`` [B, rows, keys], from the mask the engine hands the layer."""
    mask = LayerMasks(model, kv, padding)(layer, torch.zeros(batch, rows, 8))
    return mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0


def test_padded_prefixes_let_each_row_see_its_own_prefix_and_the_new_rows_up_to_itself(sdpa, eager):
    prefixes = [zero_prefix(5, [5, 3, 2, 2]), zero_prefix(7, [7, 7, 1, 1])]
    rows = 4
    for model in (sdpa.model, eager.model):
        kv, padding = eng.prefix_cache(model, prefixes, rows)
        assert padding[2] is padding[3], "layers with the same prefix lengths share one mask"
        for layer in range(4):
            longest = max(p.lengths()[layer] for p in prefixes)
            assert kv.get_seq_length(layer) == longest
            seen = visible(model, kv, padding, layer, rows, batch=2)
            assert seen.shape == (2, rows, longest + rows)
            for b, prefix in enumerate(prefixes):
                own = prefix.lengths()[layer]
                expected = [
                    [j < own or longest <= j <= longest + i for j in range(longest + rows)]
                    for i in range(rows)
                ]
                assert seen[b].tolist() == expected, (layer, b)
    mask = LayerMasks(eager.model, kv, padding)(1, torch.zeros(2, rows, 8))
    assert mask.dtype == torch.float32 and mask.min() == torch.finfo(torch.float32).min
    assert torch.isfinite(mask).all(), "a masked key gets the most negative finite value, never -inf"


def test_several_queries_after_cached_keys_get_an_offset_causal_mask(sdpa, eager):
    assert LayerMasks(sdpa.model, None)(0, torch.zeros(1, 4, 8)) is None, (
        "no cache: the kernel's own is_causal"
    )
    for model in (sdpa.model, eager.model):
        prefix = zero_prefix(4, [4, 4, 4, 4])
        kv, padding = eng.prefix_cache(model, [prefix], 3)
        assert padding is None
        seen = visible(model, kv, None, 0, 3, batch=1)[0]
        assert seen.tolist() == [[j <= 4 + i for j in range(7)] for i in range(3)]
    empty = visible(eager.model, None, None, 0, 4, batch=1)[0]
    assert empty.tolist() == torch.ones(4, 4).tril().bool().tolist()


# ---------------------------------------------------------------------------------------------- errors


def test_a_prefix_of_another_prompt_is_refused(sdpa):
    model, pad = sdpa.model, sdpa.ids.pad
    short = sdpa.layout(segments_of(CLIPS[0]), QUESTIONS[0])
    long = sdpa.layout(segments_of(CLIPS[1]), QUESTIONS[0])
    (prefix,) = eng.run_prefixes(model, [short], pad_id=pad)
    with pytest.raises(EngineError, match="does not fit"):
        eng.prefill_after(model, long, prefix, pad_id=pad)
    with pytest.raises(EngineError, match="does not fit"):
        eng.extend_last_logits(model, [short, long], [prefix, prefix], pad_id=pad)
    # a key that names another video's prefix is refused when the prompt runs, not answered wrongly
    store = Store()
    store.put("same key", prefix)
    generation = sdpa.generate(QUESTIONS[0], segments_of(CLIPS[1]), prefix_key="same key", prefixes=store)
    with pytest.raises(EngineError, match="does not fit"):
        list(generation)


def test_a_layout_whose_question_is_not_after_every_visual_token_has_no_prefix(sdpa):
    layout = sdpa.layout(segments_of(CLIPS[0]), QUESTIONS[0])
    first_visual = int(layout.visual_mask.nonzero()[0])
    assert eng.prefix_length(layout) == layout.user_span[0] > first_visual
    for span in [(0, 0), (first_visual, first_visual + 2), (first_visual - 1, first_visual)]:
        with pytest.raises(EngineError, match="prefix"):
            eng.prefix_length(dataclasses.replace(layout, user_span=span))
    with pytest.raises(EngineError, match="prefix"):  # nothing after the prefix: no row to run
        n = layout.input_ids.numel()
        eng.prefix_length(dataclasses.replace(layout, user_span=(n, n)))
    with pytest.raises(EngineError, match="prefix"):
        eng.run_prefixes(sdpa.model, [dataclasses.replace(layout, user_span=(0, 0))], pad_id=sdpa.ids.pad)


def test_a_keep_rule_runs_one_prefix_at_a_time(sdpa):
    layouts = [sdpa.layout(segments_of(c), QUESTIONS[0]) for c in CLIPS[:2]]
    with pytest.raises(EngineError, match="one prompt at a time"):
        eng.run_prefixes(sdpa.model, layouts, pad_id=sdpa.ids.pad, keep=halve_then_last_five)


def flash_like(module, query, key, value, attention_mask, **kwargs):
    """Stands in for a flash kernel on the CPU: no additive mask, its own causal alignment."""
    assert attention_mask is None, "a flash kernel takes no additive 4-D mask"
    return sdpa_attention_forward(module, query, key, value, None, **kwargs)


@pytest.fixture
def flash(sdpa, monkeypatch):
    """A copy of the tiny backbone whose text model asks for flash_attention_2 (run by ``flash_like``)."""
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "flash_attention_2", flash_like)
    backbone = copy.copy(sdpa)
    backbone.model = copy.deepcopy(sdpa.model)
    text_model(backbone.model).config._attn_implementation = "flash_attention_2"
    assert not supports_masks(backbone.model) and supports_masks(sdpa.model)
    return backbone


def test_attention_without_an_additive_mask_refuses_prefix_reuse(sdpa, flash):
    layout = sdpa.layout(segments_of(CLIPS[1]), QUESTIONS[0])
    (prefix,) = eng.run_prefixes(sdpa.model, [layout], pad_id=sdpa.ids.pad)
    with pytest.raises(EngineError, match="eager and sdpa"):
        eng.prefill_after(flash.model, layout, prefix, pad_id=sdpa.ids.pad)
    with pytest.raises(EngineError, match="eager and sdpa"):
        eng.extend_last_logits(flash.model, [layout], [prefix], pad_id=sdpa.ids.pad)


def test_generate_on_a_kernel_without_masks_ignores_the_store_and_runs_the_whole_prompt(sdpa, flash):
    segments, store = segments_of(CLIPS[1]), Store()
    generation = flash.generate(QUESTIONS[0], segments, max_new_tokens=12, prefix_key="k", prefixes=store)
    assert generation.token_ids == sdpa.generate(QUESTIONS[0], segments, max_new_tokens=12).token_ids
    assert generation.stats["prefix_reused"] is None
    assert store.gets == [] and store.puts == []


def test_next_token_logits_without_keys_still_answer_on_a_kernel_without_masks(sdpa, flash):
    prompts = [segments_of(CLIPS[0]), segments_of(CLIPS[2])]
    expected = sdpa.next_token_logits(prompts, system=SYSTEM, user_text=USER_TEXT, words=WORDS)
    got = flash.next_token_logits(prompts, system=SYSTEM, user_text=USER_TEXT, words=WORDS)
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------------------------------------- PrefixCache


def prefix_bytes(prefix: eng.PrefixKV) -> int:
    return sum(t.element_size() * t.nelement() for t in (*prefix.keys, *prefix.values))


def test_the_prefix_cache_keeps_cpu_copies_and_counts_their_bytes(sdpa):
    layout = sdpa.layout(segments_of(CLIPS[2]), QUESTIONS[0])
    (prefix,) = eng.run_prefixes(sdpa.model, [layout], pad_id=sdpa.ids.pad, keep=halve_then_last_five)
    lru = cache.ByteLRU(64 * cache.MB, count_keys=True)
    store = cache.PrefixCache(lru)
    key = ("answer prompt prefix", "video", 3, 1.5)
    store.put(key, prefix)
    stored = store.get(key)
    assert isinstance(stored, eng.PrefixKV) and stored.length == prefix.length
    assert stored.per_layer_visual == prefix.per_layer_visual and stored.lengths() == prefix.lengths()
    for a, b in zip((*stored.keys, *stored.values), (*prefix.keys, *prefix.values), strict=True):
        assert a.device.type == "cpu" and torch.equal(a, b)
    assert lru.stats()["bytes"] == prefix_bytes(prefix) + cache.key_bytes(key)
    assert lru.stats()["entries"] == 1 and store.get("missing") is None
    assert cache.key_bytes(key) == len("answer prompt prefix") + len("video") + 8 + 8


def test_the_prefix_cache_stores_what_moving_to_the_cpu_gives():
    moved = zero_prefix(3, [3, 3])

    class Elsewhere:
        """A prefix on another device: only ``to`` is used."""

        def __init__(self):
            self.calls = []

        def to(self, device):
            self.calls.append(str(device))
            return moved

    value = Elsewhere()
    lru = cache.ByteLRU(cache.MB, count_keys=True)
    cache.PrefixCache(lru).put("k", value)
    assert value.calls == ["cpu"] and lru.get("k") is moved
    assert lru.stats()["bytes"] == prefix_bytes(moved) + cache.key_bytes("k")


def test_the_prefix_cache_evicts_the_least_recently_used_prefix():
    prefixes = {name: zero_prefix(4, [4, 4]) for name in "abc"}
    entry = prefix_bytes(prefixes["a"]) + cache.key_bytes("a")
    lru = cache.ByteLRU(2 * entry, count_keys=True)
    store = cache.PrefixCache(lru)
    store.put("a", prefixes["a"])
    store.put("b", prefixes["b"])
    assert store.get("a") is not None  # a is now the most recently used
    store.put("c", prefixes["c"])
    assert "b" not in lru and "a" in lru and "c" in lru
    assert lru.stats()["bytes"] == 2 * entry
    too_big = zero_prefix(40, [40, 40])
    store.put("big", too_big)
    assert "big" not in lru and len(lru) == 2, "a prefix larger than the whole cache is not kept"


def test_a_prefix_cache_turned_off_stores_nothing_and_copies_nothing(sdpa):
    class Counted(eng.PrefixKV):
        moves = 0

        def to(self, device):
            Counted.moves += 1
            return super().to(device)

    prefix = zero_prefix(3, [3, 2])
    counted = Counted(**vars(prefix))
    lru = cache.ByteLRU(0, count_keys=True)
    store = cache.PrefixCache(lru)
    store.put("k", counted)
    assert store.get("k") is None and len(lru) == 0 and lru.stats()["bytes"] == 0
    assert Counted.moves == 0
    # the backbone still answers with a store that keeps nothing: the prefix is computed every time
    segments = segments_of(CLIPS[0])
    for _ in range(2):
        generation = sdpa.generate(QUESTIONS[0], segments, max_new_tokens=4, prefix_key="k", prefixes=store)
        assert generation.stats["prefix_reused"] is False
    assert generation.token_ids == sdpa.generate(QUESTIONS[0], segments, max_new_tokens=4).token_ids
