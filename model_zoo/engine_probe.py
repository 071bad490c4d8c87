"""QC-Comp's attention probe (XComp, arXiv 2604.14149), computed as the authors' code computes it.

The authors (``modeling_qwen2_flash.py``, ``get_clip_scores`` with score type ``segments_8_4``, ~1287-1348;
called from the forward at every layer, ~1111-1124) score clips *inside* the forward over a chunk of the
video: at a layer, they take that layer's own input hidden states (which have attended over the whole chunk,
LP-Comp's drops included), cut out each window [rows before the video, the window's clips, the rows after the
video up to the assistant turn], re-run the layer alone on it with positions counted from 0, and read the
attention of the query rows (the question and its closing ``<|im_end|>\\n``) on each clip's tokens, averaged
over heads, query rows and the clip's tokens. Their re-run passes the chunk forward's attention mask, which
is None there (sdpa, no padding), so the layer's eager attention runs unmasked: a query row also attends to
the query rows after it. Ours does the same, in float32.

What is ours: the windows' positions are Qwen3-VL's M-RoPE layout of the window's rows (``relayout``, the
3-D form of their ``arange``), and the layer is re-run only as far as the scores need it (the window's
queries and keys from the layer's own norm, projections, q/k norms and rotary tables): attention
probabilities of the query rows alone, never a whole L x L map, with any attention kernel. The rows before
the question are question-independent: they run once into a ``ScoringPrefix`` (their caches and, at the
probed layers, their keys before rotary), and each question runs only its own rows over it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import rotate_half

from model_zoo import engine
from model_zoo.engine_layers import EngineError, KeepRule, SequenceState, relayout, text_model
from model_zoo.prompt import PromptLayout


@dataclass(frozen=True)
class Window:
    """One window's own sequence: ``rows`` [n] the prompt rows it is made of (ascending: the rows before the
    video, the window's segments, the rows after the video up to the end of the query rows); ``clips`` per
    clip the rows of its visual tokens (a subset of ``rows``)."""

    rows: torch.Tensor
    clips: tuple[torch.Tensor, ...]


@dataclass
class ScoringPrefix(engine.PrefixKV):
    """A ``PrefixKV`` that QC-Comp can score from: per layer, ``rows`` [P_l] the prompt rows whose keys the
    layer holds (what LP-Comp left), and at each probed layer its ``raw_keys`` [1, H_kv, P_l, d] before
    rotary (after k_norm), so that a window can rotate them to its own positions."""

    rows: list[torch.Tensor] = dataclasses.field(default_factory=list)
    raw_keys: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)

    def to(self, device: torch.device | str) -> ScoringPrefix:
        moved = super().to(device)
        if moved is self:
            return self
        return dataclasses.replace(
            moved,
            rows=[r.to(device) for r in self.rows],
            raw_keys={layer: k.to(device) for layer, k in self.raw_keys.items()},
        )


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary tables [1, n, d] applied to [1, H, n, d] (Qwen3-VL's ``apply_rotary_pos_emb``, one tensor)."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


def normed(layer, hidden: torch.Tensor, projection: str) -> torch.Tensor:
    """Queries [1, H, n, d] (``projection`` "q") or keys [1, H_kv, n, d] ("k") of ``hidden`` [1, n, D] at
    ``layer``, before rotary: input norm, projection and per-head norm, as ``Qwen3VLTextAttention`` has them."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    project, norm = getattr(attn, f"{projection}_proj"), getattr(attn, f"{projection}_norm")
    return norm(project(x).view(1, hidden.shape[1], -1, attn.head_dim)).transpose(1, 2)


@torch.inference_mode()
def scoring_prefix(
    model, layout: PromptLayout, *, keep: KeepRule | None, layers: Sequence[int]
) -> ScoringPrefix:
    """The layout's prefix (everything before the question) through layers 0..max(layers), ``keep``
    dropping visual tokens between them (LP-Comp) as in ``engine.prefill``, with what QC-Comp needs."""
    wanted = {int(i) for i in layers}
    decoder, rows, raw = text_model(model), [], {}

    def record(idx: int, state: SequenceState) -> None:
        rows.append(state.rows[0].clone())
        if idx in wanted:
            raw[idx] = normed(decoder.layers[idx], state.hidden, "k")

    # One prompt: no right padding, so the pad id is never used.
    (prefix,) = engine.run_prefixes(model, [layout], pad_id=0, keep=keep, depth=max(wanted) + 1, probe=record)
    return ScoringPrefix(**vars(prefix), rows=rows, raw_keys=raw)


@torch.inference_mode()
def window_attention(
    model,
    layout: PromptLayout,
    prefix: ScoringPrefix | None,
    *,
    keep: KeepRule | None,
    layers: Sequence[int],
    windows: Sequence[Window],
    queries: torch.Tensor,
) -> list[torch.Tensor]:
    """Per window, [len(layers), clips] float32: at each of ``layers``, the mean attention of the ``queries``
    rows on each clip's tokens when the layer re-runs on the window alone (see the module docstring).

    With ``prefix`` (``scoring_prefix`` of this layout, ``keep`` and ``layers``) only the rows after it run,
    over its caches, and ``queries`` must be among them; without, the whole layout runs at once (``keep``
    dropping tokens between the layers), with any attention kernel. Layers 0..max(layers) run. A clip with no
    token left at a layer scores NaN there.
    """
    wanted = [int(i) for i in layers]
    if prefix is not None and (
        any(i not in prefix.raw_keys for i in wanted) or int(queries.min()) < prefix.length
    ):
        raise EngineError(f"the scoring prefix must hold layers {wanted} and end before the query rows")
    decoder, found = text_model(model), {}

    def probe(idx: int, state: SequenceState) -> None:
        if idx in wanted:
            before = None if prefix is None else (prefix.rows[idx], prefix.raw_keys[idx])
            found[idx] = layer_scores(model, decoder.layers[idx], layout, state, before, windows, queries)

    if prefix is None:
        spans = [(0, layout.input_ids.numel())]
        state, deepstack = engine.rows_inputs(model, [layout], spans, pad_id=0)
        engine.run(model, state, depth=max(wanted) + 1, deepstack=deepstack, keep=keep, probe=probe)
    else:
        engine.extend(model, [layout], [prefix], pad_id=0, probe=probe)  # one prompt: the pad id is unused
    return [torch.stack([found[i][w] for i in wanted]) for w in range(len(windows))]


def layer_scores(model, layer, layout, state, before, windows, queries) -> list[torch.Tensor]:
    """Every window's clip scores [clips] at ``layer``, from the rows' ``state`` at the layer's input and,
    ``before`` them, a prefix's (rows [P], keys before rotary [1, H_kv, P, d]) at that layer."""
    q_rows, k_rows = normed(layer, state.hidden, "q"), normed(layer, state.hidden, "k")
    rows, keys = state.rows[0], k_rows
    if before is not None:
        rows = torch.cat([before[0].to(rows.device), rows])
        keys = torch.cat([before[1].to(k_rows.device, k_rows.dtype), k_rows], dim=2)  # [1, H_kv, P + n, d]
    positions, visual = layout.positions.to(rows.device), layout.visual_mask.to(rows.device)
    everything = torch.arange(visual.numel(), device=rows.device)
    attn, scores = layer.self_attn, []
    for window in windows:
        inside = torch.isin(rows, window.rows.to(rows.device)).nonzero()[:, 0]
        part = rows[inside]
        cos, sin = text_model(model).rotary_emb(
            state.hidden, relayout(positions, visual, torch.isin(everything, part))[:, None]
        )
        asking = torch.isin(part, queries.to(part.device)).nonzero()[:, 0]
        own = torch.isin(state.rows[0], part[asking]).nonzero()[:, 0]
        q = rotate(q_rows[:, :, own], cos[:, asking], sin[:, asking])
        k = rotate(keys[:, :, inside], cos, sin).repeat_interleave(attn.num_key_value_groups, dim=1)
        weights = torch.softmax(q.float() @ k.float().transpose(-1, -2) * attn.scaling, dim=-1)[0].mean(0)
        scores.append(
            torch.stack([weights[:, torch.isin(part, c.to(part.device))].mean() for c in window.clips])
        )
    return scores
