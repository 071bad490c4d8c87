"""Benchmark: the whole pipeline on a real-size Qwen3-VL-2B with random weights, every stage timed.

    python bench/realsize.py --json                       # 32 frames: fp32 on the CPU, bf16 on CUDA
    python bench/realsize.py --json --frames 16           # a shorter run
    python bench/realsize.py --json --tiny --frames 8     # the same code path in seconds (tiny backbone)

The backbone is the one ``bench/gpu.py`` builds (``gpu.backbone_for``: Qwen3-VL-2B's published
configuration, random weights, EOS ignored so that every answer decodes exactly --new-tokens tokens); the
pipeline's loader is made to answer with it (``serving``, as the tests' monkeypatch does), and every request
goes through ``pipeline.compare.compare`` on a generated 640x360 H.264 clip sampled at 1 fps to --frames
frames, budget 512, 16 new tokens. One round, in this order (the model is built and warmed first on a
2-frame comparison, which no timing includes):

1. ``first``: the five-method comparison, caches cleared (probe, sample, one encode, five compressions,
   five answers decoded as one batch);
2. ``followup``: another question on the same video (the caches of step 1 warm);
3. ``uncompressed``: the same frames uncompressed (``uniform`` at a budget covering every visual token: the
   stock Qwen3-VL input), one new token, encoded tokens from the cache: its prefill is the reference for
   each method's prefill;
4. ``separate``: each method alone, caches cleared before each (each pays its own probe, sample, encode).

Every request records its wall time, the pipeline's own stage times (``Finished.shared_timings``: fetch,
probe, decode, encode, total; ``MethodReport.timings``: compress, prefill, decode, answer, what came from
the caches), tokens, the load average it started at, and its peak memory (CUDA's peak allocated, or this
process's sampled resident memory: ``gpu.Meter``).

Floors, from those stage times (printed beside each ratio; goals on a 2-core CPU at 32 frames: follow-up
<= 0.25 of the first, shared <= 0.5 of separate, each within 1.2x of its floor):

* follow-up: what a follow-up cannot skip, as its own stages measured it: the question-conditioned methods'
  scoring (XComp's windows, Tempo's relevance prompts: only the question's rows over cached prefixes) and
  every method's answer prefill (XComp's and Tempo's whole prompts; the others' question rows over their
  cached prefixes), plus the batched decode; over the first question's wall time;
* shared: one sample and one encode (the shared run's), every method's own compression and answer prefill
  as measured in its separate run, plus the shared run's batched decode; over the separate runs' total.

Results go to bench/results/realsize-<date>.jsonl with the machine (load average included).
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import common
import gpu
import torch

import compressors
import model_zoo
from pipeline import cache
from pipeline.settings import Settings

FIRST = "What happens in the video? Describe the main events in order."
FOLLOW_UP = "What colour is the square at the end?"
FOLLOWUP_GOAL = 0.25
SHARED_GOAL = 0.5
FLOOR_GOAL = 1.2  # each ratio within this factor of its floor
REFERENCE = "uniform"  # at a budget covering every token: the stock, uncompressed input


# --- the backbone, served to the pipeline -------------------------------------------------------------------


@contextmanager
def serving(backbone):
    """Inside the block the pipeline's loader (``model_zoo.load_backbone``, which ``pipeline.shared`` calls)
    answers with ``backbone`` for its name, whatever the device asked; other names load as usual."""
    original = model_zoo.load_backbone

    def load(name, *, device=None, revision=None):
        return backbone if name == backbone.spec.name else original(name, device=device, revision=revision)

    model_zoo.load_backbone = load
    try:
        yield
    finally:
        model_zoo.load_backbone = original


# --- one request --------------------------------------------------------------------------------------------


def request(meter: gpu.Meter, video: Path, question: str, settings: Settings, *, clear: bool) -> dict:
    """One ``compare`` request: wall seconds, peak memory, the load it started at, its stages, the Finished."""
    if clear:
        cache.clear_caches()
    load = round(os.getloadavg()[0], 2)
    with meter.measure() as m:
        _, finished = common.run_comparison(video, question, settings)
    return {
        "wall_s": round(m["seconds"], 3),
        "peak_mb": m["peak_mb"],
        "load_avg_1m": load,
        "stages": stages(finished),
        "finished": finished,
    }


def stages(finished) -> dict:
    """The pipeline's own stage times (s) of one request: shared ones, and per method its stages, tokens,
    new tokens, memory and what came from the caches."""
    methods = {}
    for name, r in finished.reports.items():
        t = r.timings
        methods[name] = {
            **{
                k: round(t[k], 4) for k in ("compress", "prefill", "decode", "answer") if t.get(k) is not None
            },
            "reused": t.get("reused", []),
            "tokens": r.tokens.get("llm_input"),
            "new_tokens": r.tokens.get("answer"),
            "memory": r.memory,
            **({"error": r.error} if r.error else {}),
        }
    return {"shared": {k: round(v, 4) for k, v in finished.shared_timings.items()}, "methods": methods}


def prepare_s(run: dict) -> float:
    """Fetch, probe and frame decoding of one request (s)."""
    shared = run["stages"]["shared"]
    return sum(shared.get(k, 0.0) for k in ("fetch", "probe", "decode"))


def batch_decode_s(run: dict) -> float:
    """The batched decode's wall time: each method's ``decode`` is the wall time of the steps it took part
    in, so the longest is the whole batch."""
    return max((m.get("decode", 0.0) for m in run["stages"]["methods"].values()), default=0.0)


def _stage(run: dict, method: str, key: str) -> float:
    return run["stages"]["methods"][method].get(key, 0.0)


# --- floors -------------------------------------------------------------------------------------------------


def conditioned(methods) -> list[str]:
    """The methods whose compression depends on the question (XComp, Tempo)."""
    return [m for m in methods if getattr(compressors.COMPRESSORS[m], "question_conditioned", True)]


def followup_floor_s(follow: dict, methods) -> float:
    """What a follow-up cannot skip, from its own stages: the question-conditioned scoring, every answer's
    prefill (over cached prefixes where the method allows), the batched decode."""
    scoring = sum(_stage(follow, m, "compress") for m in conditioned(methods))
    prefill = sum(_stage(follow, m, "prefill") for m in methods)
    return scoring + prefill + batch_decode_s(follow)


def shared_floor_s(first: dict, separate: dict[str, dict], methods) -> float:
    """What a shared run cannot skip: one sample and one encode (the shared run's), each method's own
    compression and answer prefill as measured alone, and the shared run's batched decode."""
    own = sum(_stage(separate[m], m, "compress") + _stage(separate[m], m, "prefill") for m in methods)
    encode = first["stages"]["shared"].get("encode", 0.0)
    return prepare_s(first) + encode + own + batch_decode_s(first)


def ratio_entry(value_s: float, over_s: float, floor_s: float, goal: float) -> dict:
    """A ratio beside its floor and goals: ratio <= goal, and ratio within FLOOR_GOAL x the floor."""
    ratio, floor = value_s / over_s, floor_s / over_s
    return {
        "ratio": round(ratio, 3),
        "floor": round(floor, 3),
        "ratio_over_floor": round(ratio / floor, 3) if floor > 0 else None,
        **common.goal(ratio, goal),
        "floor_goal": f"<= {FLOOR_GOAL}x floor",
        "floor_goal_met": bool(ratio <= FLOOR_GOAL * floor),
        "seconds": round(value_s, 3),
        "over_seconds": round(over_s, 3),
        "floor_seconds": round(floor_s, 3),
    }


# --- the run ------------------------------------------------------------------------------------------------


def settings_for(backbone, args) -> Settings:
    return Settings.for_backbone(
        backbone.spec.name,
        budget=args.budget,
        fps=1.0,
        max_frames=args.frames,
        max_new_tokens=args.new_tokens,
    )


def covering(tokens: int) -> int:
    """The smallest budget (a multiple of 16, as the settings' bounds step) that keeps ``tokens`` tokens."""
    return int(16 * math.ceil(tokens / 16))


def measure(backbone, meter: gpu.Meter, video: Path, settings: Settings) -> dict:
    """The four steps of the module docstring, on ``video``; every request's record (Finished dropped)."""
    methods = settings.methods
    common.run_comparison(video, FIRST, dataclasses.replace(settings, max_frames=2, max_new_tokens=2))
    first = request(meter, video, FIRST, settings, clear=True)
    follow = request(meter, video, FOLLOW_UP, settings, clear=False)
    raw = first["finished"].reports[methods[0]].tokens["raw"]
    reference_settings = dataclasses.replace(
        settings, methods=(REFERENCE,), budget=covering(raw), max_new_tokens=1
    )
    reference = request(meter, video, FIRST, reference_settings, clear=False)
    separate = {
        m: request(meter, video, FIRST, dataclasses.replace(settings, methods=(m,)), clear=True)
        for m in methods
    }
    answers = {m: r.answer for m, r in first["finished"].reports.items()}
    alone = {m: separate[m]["finished"].reports[m].answer for m in methods}
    runs = {"first": first, "followup": follow, "uncompressed": reference, **separate}
    return {
        "runs": runs,
        "raw_tokens": raw,
        "frames": first["finished"].prepared.real_frames,
        "same_answers_alone": answers == alone,
        "errors": {
            m: r.error for run in runs.values() for m, r in run["finished"].reports.items() if r.error
        },
    }


def summary_of(measured: dict, methods) -> dict:
    """Ratios with their floors and goals, each method's prefill against the uncompressed one, memory."""
    runs = measured["runs"]
    first, follow, reference = runs["first"], runs["followup"], runs["uncompressed"]
    separate = {m: runs[m] for m in methods}
    separate_s = sum(r["wall_s"] for r in separate.values())
    ref = reference["stages"]["methods"][REFERENCE]
    prefills = {
        m: {
            "prefill_s": _stage(first, m, "prefill"),
            "tokens": first["stages"]["methods"][m]["tokens"],
            "vs_uncompressed": round(_stage(first, m, "prefill") / ref["prefill"], 3)
            if ref["prefill"]
            else None,
        }
        for m in methods
    }
    return {
        "followup_vs_first": ratio_entry(
            follow["wall_s"], first["wall_s"], followup_floor_s(follow, methods), FOLLOWUP_GOAL
        ),
        "shared_vs_separate": ratio_entry(
            first["wall_s"], separate_s, shared_floor_s(first, separate, methods), SHARED_GOAL
        ),
        "uncompressed_prefill": {
            "prefill_s": ref["prefill"],
            "tokens": ref["tokens"],
            "equals_raw": ref["tokens"] == measured["raw_tokens"],
        },
        "prefill_vs_uncompressed": prefills,
        "peak_mb": {name: run["peak_mb"] for name, run in runs.items()},
    }


def run(args, device: torch.device) -> dict:
    meter = gpu.Meter(device)
    build_s, backbone = common.timed(gpu.backbone_for, args, device)
    weights_mb = meter.allocated_mb()
    settings = settings_for(backbone, args)
    seconds = args.frames / settings.fps + 1  # the clip yields --frames frames at the sampling rate
    video = args.video or common.generated_video(seconds, size=(640, 360), fps=30, folder=args.out)
    load_start = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    with serving(backbone):
        measured = measure(backbone, meter, video, settings)
    runs = measured.pop("runs")
    for r in runs.values():
        r.pop("finished")
    return {
        **summary_of(measured | {"runs": runs}, settings.methods),
        "same_answers_alone": measured["same_answers_alone"],
        "errors": measured["errors"],
        "frames": measured["frames"],
        "raw_tokens": measured["raw_tokens"],
        "runs": runs,
        "model": {
            "config": "tiny-random" if args.tiny else "Qwen3-VL-2B (hand-written from the published numbers)",
            "parameters_m": round(sum(p.numel() for p in backbone.model.parameters()) / 1e6, 1),
            "dtype": str(backbone.dtype),
            "weights_mb": weights_mb,
            "build_s": round(build_s, 2),
        },
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_1m_at_start": load_start,
        "measure_s": round(time.perf_counter() - started, 1),
        "settings": {
            "backbone": settings.backbone,
            "budget": settings.budget,
            "fps": settings.fps,
            "max_frames": settings.max_frames,
            "segment_frames": settings.segment_frames,
            "new_tokens": settings.max_new_tokens,
            "methods": list(settings.methods),
            "video": video.name,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--frames", type=int, default=32, help="frames sampled (default 32)")
    p.add_argument("--budget", type=int, default=512, help="token budget (default 512)")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens each answer decodes (default 16)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--tiny", action="store_true", help="the tiny-random model instead of the real-size one")
    p.add_argument("--bf16-on-cpu", action="store_true", help="real-size model in bf16 on the CPU too")
    p.add_argument("--video", type=Path, help="use this video instead of the generated clip")
    p.set_defaults(threads=None)
    args = p.parse_args(argv)
    if args.threads is None:  # real size: large matmuls use both cores; tiny ops wait on a second thread
        args.threads = 1 if args.tiny else 2
    common.setup(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    line = common.record("realsize", run(args, device), device=device)
    common.emit(line, args, _summary)
    return 0


def _summary(line: dict) -> str:
    parts = []
    for key in ("followup_vs_first", "shared_vs_separate"):
        r = line[key]
        parts.append(
            f"{key}: {r['ratio']} (floor {r['floor']}, goal {r['goal']} met: {r['goal_met']}, "
            f"within {FLOOR_GOAL}x floor: {r['floor_goal_met']})"
        )
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
