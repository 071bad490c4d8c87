"""Benchmark: one five-method comparison against five single-method runs on the same video, side by side.

    python bench/compare.py --json

The five-method request probes, decodes and encodes the video once and every method reuses the work; the
alternative is what a visitor would pay running each method alone (caches cleared before each, so each run
pays its own probe, decode and encode). The backbone is loaded and warmed before timing (neither side pays
the load). Rounds are interleaved (shared, then the five singles) so load changes hit both alike; medians
are reported. Also checks that every method's answer is the same either way.

Defaults: the tiny-random backbone on the CPU with its registry defaults (32 frames at 1 fps, budget 64)
and 64 new tokens (the app's default), on a generated 5-minute 640x360 30 fps H.264 video (a phone clip at
the app's sampling size; made once in bench/out/). Key: ``shared_vs_separate_ratio`` (goal <= 0.5).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import common

from pipeline import cache
from pipeline.settings import Settings

GOAL = 0.5
QUESTION = "What happens in the video?"


def settings_from(args) -> Settings:
    return Settings.for_backbone(
        "tiny-random", max_frames=args.max_frames, max_new_tokens=args.max_new_tokens, budget=args.budget
    )


def warm_up(video: Path, settings: Settings) -> None:
    """Load the backbone and run every code path once (first calls allocate and initialise)."""
    cache.clear_caches()
    common.run_comparison(video, QUESTION, settings)
    cache.clear_caches()


def one_round(video: Path, settings: Settings) -> dict:
    """Shared five-method request, then each method alone; caches cleared before each request."""
    cache.clear_caches()
    shared_s, shared = common.run_comparison(video, QUESTION, settings)
    singles, single_answers, single_errors = {}, {}, {}
    for method in settings.methods:
        cache.clear_caches()
        seconds, finished = common.run_comparison(
            video, QUESTION, dataclasses.replace(settings, methods=(method,))
        )
        singles[method] = seconds
        single_answers.update(common.answers(finished))
        single_errors.update(common.errors(finished))
    return {
        "shared_s": shared_s,
        "singles_s": singles,
        "same_answers": common.answers(shared) == single_answers,
        "errors": common.errors(shared) | single_errors,
        "stages": common.stage_times(shared),
    }


def run(args) -> dict:
    settings = settings_from(args)
    video = args.video or common.generated_video(args.minutes * 60, size=(640, 360), fps=30, folder=args.out)
    warm_up(video, settings)
    rounds = [one_round(video, settings) for _ in range(args.repeats)]
    ratios = [r["shared_s"] / sum(r["singles_s"].values()) for r in rounds]
    shared = common.median([r["shared_s"] for r in rounds])
    separate = common.median([sum(r["singles_s"].values()) for r in rounds])
    ratio = common.median(ratios)
    return {
        "shared_vs_separate_ratio": round(ratio, 3),
        **common.goal(ratio, GOAL),
        "shared_s": round(shared, 3),
        "separate_sum_s": round(separate, 3),
        "separate_s": {
            m: round(common.median([r["singles_s"][m] for r in rounds]), 3) for m in settings.methods
        },
        "ratios": [round(x, 3) for x in ratios],
        "same_answers": all(r["same_answers"] for r in rounds),
        "errors": rounds[-1]["errors"],
        "stages_shared_run": rounds[-1]["stages"],
        "video": _video(video),
        "settings": _settings(settings),
        "repeats": args.repeats,
    }


def _video(path: Path) -> dict:
    import media

    info = media.probe(path)
    return {
        "name": path.name,
        "duration_s": round(info.duration, 2),
        "size": f"{info.width}x{info.height}",
        "fps": round(info.fps, 3),
        "mb": round(info.size_bytes / common.MB, 1),
    }


def _settings(s: Settings) -> dict:
    keys = ("backbone", "budget", "fps", "max_frames", "segment_frames", "max_side", "max_new_tokens")
    return {k: getattr(s, k) for k in keys} | {"methods": list(s.methods)}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    common.add_comparison_args(p)
    args = p.parse_args(argv)
    common.setup(args)
    line = common.record("compare", run(args))
    common.emit(line, args, _summary)
    return 0


def _summary(line: dict) -> str:
    return (
        f"five methods at once {line['shared_s']} s, five runs alone {line['separate_sum_s']} s: "
        f"ratio {line['shared_vs_separate_ratio']} (goal {line['goal']}, met: {line['goal_met']}); "
        f"same answers: {line['same_answers']}"
    )


if __name__ == "__main__":
    sys.exit(main())
