"""The frames as sampled reach the LLM: a short last segment stays short, only an odd count gets Qwen3-VL's
own duplicate, and the uniform baseline at a covering budget is the stock model's input token for token.

The stock side is built with transformers' own code, independently of ours: the token count from
``Qwen3VLVideoProcessor.get_num_of_video_patches``, the placeholder text from ``Qwen3VLProcessor
.replace_video_token`` / ``_calculate_timestamps`` (on a stand-in, the processor's constructor needs
torchvision), the positions from ``Qwen3VLModel.get_rope_index``.
"""

from __future__ import annotations

import types

import pytest
import torch
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
from transformers.video_utils import VideoMetadata

from model_zoo import load_backbone
from model_zoo.tiny import TINY_PREPROCESS
from pipeline import cache
from pipeline import events as ev
from pipeline.compare import compare
from pipeline.request import Request
from pipeline.settings import Settings
from pipeline.video import prepare
from tests import stock
from tests.videos import make_clip

QUESTION = "What is shown?"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 s at 8 fps, 128 x 96: sampled at 4 fps it gives 16 frames, capped by ``max_frames`` below."""
    return make_clip(tmp_path_factory.mktemp("sampled") / "clip.mp4", seconds=4, fps=8, size=(128, 96))


@pytest.fixture(autouse=True)
def fresh_caches():
    for store in (cache.FRAMES, cache.TOKENS, cache.COMPRESSIONS, cache.PREFIXES):
        store.clear()


def settings(frames: int, methods=("uniform",), budget=4096) -> Settings:
    return Settings.for_backbone(
        "tiny-random", fps=4.0, max_frames=frames, budget=budget, methods=methods, max_new_tokens=2
    )


def prepared_video(clip, frames: int):
    return list(prepare(Request(clip, QUESTION, settings(frames)), None))[-1]


def stock_token_count(frames: int, height: int, width: int) -> int:
    """Visual tokens the library's processor gives ``frames`` frames (its own count, per-frame cap on)."""
    config = TINY_PREPROCESS
    processor = types.SimpleNamespace(
        size={"shortest_edge": config.min_pixels, "longest_edge": config.max_pixels},
        patch_size=config.patch_size,
        merge_size=config.merge_size,
        temporal_patch_size=config.temporal_patch_size,
        cap_pixels_per_frame=True,
        max_video_tokens=config.max_frame_tokens,
    )
    patches = Qwen3VLVideoProcessor.get_num_of_video_patches(processor, frames, height, width)
    return patches // config.merge_size**2


def stock_prompt(backbone, grid_thw: torch.Tensor, timestamps) -> torch.Tensor:
    """The ids stock transformers builds for these frames (their own times) and ``QUESTION``."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = backbone.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # fps 1 with the times as "indices": the library then computes its group times from our frame times
    metadata = VideoMetadata(total_num_frames=len(timestamps), fps=1.0, frames_indices=list(timestamps))
    expansion = stock.video_expansion(grid_thw, metadata)
    text = text.replace("<|vision_start|><|video_pad|><|vision_end|>", expansion)
    return backbone.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(("frames", "groups"), [(12, 6), (13, 7)])
def test_sampled_frames_are_kept_as_sampled(clip, frames, groups):
    prepared = prepared_video(clip, frames)
    assert len(prepared.frames) == prepared.real_frames == frames, "no frame added to fill a segment"
    assert [s.frames for s in prepared.segments] == [range(0, 8), range(8, frames)]
    spans = prepared.spans
    assert [s.groups for s in spans] == [range(0, 4), range(4, groups)]
    assert [s.padded for s in spans] == [0, frames % 2], "only an odd count gets Qwen3-VL's duplicate"


@pytest.mark.parametrize(("frames", "groups"), [(12, 6), (13, 7)])
def test_uniform_at_a_covering_budget_is_the_stock_input_token_for_token(clip, frames, groups, monkeypatch):
    backbone = load_backbone("tiny-random")
    requests = []
    real_generate_many = backbone.generate_many

    def recording(reqs, **kwargs):
        requests.extend(reqs)
        return real_generate_many(reqs, **kwargs)

    monkeypatch.setattr(backbone, "generate_many", recording)
    finished = list(compare(Request(clip, QUESTION, settings(frames))))[-1]
    assert isinstance(finished, ev.Finished)
    report, prepared = finished.reports["uniform"], finished.prepared
    times = prepared.frames.timestamps.tolist()
    height, width = prepared.frames.frames.shape[1:3]
    stock_tokens = stock_token_count(frames, height, width)
    assert report.error is None
    assert report.tokens["raw"] == report.tokens["llm_input"] == stock_tokens
    assert report.tokens["per_frame"] == pytest.approx(stock_tokens / frames, abs=1e-3)
    assert report.kept == list(range(frames))

    (request,) = requests
    layout = backbone.layout(request.segments, request.question)
    grid = backbone.preprocess_frames(prepared.frames.frames, times).video_grid_thw
    assert int(grid[0, 0]) == groups and int(grid.prod()) // 4 == stock_tokens
    ids = stock_prompt(backbone, grid, times)
    assert torch.equal(layout.input_ids, ids[0]), "placeholders, timestamps and text as the stock processor's"
    video_token = backbone.model.config.video_token_id
    positions, _ = backbone.model.model.get_rope_index(
        ids, (ids == video_token).long() * 2, video_grid_thw=grid
    )
    assert torch.equal(layout.positions, positions[:, 0])


def test_every_account_counts_the_frames_as_sampled(clip, monkeypatch):
    """Under a budget that compresses, every column's raw tokens are the stock count and its tokens per frame
    divide by the 12 sampled frames (never by a padded 16); Tempo's relevance prompts hold 4 and 2 groups."""
    backbone = load_backbone("tiny-random")
    prompts = []
    real_logits = backbone.next_token_logits

    def recording(batch, **kwargs):
        prompts.extend(len(prompt) for prompt in batch)
        return real_logits(batch, **kwargs)

    monkeypatch.setattr(backbone, "next_token_logits", recording)
    methods = ("espresso", "xcomp", "tempo", "uniform", "pool")
    finished = list(compare(Request(clip, QUESTION, settings(12, methods, budget=40))))[-1]
    assert prompts == [4, 2], "one relevance prompt per segment, over its own groups only"
    height, width = finished.prepared.frames.frames.shape[1:3]
    stock_tokens = stock_token_count(12, height, width)
    for method, report in finished.reports.items():
        assert report.error is None, method
        assert report.tokens["raw"] == stock_tokens, method
        assert report.tokens["per_frame"] == pytest.approx(report.tokens["llm_input"] / 12, abs=1e-3), method
        assert set(report.kept) <= set(range(12)), method
        assert len(report.segments) == 2, method
