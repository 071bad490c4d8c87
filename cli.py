"""The arena's core from a terminal. Every command prints one JSON object on stdout.

    python cli.py probe VIDEO
    python cli.py sample VIDEO --fps F --max-frames N [--max-side S] [--out DIR]
    python cli.py fetch URL [--out DIR] [--max-duration S] [--max-size-mb M] [--allow-private]
    python cli.py compare --video PATH_OR_URL --question Q [--methods a,b] [--backbone NAME] [--budget B] [--json OUT]
    python cli.py replay CARD [--video PATH_OR_URL] [--json OUT]
    python cli.py eval --data PATH --format LAYOUT --out DIR [--methods a,b] [--budgets 1024,4096] [--limit N]
    python cli.py needle VIDEO... --out DIR [--seed S] [--seconds S]

`replay` exits with 1 when the answers or the token accounting differ from the card's.

A user error (a video we cannot use, a bad argument) prints one plain line on stderr and exits with code 2,
never a traceback. To add a command, write `add_<name>(commands)` that registers its parser and sets
`run=<function(args) -> dict>`, then append it to COMMANDS.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import media

USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix; its message is printed as is."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one plain line on stderr (exit code 2), not usage plus message."""

    def error(self, message: str) -> None:
        self.exit(USER_ERROR, f"{self.prog}: {message} (see --help)\n")


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _max_side(text: str) -> int | None:
    """--max-side: a positive pixel count, or 0 for full size."""
    return None if text.strip() == "0" else _positive(int)(text)


# -------------------------------------------------------------------------------------------- probe


def run_probe(args: argparse.Namespace) -> dict:
    return media.probe(args.video).to_dict()


def add_probe(commands) -> None:
    p = commands.add_parser("probe", help="describe a video: duration, fps, size as displayed, codec")
    p.add_argument("video", help="path to a video file")
    p.set_defaults(run=run_probe)


# ------------------------------------------------------------------------------------------- sample


def _write_frames(frames: media.Frames, folder: Path) -> list[str]:
    """Save every frame as folder/frame_00000.png, ... in timestamp order; returns the file names."""
    from PIL import Image

    try:
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for i, frame in enumerate(frames.frames):
            name = f"frame_{i:05d}.png"
            Image.fromarray(frame).save(folder / name)
            names.append(name)
    except OSError as e:
        raise UserError(
            f"Could not write frames to {str(folder)!r} ({e.strerror or e}); choose another --out folder."
        ) from e
    return names


def run_sample(args: argparse.Namespace) -> dict:
    frames = media.sample(args.video, fps=args.fps, max_frames=args.max_frames, max_side=args.max_side)
    height, width = frames.frames.shape[1:3]
    result = {
        "count": len(frames),
        "size": [int(width), int(height)],
        "timestamps": [round(float(t), 6) for t in frames.timestamps],
        "indices": [int(i) for i in frames.indices],
        "info": frames.info.to_dict() if frames.info else None,
    }
    if args.out is not None:
        result["out"] = str(args.out)
        result["files"] = _write_frames(frames, args.out)
    return result


def add_sample(commands) -> None:
    p = commands.add_parser("sample", help="sample timestamped frames uniformly over the whole video")
    p.add_argument("video", help="path to a video file")
    p.add_argument("--fps", type=_positive(float), default=1.0, help="frames per second of video (default 1)")
    p.add_argument(
        "--max-frames", type=_positive(int), default=256, help="at most this many frames (default 256)"
    )
    p.add_argument(
        "--max-side", type=_max_side, default=640, help="long side in pixels, 0 for full size (default 640)"
    )
    p.add_argument("--out", type=Path, help="also write frames there as frame_00000.png, ...")
    p.set_defaults(run=run_sample)


# -------------------------------------------------------------------------------------------- fetch


def run_fetch(args: argparse.Namespace) -> dict:
    fetched = media.fetch(
        args.url,
        out_dir=args.out,
        max_size_mb=args.max_size_mb,
        max_duration_s=args.max_duration,
        allow_private=args.allow_private,
    )
    path = fetched.keep(args.out)
    return {"path": str(path), "url": args.url, "info": {**fetched.info.to_dict(), "path": str(path)}}


def add_fetch(commands) -> None:
    p = commands.add_parser("fetch", help="download a video from a link (yt-dlp), within limits")
    p.add_argument("url", help="http or https link to a video or a page that plays one")
    p.add_argument("--out", type=Path, default=Path("."), help="folder to save the video in (default: here)")
    p.add_argument("--max-duration", type=_positive(float), default=3600, help="seconds (default 3600)")
    p.add_argument("--max-size-mb", type=_positive(float), default=500, help="MB (default 500)")
    p.add_argument(
        "--allow-private", action="store_true", help="allow local and private addresses (tests only)"
    )
    p.set_defaults(run=run_fetch)


# ---------------------------------------------------------------------------------- compare and replay


def _finished(events):
    """Drain a comparison's events (progress shown on a terminal's stderr); returns the final ``Finished``."""
    from pipeline.events import Finished, MethodDone, Progress

    finished = None
    for event in events:
        if isinstance(event, Progress) and sys.stderr.isatty():
            print(f"[{event.fraction:4.0%}] {event.message}", file=sys.stderr)
        elif isinstance(event, MethodDone) and event.report.error:
            print(f"{event.report.method} failed: {event.report.error}", file=sys.stderr)
        elif isinstance(event, Finished):
            finished = event
    return finished


def _write_card(card: dict, path: Path | None) -> None:
    from pipeline import runcard

    if path is not None:
        try:
            runcard.save(card, path)
        except OSError as e:
            raise UserError(f"Could not write the run card to {str(path)!r} ({e.strerror or e}).") from e


def run_compare(args: argparse.Namespace) -> dict:
    from pipeline import runcard
    from pipeline.compare import compare
    from pipeline.request import Request
    from pipeline.settings import Settings, parse_methods
    from pipeline.video import check_question

    settings = Settings.for_backbone(
        args.backbone,
        methods=parse_methods(args.methods),
        budget=args.budget,
        fps=args.fps,
        max_frames=args.max_frames,
        segment_frames=args.segment_frames,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
    )
    source = media.video_source(args.video, allow_paths=True)  # the CLI's own user may name local files
    events = compare(Request(source, args.question, settings, allow_private=args.allow_private))
    card = runcard.build(_finished(events), check_question(args.question), settings)
    _write_card(card, args.json)
    return card


def add_compare(commands) -> None:
    p = commands.add_parser(
        "compare", help="compare the methods on one video and question; prints the run card"
    )
    p.add_argument("--video", required=True, help="a video file, or an http(s) link to one")
    p.add_argument("--question", required=True)
    p.add_argument(
        "--methods",
        default="espresso,xcomp,tempo,uniform,pool",
        help="comma-separated, from espresso,xcomp,tempo,uniform,pool,tempo-6b.official (default: the first five)",
    )
    p.add_argument("--backbone", default="tiny-random", help="a model_zoo backbone (default tiny-random)")
    p.add_argument(
        "--budget", type=_positive(int), help="visual tokens into the LLM (default: the backbone's)"
    )
    p.add_argument("--fps", type=_positive(float), help="frames per second sampled (default: the backbone's)")
    p.add_argument(
        "--max-frames", type=_positive(int), help="at most this many frames (default: the backbone's)"
    )
    p.add_argument("--segment-frames", type=_positive(int), help="frames per segment (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=_positive(int), help="answer length cap")
    p.add_argument("--json", type=Path, help="also write the run card to this file")
    p.add_argument(
        "--allow-private", action="store_true", help="allow local and private addresses (tests only)"
    )
    p.set_defaults(run=run_compare)


def run_replay(args: argparse.Namespace) -> tuple[dict, int]:
    from pipeline import runcard

    card = runcard.load(args.card)
    video = None if args.video is None else media.video_source(args.video, allow_paths=True)
    events = runcard.replay(card, video=video, allow_private=args.allow_private)
    new = runcard.build(_finished(events), card["question"], runcard.settings_of(card))
    _write_card(new, args.json)
    differences = runcard.diff(card, new)
    for line in differences:
        print(f"differs: {line}", file=sys.stderr)
    return {"same": not differences, "differences": differences, "card": new}, 1 if differences else 0


def add_replay(commands) -> None:
    p = commands.add_parser("replay", help="re-run a run card; exit 1 when answers or accounting differ")
    p.add_argument("card", type=Path, help="a run card (.json) from the page or `compare --json`")
    p.add_argument("--video", help="the card's video (needed when it was an uploaded file)")
    p.add_argument("--json", type=Path, help="also write the new run card to this file")
    p.add_argument(
        "--allow-private", action="store_true", help="allow local and private addresses (tests only)"
    )
    p.set_defaults(run=run_replay)


# ------------------------------------------------------------------------------------- eval and needle


def _budgets(text: str) -> tuple[int, ...]:
    """--budgets: comma-separated positive whole numbers."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}")
    return tuple(_positive(int)(part) for part in parts)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_eval(args: argparse.Namespace) -> dict:
    import evaluation

    config = evaluation.EvalConfig(
        data=args.data,
        layout=args.format,
        out=args.out,
        video_root=args.video_root,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        budgets=args.budgets,
        backbone=args.backbone,
        limit=args.limit,
        fps=args.fps,
        max_frames=args.max_frames,
        prompt=args.prompt,
        selector=args.selector,
    )
    summary = evaluation.run(config, log=_log)
    if "results" not in summary:  # a process other than rank 0: its share is written
        return summary
    keep = ("benchmark", "backbone", "results", "aggregates", "paired")
    return {"out": str(args.out), **{k: summary[k] for k in keep}}


def add_eval(commands) -> None:
    from evaluation.benchmarks import READERS
    from evaluation.prompts import PROMPT_STYLES, SELECTOR_TEXTS

    p = commands.add_parser(
        "eval",
        help="accuracy per method and budget over a benchmark (torchrun/accelerate for many processes)",
    )
    p.add_argument("--data", type=Path, required=True, help="the annotation file (MLVU: its json folder)")
    p.add_argument("--format", required=True, choices=list(READERS), help="the annotation file's layout")
    p.add_argument("--video-root", type=Path, help="folder of the videos (default: the data file's folder)")
    p.add_argument("--methods", default="espresso,xcomp,tempo,uniform,pool", help="comma-separated methods")
    p.add_argument("--budgets", type=_budgets, help="comma-separated token budgets (default: the backbone's)")
    p.add_argument("--backbone", default="tiny-random", help="a model_zoo backbone (default tiny-random)")
    p.add_argument("--out", type=Path, required=True, help="output folder; a re-run there resumes")
    p.add_argument("--limit", type=_positive(int), help="only the first N questions, in file order")
    p.add_argument("--fps", type=_positive(float), help="frames per second sampled (default: the backbone's)")
    p.add_argument(
        "--max-frames", type=_positive(int), help="at most this many frames (default: the backbone's)"
    )
    p.add_argument("--prompt", choices=PROMPT_STYLES, default="default", help="prompt wording")
    p.add_argument(
        "--selector",
        choices=SELECTOR_TEXTS,
        default="prompt",
        help="what Tempo's and XComp's frame selection read: the whole prompt (default, as the authors' "
        "evaluations) or the bare question",
    )
    p.set_defaults(run=run_eval)


def run_needle(args: argparse.Namespace) -> dict:
    from evaluation import needle

    path = needle.make_benchmark(args.videos, args.out, seed=args.seed, seconds=args.seconds)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {"benchmark": str(path), "questions": len(rows), "videos": sorted({r["video"] for r in rows})}


def add_needle(commands) -> None:
    p = commands.add_parser("needle", help="make a needle benchmark (jsonl layout) from any videos")
    p.add_argument("videos", nargs="+", type=Path, help="video files to insert a needle card into")
    p.add_argument("--out", type=Path, required=True, help="folder for the new videos and needle.jsonl")
    p.add_argument("--seed", type=int, default=0, help="decides the needles' times, words and colours")
    p.add_argument(
        "--seconds", type=_positive(float), default=2.0, help="how long the card shows (default 2)"
    )
    p.set_defaults(run=run_needle)


# --------------------------------------------------------------------------------------------- main

COMMANDS: list[Callable] = [add_probe, add_sample, add_fetch, add_compare, add_replay, add_eval, add_needle]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cli.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except (media.VideoError, UserError, *_pipeline_errors()) as e:
        print(str(e), file=sys.stderr)
        return USER_ERROR
    except OSError as e:  # a path that cannot be read or written: the user's to fix, not a crash
        where = f" ({e.filename})" if e.filename else ""
        print(f"{e.strerror or e}{where}; check the paths given.", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    result, code = result if isinstance(result, tuple) else (result, 0)
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")
    return code


def _pipeline_errors() -> tuple[type[Exception], ...]:
    """The comparison's and the evaluation's user errors (imported lazily: probe/sample/fetch need no model
    code)."""
    errors: tuple[type[Exception], ...] = ()
    if "pipeline" in sys.modules:
        from model_zoo import ModelLoadError
        from pipeline.runcard import CardError
        from pipeline.settings import SettingsError
        from pipeline.video import QuestionError

        errors += (QuestionError, SettingsError, CardError, ModelLoadError)
    evaluation = {
        "evaluation.benchmarks": "BenchmarkError",
        "evaluation.runner": "EvalError",
        "evaluation.report": "ResultsError",
        "evaluation.needle": "NeedleError",
    }
    return errors + tuple(getattr(sys.modules[m], e) for m, e in evaluation.items() if m in sys.modules)


if __name__ == "__main__":
    sys.exit(main())
