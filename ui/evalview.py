"""What the Evaluation tab shows of a finished evaluation (``evaluation.load_results``), no gradio here.

The tab reads folders an evaluation left (``cli.py eval --out``), shipped with the Space under
``examples/evaluations/``; it never runs one. From ``summary.json``: accuracy against budget per method with
its 95% interval (``accuracy_figure``), the results, per-group and paired-difference tables; from
``predictions.jsonl``: one row per question (``questions``), filtered (``FILTERS``), each row opening as a
comparison on the page (its video, resolved inside the folder only, and its prompt).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from evaluation.report import EvalResults

SHIPPED = Path(__file__).resolve().parent.parent / "examples" / "evaluations"


def label(results: EvalResults) -> str:
    """How the folder is named in the tab's chooser: benchmark file, backbone, size."""
    bench = results.summary.get("benchmark", {})
    return (
        f"{results.folder.name}: {bench.get('file', '?')} on {results.summary.get('backbone', '?')} "
        f"({bench.get('questions', '?')} questions, {bench.get('videos', '?')} videos)"
    )


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _ci(row: dict | None) -> str:
    return "–" if not row or row.get("ci95") is None else f"{_pct(row['ci95'][0])}–{_pct(row['ci95'][1])}"


def _methods(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


def accuracy_figure(summary: dict) -> Figure:
    """Accuracy (%) against the budget, one line per method, each point with its 95% interval as an error
    bar; beside it, where the benchmark has needles, how often each method kept a needle frame."""
    results = summary["results"]
    needle = any(r.get("needle") for r in results)
    fig = Figure(figsize=(10 if needle else 6, 3.6))
    axes = fig.subplots(1, 2 if needle else 1, squeeze=False)[0]
    _budget_panel(axes[0], results, lambda r: (r["accuracy"], r["ci95"]), "accuracy (%)")
    if needle:
        _budget_panel(axes[1], results, lambda r: _needle_point(r), "needle frame kept (%)")
    fig.tight_layout()
    return fig


def _needle_point(row: dict):
    return (row["needle"]["kept"], row["needle"]["ci95"]) if row.get("needle") else (None, None)


def _budget_panel(ax, results: list[dict], point: Callable, ylabel: str) -> None:
    budgets = sorted({r["budget"] for r in results})
    for i, method in enumerate(_methods(results)):
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["budget"])
        points = [(r["budget"], *point(r)) for r in rows]
        points = [(b, v, ci) for b, v, ci in points if v is not None]
        if not points:
            continue
        x = [b * (1 + 0.03 * (i - 2)) for b, _, _ in points]  # methods side by side at one budget
        y = [100 * v for _, v, _ in points]
        err = [[100 * (v - ci[0]) for _, v, ci in points], [100 * (ci[1] - v) for _, v, ci in points]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=4, label=method)
    if len(budgets) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("visual-token budget")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-5, 105)
    ax.legend(fontsize="small")


def results_table(summary: dict) -> pd.DataFrame:
    paired = {(p["method"], p["budget"]): p for p in summary.get("paired", [])}
    rows = []
    for r in summary["results"]:
        p = paired.get((r["method"], r["budget"]))
        rows.append(
            {
                "method": r["method"],
                "budget": r["budget"],
                "accuracy %": _pct(r["accuracy"]),
                "95% CI": _ci(r),
                "vs uniform (pp)": f"{100 * p['difference']:+.1f} ({_ci(p)})" if p else "–",
                "n": r["n"],
                "unparsed": r["n_unparsed"],
                "failed": r["n_failed"],
                "needle kept %": f"{_pct(r['needle']['kept'])} ({_ci(r['needle'])})"
                if r.get("needle")
                else "–",
            }
        )
    return pd.DataFrame(rows)


def groups_table(summary: dict) -> pd.DataFrame:
    """Accuracy per group label (duration, category, task...), one row per label, method and budget."""
    rows = [
        {
            "group": g["group"],
            "label": g["label"],
            "method": g["method"],
            "budget": g["budget"],
            "accuracy %": _pct(g["accuracy"]),
            "95% CI": _ci(g),
            "n": g["n"],
        }
        for g in summary.get("groups", [])
    ]
    return pd.DataFrame(rows, columns=["group", "label", "method", "budget", "accuracy %", "95% CI", "n"])


def paired_table(summary: dict) -> pd.DataFrame:
    """Each method minus ``uniform`` on the same questions, in percentage points, with its interval."""
    rows = [
        {
            "method": p["method"],
            "budget": p["budget"],
            "versus": p["versus"],
            "difference (pp)": f"{100 * p['difference']:+.1f}",
            "95% CI": _ci(p),
            "n": p["n"],
        }
        for p in summary.get("paired", [])
    ]
    return pd.DataFrame(rows, columns=["method", "budget", "versus", "difference (pp)", "95% CI", "n"])


# --- the question browser ---------------------------------------------------------------------------------


def questions(predictions: list[dict]) -> list[dict]:
    """One entry per question: its id, video, question, prompt, gold letter and, per (method, budget), the
    letter predicted (None: unparsed or failed) and whether it was right."""
    by_id: dict[str, dict] = {}
    for p in predictions:
        q = by_id.setdefault(
            p["qid"],
            {k: p.get(k) for k in ("qid", "video", "question", "prompt", "gold", "options")}
            | {"answers": {}},
        )
        q["answers"][(p["method"], p["budget"])] = (p.get("pred"), bool(p.get("correct")))
    return list(by_id.values())


def methods_disagree(q: dict) -> bool:
    """At some budget, two methods gave different letters (an unparsed reply counts as its own answer)."""
    for budget in {b for _, b in q["answers"]}:
        if len({pred for (_, b), (pred, _) in q["answers"].items() if b == budget}) > 1:
            return True
    return False


def all_wrong(q: dict) -> bool:
    return not any(correct for _, correct in q["answers"].values())


FILTERS: dict[str, Callable[[dict], bool]] = {
    "all questions": lambda q: True,
    "methods disagree": methods_disagree,
    "all wrong": all_wrong,
}


def question_table(entries: list[dict]) -> pd.DataFrame:
    """One row per question: id, question, gold, then per method and budget its letter, ✓ or ✗."""
    runs = list(dict.fromkeys(run for q in entries for run in q["answers"]))
    rows = []
    for q in entries:
        row = {"qid": q["qid"], "question": str(q["question"])[:120], "gold": q["gold"]}
        for method, budget in runs:
            pred, correct = q["answers"].get((method, budget), (None, False))
            row[f"{method} @{budget}"] = f"{pred or '–'} {'✓' if correct else '✗'}"
        rows.append(row)
    return pd.DataFrame(rows, columns=["qid", "question", "gold", *(f"{m} @{b}" for m, b in runs)])


def video_of(folder: Path, entry: dict) -> Path | None:
    """The question's video, when the folder ships it: its path taken inside ``folder`` only."""
    name = entry.get("video")
    if not isinstance(name, str) or not name:
        return None
    root = folder.resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None
