"""Every method end to end on the tiny offline backbone: it answers, and its accounting is what the engine got."""

import numpy as np
import pytest

import compressors
from compressors.base import build_segments, raw_token_count

model_zoo = pytest.importorskip("model_zoo")

QUESTION = "What colour is the square?"
FRAMES, FPS = 24, 2.0


def _clip(frames: int, width: int = 128, height: int = 96) -> np.ndarray:
    """[T, H, W, 3] uint8: a red square crossing a grey background left to right."""
    video = np.full((frames, height, width, 3), 90, dtype=np.uint8)
    side = height // 3
    for t in range(frames):
        x = t * (width - side) // max(1, frames - 1)
        video[t, side : 2 * side, x : x + side] = (220, 30, 30)
    return video


@pytest.fixture(scope="module")
def backbone():
    return model_zoo.load_backbone("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def encoded(backbone):
    times = [t / FPS for t in range(FRAMES)]
    video = backbone.encode(_clip(FRAMES), times)
    return video, build_segments(times, num_groups=video.embeds.shape[0])


def _answer(backbone, encoded, name, budget):
    video, segments = encoded
    result = compressors.build(name).compress(video, segments, QUESTION, budget=budget, hooks=backbone)
    generation = backbone.generate(QUESTION, result.segments, keep=result.keep, max_new_tokens=6)
    return result, generation.text, generation.stats


@pytest.mark.parametrize("name", sorted(compressors.COMPRESSORS))
def test_each_method_answers_and_its_token_count_is_what_the_engine_received(backbone, encoded, name):
    video, _ = encoded
    budget = raw_token_count(video) // 3
    result, text, stats = _answer(backbone, encoded, name, budget)
    assert isinstance(text, str) and stats["new_tokens"] >= 1
    assert 0 < result.llm_tokens <= budget
    assert stats["visual_tokens"] == result.llm_tokens
    assert result.kept_frames and all(0 <= f < FRAMES for f in result.kept_frames)


def test_xcomp_reported_layer_counts_are_what_the_engine_ran(backbone, encoded):
    video, _ = encoded
    result, _, stats = _answer(backbone, encoded, "xcomp", raw_token_count(video) // 3)
    per_layer = stats["per_layer_visual"]
    assert len(per_layer) == backbone.num_layers and per_layer[0] == result.llm_tokens
    assert per_layer[-1] == result.extra["tokens_at_last_layer"] < per_layer[0]
    assert sum(per_layer) / len(per_layer) == pytest.approx(result.extra["mean_tokens_per_layer"])


def test_tempo_scores_every_segment_through_the_backbone(backbone, encoded):
    video, segments = encoded
    result, _, _ = _answer(backbone, encoded, "tempo", raw_token_count(video) // 3)
    assert len(result.segment_scores) == len(segments)
    assert all(0.0 < s < 1.0 for s in result.segment_scores)


@pytest.mark.parametrize("name", sorted(compressors.COMPRESSORS))
def test_a_budget_covering_the_video_sends_every_token(backbone, encoded, name):
    video, _ = encoded
    result, _, stats = _answer(backbone, encoded, name, raw_token_count(video))
    assert stats["visual_tokens"] == result.llm_tokens == raw_token_count(video)
    assert result.kept_frames == list(range(FRAMES))
