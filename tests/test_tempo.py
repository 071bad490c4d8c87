"""Tempo (arXiv 2604.08120): the relevance prior, Adaptive Token Allocation, per-segment merging."""

import math

import pytest
import torch

from compressors.base import group_segment, timestamp_text
from compressors.tempo import SYSTEM_PROMPT, Tempo, allocate_tokens, merge_segment
from compressors.tome import merge_tracked
from tests.fakes import FakeHooks, make_video

# --- ATA, worked by hand from the authors' adaptive_linear_budget_allocation ------------------------------


def test_ata_flat_scores_split_the_budget_evenly_up_to_the_maximum():
    assert allocate_tokens([0.3] * 4, 100) == [25, 25, 25, 25]
    assert allocate_tokens([0.7] * 3, 10_000) == [128, 128, 128]
    assert allocate_tokens([0.5] * 3, 10) == [3, 3, 3]


def test_ata_one_hot_segment_gets_the_maximum_and_the_rest_the_minimum():
    assert allocate_tokens([0.1, 0.1, 0.9, 0.1], 1000) == [4, 4, 128, 4]


def test_ata_linear_map_between_minimum_and_maximum_when_it_fits():
    # s_hat = [0, .5, 1] -> 4 + floor(s_hat * 124) = [4, 66, 128], sum 198 <= 1000
    assert allocate_tokens([0.25, 0.5, 0.75], 1000) == [4, 66, 128]


def test_ata_over_budget_scales_down_and_gives_the_remainder_to_the_largest_weights():
    # ideal [4, 66, 128] = 198 > 100: extra = 100 - 12 = 88, w = [0, 1/3, 2/3] -> floor [0, 29, 58],
    # remainder 1 to the largest w -> [4, 33, 63]
    assert allocate_tokens([0.25, 0.5, 0.75], 100) == [4, 33, 63]


def test_ata_remainder_ties_go_to_the_lower_segment_index():
    # extra = 17 - 12 = 5, w = [0, .5, .5] -> floor [0, 2, 2], remainder 1 to segment 1
    assert allocate_tokens([0.0, 1.0, 1.0], 17) == [4, 7, 6]


def test_ata_budget_below_n_times_min_lowers_the_minimum():
    # 4 * 4 > 10: m = 10 // 4 = 2; ideal [2, 128, 2, 2] too big; extra = 2 all to segment 1
    assert allocate_tokens([0.0, 1.0, 0.0, 0.0], 10) == [2, 4, 2, 2]


def test_ata_budget_below_one_token_per_segment_never_overspends():
    assert allocate_tokens([0.1, 0.9, 0.5, 0.9, 0.2], 3) == [0, 1, 1, 1, 0]
    assert allocate_tokens([0.4] * 6, 2) == [0, 1, 0, 0, 1, 0]
    assert allocate_tokens([0.4] * 3, 0) == [0, 0, 0]
    assert allocate_tokens([], 50) == []


def test_ata_allocations_stay_in_bounds_and_within_budget():
    gen = torch.Generator().manual_seed(0)
    for trial in range(300):
        n = int(torch.randint(1, 40, (1,), generator=gen))
        budget = int(torch.randint(n, 3000, (1,), generator=gen))
        scores = torch.rand(n, generator=gen).tolist()
        lo, hi = (4, 128) if trial % 2 else (2, 32)
        k = allocate_tokens(scores, budget, lo, hi)
        floor = lo if n * lo <= budget else max(1, budget // n)
        assert sum(k) <= budget and all(floor <= x <= hi for x in k), (n, budget, scores)


def test_ata_equal_scores_get_equal_allocations():
    for n, budget in [(1, 7), (5, 5), (7, 100), (9, 4000), (30, 31)]:
        assert len(set(allocate_tokens([0.42] * n, budget))) == 1


def test_ata_accepts_a_tensor():
    assert allocate_tokens(torch.tensor([0.1, 0.9]), 1000) == [4, 128]


# --- the relevance prior ---------------------------------------------------------------------------------


def test_system_prompt_is_tempos_inference_prompt_verbatim():
    assert SYSTEM_PROMPT == (
        "You are a query-conditioned visual compressor. Store in the provided memory tokens the minimal visual "
        "information needed to answer the Query. Ignore irrelevant details. Now, before compressing, answer "
        "exactly 'Yes' or 'No': is this segment relevant to the Query?"
    )


def test_relevance_asks_each_segment_with_tempos_prompt_in_batches():
    video, segments = make_video(56, grid=(3, 4))
    hooks = FakeHooks(video)
    Tempo(batch_size=3).compress(video, segments, "Where is the cat?", budget=100, hooks=hooks)
    assert [len(call["groups"]) for _, call in hooks.calls] == [3, 3, 1]
    _, first = hooks.calls[0]
    assert first["system"] == SYSTEM_PROMPT
    assert first["user_text"] == "\nQuery:\nWhere is the cat?"
    assert first["words"] == ["Yes", "No"]
    asked = [groups for _, call in hooks.calls for groups in call["groups"]]
    assert asked == [list(s.groups) for s in segments]


def test_relevance_prompts_show_each_group_as_the_stock_model_does():
    video, segments = make_video(16)
    seen = []

    class Recording(FakeHooks):
        def next_token_logits(self, prompts, **kw):
            seen.extend(prompts)
            return super().next_token_logits(prompts, **kw)

    Tempo().compress(video, segments, "q", budget=30, hooks=Recording(video))
    for prompt, span in zip(seen, segments, strict=True):
        for got, g in zip(prompt, span.groups, strict=True):
            want = group_segment(video, g)
            assert got.text == want.text and torch.equal(got.embeds, want.embeds)


def test_relevant_segment_gets_the_tokens_and_scores_are_sigmoid_of_yes_minus_no():
    video, segments = make_video(64, grid=(6, 6))
    hooks = FakeHooks(video, relevant={9: 3.0})  # group 9 lies in segment 2
    result = Tempo().compress(video, segments, "q", budget=300, hooks=hooks)
    assert result.segment_scores[2] == pytest.approx(1 / (1 + math.exp(-3.0)))
    assert result.segment_scores[0] == pytest.approx(0.5)
    assert result.segment_tokens == [4, 4, 128, 4, 4, 4, 4, 4]
    assert result.llm_tokens == 156


def test_dropped_segments_leave_no_tokens_and_kept_ones_carry_their_centre_time():
    video, segments = make_video(64, grid=(4, 4))
    hooks = FakeHooks(video, relevant={1: 2.0, 13: 1.0, 29: 3.0})
    result = Tempo().compress(video, segments, "q", budget=3, hooks=hooks)
    assert result.segment_tokens == [1, 0, 0, 1, 0, 0, 0, 1]
    assert [s.text for s in result.segments] == [timestamp_text(segments[i].centre) for i in (0, 3, 7)]
    assert result.kept_frames == [*range(0, 8), *range(24, 32), *range(56, 64)]


def test_segment_tokens_are_merged_with_destination_positions():
    video, segments = make_video(16, grid=(3, 5))
    span = segments[1]
    seg = merge_segment(video, span, 7)
    flat = video.embeds[list(span.groups)].reshape(-1, video.embeds.shape[-1])
    m = merge_tracked(flat, 7)
    torch.testing.assert_close(seg.embeds, m.embeds)
    group, cell = m.destinations // 15, m.destinations % 15
    assert torch.equal(seg.positions, torch.stack([group, cell // 5, cell % 5], dim=1))
    assert seg.text == timestamp_text(span.centre)
