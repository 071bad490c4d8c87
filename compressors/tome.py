"""Token merging (ToMe): size-weighted bipartite soft matching over one set of tokens.

Bolya et al., "Token Merging: Your ViT But Faster" (ICLR 2023, arXiv 2210.09461; facebookresearch/ToMe,
``bipartite_soft_matching`` + ``merge_wavg``). One step: alternate the tokens into sets A (even places) and
B (odd places), take the cosine similarity of every A token to every B token, let each A token pick its most
similar B token, and merge the ``r`` A tokens with the most similar picks into them (``r`` at most half the
tokens), averaging weighted by how many input tokens each already stands for. Steps repeat until ``keep``
tokens remain, with XComp's schedule (``tome16_mlp_hd64.py`` in ZheyuAqaZhang/XComp): remove half while more
than half must go, then exactly the rest. Tempo's optional ``"tome"`` strategy (``tome_merge`` in
FeiElysia/Tempo ``tempo/vlm_multimodal_processor.py``, not the released setting) is a different merge: it
removes up to ceil(n/2) tokens a step and averages without sizes (see ``compressors.tempo``).

Where ours differs, and why:
- the similarity uses the features themselves (ToMe uses attention keys, XComp the head-averaged features:
  neither exists for the merger output we get);
- the output keeps the input's order, each token placed where its destination (the B token everything merged
  into) was, so positions stay meaningful; ToMe returns ``[unmerged A..., B...]``;
- ties in similarity go to the lower index (stable sort), so results are deterministic.

Shapes: N input tokens, K kept, D features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import CompressionError


@dataclass(frozen=True)
class Merge:
    """The result of merging N tokens into K, with what is needed to repeat it on other features."""

    embeds: torch.Tensor  # [K, D] size-weighted means
    sizes: torch.Tensor  # [K] float: how many input units each output stands for
    assignment: torch.Tensor  # [N] long: the output each input went into
    destinations: torch.Tensor  # [K] long, ascending: input index of each output's destination token


def merge(
    x: torch.Tensor, keep: int, sizes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge ``x`` ``[N, D]`` down to ``keep`` tokens: ``(merged [K, D], sizes [K], assignment [N])``.

    ``sizes`` ``[N]`` weights the inputs (default ones). ``keep >= N`` returns the input unchanged (sizes as
    given or ones, assignment ``arange(N)``). ``assignment[n]`` is the output index input ``n`` went into;
    outputs are in the input's order (see :func:`merge_tracked` for the destinations).
    """
    m = merge_tracked(x, keep, sizes)
    return m.embeds, m.sizes, m.assignment


def merge_tracked(x: torch.Tensor, keep: int, sizes: torch.Tensor | None = None) -> Merge:
    """:func:`merge`, also returning each output's destination token (its input index, for positions)."""
    n = _check(x, keep, sizes)
    size = torch.ones(n, device=x.device) if sizes is None else sizes.to(x.device, torch.float32)
    assignment = torch.arange(n, device=x.device)
    if keep >= n:
        return Merge(x, size, assignment, assignment.clone())
    cur, dest = x.float(), assignment.clone()
    while cur.shape[0] > keep:
        r = min(cur.shape[0] - keep, cur.shape[0] // 2)
        cur, size, dest, step = _merge_step(cur, size, dest, r)
        assignment = step[assignment]
    return Merge(cur.to(x.dtype), size, assignment, dest)


def merge_like(
    features: torch.Tensor, assignment: torch.Tensor, sizes: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply a merge found on other tokens to ``features`` ``[N, C]`` → ``[K, C]`` (DeepStack levels).

    The size-weighted average over each output's inputs, which is exactly what the repeated merge steps
    computed for the tokens it was found on (a weighted mean of weighted means is the overall weighted mean).
    ``sizes`` are the *input* sizes given to :func:`merge` (default ones).
    """
    if features.shape[0] != assignment.shape[0]:
        raise CompressionError(
            f"features {tuple(features.shape)} do not match assignment [{assignment.shape[0]}]"
        )
    k = int(assignment.max()) + 1
    w = torch.ones(len(assignment), device=features.device) if sizes is None else sizes.to(features.device)
    sums, totals = _group_sum(features.float() * w[:, None], w.float(), assignment, k)
    return (sums / totals[:, None]).to(features.dtype)


def _group_sum(
    x: torch.Tensor, size: torch.Tensor, index: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output ``j < k``: the sums of ``x`` ``[N, D]`` and ``size`` ``[N]`` over inputs with index ``j``."""
    sums = torch.zeros(k, x.shape[1], device=x.device).scatter_add_(0, index[:, None].expand_as(x), x)
    return sums, torch.zeros(k, device=x.device).scatter_add_(0, index, size)


def _check(x: torch.Tensor, keep: int, sizes: torch.Tensor | None) -> int:
    if x.ndim != 2 or x.shape[0] == 0:
        raise CompressionError(f"merge needs tokens [N>0, D], got {tuple(x.shape)}")
    if keep < 1:
        raise CompressionError(f"merge must keep at least 1 token, got keep={keep}")
    if sizes is not None and tuple(sizes.shape) != (x.shape[0],):
        raise CompressionError(f"sizes must be [{x.shape[0]}], got {tuple(sizes.shape)}")
    return int(x.shape[0])


def _merge_step(
    x: torch.Tensor, size: torch.Tensor, dest: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One bipartite step removing ``r`` tokens: new (x [M-r, D], size, dest) and the map old → new index."""
    n = x.shape[0]
    a_idx = torch.arange(0, n, 2, device=x.device)
    b_idx = torch.arange(1, n, 2, device=x.device)
    unit = F.normalize(x, dim=-1)
    best, pick = (unit[a_idx] @ unit[b_idx].T).max(dim=-1)
    src = torch.argsort(best, descending=True, stable=True)[:r]
    survives = torch.ones(n, dtype=torch.bool, device=x.device)
    survives[a_idx[src]] = False
    new_index = torch.cumsum(survives, 0) - 1
    new_index[a_idx[src]] = new_index[b_idx[pick[src]]]
    sums, new_size = _group_sum(x * size[:, None], size, new_index, n - r)
    return sums / new_size[:, None], new_size, dest[survives], new_index
