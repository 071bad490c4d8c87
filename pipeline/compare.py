"""One comparison: a video and a question in, one answer and one token account per method out.

The shared work (fetch, probe, sample, segment, encode) happens once per request and is cached across
follow-up questions; then every method compresses the same encoded video under the same budget and the same
backbone answers from the compressed tokens. The UI and the CLI both drive ``compare``; the GPU part
(``run_methods``) is a separate generator so the app can wrap it in ZeroGPU's ``@spaces.GPU``.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

import compressors
import media
import model_zoo
from compressors.base import SegmentSpan
from model_zoo.qwen3_vl import GenerationRequest
from pipeline import cache
from pipeline.settings import OFFICIAL, Settings, parse_methods

MB = 1 << 20

# The shared caches (``pipeline.cache``; sizes are set with ``cache.configure_caches``).
#: Probe and fingerprint of a file, keyed by its identity (path, inode, size, mtime): follow-ups skip both.
PROBE_CACHE = cache.PROBES
#: Frames shared by every method and by follow-up questions, keyed by (fingerprint, sampling settings).
FRAME_CACHE = cache.FRAMES
#: Encoded visual tokens (CPU), keyed by (fingerprint, sampling settings, backbone, dtype).
TOKEN_CACHE = cache.TOKENS
#: Tempo's relevance logits, keyed additionally by the question and the prompt (``cache.CachedHooks``).
RELEVANCE_CACHE = cache.RELEVANCE
#: Compressions of question-independent methods (``question_conditioned`` False), for follow-up questions.
COMPRESSION_CACHE = cache.COMPRESSIONS
#: Prompt prefixes (keys/values of everything before the question): Tempo's relevance prompts and the
#: answers of question-independent methods, so a follow-up question runs only its own tokens.
PREFIX_STORE = cache.PrefixCache(cache.PREFIXES)


class QuestionError(ValueError):
    """The question is empty or too long (the message says what to do)."""


MAX_QUESTION_CHARS = 2000


# --- events -------------------------------------------------------------------------------------------


@dataclass
class Progress:
    stage: str  # fetch, probe, sample, encode, compress, answer, done
    fraction: float  # 0..1 of the whole request
    message: str


@dataclass
class AnswerDelta:
    method: str
    text: str  # the answer so far


@dataclass
class MethodReport:
    """Everything one column shows and the run card stores for one method."""

    method: str
    label: str
    answer: str = ""
    error: str | None = None
    tokens: dict = field(default_factory=dict)  # raw, llm_input, per_frame, ratio (+ last_layer for XComp)
    kept: list[int] = field(default_factory=list)  # positions in the sampled frames
    kept_frames: list[dict] = field(default_factory=list)  # {index (source frame), timestamp}
    segments: list[dict] = field(default_factory=list)  # {start, end, score, tokens}
    timings: dict = field(default_factory=dict)  # seconds: compress, answer, prefill, decode; "reused": what
    # came from the caches (compression, relevance scores, prompt prefixes)
    memory: dict = field(default_factory=dict)  # MB
    extra: dict = field(default_factory=dict)


@dataclass
class MethodDone:
    report: MethodReport


@dataclass
class Encoded:
    """The shared encode is done. ``fresh`` carries (cache key, CPU tokens) when they were computed in this
    request, so the caller's process can keep them: on ZeroGPU the GPU work runs in a forked process whose
    caches vanish with it, while the caller's survive (and a fork inherits them for the next request)."""

    timings: dict  # seconds spent on the work shared by every method (encode)
    fresh: tuple | None = None


@dataclass
class Computed:
    """The small cache entries this request computed, as (cache name in ``cache.CACHES``, key, CPU value):
    Tempo's relevance scores and the question-independent compressions. Like ``Encoded.fresh``, they let the
    caller's process keep them when the GPU work ran in a forked process (ZeroGPU), so that a re-run with
    another budget, or a follow-up, finds them there. Prompt prefixes stay behind: at real size they are
    gigabytes of keys, too much to copy back on every request."""

    entries: list[tuple[str, Hashable, object]]


@dataclass
class Finished:
    prepared: PreparedVideo
    reports: dict[str, MethodReport]  # in column order
    shared_timings: dict  # fetch, probe (with fingerprint), decode, encode


Event = Progress | Encoded | AnswerDelta | MethodDone | Computed | Finished


# --- shared work ----------------------------------------------------------------------------------------


@dataclass
class PreparedVideo:
    """The sampled video every method sees (CPU data only: it crosses ZeroGPU's process boundary)."""

    path: Path
    url: str | None
    info: media.VideoInfo
    fingerprint: str
    frames: media.Frames  # padded to a multiple of segment_frames
    segments: list[media.Segment]
    real_frames: int
    timings: dict = field(default_factory=dict)

    @property
    def spans(self) -> list[SegmentSpan]:
        fpg = 2  # Qwen3-VL groups 2 frames; segment_frames is even (Settings checks)
        return [
            SegmentSpan(
                index=s.index,
                frames=s.frames,
                groups=range(s.frames.start // fpg, s.frames.stop // fpg),
                start=s.start,
                end=s.end,
                centre=s.centre,
                padded=s.padded,
            )
            for s in self.segments
        ]

    def frame_ref(self, position: int) -> dict:
        return {
            "index": int(self.frames.indices[position]),
            "timestamp": round(float(self.frames.timestamps[position]), 3),
        }


def is_url(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and "://" in source


def check_question(question: str) -> str:
    question = (question or "").strip()
    if not question:
        raise QuestionError("Type a question about the video first.")
    if len(question) > MAX_QUESTION_CHARS:
        raise QuestionError(f"Shorten the question to at most {MAX_QUESTION_CHARS} characters.")
    return question


def prepare(
    source: str | os.PathLike,
    settings: Settings,
    *,
    limits: media.Limits | None = None,
    allow_private: bool = False,
    workdir: str | os.PathLike | None = None,
) -> Iterator[Progress | PreparedVideo]:
    """Fetch (URLs), probe, fingerprint, sample and segment; yields progress, then the PreparedVideo.

    A fetched file lives in ``workdir``; the caller removes it.
    """
    limits = limits or media.Limits()
    url = str(source) if is_url(source) else None
    t0 = time.perf_counter()
    if url is not None:
        yield Progress("fetch", 0.02, "Downloading the video…")
        fetched = media.fetch(
            url,
            out_dir=workdir,
            max_size_mb=limits.max_size_mb,
            max_duration_s=limits.max_duration_s,
            max_height=limits.max_height,
            allow_private=allow_private,
        )
        path = Path(fetched.path)
    else:
        path = Path(source)
    fetch_s = time.perf_counter() - t0
    yield Progress("probe", 0.08, "Reading the video…")
    t_probe = time.perf_counter()
    info, fingerprint = _probe(path)
    probe_s = time.perf_counter() - t_probe
    key = (fingerprint, settings.sampling_key())
    cached = FRAME_CACHE.get(key)
    t1 = time.perf_counter()
    if cached is None:
        yield Progress(
            "sample", 0.1, f"Sampling frames at {settings.fps:g} fps (at most {settings.max_frames})…"
        )
        sampled = media.sample(
            path, fps=settings.fps, max_frames=settings.max_frames, max_side=settings.max_side, limits=limits
        )
        padded, segs = media.segments(sampled, segment_frames=settings.segment_frames)
        cached = (padded, segs, len(sampled))
        FRAME_CACHE.put(key, cached)
    padded, segs, real = cached
    timings = {"fetch": fetch_s, "probe": probe_s, "decode": time.perf_counter() - t1}
    yield PreparedVideo(path, url, info, fingerprint, padded, list(segs), real, timings)


def _probe(path: Path) -> tuple[media.VideoInfo, str]:
    """``media.probe`` and ``media.fingerprint`` of ``path``, remembered while the file is unchanged."""
    try:
        key = cache.file_identity(path)
    except OSError:  # missing or unreadable: media.probe raises the one-sentence VideoError for it
        key = None
    known = None if key is None else PROBE_CACHE.get(key)
    if known is None:
        known = (media.probe(path), media.fingerprint(path))
        if key is not None:
            PROBE_CACHE.put(key, known)
    return known


# --- the GPU part ---------------------------------------------------------------------------------------


def estimate_gpu_seconds(settings: Settings, frames: int | None = None) -> int:
    """ZeroGPU duration to ask for: grows with frames x methods (asking too much costs the visitor quota)."""
    frames = settings.max_frames if frames is None else frames
    per_method = 4 + frames * 0.02 + settings.max_new_tokens * 0.05
    return int(min(300, 10 + frames * 0.03 + per_method * len(settings.methods)))


def run_methods(prepared: PreparedVideo, question: str, settings: Settings) -> Iterator[Event]:
    """Encode once; compress with every method; answer with all of them together; official models last.

    Each method compresses in turn (a failing one reports its error in its own column), then the backbone
    decodes every compressed method's answer as one batch (``Qwen3VLBackbone.generate_many``), so all
    columns stream at once; should the batch itself fail (out of memory, say), each method answers alone.
    ``MethodDone`` events come in column order.
    """
    backbone = model_zoo.load_backbone(settings.backbone)
    yield Progress("encode", 0.15, f"Encoding {prepared.real_frames} frames once for every method…")
    t0 = time.perf_counter()
    key = _video_key(backbone, prepared, settings)
    video, fresh = _encode(backbone, prepared, key)
    yield Encoded({"encode": time.perf_counter() - t0}, (key, fresh) if fresh is not None else None)
    # Tempo's relevance scores depend on the question, not on the budget: a re-run reuses them.
    computed: list[tuple[str, Hashable, object]] = []  # small cache entries to hand back (``Computed``)
    hooks = cache.CachedHooks(
        backbone, video, video_key=key, question=question, prefixes=PREFIX_STORE, computed=computed
    )
    spans = prepared.spans
    columns = _ColumnOrder(settings.methods)
    ours = [m for m in settings.methods if m not in OFFICIAL]
    compressed = []
    for i, method in enumerate(ours):
        yield Progress("compress", 0.2 + 0.3 * i / len(ours), f"{method}: compressing…")
        item = _compress_one(backbone, hooks, video, spans, prepared, question, settings, method, computed)
        if isinstance(item, MethodReport):
            yield from columns.done(item)
        else:
            compressed.append(item)
    if compressed:
        yield Progress("answer", 0.5, f"Answering with {len(compressed)} method(s) at once…")
        yield from _answer_all(backbone, compressed, question, settings, prepared, columns)
    if computed:
        yield Computed(computed)
    official = [m for m in settings.methods if m in OFFICIAL]
    for i, method in enumerate(official):
        yield Progress("compress", 0.8 + 0.2 * i / len(official), f"{method}: compressing and answering…")
        report = yield from _run_official(prepared, question, settings, method)
        yield from columns.done(report)
    yield Progress("done", 1.0, "Done.")


class _ColumnOrder:
    """Releases ``MethodDone`` events in column order: a finished column waits for the columns before it
    (``Finished.reports`` keeps the order the events came in)."""

    def __init__(self, methods) -> None:
        self.methods, self.reports, self.released = list(methods), {}, 0

    def done(self, report: MethodReport) -> Iterator[MethodDone]:
        self.reports[report.method] = report
        while self.released < len(self.methods) and self.methods[self.released] in self.reports:
            yield MethodDone(self.reports[self.methods[self.released]])
            self.released += 1


def _video_key(backbone, prepared: PreparedVideo, settings: Settings) -> tuple:
    """What decides the encoded tokens: the video, its sampling, the backbone and the dtype it runs in."""
    return (prepared.fingerprint, settings.sampling_key(), settings.backbone, str(backbone.dtype))


def _encode(backbone, prepared: PreparedVideo, key: tuple):
    """The encoded video on the backbone's device, and its new CPU copy (None when it came from the cache)."""
    video = TOKEN_CACHE.get(key)
    if video is not None:
        return _move(video, backbone.device), None
    with torch.inference_mode():
        video = backbone.encode(prepared.frames.frames, prepared.frames.timestamps)
    fresh = _move(video, "cpu")
    TOKEN_CACHE.put(key, fresh)
    return _move(video, backbone.device), fresh


def _move(video, device):
    """The encoded video's tensors on ``device`` (the cache keeps a CPU copy: never GPU memory past a
    request). ``group_times`` stays where ``encode`` leaves it, on the CPU."""
    device = torch.device(device)
    if all(t.device == device for t in (video.embeds, video.positions, *video.deepstack)):
        return video
    changes = {
        "embeds": video.embeds.to(device),
        "deepstack": [d.to(device) for d in video.deepstack],
        "positions": video.positions.to(device),
    }
    return dataclasses.replace(video, **changes)


@dataclass
class _Compressed:
    """A method whose compression succeeded, waiting for its answer."""

    report: MethodReport
    result: object  # compressors.base.CompressionResult
    memory: dict  # measured over the compression
    key: tuple | None = None  # what decides the compression when the question does not (``_compress_cached``)

    def request(self, question: str, settings: Settings) -> GenerationRequest:
        """The answer's request; a question-independent compression's prompt prefix is kept under its key."""
        return GenerationRequest(
            question,
            self.result.segments,
            keep=self.result.keep,
            max_new_tokens=settings.max_new_tokens,
            prefix_key=None if self.key is None else ("answer prompt prefix", *self.key),
        )


def _compress_one(
    backbone, hooks, video, spans, prepared, question, settings, method, computed
) -> _Compressed | MethodReport:
    """Compress with ``method``; a failure becomes the method's report with its error (one sentence)."""
    report = MethodReport(method=method, label=method)
    memory = _MemoryMeter(backbone.device)
    try:
        compressor = compressors.build(method, **settings.options_for(method))
        report.label = compressor.label
        torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        video_key = _video_key(backbone, prepared, settings)
        before = hooks.reuse_counts()
        result, key, hit = _compress_cached(
            compressor, video, spans, question, settings, hooks, video_key, computed
        )
        report.timings["compress"] = time.perf_counter() - t0
        report.timings["reused"] = _reused(hit, before, hooks.reuse_counts())
        _account(report, result, prepared, spans)
        if not result.segments:
            report.error = _too_small(settings.budget, method, result.extra.get("note"))
    except Exception as err:  # one method failing must not take the other columns down
        report.error = _failure(err)
    if report.error is not None:
        if report.error == OUT_OF_MEMORY:
            free_memory()  # outside the except: the traceback, and the memory it held, are gone
        report.memory = memory.stop()
        return report
    return _Compressed(report, result, memory.stop(), key)


def _reused(compression: bool, before: tuple[int, int], after: tuple[int, int]) -> list[str]:
    """What a method's compression took from the caches, for the timings table: the whole compression, or
    Tempo's relevance scores and the prompt prefixes its scoring found (``CachedHooks.reuse_counts``)."""
    reused = ["compression"] if compression else []
    if after[0] > before[0]:
        reused.append("relevance scores")
    if (found := after[1] - before[1]) > 0:
        reused.append(f"{found} scoring prompt prefix{'es' if found > 1 else ''}")
    return reused


def _compress_cached(compressor, video, spans, question, settings, hooks, video_key: tuple, computed: list):
    """``compressor.compress``, the key that decides it when the method ignores the question (else None), and
    whether it came from the cache: the result is reused across questions from ``COMPRESSION_CACHE`` under
    that key (a new entry is also appended to ``computed``, for ``Computed``).

    Key: the video key (``_video_key``, what decides the tokens and the spans), the method, its options, the
    budget and the seed. The cache keeps a CPU copy (never GPU memory past a request); a result with a
    keep rule (a callable) is not cached.
    """
    key = None
    if not getattr(compressor, "question_conditioned", True):
        options = repr(sorted(compressor.options().items()))
        key = (*video_key, compressor.name, options, settings.budget, settings.seed)
        cached = COMPRESSION_CACHE.get(key)
        if cached is not None:
            return _move_result(cached, video.embeds.device), key, True
    with torch.inference_mode():
        result = compressor.compress(video, spans, question, budget=settings.budget, hooks=hooks)
    if key is not None and result.keep is None:
        kept = _move_result(result, "cpu")
        COMPRESSION_CACHE.put(key, kept)
        computed.append(("compressions", key, kept))
    return result, key, False


def _move_result(result, device):
    """A copy of a ``CompressionResult`` with its segments' tensors on ``device`` (lists and extra copied, so
    a cached entry is never shared with a report)."""
    device = torch.device(device)
    segments = [
        dataclasses.replace(
            s,
            embeds=s.embeds.to(device),
            positions=s.positions.to(device),
            deepstack=[d.to(device) for d in s.deepstack],
        )
        for s in result.segments
    ]
    return dataclasses.replace(
        result,
        segments=segments,
        kept_frames=list(result.kept_frames),
        segment_scores=None if result.segment_scores is None else list(result.segment_scores),
        segment_tokens=None if result.segment_tokens is None else list(result.segment_tokens),
        extra=copy.deepcopy(result.extra),
    )


OUT_OF_MEMORY = "Out of memory: lower the token budget or the max frames and try again."


def _too_small(budget: int, method: str, note: str | None) -> str:
    """The sentence for a method that could keep no visual token under ``budget``."""
    why = f" ({note})" if note else ""
    return f"A budget of {budget} visual tokens is too small for {method}{why}; raise the budget."


def _failure(err: Exception) -> str:
    """The one sentence a column shows for ``err``."""
    return OUT_OF_MEMORY if isinstance(err, torch.OutOfMemoryError) else _one_sentence(err)


def _answer_all(backbone, compressed, question, settings, prepared, columns) -> Iterator[Event]:
    """Answer every compressed method in one batched decode; if the batch fails, the methods it had not
    finished answer alone, each in its own try (one bad method never takes the others down)."""
    pending = {item.report.method: item for item in compressed}
    failed = False
    try:
        yield from _decode_together(backbone, compressed, question, settings, prepared, pending, columns)
    except Exception:  # out of memory included: fall back to one method at a time
        failed = True
    if failed:
        free_memory()  # outside the except: the batch's tensors are no longer referenced
    for method, item in list(pending.items()):
        report = yield from _answer_alone(backbone, item, question, settings, prepared)
        del pending[method]
        yield from columns.done(report)


def _decode_together(backbone, compressed, question, settings, prepared, pending, columns) -> Iterator[Event]:
    """The batched decode: AnswerDelta per method as its tokens arrive; each method's report is done (and
    leaves ``pending``) as soon as its answer ends. Its ``answer`` time is its own prefill plus the wall
    time of the batched steps it took part in, shared with the others (``answer_batched``)."""
    memory = _MemoryMeter(backbone.device)
    requests = [item.request(question, settings) for item in compressed]
    batch = backbone.generate_many(requests, prefixes=PREFIX_STORE)
    shown = [""] * len(compressed)
    for index, delta in batch:
        item = compressed[index]
        if delta:
            shown[index] += delta
            yield AnswerDelta(item.report.method, shown[index])
        if batch[index].done:
            report = _answered(item, batch[index], prepared, batched=True)
            report.memory = _max_memory(item.memory, memory.stop())
            if report.answer != shown[index]:
                yield AnswerDelta(report.method, report.answer)
            del pending[report.method]
            yield from columns.done(report)


def _answered(item: _Compressed, generation, prepared: PreparedVideo, *, batched: bool) -> MethodReport:
    """The method's report once its answer is complete: answer text, accounting, answer timings."""
    report = item.report
    try:
        report.answer = generation.text
        stats = generation.stats
        report.timings.update(answer=stats["prefill_s"] + stats["decode_s"], answer_batched=batched)
        if stats.get("prefix_reused"):
            report.timings["reused"] = [*report.timings.get("reused", []), "answer prompt prefix"]
        _account_generation(report, item.result, stats, frames=prepared.real_frames)
    except Exception as err:  # e.g. the engine received other tokens than the method reported
        report.error = _one_sentence(err)
    return report


def _answer_alone(backbone, item: _Compressed, question, settings, prepared) -> Iterator[Event]:
    """One method's answer on its own (the fallback when the batched decode failed)."""
    report = item.report
    memory = _MemoryMeter(backbone.device)
    shown = ""
    try:
        request = item.request(question, settings)
        generation = backbone.generate(
            question,
            request.segments,
            keep=request.keep,
            max_new_tokens=request.max_new_tokens,
            prefix_key=request.prefix_key,
            prefixes=PREFIX_STORE,
        )
        for delta in generation:
            shown += delta
            yield AnswerDelta(report.method, shown)
        _answered(item, generation, prepared, batched=False)
    except Exception as err:  # one method failing must not take the other columns down
        report.error = _failure(err)
    if report.error == OUT_OF_MEMORY:
        free_memory()
    elif report.error is None and report.answer != shown:
        yield AnswerDelta(report.method, report.answer)
    report.memory = _max_memory(item.memory, memory.stop())
    return report


def _max_memory(*measures: dict) -> dict:
    """Per key, the largest of several memory measures (a method's compression, then its answer)."""
    keys = dict.fromkeys(k for m in measures for k in m)
    return {k: max(m[k] for m in measures if k in m) for k in keys}


def _official_model(checkpoint: str, base_vlm: str):
    """The official Tempo-6B (one resident; loaded on first use). Tests swap this for a tiny checkpoint."""
    from pipeline import official

    key = (checkpoint, base_vlm)
    if _OFFICIAL.get("key") != key:
        _OFFICIAL.clear()
        _OFFICIAL.update(key=key, model=official.load_tempo_official(checkpoint, base_vlm=base_vlm))
    return _OFFICIAL["model"]


_OFFICIAL: dict = {}


def _run_official(prepared: PreparedVideo, question: str, settings: Settings, method: str) -> Iterator[Event]:
    """``tempo-6b.official``: the authors' model on the same sampled frames and budget, in its own column.

    It reports what the authors' demo shows: per-segment relevance and ATA allocation.
    """
    variant = model_zoo.get_variant(method)
    report = MethodReport(method=method, label=variant.label)
    memory = _MemoryMeter("cuda" if torch.cuda.is_available() else "cpu")
    try:
        options = settings.options_for(method)
        model = _official_model(options["checkpoint"], options["base_vlm"])
        t0 = time.perf_counter()
        with torch.inference_mode():
            frames = prepared.frames.frames[: prepared.real_frames]
            run = model.run(
                frames,
                prepared.info.duration,
                question,
                budget=settings.budget,
                max_new_tokens=settings.max_new_tokens,
            )
            report.timings["compress"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            for delta in run:
                report.answer += delta
                yield AnswerDelta(method, report.answer)
        report.timings["answer"] = time.perf_counter() - t1
        _account_official(report, run, prepared)
    except torch.OutOfMemoryError:
        report.error = OUT_OF_MEMORY
        free_memory()
    except Exception as err:  # one method failing must not take the other columns down
        report.error = _one_sentence(err)
    finally:
        report.memory = memory.stop()
    return report


def _account_official(report: MethodReport, run, prepared: PreparedVideo) -> None:
    from pipeline.official import allocation_table

    report.kept = sorted(set(run.kept_frames))
    report.kept_frames = [prepared.frame_ref(p) for p in report.kept]
    report.segments = [
        {"start": round(s.start, 3), "end": round(s.end, 3), "score": _round(s.score), "tokens": s.delivered}
        for s in run.segments
    ]
    report.tokens = {
        "raw": run.raw_tokens,
        "llm_input": run.llm_tokens,
        "per_frame": round(run.llm_tokens / max(1, prepared.real_frames), 3),
        "ratio": round(run.raw_tokens / max(1, run.llm_tokens), 3),
    }
    report.extra = {"real_fps": round(run.real_fps, 4), "allocation": allocation_table(run)}


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks (call it outside the ``except`` that caught an OOM)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _account(report: MethodReport, result, prepared: PreparedVideo, spans: list[SegmentSpan]) -> None:
    report.kept = list(result.kept_frames)
    report.kept_frames = [prepared.frame_ref(p) for p in result.kept_frames]
    scores = result.segment_scores or [None] * len(spans)
    tokens = result.segment_tokens or [None] * len(spans)
    report.segments = [
        {"start": round(s.start, 3), "end": round(s.end, 3), "score": _round(sc), "tokens": tk}
        for s, sc, tk in zip(spans, scores, tokens, strict=True)
    ]
    report.tokens = {"raw": result.raw_tokens, "llm_input": result.llm_tokens}
    report.extra = dict(result.extra)


def _round(score: float | None) -> float | None:
    return None if score is None else round(float(score), 4)


def _account_generation(report: MethodReport, result, stats: dict, *, frames: int) -> None:
    """Token counts come from what the engine really received, checked against the compressor's claim.

    Tokens per frame divide by the sampled frames (the same for every method), as Tempo reports it.
    """
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


def _one_sentence(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text}"


class _MemoryMeter:
    """Peak GPU memory on CUDA; on CPU the process's resident memory after the method."""

    def __init__(self, device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> dict:
        if self.cuda:
            return {"peak_mb": round(torch.cuda.max_memory_allocated() / MB, 1)}
        return {"rss_mb": round(rss_bytes() / MB, 1)}


def rss_bytes() -> int:
    """Resident memory of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# --- the whole request ----------------------------------------------------------------------------------

Runner = Callable[[PreparedVideo, str, Settings], Iterator[Event]]


def compare(
    source: str | os.PathLike,
    question: str,
    methods=None,
    settings: Settings | None = None,
    *,
    runner: Runner | None = None,
    limits: media.Limits | None = None,
    allow_private: bool = False,
    workdir: str | os.PathLike | None = None,
) -> Iterator[Event]:
    """The whole comparison as a stream of events; the last one is ``Finished`` with every report.

    User mistakes (bad video or URL, empty question, bad settings) raise typed errors before any GPU work;
    a method that fails reports its error in its own ``MethodReport`` and the others still answer.
    """
    settings = settings or Settings()
    if methods is not None:
        settings = dataclasses.replace(settings, methods=parse_methods(methods))
    question = check_question(question)
    own_tmp = tempfile.mkdtemp(prefix="arena-") if is_url(source) and workdir is None else None
    try:
        yield from _compare(
            source, question, settings, runner or run_methods, limits, allow_private, workdir or own_tmp
        )
    finally:
        if own_tmp is not None:
            shutil.rmtree(own_tmp, ignore_errors=True)


def _compare(source, question, settings, runner, limits, allow_private, workdir) -> Iterator[Event]:
    prepared = None
    for event in prepare(source, settings, limits=limits, allow_private=allow_private, workdir=workdir):
        if isinstance(event, PreparedVideo):
            prepared = event
        else:
            yield event
    reports: dict[str, MethodReport] = {}
    shared = dict(prepared.timings)
    for event in runner(prepared, question, settings):
        if isinstance(event, MethodDone):
            reports[event.report.method] = event.report
        elif isinstance(event, Encoded):
            shared.update(event.timings)
            if event.fresh is not None and event.fresh[0] not in TOKEN_CACHE:  # computed in another process
                TOKEN_CACHE.put(*event.fresh)
        elif isinstance(event, Computed):
            for name, key, value in event.entries:
                if key not in cache.CACHES[name]:  # computed in another process
                    cache.CACHES[name].put(key, value)
        yield event
    yield Finished(prepared, reports, shared)
