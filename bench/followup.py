"""Benchmark: a follow-up question on the same video against the first question, side by side.

    python bench/followup.py --json

Each round clears the caches, asks the first question (five methods: probe, decode, encode, compress,
answer), then a different question on the same video (probe, frames and tokens come from the caches; the
question-independent compressions too; XComp's windows, Tempo's relevance prompts and the question-independent
answers run only the new question's tokens over their cached prompt prefixes), then the follow-up question again with another
budget (Tempo's relevance scores come from the cache too), then the follow-up question cold (caches cleared
again) to check that the cached run answers exactly as a cold one. The backbone is loaded and warmed before
timing; medians over interleaved rounds. Key: ``followup_vs_first_ratio`` (goal <= 0.3).

Defaults as in bench/compare.py: the tiny-random backbone on the CPU, 32 frames at 1 fps, budget 64, 64 new
tokens, a generated 5-minute 640x360 30 fps H.264 video.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import common
from compare import _settings, _video, settings_from, warm_up

from pipeline import cache
from pipeline.bounds import SETTING_BOUNDS

GOAL = 0.3
FIRST = "What happens in the video?"
FOLLOW_UP = "What colour is the square at the end?"
REPRODUCIBLE = ("answer", "error", "tokens", "kept", "segments")


def one_round(video: Path, settings, rebudget: int) -> dict:
    cache.clear_caches()
    first_s, first = common.run_comparison(video, FIRST, settings)
    follow_s, follow = common.run_comparison(video, FOLLOW_UP, settings)
    stats = cache.cache_stats()
    rebudget_s, _ = common.run_comparison(video, FOLLOW_UP, dataclasses.replace(settings, budget=rebudget))
    relevance_hits = cache.cache_stats()["relevance"]["hits"] - stats["relevance"]["hits"]
    cache.clear_caches()
    cold_s, cold = common.run_comparison(video, FOLLOW_UP, settings)
    return {
        "first_s": first_s,
        "followup_s": follow_s,
        "rebudget_s": rebudget_s,
        "cold_followup_s": cold_s,
        "cache_hits_after_followup": {k: v["hits"] for k, v in stats.items()},
        "relevance_hits_on_rebudget": relevance_hits,
        "followup_equals_cold": _reproducible(follow) == _reproducible(cold),
        "errors": common.errors(first) | common.errors(follow),
        "stages": {"first": common.stage_times(first), "followup": common.stage_times(follow)},
    }


def _reproducible(finished) -> dict:
    return {m: {k: getattr(r, k) for k in REPRODUCIBLE} for m, r in finished.reports.items()}


def run(args) -> dict:
    settings = settings_from(args)
    rebudget = settings.budget * 3 // 4  # another budget, within what a comparison may ask for
    if rebudget < SETTING_BOUNDS["budget"].low:
        rebudget = settings.budget + SETTING_BOUNDS["budget"].low
    video = args.video or common.generated_video(args.minutes * 60, size=(640, 360), fps=30, folder=args.out)
    warm_up(video, settings)
    rounds = [one_round(video, settings, rebudget) for _ in range(args.repeats)]

    def ratio(key: str, over: str = "first_s") -> float:
        return common.median([r[key] / r[over] for r in rounds])

    main_ratio = ratio("followup_s")
    return {
        "followup_vs_first_ratio": round(main_ratio, 3),
        **common.goal(main_ratio, GOAL),
        "first_s": round(common.median([r["first_s"] for r in rounds]), 3),
        "followup_s": round(common.median([r["followup_s"] for r in rounds]), 3),
        "followup_vs_cold_followup_ratio": round(ratio("followup_s", "cold_followup_s"), 3),
        "same_question_new_budget_vs_first_ratio": round(ratio("rebudget_s"), 3),
        "rebudget": rebudget,
        "ratios": [round(r["followup_s"] / r["first_s"], 3) for r in rounds],
        "followup_equals_cold": all(r["followup_equals_cold"] for r in rounds),
        "relevance_hits_on_rebudget": rounds[-1]["relevance_hits_on_rebudget"],
        "cache_hits_after_followup": rounds[-1]["cache_hits_after_followup"],
        "errors": rounds[-1]["errors"],
        "stages": rounds[-1]["stages"],
        "video": _video(video),
        "settings": _settings(settings),
        "repeats": args.repeats,
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    common.add_comparison_args(p)
    args = p.parse_args(argv)
    common.setup(args)
    line = common.record("followup", run(args))
    common.emit(line, args, _summary)
    return 0


def _summary(line: dict) -> str:
    return (
        f"first question {line['first_s']} s, follow-up {line['followup_s']} s: ratio "
        f"{line['followup_vs_first_ratio']} (goal {line['goal']}, met: {line['goal_met']}); "
        f"same answers as cold: {line['followup_equals_cold']}"
    )


if __name__ == "__main__":
    sys.exit(main())
