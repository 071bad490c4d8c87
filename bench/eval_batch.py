"""Benchmark: an evaluation's cost per question, a video's questions x methods x budgets run together (ours)
against a question-at-a-time loop, side by side in one run.

    python bench/eval_batch.py --json

Ours is what ``cli.py eval`` does (``evaluation.runner.answer_video``): all of a video's questions x
budgets x methods are one multi-question request (``pipeline.many``): the video is decoded and encoded
once, Tempo's relevance scores are computed once per question (for both budgets), question-independent
compressions once per budget, prompt prefixes are shared, and every answer is decoded in one batch. The
loop is how lmms-eval runs (it shards questions round-robin and keeps nothing between them): every question
at every budget is its own request from cold caches (caches cleared), decoding and encoding the video again
(it is granted the pipeline's methods-at-once sharing; lmms-eval runs one method per run). The answers must
be equal: each answer in the batch is token for token what it is alone.

Defaults: the tiny-random backbone on the CPU, 32 frames at 1 fps, the five methods at budgets 64 and 128,
16 new tokens (the evaluation's), two generated 640x360 30 fps H.264 videos (4 and 5 minutes) with four
questions each. Key: ``per_question_ratio`` (ours / loop, goal <= 0.4).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import common

from evaluation.runner import EvalConfig, answer_video, make_plan
from pipeline import cache

GOAL = 0.4
QUESTIONS = (
    ("What colour is the large circle?", ["red", "green", "blue", "yellow"]),
    ("What number does the clock show at the end?", ["10", "20", "30", "40"]),
    ("Which way does the pattern move?", ["left", "right", "up", "down"]),
    ("How many coloured bars are there?", ["four", "six", "seven", "eight"]),
)


def write_benchmark(videos: list[Path], folder: Path, per_video: int) -> Path:
    """A jsonl benchmark with ``per_video`` questions on each video (paths relative to ``folder``)."""
    rows = []
    for video in videos:
        for k in range(per_video):
            text, options = QUESTIONS[k % len(QUESTIONS)]
            rows.append({"qid": f"{video.stem}-{k}", "video": str(video.resolve()), "question": text,
                         "options": options, "answer": "A"})  # fmt: skip
    path = folder / "eval_batch.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def together(plan) -> list[dict]:
    """Ours: caches cleared once, then one request per video with all its questions x budgets."""
    cache.clear_caches()
    return [r for path, qs in plan.videos().items() for r in answer_video(plan, path, qs, set())]


def one_at_a_time(plan) -> list[dict]:
    """The loop: every question at every budget from cold caches."""
    records = []
    for path, questions in plan.videos().items():
        for question in questions:
            for budget in plan.budgets:
                cache.clear_caches()
                records += answer_video(dataclasses.replace(plan, budgets=(budget,)), path, [question], set())
    return records


def _answers(records: list[dict]) -> dict:
    return {r["key"]: (r["output"], r["error"], r["tokens_llm"]) for r in records}


def run(args) -> dict:
    videos = [common.generated_video(m * 60, size=(640, 360), fps=30, folder=args.out) for m in args.minutes]
    data = write_benchmark(videos, args.out / "eval_batch", args.questions)
    config = EvalConfig(
        data=data, layout="jsonl", out=args.out / "eval_batch", methods=tuple(args.methods.split(",")),
        budgets=tuple(args.budgets), max_frames=args.max_frames,
    )  # fmt: skip
    plan = make_plan(config)
    together(plan)  # warm-up: loads the backbone, first calls allocate
    rounds = []
    for _ in range(args.repeats):
        ours_s, ours = common.timed(together, plan)
        loop_s, loop = common.timed(one_at_a_time, plan)
        rounds.append({"ours_s": ours_s, "loop_s": loop_s, "same": _answers(ours) == _answers(loop)})
    questions = len(plan.questions)
    ours_s = common.median([r["ours_s"] for r in rounds])
    loop_s = common.median([r["loop_s"] for r in rounds])
    ratio = common.median([r["ours_s"] / r["loop_s"] for r in rounds])
    return {
        "per_question_ratio": round(ratio, 3),
        **common.goal(ratio, GOAL),
        "ours_per_question_s": round(ours_s / questions, 3),
        "loop_per_question_s": round(loop_s / questions, 3),
        "ratios": [round(r["ours_s"] / r["loop_s"], 3) for r in rounds],
        "same_answers": all(r["same"] for r in rounds),
        "errors": sorted({r["error"] for r in ours if r["error"]}),
        "questions": questions,
        "questions_per_video": args.questions,
        "videos": [{"name": v.name, "minutes": m} for v, m in zip(videos, args.minutes, strict=True)],
        "settings": {
            "backbone": plan.settings.backbone,
            "methods": list(plan.methods),
            "budgets": list(plan.budgets),
            "fps": plan.settings.fps,
            "max_frames": plan.settings.max_frames,
            "max_new_tokens": plan.settings.max_new_tokens,
        },  # fmt: skip
        "repeats": args.repeats,
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--minutes", type=float, nargs="+", default=[4.0, 5.0], help="generated videos' lengths")
    p.add_argument("--questions", type=int, default=4, help="questions per video (default 4)")
    p.add_argument("--methods", default="espresso,xcomp,tempo,uniform,pool")
    p.add_argument("--budgets", type=int, nargs="+", default=[64, 128])
    p.add_argument("--max-frames", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    args = p.parse_args(argv)
    common.setup(args)
    line = common.record("eval_batch", run(args))
    common.emit(line, args, _summary)
    return 0


def _summary(line: dict) -> str:
    return (
        f"{line['questions_per_video']} questions per video together {line['ours_per_question_s']} s per question, "
        f"one at a time {line['loop_per_question_s']} s: ratio {line['per_question_ratio']} "
        f"(goal {line['goal']}, met: {line['goal_met']}); same answers: {line['same_answers']}"
    )


if __name__ == "__main__":
    sys.exit(main())
