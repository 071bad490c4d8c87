"""The model zoo's registries: backbones and variants, named ``<backbone>.<method>`` (``qwen3vl-2b.tempo``).

A variant is one flat frozen dataclass (timm's registry style): which backbone, which compression method with
which options, and the sampling defaults. Defaults follow ``METHODS.md``: 1 fps, 8-frame segments, a
4096-token budget and at most 1024 frames on GPU-sized backbones; the offline ``tiny-random`` backbone uses
small budgets and few frames so CPU tests stay fast. A new variant is one ``Variant``; a new backbone one
``BackboneSpec`` (plus an adapter for a new family).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TINY = "tiny-random"
#: The backbone a GPU server (the Space) answers with unless told otherwise: ``app.py`` places it at start-up
#: and the README's ``preload_from_hub`` fetches its files when the Space is built.
GPU_DEFAULT = "qwen3vl-2b"

#: Options of each method, as keyword arguments of its compressor (``compressors.build(method, **options)``),
#: with the values METHODS.md gives.
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "espresso": {"spatial_share": 0.75},
    "xcomp": {
        "tokens_per_frame": 16,
        "window_frames": 64,
        "window_stride": 32,
        "clip_frames": 8,
        "lp_comp": True,
    },
    "tempo": {"min_tokens": 4, "max_tokens": 128},
    "uniform": {},
    "pool": {},
}

METHOD_LABELS: dict[str, str] = {
    "espresso": "Espresso (training-free: pooling stands in for the learned compressors)",
    "xcomp": "XComp (training-free: ToMe + question-conditioned frame selection + progressive compression)",
    "tempo": "Tempo (training-free: the backbone's relevance prior + adaptive token allocation)",
    "uniform": "Uniform frame sampling (stock layout)",
    "pool": "Average pooling of every frame",
}

#: How each column differs from its paper, and why: what the page shows per column (``ColumnInfo.about``),
#: word for word the README's "How each column differs from its paper" (``tests/test_departures.py``).
METHOD_NOTES: dict[str, str] = {
    "espresso": (
        "arXiv 2412.04729 has no public code or weights, so average pooling stands in for its learned spatial "
        "and temporal compressors, on Qwen3-VL's 2-frame groups (the temporal tokens count groups, not frames). "
        "Every segment still gets the same p + t tokens whatever its content, as in the paper."
    ),
    "xcomp": (
        "arXiv 2604.14149 on Qwen3-VL, without the paper's compression fine-tuning: ToMe to 16 tokens per frame, "
        "QC-Comp scoring clips inside the forward over the video in chunks of 576 frames (8 shifted chunkings) "
        "and LP-Comp renumbering what remains, as the authors' run.sh runs them, but on Qwen3-VL's 2-frame groups"
        " (a clip is 4 groups, the chunkings shift by 66 frames), with its 3-D positions, and with the frames "
        "kept as the shared budget allows: QC-Comp runs whenever the budget cannot hold every group (the authors "
        "run it only from 1024 sampled frames and keep 2048)."
    ),
    "tempo": (
        "arXiv 2604.08120 without its weights: the shared backbone's own Yes/No answer to Tempo's prompt is the "
        "relevance prior and ATA is the authors', but each segment's visual tokens are merged to its share "
        "(Tempo-6B's learned memory tokens need its weights), on the arena's frames rather than 2 fps at a 512 "
        "edge, each segment timed at the middle of what it covers."
    ),
    "uniform": (
        "Baseline, no paper: when the budget covers the video it is exactly the stock Qwen3-VL input of the "
        "sampled frames; otherwise floor(B / P) of the encoded 2-frame groups, spread evenly, each laid out as "
        "the stock model lays it out (a stock pipeline would sample fewer frames before encoding)."
    ),
    "pool": (
        "Baseline, no paper: every 2-frame group is kept and its token grid average-pooled to the largest grid "
        "that fits the budget, each after its timestamp: the pooling projector Espresso and XComp argue against."
    ),
}


class UnknownNameError(KeyError):
    """A backbone or variant name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneSpec:
    """One loadable backbone: where its weights live and what a run on it defaults to."""

    name: str
    family: str  # adapter family: "qwen3_vl"
    hub_id: str | None  # None: built offline (tiny-random)
    revision: str
    license: str
    num_layers: int  # decoder layers of the answering LLM
    label: str
    fps: float = 1.0
    max_frames: int = 1024
    segment_frames: int = 8
    budget: int = 4096
    needs_gpu: bool = True
    notes: str = ""


@dataclass(frozen=True)
class Variant:
    """One backbone + one method + defaults: what a column of the comparison runs.

    ``options`` are the method's keyword options as sorted (name, value) pairs (hashable, immutable);
    ``options_dict()`` gives them as a dict for ``compressors.build``.
    """

    name: str
    backbone: str
    method: str
    hub_id: str | None
    revision: str
    license: str
    fps: float
    max_frames: int
    segment_frames: int
    budget: int
    options: tuple[tuple[str, Any], ...] = field(default=())
    label: str = ""
    notes: str = ""
    #: The options a visitor may change on a variant of its own weights, each with its allowed values (the page
    #: shows each as a choice; ``pipeline.settings`` refuses anything else).
    choices: tuple[tuple[str, tuple], ...] = field(default=())

    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)


_BACKBONES = (
    BackboneSpec(
        name="qwen3vl-2b",
        family="qwen3_vl",
        hub_id="Qwen/Qwen3-VL-2B-Instruct",
        revision="main",
        license="apache-2.0",
        num_layers=28,
        label="Qwen3-VL-2B-Instruct",
        notes="Tempo's own small VLM.",
    ),
    BackboneSpec(
        name="qwen3vl-4b",
        family="qwen3_vl",
        hub_id="Qwen/Qwen3-VL-4B-Instruct",
        revision="main",
        license="apache-2.0",
        num_layers=36,
        label="Qwen3-VL-4B-Instruct",
    ),
    BackboneSpec(
        name="qwen3vl-8b",
        family="qwen3_vl",
        hub_id="Qwen/Qwen3-VL-8B-Instruct",
        revision="main",
        license="apache-2.0",
        num_layers=36,
        label="Qwen3-VL-8B-Instruct",
    ),
    BackboneSpec(
        name=TINY,
        family="qwen3_vl",
        hub_id=None,
        revision="local",
        license="apache-2.0",
        num_layers=4,
        label="Tiny random Qwen3-VL (offline tests; answers are noise)",
        max_frames=32,
        budget=64,  # below the ~240 raw tokens of 32 tiny frames, so every method must compress
        needs_gpu=False,
        notes="Built in memory by model_zoo.tiny.build_tiny: real classes, random weights, no download.",
    ),
)

backbones: dict[str, BackboneSpec] = {b.name: b for b in _BACKBONES}


def make_variant(spec: BackboneSpec, method: str) -> Variant:
    """The variant of ``method`` on ``spec`` with the backbone's defaults and the method's options."""
    return Variant(
        name=f"{spec.name}.{method}",
        backbone=spec.name,
        method=method,
        hub_id=spec.hub_id,
        revision=spec.revision,
        license=spec.license,
        fps=spec.fps,
        max_frames=spec.max_frames,
        segment_frames=spec.segment_frames,
        budget=spec.budget,
        options=tuple(sorted(METHOD_OPTIONS[method].items())),
        label=f"{spec.label} · {METHOD_LABELS[method]}",
        notes=METHOD_NOTES[method],
    )


variants: dict[str, Variant] = {
    v.name: v for v in (make_variant(b, m) for b in _BACKBONES for m in METHOD_OPTIONS)
}


# ------------------------------------------------------------------------------ official checkpoints
# Variants that run an author-released model with its own weights and inference flow instead of a
# compressor on a shared backbone (so not in the backbone x method grid above). ``tempo-6b.official``:
# Tempo-6B (arXiv 2604.08120), run by ``pipeline.official`` on ``model_zoo.tempo_official``.
OFFICIAL_VARIANTS: dict[str, Variant] = {
    "tempo-6b.official": Variant(
        name="tempo-6b.official",
        backbone="tempo-6b",
        method="official",
        hub_id="Vision-CAIR/Tempo-6B",
        revision="main",
        license="academic non-commercial licence (Vision-CAIR/Tempo-6B model card)",
        fps=2.0,
        max_frames=1024,
        segment_frames=8,
        budget=4096,
        # visual_token_budget: the paper's "4K" and "8K" settings, one set of weights (infer.py's
        # --visual_token_budget); the shared budget does not apply to this column.
        options=(("base_vlm", "Qwen/Qwen3-VL-2B-Instruct"), ("min_tokens", 4), ("visual_token_budget", 4096)),
        choices=(("visual_token_budget", (4096, 8192)),),
        label="Tempo-6B (official weights: Qwen3-VL-2B compressor + Qwen3-4B answering LLM)",
        notes="The authors' Tempo-6B weights (arXiv 2604.08120) run by our code with their sampling (2 fps from the "
        "source, at most 1024 frames, a 512 long edge, their own timestamps) and their 4K or 8K budget instead "
        "of the arena's frames and budget. Ours: PyAV decoding where the authors use decord, sdpa attention "
        "instead of flash-attention 2, PIL bicubic in the third resize where their stack uses torchvision.",
    ),
    # VideoChat-Flash-2B (XComp's base model, the paper's baseline) and XComp (arXiv 2604.14149), run by
    # ``pipeline.flash`` on ``model_zoo.videochat_flash``. XComp's weights are on the authors' Google Drive only:
    # no hub id; the Space's maintainer mirrors them (README) and points the column at them.
    "videochat-flash-2b.official": Variant(
        name="videochat-flash-2b.official",
        backbone="videochat-flash-2b",
        method="official",
        hub_id="OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448",
        revision="main",
        license="apache-2.0 (model card; the code is MIT)",
        fps=1.0,
        max_frames=512,
        segment_frames=8,
        budget=4096,
        options=(("base_vlm", "OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448"),),
        label="VideoChat-Flash-2B (official weights: UMT-L + ToMe projector + Qwen2.5-1.5B; XComp's base model)",
        notes="The authors' VideoChat-Flash-2B (arXiv 2501.00574), XComp's base model and the paper's "
        "baseline, rebuilt natively (no remote code) with its own sampling (1 fps, 64 to 512 frames at "
        "448 px): bf16 on CUDA (the model card's dtype; the authors' evaluation uses fp16), and the "
        "shared budget caps its frames at 16 tokens each in whole 8-frame units, taken evenly from the "
        "sampled ones (the authors feed every sampled frame). Ours: PyAV decoding where the authors use "
        "decord, sdpa attention instead of flash-attention 2.",
    ),
    "xcomp-2b.official": Variant(
        name="xcomp-2b.official",
        backbone="xcomp-2b",
        method="official",
        hub_id=None,
        revision="main",
        license="MIT (XComp's weights and code)",
        fps=8.0,
        max_frames=1024,
        segment_frames=8,
        budget=4096,
        options=(("base_vlm", "OpenGVLab/VideoChat-Flash-Qwen2_5-2B_res448"),),
        label="XComp-2B (official weights: VideoChat-Flash-2B fine-tuned for LP-Comp and QC-Comp)",
        notes="The authors' XComp weights (arXiv 2604.14149) with LP-Comp and QC-Comp as their run.sh runs "
        "them (8 fps, 128 to 1024 frames; QC-Comp only from 1024 sampled frames): bf16 on CUDA; the "
        "shared budget caps the frames as for VideoChat-Flash (the authors keep 2048); a frame QC-Comp "
        "could not score ranks last (the authors divide by zero); scoring runs the prefill only (the "
        "authors also decode an answer they discard). Its weights are on the authors' Google Drive only: "
        "the Space's maintainer mirrors them (README). Ours: PyAV decoding, sdpa attention.",
    ),
}


def list_official_variants() -> list[str]:
    """Variants that run an author-released checkpoint (``get_variant`` finds them too)."""
    return list(OFFICIAL_VARIANTS)


def _lookup(kind: str, registry, name: str):
    if name not in registry:
        raise UnknownNameError(f"unknown {kind} {name!r}; valid names: {', '.join(registry)}")
    return registry[name]


def list_variants() -> list[str]:
    """Every variant name, backbone by backbone."""
    return list(variants)


def get_variant(name: str) -> Variant:
    """The variant called ``name``; UnknownNameError (a KeyError) listing the valid names otherwise."""
    return _lookup("variant", variants | OFFICIAL_VARIANTS, name)


def list_backbones() -> list[str]:
    return list(backbones)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The backbone called ``name``; UnknownNameError listing the valid names otherwise."""
    return _lookup("backbone", backbones, name)
