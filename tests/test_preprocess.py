"""Our video preprocessing equals transformers' own rules and its image processor on still frames."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from model_zoo.preprocess import (
    PreprocessError,
    VideoPreprocessConfig,
    clip_pixel_bounds,
    library_preprocess,
    preprocess_video,
    smart_resize,
    torchvision_available,
)

# Imported by path: the package's lazy attribute is a torchvision-gated placeholder, the module itself is not.
library_video = importlib.import_module("transformers.models.qwen3_vl.video_processing_qwen3_vl")

CONFIG = VideoPreprocessConfig(min_pixels=8 * 32 * 32, max_pixels=64 * 32 * 32, max_frame_tokens=12)


def still(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_processor_for(num_frames: int, config: VideoPreprocessConfig) -> Qwen2VLImageProcessorPil:
    """The library's image processor with the per-frame share of the clip's pixel bounds."""
    min_pixels, max_pixels = clip_pixel_bounds(num_frames, config)
    return Qwen2VLImageProcessorPil(
        patch_size=config.patch_size,
        merge_size=config.merge_size,
        temporal_patch_size=config.temporal_patch_size,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
        size={"shortest_edge": min_pixels // num_frames, "longest_edge": max_pixels // num_frames},
    )


@pytest.mark.parametrize("num_frames", [2, 3, 8, 64, 1000])
@pytest.mark.parametrize(
    "height,width", [(20, 300), (90, 160), (360, 640), (1080, 1920), (33, 33), (720, 500)]
)
def test_smart_resize_equals_the_library_rule(num_frames, height, width):
    for min_pixels, max_pixels in [(4096, 25165824), (128 * 32 * 32, 768 * 32 * 32), (2048, 64 * 1024)]:
        ours = smart_resize(
            num_frames,
            height,
            width,
            factor=32,
            temporal_factor=2,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
        theirs = library_video.smart_resize(
            num_frames,
            height,
            width,
            temporal_factor=2,
            factor=32,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
        assert ours == theirs


def test_per_frame_cap_follows_the_library_formula():
    config = VideoPreprocessConfig(min_pixels=4096, max_pixels=25165824, max_frame_tokens=768)
    for t in (2, 16, 1024):
        per_frame = max(min(768 * 32 * 32, 25165824 // t), int(4096 * 1.05))
        assert clip_pixel_bounds(t, config) == (4096, per_frame * t)
    uncapped = VideoPreprocessConfig(min_pixels=4096, max_pixels=25165824, cap_pixels_per_frame=False)
    assert clip_pixel_bounds(1024, uncapped) == (4096, 25165824)


@pytest.mark.parametrize(
    "height,width",
    [(90, 150), (64, 64), (20, 40), (400, 300)],  # neither bound, exact multiples, scaled up, scaled down
)
@pytest.mark.parametrize("num_frames", [2, 4])
def test_video_of_a_still_equals_the_image_processor(height, width, num_frames):
    image = still(height, width)
    ours = preprocess_video(np.stack([image] * num_frames), list(range(num_frames)), CONFIG)
    theirs = image_processor_for(num_frames, CONFIG)(images=[image], return_tensors="pt")
    _, gh, gw = theirs["image_grid_thw"][0].tolist()
    assert ours.video_grid_thw.tolist() == [[num_frames // 2, gh, gw]]
    assert ours.frame_size == (gh * 16, gw * 16)
    # The image processor duplicates the still over the temporal patch; every group of ours is that image.
    expected = theirs["pixel_values"].repeat(num_frames // 2, 1)
    assert torch.equal(ours.pixel_values_videos, expected)


def test_odd_frame_counts_repeat_the_last_frame_and_its_time():
    frames = np.stack([still(64, 96, seed=i) for i in range(3)])
    padded = preprocess_video(frames, [0.0, 1.0, 2.0], CONFIG)
    explicit = preprocess_video(np.concatenate([frames, frames[-1:]]), [0.0, 1.0, 2.0, 2.0], CONFIG)
    assert padded.padded == 1 and padded.num_frames == 3
    assert torch.equal(padded.pixel_values_videos, explicit.pixel_values_videos)
    assert padded.group_times.tolist() == [0.5, 2.0]


def test_group_times_are_the_mean_of_each_pair_of_frames():
    times = [0.0, 0.5, 1.25, 2.0, 7.0, 9.0]
    out = preprocess_video(np.stack([still(32, 32)] * 6), times, CONFIG)
    assert out.group_times.dtype == torch.float64
    assert out.group_times.tolist() == [0.25, 1.625, 8.0]


def test_patches_are_laid_out_group_then_merged_row_major():
    """Each frame pixel lands where the library's patchify puts it: (group, merged row, merged col, 2x2)."""
    config = VideoPreprocessConfig(
        min_pixels=32 * 32, max_pixels=10**9, image_mean=(0, 0, 0), image_std=(1, 1, 1)
    )
    frames = np.zeros((2, 64, 96, 3), dtype=np.uint8)
    frames[1, 40, 70, 2] = 255  # frame 1, row 40, col 70, blue
    values = preprocess_video(frames, [0, 1], config).pixel_values_videos
    # patch row 2 (rows 32..47), patch col 4 (cols 64..79) → merged (1, 2), in-block (0, 0)
    merged_w = 96 // 32
    index = (1 * merged_w + 2) * 4 + 0
    channel, t, py, px = 2, 1, 40 - 32, 70 - 64
    flat = ((channel * 2 + t) * 16 + py) * 16 + px
    assert values[index, flat] == 1.0
    assert float(values.sum()) == 1.0


def test_config_reads_the_checkpoint_json_keys():
    config = VideoPreprocessConfig.from_dict(
        {
            "size": {"shortest_edge": 4096, "longest_edge": 25165824},
            "patch_size": 16,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        }
    )
    assert (config.min_pixels, config.max_pixels, config.factor) == (4096, 25165824, 32)
    assert config.image_mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "frames,times",
    [
        (np.zeros((2, 32, 32, 3), dtype=np.float32), [0, 1]),  # not uint8
        (np.zeros((2, 32, 32), dtype=np.uint8), [0, 1]),  # no channels
        (np.zeros((0, 32, 32, 3), dtype=np.uint8), []),  # empty
        (np.zeros((2, 32, 32, 3), dtype=np.uint8), [0]),  # one timestamp short
    ],
)
def test_bad_frames_raise_a_clear_error(frames, times):
    with pytest.raises(PreprocessError):
        preprocess_video(frames, times, CONFIG)


def moving_video(num_frames: int, height: int = 180, width: int = 320) -> np.ndarray:
    """[T, H, W, 3] uint8: a colour gradient with a bright square crossing it, a few pixels a frame."""
    rows, cols = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(num_frames):
        img = np.stack([cols * 255 // width, rows * 255 // height, (cols + rows) % 256], axis=-1)
        x = 8 + 23 * i
        img[40:90, x : x + 50] = (250, 240, 20)
        frames.append(img.astype(np.uint8))
    return np.stack(frames)


@pytest.mark.skipif(
    not torchvision_available(),
    reason="transformers' video processors need torchvision (a Space has it; the CPU wheels here have none)",
)
@pytest.mark.parametrize("num_frames", [8, 9])
def test_the_checkpoints_own_video_processor_and_our_port_agree_on_moving_video(num_frames):
    """Where torchvision works, the library's Qwen3VLVideoProcessor prepares the frames (issue 16.3); our port
    stands in elsewhere. Same grid, sizes, padding and group times; pixels within the two resize kernels'
    rounding (torchvision's antialiased bicubic on tensors vs PIL's), in uint8 levels."""
    processor = library_video.Qwen3VLVideoProcessor(
        size={"shortest_edge": CONFIG.min_pixels, "longest_edge": CONFIG.max_pixels},
        max_video_tokens=CONFIG.max_frame_tokens,
        image_mean=list(CONFIG.image_mean),
        image_std=list(CONFIG.image_std),
    )
    frames, times = moving_video(num_frames), [0.5 * i for i in range(num_frames)]
    ours = preprocess_video(frames, times, CONFIG)
    theirs = library_preprocess(processor, frames, times, CONFIG)
    assert torch.equal(theirs.video_grid_thw, ours.video_grid_thw)
    assert (theirs.frame_size, theirs.padded, theirs.num_frames) == (ours.frame_size, ours.padded, num_frames)
    assert torch.equal(theirs.group_times, ours.group_times)
    levels = (theirs.pixel_values_videos - ours.pixel_values_videos).abs() * 255 * CONFIG.image_std[0]
    assert levels.mean() < 1.0 and torch.quantile(levels.flatten(), 0.999) <= 3
