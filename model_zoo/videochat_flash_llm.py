"""VideoChat-Flash's language model run layer by layer: LP-Comp in prefill, decoding at the positions the
authors' cache implies, and QC-Comp's window scores. The model is transformers' own ``Qwen2ForCausalLM``;
nothing here patches a class.

Papers: VideoChat-Flash (arXiv 2501.00574); XComp, Zhang et al., NeurIPS 2025, arXiv 2604.14149. Authors'
code: github.com/ZheyuAqaZhang/XComp, the Hub model's remote code as they run it
(``lmms-eval_videochat/benchmark_data/model/VideoChat-Flash-Qwen2_5-2B_res448_ver7/modeling_qwen2_flash.py``,
``Qwen2Model_Flash.forward`` l. 979-1271, ``get_clip_scores`` l. 1273-1351, ``flash_rank_drop`` l. 1353-1486)
and ``llava-train_videochat/llava/model/condenser_arch.py`` (``SelectTheNextHalf`` l. 337-370).

The prompt is one contiguous run of ``frames x n`` visual tokens (n tokens per frame block, 16 at the input)
between text. Facts reproduced:

* LP-Comp. With a schedule N(0..L) (tokens per frame, the caller's: ``compressors.xcomp.lp_schedule``), after
  0-based layer i - 1 (``rank_layer = i``) for every i >= 1 with N(i) != N(i + 1), each block of consecutive
  visual tokens keeps its *last* N(i + 1) (``SelectTheNextHalf`` with ``EXTRA_PARAM_ALWAYS_SUFFIX``: ``next_idx
  = prev_idx[-len(next_idx):]``), and positions are renumbered 0..L'-1 (``flash_rank_drop``). Each layer's
  cache keeps what that layer saw; decode token k sits, at layer j, at position L_j + k, L_j the length layer j
  saw in prefill (generate's ``attention_mask.cumsum`` minus the drops, l. 1239-1250).
* QC-Comp scores (``get_clip_scores``, ``EXTRA_PARAM_SCORE_TYPE=segments_8_4``): at the input of a layer, clips
  of 8 frames (``num_clips = tokens // 128``); windows of 8 clips every 4 clips (``p1 + 8 <= clips``); each
  window is the fresh sequence [text before the video, the window's tokens, the text after the video up to the
  assistant turn] at positions 0..n-1, run through the layer's attention with *no* mask (the prefill mask is
  None under sdpa, and the eager fallback adds none), probabilities averaged over heads; a clip's window
  score is the mean over query rows (from ``query_bias`` = 27 tokens after the window to the end) and over
  its tokens; its score the mean over its windows, or 1e9 for clips held by fewer windows than the most.
  Dtypes as theirs: logits in the model dtype divided by sqrt(head_dim), softmax in float32 cast back, the
  means in the model dtype.
* Greedy decoding with the checkpoint's ``repetition_penalty`` (1.1 in its ``generation_config.json``, which
  transformers' ``generate`` merges into ``do_sample=False``) over the generated tokens only (generate with
  ``inputs_embeds`` starts from an empty ``input_ids``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, RepetitionPenaltyLogitsProcessor
from transformers.models.qwen2.modeling_qwen2 import rotate_half

from model_zoo.tempo_official import AnswerStream
from model_zoo.umt import TOKENS_PER_FRAME
from model_zoo.videochat_flash_frames import CLIP_FRAMES

EDGE_SCORE = 1e9  # ``real_clips_score.append(1e9)``: a clip held by fewer windows than the most


class LPCompError(ValueError):
    """An LP-Comp schedule the authors' rule cannot apply (the message says what it got and what is valid)."""


@dataclass(frozen=True)
class FlashPrompt:
    """One prompt: ``embeds`` [L, D]; visual tokens at [start, start + frames * 16); ``user_end``: where the
    assistant turn (``<|im_start|>assistant\\n``) begins, the end of the text QC-Comp windows carry."""

    embeds: torch.Tensor
    start: int
    frames: int
    user_end: int

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])


def lp_drops(schedule: Sequence[int] | None, num_layers: int) -> dict[int, int]:
    """{0-based layer j: tokens per frame kept after it} for the schedule N(0..L) (empty: no LP-Comp)."""
    if schedule is None:
        return {}
    n = [int(x) for x in schedule]
    if (
        len(n) != num_layers + 1
        or n[0] != TOKENS_PER_FRAME
        or n[0] != n[1]
        or min(n) < 1
        or any(a < b for a, b in zip(n, n[1:], strict=False))
    ):
        raise LPCompError(
            f"an LP-Comp schedule has {num_layers + 1} non-increasing counts >= 1 with N(0) = N(1) = 16, got {n}"
        )
    return {i - 1: n[i + 1] for i in range(1, num_layers) if n[i] != n[i + 1]}


def layer_counts(drops: dict[int, int], num_layers: int, start: int) -> list[int]:
    """Tokens per frame each layer sees, ``start`` before any drop."""
    counts, n = [], start
    for j in range(num_layers):
        counts.append(n)
        n = drops.get(j, n)
    return counts


def keep_suffix(hidden: torch.Tensor, start: int, frames: int, n: int, keep: int) -> torch.Tensor:
    """[1, L, D] with ``frames`` blocks of ``n`` visual tokens at ``start`` -> each block's last ``keep``."""
    blocks = hidden[:, start : start + frames * n].reshape(1, frames, n, -1)[:, :, n - keep :]
    return torch.cat(
        [hidden[:, :start], blocks.reshape(1, frames * keep, -1), hidden[:, start + frames * n :]], 1
    )


def causal_mask(llm, length: int, like: torch.Tensor) -> torch.Tensor | None:
    """Additive causal mask [1, 1, L, L] for eager attention; None for kernels whose ``is_causal`` does it."""
    if llm.config._attn_implementation != "eager":
        return None
    future = torch.ones(length, length, dtype=torch.bool, device=like.device).triu(1)
    mask = torch.zeros(length, length, dtype=like.dtype, device=like.device)
    return mask.masked_fill(future, torch.finfo(like.dtype).min)[None, None]


@dataclass
class Prefill:
    """What prefill leaves: last-position logits [V] float32, the cache, and per layer its input length and
    the visual tokens it saw."""

    logits: torch.Tensor | None
    cache: DynamicCache | None
    lengths: list[int]
    visual: list[int]


#: ``probe(layer, hidden, n)``: the input [1, L, D] of ``layer`` with ``n`` tokens per frame block.
Probe = Callable[[int, torch.Tensor, int], None]


@torch.inference_mode()
def prefill(
    llm, prompt: FlashPrompt, drops: dict[int, int], *, layers: int | None = None, probe: Probe | None = None
) -> Prefill:
    """Run ``layers`` decoder layers (all by default: then the logits and a cache to decode from) with
    LP-Comp's ``drops``."""
    decoder = llm.model
    total = len(decoder.layers) if layers is None else layers
    cache = DynamicCache() if layers is None else None  # one layer per decoder layer, each its own length
    lengths, visual = [], []
    hidden, n = prompt.embeds[None].to(llm.device, llm.dtype), TOKENS_PER_FRAME
    for j in range(total):
        if probe is not None:
            probe(j, hidden, n)
        length = hidden.shape[1]
        lengths.append(length)
        visual.append(prompt.frames * n)
        positions = torch.arange(length, device=hidden.device)[None]
        hidden = decoder.layers[j](
            hidden,
            attention_mask=causal_mask(llm, length, hidden),
            position_embeddings=decoder.rotary_emb(hidden, positions),
            past_key_values=cache,
            use_cache=cache is not None,
        )
        if j in drops:
            hidden, n = keep_suffix(hidden, prompt.start, prompt.frames, n, drops[j]), drops[j]
    logits = None if total < len(decoder.layers) else llm.lm_head(decoder.norm(hidden[0, -1])).float()
    return Prefill(logits, cache, lengths, visual)


@torch.inference_mode()
def decode_step(llm, token: int, step: int, state: Prefill) -> torch.Tensor:
    """Logits [V] float32 of ``token``, the ``step``-th generated one (0-based), at position L_j + step."""
    decoder = llm.model
    hidden = decoder.embed_tokens(torch.tensor([[token]], device=llm.device))
    tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for j, layer in enumerate(decoder.layers):
        where = state.lengths[j] + step
        if where not in tables:
            tables[where] = decoder.rotary_emb(hidden, torch.tensor([[where]], device=hidden.device))
        hidden = layer(
            hidden,
            attention_mask=None,
            position_embeddings=tables[where],
            past_key_values=state.cache,
            use_cache=True,
        )
    return llm.lm_head(decoder.norm(hidden[0, -1])).float()


class FlashAnswer(AnswerStream):
    """The answer, streamed (``tempo_official.AnswerStream``'s text handling): greedy with the repetition
    penalty, LP-Comp in prefill. After prefill ``layer_tokens`` holds the visual tokens each layer saw."""

    def __init__(self, llm, tokenizer, prompt: FlashPrompt, *, drops, penalty, max_new_tokens, eos_ids):
        super().__init__(llm, tokenizer, prompt, max_new_tokens=max_new_tokens, eos_ids=eos_ids)
        self.drops = drops
        self.penalty = RepetitionPenaltyLogitsProcessor(penalty) if penalty != 1.0 else None
        self.layer_tokens: list[int] = []

    def _next(self, logits: torch.Tensor, tokens: list[int]) -> int:
        if self.penalty is not None and tokens:
            ids = torch.tensor([tokens], device=logits.device)
            logits = self.penalty(ids, logits[None])[0]
        return int(logits.argmax())

    def _tokens(self) -> Iterator[int]:
        start = time.perf_counter()
        state = prefill(self.llm, self.prompt, self.drops)
        self.layer_tokens = state.visual
        self.stats["prefill_s"] = time.perf_counter() - start
        tokens: list[int] = []
        logits = state.logits
        for step in range(self.max_new_tokens):
            token = self._next(logits, tokens)
            if token in self.eos_ids:
                return
            tokens.append(token)
            yield token
            logits = decode_step(self.llm, token, step, state)


# ------------------------------------------------------------------------------------------------- QC-Comp


def clip_windows(clips: int, window: int, stride: int) -> list[range]:
    """Windows of ``window`` clips starting every ``stride`` clips while they fit (none when ``clips <
    window``): ``for p1 in range(0, clips, stride): if p1 + window > clips: break``."""
    return [range(p, p + window) for p in range(0, clips - window + 1, stride)]


def window_attention(layer, hidden: torch.Tensor, rows: torch.Tensor, rotary) -> torch.Tensor:
    """Head-averaged, unmasked attention of query ``rows`` over a window sequence [1, n, D] at positions
    0..n-1: [R, n] in the model dtype (``Qwen2Attention`` eager path of the authors' remote code)."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    d = attn.head_dim
    cos, sin = rotary(x, torch.arange(x.shape[1], device=x.device)[None])
    q = attn.q_proj(x[:, rows]).view(1, rows.numel(), -1, d).transpose(1, 2)
    k = attn.k_proj(x).view(1, x.shape[1], -1, d).transpose(1, 2)
    q = q * cos[:, None, rows] + rotate_half(q) * sin[:, None, rows]
    k = (k * cos[:, None] + rotate_half(k) * sin[:, None]).repeat_interleave(attn.num_key_value_groups, dim=1)
    logits = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(d)
    return torch.softmax(logits.float(), dim=-1).to(q.dtype)[0].mean(0)


@dataclass(frozen=True)
class ScoreWindows:
    """QC-Comp's window scheme: clips per window and stride (``segments_8_4``), and the query offset."""

    window: int = 8
    stride: int = 4
    query_bias: int = 27  # EXTRA_PARAM_QUERY_BIAS


def layer_clip_scores(
    layer, rotary, hidden: torch.Tensor, n: int, prompt: FlashPrompt, scheme: ScoreWindows
) -> list[float]:
    """One layer's score per 8-frame clip (``get_clip_scores``), from its input ``hidden`` [1, L, D] whose
    frame blocks hold ``n`` tokens each."""
    per_clip = CLIP_FRAMES * n
    clips = prompt.frames // CLIP_FRAMES
    image_end = prompt.start + prompt.frames * n
    # The assistant turn moved left by the tokens LP-Comp dropped so far.
    user_end = prompt.user_end - prompt.frames * (TOKENS_PER_FRAME - n)
    found: list[list[float]] = [[] for _ in range(clips)]
    for w in clip_windows(clips, scheme.window, scheme.stride):
        first = prompt.start + w.start * per_clip
        window = torch.cat(
            [
                hidden[:, : prompt.start],
                hidden[:, first : first + len(w) * per_clip],
                hidden[:, image_end:user_end],
            ],
            dim=1,
        )
        end = prompt.start + len(w) * per_clip
        rows = torch.arange(end + scheme.query_bias, window.shape[1], device=window.device)
        att = window_attention(layer, window, rows, rotary)[:, prompt.start : end]
        means = att.reshape(rows.numel(), len(w), per_clip).transpose(0, 1).reshape(len(w), -1).mean(-1)
        for c, value in zip(w, means.tolist(), strict=True):
            found[c].append(value)
    most = max((len(x) for x in found), default=0)
    return [sum(x) / len(x) if len(x) == most and x else EDGE_SCORE for x in found]


@torch.inference_mode()
def segment_scores(
    llm, prompt: FlashPrompt, drops: dict[int, int], layers: Sequence[int], scheme: ScoreWindows
) -> dict[int, list[float]]:
    """{layer: score per clip} for one segment's prompt (prefill up to the last scored layer)."""
    wanted, found = set(layers), {}
    rotary = llm.model.rotary_emb

    def probe(j: int, hidden: torch.Tensor, n: int) -> None:
        if j in wanted:
            found[j] = layer_clip_scores(llm.model.layers[j], rotary, hidden, n, prompt, scheme)

    prefill(llm, prompt, drops, layers=max(wanted) + 1, probe=probe)
    return found
