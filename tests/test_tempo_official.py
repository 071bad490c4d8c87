"""Tempo-6B (``tempo-6b.official``) on a tiny random checkpoint written under the authors' exact key names
(``tests.tempo_checkpoints``): the small VLM's scores and memory, the answer prompt, ATA, the frames, the
registry entry. Everything loads through ``pipeline.official.load_tempo_official``, the entry point the app uses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressors.tempo import SYSTEM_PROMPT, allocate_tokens
from model_zoo.preprocess import VideoPreprocessConfig
from model_zoo.tempo_official_config import BASE_VLM, HUB_ID, INFERENCE_RESERVE
from model_zoo.tempo_official_frames import (
    frame_sizes,
    official_sample_indices,
    official_sample_plan,
    segment_video,
)
from pipeline.official import allocation_table, load_tempo_official, official_frame_selection
from tests.tempo_checkpoints import N_MEMORY, TINY_RULE, frames_for, make_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("tempo_official"))


@pytest.fixture(scope="module")
def tempo(setup):
    return load_tempo_official(setup.tempo, base_vlm=setup.base, device="cpu", rule=TINY_RULE)


def compress(tempo, frames, question, *, chunk_size=None):
    batch = tempo.model.segment(frames, 2.0, rule=TINY_RULE)
    from compressors.tempo import USER_TEMPLATE

    return batch, tempo.model.compress(
        batch, question, system=SYSTEM_PROMPT, user_template=USER_TEMPLATE, chunk_size=chunk_size
    )


def test_scores_one_per_segment_and_batched_equals_one_by_one(tempo):
    frames = frames_for(27)  # 3 full segments and a 3-frame tail
    batch, together = compress(tempo, frames, "Where is the ball?")
    _, alone = compress(tempo, frames, "Where is the ball?", chunk_size=1)
    assert batch.num_segments == 4 and len(together.scores) == 4
    assert all(0.0 < s < 1.0 for s in together.scores)
    torch.testing.assert_close(
        torch.tensor(together.scores), torch.tensor(alone.scores), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(together.memory, alone.memory, atol=1e-4, rtol=1e-4)
    assert together.memory.shape == (4, N_MEMORY, 128)


def test_one_segment_by_hand_as_the_authors_forward_it(tempo):
    """One segment the authors' way, from transformers' own pieces: prompt ids then N pad ids for the memory
    slots, video features scattered at the placeholders, memory embeddings at the slots, M-RoPE positions
    from ``get_rope_index`` (memory tokens are text), then the text model; memory states and the score."""
    from compressors.tempo import USER_TEMPLATE

    model, question = tempo.model, "What colour is the square?"
    batch, result = compress(tempo, frames_for(8), question)
    layout = model.segment_prompt(
        model._groups(batch, range(1))[0], question, system=SYSTEM_PROMPT, user_template=USER_TEMPLATE
    )
    vlm, pad = model._vlm, model.vlm_tokenizer.pad_token_id
    ids = torch.cat([layout.input_ids, torch.full((N_MEMORY,), pad)])[None]
    memory_slots = torch.zeros_like(ids, dtype=torch.bool)
    memory_slots[0, -N_MEMORY:] = True
    with torch.inference_mode():
        features = vlm.get_video_features(batch.pixel_values, batch.grids[:1], return_dict=True)
        embeds = vlm.language_model.embed_tokens(ids)
        video = ids == model.vlm_config.video_token_id
        embeds[video] = features.pooler_output[0]
        embeds[memory_slots] = model.modules.compressor.compression_tokens[0]
        positions, _ = vlm.get_rope_index(ids, video.int() * 2, video_grid_thw=batch.grids[:1].clone())
        out = vlm.language_model(
            inputs_embeds=embeds,
            position_ids=positions,
            visual_pos_masks=video,
            deepstack_visual_embeds=[level[0] for level in features.deepstack_features],
        ).last_hidden_state[0]
    torch.testing.assert_close(result.memory[0], out[-N_MEMORY:], atol=1e-4, rtol=1e-4)
    expected = torch.sigmoid(out[-N_MEMORY - 1].float() @ model.relevance)
    assert result.scores[0] == pytest.approx(float(expected), abs=1e-5)


def test_small_vlm_prompt_is_the_authors_layout_with_absolute_times(tempo):
    frames = frames_for(11)  # segment 1 is a 3-frame tail, padded to 4 frames (frames 8..11)
    batch = tempo.model.segment(frames, 2.0, rule=TINY_RULE)
    from compressors.tempo import USER_TEMPLATE

    assert batch.group_times == [[0.25, 1.25, 2.25, 3.25], [4.25, 5.25]]
    blocks = tempo.model._groups(batch, range(2))[1]
    layout = tempo.model.segment_prompt(
        blocks, "Where is the ball?", system=SYSTEM_PROMPT, user_template=USER_TEMPLATE
    )
    tokenizer = tempo.model.vlm_tokenizer
    group = "<|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>"
    expected = (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
        f"<4.2 seconds>{group}<5.2 seconds>{group}"
        "\nQuery:\nWhere is the ball?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(layout.input_ids) == expected
    empty = tempo.model.segment_prompt(blocks, "  ", system=SYSTEM_PROMPT, user_template=USER_TEMPLATE)
    assert "\nQuery:\nDescribe this content.<|im_end|>" in tokenizer.decode(empty.input_ids)


def test_one_frame_tail_is_duplicated():
    batch = segment_video(frames_for(17), 2.0, preprocess=VideoPreprocessConfig(), rule=TINY_RULE)
    assert batch.grids.tolist() == [[4, 4, 4], [4, 4, 4], [1, 4, 4]]
    assert batch.frames == [range(0, 8), range(8, 16), range(16, 17)]
    assert batch.group_times[2] == [(16 + 17) / 2 / 2.0]
    assert [batch.centre(i) for i in range(3)] == [2.0, 6.0, 10.0]


# ------------------------------------------------------------------------------------------- end to end


def test_allocation_is_ata_on_the_scores(tempo):
    run = tempo.run(frames_for(40), 20.0, "Where is the ball?", budget=30, max_new_tokens=2)
    assert len(run.segments) == 5 and run.real_fps == pytest.approx(2.0)
    assert run.segment_tokens == allocate_tokens(run.segment_scores, 30, min_tokens=4, max_tokens=N_MEMORY)
    assert all(4 <= k <= N_MEMORY for k in run.segment_tokens) and sum(run.segment_tokens) <= 30
    assert run.llm_tokens == sum(run.segment_tokens)
    assert run.raw_tokens == 5 * 4 * 4  # 5 segments x 4 groups x 2 x 2 merged tokens
    rows = allocation_table(run)
    assert [r["tokens"] for r in rows] == run.segment_tokens and rows[0]["time"] == "<2.0 seconds>"


def test_each_segment_keeps_its_first_k_memory_tokens(tempo):
    frames, question = frames_for(24), "What colour is the square?"
    run = tempo.run(frames, 12.0, question, budget=24, max_new_tokens=1)
    _, compressed = compress(tempo, frames, question)
    parts = run.prompt.parts
    offsets = np.cumsum([0] + [len(p[1]) if p[0] == "text" else p[2] for p in parts])
    for (kind, *rest), start in zip(parts, offsets, strict=False):
        if kind == "visual":
            segment, count = rest
            assert count == run.segment_tokens[segment]
            with torch.inference_mode():
                expected = tempo.model.modules.projector(compressed.memory[segment, :count])
            torch.testing.assert_close(
                run.prompt.embeds[0, start : start + count], expected, atol=1e-4, rtol=1e-4
            )


def test_answer_prompt_layout(tempo):
    question = "What happens in the video?"
    run = tempo.run(frames_for(20), 10.0, question, budget=64, max_new_tokens=1)  # real_fps 2.0, 3 segments
    decode = tempo.model.tokenizer.decode
    texts = [decode(p[1]) for p in run.prompt.parts if p[0] == "text"]
    assert texts[0] == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    assert texts[1:-1] == ["<2.0 seconds>", "<6.0 seconds>", "<10.0 seconds>"]  # (8 i + 4) / real_fps
    assert texts[-1] == f"\n{question}<|im_end|>\n<|im_start|>assistant\n"
    kinds = [p[0] for p in run.prompt.parts]
    assert kinds == ["text", "text", "visual", "text", "visual", "text", "visual", "text"]
    assert run.prompt.length == sum(len(p[1]) if p[0] == "text" else p[2] for p in run.prompt.parts)
    odd = tempo.run(frames_for(20), 7.0, question, budget=64, max_new_tokens=1)  # real_fps 20 / 7
    stamps = [decode(p[1]) for p in odd.prompt.parts[1:-1] if p[0] == "text"]
    assert stamps == [f"<{(8 * i + 4) / (20 / 7):.1f} seconds>" for i in range(3)]


def test_end_to_end_answer_streams_greedy_tokens(tempo):
    run = tempo.run(frames_for(16), 8.0, "Describe the video.", budget=40, max_new_tokens=6)
    deltas = list(run)
    assert "".join(deltas) == run.text
    stream = run.stream
    assert 1 <= len(stream.token_ids) <= 6 and not set(stream.token_ids) & set(tempo.model.eos_ids)
    with torch.inference_mode():
        reference = tempo.model.modules.llm.generate(
            inputs_embeds=run.prompt.embeds,
            max_new_tokens=6,
            do_sample=False,
            eos_token_id=list(tempo.model.eos_ids),
            pad_token_id=tempo.model.eos_ids[0],
        )
    expected = [t for t in reference[0].tolist() if t not in tempo.model.eos_ids]
    assert stream.token_ids == expected
    assert run.kept_frames == list(range(16)) and run.timings["compress_s"] > 0


def test_context_limit_cuts_visual_tokens_from_the_end(tempo):
    question = "Where is the ball?"
    full = tempo.run(frames_for(24), 12.0, question, budget=48, max_new_tokens=1)
    text = len(full.prompt.parts[0][1]) + len(full.prompt.parts[-1][1])
    limit = text + INFERENCE_RESERVE + 20  # room for 20 embeddings: stamps + tokens
    cut = tempo.run(frames_for(24), 12.0, question, budget=48, max_new_tokens=1, context_limit=limit)
    assert cut.segment_tokens == full.segment_tokens
    assert cut.prompt.length == text + 20 and cut.prompt.cut == full.prompt.length - text - 20
    torch.testing.assert_close(
        cut.prompt.embeds[0, : text - len(full.prompt.parts[-1][1]) + 20],
        full.prompt.embeds[0, : text - len(full.prompt.parts[-1][1]) + 20],
    )
    delivered = [s.delivered for s in cut.segments]
    stamp = len(full.prompt.parts[1][1])
    assert delivered[0] == min(full.segment_tokens[0], 20 - stamp)
    assert delivered == sorted(delivered, reverse=True) and delivered[-1] < full.segment_tokens[-1]
    assert cut.llm_tokens == sum(delivered) < full.llm_tokens


# ------------------------------------------------------------------------------------ sampling and sizes


def test_official_sample_plan():
    plan = official_sample_plan(300, 30.0)  # 300 frames at 30 fps -> 20 frames, 2 fps
    assert plan.indices == np.round(np.linspace(0, 299, 20)).astype(int).tolist()
    assert plan.real_fps == pytest.approx(2.0) and plan.source_times[-1] == pytest.approx(299 / 30)
    assert len(official_sample_plan(25, 25.0).indices) == 4  # at least 4 frames
    long = official_sample_plan(108_000, 30.0)
    assert len(long.indices) == 1024 and long.real_fps == pytest.approx(1024 / 3600)
    assert official_sample_indices(1, 30.0) == [0]


def test_run_applies_the_frame_count_rule():
    assert official_frame_selection(10) == list(range(10))
    assert official_frame_selection(2) == [0, 0, 1, 1]  # round(linspace(0, 1, 4))
    assert (
        official_frame_selection(2050, max_frames=1024)
        == np.round(np.linspace(0, 2049, 1024)).astype(int).tolist()
    )


def test_frame_sizes_follow_the_three_resizes():
    # 1280x720: long edge to 512 -> 512 x 288 (multiples of 16), already multiples of 32, 144 cells >= 128.
    assert frame_sizes(720, 1280) == [(288, 512), (288, 512), (288, 512)]
    # 1920x800 (2.4:1): 512 x 213.3 -> 512 x 208 (16s) -> 512 x 192 (32s, 6.5 rounds to even 6) ->
    # 96 cells < 128: scaled up by sqrt(131072 / 98304), sides ceiled to 32s -> 224 x 608.
    assert frame_sizes(800, 1920) == [(208, 512), (192, 512), (224, 608)]
    # 320x240 stays, 240 -> 256 (7.5 rounds to 8), 80 cells -> scaled up to 352 x 416.
    assert frame_sizes(240, 320) == [(240, 320), (256, 320), (352, 416)]


# -------------------------------------------------------------------------------------- registry and GPU


def test_registry_entry():
    from model_zoo.variants import get_variant, list_official_variants
    from pipeline.official import VARIANT

    variant = get_variant(VARIANT)
    assert VARIANT in list_official_variants() and variant.hub_id == HUB_ID
    assert "non-commercial" in variant.license
    assert (variant.fps, variant.max_frames, variant.segment_frames, variant.budget) == (2.0, 1024, 8, 4096)
    assert variant.options_dict()["visual_token_budget"] == 4096
    assert dict(variant.choices) == {"visual_token_budget": (4096, 8192)}
    assert variant.options_dict()["base_vlm"] == BASE_VLM


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_cuda(setup):
    """The loading path the Space takes: tensors read straight to the GPU in bf16, relevance in float32."""
    gpu = load_tempo_official(setup.tempo, base_vlm=setup.base, device="cuda", rule=TINY_RULE)
    modules = gpu.model.modules
    assert {p.dtype for p in modules.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in modules.parameters()} == {"cuda"}
    assert gpu.model.relevance.dtype == torch.float32
    run = gpu.run(frames_for(24), 12.0, "Where is the ball?", budget=40, max_new_tokens=4)
    assert all(0.0 < s < 1.0 for s in run.segment_scores) and sum(run.segment_tokens) <= 40
    assert isinstance(run.text, str) and run.prompt.embeds.dtype == torch.bfloat16
