"""Benchmark: cost against video length, per method and for the uncompressed video, side by side.

    python bench/scaling.py --json

Generated videos of 1, 5, 20 and 60 minutes (160x90, 1 fps ``testsrc2``; made once in bench/out/) are sampled
at 0.2 fps (12, 60, 240 and 720 frames; at most --max-frames) and encoded once each on the tiny-random
backbone (CPU) at 15 tokens per group whatever the length (``TINY_PER_FRAME``). Then every method, and the uncompressed video (every group in the stock layout, what the
backbone would get without compression), compresses and answers (--new-tokens tokens). Per video and method:

* measured on the tiny backbone: tokens into the LLM, prompt length, seconds (compress, prefill, whole
  answer), peak resident memory above the start (sampled), and the tiny decoder's prefill FLOPs;
* estimated for the real-size Qwen3-VL-2B at the same frames: the frames as the app samples them
  (640x360) preprocessed by the checkpoint's rules give the token grid; each method's compressor runs on
  random features of that grid (width 8; the choices that decide token counts do not depend on the width)
  with stand-in relevance and attention hooks and the GPU budget (4096), giving its tokens into the LLM and,
  for XComp, the tokens each layer keeps; prefill TFLOPs and KV-cache size follow from ``bench/flops.py``
  (text tokens counted as 7 per timestamp plus 32 for the chat template and question). The vision tower's
  cost, the same for every method, is reported once per video.

Prints one JSON line; writes the plot to bench/out/scaling-<date>.png and, unless --no-save, copies it to
bench/results/scaling.png. Ratios: at the longest video, each method over the uncompressed reference.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

import common
import flops
import torch

import compressors
import media
import model_zoo
from compressors.base import passthrough
from model_zoo.preprocess import VideoPreprocessConfig, resized_frame_size
from model_zoo.qwen3_vl import VisualTokens, grid_positions
from model_zoo.tiny import TINY_PREPROCESS
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from pipeline.request import Request
from pipeline.settings import Settings
from pipeline.video import prepare

REFERENCE = "uncompressed"
QUESTION = "What happens in the video?"
REAL_BUDGET = 4096
REAL_FRAME = (360, 640)  # (height, width): what the app samples a 16:9 video to (max_side 640)
TIMESTAMP_TOKENS = 7  # "<12.5 seconds>" in Qwen's tokenizer: '<', digits, '.', digit, ' seconds', '>'
PROMPT_TOKENS = 32  # chat template and a short question
#: The tiny backbone's preprocessing without its whole-clip pixel cap, which would shrink every frame as the
#: clip grows (1 token per group at 720 frames): 15 tokens per group (160x90 → a 3x5 grid) at every length,
#: as the real checkpoint keeps ~120 per group at every length here (its per-frame minimum).
TINY_PER_FRAME = dataclasses.replace(TINY_PREPROCESS, max_pixels=1 << 40)


# --- measured on the tiny backbone ------------------------------------------------------------------------


def measure(backbone, video, spans, settings: Settings, method: str) -> dict:
    """Compress (or not, for the reference) and answer once; tokens, seconds, peak RSS, tiny FLOPs."""
    with torch.inference_mode(), common.PeakRSS() as memory:
        compress_s, result = common.timed(_compress, backbone, video, spans, settings, method)
        generation = backbone.generate(
            QUESTION, result.segments, keep=result.keep, max_new_tokens=settings.max_new_tokens
        )
        answer_s, stats = common.timed(lambda: generation.stats)
    text = stats["prompt_tokens"] - stats["visual_tokens"]
    lengths = [text + v for v in stats["per_layer_visual"]]
    tiny = flops.DecoderConfig.from_text_config(backbone.model.config.text_config, "tiny-random")
    return {
        "tokens_into_llm": stats["visual_tokens"],
        "prompt_tokens": stats["prompt_tokens"],
        "compress_s": round(compress_s, 4),
        "prefill_s": round(stats["prefill_s"], 4),
        "answer_s": round(answer_s, 4),
        "total_s": round(compress_s + answer_s, 4),
        "peak_rss_mb": memory.delta_mb,
        "tiny_prefill_gflops": round(flops.prefill_flops(tiny, lengths) / 1e9, 3),
    }


def _compress(backbone, video, spans, settings: Settings, method: str):
    if method == REFERENCE:
        return passthrough(REFERENCE, video, spans)
    compressor = compressors.build(method, **settings.options_for(method))
    return compressor.compress(video, spans, QUESTION, budget=settings.budget, hooks=backbone)


# --- estimated at real size -------------------------------------------------------------------------------


class StandInHooks:
    """Deterministic random relevance logits and window scores (token counts do not depend on them)."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self._rng = torch.Generator().manual_seed(0)

    def next_token_logits(self, prompts, *, system, user_text, words) -> torch.Tensor:
        return torch.randn(len(prompts), len(words), generator=self._rng)

    def window_scores(self, segments, question, *, windows, layers, keep) -> list[torch.Tensor]:
        return [torch.rand(len(layers), len(window), generator=self._rng) for window in windows]


def real_size_video(frames: int, group_times: torch.Tensor, padded: int) -> VisualTokens:
    """Random width-8 features on the token grid Qwen3-VL-2B gives ``frames`` frames of 640x360."""
    config = VideoPreprocessConfig()
    height, width = resized_frame_size(max(frames, 2), *REAL_FRAME, config)
    h, w = height // config.factor, width // config.factor
    groups = int(group_times.numel())
    rng = torch.Generator().manual_seed(1)
    embeds = torch.randn(groups, h * w, 8, generator=rng)
    return VisualTokens(
        embeds=embeds,
        deepstack=[torch.randn(embeds.shape, generator=rng) for _ in range(3)],
        grid=(h, w),
        group_times=group_times,
        positions=grid_positions(h, w).repeat(groups, 1, 1),
        grid_thw=(groups, 2 * h, 2 * w),
        frame_size=(height, width),
        num_frames=frames,
        padded=padded,
    )


def per_layer_visual(result, layers: int) -> list[int]:
    """Visual tokens each layer sees: the input count, reduced after each layer by the keep rule (LP-Comp)."""
    alive = torch.arange(result.llm_tokens)
    seen = []
    for layer in range(layers):
        seen.append(int(alive.numel()))
        if result.keep is not None and alive.numel():
            decision = result.keep(layer, alive)
            if decision is not None:
                alive = alive[decision]
    return seen


def estimate(video: VisualTokens, spans, settings: Settings, method: str) -> dict:
    cfg = flops.QWEN3VL_2B
    real = dataclasses.replace(settings, budget=REAL_BUDGET)
    if method == REFERENCE:
        result = passthrough(REFERENCE, video, spans)
    else:
        compressor = compressors.build(method, **real.options_for(method))
        result = compressor.compress(
            video, spans, QUESTION, budget=REAL_BUDGET, hooks=StandInHooks(cfg.layers)
        )
    text = PROMPT_TOKENS + TIMESTAMP_TOKENS * sum(1 for s in result.segments if s.text)
    lengths = [text + v for v in per_layer_visual(result, cfg.layers)]
    return {
        "tokens_into_llm": result.llm_tokens,
        "prefill_tflops": flops.tflops(flops.prefill_flops(cfg, lengths)),
        "kv_cache_gb": round(flops.kv_cache_bytes(cfg, lengths) / 1e9, 3),
    }


# --- one video, all methods ---------------------------------------------------------------------------------


def one_video(minutes: float, args, settings: Settings) -> dict:
    path = common.generated_video(minutes * 60, size=(160, 90), fps=1, gop=10, folder=args.out)
    limits = media.Limits(max_duration_s=max(3600.0, minutes * 60 + 60))
    decode_s, prepared = common.timed(_prepare, path, settings, limits)
    backbone = model_zoo.load_backbone(settings.backbone)
    frames = prepared.frames
    with torch.inference_mode(), common.PeakRSS() as memory:
        encode_s, video = common.timed(
            backbone.encode, frames.frames, frames.timestamps, preprocess=TINY_PER_FRAME
        )
    spans = prepared.spans
    methods = (REFERENCE, *args.methods)
    measured = {m: measure(backbone, video, spans, settings, m) for m in methods}
    real_video = real_size_video(prepared.real_frames, video.group_times, video.padded)
    real = {m: estimate(real_video, spans, settings, m) for m in methods}
    g, p = real_video.embeds.shape[:2]
    return {
        "minutes": minutes,
        "frames": prepared.real_frames,
        "groups": video.num_groups,  # ceil(frames / 2): Qwen3-VL duplicates the last of an odd count
        "raw_tokens": video.num_groups * video.tokens_per_group,
        "decode_s": round(decode_s, 3),
        "encode_s": round(encode_s, 3),
        "encode_peak_rss_mb": memory.delta_mb,
        "methods": measured,
        "real_size": {
            "frame_size": list(real_video.frame_size),
            "tokens_per_group": p,
            "raw_tokens": g * p,
            "vision_tflops": flops.tflops(flops.vision_flops(flops.QWEN3VL_2B_VISION, g, 4 * p)),
            "methods": real,
        },
    }


def _prepare(path, settings: Settings, limits: media.Limits):
    events = list(prepare(Request(path, "", settings, limits=limits), workdir=None))
    return events[-1]


# --- summary, plot --------------------------------------------------------------------------------------------


def ratios(videos: list[dict], methods) -> dict:
    """At the longest video: each method's tokens, real-size TFLOPs and measured seconds over the reference."""
    last = videos[-1]
    m, r = last["methods"], last["real_size"]["methods"]
    return {
        k: {
            "tokens": round(m[k]["tokens_into_llm"] / m[REFERENCE]["tokens_into_llm"], 4),
            "real_size_tflops": round(r[k]["prefill_tflops"] / r[REFERENCE]["prefill_tflops"], 4),
            "total_s": round(m[k]["total_s"] / m[REFERENCE]["total_s"], 3),
        }
        for k in methods
    }


def plot(videos: list[dict], methods, budget: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [v["minutes"] for v in videos]
    panels = [
        ("Tokens into the LLM (tiny, measured)", lambda v, m: v["methods"][m]["tokens_into_llm"]),
        (
            "Prefill TFLOPs, Qwen3-VL-2B (estimated)",
            lambda v, m: v["real_size"]["methods"][m]["prefill_tflops"],
        ),
        ("Compress + answer seconds (tiny, CPU)", lambda v, m: v["methods"][m]["total_s"]),
        (
            "KV cache after prefill, GB, Qwen3-VL-2B bf16 (estimated)",
            lambda v, m: v["real_size"]["methods"][m]["kv_cache_gb"],
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (title, value) in zip(axes.flat, panels, strict=True):
        for m in (REFERENCE, *methods):
            style = {"color": "black", "linewidth": 2.5, "linestyle": "--"} if m == REFERENCE else {}
            ax.plot(minutes, [value(v, m) for v in videos], marker="o", label=m, **style)
        ax.set(title=title, xlabel="video minutes", xscale="log", yscale="log")
        ax.set_xticks(minutes, [f"{x:g}" for x in minutes])
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].axhline(budget, color="grey", linestyle=":", label=f"budget {budget}")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Cost against video length: uncompressed grows, compressed methods stay within the budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> dict:
    settings = Settings.for_backbone(
        "tiny-random",
        fps=args.fps,
        max_frames=args.max_frames,
        budget=args.budget,
        max_new_tokens=args.new_tokens,
    )
    model_zoo.load_backbone(settings.backbone)
    one_video(min(args.minutes), args, settings)  # warm-up: first calls allocate and initialise
    videos = [one_video(m, args, settings) for m in sorted(args.minutes)]
    within = all(v["methods"][m]["tokens_into_llm"] <= settings.budget for v in videos for m in args.methods)
    within_real = all(
        v["real_size"]["methods"][m]["tokens_into_llm"] <= REAL_BUDGET for v in videos for m in args.methods
    )
    reference = [v["methods"][REFERENCE]["tokens_into_llm"] for v in videos]
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / f"scaling-{time.strftime('%Y-%m-%d', time.gmtime())}.png"
    plot(videos, args.methods, settings.budget, figure)
    return {
        "method_vs_uncompressed_at_longest": ratios(videos, args.methods),
        "uncompressed_tokens_growth": round(reference[-1] / reference[0], 2),
        "uncompressed_grows": all(a < b for a, b in zip(reference, reference[1:], strict=False)),
        "methods_within_budget": within,
        "methods_within_real_budget": within_real,
        "budget": settings.budget,
        "real_budget": REAL_BUDGET,
        "videos": videos,
        "settings": {
            "backbone": settings.backbone,
            "fps": settings.fps,
            "max_frames": settings.max_frames,
            "segment_frames": settings.segment_frames,
            "max_new_tokens": settings.max_new_tokens,
            "video": "testsrc2 160x90 at 1 fps, H.264, keyframe every 10 frames",
            "real_size_config": dataclasses.asdict(flops.QWEN3VL_2B),
            "real_size_frame": f"{REAL_FRAME[1]}x{REAL_FRAME[0]}",
        },
        "plot": _shown(figure),
    }


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (results name their files portably)."""
    path = path.resolve()
    return str(path.relative_to(common.ROOT)) if path.is_relative_to(common.ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 20, 60], help="video lengths")
    p.add_argument("--fps", type=float, default=0.2, help="sampling rate (default 0.2: one frame per 5 s)")
    p.add_argument("--max-frames", type=int, default=1024, help="frame cap (default 1024)")
    p.add_argument("--budget", type=int, default=512, help="tiny-model token budget (default 512)")
    p.add_argument("--new-tokens", type=int, default=8, help="answer length (default 8)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = p.parse_args(argv)
    common.setup(args)
    line = common.record("scaling", run(args))
    if not args.no_save:
        args.results.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.out / Path(line["plot"]).name, args.results / "scaling.png")
        line["plot_kept"] = _shown(args.results / "scaling.png")
    common.emit(line, args, _summary)
    return 0


def _summary(line: dict) -> str:
    rows = [f"{m}: {r}" for m, r in line["method_vs_uncompressed_at_longest"].items()]
    return (
        f"uncompressed tokens grow x{line['uncompressed_tokens_growth']}; within budget: "
        f"{line['methods_within_budget']} (real size: {line['methods_within_real_budget']}); at the longest "
        f"video, method / uncompressed: " + "; ".join(rows) + f"; plot {line['plot']}"
    )


if __name__ == "__main__":
    sys.exit(main())
