"""The engine answers exactly like stock ``model.generate`` and gives the compressors the hooks they need.

Stock inputs are built independently of our prompt code: the tiny tokenizer's chat template, then the
library's own ``Qwen3VLProcessor.replace_video_token`` / ``_calculate_timestamps`` (called on a stand-in
for the processor, whose constructor needs torchvision), then the tokenizer on the whole string.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from compressors.base import EncodedVideo, VisualSegment, grid_positions, group_segment
from model_zoo import TINY, EngineError, PromptError, load_backbone
from model_zoo import engine as eng
from model_zoo import engine_layers as layers
from model_zoo import engine_probe as probe
from tests import stock
from tests import xcomp_reference as ref

# (frames, height, width, fps): square, odd T (padded), resized down, longer and wider.
CLIPS = [(2, 64, 64, 1.0), (5, 96, 128, 2.0), (8, 160, 90, 1.0), (12, 200, 300, 0.5)]
QUESTIONS = ["What happens in the video?", "Where is the ball? Answer in one word."]
PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(TINY, device="cpu")


def make_clip(frames: int, height: int, width: int, fps: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    return video, [i / fps for i in range(frames)]


def stock_prompt(
    backbone, video_grid_thw, frames: int, fps: float, question: str, *, system=None, outer=False
):
    """The prompt text stock transformers would build (outer=True: the 5.x layout, else the Qwen reference)."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]})
    text = backbone.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    metadata = VideoMetadata(total_num_frames=frames, fps=fps, frames_indices=list(range(frames)))
    expansion = stock.video_expansion(video_grid_thw, metadata)
    return text.replace("<|video_pad|>" if outer else PLACEHOLDER, expansion)


def stock_inputs(backbone, clip, question, *, system=None, outer=False, seed=0):
    video, times = make_clip(*clip, seed=seed)
    pixels = backbone.preprocess_frames(video, times)
    text = stock_prompt(
        backbone, pixels.video_grid_thw, clip[0], clip[3], question, system=system, outer=outer
    )
    ids = backbone.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values_videos": pixels.pixel_values_videos,
        "video_grid_thw": pixels.video_grid_thw,
        "mm_token_type_ids": (ids == backbone.model.config.video_token_id).long() * 2,
    }


def uncompressed(backbone, clip, seed=0):
    video, times = make_clip(*clip, seed=seed)
    tokens = backbone.encode(video, times)
    return tokens, [group_segment(tokens, g) for g in range(tokens.num_groups)]


@pytest.fixture
def outer_layout(backbone):
    backbone.outer_vision_tokens = True
    yield backbone
    backbone.outer_vision_tokens = False


# ---------------------------------------------------------------------------------------------- encode


@pytest.mark.parametrize("clip", CLIPS)
def test_encode_gives_groups_grids_and_times(backbone, clip):
    tokens, _ = uncompressed(backbone, clip)
    pixels = backbone.preprocess_frames(*make_clip(*clip))
    g, gh, gw = pixels.video_grid_thw[0].tolist()
    h, w = gh // 2, gw // 2
    assert isinstance(tokens, EncodedVideo)
    assert g == (clip[0] + 1) // 2 and tokens.padded == clip[0] % 2
    assert tokens.embeds.shape == (g, h * w, 128) and tokens.grid == (h, w) and tokens.grid_thw == (g, gh, gw)
    assert len(tokens.deepstack) == 3 and all(x.shape == tokens.embeds.shape for x in tokens.deepstack)
    assert h * w <= 16, "tiny frames are capped at 16 tokens"
    fps = clip[3]
    expected = [(2 * i + min(2 * i + 1, clip[0] - 1)) / fps / 2 for i in range(g)]
    assert tokens.group_times.tolist() == pytest.approx(expected)
    assert torch.equal(tokens.positions[-1], grid_positions(h, w))


def test_one_vision_pass_equals_separate_passes_per_group(backbone):
    video, times = make_clip(6, 64, 96, 1.0)
    whole = backbone.encode(video, times)
    for g in range(3):
        part = backbone.encode(video[2 * g : 2 * g + 2], times[2 * g : 2 * g + 2])
        torch.testing.assert_close(whole.embeds[g], part.embeds[0])
        for level, piece in zip(whole.deepstack, part.deepstack, strict=True):
            torch.testing.assert_close(level[g], piece[0])


def test_encode_matches_the_stock_video_features(backbone):
    inputs = stock_inputs(backbone, CLIPS[1], QUESTIONS[0])
    with torch.inference_mode():
        stock = backbone.model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True
        )
    tokens, _ = uncompressed(backbone, CLIPS[1])
    assert torch.equal(tokens.embeds.flatten(0, 1), stock.pooler_output[0])
    assert torch.equal(tokens.deepstack[2].flatten(0, 1), stock.deepstack_features[2][0])


# ---------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("outer", [False, True], ids=["reference-layout", "transformers5-layout"])
@pytest.mark.parametrize("clip", CLIPS)
def test_prompt_ids_and_positions_equal_the_stock_ones(backbone, clip, outer):
    backbone.outer_vision_tokens = outer
    try:
        _, segments = uncompressed(backbone, clip)
        layout = backbone.layout(segments, QUESTIONS[0])
    finally:
        backbone.outer_vision_tokens = False
    inputs = stock_inputs(backbone, clip, QUESTIONS[0], outer=outer)
    assert torch.equal(layout.input_ids, inputs["input_ids"][0])
    stock_positions, _ = backbone.model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"]
    )
    assert torch.equal(layout.positions, stock_positions[:, 0])


@pytest.mark.parametrize("system", [None, "Answer briefly."])
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("clip", CLIPS)
def test_greedy_tokens_equal_stock_generate(backbone, clip, question, system):
    _, segments = uncompressed(backbone, clip)
    ours = backbone.generate(question, segments, max_new_tokens=24, system=system)
    stock = backbone.model.generate(
        **stock_inputs(backbone, clip, question, system=system), do_sample=False, max_new_tokens=24
    )
    prompt_length = stock_inputs(backbone, clip, question, system=system)["input_ids"].shape[1]
    assert ours.token_ids == stock[0, prompt_length:].tolist()
    assert ours.stats["prompt_tokens"] == prompt_length


def test_greedy_tokens_equal_stock_generate_in_the_transformers5_layout(outer_layout):
    backbone = outer_layout
    for clip in CLIPS[:2]:
        _, segments = uncompressed(backbone, clip)
        ours = backbone.generate(QUESTIONS[1], segments, max_new_tokens=24)
        inputs = stock_inputs(backbone, clip, QUESTIONS[1], outer=True)
        stock = backbone.model.generate(**inputs, do_sample=False, max_new_tokens=24)
        assert ours.token_ids == stock[0, inputs["input_ids"].shape[1] :].tolist()


def test_stats_report_what_the_model_received(backbone):
    tokens, segments = uncompressed(backbone, CLIPS[2])
    generation = backbone.generate(QUESTIONS[0], segments, max_new_tokens=5)
    text = generation.text
    inputs = stock_inputs(backbone, CLIPS[2], QUESTIONS[0])
    placeholders = int((inputs["input_ids"] == backbone.model.config.video_token_id).sum())
    stats = generation.stats
    assert stats["visual_tokens"] == placeholders == tokens.embeds.shape[0] * tokens.embeds.shape[1]
    assert stats["per_layer_visual"] == [placeholders] * backbone.num_layers
    assert stats["new_tokens"] == len(generation.token_ids) <= 5
    prompt = inputs["input_ids"].shape[1]
    assert stats["kv_lengths"] == [prompt + stats["new_tokens"] - 1] * backbone.num_layers
    assert stats["prefill_s"] > 0 and stats["decode_s"] >= 0
    assert text == backbone.tokenizer.decode(generation.token_ids, skip_special_tokens=True)


def test_streamed_deltas_join_into_the_text(backbone):
    _, segments = uncompressed(backbone, CLIPS[1])
    generation = backbone.generate(QUESTIONS[0], segments, max_new_tokens=20)
    deltas = list(generation)
    assert "".join(deltas) == generation.text
    assert list(generation) == []  # a generation streams once


def test_eager_attention_gives_the_same_tokens(backbone):
    eager = copy.copy(backbone)
    eager.model = copy.deepcopy(backbone.model)
    eager.model.set_attn_implementation("eager")
    assert layers.attention_implementation(eager.model) == "eager"
    _, segments = uncompressed(backbone, CLIPS[3])
    expected = backbone.generate(QUESTIONS[0], segments, max_new_tokens=16).token_ids
    assert eager.generate(QUESTIONS[0], segments, max_new_tokens=16).token_ids == expected


# ---------------------------------------------------------------------------------------------- layout rules


def test_compressed_blocks_are_offset_like_an_image_and_text_continues_after_their_extent(backbone):
    d = 128
    positions = torch.tensor([[0, 0, 0], [1, 0, 2], [3, 1, 0]])
    segments = [
        VisualSegment("<1.0 seconds>", torch.randn(3, d), positions, [torch.randn(3, d) for _ in range(3)]),
        VisualSegment(None, torch.randn(1, d), torch.zeros(1, 3, dtype=torch.long), [torch.randn(1, d)] * 3),
    ]
    layout = backbone.layout(segments, "Why?")
    columns = layout.segment_columns
    start = int(layout.positions[0, columns[0][0] - 1]) + 1  # the block starts after <|vision_start|>
    assert layout.positions[:, columns[0]].t().tolist() == (positions + start).tolist()
    after = start + 3 + 1  # max local position 3, plus one
    vision_end = columns[0][-1] + 1
    assert layout.positions[:, vision_end].tolist() == [after] * 3
    # no text before the second block: <|vision_start|> then the block
    assert layout.positions[:, columns[1]].t().tolist() == [[after + 2] * 3]
    assert layout.num_visual == 4 and int(layout.visual_mask.sum()) == 4
    assert layout.input_ids[layout.visual_mask].eq(backbone.ids.video_pad).all()


def test_a_placeholder_typed_in_a_question_is_plain_text(backbone):
    _, segments = uncompressed(backbone, CLIPS[0])
    layout = backbone.layout(segments, "What is <|video_pad|>?")  # tests/test_hostile_questions.py: more
    assert int((layout.input_ids == backbone.ids.video_pad).sum()) == layout.num_visual
    assert backbone.generate("What is <|video_pad|>?", segments, max_new_tokens=2).token_ids


def test_segments_without_deepstack_are_refused(backbone):
    segment = VisualSegment("<0.5 seconds>", torch.randn(4, 128), grid_positions(2, 2))
    with pytest.raises(PromptError, match="DeepStack"):
        backbone.generate("Why?", [segment])


# ---------------------------------------------------------------------------------------------- keep rule


def halve_then_last_five(layer: int, alive: torch.Tensor):
    """After layer 0 keep every other token; after layer 2 keep the last five; else keep all."""
    if layer == 0:
        return torch.arange(alive.numel()) % 2 == 0
    if layer == 2:
        return torch.arange(alive.numel()) >= alive.numel() - 5
    return None


def test_a_keep_rule_drops_tokens_per_layer_and_decoding_uses_per_layer_caches(backbone):
    _, segments = uncompressed(backbone, CLIPS[3])
    layout = backbone.layout(segments, QUESTIONS[0])
    n, prompt = layout.num_visual, layout.input_ids.numel()
    calls = []

    def rule(layer, alive):
        calls.append((layer, alive.clone()))
        return halve_then_last_five(layer, alive)

    generation = backbone.generate(QUESTIONS[0], segments, keep=rule, max_new_tokens=10)
    new = len(generation.token_ids)
    half = (n + 1) // 2
    assert generation.stats["visual_tokens"] == n
    assert generation.stats["per_layer_visual"] == [n, half, half, 5]
    kv = generation.stats["kv_lengths"]
    assert kv == [
        prompt + new - 1,
        prompt - n + half + new - 1,
        prompt - n + half + new - 1,
        prompt - n + 5 + new - 1,
    ]
    # the rule sees original indices of the survivors, in order
    assert [layer for layer, _ in calls] == [0, 1, 2, 3]
    assert torch.equal(calls[1][1], torch.arange(0, n, 2))
    assert torch.equal(calls[3][1], torch.arange(0, n, 2)[-5:])
    assert generation.token_ids != backbone.generate(QUESTIONS[0], segments, max_new_tokens=10).token_ids


@torch.inference_mode()
def test_cached_decoding_with_drops_equals_recomputing_the_whole_sequence(backbone):
    """The per-layer KV caches are right: each greedy token equals a cache-free forward of prompt + answer."""
    model = backbone.model
    _, segments = uncompressed(backbone, CLIPS[2])
    layout = backbone.layout(segments, QUESTIONS[1])
    tokens = backbone.generate(QUESTIONS[1], segments, keep=halve_then_last_five, max_new_tokens=8).token_ids
    start = layout.max_position + 1
    for k, expected in enumerate(tokens):
        ids = torch.cat([layout.input_ids, torch.tensor(tokens[:k], dtype=torch.long)])
        positions = torch.cat([layout.positions, (start + torch.arange(k)).expand(3, k)], dim=1)
        visual = torch.cat([layout.visual_mask, torch.zeros(k, dtype=torch.bool)])
        hidden = layers.embed_sequence(model, ids[None], visual[None], layout.embeds)
        state = layers.SequenceState.start(hidden, positions[:, None], visual[None])
        state, _ = layers.run_layers(
            model, state, range(4), deepstack=layout.deepstack, keep=halve_then_last_five
        )
        assert int(torch.argmax(layers.final_logits(model, state.hidden[0, -1]))) == expected


def test_dropping_nothing_or_only_after_the_last_layer_changes_nothing(backbone):
    _, segments = uncompressed(backbone, CLIPS[1])
    expected = backbone.generate(QUESTIONS[0], segments, max_new_tokens=12).token_ids
    keep_all = backbone.generate(QUESTIONS[0], segments, keep=lambda layer, alive: None, max_new_tokens=12)
    assert keep_all.token_ids == expected

    def drop_all_at_the_end(layer, alive):
        return torch.zeros(alive.numel(), dtype=torch.bool) if layer == 3 else None

    late = backbone.generate(QUESTIONS[0], segments, keep=drop_all_at_the_end, max_new_tokens=12)
    assert late.token_ids == expected
    assert late.stats["per_layer_visual"] == [keep_all.stats["visual_tokens"]] * 4


def test_relayout_numbers_what_remains_as_a_fresh_prompt(backbone):
    # text 0..3, a 2 x 2 block at 4, text, a block with local (0, 0, 0) and (0, 2, 3), two texts
    positions = torch.tensor(
        [
            [0, 1, 2, 3, 4, 4, 4, 4, 6, 7, 7, 11, 12],
            [0, 1, 2, 3, 4, 4, 5, 5, 6, 7, 9, 11, 12],
            [0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 10, 11, 12],
        ]
    )
    visual = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0], dtype=torch.bool)
    everything = torch.ones(13, dtype=torch.bool)
    assert torch.equal(layers.relayout(positions, visual, everything), positions)
    last_of_first = everything.clone()
    last_of_first[4:7] = False  # the first block keeps only its (0, 1, 1) token, still 2 wide
    assert layers.relayout(positions, visual, last_of_first).tolist() == [
        [0, 1, 2, 3, 4, 6, 7, 7, 11, 12],
        [0, 1, 2, 3, 5, 6, 7, 9, 11, 12],
        [0, 1, 2, 3, 5, 6, 7, 10, 11, 12],
    ]
    empty = everything.clone()
    empty[9:11] = False  # the second block loses every token: it takes no room
    assert layers.relayout(positions, visual, empty)[0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 6, 7, 8]
    layout = backbone.layout(uncompressed(backbone, CLIPS[3])[1], QUESTIONS[0])
    keep = torch.rand(layout.input_ids.numel(), generator=torch.Generator().manual_seed(0)) < 0.6
    keep |= ~layout.visual_mask
    rows = keep.nonzero()[:, 0].tolist()
    assert torch.equal(
        layers.relayout(layout.positions, layout.visual_mask, keep), ref.fresh_positions(layout, rows)
    )
    assert torch.equal(
        layers.relayout(layout.positions, layout.visual_mask, torch.ones_like(keep)), layout.positions
    )


@torch.inference_mode()
def test_after_each_drop_the_rest_is_renumbered_and_decoding_goes_on_from_there(backbone, eager):
    """Prefill with a keep rule equals the layers run one by one on the rows left, each layer at the
    positions of a fresh layout of them; each layer's next position is one past its largest."""
    _, segments = uncompressed(backbone, CLIPS[3])
    layout = backbone.layout(segments, QUESTIONS[0])
    visual_rank = (torch.cumsum(layout.visual_mask.long(), 0) - 1).tolist()

    def drop(layer, alive):
        visual = torch.tensor([visual_rank[r] for r in alive if layout.visual_mask[r]])
        keep = halve_then_last_five(layer, visual)
        if keep is None:
            return alive
        kept = set(visual[keep].tolist())
        return [r for r in alive if not layout.visual_mask[r] or visual_rank[r] in kept]

    alive, hidden, used = ref.forward_layers(eager.model, layout, depth=4, drop=drop)
    first = eng.prefill(backbone.model, layout, keep=halve_then_last_five)
    expected = layers.final_logits(eager.model, hidden[0, -1])
    torch.testing.assert_close(first.logits, expected, rtol=1e-4, atol=1e-4)
    assert first.next_positions == [int(p.max()) + 1 for p in used]
    assert first.next_positions[0] == layout.max_position + 1 > first.next_positions[-1], "drops shrink them"
    assert len(set(first.next_positions)) > 2


def test_a_malformed_keep_mask_is_refused(backbone):
    _, segments = uncompressed(backbone, CLIPS[0])
    generation = backbone.generate(QUESTIONS[0], segments, keep=lambda layer, alive: torch.ones(3))
    with pytest.raises(EngineError, match="bool mask"):
        list(generation)


# ---------------------------------------------------------------------------------------------- QC-Comp probe

WINDOWS = [[[0, 1], [2]], [[2, 3], [4, 5]]]  # two windows over six segments: clips of segment indices


def reference_windows(backbone, eager, segments, question, windows, band):
    """Per window [band, clips]: the layer's own eager attention weights, re-run unmasked on the window's
    rows at their fresh positions (``tests/xcomp_reference.py``), the prompt run without drops."""
    layout = backbone.layout(segments, question)
    opener = backbone.tokenizer.convert_tokens_to_ids("<|im_start|>")
    end = max(i for i, t in enumerate(layout.input_ids.tolist()) if t == opener)
    queries = set(range(layout.user_span[0], end))
    spans = ref.segment_rows(backbone, layout, segments)
    outside = set(range(spans[0][0])) | set(range(spans[-1][-1] + 1, end))
    found = {}

    def probe(layer, alive, hidden):
        if layer in band:
            for w, window in enumerate(windows):
                rows = outside | {r for clip in window for s in clip for r in spans[s]}
                clips = [{r for s in clip for r in layout.segment_columns[s].tolist()} for clip in window]
                found[layer, w] = ref.window_clip_scores(
                    eager.model, layout, layer, alive, hidden, rows, clips, queries
                )

    ref.forward_layers(eager.model, layout, depth=max(band) + 1, probe=probe)
    return [torch.tensor([found[layer, w] for layer in band]) for w in range(len(windows))]


def test_window_scores_are_each_layers_own_unmasked_attention_on_the_window_alone(backbone, eager):
    _, segments = uncompressed(backbone, CLIPS[3])
    got = backbone.window_scores(segments, QUESTIONS[0], windows=WINDOWS, layers=[1, 3])
    expected = reference_windows(backbone, eager, segments, QUESTIONS[0], WINDOWS, [1, 3])
    assert [tuple(g.shape) for g in got] == [(2, 2), (2, 2)] and all(g.dtype == torch.float32 for g in got)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    with pytest.raises(EngineError, match="layers"):
        backbone.window_scores(segments, QUESTIONS[0], windows=WINDOWS, layers=[4])


@torch.inference_mode()
def test_window_attention_of_the_query_rows_sums_to_one_over_the_window(backbone):
    _, segments = uncompressed(backbone, CLIPS[3])
    layout = backbone.layout(segments, QUESTIONS[0])
    queries = backbone.query_rows(layout)
    assert layout.user_span[0] == int(queries[0]) and int(queries[-1]) == layout.user_span[1] + 1, (
        "the question and its <|im_end|>, newline"
    )
    rows = torch.arange(int(queries[-1]) + 1)
    window = probe.Window(rows, tuple(rows[i : i + 1] for i in range(rows.numel())))
    prefix = probe.scoring_prefix(backbone.model, layout, keep=None, layers=[0, 2])
    (scores,) = probe.window_attention(
        backbone.model, layout, prefix, keep=None, layers=[0, 2], windows=[window], queries=queries
    )
    torch.testing.assert_close(scores.sum(-1), torch.ones(2))
    assert (scores >= 0).all() and (scores[:, queries[-1]] > 0).all(), "unmasked: later query rows are seen"


# ---------------------------------------------------------------------------------------------- logits


WORDS = ["Yes", "No", ".", "0", "?"]
SYSTEM = "You are a query-conditioned visual compressor. Answer exactly 'Yes' or 'No'."


def stock_last_logits(backbone, clip, user_text, seed):
    inputs = stock_inputs(backbone, clip, user_text, system=SYSTEM, seed=seed)
    with torch.inference_mode():
        logits = backbone.model(**inputs).logits[0, -1]
    return logits[backbone.word_ids(WORDS)]


@pytest.mark.parametrize(
    "batch", [[CLIPS[1]], [CLIPS[0], CLIPS[3], CLIPS[1]]], ids=["single", "right-padded"]
)
def test_next_token_logits_equal_the_full_forward(backbone, batch):
    user_text = "\nQuery:\nWhere is the ball?"
    prompts = [uncompressed(backbone, clip, seed=i)[1] for i, clip in enumerate(batch)]
    ours = backbone.next_token_logits(prompts, system=SYSTEM, user_text=user_text, words=WORDS)
    assert ours.shape == (len(batch), len(WORDS)) and ours.dtype == torch.float32
    for i, clip in enumerate(batch):
        torch.testing.assert_close(ours[i], stock_last_logits(backbone, clip, user_text, seed=i))


def test_words_that_are_not_one_token_are_refused(backbone):
    _, segments = uncompressed(backbone, CLIPS[0])
    with pytest.raises(ValueError, match="single token"):
        backbone.next_token_logits([segments], system=SYSTEM, user_text="Why?", words=["Yes", "Nonetheless"])


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("clip", CLIPS)
def test_greedy_tokens_equal_stock_generate_on_cuda_in_bf16(clip):
    backbone = load_backbone(TINY, device="cuda")
    assert backbone.dtype == torch.bfloat16 and backbone.device.type == "cuda"
    _, segments = uncompressed(backbone, clip)
    ours = backbone.generate(QUESTIONS[0], segments, max_new_tokens=24)
    inputs = {k: v.to("cuda") for k, v in stock_inputs(backbone, clip, QUESTIONS[0]).items()}
    stock = backbone.model.generate(**inputs, do_sample=False, max_new_tokens=24)
    assert ours.token_ids == stock[0, inputs["input_ids"].shape[1] :].tolist()
    assert ours.stats["visual_tokens"] == int((inputs["mm_token_type_ids"] == 2).sum())
