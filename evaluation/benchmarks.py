"""Benchmark files in, one list of ``Question`` out: our jsonl layout and four native layouts.

Every layout becomes the same ``Question``: the question text, its options as bare texts (re-lettered A, B,
... in file order whatever letters the file used), the gold letter, the video's path under the video root,
and the groups the benchmark reports by. The layouts follow the benchmarks' own releases:

- ``jsonl`` (ours): one object per line with ``video``, ``question``, ``options`` (bare texts), ``answer``
  (a letter), optional ``qid``, ``groups`` (dict), ``duration`` (seconds) and ``needle`` (``start``, ``end``).
- ``videomme``: Video-MME (arXiv 2405.21075; MME-Benchmarks/Video-MME, HF ``lmms-lab/Video-MME``
  ``videomme/test-00000-of-00001.parquet``): rows with ``videoID``, ``question_id``, ``question``,
  ``options`` (``"A. ..."``), ``answer``, ``duration``, ``domain``, ``sub_category``, ``task_type``.
- ``longvideobench``: LongVideoBench (arXiv 2407.15754; ``lvb_val.json``): ``id``, ``video_path``,
  ``question``, ``candidates``, ``correct_choice`` (index), ``duration_group``, ``question_category``,
  ``topic_category``.
- ``mlvu``: MLVU dev (arXiv 2406.04264; JUNJIE99/MLVU ``json/<n>_<task>.json``, videos in
  ``video/<n>_<task>/``): ``video``, ``question``, ``candidates``, ``answer`` (the option's text),
  ``question_type``. Its generation tasks (no candidates: sub-scene captioning, summary) are skipped.
- ``lvbench``: LVBench (arXiv 2406.08035; THUDM/LVBench ``video_info.meta.jsonl``): one object per video,
  ``key``, ``type``, ``video_info``, ``qa[]`` with ``uid``, ``question`` (options inline as ``(A) ...``
  lines), ``answer``, ``question_type`` (a list).

A file we cannot read raises ``BenchmarkError`` naming the file, the line or entry, and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

LETTERS = "ABCDEFGHIJ"


class BenchmarkError(ValueError):
    """An annotation file that cannot be read as the layout asked for (the message says where and why)."""


@dataclass(frozen=True)
class Question:
    """One multiple-choice question about one video.

    ``video`` is the path as the file writes it (relative to the video root); ``folders`` are subfolders of
    the root to look in too (MLVU keeps each task's videos in its own folder). ``groups`` maps a group name
    to a label or a list of labels (LVBench's question types). ``duration`` (seconds) is the file's own,
    when it gives one; ``needle`` is the (start, end) span in seconds of an inserted needle (ours).
    """

    qid: str
    video: str
    question: str
    options: tuple[str, ...]
    answer: str
    groups: Mapping[str, str | list[str]] = field(default_factory=dict)
    duration: float | None = None
    needle: tuple[float, float] | None = None
    folders: tuple[str, ...] = ("",)

    def __post_init__(self) -> None:
        if not 2 <= len(self.options) <= len(LETTERS):
            raise BenchmarkError(
                f"question {self.qid!r} has {len(self.options)} options; 2 to {len(LETTERS)} are supported."
            )
        if self.answer not in LETTERS[: len(self.options)]:
            raise BenchmarkError(
                f"question {self.qid!r} has answer {self.answer!r}, not one of its "
                f"{len(self.options)} option letters."
            )

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    def video_path(self, root: Path) -> Path:
        """The first existing file among the root and its ``folders``, else the plain path (missing)."""
        for folder in self.folders:
            path = root / folder / self.video
            if path.is_file():
                return path
        return root / self.video


# --- reading helpers ------------------------------------------------------------------------------------


def _json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, object) per non-empty line of a JSON-lines file."""
    for n, line in enumerate(_text(path).splitlines(), start=1):
        if line.strip():
            yield f"{path.name} line {n}", _loads(line, f"{path.name} line {n}")


def _json_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, object) per row of a .json list or a .jsonl file."""
    if path.suffix == ".jsonl":
        yield from _json_lines(path)
        return
    rows = _loads(_text(path), path.name)
    if not isinstance(rows, list):
        raise BenchmarkError(f"{path.name} holds a JSON {type(rows).__name__}, not a list of questions.")
    for n, row in enumerate(rows):
        yield f"{path.name} entry {n}", row


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BenchmarkError(
            f"Cannot read {str(path)!r} ({type(err).__name__}); check the --data path."
        ) from None


def _loads(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BenchmarkError(f"{where} is not valid JSON ({err.msg}); fix or remove it.") from None


def _need(row, where: str, *names: str) -> list:
    if not isinstance(row, dict):
        raise BenchmarkError(f"{where} is a JSON {type(row).__name__}, not an object.")
    missing = [n for n in names if n not in row]
    if missing:
        raise BenchmarkError(
            f"{where} has no {', '.join(map(repr, missing))} (see the layouts in README, Evaluation)."
        )
    return [row[n] for n in names]


def _texts(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str | int | float) for v in value):
        raise BenchmarkError(f"{where}: the options must be a list of texts.")
    return tuple(str(v).strip() for v in value)


def _question(where: str, **fields) -> Question:
    """A Question, with a malformed one reported at ``where``."""
    try:
        return Question(**fields)
    except BenchmarkError as err:
        raise BenchmarkError(f"{where}: {err}") from None


def _seconds(value) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


# --- the layouts ----------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[Question]:
    """Our layout (module docstring); ``qid`` defaults to the line number."""
    questions = []
    for n, (where, row) in enumerate(_json_lines(path), start=1):
        video, text, options, answer = _need(row, where, "video", "question", "options", "answer")
        groups = row.get("groups") or {}
        if not isinstance(groups, dict):
            raise BenchmarkError(f"{where}: 'groups' must be an object of name: label.")
        needle = row.get("needle")
        span = None if needle is None else _span(needle, where)
        questions.append(
            _question(
                where,
                qid=str(row.get("qid", n)),
                video=str(video),
                question=str(text).strip(),
                options=_texts(options, where),
                answer=str(answer).strip().upper(),
                groups={str(k): _label(v) for k, v in groups.items()},
                duration=_seconds(row.get("duration")),
                needle=span,
            )
        )
    return questions


def _span(needle, where: str) -> tuple[float, float]:
    start, end = _need(needle, f"{where} 'needle'", "start", "end")
    try:
        start, end = float(start), float(end)
    except (TypeError, ValueError):
        raise BenchmarkError(f"{where}: the needle's start and end must be seconds.") from None
    if not 0 <= start < end:
        raise BenchmarkError(f"{where}: the needle must start at 0 s or later and end after it starts.")
    return start, end


def _label(value) -> str | list[str]:
    return [str(v) for v in value] if isinstance(value, list) else str(value)


_LETTER_PREFIX = re.compile(r"^\s*\(?([A-J])[.):]\s*")


def _bare(option: str, letter: str) -> str:
    """``"B. Candles"`` -> ``"Candles"`` when the prefix is the expected letter (else unchanged)."""
    match = _LETTER_PREFIX.match(option)
    return option[match.end() :].strip() if match and match.group(1) == letter else option.strip()


def read_videomme(path: Path) -> list[Question]:
    """Video-MME rows from its parquet file (needs pyarrow) or the same rows as .json / .jsonl."""
    rows = _parquet_rows(path) if path.suffix == ".parquet" else _json_rows(path)
    questions = []
    for where, row in rows:
        video, qid, text, options, answer = _need(
            row, where, "videoID", "question_id", "question", "options", "answer"
        )
        options = _texts(list(options), where)
        groups = {k: str(row[k]) for k in ("duration", "domain", "sub_category", "task_type") if k in row}
        questions.append(
            _question(
                where,
                qid=str(qid),
                video=f"{video}.mp4",
                question=str(text).strip(),
                options=tuple(_bare(o, LETTERS[i]) for i, o in enumerate(options)),
                answer=str(answer).strip().upper(),
                groups=groups,
            )
        )
    return questions


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BenchmarkError(
            "Reading .parquet needs pyarrow (pip install pyarrow), or give the same rows as .json or .jsonl."
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise BenchmarkError(f"Cannot read {path.name} as parquet ({type(err).__name__}).") from None
    for n, row in enumerate(table.to_pylist()):
        yield f"{path.name} row {n}", row


def read_longvideobench(path: Path) -> list[Question]:
    """LongVideoBench's ``lvb_val.json`` (the answer is ``correct_choice``, an index into ``candidates``)."""
    questions = []
    for where, row in _json_rows(path):
        qid, video, text, candidates, choice = _need(
            row, where, "id", "video_path", "question", "candidates", "correct_choice"
        )
        options = _texts(candidates, where)
        if not isinstance(choice, int) or not 0 <= choice < len(options):
            raise BenchmarkError(f"{where}: correct_choice {choice!r} is not an index of its candidates.")
        groups = {
            k: str(row[k]) for k in ("duration_group", "question_category", "topic_category") if k in row
        }
        questions.append(
            _question(
                where,
                qid=str(qid),
                video=str(video),
                question=str(text).strip(),
                options=options,
                answer=LETTERS[choice],
                groups=groups,
                duration=_seconds(row.get("duration")),
            )
        )
    return questions


def read_mlvu(path: Path) -> list[Question]:
    """MLVU's multiple-choice tasks: a ``json/`` folder of ``<n>_<task>.json`` (or the folder above it, or
    one such file); ids are ``<file stem>/<entry>``; the answer is the option's text."""
    files = _mlvu_files(path)
    questions = []
    for file in files:
        for n, (where, row) in enumerate(_json_rows(file)):
            if isinstance(row, dict) and "candidates" not in row:
                continue  # a generation task (sub-scene captioning, summary): not multiple choice
            video, text, candidates, answer = _need(row, where, "video", "question", "candidates", "answer")
            options = _texts(candidates, where)
            if str(answer).strip() not in options:
                raise BenchmarkError(f"{where}: the answer {answer!r} is not one of its candidates.")
            questions.append(
                _question(
                    where,
                    qid=f"{file.stem}/{n}",
                    video=str(video),
                    question=str(text).strip(),
                    options=options,
                    answer=LETTERS[options.index(str(answer).strip())],
                    groups={"question_type": str(row.get("question_type", file.stem))},
                    duration=_seconds(row.get("duration")),
                    folders=("", file.stem, f"video/{file.stem}"),
                )
            )
    return questions


def _mlvu_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "json" if (path / "json").is_dir() else path
    files = sorted(folder.glob("*.json"), key=lambda p: (_leading_number(p.stem), p.name))
    if not files:
        raise BenchmarkError(f"{str(path)!r} holds no MLVU .json files (expected json/<n>_<task>.json).")
    return files


def _leading_number(stem: str) -> int:
    match = re.match(r"\d+", stem)
    return int(match.group()) if match else 1 << 30


_INLINE_OPTION = re.compile(r"^\s*\(([A-J])\)\s*(.*)$")


def read_lvbench(path: Path) -> list[Question]:
    """LVBench's ``video_info.meta.jsonl``: one object per video with its ``qa`` list; the options are the
    ``(A) ...`` lines inside each question."""
    questions = []
    for where, row in _json_lines(path):
        key, qa = _need(row, where, "key", "qa")
        info = row.get("video_info") if isinstance(row.get("video_info"), dict) else {}
        duration = _seconds(info.get("duration")) or _minutes(info.get("duration_minutes"))
        for n, item in enumerate(qa if isinstance(qa, list) else []):
            here = f"{where} qa {n}"
            uid, text, answer = _need(item, here, "uid", "question", "answer")
            stem, options = _split_inline(str(text), here)
            groups = {
                "question_type": _label(item.get("question_type", [])),
                "video_type": str(row.get("type", "")),
            }
            questions.append(
                _question(
                    here,
                    qid=str(uid),
                    video=f"{key}.mp4",
                    question=stem,
                    options=options,
                    answer=str(answer).strip().upper(),
                    groups=groups,
                    duration=duration,
                )
            )
    return questions


def _minutes(value) -> float | None:
    minutes = _seconds(value)
    return None if minutes is None else minutes * 60


def _split_inline(text: str, where: str) -> tuple[str, tuple[str, ...]]:
    """``"What...?\\n(A) x\\n(B) y"`` -> ("What...?", ("x", "y")); options must run A, B, ... in order."""
    stem, options = [], []
    for line in text.splitlines():
        match = _INLINE_OPTION.match(line)
        if match and match.group(1) == LETTERS[len(options)]:
            options.append(match.group(2).strip())
        elif options:
            options[-1] = f"{options[-1]} {line.strip()}".strip()  # an option's text on two lines
        else:
            stem.append(line)
    if not options:
        raise BenchmarkError(f"{where}: no '(A) ...' option lines in the question.")
    return "\n".join(stem).strip(), tuple(options)


READERS: dict[str, Callable[[Path], list[Question]]] = {
    "jsonl": read_jsonl,
    "videomme": read_videomme,
    "longvideobench": read_longvideobench,
    "mlvu": read_mlvu,
    "lvbench": read_lvbench,
}

#: A benchmark's official aggregate other than plain accuracy: (name, the group it averages over).
AGGREGATES: dict[str, tuple[str, str]] = {"mlvu": ("M-Avg", "question_type")}


def read(path: str | Path, layout: str) -> list[Question]:
    """Every question of the benchmark at ``path`` in file order; ids must be unique."""
    if layout not in READERS:
        raise BenchmarkError(f"Unknown layout {layout!r}; choose from {', '.join(READERS)}.")
    path = Path(path)
    if not path.exists():
        raise BenchmarkError(f"The benchmark file {str(path)!r} does not exist; check --data.")
    if path.is_dir() and layout != "mlvu":
        raise BenchmarkError(f"{str(path)!r} is a folder; give the {layout} annotation file itself.")
    questions = READERS[layout](path)
    if not questions:
        raise BenchmarkError(f"{str(path)!r} holds no multiple-choice questions in the {layout} layout.")
    seen: set[str] = set()
    for q in questions:
        if q.qid in seen:
            raise BenchmarkError(f"Question id {q.qid!r} appears twice in {path.name}; ids must be unique.")
        seen.add(q.qid)
    return questions


def file_hash(path: str | Path) -> str:
    """sha256 of the annotation file, or of a folder's .json files (names and bytes, in name order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.json") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
