"""What stock transformers builds for a Qwen3-VL video, to compare ours against."""

from __future__ import annotations

import types

import torch
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.video_utils import VideoMetadata


def video_expansion(grid_thw: torch.Tensor, metadata: VideoMetadata) -> str:
    """The text Qwen3VLProcessor puts in place of one video's placeholder (timestamps, vision start and end,
    one ``<|video_pad|>`` per token) for ``grid_thw`` [1, 3] and the video's ``metadata``."""
    processor = types.SimpleNamespace(
        video_processor=types.SimpleNamespace(merge_size=2, temporal_patch_size=2),
        vision_start_token="<|vision_start|>",
        vision_end_token="<|vision_end|>",
        video_token="<|video_pad|>",
    )
    processor._calculate_timestamps = lambda *a, **k: Qwen3VLProcessor._calculate_timestamps(
        processor, *a, **k
    )
    return Qwen3VLProcessor.replace_video_token(
        processor, {"video_grid_thw": grid_thw, "video_metadata": [metadata]}, 0
    )
