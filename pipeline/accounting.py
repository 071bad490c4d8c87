"""What a column reports besides its answer: token counts, kept frames, segments, memory, failures.

Token counts come from what the engine really received, checked against what the method claims; tokens
per frame divide by the sampled frames (the same for every method), as Tempo reports it. A failure becomes
one sentence in its own column (``failure``), never an exception that would take the other columns down.
"""

from __future__ import annotations

import gc
import os

import torch

from compressors.base import SegmentSpan
from pipeline.events import MethodReport
from pipeline.video import PreparedVideo

MB = 1 << 20
OUT_OF_MEMORY = "Out of memory: lower the token budget or the max frames and try again."


def account_compression(
    report: MethodReport, result, prepared: PreparedVideo, spans: list[SegmentSpan]
) -> None:
    """Kept frames, per-segment scores and tokens, and the raw/claimed token counts of a compression."""
    report.kept = list(result.kept_frames)
    report.kept_frames = [prepared.frame_ref(p) for p in result.kept_frames]
    scores = result.segment_scores or [None] * len(spans)
    tokens = result.segment_tokens or [None] * len(spans)
    report.segments = [
        {"start": round(s.start, 3), "end": round(s.end, 3), "score": rounded(sc), "tokens": tk}
        for s, sc, tk in zip(spans, scores, tokens, strict=True)
    ]
    report.tokens = {"raw": result.raw_tokens, "llm_input": result.llm_tokens}
    report.extra = dict(result.extra)


def account_generation(report: MethodReport, result, stats: dict, *, frames: int) -> None:
    """Token counts as the engine received them (``Generation.stats``), checked against ``result``'s claim."""
    received = int(stats["visual_tokens"])
    if received != result.llm_tokens:
        raise RuntimeError(
            f"the engine received {received} visual tokens, the method reported {result.llm_tokens}"
        )
    report.tokens.update(
        llm_input=received,
        per_frame=round(received / max(1, frames), 3),
        ratio=round(result.raw_tokens / max(1, received), 3),
    )
    per_layer = stats.get("per_layer_visual")
    if per_layer and result.keep is not None:
        report.tokens["last_layer"] = int(per_layer[-1])
        report.tokens["mean_per_layer"] = round(sum(per_layer) / len(per_layer), 2)
    report.timings.update(prefill=stats.get("prefill_s"), decode=stats.get("decode_s"))
    report.tokens["answer"] = int(stats.get("new_tokens", 0))  # tokens generated, EOS included


def rounded(score: float | None) -> float | None:
    return None if score is None else round(float(score), 4)


def too_small(budget: int, method: str, note: str | None) -> str:
    """The sentence for a method that could keep no visual token under ``budget``."""
    why = f" ({note})" if note else ""
    return f"A budget of {budget} visual tokens is too small for {method}{why}; raise the budget."


def one_sentence(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text}"


def failure(err: Exception) -> str:
    """The one sentence a column shows for ``err``."""
    return OUT_OF_MEMORY if isinstance(err, torch.OutOfMemoryError) else one_sentence(err)


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks (call it outside the ``except`` that caught an OOM)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class MemoryMeter:
    """Peak GPU memory on CUDA; on CPU the process's resident memory after the method."""

    def __init__(self, device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> dict:
        if self.cuda:
            return {"peak_mb": round(torch.cuda.max_memory_allocated() / MB, 1)}
        return {"rss_mb": round(rss_bytes() / MB, 1)}


def max_memory(*measures: dict) -> dict:
    """Per key, the largest of several memory measures (a method's compression, then its answer)."""
    keys = dict.fromkeys(k for m in measures for k in m)
    return {k: max(m[k] for m in measures if k in m) for k in keys}


def rss_bytes() -> int:
    """Resident memory of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
