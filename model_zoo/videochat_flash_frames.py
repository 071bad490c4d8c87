"""Which frames VideoChat-Flash and XComp answer from: the authors' sampler, the budget, QC-Comp's segments
and its frame choice.

Authors' files (github.com/ZheyuAqaZhang/XComp, ``lmms-eval_videochat/benchmark_data/model/
VideoChat-Flash-Qwen2_5-2B_res448_ver7/``): ``mm_utils.py`` ``get_frame_indices`` l. 58-150 (``dynamic_fps1``:
8 x floor(fps x duration / 8) frames within [min, max], the middle frame of equal intervals) and
``load_video`` l. 398-441 (repeats up to the minimum); ``modeling_videochat_flash.py`` ``chat`` l. 1274-1353
(QC-Comp's cyclic segments and the per-frame aggregation of their clip scores, top ``EXTRA_PARAM_SELECT_AND_DROP``
frames back in temporal order); ``my_scripts_XComp/run.sh`` (fps 8, at least 128 and at most 1024 frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_zoo.umt import TOKENS_PER_FRAME

FRAME_UNIT = 8  # ``local_num_frames=8`` in ``load_video``: frame counts are multiples of 8
CLIP_FRAMES = 8  # QC-Comp scores clips of 8 frames (``num_clips = num_image_token_lens // 128``)


class FlashRunError(ValueError):
    """A run the model cannot do (the message says what it got and what is valid)."""


@dataclass(frozen=True)
class SamplingRule:
    """``get_frame_indices(sample='dynamic_fps1')``: fps, frame bounds; ``repeat_to_min`` pads short videos
    to ``min_frames`` by repeating (ver7 ``load_video``, which XComp runs; not in the model card's code)."""

    fps: int = 1
    min_frames: int = 64
    max_frames: int = 512  # ``chat(max_num_frames=512)``
    repeat_to_min: bool = False


VIDEOCHAT_FLASH_SAMPLING = SamplingRule()  # the model card's ``chat`` and ``load_video``
XCOMP_SAMPLING = SamplingRule(fps=8, min_frames=128, max_frames=1024, repeat_to_min=True)  # run.sh


def frame_count(duration: float, available: int, rule: SamplingRule) -> int:
    """How many frames the authors sample from ``available`` (``get_frame_indices``, dynamic_fps1)."""
    if available < FRAME_UNIT:
        return FRAME_UNIT
    low = rule.min_frames if rule.min_frames <= available else available // FRAME_UNIT * FRAME_UNIT
    units = int(rule.fps * duration // FRAME_UNIT)
    count = min(FRAME_UNIT * max(units, 1), rule.max_frames)
    if count > available:
        count = available // FRAME_UNIT * FRAME_UNIT
    return max(low, count)


def middle_indices(count: int, available: int) -> list[int]:
    """The middle frame of each of ``count`` equal intervals of ``available`` frames (``sample='middle'``),
    the last repeated up to ``count``; ``i * available // 8`` when fewer than 8 exist."""
    if available < FRAME_UNIT:
        return [i * available // FRAME_UNIT for i in range(FRAME_UNIT)]
    edges = np.linspace(0, available, min(count, available) + 1).astype(int)
    picked = [int(a + b - 1) // 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return picked + picked[-1:] * (count - len(picked))


def official_frame_indices(duration: float, available: int, rule: SamplingRule) -> list[int]:
    """Indices into ``available`` evenly spaced frames the authors would feed (``load_video``)."""
    picked = middle_indices(frame_count(duration, available, rule), available)
    if rule.repeat_to_min and len(picked) < rule.min_frames:
        picked = [picked[int(i * len(picked) / rule.min_frames)] for i in range(rule.min_frames)]
    return picked


def frames_for_budget(budget: int) -> int:
    """k = the most frames a budget of ``budget`` visual tokens allows, in whole 8-frame units."""
    k = budget // TOKENS_PER_FRAME // FRAME_UNIT * FRAME_UNIT
    if k < FRAME_UNIT:
        raise FlashRunError(f"a budget of {budget} tokens is below one 8-frame unit (128 tokens)")
    return k


def qc_segments(count: int, *, stride: int, extra: int, duplicates: int) -> list[list[int]]:
    """QC-Comp's segments: frame indices (into ``count`` frames) of ``stride + extra`` frames each, cyclic."""
    rounds = -(-count // stride)
    out = []
    for i in range(duplicates * rounds):
        d = i // rounds
        start = (i * stride + d * (FRAME_UNIT // duplicates) + d * (stride // duplicates)) % count
        out.append([(start + t) % count for t in range(stride + extra)])
    return out


def select_frames(segments, scores, count: int, keep: int) -> tuple[list[int], list[float]]:
    """The authors' frame choice: per layer, a frame's mean over the segments' scores of its clip (edge clips
    and NaN left out); summed over the layers; the best ``keep`` (ties: earlier), in order. Returns them and
    every frame's score (-inf when no segment scored it)."""
    layers = list(scores[0]) if scores else []
    total = [0.0] * count
    for layer in layers:
        seen: list[list[float]] = [[] for _ in range(count)]
        for segment, by_layer in zip(segments, scores, strict=True):
            for t, f in enumerate(segment):
                value = by_layer[layer][t // CLIP_FRAMES]
                if value == value and value < 1000:
                    seen[f].append(value)
        total = [s + (sum(v) / len(v) if v else -float("inf")) for s, v in zip(total, seen, strict=True)]
    order = sorted(range(count), key=lambda f: -total[f])
    return sorted(order[:keep]), total
