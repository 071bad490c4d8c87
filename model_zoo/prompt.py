"""Chat prompts with visual blocks: token ids, placeholder mask and Qwen3-VL's 3-D (M-RoPE) positions.

Layout (Qwen3-VL's chat template, then the processor's video expansion, ``processing_qwen3_vl.py``
``replace_video_token``): the template renders the user turn as the video item then the user text, i.e.
``<|im_start|>user\\n<|vision_start|><|video_pad|><|vision_end|>{text}<|im_end|>\\n<|im_start|>assistant\\n``
(with an optional system turn before it; the Qwen3-VL template has no default system prompt). That one
placeholder triple is replaced, per visual segment in order, by its text (``<12.5 seconds>``), then
``<|vision_start|>``, ``<|video_pad|>`` x K, ``<|vision_end|>`` — the Qwen reference expansion (transformers
4.57 replaced the whole triple). transformers 5.x replaces only the inner ``<|video_pad|>`` and so keeps an
extra outer ``<|vision_start|>`` ... ``<|vision_end|>`` around the expansion; ``outer_vision_tokens=True``
reproduces that layout.

Positions (``modeling_qwen3_vl.py``, ``get_rope_index``): text tokens advance by one on all three axes; a
visual block starting at position p puts a token with local (t, h, w) at (p + t, p + h, p + w), and the
text after it continues at p + max(local) + 1. For an uncompressed group (t = 0, merged grid h x w) that is
exactly the stock rule (t = p, rows p.., cols p.., next text at p + max(h, w)).

The user text (a visitor's question) is plain text: a special or added token's string typed in it
(``<|video_pad|>``, ``<|im_start|>``, ``<|vision_start|>``) is encoded as the ordinary text ids of its
characters (``encode_plain``), never as that token, so a question can neither add placeholders nor open a
turn of its own. Only the chat template's own pieces and our timestamps are encoded with special tokens.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
_USER_SLOT = "\ue000user text\ue000"  # rendered in the user text's place, to cut the template around it


class PromptError(ValueError):
    """A prompt that cannot be laid out (the message says what and what is valid)."""


class VisualSegmentLike(Protocol):
    """Any object with these attributes (``compressors.base.VisualSegment`` is one)."""

    text: str | None  # placed before the block, e.g. "<12.5 seconds>"
    embeds: torch.Tensor  # [K, D]
    positions: torch.Tensor  # [K, 3] long, local (t, h, w) >= 0
    deepstack: list[torch.Tensor]  # levels x [K, D]


@dataclass(frozen=True)
class SpecialIds:
    """Token ids of the vision delimiters, the video placeholder and the padding token."""

    vision_start: int
    vision_end: int
    video_pad: int
    pad: int


@dataclass
class PromptLayout:
    """One prompt, ready for the text model.

    ``input_ids`` [L]; ``positions`` [3, L] (t, h, w); ``visual_mask`` [L] marks the N placeholders, whose
    embeddings are ``embeds`` [N, D] in order, with DeepStack levels ``deepstack`` (levels x [N, D]);
    ``segment_columns`` holds, per segment, the sequence indices of its visual tokens; ``user_span`` is the
    [start, end) token range of the user text (the question).
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    visual_mask: torch.Tensor
    embeds: torch.Tensor
    deepstack: list[torch.Tensor]
    segment_columns: list[torch.Tensor] = field(default_factory=list)
    user_span: tuple[int, int] = (0, 0)

    @property
    def num_visual(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def max_position(self) -> int:
        """M, the largest position in the prompt; decode step k sits at M + 1 + k."""
        return int(self.positions.max())


def render_chat(tokenizer, user_text: str, *, system: str | None = None) -> tuple[str, str]:
    """The chat text before and after the single video placeholder triple.

    Messages: [system (if given), user: (video, ``user_text``)], with the generation prompt.
    """
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user_text}]})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text.count(VIDEO_PLACEHOLDER) != 1:
        raise PromptError(
            f"the chat template must render one {VIDEO_PLACEHOLDER!r} for one video, got: {text!r}"
        )
    before, after = text.split(VIDEO_PLACEHOLDER)
    return before, after


class _LayoutBuilder:
    """Appends text and visual blocks, keeping the running M-RoPE position ``cursor``."""

    def __init__(self) -> None:
        self.ids: list[torch.Tensor] = []
        self.positions: list[torch.Tensor] = []
        self.visual: list[torch.Tensor] = []
        self.cursor = 0
        self.length = 0

    def text(self, ids: Sequence[int]) -> tuple[int, int]:
        n = len(ids)
        self.ids.append(torch.tensor(ids, dtype=torch.long))
        self.positions.append(torch.arange(self.cursor, self.cursor + n).expand(3, n))
        self.visual.append(torch.zeros(n, dtype=torch.bool))
        self.cursor += n
        self.length += n
        return self.length - n, self.length

    def block(self, local: torch.Tensor, pad_id: int) -> torch.Tensor:
        """A visual block with local (t, h, w) positions [K, 3]; returns the sequence indices it took."""
        k = local.shape[0]
        self.ids.append(torch.full((k,), pad_id, dtype=torch.long))
        self.positions.append(local.detach().cpu().t().to(torch.long) + self.cursor)
        self.visual.append(torch.ones(k, dtype=torch.bool))
        self.cursor += int(local.max()) + 1  # the next text follows the block's extent
        self.length += k
        return torch.arange(self.length - k, self.length)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.cat(self.ids), torch.cat(self.positions, dim=1), torch.cat(self.visual)


#: Per tokenizer, the ids of texts already encoded: a prompt repeats the same chat pieces and timestamps
#: ("<12.5 seconds>") in every request, and a tokenizer call costs far more than a lookup.
_ENCODED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENCODED_PER_TOKENIZER = 8192


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without BOS/EOS (Qwen adds none; special-token strings become their ids)."""
    if not text:
        return []
    known = _ENCODED.setdefault(tokenizer, {})
    ids = known.get(text)
    if ids is None:
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(known) >= _ENCODED_PER_TOKENIZER:  # bounded: start again rather than grow
            known.clear()
        known[text] = ids
    return list(ids)


_ADDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _added_tokens(tokenizer) -> re.Pattern | None:
    """A pattern matching any added token's string (special or not), longest first; None when there are none."""
    if tokenizer not in _ADDED:
        strings = sorted((t for t in tokenizer.get_added_vocab() if len(t) > 1), key=len, reverse=True)
        _ADDED[tokenizer] = re.compile("|".join(map(re.escape, strings))) if strings else None
    return _ADDED[tokenizer]


def plain_pieces(tokenizer, text: str) -> list[str]:
    """``text`` cut just inside every added token's string it holds, so that no piece holds one whole.

    Encoding the pieces one by one gives ordinary text ids only: the tokenizer matches an added token only
    where its whole string appears. Text without such strings is one piece (its ids do not change).
    """
    pattern = _added_tokens(tokenizer)
    cuts, found = [], pattern.search(text) if pattern else None
    while found:
        cuts.append(found.start() + 1)
        found = pattern.search(text, found.start() + 1)
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if a < b]


def encode_plain(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` as plain text: typed special-token strings become ordinary text ids."""
    return [i for piece in plain_pieces(tokenizer, text) for i in encode_text(tokenizer, piece)]


def check_segments(segments: Sequence[VisualSegmentLike], *, hidden: int, levels: int) -> None:
    """Raise PromptError unless every segment has [K>0, hidden] embeds, [K, 3] positions, ``levels`` DeepStack."""
    if not segments:
        raise PromptError("need at least one visual segment")
    for i, seg in enumerate(segments):
        k = seg.embeds.shape[0] if seg.embeds.ndim == 2 else 0
        if seg.embeds.ndim != 2 or k == 0 or seg.embeds.shape[1] != hidden:
            raise PromptError(f"segment {i}: embeds must be [K>0, {hidden}], got {tuple(seg.embeds.shape)}")
        if tuple(seg.positions.shape) != (k, 3) or bool((seg.positions < 0).any()):
            raise PromptError(
                f"segment {i}: positions must be [{k}, 3] non-negative, got {tuple(seg.positions.shape)}"
            )
        if len(seg.deepstack) != levels or any(tuple(x.shape) != (k, hidden) for x in seg.deepstack):
            shapes = [tuple(x.shape) for x in seg.deepstack]
            raise PromptError(
                f"segment {i}: the model adds {levels} DeepStack levels to visual tokens, so each segment needs "
                f"{levels} tensors [{k}, {hidden}] kept/merged like its embeds; got {shapes}"
            )


def build_layout(
    tokenizer,
    ids: SpecialIds,
    segments: Sequence[VisualSegmentLike],
    user_text: str,
    *,
    system: str | None = None,
    deepstack_levels: int,
    outer_vision_tokens: bool = False,
    reply_prefix: str = "",
) -> PromptLayout:
    """Lay out [chat prefix, each segment (text, <|vision_start|>, K placeholders, <|vision_end|>), user text,
    chat suffix, reply prefix] with its positions. Raises PromptError when placeholders and tokens would not
    match.

    ``reply_prefix`` starts the assistant's reply after the generation prompt (MLVU's official prompt primes
    ``Best option: (``): the model continues it, so what it generates is the answer without the prefix.
    Like the user text it is plain text (special-token strings in it are not special)."""
    hidden = segments[0].embeds.shape[-1] if segments else 0
    check_segments(segments, hidden=hidden, levels=deepstack_levels)
    before, suffix = _template_around_user_text(tokenizer, system)
    builder = _LayoutBuilder()
    builder.text(encode_text(tokenizer, before) + ([ids.vision_start] if outer_vision_tokens else []))
    columns = []
    for seg in segments:
        builder.text(encode_text(tokenizer, seg.text or "") + [ids.vision_start])
        columns.append(builder.block(seg.positions, ids.video_pad))
        builder.text([ids.vision_end])
    if outer_vision_tokens:
        builder.text([ids.vision_end])
    user_ids = encode_plain(tokenizer, user_text)
    start = builder.length
    builder.text(user_ids + encode_text(tokenizer, suffix) + encode_plain(tokenizer, reply_prefix))
    input_ids, positions, visual_mask = builder.tensors()
    layout = PromptLayout(
        input_ids=input_ids,
        positions=positions,
        visual_mask=visual_mask,
        embeds=torch.cat([s.embeds for s in segments]),
        deepstack=[torch.cat([s.deepstack[i] for s in segments]) for i in range(deepstack_levels)],
        segment_columns=columns,
        user_span=(start, start + len(user_ids)),
    )
    check_placeholders(layout, ids)
    return layout


def _template_around_user_text(tokenizer, system: str | None) -> tuple[str, str]:
    """The chat text before the video and after the user text (its generation prompt), without the user text."""
    before, after = render_chat(tokenizer, _USER_SLOT, system=system)
    if not after.startswith(_USER_SLOT) or _USER_SLOT in before + after[len(_USER_SLOT) :]:
        raise PromptError("the chat template must place the user text right after the video, once")
    return before, after[len(_USER_SLOT) :]


def check_placeholders(layout: PromptLayout, ids: SpecialIds) -> None:
    """Exactly one placeholder per visual token, and only where the visual tokens go (as the stock model checks
    in ``get_placeholder_mask``); a text containing ``<|video_pad|>`` would break this."""
    placeholders = layout.input_ids == ids.video_pad
    if int(placeholders.sum()) != layout.num_visual or not torch.equal(placeholders, layout.visual_mask):
        raise PromptError(
            f"{int(placeholders.sum())} <|video_pad|> placeholders for {layout.num_visual} visual tokens: "
            "texts must not contain the placeholder token"
        )
