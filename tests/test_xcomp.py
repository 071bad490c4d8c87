"""XComp (arXiv 2604.14149), training-free: ToMe to 16/frame, QC-Comp frame selection, LP-Comp keep rule."""

import pytest
import torch

from compressors.xcomp import (
    LPComp,
    Plan,
    XComp,
    chunk_clip_scores,
    chunk_starts,
    layer_counts,
    lp_keep_rule,
    lp_schedule,
    merge_group,
    qc_layers,
    qc_windows,
    select_groups,
)
from tests.fakes import FakeHooks, make_video

PAPER_28 = [
    16,
    16,
    16,
    16,
    15,
    15,
    14,
    14,
    13,
    12,
    12,
    11,
    10,
    9,
    9,
    8,
    7,
    6,
    5,
    5,
    4,
    3,
    3,
    2,
    2,
    1,
    1,
    1,
    1,
]


def _simulate(rule, total, num_layers):
    """Visual tokens each decoder layer sees when the engine applies ``rule`` after every layer."""
    alive, seen = torch.arange(total), []
    for layer in range(num_layers):
        seen.append(alive.clone())
        alive = alive[rule(layer, alive)]
    return seen


# --- LP-Comp ----------------------------------------------------------------------------------------------


def test_lp_schedule_for_28_layers_is_the_papers_list():
    assert lp_schedule(28) == PAPER_28


def test_lp_schedule_runs_from_start_tokens_to_one():
    for layers in [1, 2, 12, 28, 36]:
        for start in [4, 16]:
            n = lp_schedule(layers, start)
            assert len(n) == layers + 1 and n[0] == start and n[-1] == 1
            assert all(a >= b for a, b in zip(n, n[1:], strict=False))


def test_layers_see_n_of_the_next_index_averaging_8_25_tokens_per_frame_over_28_layers():
    counts = layer_counts(28)
    assert counts == PAPER_28[1:] and sum(counts) / 28 == 8.25


def test_keep_rule_per_layer_counts_follow_the_schedule_keeping_each_groups_last_tokens():
    sizes = [32, 32, 32]
    rule = lp_keep_rule(sizes, 28)
    seen = _simulate(rule, 96, 28)
    assert [len(a) for a in seen] == [3 * 2 * n for n in layer_counts(28)]
    for alive, n in zip(seen, layer_counts(28), strict=True):
        want = torch.cat([torch.arange(32 * b + 32 - 2 * n, 32 * b + 32) for b in range(3)])
        assert torch.equal(alive, want)


def test_keep_rule_never_asks_more_than_a_small_block_holds():
    seen = _simulate(lp_keep_rule([5, 32, 9], 4), 46, 4)
    per_layer = [min(5, 2 * n) + min(32, 2 * n) + min(9, 2 * n) for n in layer_counts(4)]
    assert [len(a) for a in seen] == per_layer


# --- QC-Comp ----------------------------------------------------------------------------------------------


def test_qc_band_is_layers_6_to_23_of_28_and_scales_with_depth():
    assert qc_layers(28) == list(range(6, 24))
    assert qc_layers(36) == list(range(8, 31))
    assert qc_layers(56) == list(range(12, 47))
    assert qc_layers(2) == [0, 1] and qc_layers(1) == [0]


def test_qc_windows_are_8_clips_with_stride_4_as_far_as_they_fit_and_a_lone_chunk_adds_one_flush_with_its_end():
    assert qc_windows(16) == [range(0, 8), range(4, 12), range(8, 16)]
    assert qc_windows(18) == [range(0, 8), range(4, 12), range(8, 16), range(10, 18)]
    assert qc_windows(18, flush=False) == [range(0, 8), range(4, 12), range(8, 16)]
    assert len(qc_windows(72, flush=False)) == 17  # a 576-frame chunk, as the authors' p1 = 0, 4, ..., 64
    assert qc_windows(5) == [range(0, 5)]


def test_chunks_are_576_frames_every_512_repeated_8_times_each_33_groups_further_and_cyclic():
    plan = XComp().plan(2)
    assert (plan.clip, plan.window, plan.stride, plan.chunk, plan.chunk_stride, plan.shift) == (
        4,
        8,
        4,
        288,
        256,
        33,
    )
    assert chunk_starts(288, plan) == [0], "a video of one chunk is one chunk"
    starts = chunk_starts(600, plan)  # 1200 frames: 3 chunks a round, 8 rounds
    assert len(starts) == 24 and starts[:3] == [0, 256, 512]
    # chunk i starts at (i * 256 + (i // 3) * 33) % 600: the next round goes on round the video, shifted
    assert starts[3:6] == [201, 457, 113] and starts[-3:] == [207, 463, 119]


def test_qc_comp_scores_one_chunk_in_64_frame_windows_every_32_frames_over_the_band():
    video, segments = make_video(160, grid=(4, 4))  # 80 groups = 20 clips of 4 groups
    hooks = FakeHooks(video, num_layers=28)
    XComp().compress(video, segments, "Which colour?", budget=320, hooks=hooks)
    (call,) = [c for name, c in hooks.calls if name == "window_scores"]
    assert call["groups"] == list(range(80)) and call["question"] == "Which colour?"
    assert [window[0][0] for window in call["windows"]] == [0, 16, 32, 48]
    for window in call["windows"]:
        assert [len(clip) for clip in window] == [4] * 8  # 8 clips of 8 frames = 64 frames
    assert call["layers"] == list(range(6, 24)) and isinstance(call["keep"], LPComp)
    assert call["keep"].sizes == (16,) * 80, "LP-Comp runs in the scoring forward too"


def test_long_videos_are_scored_in_cyclic_chunks_skipping_each_chunks_edge_clips():
    video, segments = make_video(1200, grid=(4, 4))  # 600 groups: 24 chunks of 288 groups
    hooks = FakeHooks(video, num_layers=28, attention={300: 50.0})
    result = XComp().compress(video, segments, "q", budget=64, hooks=hooks)  # 4 groups
    calls = [c for name, c in hooks.calls if name == "window_scores"]
    assert len(calls) == 24 and all(len(c["groups"]) == 288 and len(c["windows"]) == 17 for c in calls)
    assert calls[2]["groups"][:3] == [512, 513, 514] and calls[2]["groups"][88:91] == [0, 1, 2]
    assert result.extra["qc_comp_windows"] == 24 * 17 and result.extra["qc_comp_chunks"] == 24
    kept = [s.source[1] for s in result.segments]
    assert 300 in kept and kept == list(range(kept[0], kept[0] + 4)), "the clips around group 300"
    assert all(v == v for v in result.segment_scores), "every group lies inside some chunk"


def test_edge_clips_of_a_chunk_do_not_count_and_a_lone_chunk_keeps_them():
    video, _ = make_video(48, grid=(4, 4))  # 24 groups
    blocks = [merge_group(video, g, 16) for g in range(24)]
    plan = Plan(clip=2, window=4, stride=2, chunk=24, chunk_stride=24, chunkings=1, shift=1)
    hooks = FakeHooks(video, attention={0: 9.0})
    _, counted, windows = chunk_clip_scores(blocks, "q", hooks, plan, layers=[0], keep=None, lone=False)
    assert windows == 5 and counted.tolist() == [False, False] + [True] * 8 + [False, False]
    _, counted, _ = chunk_clip_scores(blocks, "q", hooks, plan, layers=[0], keep=None, lone=True)
    assert counted.all()


def test_qc_comp_keeps_the_clip_the_question_attends_to():
    video, segments = make_video(128, grid=(6, 6))
    hooks = FakeHooks(video, attention={41: 5.0, 13: 2.0})
    result = XComp().compress(video, segments, "q", budget=256, hooks=hooks)  # 8 groups = 2 clips
    assert result.kept_frames == [*range(24, 32), *range(80, 88)]
    assert result.segment_scores[10] > result.segment_scores[3] > result.segment_scores[0]


def test_select_groups_keeps_the_best_in_temporal_order_ties_earlier_first_nan_last():
    assert select_groups(torch.tensor([0.1, 0.9, 0.5, 0.7]), 2) == [1, 3]
    assert select_groups(torch.tensor([0.5, 0.5, 0.5, 0.5]), 2) == [0, 1]
    assert select_groups(torch.tensor([float("nan"), 0.1, 0.2]), 2) == [1, 2]
    assert select_groups(torch.tensor([0.3, 0.1]), 9) == [0, 1]


# --- the method -------------------------------------------------------------------------------------------


def test_keeps_exactly_as_many_frames_as_the_budget_allows():
    video, segments = make_video(96, grid=(8, 8))  # 48 groups of 64 tokens, merged to 32
    for budget in [32, 50, 100, 333, 1000, 1535, 1536, 3000]:
        result = XComp().compress(video, segments, "q", budget=budget, hooks=FakeHooks(video))
        groups = min(budget // 32, 48)
        assert len(result.kept_frames) == 2 * groups == result.extra["frames_kept"], budget
        assert result.llm_tokens == 32 * groups == result.extra["tokens_into_llm"]


def test_each_group_is_merged_to_16_tokens_per_frame_with_deepstack_alike():
    video, segments = make_video(32, grid=(8, 10))
    result = XComp().compress(video, segments, "q", budget=200, hooks=FakeHooks(video))
    assert {s.num_tokens for s in result.segments} == {32}
    assert all(s.positions[:, 0].eq(0).all() for s in result.segments)


def test_reports_tokens_at_the_last_layer_and_the_mean_over_layers():
    video, segments = make_video(64, grid=(6, 6))
    result = XComp().compress(video, segments, "q", budget=400, hooks=FakeHooks(video, num_layers=28))
    groups = 12
    assert result.extra["tokens_at_last_layer"] == 2 * groups
    assert result.extra["mean_tokens_per_layer"] == pytest.approx(2 * 8.25 * groups)
    seen = _simulate(result.keep, result.llm_tokens, 28)
    assert [len(a) for a in seen] == [groups * 2 * n for n in layer_counts(28)]


def test_lp_comp_off_leaves_every_token_to_every_layer():
    video, segments = make_video(64, grid=(6, 6))
    result = XComp(lp_comp=False).compress(video, segments, "q", budget=400, hooks=FakeHooks(video))
    assert result.keep is None and result.extra["tokens_at_last_layer"] == result.llm_tokens


def test_tome_and_lp_comp_always_run_and_qc_comp_only_when_the_budget_cannot_hold_every_group():
    video, segments = make_video(16, grid=(8, 8))  # 8 groups of 64 tokens: 512 raw tokens
    for budget in [300, 512, 10_000]:  # 8 merged groups fit; the last two budgets cover the raw video
        hooks = FakeHooks(video)
        result = XComp().compress(video, segments, "q", budget=budget, hooks=hooks)
        assert hooks.calls == [] and result.segment_scores is None and len(result.kept_frames) == 16
        assert [s.num_tokens for s in result.segments] == [32] * 8, "ToMe to 16 per frame"
        assert result.keep == lp_keep_rule([32] * 8, 28), "LP-Comp"
        assert result.extra["stages"] == ["ToMe", "LP-Comp"] and result.extra["qc_comp_windows"] == 0
        assert result.extra["stages_summary"] == "stages: ToMe → LP-Comp"
    result = XComp().compress(video, segments, "q", budget=200, hooks=FakeHooks(video))
    assert result.extra["stages"] == ["ToMe", "QC-Comp", "LP-Comp"]
    assert result.extra["qc_comp_windows"] == 1 and result.extra["qc_comp_chunks"] == 1
    assert result.extra["stages_summary"] == "stages: ToMe → QC-Comp over 1 windows in 1 chunks → LP-Comp"
    off = XComp(lp_comp=False).compress(video, segments, "q", budget=512, hooks=FakeHooks(video))
    assert off.keep is None and off.extra["stages"] == ["ToMe"]


def test_the_lp_comp_rule_is_a_value():
    assert lp_keep_rule([32, 20], 28) == lp_keep_rule((32, 20), 28) != lp_keep_rule([32, 20], 36)
    assert len({lp_keep_rule([32, 20], 28), lp_keep_rule([32, 20], 28)}) == 1


def test_small_grids_are_not_merged():
    video, segments = make_video(64, grid=(4, 5))  # 20 tokens per group: already under 32
    result = XComp().compress(video, segments, "q", budget=100, hooks=FakeHooks(video))
    assert [s.num_tokens for s in result.segments] == [20] * 5
    assert result.llm_tokens == 100
