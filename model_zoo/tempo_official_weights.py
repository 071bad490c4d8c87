"""Tempo-6B's checkpoint and its base VLM's pieces: strict loading under the authors' key names, Hub files.

The authors' saver writes ``pytorch_model.bin`` (``tempo/mm_datautils.py`` ~101, 128 of
github.com/FeiElysia/Tempo); a Hub copy may hold safetensors instead. Both load (``model_zoo.checkpoint``:
``.bin`` with ``torch.load(weights_only=True, mmap=True)``), and every name and shape is checked against the
modules built from ``config.json`` before any tensor is copied: nothing loads unless they match exactly.
The base ``Qwen/Qwen3-VL-2B-Instruct`` gives the small VLM's config, tokenizer, preprocessing numbers and
the two output-embedding rows of the relevance head.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoTokenizer, Qwen3VLConfig

from model_zoo.checkpoint import WeightSource, summarize_keys
from model_zoo.loading import HUB_ERRORS
from model_zoo.preprocess import VideoPreprocessConfig
from model_zoo.tempo_official_config import BASE_VLM, HUB_ID, TempoLoadError, TempoModules

#: Files fetched from the Hub: configs, tokenizer, chat template; weights only where needed.
META_PATTERNS = ["*.json", "*.txt", "*.jinja", "tokenizer*", "*.model"]


def check_keys(
    where: str, found: Iterable[str], required: Iterable[str], optional: Iterable[str] = ()
) -> None:
    """TempoLoadError naming every missing and every unexpected key, unless ``found`` matches exactly."""
    found, required = set(found), set(required)
    missing = sorted(required - found)
    unexpected = sorted(found - required - set(optional))
    if not missing and not unexpected:
        return
    lines = [
        f"The checkpoint at {where} does not match Tempo-6B's official key names "
        f"({len(missing)} missing, {len(unexpected)} unexpected), so it was not loaded."
    ]
    if missing:
        lines.append(f"  missing: {summarize_keys(missing)}")
    if unexpected:
        lines.append(f"  unexpected: {summarize_keys(unexpected)}")
    raise TempoLoadError("\n".join(lines))


def check_shapes(where: str, shapes: dict, targets: dict[str, torch.Tensor]) -> None:
    """TempoLoadError listing tensors whose checkpoint shape differs from the model built from config.json."""
    wrong = [
        f"{key}: checkpoint {list(shapes[key])}, model {list(t.shape)}"
        for key, t in targets.items()
        if key in shapes and tuple(shapes[key]) != tuple(t.shape)
    ]
    if wrong:
        more = f"; and {len(wrong) - 8} more" if len(wrong) > 8 else ""
        raise TempoLoadError(
            f"The checkpoint at {where} has {len(wrong)} tensors shaped unlike its config.json: "
            + "; ".join(wrong[:8])
            + more
        )


@torch.no_grad()
def load_checkpoint(modules: TempoModules, directory: Path, *, tied: bool) -> None:
    """Strictly load the checkpoint in ``directory`` (safetensors or ``.bin``) into ``modules``: names and
    shapes are checked first, and nothing is copied unless both match."""
    targets = modules.official_tensors()
    optional = {"lm_head.weight"} if tied else set()
    source = WeightSource.open(directory, TempoLoadError)
    check_keys(str(directory), source.shapes, set(targets) - optional, optional)
    wanted = {k: v for k, v in targets.items() if k not in optional}
    check_shapes(str(directory), source.shapes, wanted)
    source.copy_into(wanted)


# ------------------------------------------------------------------------------------- repositories


def resolve_repo(name: str | Path, *, revision: str | None, what: str, patterns: Sequence[str]) -> Path:
    """A local directory as is; otherwise a Hub repo id fetched (or found in the cache) at ``revision``."""
    path = Path(name)
    if path.is_dir():
        return path
    if path.is_absolute() or str(name).startswith((".", "~")) or str(name).count("/") != 1:
        raise TempoLoadError(f"The {what} {str(name)!r} is neither a local directory nor a Hub repo id.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), revision=revision, allow_patterns=list(patterns)))
    except (*HUB_ERRORS, ValueError) as exc:
        raise TempoLoadError(
            f"Cannot fetch the {what} {name} at revision {revision or 'main'} ({type(exc).__name__}); "
            f"the official Tempo variant needs Hub access (or a local copy) of {HUB_ID} and {BASE_VLM}."
        ) from exc


def fetch_checkpoint(name: str | Path, *, revision: str | None) -> Path:
    """The Tempo checkpoint's directory: a local one as is; from the Hub its configs and tokenizer with its
    safetensors weights, or, when the repo has none, its ``pytorch_model*.bin`` files (never both)."""
    what = "Tempo checkpoint"
    directory = resolve_repo(name, revision=revision, what=what, patterns=[*META_PATTERNS, "*.safetensors"])
    if Path(name).is_dir() or any(directory.glob("*.safetensors")):
        return directory
    return resolve_repo(name, revision=revision, what=what, patterns=[*META_PATTERNS, "pytorch_model*.bin"])


#: Where the relevance rows live in the base VLM: its output head, or the input embedding it is tied to.
HEAD_KEYS = ("lm_head.weight", "model.language_model.embed_tokens.weight")


def fetch_head_file(repo: str, directory: Path, *, revision: str | None) -> Path:
    """The (local or downloaded) safetensors shard of the base VLM holding its output head or embedding."""
    index = directory / "model.safetensors.index.json"
    filename = "model.safetensors"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        filename = next((weight_map[k] for k in HEAD_KEYS if k in weight_map), None)
        if filename is None:
            raise TempoLoadError(f"The base VLM {repo} has neither {' nor '.join(HEAD_KEYS)} in its index.")
    if (directory / filename).exists():
        return directory / filename
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except HUB_ERRORS as exc:
        raise TempoLoadError(
            f"Cannot fetch {filename} of the base VLM {repo} ({type(exc).__name__})."
        ) from exc


# ------------------------------------------------------------------------------------------ base VLM


def load_base_tokenizer(directory: Path):
    """The base VLM's tokenizer, with the processor's chat template when the tokenizer has none."""
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if not tokenizer.chat_template:
        if (directory / "chat_template.json").exists():
            tokenizer.chat_template = json.loads((directory / "chat_template.json").read_text())[
                "chat_template"
            ]
        elif (directory / "chat_template.jinja").exists():
            tokenizer.chat_template = (directory / "chat_template.jinja").read_text()
        else:
            raise TempoLoadError(f"The base VLM at {directory} has no chat template.")
    return tokenizer


def load_preprocess(directory: Path) -> VideoPreprocessConfig:
    """Patch size, temporal patch, merge size, mean and std from the base VLM's processor config."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if (directory / name).exists():
            return VideoPreprocessConfig.from_json(directory / name)
    return VideoPreprocessConfig()


def word_id(tokenizer, word: str) -> int:
    """The vocabulary id of ``word`` (``tokenizer.get_vocab()[word]``, as the authors look it up)."""
    vocab = tokenizer.get_vocab()
    if word not in vocab:
        raise TempoLoadError(f"The base VLM's vocabulary has no entry {word!r} for the relevance head.")
    return int(vocab[word])


def relevance_weight(
    weights: Path, tokenizer, vlm_config: Qwen3VLConfig, *, dtype: torch.dtype
) -> torch.Tensor:
    """[D] float32: row("Yes") - row("No") of the base model's output embedding (``lm_head``, or the input
    embedding when tied), the difference taken in the model's load dtype as the authors' bf16 head does."""
    yes, no = word_id(tokenizer, "Yes"), word_id(tokenizer, "No")
    with safe_open(str(weights), framework="pt") as handle:
        keys = set(handle.keys())
        name = HEAD_KEYS[0]
        if name not in keys:
            if not vlm_config.tie_word_embeddings or HEAD_KEYS[1] not in keys:
                raise TempoLoadError(
                    f"The base VLM file {weights} has no {name} (and no tied embedding to use)."
                )
            name = HEAD_KEYS[1]
        rows = handle.get_slice(name)
        row_yes, row_no = rows[yes : yes + 1].to(dtype), rows[no : no + 1].to(dtype)
    return (row_yes - row_no)[0].float()


# ---------------------------------------------------------------------------------------------- loading


def eos_ids_for(directory: Path, tokenizer) -> list[int]:
    """Stop ids: ``<|im_end|>`` (the stop string of the "qwen" template) and the generation config's EOS."""
    ids = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    path = directory / "generation_config.json"
    if path.exists():
        eos = json.loads(path.read_text()).get("eos_token_id")
        ids += [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return [i for i in dict.fromkeys(ids) if isinstance(i, int) and i >= 0]
