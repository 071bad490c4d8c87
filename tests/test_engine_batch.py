"""Batched greedy decoding answers every request exactly as it would be answered alone.

``Qwen3VLBackbone.generate_many`` prefills each request alone, merges the per-request, per-layer KV caches
into right-padded buffers with one additive mask per layer (``engine_batch.BatchKV``) and decodes all unfinished
requests in one step. The contract checked here, on the tiny model in fp32: the batched greedy tokens equal
each request's own ``generate`` token for token, over requests that differ in prompt length, keep rule
(none, a hand-made one, XComp's real LP-Comp rule), max_new_tokens and stopping (EOS, budget, first token),
with eager and sdpa attention; padding never reaches a real row; the pipeline answers every method in one
batch and falls back to one method at a time when the batch fails.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import compressors
from compressors.base import build_segments
from model_zoo import TINY, EngineError, PromptError, load_backbone
from model_zoo import engine as eng
from model_zoo import engine_batch as batching
from model_zoo.engine_layers import cache_lengths, check_mask_attention, text_model
from model_zoo.qwen3_vl import BatchGeneration, GenerationRequest, Qwen3VLBackbone
from pipeline import events as ev
from pipeline.accounting import OUT_OF_MEMORY
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from pipeline.compare import compare
from pipeline.request import Request
from pipeline.settings import Settings
from tests.test_compressors_e2e import _clip
from tests.test_engine import CLIPS, QUESTIONS, halve_then_last_five, uncompressed
from tests.videos import make_clip


@pytest.fixture(params=["sdpa", "eager"])
def backbone(request, sdpa, eager):
    chosen = sdpa if request.param == "sdpa" else eager
    saved = chosen.eos_ids
    yield chosen
    chosen.eos_ids = saved


@pytest.fixture(scope="module")
def xcomp_result(sdpa):
    """XComp's real compression (QC-Comp selection, LP-Comp keep rule) of a 24-frame clip."""
    times = [t / 2.0 for t in range(24)]
    video = sdpa.encode(_clip(24), times)
    spans = build_segments(times, num_groups=video.embeds.shape[0])
    result = compressors.build("xcomp").compress(video, spans, QUESTIONS[0], budget=40, hooks=sdpa)
    assert result.keep is not None, "the LP-Comp keep rule is what this test is about"
    return result


def mixed_requests(xcomp_result) -> list[GenerationRequest]:
    """Different prompt lengths, keep rules, systems and max_new_tokens."""
    segments = [uncompressed_segments(clip, seed) for seed, clip in enumerate(CLIPS)]
    return [
        GenerationRequest(QUESTIONS[0], segments[3], keep=halve_then_last_five, max_new_tokens=40),
        GenerationRequest(QUESTIONS[1], segments[0], max_new_tokens=24),
        GenerationRequest(QUESTIONS[0], xcomp_result.segments, keep=xcomp_result.keep, max_new_tokens=33),
        GenerationRequest(QUESTIONS[1], segments[1], max_new_tokens=1, system="Answer briefly."),
        GenerationRequest(QUESTIONS[0], segments[2], max_new_tokens=48, system="Answer briefly."),
    ]


_SEGMENTS: dict = {}


def uncompressed_segments(clip, seed):
    """Every group of a clip as its own segment (cached: encoding is the slow part)."""
    if (clip, seed) not in _SEGMENTS:
        _SEGMENTS[clip, seed] = uncompressed(load_backbone(TINY, device="cpu"), clip, seed=seed)[1]
    return _SEGMENTS[clip, seed]


def alone(backbone, request: GenerationRequest):
    return backbone.generate(
        request.question,
        request.segments,
        keep=request.keep,
        max_new_tokens=request.max_new_tokens,
        system=request.system,
    )


def force_an_early_eos(backbone, requests) -> int:
    """Make a token that request 0 generates mid-answer an EOS id; returns where request 0 now stops."""
    tokens = alone(backbone, requests[0]).token_ids
    stop = next(k for k in range(5, len(tokens)) if tokens[k] not in tokens[:k])
    backbone.eos_ids = (*backbone.eos_ids, tokens[stop])
    return stop


# ---------------------------------------------------------------------------------------------- exactness


def test_batched_tokens_equal_each_requests_own_generate(backbone, xcomp_result):
    requests = mixed_requests(xcomp_result)
    stop = force_an_early_eos(backbone, requests)
    singles = [alone(backbone, r) for r in requests]
    batch = backbone.generate_many(requests)
    pairs = list(batch)
    for i, (single, batched) in enumerate(zip(singles, batch.generations, strict=True)):
        assert batched.token_ids == single.token_ids, f"request {i}"
        assert batched.text == single.text == "".join(d for j, d in pairs if j == i)
        for key in ("visual_tokens", "prompt_tokens", "per_layer_visual", "kv_lengths", "new_tokens"):
            assert batched.stats[key] == single.stats[key], (i, key)
        assert batched.stats["decode_batch"] == len(requests)
    # the mix really is mixed: an EOS stop, a one-token answer, max_new_tokens stops, lengths all different
    assert singles[0].stats["new_tokens"] == stop + 1 < requests[0].max_new_tokens
    assert singles[0].token_ids[-1] in backbone.eos_ids
    assert singles[3].stats["new_tokens"] == 1
    assert [s.stats["new_tokens"] for s in singles[1:3]] == [24, 33]
    assert len({s.stats["prompt_tokens"] for s in singles}) == len(requests)
    for s in (singles[0], singles[2]):  # keep rules: per-layer lengths differ within a request too
        assert len(set(s.stats["per_layer_visual"])) > 1


def test_a_request_answers_the_same_whoever_it_is_batched_with(backbone, xcomp_result):
    requests = mixed_requests(xcomp_result)
    expected = alone(backbone, requests[2]).token_ids
    for companions in ([], [requests[0]], [requests[4], requests[1], requests[3]]):
        batch = backbone.generate_many([*companions, requests[2]])
        assert batch[len(companions)].token_ids == expected


@torch.inference_mode()
def test_padding_never_reaches_a_real_row(backbone, xcomp_result):
    """Masked slots get exactly zero weight: filling the padding with large values changes no bit."""
    model = backbone.model
    layouts = [backbone.layout(r.segments, r.question) for r in mixed_requests(xcomp_result)[:3]]
    keeps = [halve_then_last_five, None, xcomp_result.keep]

    def decode(poison: float) -> list[torch.Tensor]:
        firsts = [eng.prefill(model, x, keep=k) for x, k in zip(layouts, keeps, strict=True)]
        cache = batching.BatchKV([f.cache for f in firsts], [6] * 3)
        for layer in range(cache.num_layers):
            pad = cache.masks[layer, :, 0, 0, : cache.keys[layer].shape[2]] < 0  # [B, C_l]
            cache.keys[layer].masked_fill_(pad[:, None, :, None], poison)
            cache.values[layer].masked_fill_(pad[:, None, :, None], -poison)
        steps, tokens = [], [int(f.logits.argmax()) for f in firsts]
        for k in range(6):
            positions = [[n + k for n in f.next_positions] for f in firsts]
            logits = batching.batch_decode_step(model, tokens, positions, cache)
            steps.append(logits)
            tokens = logits.argmax(-1).tolist()
        return steps

    clean, poisoned = decode(0.0), decode(1e4)
    for a, b in zip(clean, poisoned, strict=True):
        assert torch.isfinite(a).all() and torch.equal(a, b)


@torch.inference_mode()
def test_batched_logits_stay_within_fp32_noise_of_the_single_ones(sdpa, xcomp_result):
    """Not a looser token test: a guard that no systematic error (position, mask, cache slot) hides behind
    equal argmaxes. Rows differ from their single forwards only by fp32 rounding: a GEMM over B rows is not
    bitwise the GEMM over one, and the fused attention kernel sums a longer, masked row."""
    model = sdpa.model
    requests = mixed_requests(xcomp_result)
    chosen = [requests[0], requests[2], requests[4]]
    layouts = [sdpa.layout(r.segments, r.question, system=r.system) for r in chosen]
    firsts = [eng.prefill(model, x, keep=r.keep) for x, r in zip(layouts, chosen, strict=True)]
    caches = [eng.prefill(model, x, keep=r.keep).cache for x, r in zip(layouts, chosen, strict=True)]
    batch = batching.BatchKV([f.cache for f in firsts], [8] * 3)
    tokens = [int(f.logits.argmax()) for f in firsts]
    for k in range(8):
        positions = [[n + k for n in f.next_positions] for f in firsts]
        together = batching.batch_decode_step(model, tokens, positions, batch)
        for row, cache in enumerate(caches):
            single = eng.decode_step(model, tokens[row], positions[row], cache)
            torch.testing.assert_close(together[row], single, rtol=1e-5, atol=1e-5)
        tokens = together.argmax(-1).tolist()


# ---------------------------------------------------------------------------------------------- batch mechanics


def test_finished_requests_leave_the_batch(sdpa, xcomp_result):
    requests = mixed_requests(xcomp_result)
    layouts = [sdpa.layout(r.segments, r.question, system=r.system) for r in requests]
    firsts = [eng.prefill(sdpa.model, x, keep=r.keep) for x, r in zip(layouts, requests, strict=True)]
    steps = list(
        batching.batched_greedy_tokens(
            sdpa.model,
            firsts,
            max_new_tokens=[r.max_new_tokens for r in requests],
            eos_ids=sdpa.eos_ids,
        )
    )
    running = [[i for i, _ in step] for step in steps]
    assert running[0] == [0, 1, 2, 3, 4] and running[1] == [0, 1, 2, 4]  # request 3 wanted one token
    assert all(set(b) <= set(a) for a, b in zip(running, running[1:], strict=False))
    lengths = [len(alone(sdpa, r).token_ids) for r in requests]
    assert [sum(i in step for step in running) for i in range(len(requests))] == lengths
    assert len(steps) == max(lengths)
    assert all(max(cache_lengths(firsts[i].cache)) == 0 for i in (0, 1, 2, 4)), "moved into the batch"
    assert min(cache_lengths(firsts[3].cache)) > 0, "a one-token answer never joins the decode batch"


def test_the_stream_yields_each_requests_deltas_and_its_end(sdpa, xcomp_result):
    requests = mixed_requests(xcomp_result)
    batch = sdpa.generate_many(requests)
    assert isinstance(batch, BatchGeneration) and len(batch) == len(requests)
    seen_done = set()
    for index, delta in batch:
        assert index not in seen_done, "nothing comes after a request's last pair"
        if batch[index].done:
            seen_done.add(index)
        else:
            assert delta
    assert seen_done == set(range(len(requests)))
    assert list(batch) == [] and list(batch[0]) == []  # streams once
    assert batch[2].stats["decode_s"] > 0 and batch[3].stats["decode_s"] >= 0


def test_reading_one_result_finishes_the_whole_batch(sdpa, xcomp_result):
    requests = mixed_requests(xcomp_result)
    batch = sdpa.generate_many(requests)
    assert batch[1].token_ids == alone(sdpa, requests[1]).token_ids
    assert all(g.done for g in batch.generations)
    assert batch[4].text == alone(sdpa, requests[4]).text


def test_bad_requests_are_refused_up_front_and_a_bad_keep_rule_when_it_runs(sdpa, xcomp_result):
    good = mixed_requests(xcomp_result)[1]
    with pytest.raises(EngineError, match="at least one"):
        sdpa.generate_many([])
    with pytest.raises(EngineError, match="max_new_tokens"):
        sdpa.generate_many([good, dataclasses.replace(good, max_new_tokens=0)])
    no_deepstack = [dataclasses.replace(seg, deepstack=[]) for seg in good.segments]  # (a typed placeholder
    with pytest.raises(
        PromptError, match="DeepStack"
    ):  # in a question is plain text: test_hostile_questions)
        sdpa.generate_many([good, dataclasses.replace(good, segments=no_deepstack)])
    broken = dataclasses.replace(good, keep=lambda layer, alive: torch.ones(3))
    with pytest.raises(EngineError, match="bool mask"):
        list(sdpa.generate_many([good, broken]))


def test_attention_without_an_additive_mask_is_refused(sdpa):
    model = copy.deepcopy(sdpa.model)
    text_model(model).config._attn_implementation = "flash_attention_2"
    with pytest.raises(EngineError, match="eager and sdpa"):
        check_mask_attention(model, "batched decoding")


# ---------------------------------------------------------------------------------------------- pipeline

SETTINGS = Settings.for_backbone("tiny-random", budget=48, max_frames=16, fps=4.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("batch") / "clip.mp4", seconds=4, fps=8, size=(128, 96))


def _finished(clip, settings=SETTINGS) -> tuple[list, ev.Finished]:
    events = list(compare(Request(clip, "What is shown?", settings)))
    return events, events[-1]


def test_the_pipeline_answers_every_method_in_one_batch_as_each_would_alone(clip, monkeypatch):
    calls = []
    real = Qwen3VLBackbone.generate_many

    def spy(self, requests, **kwargs):
        calls.append(len(requests))
        return real(self, requests, **kwargs)

    monkeypatch.setattr(Qwen3VLBackbone, "generate_many", spy)
    events, batched = _finished(clip)
    assert calls == [len(METHODS)]
    first_done = next(i for i, e in enumerate(events) if isinstance(e, ev.MethodDone))
    streaming = {e.method for e in events[:first_done] if isinstance(e, ev.AnswerDelta)}
    assert streaming == set(METHODS), "every column streams before any is done"
    assert [e.report.method for e in events if isinstance(e, ev.MethodDone)] == list(METHODS)
    for r in batched.reports.values():
        assert r.error is None and r.timings["answer_batched"] is True
        assert r.timings["answer"] == pytest.approx(r.timings["prefill"] + r.timings["decode"])

    def refuse(self, requests, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Qwen3VLBackbone, "generate_many", refuse)
    _, sequential = _finished(clip)
    for method, r in sequential.reports.items():
        assert r.error is None and r.timings["answer_batched"] is False, method
        assert r.answer == batched.reports[method].answer
        assert r.tokens == batched.reports[method].tokens


def test_a_batch_failing_mid_stream_falls_back_and_one_bad_method_fails_alone(clip, monkeypatch):
    real_step = batching.batch_decode_step
    calls = {"n": 0}

    def failing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(*args, **kwargs)

    real_generate = Qwen3VLBackbone.generate

    def generate(self, question, segments, *, keep=None, **kwargs):
        if keep is not None:  # XComp's column (LP-Comp): its answer fails when it runs alone
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return real_generate(self, question, segments, keep=keep, **kwargs)

    events, expected = _finished(clip)
    assert [m for m, r in expected.reports.items() if r.timings["answer_batched"]] == list(METHODS)
    monkeypatch.setattr(batching, "batch_decode_step", failing_step)
    monkeypatch.setattr(Qwen3VLBackbone, "generate", generate)  # the single path only
    events, finished = _finished(clip)
    reports = finished.reports
    assert calls["n"] == 3 and any(isinstance(e, ev.AnswerDelta) and e.method == "xcomp" for e in events)
    assert reports["xcomp"].error == OUT_OF_MEMORY  # it had streamed in the batch, then failed alone
    for method in METHODS:
        if method != "xcomp":
            assert reports[method].error is None and reports[method].answer == expected.reports[method].answer
    last = {e.method: e.text for e in events if isinstance(e, ev.AnswerDelta)}
    assert all(last[m] == reports[m].answer for m in METHODS if m != "xcomp")
