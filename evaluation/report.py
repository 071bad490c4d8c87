"""What an evaluation leaves in its folder besides the predictions, and the reader the app's tab uses.

- ``summary.json``: flat lists of rows (one row per method x budget, per group label, per aggregate, per
  paired difference), so a table or a plot is one list comprehension away:
  ``results``: method, budget, accuracy, ci95 [lo, hi], n, n_videos, n_unparsed, n_failed, tokens_llm_mean,
  compress_s_mean, answer_s_mean, needle (kept, ci95, sampled, n) or None;
  ``groups``: group, label, method, budget, accuracy, ci95, n, n_videos;
  ``aggregates``: name (MLVU's M-Avg), over, method, budget, value, ci95, n, n_videos;
  ``paired``: method, budget, versus ("uniform"), difference, ci95, n, n_videos.
- ``summary.md``: the same as tables a person reads.
- ``eval_card.json``: what makes the run reproducible: commit, backbone (hub id, revision and the resolved
  snapshot), the annotation file's sha256, the settings, the world size and library versions.

``load_results(folder)`` reads the three back (``EvalResults``); ``find_results(root)`` lists the finished
folders under a root (the app's Evaluation tab shows a folder of them).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from evaluation import stats
from evaluation.benchmarks import AGGREGATES
from evaluation.prompts import MAX_NEW_TOKENS, PARSER_VERSION

SUMMARY_SCHEMA = 1
BASELINE = "uniform"


class ResultsError(ValueError):
    """A folder that holds no finished evaluation (the message says what is missing)."""


# --- summarising ----------------------------------------------------------------------------------------


def _by_run(records: Iterable[dict]) -> dict[tuple[str, int], list[dict]]:
    runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        runs[(r["method"], r["budget"])].append(r)
    return runs


def _accuracy(records: list[dict], labels: list | None = None) -> stats.Estimate | None:
    return stats.cluster_bootstrap(
        [r["video"] for r in records], [float(r["correct"]) for r in records], labels
    )


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def _result_row(method: str, budget: int, records: list[dict]) -> dict:
    row = {"method": method, "budget": budget, **_accuracy(records).to_dict("accuracy")}
    row.update(
        n_unparsed=sum(r["parse"] == "unparsed" for r in records),
        n_failed=sum(r["error"] is not None for r in records),
        tokens_llm_mean=_mean([r["tokens_llm"] for r in records]),
        compress_s_mean=_mean([r["timings"].get("compress") for r in records]),
        answer_s_mean=_mean([r["timings"].get("answer") for r in records]),
        needle=_needle_row(records),
    )
    return row


def _needle_row(records: list[dict]) -> dict | None:
    """How often the method kept a frame inside the needle's span (its answers aside), over the needle
    questions it did not fail; ``sampled``: how often a sampled frame fell inside at all."""
    needles = [r for r in records if r.get("needle") and r["needle"]["kept"] is not None]
    if not needles:
        return None
    kept = stats.cluster_bootstrap(
        [r["video"] for r in needles], [float(r["needle"]["kept"]) for r in needles]
    )
    row = kept.to_dict("kept")
    row["sampled"] = round(sum(bool(r["needle"]["sampled"]) for r in needles) / len(needles), 4)
    return row


def _labels(record: dict, group: str) -> list[str]:
    value = record["groups"].get(group)
    labels = value if isinstance(value, list) else [value]
    return [str(v) for v in labels if v not in (None, "")]


def _group_rows(runs: dict[tuple[str, int], list[dict]]) -> list[dict]:
    rows = []
    for (method, budget), records in runs.items():
        names = dict.fromkeys(g for r in records for g in r["groups"])
        for group in names:
            per_label: dict[str, list[dict]] = defaultdict(list)
            for r in records:
                for label in _labels(r, group):
                    per_label[label].append(r)
            for label in sorted(per_label):
                estimate = _accuracy(per_label[label]).to_dict("accuracy")
                rows.append({"group": group, "label": label, "method": method, "budget": budget, **estimate})
    return rows


def _aggregate_rows(runs: dict[tuple[str, int], list[dict]], layout: str) -> list[dict]:
    if layout not in AGGREGATES:
        return []
    name, group = AGGREGATES[layout]
    rows = []
    for (method, budget), records in runs.items():
        labelled = [r for r in records if _labels(r, group)]
        estimate = _accuracy(labelled, [_labels(r, group)[0] for r in labelled])
        if estimate is not None:
            rows.append(
                {"name": name, "over": group, "method": method, "budget": budget, **estimate.to_dict()}
            )
    return rows


def _paired_rows(runs: dict[tuple[str, int], list[dict]]) -> list[dict]:
    """Each method minus ``uniform`` on the same questions at the same budget."""
    rows = []
    for (method, budget), records in runs.items():
        baseline = {r["qid"]: r for r in runs.get((BASELINE, budget), [])}
        pairs = [(r, baseline[r["qid"]]) for r in records if r["qid"] in baseline]
        if method == BASELINE or not pairs:
            continue
        diff = stats.cluster_bootstrap(
            [r["video"] for r, _ in pairs], [float(r["correct"]) - float(u["correct"]) for r, u in pairs]
        )
        rows.append({"method": method, "budget": budget, "versus": BASELINE, **diff.to_dict("difference")})
    return rows


def summarize(records: list[dict], *, layout: str) -> dict:
    """summary.json's content for merged ``records`` (module docstring)."""
    runs = _by_run(records)
    return {
        "schema_version": SUMMARY_SCHEMA,
        "bootstrap": {"resamples": stats.RESAMPLES, "seed": stats.SEED, "cluster": "video", "interval": 0.95},
        "results": [_result_row(m, b, rs) for (m, b), rs in runs.items()],
        "groups": _group_rows(runs),
        "aggregates": _aggregate_rows(runs, layout),
        "paired": _paired_rows(runs),
    }


# --- writing --------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _ci(row: dict) -> str:
    lo, hi = row["ci95"]
    return f"{_pct(lo)}–{_pct(hi)}"


def markdown(summary: dict) -> str:
    """summary.md: the results table, then paired differences, aggregates and groups."""
    bench = summary["benchmark"]
    paired = {(p["method"], p["budget"]): p for p in summary["paired"]}
    lines = [
        f"# {bench['file']} ({bench['layout']}) on {summary['backbone']}",
        "",
        f"{bench['questions']} questions on {bench['videos']} videos. Accuracy in %, 95% intervals from a "
        f"cluster bootstrap over videos ({summary['bootstrap']['resamples']} resamples, seed "
        f"{summary['bootstrap']['seed']}); failed and unparsed answers count as wrong.",
        "",
        "| method | budget | accuracy | 95% CI | vs uniform (95% CI) | n | unparsed | failed | tokens into LLM | needle kept (95% CI) |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in summary["results"]:
        p = paired.get((r["method"], r["budget"]))
        vs = f"{100 * p['difference']:+.1f} ({_ci(p)})" if p else "–"
        needle = f"{_pct(r['needle']['kept'])} ({_ci(r['needle'])})" if r["needle"] else "–"
        tokens = "–" if r["tokens_llm_mean"] is None else f"{r['tokens_llm_mean']:.0f}"
        lines.append(
            f"| {r['method']} | {r['budget']} | {_pct(r['accuracy'])} | {_ci(r)} | {vs} | {r['n']} | "
            f"{r['n_unparsed']} | {r['n_failed']} | {tokens} | {needle} |"
        )
    if any(r["needle"] for r in summary["results"]):
        lines += ["", _needle_note(summary)]
    if aggregates := summary["aggregates"]:
        name, over = aggregates[0]["name"], aggregates[0]["over"]
        lines += [
            "",
            f"## {name} (mean over {over})",
            "",
            "| method | budget | value | 95% CI |",
            "|---|---:|---:|---|",
        ]
        lines += [f"| {a['method']} | {a['budget']} | {_pct(a['value'])} | {_ci(a)} |" for a in aggregates]
    lines += _group_tables(summary["groups"])
    return "\n".join(lines) + "\n"


def _needle_note(summary: dict) -> str:
    sampled = [r["needle"]["sampled"] for r in summary["results"] if r["needle"]]
    return (
        "Needle kept: the share of needle questions where the method kept at least one frame inside the "
        f"needle's span, whatever it answered; a sampled frame fell inside the span in {_pct(min(sampled))}% "
        "of them (no method can keep more)."
    )


def _group_tables(groups: list[dict]) -> list[str]:
    lines = []
    columns = list(dict.fromkeys((g["method"], g["budget"]) for g in groups))
    for name in dict.fromkeys(g["group"] for g in groups):
        rows = [g for g in groups if g["group"] == name]
        head = " | ".join(f"{m} @{b}" for m, b in columns)
        lines += ["", f"## By {name}", "", f"| {name} | n | {head} |", "|---|---:|" + "---:|" * len(columns)]
        for label in dict.fromkeys(g["label"] for g in rows):
            cells = {(g["method"], g["budget"]): g for g in rows if g["label"] == label}
            n = max(c["n"] for c in cells.values())
            values = " | ".join(_pct(cells[c]["accuracy"]) if c in cells else "–" for c in columns)
            lines.append(f"| {label} | {n} | {values} |")
    return lines


def card(plan, *, world: int) -> dict:
    """The eval card: what decides the predictions and where they were made."""
    import model_zoo
    from pipeline import __version__
    from pipeline.runcard import git_commit

    spec = model_zoo.get_backbone_spec(plan.settings.backbone)
    config = plan.config
    settings = plan.settings.to_dict()
    settings.update(
        methods=list(plan.methods),
        budgets=list(plan.budgets),
        method_options={m: plan.settings.options_for(m) for m in plan.methods},
    )
    settings.pop("budget", None)
    return {
        "schema_version": SUMMARY_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "app": {"version": __version__, "git_commit": git_commit()},
        "command": sys.argv,
        "backbone": {
            "name": spec.name,
            "hub_id": spec.hub_id,
            "revision": spec.revision,
            "resolved_revision": _resolved(spec),
        },
        "benchmark": {
            "layout": config.layout,
            "file": str(config.data),
            "sha256": plan.bench_hash,
            "video_root": str(plan.video_root),
            "questions": len(plan.questions),
            "limit": config.limit,
        },
        "settings": settings,
        "prompt": {
            "style": config.prompt,
            "max_new_tokens": MAX_NEW_TOKENS,
            "decoding": "greedy",
            "parser_version": PARSER_VERSION,
        },
        "world_size": world,
        "libraries": _versions(),
    }


def _resolved(spec) -> str | None:
    """The commit of the backbone's local snapshot (None for the offline tiny backbone or when unknown)."""
    if spec.hub_id is None:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec.hub_id, revision=spec.revision, local_files_only=True)).name
    except Exception:  # not downloaded here, or no hub library: the card says unknown
        return None


def _versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "av", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write(out: Path, plan, records: list[dict], *, world: int) -> dict:
    """summary.json, summary.md and eval_card.json in ``out``; returns the summary."""
    summary = {
        "benchmark": {
            "layout": plan.config.layout,
            "file": Path(plan.config.data).name,
            "sha256": plan.bench_hash,
            "questions": len({r["qid"] for r in records}),
            "videos": len({r["video"] for r in records}),
        },
        "backbone": plan.settings.backbone,
        **summarize(records, layout=plan.config.layout),
    }
    _write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(markdown(summary), encoding="utf-8")
    _write_json(out / "eval_card.json", card(plan, world=world))
    return summary


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- reading back ---------------------------------------------------------------------------------------


@dataclass
class EvalResults:
    """A finished evaluation: ``summary`` (summary.json), ``card`` (eval_card.json), ``predictions`` (one
    dict per line of predictions.jsonl) and the ``folder`` they came from."""

    folder: Path
    summary: dict
    card: dict
    predictions: list[dict]


def load_results(folder: str | Path) -> EvalResults:
    """Read a finished evaluation's folder back; raises ResultsError when it is not one."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        card = json.loads((folder / "eval_card.json").read_text(encoding="utf-8"))
        lines = (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        predictions = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(
            f"{str(folder)!r} holds no finished evaluation ({type(err).__name__}); run cli.py eval there."
        ) from None
    if summary.get("schema_version") != SUMMARY_SCHEMA:
        raise ResultsError(
            f"{str(folder)!r} was written by another version (summary schema {summary.get('schema_version')!r})."
        )
    return EvalResults(folder, summary, card, predictions)


def find_results(root: str | Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold a ``summary.json``, in path order."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("summary.json") if (p.parent / "eval_card.json").is_file())
