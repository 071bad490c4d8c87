"""A tiny random-weight Qwen3-VL for offline tests and smoke runs.

The real classes (``Qwen3VLForConditionalGeneration``) with a hand-written small config: 4 decoder layers of
hidden 128 (GQA 4 query / 2 key-value heads), a 3-block vision tower whose three blocks feed the three
DeepStack levels, patch 16 / spatial merge 2 / temporal patch 2 like the real checkpoints. The tokenizer is a
byte-level BPE trained in memory on a few sentences; it carries the real Qwen special-token strings and a
chat template that renders messages the way Qwen3-VL's own template does (no default system prompt; a video
item becomes ``<|vision_start|><|video_pad|><|vision_end|>`` in place, text items follow verbatim).

Nothing touches the network; ``build_tiny(seed)`` is deterministic and cached per seed.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from model_zoo.preprocess import VideoPreprocessConfig

#: The real Qwen special tokens, in the order they get ids (right after the BPE vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Sentences the BPE is trained on: chat words, the timestamp marker's pieces, Tempo's relevance prompt.
#: "Yes" and "No" are repeated so that each becomes one token (Tempo reads their logits).
_CORPUS = (
    "Yes No Yes No Yes No Yes No Yes No Yes No",
    "<0.5 seconds> <1.5 seconds> <12.0 seconds> <3.5 seconds> 0 1 2 3 4 5 6 7 8 9 . ,",
    "What happens in the video? Describe the video. What colour is the square? Where is the ball?",
    "You are a query-conditioned visual compressor. Answer exactly 'Yes' or 'No'.",
    "Query: is this segment relevant to the Query? The red square moves from left to right.",
    "system user assistant A person walks a dog in the park, then the camera turns to the sky.",
)

#: Renders like Qwen3-VL-Instruct's template: optional system turn, user content items in order (video →
#: its single placeholder triple, text verbatim), assistant turns, then ``<|im_start|>assistant\n``.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

#: Small frames so CPU tests are fast: at most 16 merged tokens (128 x 128 px) per frame.
TINY_PREPROCESS = VideoPreprocessConfig(
    min_pixels=2 * 32 * 32,
    max_pixels=1024 * 32 * 32,
    max_frame_tokens=16,
)

NUM_LAYERS = 4


@functools.cache
def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with the real Qwen special-token strings and a Qwen3-VL-style chat template."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def config_for(
    tokenizer: PreTrainedTokenizerFast, text: dict, vision: dict, *, tie_word_embeddings: bool
) -> Qwen3VLConfig:
    """A ``Qwen3VLConfig`` from hand-written text and vision settings, its image, video and vision-delimiter
    token ids read from ``tokenizer`` so that the two always agree."""
    ids = {
        token: tokenizer.convert_tokens_to_ids(token)
        for token in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie_word_embeddings,
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast) -> Qwen3VLConfig:
    """The hand-written config; special-token ids are read from ``tokenizer`` so the two always agree."""
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "max_position_embeddings": 4096,
        # Interleaved M-RoPE as in the real checkpoints, scaled to head_dim 32 (sections sum to 16).
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        },
        "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        # Larger than the 0.02 default so that greedy decoding is decisive (random logits are not near-ties).
        "initializer_range": 0.08,
    }
    vision = {
        "depth": 3,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 4,
        "out_hidden_size": 128,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0, 1, 2],
    }
    return config_for(tokenizer, text, vision, tie_word_embeddings=False)


@functools.cache
def build_tiny(seed: int = 0) -> tuple[Qwen3VLForConditionalGeneration, PreTrainedTokenizerFast]:
    """A random-weight Qwen3-VL and its tokenizer, on CPU in float32, eval mode, sdpa attention.

    Deterministic under ``seed`` (the global RNG is left untouched). Cached per seed: callers share one
    instance, so a test that must change it (another attention implementation, other weights) works on a
    ``copy.deepcopy``.
    """
    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    model.eval()
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[1], do_sample=False)
    return model, tokenizer
