"""Invariants every registered compressor keeps, and the shared helpers of compressors.base."""

import dataclasses
import json

import pytest
import torch

import compressors
from compressors.base import (
    CompressionError,
    SegmentSpan,
    build_segments,
    check_inputs,
    group_segment,
    raw_token_count,
    real_groups,
)
from tests.fakes import FakeHooks, make_video

METHODS = sorted(compressors.COMPRESSORS)
# (sampled frames, grid): long and short, square and wide, whole segments, short last ones, odd counts
VIDEOS = [(48, (4, 6)), (21, (3, 3)), (130, (6, 8)), (17, (2, 5)), (2, (4, 4)), (12, (2, 3)), (1, (3, 3))]
BUDGETS = [1, 2, 7, 16, 31, 32, 33, 64, 100, 257, 1000, 5000]


def _run(name, video, segments, budget, **hooks_kw):
    hooks = FakeHooks(video, **hooks_kw)
    return compressors.build(name).compress(video, segments, "What happens?", budget=budget, hooks=hooks)


@pytest.mark.parametrize("name", METHODS)
def test_budget_is_never_exceeded(name):
    for frames, grid in VIDEOS:
        video, segments = make_video(frames, grid=grid, seed=frames)
        for budget in BUDGETS:
            result = _run(name, video, segments, budget, attention={1: 3.0}, relevant={0: 2.0})
            assert result.llm_tokens <= max(budget, raw_token_count(video)), (frames, grid, budget)
            if budget < raw_token_count(video):
                assert result.llm_tokens <= budget, (frames, grid, budget)


@pytest.mark.parametrize("name", METHODS)
def test_kept_frames_are_real_frames_in_temporal_order(name):
    for frames, grid in VIDEOS:
        video, segments = make_video(frames, grid=grid)
        for budget in BUDGETS:
            kept = _run(name, video, segments, budget, attention={3: 2.0}).kept_frames
            assert kept == sorted(set(kept)), (frames, budget)
            assert all(0 <= f < frames for f in kept), (frames, budget)


@pytest.mark.parametrize("name", METHODS)
def test_deepstack_gets_exactly_what_the_embeddings_get(name):
    # fakes make DeepStack level i = (i + 2) * embeds; keep, merge and pool are linear, so that must survive
    video, segments = make_video(70, grid=(5, 6), levels=3, seed=3)
    for budget in [9, 40, 150, 600, 3000]:
        for seg in _run(name, video, segments, budget, attention={20: 4.0}, relevant={9: 3.0}).segments:
            assert len(seg.deepstack) == 3
            for i, level in enumerate(seg.deepstack):
                assert level.shape == seg.embeds.shape
                torch.testing.assert_close(level, (i + 2) * seg.embeds, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [m for m in METHODS if m != "xcomp"])  # XComp: tests/test_xcomp.py
def test_budget_covering_the_input_changes_nothing(name):
    video, segments = make_video(24, grid=(3, 4))
    raw = raw_token_count(video)
    for budget in [raw, raw + 1, 10 * raw]:
        hooks = FakeHooks(video)
        result = compressors.build(name).compress(video, segments, "q", budget=budget, hooks=hooks)
        stock = [group_segment(video, g) for g in range(video.embeds.shape[0])]
        assert result.keep is None and result.llm_tokens == raw and hooks.calls == []
        assert [s.text for s in result.segments] == [s.text for s in stock]
        for got, want in zip(result.segments, stock, strict=True):
            assert torch.equal(got.embeds, want.embeds) and torch.equal(got.positions, want.positions)
        assert result.kept_frames == list(range(24))


@pytest.mark.parametrize("name", METHODS)
def test_segment_accounting_adds_up_to_the_llm_tokens(name):
    video, segments = make_video(60, grid=(4, 4))
    for budget in [3, 50, 200, 700]:
        result = _run(name, video, segments, budget, attention={5: 1.0}, relevant={12: 2.0})
        assert result.raw_tokens == raw_token_count(video)
        assert result.segment_tokens is not None and len(result.segment_tokens) == len(segments)
        assert sum(result.segment_tokens) == result.llm_tokens
        if result.segment_scores is not None:
            assert len(result.segment_scores) == len(segments)
        json.dumps(result.extra)


@pytest.mark.parametrize("name", METHODS)
def test_impossible_budget_gives_no_tokens_instead_of_an_error(name):
    video, segments = make_video(64, grid=(6, 6))
    result = _run(name, video, segments, 1)
    assert result.llm_tokens <= 1


@pytest.mark.parametrize("name", METHODS)
def test_invalid_inputs_raise_a_compression_error(name):
    video, segments = make_video(16)
    method = compressors.build(name)
    with pytest.raises(CompressionError, match="budget"):
        method.compress(video, segments, "q", budget=0, hooks=FakeHooks(video))
    with pytest.raises(CompressionError, match="tile"):
        method.compress(video, segments[1:], "q", budget=50, hooks=FakeHooks(video))
    broken = dataclasses.replace(video, deepstack=[video.embeds[:, :3]])
    with pytest.raises(CompressionError, match="DeepStack"):
        method.compress(broken, segments, "q", budget=50, hooks=FakeHooks(video))


@pytest.mark.parametrize("name", METHODS)
def test_every_method_describes_itself_for_the_run_card(name):
    cls = compressors.COMPRESSORS[name]
    method = compressors.build(name)
    assert cls.name == method.name == name
    assert method.label and cls.__doc__
    json.dumps(method.options())
    if name in ("espresso", "xcomp", "tempo"):
        assert "training-free" in method.label


def test_espresso_label_says_pooling_stands_in():
    assert compressors.build("espresso").label == (
        "Espresso (training-free: pooling stands in for the learned compressors)"
    )


def test_build_names_the_valid_methods_when_the_name_is_unknown():
    with pytest.raises(CompressionError, match="espresso, xcomp, tempo, uniform, pool"):
        compressors.build("espreso")


def test_build_names_the_valid_options_when_an_option_is_unknown():
    with pytest.raises(CompressionError, match="spatial_share"):
        compressors.build("espresso", spatial_shar=0.5)
    assert compressors.build("xcomp", lp_comp=False).options()["lp_comp"] is False


def test_build_segments_tiles_the_frames_as_sampled_and_never_pads():
    times = [0.5 * i for i in range(19)]
    spans = build_segments(times, segment_frames=8)
    assert [s.groups for s in spans] == [range(0, 4), range(4, 8), range(8, 10)]
    assert [s.frames for s in spans] == [range(0, 8), range(8, 16), range(16, 19)]
    assert [s.padded for s in spans] == [0, 0, 1], "19 frames: only Qwen3-VL's one duplicate"
    assert spans[2].start == 8.0 and spans[2].end == 9.0 and spans[2].centre == 8.5
    with pytest.raises(CompressionError, match="nothing pads"):
        build_segments(times, segment_frames=8, num_groups=12)


def test_groups_of_padding_only_are_refused():
    video, segments = make_video(12, segment_frames=8)
    assert video.embeds.shape[0] == 6 and real_groups(video, segments) == list(range(6))
    padded = dataclasses.replace(video, embeds=torch.cat([video.embeds, video.embeds[-1:].expand(2, -1, -1)]))
    padded.deepstack = [(i + 2) * padded.embeds for i in range(3)]
    padded.group_times = torch.cat([video.group_times, video.group_times[-1:].expand(2)])
    old_style = dataclasses.replace(segments[1], frames=range(8, 16), groups=range(4, 8), padded=4)
    with pytest.raises(CompressionError, match="must fill groups"):
        check_inputs(padded, [segments[0], old_style], 10)
    repeated = [segments[0], dataclasses.replace(segments[1], groups=range(4, 8))]
    with pytest.raises(CompressionError, match="must fill groups"):
        check_inputs(padded, repeated, 10)


def held_groups(hooks) -> set[int]:
    """Every group any hook call's prompt held: a list per prompt (Tempo's relevance prompts) or one flat
    list per call (XComp's window scoring over a chunk)."""
    held = set()
    for _, call in hooks.calls:
        for item in call["groups"]:
            held |= {item} if isinstance(item, int) else set(item)
    return held


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("frames", [12, 13, 9])
def test_every_method_handles_a_short_last_segment(name, frames):
    """12 frames are 6 groups (8 + 4 frames), 13 are 7 (8 + 5, the last group frame 12 and its duplicate),
    9 are 5 (8 + 1): each method sees those groups and no more, at every budget."""
    video, segments = make_video(frames, grid=(3, 4), seed=frames)
    groups = -(-frames // 2)
    assert video.embeds.shape[0] == groups and segments[-1].frames == range(8, frames)
    for budget in [1, 5, 12, 24, 40, groups * 12 - 1, groups * 12, 1000]:
        hooks = FakeHooks(video, attention={groups - 1: 2.0}, relevant={groups - 1: 3.0})
        result = compressors.build(name).compress(video, segments, "q", budget=budget, hooks=hooks)
        assert result.raw_tokens == groups * 12
        assert result.llm_tokens <= max(budget, result.raw_tokens), budget
        kept = result.kept_frames
        assert set(kept) <= set(range(frames)) and kept == sorted(kept), budget
        assert len(result.segment_tokens) == 2 and sum(result.segment_tokens) == result.llm_tokens, budget
        assert held_groups(hooks) <= set(range(groups)), "a prompt held a group that was never sampled"
        if budget >= result.raw_tokens:
            assert result.kept_frames == list(range(frames)) and result.llm_tokens == groups * 12


def test_check_inputs_rejects_segments_that_miss_groups():
    video, segments = make_video(16)
    gap = [segments[0], SegmentSpan(1, range(10, 16), range(5, 8), 10.0, 15.0, 12.5)]
    with pytest.raises(CompressionError, match="expected a non-empty range starting at 4"):
        check_inputs(video, gap, 10)
    with pytest.raises(CompressionError, match="positive integer"):
        check_inputs(video, segments, 2.5)
