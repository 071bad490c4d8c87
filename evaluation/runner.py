"""One evaluation run: read the benchmark, take this process's videos, answer, append records, merge.

    run(EvalConfig(data=..., layout="videomme", out=..., methods=(...), budgets=(1024, 4096)))

Per video, every question x budget x method still to do is one call into the pipeline
(``adapter.answer_video``): the video is sampled and encoded once and every answer decoded in one batch.
Each answer becomes one record per method (``_record``): the gold and parsed letters, the raw output, the tokens the LLM received, the kept
frames' timestamps, whether a kept frame lies inside the needle's span (needle benchmarks), timings, and the
error when there is one. A video that cannot be read is a recorded failure for all its questions, and the
run goes on. Rank 0 merges every process's records and writes the summaries (``evaluation.report``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av

import media
from evaluation import adapter, benchmarks, distributed, report, store
from evaluation.adapter import Ask
from evaluation.benchmarks import Question
from evaluation.prompts import (
    MAX_NEW_TOKENS,
    PROMPT_STYLES,
    SELECTOR_TEXTS,
    build_prompt,
    parse_answer,
    reply_prefix,
    selection_text,
)
from evaluation.settings import EvalSettings
from model_zoo import ModelLoadError
from pipeline.columns import DEFAULT_COLUMNS
from pipeline.settings import SettingsError, parse_methods
from pipeline.video import QuestionError, check_question

Log = Callable[[str], None]


class EvalError(ValueError):
    """An evaluation that cannot start as asked (the message is one sentence saying what to fix)."""


@dataclass(frozen=True)
class EvalConfig:
    """The command line's arguments (``cli.py eval``). ``video_root`` defaults to the data file's folder;
    ``budgets``, ``fps`` and ``max_frames`` to the backbone's, each within ``evaluation.settings``'s bounds;
    ``selector``: what Tempo's and XComp's selection read (``evaluation.prompts.selection_text``)."""

    data: Path
    layout: str
    out: Path
    video_root: Path | None = None
    methods: tuple[str, ...] = DEFAULT_COLUMNS
    budgets: tuple[int, ...] | None = None
    backbone: str = "tiny-random"
    limit: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    prompt: str = "default"
    selector: str = "prompt"


def _check(config: EvalConfig) -> None:
    if config.layout not in benchmarks.READERS:
        raise EvalError(f"Unknown layout {config.layout!r}; choose from {', '.join(benchmarks.READERS)}.")
    if config.prompt not in PROMPT_STYLES:
        raise EvalError(f"Unknown prompt {config.prompt!r}; choose from {', '.join(PROMPT_STYLES)}.")
    if config.selector not in SELECTOR_TEXTS:
        raise EvalError(
            f"Unknown selector text {config.selector!r}; choose from {', '.join(SELECTOR_TEXTS)}."
        )
    if config.budgets is not None and (not config.budgets or min(config.budgets) < 1):
        raise EvalError("Every budget must be a whole number of visual tokens, at least 1.")
    if config.limit is not None and config.limit < 1:
        raise EvalError("--limit must be at least 1.")
    if not Path(config.data).exists():
        raise EvalError(f"The benchmark file {str(config.data)!r} does not exist; check --data.")
    if config.video_root is not None and not Path(config.video_root).is_dir():
        raise EvalError(f"The video root {str(config.video_root)!r} is not a folder; check --video-root.")
    if Path(config.out).exists() and not Path(config.out).is_dir():
        raise EvalError(f"--out {str(config.out)!r} is a file; give a folder for the outputs.")


@dataclass
class Plan:
    """What this run must answer: the questions, every (question, method, budget) key, the settings."""

    config: EvalConfig
    questions: list[Question]
    bench_hash: str
    settings: EvalSettings  # methods and the first budget; each call replaces the methods
    methods: tuple[str, ...]
    budgets: tuple[int, ...]
    video_root: Path
    fingerprints: dict[str, str]  # per method: everything besides the budget that decides its answers

    def key(self, question: Question, method: str, budget: int) -> str:
        return store.record_key(self.bench_hash, question.qid, method, budget, self.fingerprints[method])

    def keys(self) -> list[str]:
        """Every key, in file order of the questions, then methods (column order), then budgets."""
        return [self.key(q, m, b) for q in self.questions for m in self.methods for b in self.budgets]

    def ask(self, question: Question) -> Ask:
        """What the pipeline is asked for ``question``: the prompt, the selectors' text, the reply prefix."""
        style, layout = self.config.prompt, self.config.layout
        return Ask(
            build_prompt(question, style=style, layout=layout),
            selection=selection_text(question, selector=self.config.selector),
            reply_prefix=reply_prefix(style=style, layout=layout),
        )

    def videos(self) -> dict[Path, list[Question]]:
        """Questions per video file, videos in order of first appearance."""
        groups: dict[Path, list[Question]] = {}
        for q in self.questions:
            groups.setdefault(q.video_path(self.video_root), []).append(q)
        return groups


def make_plan(config: EvalConfig) -> Plan:
    """Check the arguments, read the benchmark and fix the settings (raises EvalError, BenchmarkError,
    SettingsError for a mistake the user can fix)."""
    _check(config)
    methods = parse_methods(config.methods)
    if not methods:
        raise EvalError("Give at least one method with --methods.")
    questions = benchmarks.read(config.data, config.layout)[: config.limit]
    settings = EvalSettings.for_backbone(
        config.backbone, methods=methods, budget=(config.budgets or (None,))[0], fps=config.fps,
        max_frames=config.max_frames, max_new_tokens=MAX_NEW_TOKENS,
    )  # fmt: skip
    budgets = tuple(dict.fromkeys(config.budgets or (settings.budget,)))
    shared = {k: v for k, v in settings.to_dict().items() if k not in ("methods", "budget", "method_options")}
    fingerprints = {
        m: store.fingerprint(
            {
                "settings": shared,
                "options": settings.options_for(m),
                "prompt": config.prompt,
                "layout": config.layout,
                "reply_prefix": reply_prefix(style=config.prompt, layout=config.layout),
                "selector": config.selector,
            }
        )
        for m in methods
    }
    root = (
        Path(config.video_root)
        if config.video_root is not None
        else _default_root(Path(config.data), config.layout)
    )
    return Plan(
        config, questions, benchmarks.file_hash(config.data), settings, methods, budgets, root, fingerprints
    )


def _default_root(data: Path, layout: str) -> Path:
    """The data file's folder; for MLVU, the folder that holds its ``json/`` and ``video/`` folders."""
    data = data.resolve()
    folder = data if data.is_dir() else data.parent
    return folder.parent if layout == "mlvu" and folder.name == "json" else folder


def limits_for(settings: EvalSettings) -> media.Limits:
    """The app's limits protect a public page; benchmark videos are the user's own and run for hours
    (LVBench's average more than an hour), so only the decoded frames stay bounded."""
    return media.Limits(
        max_duration_s=48 * 3600.0,
        max_size_mb=float(1 << 20),
        max_frames=max(settings.max_frames, 2),
        max_output_mb=16384.0,
        decode_time_limit_s=3600.0,
    )


# --- the run ------------------------------------------------------------------------------------------


def run(config: EvalConfig, *, log: Log | None = None) -> dict:
    """Answer this process's share and, on rank 0, merge everything and write the summaries.

    Returns rank 0's summary (``report.summarize``) or, elsewhere, ``{"rank", "world", "videos"}``.
    """
    log = log or (lambda line: None)
    plan = make_plan(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    process = distributed.Process()
    process.start(out)
    mine = _share(plan, process)
    done = store.done_keys(out)
    videos = plan.videos()
    with store.PartWriter(out, process.rank) as writer:
        for i, path in enumerate(mine, start=1):
            questions = videos[path]
            log(
                f"[{process.rank}/{process.world}] video {i}/{len(mine)}: {path.name} ({len(questions)} questions)"
            )
            for record in answer_video(plan, path, questions, done):
                writer.write(record)
    process.finish(out)
    if process.rank != 0:
        return {"rank": process.rank, "world": process.world, "videos": len(mine)}
    process.wait_for_others(out, log=log)
    records = store.merge(out, plan.keys())
    return report.write(out, plan, records, world=process.world)


def _share(plan: Plan, process: distributed.Process) -> list[Path]:
    """This process's videos: all of them alone; else its longest-first share (``distributed.assign``)."""
    videos = plan.videos()
    if process.world == 1:
        return list(videos)
    seconds = [(str(p), _duration(p, qs)) for p, qs in videos.items()]
    return [Path(p) for p in distributed.assign(seconds, process.world)[process.rank]]


def _duration(path: Path, questions: list[Question]) -> float:
    """The benchmark's own duration when it gives one, else the container header's (0 when unreadable):
    every process reads it for every video, so nothing is decoded (``media.probe`` reads every packet)."""
    if questions[0].duration:
        return questions[0].duration
    try:
        with av.open(str(path)) as container:
            return float(container.duration or 0) / av.time_base
    except (av.FFmpegError, OSError):
        return 0.0


def answer_video(plan: Plan, path: Path, questions: list[Question], done: set[str]) -> Iterator[dict]:
    """Records of every (question, method, budget) of one video not in ``done``, in plan order, from one
    pipeline call: the questions, budgets and methods with anything left to do (a cell whose other
    methods are done is answered again and not recorded twice). A prompt too long is a failure of its
    question alone; an unreadable video fails everything left and ends the video."""
    todo = {
        (i, b): [m for m in plan.methods if plan.key(q, m, b) not in done]
        for i, q in enumerate(questions)
        for b in plan.budgets
    }
    todo = {cell: methods for cell, methods in todo.items() if methods}
    if not todo:
        return
    asks, refused = _asks(plan, questions, {i for i, _ in todo})
    sent = sorted(asks)
    budgets = [b for b in plan.budgets if any((i, b) in todo for i in sent)]
    methods = tuple(m for m in plan.methods if any(m in todo[c] for c in todo if c[0] in asks))
    answers, error, call_s = {}, None, 0.0
    if sent:
        answers, error, call_s = _call(plan, path, [asks[i] for i in sent], budgets, methods)
    share = call_s / max(len(sent) * len(budgets), 1)  # one cell's share of the video's call
    for (i, budget), cell_methods in todo.items():
        question = questions[i]
        for method in cell_methods:
            if i in refused:
                yield _failed(plan, path, question, method, budget, refused[i], "question")
            elif error is not None:
                yield _failed(plan, path, question, method, budget, *error)
            else:
                yield _record(plan, path, question, method, budget, answers[(sent.index(i), budget)], share)


def _asks(plan: Plan, questions: list[Question], indices: set[int]) -> tuple[dict[int, Ask], dict[int, str]]:
    """The asks of the questions at ``indices``, and the one-sentence refusal of each prompt that is too long
    for the evaluation's bounds (``pipeline.video.check_question``, the pipeline's own check)."""
    asks, refused = {}, {}
    for i in sorted(indices):
        ask = plan.ask(questions[i])
        try:
            check_question(ask.prompt, plan.settings.BOUNDS.max_question_chars)
        except QuestionError as err:
            refused[i] = _sentence(err)
            continue
        asks[i] = ask
    return asks, refused


def _call(plan: Plan, path: Path, asks: list[Ask], budgets: list[int], methods: tuple[str, ...]):
    """(answers per (ask index, budget), None, seconds) from one pipeline call, or ({}, (error, stage), 0)
    when the call failed as a whole: ``video`` (unreadable), ``question`` or ``call`` (any other fault: the
    run goes on). A wrong setting or model ends the run: it would fail every video."""
    settings = dataclasses.replace(plan.settings, methods=methods)
    t0 = time.perf_counter()
    try:
        answers = adapter.answer_video(path, asks, budgets, settings, limits_for(settings))
    except (SettingsError, ModelLoadError):
        raise
    except media.VideoError as err:
        return {}, (str(err), "video"), 0.0
    except Exception as err:  # a prompt refused, or a fault in this one call: the run goes on
        stage = "question" if isinstance(err, QuestionError) else "call"
        return {}, (_sentence(err), stage), 0.0
    return answers, None, time.perf_counter() - t0


def _sentence(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _base(plan: Plan, path: Path, question: Question, method: str, budget: int) -> dict:
    """What every record says about its question (with the exact prompt, so a browser can re-ask it)."""
    try:
        video = str(path.relative_to(plan.video_root))
    except ValueError:
        video = str(path)
    return {
        "key": plan.key(question, method, budget),
        "qid": question.qid,
        "video": video,
        "method": method,
        "budget": budget,
        "gold": question.answer,
        "n_options": len(question.options),
        "groups": dict(question.groups),
        "question": question.question,
        "options": list(question.options),
        "prompt": build_prompt(question, style=plan.config.prompt, layout=plan.config.layout),
        "reply_prefix": reply_prefix(style=plan.config.prompt, layout=plan.config.layout),
    }


def _failed(plan, path, question, method, budget, error: str, stage: str) -> dict:
    return _base(plan, path, question, method, budget) | {
        "pred": None, "parse": "failed", "correct": False, "output": "", "tokens_llm": None,
        "tokens_raw": None, "kept_frames": [], "needle": _needle(question, None, None),
        "timings": {}, "error": error, "stage": stage,
    }  # fmt: skip


def _record(plan, path, question, method, budget, answers: adapter.Answers, call_s: float) -> dict:
    reply = answers.methods[method]
    pred, rule = parse_answer(reply.output, question) if reply.error is None else (None, "failed")
    return _base(plan, path, question, method, budget) | {
        "pred": pred, "parse": rule, "correct": pred == question.answer, "output": reply.output,
        "tokens_llm": reply.tokens_llm, "tokens_raw": reply.tokens_raw, "kept_frames": reply.kept_times,
        "needle": _needle(question, answers.sampled_times, reply.kept_times if reply.error is None else None),
        "timings": {"call": round(call_s, 4), **{k: round(v, 4) for k, v in reply.timings.items()}},
        "error": reply.error, "stage": "method" if reply.error else None,
    }  # fmt: skip


#: Frame timestamps here are rounded to 1 ms (``pipeline``'s frame references), a needle's span to 0.1 ms;
#: frames of any video up to 250 fps are more than 4 ms apart, so a 2 ms shift decides every frame right.
SPAN_TOLERANCE_S = 0.002


def in_span(times: list[float] | None, span: tuple[float, float]) -> bool | None:
    """Whether any of ``times`` is a frame of ``span`` [start, end) (None for None)."""
    if times is None:
        return None
    start, end = span[0] - SPAN_TOLERANCE_S, span[1] - SPAN_TOLERANCE_S
    return any(start <= t < end for t in times)


def _needle(question: Question, sampled: list[float] | None, kept: list[float] | None) -> dict | None:
    """For a needle question: its span, whether any sampled frame fell inside it (else no method could keep
    one) and whether the method kept one (None when the method failed)."""
    if question.needle is None:
        return None
    start, end = question.needle
    return {
        "start": start,
        "end": end,
        "sampled": in_span(sampled, question.needle),
        "kept": in_span(kept, question.needle),
    }
