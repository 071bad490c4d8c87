"""Accuracy per method and budget over a benchmark's multiple-choice questions (``cli.py eval``).

    from evaluation import EvalConfig, run, load_results

``run`` answers every question x method x budget through the comparison pipeline (``evaluation.adapter`` is
the only module that calls it), appends one record per answer to per-process files, merges them into
``predictions.jsonl`` and writes ``summary.json``, ``summary.md`` and ``eval_card.json``; ``load_results``
reads such a folder back. ``evaluation.needle`` makes a benchmark from any videos by inserting a needle.
See README, "Evaluation", and the modules' docstrings.

The names below are imported on first use, so reading a benchmark or a results folder loads no model code.
"""

import importlib

_EXPORTS = {
    "BenchmarkError": "evaluation.benchmarks",
    "Question": "evaluation.benchmarks",
    "READERS": "evaluation.benchmarks",
    "read": "evaluation.benchmarks",
    "EvalResults": "evaluation.report",
    "ResultsError": "evaluation.report",
    "find_results": "evaluation.report",
    "load_results": "evaluation.report",
    "EvalConfig": "evaluation.runner",
    "EvalError": "evaluation.runner",
    "run": "evaluation.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
