"""VideoChat-Flash's visual side, rebuilt natively: frame preprocessing, the UMT-L video encoder and the ToMe
projector that leaves 16 tokens per frame.

Paper: Li et al., "VideoChat-Flash: Hierarchical Compression for Long-Context Video Modeling", arXiv
2501.00574. Authors' code (read for every fact below, none of its lines used): the Hub model's remote code as
stored in github.com/ZheyuAqaZhang/XComp under
``lmms-eval_videochat/benchmark_data/model/VideoChat-Flash-Qwen2_5-2B_res448_ver7/`` (``vision_tower_builder.py``,
``mm_projector_builder.py``), the same modules as github.com/OpenGVLab/VideoChat-Flash
``llava-train_videochat/llava/model/multimodal_encoder/umt/vit.py`` and ``multimodal_projector/tome16_mlp_hd64.py``.

Preprocessing (``UMTImageProcessor.preprocess``, vision_tower_builder.py l. 461-501): every frame is resized to
448 x 448 (no crop, aspect ratio not kept) with PIL bicubic, rescaled by 1/255 and normalised with the ImageNet
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).

Encoder (``build_vit`` l. 530-548, ``PretrainVisionTransformerEncoder`` l. 286-366): frames go in clips of
``mm_local_num_frames`` (4 for the 2B model); a Conv3d with kernel (1, 16, 16) makes 28 x 28 patches per frame
(t-major order); a fixed sinusoidal table is added (``get_sinusoid_encoding_table2`` l. 239-282: built for the
pretraining's 4 frames of 14 x 14, resized bicubically to 28 x 28, then linearly in time when the clip length is
not 4); 24 + (-2) + 1 = 23 pre-norm blocks (LayerNorm eps 1e-6; attention with q/v biases only, 16 heads; MLP
4x with exact GELU), then a final LayerNorm (eps 1e-12). Attention spans the whole clip.

Projector (``ToMe16_mlp_hd64``, mm_projector_builder.py l. 81-187): per clip of 4 frames the 4 x 784 encoder
tokens are merged by ToMe (``bipartite_soft_matching`` l. 6-59, ``merge_wavg`` l. 62-76) to 16 x 4 = 64 tokens,
removing at each step min(p // 2, p - 64) tokens (3136 -> 1568 -> 784 -> 392 -> 196 -> 98 -> 64); the matching
metric is the features averaged over the encoder's 16 heads (64 dims, "hd64"); then Linear -> GELU -> Linear
into the LLM width. A merged clip is laid out [unmerged A tokens by descending match score, then all B tokens].

Shape letters: T frames, C clips of F frames, P = 784 patches per frame, E encoder width, D LLM width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model_zoo.preprocess import VideoPreprocessConfig, normalize_frames, resize_frames

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = VideoPreprocessConfig(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
TOKENS_PER_FRAME = 16  # ``num_tome_tokens = 16 * num_frames`` (mm_projector_builder.py l. 153)
PRETRAIN_FRAMES = 4  # ``ckpt_num_frame=4`` (vision_tower_builder.py l. 392): the table's pretraining length
PRETRAIN_SIDE = 14  # ``P = 14 # checkpoint size`` (l. 256): 224 px / 16


@dataclass(frozen=True)
class UMTConfig:
    """The encoder's sizes. Defaults: UMT-L as ``build_vit`` hard-codes it (nothing of it is in config.json
    except the image size, from ``mm_vision_tower`` "umt-hd" -> 448, and ``mm_local_num_frames``)."""

    image_size: int = 448
    patch_size: int = 16
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    frames: int = 4  # frames per clip: mm_local_num_frames
    select_layer: int = -2  # mm_vision_select_layer: blocks run = depth + select_layer + 1

    @property
    def blocks(self) -> int:
        return self.depth + self.select_layer + 1

    @property
    def side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def patches(self) -> int:
        """P, tokens per frame."""
        return self.side**2


# ------------------------------------------------------------------------------------------ preprocessing


def preprocess_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """[T, H, W, 3] uint8 RGB -> [T, 3, size, size] float32: PIL bicubic resize, /255 (in float64, as
    transformers' ``rescale``), ImageNet ``(x - mean) / std`` in float32 (``model_zoo.preprocess``'s own)."""
    return torch.from_numpy(normalize_frames(resize_frames(frames, (size, size)), IMAGENET))


# ---------------------------------------------------------------------------------------------- encoder


def sinusoid_table(positions: int, width: int) -> torch.Tensor:
    """[positions, width] float32: sin on even, cos on odd dims of ``pos / 10000^(2 (j // 2) / width)``,
    computed in float64 as the authors do with numpy (``get_position_angle_vec``)."""
    pos = np.arange(positions, dtype=np.float64)[:, None]
    div = np.power(10000, 2 * (np.arange(width) // 2) / width)[None, :]
    table = pos / div
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)


def video_position_table(config: UMTConfig) -> torch.Tensor:
    """[1, F * P, E]: the pretraining table (4 frames of 14 x 14) resized to the config's grid and clip length."""
    t0, s0, e = PRETRAIN_FRAMES, PRETRAIN_SIDE, config.width
    table = sinusoid_table(t0 * s0 * s0, e).reshape(t0, s0, s0, e)
    if config.side != s0:
        grid = F.interpolate(
            table.permute(0, 3, 1, 2), size=(config.side,) * 2, mode="bicubic", align_corners=False
        )
        table = grid.permute(0, 2, 3, 1)  # [t0, side, side, E]
    if config.frames != t0:
        series = table.permute(1, 2, 3, 0).reshape(-1, e, t0)  # [side * side, E, t0]
        series = F.interpolate(series, size=config.frames, mode="linear")
        table = series.reshape(config.side, config.side, e, config.frames).permute(3, 0, 1, 2)
    return table.reshape(1, -1, e)


class PatchEmbed(nn.Module):
    """``patch_embed.proj``: Conv3d with kernel (1, p, p) (tubelet 1)."""

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv3d(3, config.width, kernel_size=(1, p, p), stride=(1, p, p))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] -> [B, F * P, E], t-major then row-major."""
        return self.proj(pixels).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """``attn``: one bias-free ``qkv`` projection plus separate ``q_bias`` and ``v_bias`` (k has none)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, no mask
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (no layer scale: ``init_values=0``)."""

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=1e-6)
        self.attn = Attention(config.width, config.heads)
        self.norm2 = nn.LayerNorm(config.width, eps=1e-6)
        self.mlp = Mlp(config.width, int(config.width * config.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UMTEncoder(nn.Module):
    """``PretrainVisionTransformer.encoder``; its state dict names are the checkpoint's after
    ``model.vision_tower.vision_tower.encoder.``. The position table is not a weight (recomputed here)."""

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.blocks))
        self.vision_layernorm = nn.LayerNorm(config.width, eps=1e-12)
        self.register_buffer("pos_embed", video_position_table(config), persistent=False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """[C, F, 3, H, W] -> [C, F * P, E]."""
        if clips.shape[1] != self.config.frames:
            raise ValueError(f"UMT clips hold {self.config.frames} frames, got {clips.shape[1]}")
        x = self.patch_embed(clips.permute(0, 2, 1, 3, 4))
        x = x + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.vision_layernorm(x)


# -------------------------------------------------------------------------------------------- projector


def merge_steps(tokens: int, target: int) -> list[int]:
    """Tokens removed at each ToMe step: ``p // 2`` while more than half must go, then the rest
    (``ToMe16_mlp_hd64.merge_tokens``). 3136 -> 64: [1568, 784, 392, 196, 98, 34]."""
    if tokens <= target:
        raise ValueError(f"ToMe needs more tokens than its target, got {tokens} <= {target}")
    steps = []
    while tokens - target > tokens // 2:
        steps.append(tokens // 2)
        tokens -= tokens // 2
    return [*steps, tokens - target]


def bipartite_merge(x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, r: int):
    """One ToMe step on [B, N, E] tokens with sizes [B, N, 1]: even tokens (A) may merge into their most similar
    odd token (B); the ``r`` A tokens with the highest similarity do, by size-weighted average.

    Returns ([B, N - r, E], [B, N - r, 1]): unmerged A tokens ordered by descending similarity, then B.
    """
    with torch.no_grad():
        unit = metric / metric.norm(dim=-1, keepdim=True)
        best, partner = (unit[:, ::2] @ unit[:, 1::2].transpose(-1, -2)).max(dim=-1)
        order = best.argsort(dim=-1, descending=True)[..., None]
        kept, merged = order[:, r:], order[:, :r]
        into = partner[..., None].gather(1, merged)

    def merge(values: torch.Tensor) -> torch.Tensor:
        a, b = values[:, ::2], values[:, 1::2]
        c = values.shape[-1]
        stay = a.gather(1, kept.expand(-1, -1, c))
        moved = a.gather(1, merged.expand(-1, -1, c))
        return torch.cat([stay, b.scatter_add(1, into.expand(-1, -1, c), moved)], dim=1)

    total = merge(size)
    return merge(x * size) / total, total


class ToMeProjector(nn.Module):
    """``mm_projector``: ToMe to ``16 * F`` tokens per clip, then ``mlp`` (Linear, GELU, Linear).

    ``heads`` are the encoder's: the matching metric averages the features over them (E / heads dims).
    """

    def __init__(self, width: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def merge(self, x: torch.Tensor, target: int) -> torch.Tensor:
        """[C, N, E] -> [C, target, E] by repeated ``bipartite_merge``."""
        size = torch.ones_like(x[..., :1])
        for r in merge_steps(x.shape[1], target):
            metric = x.reshape(*x.shape[:2], self.heads, -1).mean(2)
            x, size = bipartite_merge(x, size, metric, r)
        return x

    def forward(self, features: torch.Tensor, frames_per_clip: int) -> torch.Tensor:
        """[C, F * P, E] encoder output -> [C, 16 * F, D]."""
        return self.mlp(self.merge(features, TOKENS_PER_FRAME * frames_per_clip))


def clip_count(frames: int, frames_per_clip: int) -> int:
    """Clips of a ``frames``-long input; refuses a count the projector cannot reshape."""
    if frames % frames_per_clip:
        raise ValueError(f"{frames} frames do not split into clips of {frames_per_clip}")
    return frames // frames_per_clip


def encode_frames(
    encoder: UMTEncoder, projector: ToMeProjector, pixels: torch.Tensor, *, batch: int = 8
) -> torch.Tensor:
    """[T, 3, H, W] preprocessed frames -> [T * 16, D] LLM inputs, clips of F consecutive frames, ``batch``
    clips per encoder pass (the authors batch differently; each clip is computed alone either way)."""
    f = encoder.config.frames
    clips = pixels.reshape(clip_count(pixels.shape[0], f), f, *pixels.shape[1:])
    out = [projector(encoder(clips[i : i + batch]), f) for i in range(0, clips.shape[0], batch)]
    return torch.cat(out).reshape(-1, out[0].shape[-1])
