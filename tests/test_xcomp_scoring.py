"""XComp's QC-Comp on the tiny backbone scores and selects exactly as the authors' rule, computed directly.

The reference (``tests/xcomp_reference.py``) follows the authors' code step by step with plain loops and the
library's eager attention: chunks (cyclic, repeated and shifted), the prompt through the layers with LP-Comp's
drops and fresh positions, at each band layer the layer re-run on each window's own rows without a mask,
clip scores from the attention weights, edge clips skipped, means over windows and chunks, sums over the
band. XComp's scores (through the engine's probe over cached prefixes) must equal it, and so must the frames
it keeps. Small sizes (clips of one group, windows of four clips) make a short clip need several chunks.
"""

from __future__ import annotations

import pytest
import torch

from compressors.base import build_segments
from compressors.xcomp import XComp, merge_group, qc_layers, select_groups
from model_zoo import TINY, load_backbone
from tests import xcomp_reference as ref
from tests.test_compressors_e2e import _clip

QUESTION = "What colour is the square?"


@pytest.fixture(scope="module")
def video():
    backbone = load_backbone(TINY, device="cpu")
    times = [t / 2.0 for t in range(22)]  # 11 groups
    tokens = backbone.encode(_clip(22), times)
    return tokens, build_segments(times, num_groups=tokens.embeds.shape[0])


def blocks_of(tokens, method: XComp) -> list:
    per_group = min(tokens.embeds.shape[1], 2 * method.tokens_per_frame)
    return [merge_group(tokens, g, per_group) for g in range(tokens.embeds.shape[0])]


#: Clips of one group, windows of 4 clips every 2; chunks of 8 groups every 4 whose inner 4 clips (held by
#: two windows) tile the video, as the authors' 576-frame chunks every 512 do; two chunkings, 3 groups apart.
CYCLIC = dict(clip_frames=2, window_frames=8, window_stride=4, chunk_frames=16, chunk_stride=8, chunkings=2)
#: The whole 11-group video as one chunk, windows of 4 clips every 3: the last one sits flush with the end.
LONE = dict(clip_frames=2, window_frames=8, window_stride=6, chunk_frames=40, chunk_stride=40)


@pytest.mark.parametrize(
    "options", [CYCLIC, LONE, {}], ids=["cyclic-chunks", "one-chunk-with-a-flush-window", "defaults"]
)
def test_scores_and_kept_groups_equal_the_authors_rule_computed_directly(sdpa, eager, video, options):
    tokens, segments = video
    method = XComp(**options)
    blocks = blocks_of(tokens, method)
    plan = method.plan(tokens.frames_per_group)
    ours = method.scores(blocks, QUESTION, sdpa, tokens.frames_per_group)
    expected = ref.group_scores(
        sdpa,
        eager.model,
        blocks,
        QUESTION,
        clip=plan.clip,
        window=plan.window,
        stride=plan.stride,
        chunk=plan.chunk,
        chunk_stride=plan.chunk_stride,
        chunkings=plan.chunkings,
        shift=plan.shift,
        band=qc_layers(sdpa.num_layers),
    )
    torch.testing.assert_close(ours.groups, torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-7)
    budget = 4 * blocks[0].num_tokens
    result = method.compress(tokens, segments, QUESTION, budget=budget, hooks=sdpa)
    order = sorted(range(len(expected)), key=lambda g: -expected[g])  # stable: ties keep the earlier
    assert [s.source[1] for s in result.segments] == sorted(order[:4])
    assert select_groups(ours.groups, 4) == sorted(order[:4])
