"""The multiple-choice prompt and the deterministic answer parser, the same for every method.

Prompt (``default``), placed after the visual tokens as the user text: ``Question: {q}\\nOptions:\\nA. {o1}
\\n...\\nAnswer with the option letter only.`` — lmms-eval's Qwen3-VL multiple-choice format, with
VLMEvalKit's ``"{key}. {item}"`` option lines. ``official`` uses each benchmark's own wording (Video-MME's
README, LongVideoBench's and MLVU's evaluation code, LVBench's); MLVU's also primes the reply with
``Best option: (`` (``reply_prefix``: the pipeline puts it after the generation prompt, and the reply parsed
is what the model adds to it).

What the selectors read (``selection_text``). Tempo's relevance prompt and XComp's clip attention read a
text of their own; ``prompt`` (the default) gives them the whole prompt, as both authors' evaluations do:
Tempo's lmms-eval model (FeiElysia/Tempo ``lmms_eval/models/simple/tempo.py``) passes the task's context,
the question with its options and instructions, both to its compressor as the Query
(``process_qwen_content(..., context, ...)``) and to its LLM; XComp's (ZheyuAqaZhang/XComp
``lmms-eval_videochat/lmms_eval/models/videochat_flash.py``, ``modeling_qwen2_flash.py`` ``get_clip_scores``)
scores clips by the attention of the user turn's rows after the time message (``EXTRA_PARAM_QUERY_BIAS=27``
skips it), which hold that same context. ``question`` gives them the bare question instead, without options
or instructions (an ablation: the options name what to look for, the instructions nothing visual).

Parsing (``PARSER_VERSION``; letters limited to the question's option count):
1. strip a ``<think>...</think>`` block (an unclosed one: everything from it), whitespace and surrounding
   ``( ) . : "``;
2. the reply is exactly one valid letter -> it;
3. the first standalone valid letter after an answer phrase ("the answer is", "best option", "answer:");
4. a valid letter at the start followed by a non-letter ("B. Candles", "B)") -> it, except an "A" followed
   by a space and a lower-case word (the English article: "A man walks" is not an answer);
5. exactly one option's text appears in the reply (case and spacing ignored) -> its letter;
6. otherwise unparsed (``None``) and counted wrong. Never a random pick: LongVideoBench's own fallback picks
   at random, which makes results depend on order and world size.
"""

from __future__ import annotations

import re

from evaluation.benchmarks import LETTERS, Question

PARSER_VERSION = 1
MAX_NEW_TOKENS = 16  # greedy; enough for a letter and a few words
PROMPT_STYLES = ("default", "official")
SELECTOR_TEXTS = ("prompt", "question")
MLVU_REPLY_PREFIX = "Best option: ("

_OFFICIAL_VIDEOMME = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter ({letters}) of the correct option."
)


def _lines(question: Question, template: str) -> str:
    return "\n".join(template.format(letter=LETTERS[i], text=o) for i, o in enumerate(question.options))


def build_prompt(question: Question, *, style: str = "default", layout: str = "jsonl") -> str:
    """The user text for ``question`` (the visual tokens come before it)."""
    if style == "default" or layout == "jsonl":
        return f"Question: {question.question}\nOptions:\n{_lines(question, '{letter}. {text}')}\nAnswer with the option letter only."
    if style != "official":
        raise ValueError(f"unknown prompt style {style!r}; choose from {', '.join(PROMPT_STYLES)}")
    options = _lines(question, "{letter}. {text}")
    if layout == "videomme":
        letters = ", ".join(question.letters[:-1]) + f", or {question.letters[-1]}"
        return f"{_OFFICIAL_VIDEOMME.format(letters=letters)}\n{question.question}\n{options}\nThe best answer is:"
    if layout == "longvideobench":
        return f"{question.question}\n{options}\nAnswer with the option's letter from the given choices directly."
    if layout == "mlvu":
        return f"Question: {question.question}\nOptions:\n{_lines(question, '({letter}) {text}')}\nOnly give the best option."
    if layout == "lvbench":
        return f"{question.question}\n{_lines(question, '({letter}) {text}')}\nAnswer the question with the option letter"
    raise ValueError(f"no official prompt for layout {layout!r}")


def reply_prefix(*, style: str = "default", layout: str = "jsonl") -> str:
    """The text that starts the reply: MLVU's official ``Best option: (``, else nothing."""
    return MLVU_REPLY_PREFIX if style == "official" and layout == "mlvu" else ""


def selection_text(question: Question, *, selector: str = "prompt") -> str | None:
    """What Tempo's and XComp's selection read (module docstring): None for the prompt itself, or the bare
    question."""
    if selector not in SELECTOR_TEXTS:
        raise ValueError(f"unknown selector text {selector!r}; choose from {', '.join(SELECTOR_TEXTS)}")
    return None if selector == "prompt" else question.question


# --- parsing --------------------------------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_SURROUNDING = " \t\r\n().:\"'"
_PHRASE = re.compile(r"the answer is|best option|answer\s*:", re.IGNORECASE)


def _standalone(letters: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])")


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def parse_answer(reply: str, question: Question) -> tuple[str | None, str]:
    """(letter or None, the rule that decided: ``letter``, ``phrase``, ``leading``, ``text``, ``unparsed``)."""
    letters = question.letters
    text = _THINK.sub("", reply or "").strip(_SURROUNDING)
    if len(text) == 1 and text in letters:
        return text, "letter"
    for phrase in _PHRASE.finditer(text):
        found = _standalone(letters).search(text, phrase.end())
        if found:
            return found.group(1), "phrase"
    if text and text[0] in letters and (len(text) == 1 or not text[1].isalpha()) and not _article(text):
        return text[0], "leading"
    reply_text = _normalise(text)
    matches = [i for i, o in enumerate(question.options) if _normalise(o) and _normalise(o) in reply_text]
    if len(matches) == 1:
        return LETTERS[matches[0]], "text"
    return None, "unparsed"


def _article(text: str) -> bool:
    """True for "A man ...": the article, not option A."""
    return text[0] == "A" and len(text) > 2 and text[1] == " " and text[2].islower()
