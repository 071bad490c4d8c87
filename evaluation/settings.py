"""The evaluation's own bounds on a request: wider than the public page's, still bounded.

The page's bounds (``pipeline.bounds.PAGE_BOUNDS``) keep one visitor from holding the only GPU for minutes:
at most 1024 frames at 4 fps, a budget of 16384 tokens, a 2000-character question. An evaluation runs the
user's own benchmark on the user's own GPUs, where the papers' settings go beyond that (VideoChat-Flash and
XComp sample up to 512-1000 frames, hour-long LVBench videos want more, a budget may reach the backbone's
context). ``EvalSettings`` is the only way to those wider bounds: a ``Settings`` subclass whose class
attribute ``BOUNDS`` is ``EVAL_BOUNDS``. It is built by the evaluation's code alone (``runner.make_plan``);
the page builds ``Settings``, and a run card is read with ``Settings.from_dict``, so neither can reach it.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.bounds import SETTING_BOUNDS, Bound, RequestBounds
from pipeline.settings import Settings

#: Qwen3-VL's native context (262,144 tokens): no budget beyond it can be answered at all.
MAX_BUDGET = 262_144

#: What an evaluation may ask for. Budget up to the backbone's context; up to 4096 frames (at 640 pixels a
#: side, about 2.7 GiB of decoded frames, 0.9 M tokens before compression on Qwen3-VL); sampling up to
#: 30 fps (a short clip's every frame); a prompt of up to 16000 characters (the longest multiple-choice
#: prompts with their options). Everything else stays within the page's bounds.
EVAL_BOUNDS = RequestBounds(
    {
        **SETTING_BOUNDS,
        "budget": Bound("the visual-token budget", int, SETTING_BOUNDS["budget"].low, MAX_BUDGET, 16),
        "fps": Bound("frames per second", float, 0.01, 30.0, 0.01),
        "max_frames": Bound("max frames", int, 2, 4096, 2),
    },
    max_question_chars=16_000,
)


class EvalSettings(Settings):
    """``Settings`` checked against ``EVAL_BOUNDS`` instead of the page's (see the module docstring)."""

    BOUNDS: ClassVar[RequestBounds] = EVAL_BOUNDS
