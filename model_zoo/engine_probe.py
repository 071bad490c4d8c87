"""Attention probes: how much chosen query rows attend to chosen columns, read from inside a layer.

Custom because the library returns attention weights only from eager attention and only as whole L x L maps;
here the probability rows of the query rows alone are computed from the layer's own modules (input norm,
q/k projections, q_norm/k_norm, the model's rotary tables), with any attention kernel. XComp's QC-Comp
(arXiv 2604.14149) scores clips with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import rotate_half

from model_zoo import engine
from model_zoo.engine_layers import EngineError, SequenceState, text_model
from model_zoo.prompt import PromptLayout


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply rotary tables [B, n, d] to [B, H, n, d] (Qwen3-VL's ``apply_rotary_pos_emb``, one tensor)."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


def row_attention(
    layer, state: SequenceState, rows: torch.Tensor, past: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) of query ``rows`` at ``layer``'s input, causal: [H, R, P + L] float32.

    Computed from the layer's own projections (input norm, q/k proj, q_norm/k_norm, rotary), keys expanded
    for grouped-query attention as ``repeat_kv`` does (query head h reads key head h // groups). Only the
    R requested rows are materialised, never L x L. ``past`` [1, H_kv, P, d]: the layer's cached keys of P
    earlier tokens (a ``PrefixKV``), which every row sees before the state's own L tokens.
    """
    attn = layer.self_attn
    x = layer.input_layernorm(state.hidden)  # [1, L, D]
    d = attn.head_dim
    q = attn.q_norm(attn.q_proj(x[:, rows]).view(1, rows.numel(), -1, d)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(x).view(1, x.shape[1], -1, d)).transpose(1, 2)
    q = rotary(q, state.cos[:, rows], state.sin[:, rows])
    k = rotary(k, state.cos, state.sin)
    before = 0 if past is None else past.shape[-2]
    if past is not None:
        k = torch.cat([past.to(k.dtype), k], dim=-2)
    k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2))[0] * attn.scaling  # [H, R, P + L]
    future = torch.arange(k.shape[-2], device=rows.device)[None, :] > rows[:, None] + before
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


@torch.inference_mode()
def query_attention(
    model,
    layout: PromptLayout,
    *,
    rows: torch.Tensor,
    columns: Sequence[torch.Tensor],
    layers: Sequence[int],
    reduce: str = "mean",
    prefix: engine.PrefixKV | None = None,
) -> torch.Tensor:
    """Attention from query ``rows`` to each column set, at each of ``layers``: [len(layers), len(columns)].

    Per layer: attention probabilities of the rows (``row_attention``), averaged over heads; per column set,
    the rows' attention mass on it ("sum") or its mean per column ("mean"); then averaged over the rows.
    Only layers up to max(layers) run. With ``prefix`` (the layout's ``PrefixKV``, at least
    max(layers) + 1 deep, no token dropped) only the rows after it run, and every query row must be among
    them.
    """
    if reduce not in ("mean", "sum"):
        raise EngineError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    decoder = text_model(model)
    if not layers or any(not 0 <= int(i) < len(decoder.layers) for i in layers):
        raise EngineError(f"layers must be 0-based indices in [0, {len(decoder.layers)}), got {list(layers)}")
    rows = rows.to(model.device)
    wanted = {int(i) for i in layers}
    found: dict[int, torch.Tensor] = {}
    start = 0 if prefix is None else prefix.length

    def probe(idx: int, state: SequenceState) -> None:
        if idx in wanted:
            past = None if prefix is None else prefix.keys[idx].to(state.hidden.device)
            per_column = row_attention(decoder.layers[idx], state, rows - start, past).mean(0)  # [R, L]
            found[idx] = torch.stack([column_score(per_column, c, reduce) for c in columns])

    if prefix is None:
        spans = [(0, layout.input_ids.numel())]
        embeds, positions, visual, deepstack = engine.rows_inputs(model, [layout], spans, pad_id=0)
        engine.run(model, embeds, positions, visual, depth=max(wanted) + 1, deepstack=deepstack, probe=probe)
        return torch.stack([found[int(i)] for i in layers]).cpu()
    if len(prefix.keys) <= max(wanted) or any(n != prefix.length for n in prefix.lengths()):
        raise EngineError(f"the prefix must hold all its {prefix.length} rows in layers 0..{max(wanted)}")
    if int(rows.min()) < start:
        raise EngineError(f"query rows must come after the {start}-row prefix")
    # One prompt: no right padding, so the pad id is never used.
    engine.extend(model, [layout], [prefix], pad_id=0, probe=probe)
    return torch.stack([found[int(i)] for i in layers]).cpu()


def column_score(attention: torch.Tensor, columns: torch.Tensor, reduce: str) -> torch.Tensor:
    """Mean over rows of the attention [R, L] on ``columns``: summed over them, or averaged per column."""
    mass = attention[:, columns.to(attention.device)].sum(-1)
    if reduce == "mean":
        mass = mass / max(columns.numel(), 1)
    return mass.mean()
