"""A slow, direct reference of XComp's QC-Comp and LP-Comp as the authors' code runs them, for the tests.

Written from the authors' code (ZheyuAqaZhang/XComp at 61feb11, ``modeling_videochat_flash.py`` ``chat``,
``modeling_qwen2_flash.py`` ``forward``/``get_clip_scores``/``flash_rank_drop``), independently of the
engine: plain Python loops, the library's decoder layers with eager attention called one by one on explicit
masks, attention weights taken from the library's own eager attention (``output_attentions``), positions
counted by walking the rows. Only the prompt itself comes from the backbone (``Qwen3VLBackbone.layout``).
"""

from __future__ import annotations

import math

import torch

from model_zoo.engine_layers import text_model


def lp_tokens(i: int, layers: int, start: int = 16) -> int:
    """The Cosine schedule's tokens per frame after 1-based layer ``i`` (``goal_len``)."""
    return 1 + int((start - 1) * 0.5 * (1 + math.cos(i / layers * math.pi)) + 0.5)


def fresh_positions(layout, rows: list[int]) -> torch.Tensor:
    """[3, len(rows)]: ``rows`` of ``layout`` (ascending) laid out as a prompt of their own: text one step at
    a time from 0; a block's tokens at the block start plus their offset inside it, the text after the block
    past its largest kept offset."""
    positions, visual = layout.positions.tolist(), layout.visual_mask.tolist()
    text_before, last = [], 0
    for r, v in enumerate(visual):
        last = last if v else r
        text_before.append(last)
    out, cursor, block, extent = [], 0, None, 0
    for r in rows:
        if visual[r]:
            offset = [positions[a][r] - positions[0][text_before[r]] - 1 for a in range(3)]
            if block != text_before[r]:  # a new block starts here
                cursor, block, extent = cursor + extent, text_before[r], 0
            out.append([cursor + o for o in offset])
            extent = max(extent, max(offset) + 1)
        else:
            cursor, block, extent = cursor + extent, None, 0
            out.append([cursor] * 3)
            cursor += 1
    return torch.tensor(out, dtype=torch.long).t()


def causal(n: int) -> torch.Tensor:
    return torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]


def lp_keep(layout, alive: list[int], layer: int, layers: int, start: int) -> list[int]:
    """Rows left after 0-based ``layer``: every block (alive visual rows with no text between) keeps its last
    ``2 * N(layer + 2)`` tokens (2 frames per group, ``EXTRA_PARAM_ALWAYS_SUFFIX``)."""
    quota = 2 * lp_tokens(min(layer + 2, layers), layers, start)
    visual = layout.visual_mask.tolist()
    kept, block = [], []
    for r in [*alive, None]:
        if r is not None and visual[r]:
            block.append(r)
            continue
        kept += block[max(0, len(block) - quota) :]
        block = []
        if r is not None:
            kept.append(r)
    return kept


@torch.inference_mode()
def forward_layers(eager_model, layout, *, depth: int, drop=None, probe=None):
    """The prompt through layers 0..depth-1 one by one: causal eager attention, DeepStack after layers 0..2,
    ``drop(layer, alive rows) -> kept rows`` after each layer (LP-Comp: ``lp_keep``) with the rows left laid
    out afresh. ``probe(layer, alive rows, hidden)`` sees each layer's input. Returns (alive rows, hidden
    [1, n, D] after the last layer, the positions each layer used)."""
    decoder = text_model(eager_model)
    alive = list(range(layout.input_ids.numel()))
    hidden = decoder.embed_tokens(layout.input_ids[None]).clone()
    visual_rank = torch.cumsum(layout.visual_mask.long(), 0) - 1
    hidden[0, layout.visual_mask] = layout.embeds
    used = []
    for layer in range(depth):
        if probe is not None:
            probe(layer, alive, hidden)
        positions = fresh_positions(layout, alive)
        used.append(positions)
        rotary = decoder.rotary_emb(hidden, positions[:, None])
        hidden = decoder.layers[layer](hidden, position_embeddings=rotary, attention_mask=causal(len(alive)))
        if layer < len(layout.deepstack):
            rows = [i for i, r in enumerate(alive) if layout.visual_mask[r]]
            hidden = hidden.clone()
            hidden[0, rows] += layout.deepstack[layer][visual_rank[[alive[i] for i in rows]]]
        if drop is not None:
            kept = drop(layer, alive)
            hidden = hidden[:, [alive.index(r) for r in kept]]
            alive = kept
    return alive, hidden, used


def window_clip_scores(
    eager_model, layout, layer: int, alive, hidden, window_rows, clips, queries
) -> list[float]:
    """Layer ``layer`` re-run alone on the window's alive rows at their own positions, unmasked (the
    authors' eager fallback with no mask): mean attention of the query rows on each clip, over heads."""
    decoder = text_model(eager_model)
    rows = [r for r in alive if r in window_rows]
    part = hidden[:, [alive.index(r) for r in rows]]
    rotary = decoder.rotary_emb(part, fresh_positions(layout, rows)[:, None])
    attention = decoder.layers[layer].self_attn
    normed = decoder.layers[layer].input_layernorm(part)
    _, weights = attention(hidden_states=normed, position_embeddings=rotary, attention_mask=None)
    per_row = weights[0].float().mean(0)  # [n, n]: mean over heads
    asking = [i for i, r in enumerate(rows) if r in queries]
    scores = []
    for clip in clips:
        columns = [i for i, r in enumerate(rows) if r in clip]
        scores.append(float(per_row[asking][:, columns].mean()) if columns else float("nan"))
    return scores


def segment_rows(backbone, layout, segments) -> list[list[int]]:
    """Each segment's rows in ``layout``: timestamp text, ``<|vision_start|>``, tokens, ``<|vision_end|>``."""
    out = []
    for segment, columns in zip(segments, layout.segment_columns, strict=True):
        text = backbone.tokenizer(segment.text, add_special_tokens=False)["input_ids"] if segment.text else []
        out.append(list(range(int(columns[0]) - 1 - len(text), int(columns[-1]) + 2)))
    return out


def chunk_scores(backbone, eager_model, segments, question, *, clip, window, stride, band, lone, lp_start):
    """One chunk: per band layer, each clip's mean score over the windows holding it, and per clip how many
    windows held it (``get_clip_scores``, ``segments_{window}_{stride}``; a lone chunk adds one window flush
    with its end)."""
    layout = backbone.layout(segments, question)
    opener = backbone.tokenizer.convert_tokens_to_ids("<|im_start|>")
    ids = layout.input_ids.tolist()
    end = max(i for i, t in enumerate(ids) if t == opener)
    queries = set(range(layout.user_span[0], end))
    spans = segment_rows(backbone, layout, segments)
    outside = list(range(spans[0][0])) + list(range(spans[-1][-1] + 1, end))
    clips = [list(range(i, min(i + clip, len(segments)))) for i in range(0, len(segments), clip)]
    windows = [list(range(p, p + window)) for p in range(0, len(clips), stride) if p + window <= len(clips)]
    if not windows:
        windows = [list(range(len(clips)))]
    elif lone and windows[-1][-1] < len(clips) - 1:
        windows.append(list(range(len(clips) - window, len(clips))))
    values = {layer: [[] for _ in clips] for layer in band}

    def probe(layer, alive, hidden):
        if layer in band:
            for w in windows:
                rows = set(outside) | {r for c in w for s in clips[c] for r in spans[s]}
                clip_rows = [{r for s in clips[c] for r in layout.segment_columns[s].tolist()} for c in w]
                got = window_clip_scores(eager_model, layout, layer, alive, hidden, rows, clip_rows, queries)
                for c, score in zip(w, got, strict=True):
                    values[layer][c].append(score)

    layers = len(text_model(eager_model).layers)
    drop = None if lp_start is None else lambda layer, alive: lp_keep(layout, alive, layer, layers, lp_start)
    forward_layers(eager_model, layout, depth=max(band) + 1, drop=drop, probe=probe)
    held = [sum(c in w for w in windows) for c in range(len(clips))]
    return {layer: [sum(v) / len(v) if v else float("nan") for v in values[layer]] for layer in band}, held


@torch.inference_mode()
def group_scores(
    backbone,
    eager_model,
    blocks,
    question,
    *,
    clip,
    window,
    stride,
    chunk,
    chunk_stride,
    chunkings,
    shift,
    band,
    lp_start=16,
):
    """Every group's score by the authors' rule (``chat``): chunks of ``chunk`` groups every ``chunk_stride``,
    the chunking repeated ``chunkings`` times shifted by ``shift`` more each time, cyclic; a clip held by
    fewer windows than the most in its chunk is marked 1e9 and skipped; per group and layer the mean of what
    its chunks gave, summed over the band."""
    total = len(blocks)
    if total <= chunk:
        starts = [0]
    else:
        rounds = (total + chunk_stride - 1) // chunk_stride
        starts = [(i * chunk_stride + (i // rounds) * shift) % total for i in range(chunkings * rounds)]
    per_group = {layer: [[] for _ in range(total)] for layer in band}
    for start in starts:
        members = [(start + j) % total for j in range(min(chunk, total))]
        scores, held = chunk_scores(
            backbone,
            eager_model,
            [blocks[g] for g in members],
            question,
            clip=clip,
            window=window,
            stride=stride,
            band=band,
            lone=len(starts) == 1,
            lp_start=lp_start,
        )
        for layer in band:
            for j, g in enumerate(members):
                value = scores[layer][j // clip]
                if len(starts) > 1 and held[j // clip] < max(held):
                    value = 1e9
                if value == value and value < 1000:
                    per_group[layer][g].append(value)
    return [sum(sum(v[g]) / len(v[g]) for v in per_group.values()) for g in range(total)]
