"""Analytic FLOP and KV-cache estimates for a Qwen3-style decoder (and the Qwen3-VL vision tower).

One multiply-add counts 2 FLOPs; norms, rotary, activations, softmax and residual adds are left out (O(n·D),
under 1% here). For one decoder layer seeing n new tokens after p cached ones (prefill: p = 0), with hidden D,
MLP width F, Hq query and Hkv key/value heads of size d:

    projections  2·n·D·(2·Hq·d + 2·Hkv·d)            (q, o: Hq·d wide; k, v: Hkv·d wide)
    MLP          2·n·3·D·F                           (SwiGLU: gate, up, down)
    attention    2·2·Hq·d·(n·p + n(n+1)/2)           (QKᵀ and AV over the causal triangle only,
                                                      as flash/sdpa kernels compute it)

and the LM head 2·D·V for each position whose logits are taken (prefill: the last one). A layer that sees
fewer tokens (XComp's LP-Comp drops visual tokens between layers) is counted at its own length: pass one
length per layer. Cross-check: XComp's own setting (VideoChat-Flash-2B's Qwen2.5-1.5B LLM, 4096 frames x 16
tokens, LP-Comp's per-layer schedule) gives 541 → 227 TFLOPs here, ratio 0.420, against the paper's
448 → 187 (0.417): the same ratio, the absolute numbers counted differently by the authors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderConfig:
    """The numbers of a decoder-only LLM that decide its FLOPs and KV cache."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_text_config(cls, config, name: str = "") -> DecoderConfig:
        """From a transformers text config (``Qwen3VLTextConfig``, ``Qwen3Config``, ...)."""
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            name=name or getattr(config, "model_type", "decoder"),
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads,
            head_dim=head_dim,
            vocab=config.vocab_size,
        )


#: Qwen3-VL-2B's language model, from the published numbers (``/work/shared/QWEN3VL.md``).
QWEN3VL_2B = DecoderConfig("Qwen3-VL-2B", 28, 2048, 6144, 16, 8, 128, 151936)
#: Qwen2.5-1.5B, the LLM of VideoChat-Flash-2B that XComp's 448 → 187 TFLOPs refers to (its config.json).
QWEN25_1_5B = DecoderConfig("Qwen2.5-1.5B (VideoChat-Flash-2B)", 28, 1536, 8960, 12, 2, 128, 151936)


def layer_flops(cfg: DecoderConfig, n: int, *, past: int = 0) -> float:
    """FLOPs of one decoder layer on ``n`` new tokens after ``past`` cached ones (formula in the docstring)."""
    d, f = cfg.hidden, cfg.intermediate
    q, kv = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    projections = 2 * n * d * (2 * q + 2 * kv)
    mlp = 2 * n * 3 * d * f
    attention = 2 * 2 * q * (n * past + n * (n + 1) / 2)
    return float(projections + mlp + attention)


def prefill_flops(cfg: DecoderConfig, lengths: int | Sequence[int], *, logits: int = 1) -> float:
    """FLOPs of a prefill: ``lengths`` tokens at every layer, or one length per layer; LM head on ``logits``."""
    per_layer = [lengths] * cfg.layers if isinstance(lengths, int) else list(lengths)
    if len(per_layer) != cfg.layers:
        raise ValueError(f"{cfg.name} has {cfg.layers} layers, got {len(per_layer)} lengths")
    return sum(layer_flops(cfg, n) for n in per_layer) + 2.0 * cfg.hidden * cfg.vocab * logits


def decode_flops(cfg: DecoderConfig, lengths: int | Sequence[int], new_tokens: int) -> float:
    """FLOPs of ``new_tokens`` greedy steps after a prefill that left ``lengths`` tokens in each layer's cache."""
    per_layer = [lengths] * cfg.layers if isinstance(lengths, int) else list(lengths)
    steps = (layer_flops(cfg, 1, past=n + k) for k in range(new_tokens) for n in per_layer)
    return sum(steps) + 2.0 * cfg.hidden * cfg.vocab * new_tokens


def kv_cache_bytes(cfg: DecoderConfig, lengths: int | Sequence[int], *, bytes_per_value: int = 2) -> int:
    """Keys and values kept after a prefill: 2 · Hkv · d per token per layer (bf16: 2 bytes each)."""
    per_layer = [lengths] * cfg.layers if isinstance(lengths, int) else list(lengths)
    return int(sum(per_layer) * 2 * cfg.kv_heads * cfg.head_dim * bytes_per_value)


@dataclass(frozen=True)
class VisionConfig:
    """Qwen3-VL's vision tower: ViT blocks over 16-px patches of 2-frame groups, then 2x2 mergers."""

    depth: int = 24
    hidden: int = 1024
    intermediate: int = 4096
    out_hidden: int = 2048
    patch: int = 16
    temporal_patch: int = 2
    merge: int = 2
    deepstack_levels: int = 3


QWEN3VL_2B_VISION = VisionConfig()


def vision_flops(cfg: VisionConfig, groups: int, patches_per_group: int) -> float:
    """FLOPs to encode ``groups`` groups of ``patches_per_group`` patches (shared by every method).

    Per patch: the patch embedding 2·(3·tp·p²)·C; per block 2·(4·C² + 2·C·F) for qkv, proj and the two MLP
    matrices, plus attention 2·2·C·N within the patch's own group of N (every group attends only to itself);
    per merged token (4 patches) the merger and each DeepStack merger: 2·(4C·4C + 4C·out).
    """
    c, n = cfg.hidden, patches_per_group
    patches = groups * n
    embed = 2 * 3 * cfg.temporal_patch * cfg.patch**2 * c * patches
    blocks = cfg.depth * patches * (2 * (4 * c * c + 2 * c * cfg.intermediate) + 2 * 2 * c * n)
    merged = patches // cfg.merge**2
    mergers = (1 + cfg.deepstack_levels) * merged * 2 * (16 * c * c + 4 * c * cfg.out_hidden)
    return float(embed + blocks + mergers)


def tflops(flops: float) -> float:
    """FLOPs in TFLOPs, 3 significant digits (benchmark output)."""
    if flops == 0:
        return 0.0
    digits = 2 - int(math.floor(math.log10(abs(flops / 1e12))))
    return round(flops / 1e12, max(digits, 0))
