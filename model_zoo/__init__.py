"""The model zoo: backbones, variants and the engine that answers from compressed visual tokens.

Names are the API: ``get_variant("qwen3vl-2b.tempo")``, ``load_backbone("qwen3vl-2b")``; the offline
``tiny-random`` backbone needs no download. ``model_zoo`` never imports ``compressors`` (nor the reverse):
the backbone implements ``compressors.base.BackboneHooks`` structurally and takes any segment object with
``text``/``embeds``/``positions``/``deepstack``.
"""

from model_zoo.engine_layers import EngineError, KeepRule
from model_zoo.loading import (
    ModelLoadError,
    load_backbone,
    place_backbones,
    resident_backbones,
    resolve_commit,
    serve_all,
    served_backbones,
    set_max_resident,
    unload_all,
)
from model_zoo.preprocess import PreprocessError, VideoInputs, VideoPreprocessConfig, preprocess_video
from model_zoo.prompt import PromptError, VisualSegmentLike
from model_zoo.qwen3_vl import Generation, Qwen3VLBackbone, VisualTokens
from model_zoo.variants import (
    GPU_DEFAULT,
    TINY,
    BackboneSpec,
    UnknownNameError,
    Variant,
    backbones,
    get_backbone_spec,
    get_variant,
    list_backbones,
    list_variants,
    variants,
)

__all__ = [
    "GPU_DEFAULT",
    "TINY",
    "BackboneSpec",
    "EngineError",
    "Generation",
    "KeepRule",
    "ModelLoadError",
    "PreprocessError",
    "PromptError",
    "Qwen3VLBackbone",
    "UnknownNameError",
    "Variant",
    "VideoInputs",
    "VideoPreprocessConfig",
    "VisualSegmentLike",
    "VisualTokens",
    "backbones",
    "get_backbone_spec",
    "get_variant",
    "list_backbones",
    "list_variants",
    "load_backbone",
    "preprocess_video",
    "place_backbones",
    "resident_backbones",
    "resolve_commit",
    "serve_all",
    "served_backbones",
    "set_max_resident",
    "unload_all",
    "variants",
]
