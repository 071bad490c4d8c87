"""The columns of VideoChat-Flash-2B and of the official XComp: the authors' own models beside the arena's.

``videochat-flash-2b.official`` runs ``OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448`` (XComp's base model, the
paper's baseline); ``xcomp-2b.official`` runs XComp's fine-tuned weights (Zhang et al., NeurIPS 2025, arXiv
2604.14149; github.com/ZheyuAqaZhang/XComp) with LP-Comp and QC-Comp as the authors' ``run.sh`` runs them.
Both are rebuilt natively (``model_zoo.videochat_flash``: UMT-L, the ToMe projector, transformers'
``Qwen2ForCausalLM``; no remote code). This module adds what ``model_zoo`` may not import: XComp's LP-Comp
schedule and QC-Comp layers from ``compressors.xcomp`` (one copy of each, shared with the training-free
XComp column).

Frames. Each column samples its own, as its authors do (``prepare``, before the GPU call): the model card's
rule for VideoChat-Flash (1 fps, 64..512 frames), ``run.sh``'s for XComp (8 fps, 128..1024 frames, short
videos repeated up to 128), at the source frames the authors' ``load_video`` picks, each resized from full
resolution to the model's 448 x 448 input with PIL bicubic (what its preprocessing does). Budget: the
arena's shared budget caps the frames that reach the LLM at 16 tokens each, in whole 8-frame units (XComp
keeps a fixed 2048 frames in the authors' code; VideoChat-Flash feeds every sampled frame); QC-Comp runs
only from 1024 sampled frames, as the authors run it. Where a run departs, its notes say so in the column.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import media
from compressors.xcomp import lp_schedule, qc_layers
from model_zoo import videochat_flash as vcf
from model_zoo.videochat_flash_frames import (
    VIDEOCHAT_FLASH_SAMPLING,
    XCOMP_SAMPLING,
    SamplingRule,
    official_frame_indices,
)
from pipeline.authors import (
    AuthorsRunner,
    OwnFrames,
    Resident,
    keep_own_frames,
    own_frames,
    sample_positions,
    stream_answer,
    weights_key,
)
from pipeline.events import Event, MethodReport, Progress
from pipeline.request import Job
from pipeline.settings import SettingsError
from pipeline.video import PreparedVideo

SIDE = 448  # the checkpoints' input size (``res448``)


def xcomp_options(layers: int = 28) -> vcf.XCompOptions:
    """XComp's inference settings: LP-Comp's schedule and QC-Comp's layer band for ``layers`` decoder layers."""
    return vcf.XCompOptions(lp_schedule=tuple(lp_schedule(layers)), qc_layers=tuple(qc_layers(layers)))


def _load_flash(
    checkpoint: str, base: str, revision: str | None, base_revision: str | None
) -> vcf.VideoChatFlash:
    return vcf.load_videochat_flash(checkpoint, revision=revision)


def _load_xcomp(
    checkpoint: str | None, base: str, revision: str | None, base_revision: str | None
) -> vcf.VideoChatFlash:
    if not checkpoint:
        raise SettingsError(
            "XComp's weights are not on the Hub: the Space's maintainer mirrors them first (README, "
            "'The authors' own models'); this Space has none set."
        )
    return vcf.load_xcomp(
        checkpoint,
        options=xcomp_options(),
        weights_revision=revision,
        base=base,
        base_revision=base_revision,
    )


def sample_flash_frames(prepared: PreparedVideo, rule: SamplingRule, limits: media.Limits) -> OwnFrames:
    """The source frames the authors' ``load_video`` picks under ``rule``, at 448 x 448 (at most
    ``limits.max_frames`` of them, evenly chosen, when the server allows fewer)."""
    info = prepared.info
    positions = official_frame_indices(info.duration, info.frame_count, rule)
    if len(positions) > limits.max_frames:
        step = len(positions) / limits.max_frames
        positions = [positions[int(i * step)] for i in range(limits.max_frames)]
    return sample_positions(prepared.path, positions, (SIDE, SIDE), info.duration, limits)


class FlashRunner(AuthorsRunner):
    """``ColumnRunner`` of one of the two columns (see the module docstring)."""

    def __init__(self, name: str, rule: SamplingRule, load) -> None:
        self.name, self.rule, self.model = name, rule, Resident(load, name)

    def prepare(self, job: Job, names: Sequence[str], limits: media.Limits) -> Iterator[Event]:
        prepared, rule = job.prepared, self.rule
        yield Progress("sample", 0.12, f"{self.name}: sampling its own frames at {rule.fps:g} fps…")
        key = (self.name, rule, min(rule.max_frames, limits.max_frames), SIDE)
        own = own_frames(prepared, key, lambda: sample_flash_frames(prepared, rule, limits))
        return dict.fromkeys(names, own)

    def gpu_seconds(self, job: Job, names: Sequence[str]) -> float:
        """Per column: loading its model when it is not held (``load_seconds``), encoding its frames (its own
        when prepared, else the rule's count) and the answer."""
        guess = min(
            self.rule.max_frames, max(self.rule.min_frames, round(self.rule.fps * job.prepared.info.duration))
        )
        frames = [len(own) if isinstance(own := job.inputs.get(n), OwnFrames) else guess for n in names]
        work = sum(6 + count * 0.03 + job.settings.max_new_tokens * 0.05 for count in frames)
        return self.load_seconds(job, names) + work

    def answer(self, report: MethodReport, job: Job, name: str, own: OwnFrames) -> Iterator[Event]:
        model = self.model(*weights_key(job.settings, name))
        run = yield from stream_answer(
            report,
            lambda: model.run(
                own.frames.frames,
                own.duration,
                job.question,
                budget=job.settings.budget,
                max_new_tokens=job.settings.max_new_tokens,
            ),
        )
        account(report, run, job.prepared, own, fps=self.rule.fps)


def account(report: MethodReport, run: vcf.FlashRun, prepared: PreparedVideo, own: OwnFrames, *, fps) -> None:
    """Token account as the other columns report it, over its own frames; LP-Comp's per-layer counts."""
    keep_own_frames(report, prepared, own, run.kept_frames)
    layers = run.layer_tokens
    report.tokens = {
        "raw": run.raw_tokens,
        "llm_input": run.llm_tokens,
        "per_frame": round(run.llm_tokens / max(1, len(run.frame_indices)), 3),
        "ratio": round(run.raw_tokens / max(1, run.llm_tokens), 3),
        "last_layer": int(layers[-1]) if layers else run.llm_tokens,
        "mean_per_layer": round(sum(layers) / len(layers), 2) if layers else float(run.llm_tokens),
    }
    report.extra = {
        "frames": len(run.frame_indices),
        "fps": fps,
        "shared_frames": prepared.real_frames,
        "kept": len(run.kept_frames),
        "qc_comp": run.frame_scores is not None,
        "per_layer": list(layers),
        "notes": list(run.notes),
    }


VIDEOCHAT = FlashRunner("videochat-flash-2b.official", VIDEOCHAT_FLASH_SAMPLING, _load_flash)
XCOMP = FlashRunner("xcomp-2b.official", XCOMP_SAMPLING, _load_xcomp)
