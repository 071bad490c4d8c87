"""Benchmark (CUDA): a real-size Qwen3-VL-2B with random weights, per method against the uncompressed video.

    python bench/gpu.py --json                    # on a CUDA machine: 256, 512 and 1024 frames, bf16
    python bench/gpu.py --json --tiny --device cpu --frames 8 16   # smoke test of the same code path

The model is ``Qwen3VLForConditionalGeneration`` built from a configuration written by hand from the
published numbers (``/work/shared/QWEN3VL.md``: 28 layers of hidden 2048, MLP 6144, 16 query / 8 key-value
heads of 128, vocab 151936 tied; vision 24 blocks of 1024, MLP 4096, DeepStack from blocks 5, 11, 17) with
random weights, in bf16. Random weights cost what trained ones cost; the answers are noise, and EOS is
ignored so that every answer decodes exactly --new-tokens tokens. The tokenizer is the tiny offline one (the
vocabulary size, which decides the LM head's cost, is the real one).

Per frame count (synthetic 640x360 frames at 1 fps, 8-frame segments, the checkpoint's preprocessing): the
frames are encoded once (seconds, peak memory), then for the uncompressed video (every group in the stock
layout) and each method under the budget (default 4096): tokens into the LLM, compress seconds, prefill
latency, decode tokens/s (decode steps after the first token / their seconds, our layer-by-layer engine),
peak CUDA memory during the method (absolute, and above the weights and the encoded video), estimated prefill
TFLOPs (``bench/flops.py``) and the TFLOP/s that implies. ``xcomp-no-lp`` is XComp with LP-Comp off (same
frames and tokens), so LP-Comp's saving is measured at equal input.

The papers' claims are put beside ours: Espresso (arXiv 2412.04729) 2.1x throughput and 58% less memory
than pooling projectors; XComp (arXiv 2604.14149) LLM compute 448 → 187 TFLOPs at 4096 frames (estimated
here for 4096 frames x 16 tokens, with and without LP-Comp, on our config and on the paper's own LLM).

Without CUDA (and without --device cpu) it prints one JSON line saying it was skipped and why, and exits 0.
Results go to bench/results/gpu-<date>.jsonl with the GPU they came from.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
from contextlib import contextmanager

import common
import flops
import numpy as np
import torch

import compressors
from compressors.base import build_segments, passthrough
from compressors.xcomp import layer_counts
from model_zoo import get_backbone_spec
from model_zoo.loading import default_dtype
from model_zoo.preprocess import VideoPreprocessConfig
from model_zoo.qwen3_vl import Qwen3VLBackbone
from model_zoo.tiny import TINY_PREPROCESS, build_tiny, build_tokenizer, config_for
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from pipeline.settings import Settings

REFERENCE = "uncompressed"
NO_LP = "xcomp-no-lp"
QUESTION = "What happens in the video? Describe the main events in order."
FRAME = (360, 640)  # (height, width) of the synthetic frames: a 16:9 video sampled at max_side 640
CLAIMS = {
    "espresso": {
        "source": "Espresso, arXiv 2412.04729",
        "throughput_vs_pooling": 2.1,
        "memory_saving_vs_pooling": 0.58,
    },
    "xcomp": {
        "source": "XComp, arXiv 2604.14149 (VideoChat-Flash-2B, 4096 frames)",
        "baseline_tflops": 448,
        "xcomp_tflops": 187,
        "ratio": round(187 / 448, 3),
    },
}


# --- the model --------------------------------------------------------------------------------------------


def qwen3vl_2b_config(tokenizer):
    """Qwen3-VL-2B-Instruct's configuration from the published numbers (special ids from ``tokenizer``).

    Values QWEN3VL.md marks as not read from a config file: intermediate 6144, tied embeddings, M-RoPE
    sections [24, 20, 20] interleaved; ``num_position_embeddings`` 2304 is the library default.
    """
    text = {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "deepstack_visual_indexes": [5, 11, 17],
    }
    return config_for(tokenizer, text, vision, tie_word_embeddings=True)


def real_size_model(device: torch.device, dtype: torch.dtype):
    """The random-weight Qwen3-VL-2B, built directly on ``device`` in ``dtype``, sdpa attention, eval mode."""
    from transformers import Qwen3VLForConditionalGeneration

    tokenizer = build_tokenizer()
    config = qwen3vl_2b_config(tokenizer)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        model = Qwen3VLForConditionalGeneration(config)
    return model.eval(), tokenizer


def backbone_for(args, device: torch.device) -> Qwen3VLBackbone:
    """The benchmark's backbone: real size (default) or the tiny one (--tiny); EOS ignored."""
    if args.tiny:
        model, tokenizer = build_tiny(0)
        model = model.to(device)
        spec, preprocess = get_backbone_spec("tiny-random"), TINY_PREPROCESS
    else:
        dtype = torch.bfloat16 if device.type == "cuda" or args.bf16_on_cpu else torch.float32
        model, tokenizer = real_size_model(device, dtype)
        spec, preprocess = get_backbone_spec("qwen3vl-2b"), VideoPreprocessConfig()
    backbone = Qwen3VLBackbone(spec, model, tokenizer, preprocess=preprocess)
    backbone.eos_ids = ()  # random weights: decode exactly --new-tokens tokens
    return backbone


# --- measuring ------------------------------------------------------------------------------------------


def synthetic_frames(count: int, size: tuple[int, int] = FRAME, seed: int = 0) -> np.ndarray:
    """[T, H, W, 3] uint8: moving gradients plus noise (the content does not change any cost)."""
    h, w = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    base = ((xs + ys) % 256).astype(np.uint8)
    frames = np.empty((count, h, w, 3), dtype=np.uint8)
    for t in range(count):
        frames[t, ..., 0] = np.add(base, t % 256, dtype=np.uint8)  # wraps around, as uint8 does
        frames[t, ..., 1] = np.roll(base, t * 7, axis=1)
        frames[t, ..., 2] = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return frames


class Meter:
    """Seconds and peak memory of a block: CUDA's peak allocated, or sampled RSS on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @contextmanager
    def measure(self):
        out: dict = {}
        if self.device.type == "cuda":
            with common.cuda_peak(self.device) as peak:
                start = time.perf_counter()
                yield out
                torch.cuda.synchronize(self.device)
                out["seconds"] = time.perf_counter() - start
            out["peak_mb"] = peak["peak_mb"]
        else:
            with common.PeakRSS() as rss:
                start = time.perf_counter()
                yield out
                out["seconds"] = time.perf_counter() - start
            out["peak_mb"] = round(rss.peak / common.MB, 1)

    def allocated_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return round(torch.cuda.memory_allocated(self.device) / common.MB, 1)
        return round(common.rss_bytes() / common.MB, 1)


def compress(backbone, video, spans, settings: Settings, method: str):
    if method == REFERENCE:
        return passthrough(REFERENCE, video, spans)
    if method == NO_LP:
        options = settings.options_for("xcomp") | {"lp_comp": False}
        return compressors.build("xcomp", **options).compress(
            video, spans, QUESTION, budget=settings.budget, hooks=backbone
        )
    compressor = compressors.build(method, **settings.options_for(method))
    return compressor.compress(video, spans, QUESTION, budget=settings.budget, hooks=backbone)


def run_method(backbone, meter: Meter, video, spans, settings: Settings, method: str, base_mb: float) -> dict:
    """One method: compress, prefill, decode; tokens, latency, throughput, memory, estimated FLOPs."""
    try:
        with torch.inference_mode(), meter.measure() as m:
            compress_start = time.perf_counter()
            result = compress(backbone, video, spans, settings, method)
            compress_s = time.perf_counter() - compress_start
            generation = backbone.generate(
                QUESTION, result.segments, keep=result.keep, max_new_tokens=settings.max_new_tokens
            )
            stats = generation.stats
    except torch.OutOfMemoryError:
        _free(backbone.device)
        return {"error": "out of memory"}
    cfg = flops.DecoderConfig.from_text_config(backbone.model.config.text_config)
    text = stats["prompt_tokens"] - stats["visual_tokens"]
    lengths = [text + v for v in stats["per_layer_visual"]]
    prefill = flops.prefill_flops(cfg, lengths)
    steps = max(stats["new_tokens"] - 1, 0)
    return {
        "tokens_into_llm": stats["visual_tokens"],
        "prompt_tokens": stats["prompt_tokens"],
        "compress_s": round(compress_s, 4),
        "prefill_s": round(stats["prefill_s"], 4),
        "decode_tokens_per_s": round(steps / stats["decode_s"], 2) if stats["decode_s"] > 0 else None,
        "new_tokens": stats["new_tokens"],
        "total_s": round(m["seconds"], 4),
        "peak_mb": m["peak_mb"],
        "peak_above_base_mb": round(max(m["peak_mb"] - base_mb, 0.0), 1),
        "prefill_tflops_estimated": flops.tflops(prefill),
        "prefill_tflops_per_s": round(prefill / 1e12 / stats["prefill_s"], 2) if stats["prefill_s"] else None,
    }


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def one_frame_count(backbone, meter: Meter, frames_count: int, settings: Settings, methods) -> dict:
    frames = synthetic_frames(frames_count)
    real = len(frames)
    times = np.arange(real, dtype=np.float64) / settings.fps
    with torch.inference_mode(), meter.measure() as enc:
        video = backbone.encode(frames, times)  # the frames as sampled, as the pipeline encodes them
    spans = build_segments(times, segment_frames=settings.segment_frames, num_groups=video.num_groups)
    base_mb = meter.allocated_mb()  # weights + the encoded video
    rows = {m: run_method(backbone, meter, video, spans, settings, m, base_mb) for m in methods}
    groups, per_group = video.num_groups, video.tokens_per_group
    del video
    _free(backbone.device)
    return {
        "frames": real,
        "groups": groups,
        "tokens_per_group": per_group,
        "raw_tokens": groups * per_group,
        "encode_s": round(enc["seconds"], 3),
        "encode_peak_mb": enc["peak_mb"],
        "methods": rows,
    }


# --- the papers' claims beside ours -------------------------------------------------------------------------


def claims(results: list[dict]) -> dict:
    """Espresso's and XComp's claims beside what we measured or estimated on the same terms."""
    ours_espresso = {}
    for r in results:
        e, p = r["methods"].get("espresso", {}), r["methods"].get("pool", {})
        if "error" in e or "error" in p or not e or not p:
            continue
        ours_espresso[str(r["frames"])] = {
            "decode_throughput_vs_pool": _ratio(e["decode_tokens_per_s"], p["decode_tokens_per_s"]),
            "answer_speedup_vs_pool": _ratio(p["total_s"], e["total_s"]),
            "memory_saving_vs_pool": _saving(e["peak_above_base_mb"], p["peak_above_base_mb"]),
        }
    ours_lp = {}
    for r in results:
        x, n = r["methods"].get("xcomp", {}), r["methods"].get(NO_LP, {})
        if x and n and "error" not in x and "error" not in n:
            ours_lp[str(r["frames"])] = {
                "prefill_tflops_lp_vs_no_lp": _ratio(
                    x["prefill_tflops_estimated"], n["prefill_tflops_estimated"]
                ),
                "prefill_latency_lp_vs_no_lp": _ratio(x["prefill_s"], n["prefill_s"]),
            }
    return {
        "espresso": {"paper": CLAIMS["espresso"], "ours_training_free": ours_espresso},
        "xcomp": {
            "paper": CLAIMS["xcomp"],
            "ours_measured": ours_lp,
            "ours_estimated_4096_frames": xcomp_4096(),
        },
    }


def xcomp_4096() -> dict:
    """LLM prefill TFLOPs for 4096 frames x 16 tokens, without and with LP-Comp's per-layer schedule."""
    out = {}
    for cfg in (flops.QWEN3VL_2B, flops.QWEN25_1_5B):
        per_frame = layer_counts(cfg.layers, 16)
        base = flops.prefill_flops(cfg, 4096 * 16)
        lp = flops.prefill_flops(cfg, [4096 * n for n in per_frame])
        out[cfg.name] = {
            "no_lp_tflops": flops.tflops(base),
            "lp_tflops": flops.tflops(lp),
            "ratio": round(lp / base, 3),
        }
    return out


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def _saving(ours, theirs) -> float | None:
    return round(1 - ours / theirs, 3) if ours is not None and theirs and theirs > 0 else None


# --- main -------------------------------------------------------------------------------------------------


def skipped(reason: str) -> dict:
    """The line printed without CUDA: why, the papers' claims, and the analytic part that needs no GPU."""
    result = {
        "skipped": True,
        "reason": reason,
        "claims": CLAIMS,
        "xcomp_estimated_4096_frames": xcomp_4096(),
    }
    return common.record("gpu", result, device="cpu")


def run(args, device: torch.device) -> dict:
    settings = Settings.for_backbone(
        "tiny-random" if args.tiny else "qwen3vl-2b",
        budget=args.budget,
        fps=1.0,
        max_frames=max(args.frames),
        max_new_tokens=args.new_tokens,
    )
    methods = (REFERENCE, *args.methods, *((NO_LP,) if "xcomp" in args.methods else ()))
    meter = Meter(device)
    load_s, backbone = common.timed(backbone_for, args, device)
    weights_mb = meter.allocated_mb()
    one_frame_count(
        backbone, meter, min(args.frames), dataclasses.replace(settings, max_new_tokens=2), methods
    )
    results = [one_frame_count(backbone, meter, n, settings, methods) for n in args.frames]
    config = backbone.model.config
    return {
        "skipped": False,
        "model": {
            "config": "tiny-random" if args.tiny else "Qwen3-VL-2B (hand-written from the published numbers)",
            "parameters_m": round(sum(p.numel() for p in backbone.model.parameters()) / 1e6, 1),
            "dtype": str(backbone.dtype),
            "llm": dataclasses.asdict(flops.DecoderConfig.from_text_config(config.text_config)),
            "weights_mb": weights_mb,
            "build_s": round(load_s, 2),
        },
        "settings": {
            "budget": settings.budget,
            "segment_frames": settings.segment_frames,
            "fps": settings.fps,
            "frame": f"{FRAME[1]}x{FRAME[0]}",
            "new_tokens": settings.max_new_tokens,
            "methods": list(methods),
        },
        "results": results,
        "claims": claims(results),
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--frames", type=int, nargs="+", default=[256, 512, 1024], help="frame counts")
    p.add_argument("--budget", type=int, default=4096, help="token budget (default 4096)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens each answer decodes (default 32)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    p.add_argument("--tiny", action="store_true", help="the tiny-random model instead of the real-size one")
    p.add_argument("--bf16-on-cpu", action="store_true", help="real-size model in bf16 on the CPU too")
    args = p.parse_args(argv)
    common.setup(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        line = skipped("no CUDA device: torch.cuda.is_available() is False (run with --device cpu --tiny)")
    else:
        line = common.record("gpu", run(args, device), device=device)
    common.emit(line, args, _summary)
    return 0


def _summary(line: dict) -> str:
    if line.get("skipped"):
        return f"skipped: {line['reason']}"
    parts = []
    for r in line["results"]:
        ref = r["methods"][REFERENCE]
        for m, row in r["methods"].items():
            if m != REFERENCE and "error" not in row and "error" not in ref:
                parts.append(
                    f"{r['frames']}f {m}: prefill x{_ratio(ref['prefill_s'], row['prefill_s'])} faster"
                )
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
