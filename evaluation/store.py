"""Predictions on disk: append-only per-process files, the resume keys, and the merge into one file.

Each process appends its records to ``parts/rank-<r>.jsonl``, one JSON line flushed as soon as it is made,
so a killed run loses at most the line being written (a torn last line is skipped when read, and the next
append starts on a fresh line). A record's ``key`` is (benchmark file hash, question id, method, budget,
settings fingerprint): re-running the same command finds every key already there and skips it; a change
to the benchmark file or to any setting that decides an answer makes new keys. ``merge`` writes
``predictions.jsonl`` (atomically) with one record per wanted key, in the plan's order.

Lmms-eval writes its results only at the end of a run; a crash there loses the whole run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

PARTS = "parts"
PREDICTIONS = "predictions.jsonl"


def record_key(bench: str, qid: str, method: str, budget: int, settings: str) -> str:
    """The resume key of one question x method x budget (``bench``: the file hash, ``settings``: the
    settings fingerprint)."""
    return f"{bench[:16]}|{qid}|{method}|{budget}|{settings}"


def fingerprint(value) -> str:
    """12 hex digits of the sha256 of ``value`` as canonical JSON."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def needs_retry(record: dict) -> bool:
    """A failure before any model work (missing or unreadable video, a prompt refused) is tried again by the
    next run; a method's own failure (e.g. a budget too small for it) is a result and stays."""
    return record.get("error") is not None and record.get("stage") != "method"


class PartWriter:
    """Appends records to this process's part file, one flushed line each."""

    def __init__(self, out: Path, rank: int) -> None:
        folder = out / PARTS
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"rank-{rank}.jsonl"
        self._file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            self._file.write("\n")  # the previous run was killed mid-line

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, sort_keys=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _lines(path: Path) -> Iterator[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        if isinstance(record, dict) and "key" in record:
            yield record


def read_records(out: Path) -> Iterator[dict]:
    """Every record in ``out``'s part files, then in its merged predictions (file order)."""
    for path in sorted((out / PARTS).glob("rank-*.jsonl")):
        yield from _lines(path)
    yield from _lines(out / PREDICTIONS)


def done_keys(out: Path) -> set[str]:
    """Keys that need no more work (their record is an answer or a method's own failure)."""
    return {r["key"] for r in read_records(out) if not needs_retry(r)}


def merge(out: Path, keys: Iterable[str]) -> list[dict]:
    """One record per key of ``keys``, in that order (the first answer, else the last failure), written to
    ``predictions.jsonl``; keys with no record yet are left out."""
    best: dict[str, dict] = {}
    for record in read_records(out):
        known = best.get(record["key"])
        if known is None or needs_retry(known):
            best[record["key"]] = record
    merged = [best[k] for k in keys if k in best]
    tmp = out / f".{PREDICTIONS}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=False) + "\n" for r in merged)
    tmp.replace(out / PREDICTIONS)
    return merged
