"""The runner of the training-free columns: every method on one shared backbone, one encode, one batch.

The backbone encodes the sampled frames once (cached across follow-up questions); each selected method
compresses the same encoded video under the same budget (a failing one reports its error in its own column);
then the backbone decodes every compressed method's answer as one batch (``Qwen3VLBackbone.generate_many``),
so all columns stream at once. Should the batch itself fail (out of memory, say), each method answers alone.

A multi-question request (``run_many``, ``pipeline.many``) does the same over every (question, budget)
cell: one encode, every cell's compressions (Tempo's relevance scores computed once per question and reused
across budgets, question-independent compressions once per budget), then every answer of every cell in one
batched decode (split only past ``MAX_BATCH_TOKENS``); each answer is token for token what it is alone.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

import compressors
import model_zoo
from model_zoo.qwen3_vl import GenerationRequest
from pipeline import cache
from pipeline.accounting import (
    OUT_OF_MEMORY,
    MemoryMeter,
    account_compression,
    account_generation,
    failure,
    free_memory,
    max_memory,
    one_sentence,
    too_small,
)
from pipeline.events import AnswerDelta, Cell, Computed, Encoded, Event, MethodDone, MethodReport, Progress
from pipeline.request import Ask, Job, ManyJob
from pipeline.settings import Settings
from pipeline.video import PreparedVideo

#: Prompt prefixes (keys/values of everything before the question): Tempo's relevance prompts and the
#: answers of question-independent methods, so a follow-up question runs only its own tokens.
PREFIX_STORE = cache.PrefixCache(cache.PREFIXES)

#: Most visual tokens one batched decode holds (their keys and values stay on the GPU until it ends: on
#: Qwen3-VL-2B in bf16, 112 KiB per token, so about 14 GiB plus the prompts). More answers than that decode
#: in consecutive batches. A page request (five methods, budget at most 16384) is always one batch.
MAX_BATCH_TOKENS = 1 << 17


@dataclass
class SharedRun:
    """One request's state on the shared backbone: the prepared video, encoded once, and what the methods
    share across questions and budgets."""

    prepared: PreparedVideo
    backbone: model_zoo.Qwen3VLBackbone
    video: model_zoo.VisualTokens  # on the backbone's device
    video_key: tuple  # what decides the encoded tokens (``video_key``)
    computed: list[tuple[str, Hashable, object]] = field(default_factory=list)  # for ``Computed``
    hooks: dict[str, cache.CachedHooks] = field(default_factory=dict)  # per selection text

    def hooks_for(self, text: str) -> cache.CachedHooks:
        """The backbone's hooks for selectors reading ``text``. Tempo's relevance scores depend on that text,
        not on the budget: a second budget (or a re-run) reuses them."""
        if text not in self.hooks:
            self.hooks[text] = cache.CachedHooks(
                self.backbone,
                self.video,
                video_key=self.video_key,
                question=text,
                prefixes=PREFIX_STORE,
                computed=self.computed,
            )
        return self.hooks[text]


@dataclass(frozen=True)
class QuestionCell:
    """One question at one budget: what each method compresses for and answers."""

    ask: Ask
    settings: Settings  # the budget is the cell's
    tag: Cell | None = None  # (question index, budget) in a multi-question request, else None


class SharedBackboneRunner:
    """``ColumnRunner`` of every training-free method (``pipeline.columns``)."""

    def run(self, job: Job, names: Sequence[str]) -> Iterator[Event]:
        state = yield from self._start(job.prepared, job.settings)
        yield from run_cells(state, [QuestionCell(Ask(job.question), job.settings)], names)

    def run_many(self, job: ManyJob, names: Sequence[str]) -> Iterator[Event]:
        """Every (question, budget) cell of ``job``: events carry their cell (``pipeline.many``)."""
        state = yield from self._start(job.prepared, job.settings)
        cells = [QuestionCell(job.asks[i], job.settings_at(b), (i, b)) for i, b in job.cells()]
        yield from run_cells(state, cells, names)

    def _start(self, prepared: PreparedVideo, settings: Settings) -> Iterator[Event]:
        """Load the backbone and encode the video once (from the token cache when it is there)."""
        hub_id = model_zoo.get_backbone_spec(settings.backbone).hub_id
        backbone = model_zoo.load_backbone(settings.backbone, revision=settings.revisions.get(hub_id))
        yield Progress("encode", 0.15, f"Encoding {prepared.real_frames} frames once for every method…")
        t0 = time.perf_counter()
        key = video_key(backbone, prepared, settings)
        video, fresh = encode(backbone, prepared, key)
        yield Encoded({"encode": time.perf_counter() - t0}, (key, fresh) if fresh is not None else None)
        return SharedRun(prepared, backbone, video, key)

    def gpu_seconds(self, job: Job, names: Sequence[str]) -> float:
        """Seconds on a ZeroGPU slice: ``10 + 0.03·F + n·(4 + 0.02·F + 0.05·N)`` for F frames, n methods, N new
        tokens: the worker's start and first kernels, one encode, then per method its compression, prefill
        and decode (an over-estimate: the answers decode as one batch). Nothing loads: ZeroGPU places the
        backbone at start-up (``model_zoo.place_backbones``). The constants are guesses, not measured on a
        GPU (README, *The Space's ZeroGPU settings*)."""
        frames, settings = job.prepared.real_frames, job.settings
        per_method = 4 + frames * 0.02 + settings.max_new_tokens * 0.05
        return 10 + frames * 0.03 + per_method * len(names)


RUNNER = SharedBackboneRunner()


def run_cells(state: SharedRun, cells: Sequence[QuestionCell], names: Sequence[str]) -> Iterator[Event]:
    """Compress every cell with every method (a failure is that method's report in that cell), then answer
    every compressed one in one batched decode."""
    compressed = []
    work = [(cell, method) for cell in cells for method in names]
    for i, (cell, method) in enumerate(work):
        where = "" if cell.tag is None else f" (question {cell.tag[0] + 1}, budget {cell.tag[1]})"
        yield Progress("compress", 0.2 + 0.3 * i / len(work), f"{method}: compressing{where}…")
        item = compress_one(state, cell, method)
        if isinstance(item, MethodReport):
            yield MethodDone(item, cell.tag)
        else:
            compressed.append(item)
    if compressed:
        yield Progress("answer", 0.5, f"Answering with {len(compressed)} method(s) at once…")
        for batch in token_batches(compressed):
            yield from answer_all(state, batch)
    if state.computed:
        yield Computed(state.computed)


def token_batches(items: list[Compressed]) -> Iterator[list[Compressed]]:
    """``items`` in order, cut into consecutive batches of at most ``MAX_BATCH_TOKENS`` visual tokens (an
    item larger than that is a batch of its own)."""
    batch, tokens = [], 0
    for item in items:
        count = sum(int(segment.embeds.shape[0]) for segment in item.result.segments)
        if batch and tokens + count > MAX_BATCH_TOKENS:
            yield batch
            batch, tokens = [], 0
        batch.append(item)
        tokens += count
    if batch:
        yield batch


# --- encode ---------------------------------------------------------------------------------------------


def video_key(backbone, prepared: PreparedVideo, settings: Settings) -> tuple:
    """What decides the encoded tokens: the video, its sampling, the backbone (and the commit of its weights)
    and the dtype it runs in."""
    spec = backbone.spec
    return (
        prepared.fingerprint,
        settings.sampling_key(),
        settings.backbone,
        spec.revision,
        str(backbone.dtype),
    )


def encode(backbone, prepared: PreparedVideo, key: tuple):
    """The encoded video on the backbone's device, and its new CPU copy (None when it came from the cache)."""
    video = cache.TOKENS.get(key)
    if video is not None:
        return move_video(video, backbone.device), None
    with torch.inference_mode():
        video = backbone.encode(prepared.frames.frames, prepared.frames.timestamps)
    fresh = move_video(video, "cpu")
    cache.TOKENS.put(key, fresh)
    return move_video(video, backbone.device), fresh


def move_video(video, device):
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


# --- compress -------------------------------------------------------------------------------------------


@dataclass
class Compressed:
    """A method whose compression succeeded, waiting for its answer."""

    report: MethodReport
    result: object  # compressors.base.CompressionResult
    memory: dict  # measured over the compression
    cell: QuestionCell
    key: tuple | None = None  # what decides the compression when the question does not (``compress_cached``)

    def request(self) -> GenerationRequest:
        """The answer's request: the cell's prompt and reply prefix; a question-independent compression's
        prompt prefix is kept under its key."""
        return GenerationRequest(
            self.cell.ask.prompt,
            self.result.segments,
            keep=self.result.keep,
            max_new_tokens=self.cell.settings.max_new_tokens,
            prefix_key=None if self.key is None else ("answer prompt prefix", *self.key),
            reply_prefix=self.cell.ask.reply_prefix,
        )


def compress_one(state: SharedRun, cell: QuestionCell, method: str) -> Compressed | MethodReport:
    """Compress ``cell`` with ``method``; a failure becomes the method's report with its error (one sentence)."""
    report = MethodReport(method=method, label=method)
    memory = MemoryMeter(state.backbone.device)
    settings, spans = cell.settings, state.prepared.spans
    hooks = state.hooks_for(cell.ask.selection_text)
    try:
        compressor = compressors.build(method, **settings.options_for(method))
        report.label = compressor.label
        torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        before = hooks.reuse_counts()
        result, key, hit = compress_cached(state, cell, compressor, spans)
        report.timings["compress"] = time.perf_counter() - t0
        report.timings["reused"] = reused(hit, before, hooks.reuse_counts())
        account_compression(report, result, state.prepared, spans)
        if not result.segments:
            report.error = too_small(settings.budget, method, result.extra.get("note"))
    except Exception as err:  # one method failing must not take the other columns down
        report.error = failure(err)
    if report.error is not None:
        if report.error == OUT_OF_MEMORY:
            free_memory()  # outside the except: the traceback, and the memory it held, are gone
        report.memory = memory.stop()
        return report
    return Compressed(report, result, memory.stop(), cell, key)


def reused(compression: bool, before: tuple[int, int], after: tuple[int, int]) -> list[str]:
    """What a method's compression took from the caches, for the timings table: the whole compression, or
    Tempo's relevance scores and the prompt prefixes its scoring found (``CachedHooks.reuse_counts``)."""
    taken = ["compression"] if compression else []
    if after[0] > before[0]:
        taken.append("relevance scores")
    if (found := after[1] - before[1]) > 0:
        taken.append(f"{found} scoring prompt prefix{'es' if found > 1 else ''}")
    return taken


def compress_cached(state: SharedRun, cell: QuestionCell, compressor, spans):
    """``compressor.compress`` for ``cell``, the key that decides it when the method ignores the question (else
    None), and whether it came from the cache: the result is reused across questions from
    ``cache.COMPRESSIONS`` under that key (a new entry is also appended to ``state.computed``, for
    ``Computed``). The method reads the cell's selection text (``Ask.selection_text``).

    Key: the video key (what decides the tokens and the spans), the method, its options, the budget and the
    seed. The cache keeps a CPU copy (never GPU memory past a request); a result with a keep rule (a callable)
    is not cached.
    """
    settings, video = cell.settings, state.video
    key = None
    if not getattr(compressor, "question_conditioned", True):
        options = repr(sorted(compressor.options().items()))
        key = (*state.video_key, compressor.name, options, settings.budget, settings.seed)
        cached = cache.COMPRESSIONS.get(key)
        if cached is not None:
            return move_result(cached, video.embeds.device), key, True
    with torch.inference_mode():
        result = compressor.compress(
            video,
            spans,
            cell.ask.selection_text,
            budget=settings.budget,
            hooks=state.hooks_for(cell.ask.selection_text),
        )
    if key is not None and result.keep is None:
        kept = move_result(result, "cpu")
        cache.COMPRESSIONS.put(key, kept)
        state.computed.append(("compressions", key, kept))
    return result, key, False


def move_result(result, device):
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


# --- answer ---------------------------------------------------------------------------------------------


def answer_all(state: SharedRun, compressed: list[Compressed]) -> Iterator[Event]:
    """Answer every compressed method in one batched decode; if the batch fails, the methods it had not
    finished answer alone, each in its own try (one bad method never takes the others down)."""
    pending = {(item.cell.tag, item.report.method): item for item in compressed}
    failed = False
    try:
        yield from decode_together(state, compressed, pending)
    except Exception:  # out of memory included: fall back to one method at a time
        failed = True
    if failed:
        free_memory()  # outside the except: the batch's tensors are no longer referenced
    for key, item in list(pending.items()):
        report = yield from answer_alone(state, item)
        del pending[key]
        yield MethodDone(report, item.cell.tag)


def decode_together(state: SharedRun, compressed: list[Compressed], pending: dict) -> Iterator[Event]:
    """The batched decode: AnswerDelta per method as its tokens arrive; each method's report is done (and
    leaves ``pending``) as soon as its answer ends. Its ``answer`` time is its own prefill plus the wall
    time of the batched steps it took part in, shared with the others (``answer_batched``)."""
    memory = MemoryMeter(state.backbone.device)
    requests = [item.request() for item in compressed]
    batch = state.backbone.generate_many(requests, prefixes=PREFIX_STORE)
    shown = [""] * len(compressed)
    for index, delta in batch:
        item = compressed[index]
        tag = item.cell.tag
        if delta:
            shown[index] += delta
            yield AnswerDelta(item.report.method, shown[index], tag)
        if batch[index].done:
            report = answered(item, batch[index], state.prepared, batched=True)
            report.memory = max_memory(item.memory, memory.stop())
            if report.answer != shown[index]:
                yield AnswerDelta(report.method, report.answer, tag)
            del pending[(tag, report.method)]
            yield MethodDone(report, tag)


def answered(item: Compressed, generation, prepared: PreparedVideo, *, batched: bool) -> MethodReport:
    """The method's report once its answer is complete: answer text, accounting, answer timings."""
    report = item.report
    try:
        report.answer = generation.text
        stats = generation.stats
        report.timings.update(answer=stats["prefill_s"] + stats["decode_s"], answer_batched=batched)
        if stats.get("prefix_reused"):
            report.timings["reused"] = [*report.timings.get("reused", []), "answer prompt prefix"]
        account_generation(report, item.result, stats, frames=prepared.real_frames)
    except Exception as err:  # e.g. the engine received other tokens than the method reported
        report.error = one_sentence(err)
    return report


def answer_alone(state: SharedRun, item: Compressed) -> Iterator[Event]:
    """One method's answer on its own (the fallback when the batched decode failed)."""
    report = item.report
    memory = MemoryMeter(state.backbone.device)
    shown = ""
    try:
        request = item.request()  # alone, not a batch of one: the batch may be what failed
        generation = state.backbone.generate(
            request.question,
            request.segments,
            keep=request.keep,
            max_new_tokens=request.max_new_tokens,
            prefix_key=request.prefix_key,
            prefixes=PREFIX_STORE,
            reply_prefix=request.reply_prefix,
        )
        for delta in generation:
            shown += delta
            yield AnswerDelta(report.method, shown, item.cell.tag)
        answered(item, generation, state.prepared, batched=False)
    except Exception as err:  # one method failing must not take the other columns down
        report.error = failure(err)
    if report.error == OUT_OF_MEMORY:
        free_memory()
    elif report.error is None and report.answer != shown:
        yield AnswerDelta(report.method, report.answer, item.cell.tag)
    report.memory = max_memory(item.memory, memory.stop())
    return report
