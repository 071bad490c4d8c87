"""A Hugging Face Hub cache on disk, laid out as huggingface_hub lays it out, for offline tests of the
real-checkpoint path (read from huggingface_hub 2.4's ``file_download`` and ``_snapshot_download``):

    <cache>/models--<org>--<name>/refs/<branch>            the commit the branch pointed to when last fetched
    <cache>/models--<org>--<name>/snapshots/<commit>/<file>

Offline (``HF_HUB_OFFLINE=1``), ``hf_hub_download`` and ``snapshot_download`` resolve a branch through
``refs/<branch>`` and read a commit's files from ``snapshots/<commit>``. The library keeps the files in
``blobs/`` and links them from the snapshot where symlinks work; plain files in the snapshot are what it
does where they do not, and read the same.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import huggingface_hub

from model_zoo.tiny import build_tiny


def repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def point(cache: Path, repo_id: str, commit: str, ref: str = "main") -> None:
    """Make ``ref`` of ``repo_id`` name ``commit`` (what a fetch of the branch leaves behind)."""
    refs = repo_dir(cache, repo_id) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / ref).write_text(commit)  # no newline: the library reads the file whole


def write_tiny_snapshot(cache: Path, repo_id: str, commit: str, *, seed: int) -> Path:
    """A tiny Qwen3-VL checkpoint (``model_zoo.tiny``, random weights of ``seed``) as commit ``commit`` of
    ``repo_id``, with its chat template beside the tokenizer and a video preprocessor config, as Qwen ships
    them. Returns the snapshot folder."""
    folder = repo_dir(cache, repo_id) / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny(seed)
    model.save_pretrained(folder)
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    bare.save_pretrained(folder)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": tokenizer.chat_template}))
    video = {"size": {"shortest_edge": 4096, "longest_edge": 65536}, "patch_size": 16, "merge_size": 2}
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video))
    return folder


def use_cache(monkeypatch, cache: Path) -> None:
    """Read the Hub from ``cache`` only, offline, for the rest of the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
