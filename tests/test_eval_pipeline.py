"""What the evaluation asks the pipeline: the prompt, the selectors' text, MLVU's reply prefix, and the
evaluation's own bounds (wider than the page's, never reachable from the page or a run card)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import evaluation
from evaluation import adapter
from evaluation.settings import EVAL_BOUNDS, MAX_BUDGET, EvalSettings
from pipeline import runcard
from pipeline.bounds import PAGE_BOUNDS, SettingsError
from pipeline.settings import Settings
from pipeline.video import QuestionError, check_question
from tests.test_eval_run import Scripted, config, predictions, write_bench
from tests.videos import make_clip

LIFTED = {"budget": 32768, "max_frames": 2048, "fps": 8.0}


@pytest.fixture
def scripted(monkeypatch):
    fake = Scripted()
    monkeypatch.setattr(adapter, "answer_video", fake)
    return fake


def test_the_evaluation_lifts_the_page_limits_within_bounds_of_its_own():
    lifted = EvalSettings(**LIFTED)
    assert (lifted.budget, lifted.max_frames, lifted.fps) == (32768, 2048, 8.0)
    for name, value in LIFTED.items():
        with pytest.raises(SettingsError):
            Settings(**{name: value})  # the page's settings refuse each
    for name, too_much in {"budget": MAX_BUDGET + 16, "max_frames": 8192, "fps": 60.0}.items():
        with pytest.raises(SettingsError):
            EvalSettings(**{name: too_much})  # still bounded
    long = "x" * 3000
    assert check_question(long, EVAL_BOUNDS.max_question_chars) == long
    with pytest.raises(QuestionError):
        check_question(long, PAGE_BOUNDS.max_question_chars)
    assert dataclasses.replace(lifted, budget=65536).BOUNDS is EVAL_BOUNDS  # replace keeps the class


def test_a_run_card_cannot_carry_the_evaluation_bounds():
    data = EvalSettings(**LIFTED).to_dict()
    assert "BOUNDS" not in data and json.loads(json.dumps(data)) == data
    with pytest.raises(SettingsError):
        runcard.settings_of({"settings": data})  # a card's settings are read back under the page's bounds
    with pytest.raises(SettingsError):
        runcard.settings_of({"settings": data | {"BOUNDS": EVAL_BOUNDS, "bounds": EVAL_BOUNDS}})
    assert type(runcard.settings_of({"settings": Settings().to_dict()})) is Settings


def test_evaluation_settings_and_prompts_beyond_the_page_reach_the_pipeline(tmp_path, scripted):
    long = "Which " + "very " * 700 + "long question?"  # 3,520 characters: beyond the page's 2,000
    extra = [{"qid": "long", "video": "a.mp4", "question": long, "options": ["x", "y"], "answer": "B"},
             {"qid": "huge", "video": "a.mp4", "question": "y" * 17000, "options": ["x", "y"], "answer": "B"}]  # fmt: skip
    data = write_bench(tmp_path, {"a.mp4": 2}, per_video=1, extra=extra)
    evaluation.run(config(data, tmp_path / "out", budgets=(16, 32768), max_frames=2048, fps=8.0))
    rows = {(r["qid"], r["budget"], r["method"]): r for r in predictions(tmp_path / "out")}
    assert len(rows) == 3 * 2 * 2 and scripted.requests == ["a.mp4"]
    assert rows[("long", 32768, "uniform")]["error"] is None and long in scripted.asks[1].prompt
    huge = [r for k, r in rows.items() if k[0] == "huge"]  # over the evaluation's own 16,000: this one only
    assert all(r["stage"] == "question" and "16000 characters" in r["error"] for r in huge)
    assert [a.prompt for a in scripted.asks] == [r["prompt"] for r in predictions(tmp_path / "out")[:8:4]]


def test_mlvu_official_primes_the_reply_and_the_selectors_read_what_the_run_says(tmp_path, scripted):
    folder = tmp_path / "MLVU" / "json"
    folder.mkdir(parents=True)
    (tmp_path / "MLVU" / "video" / "1_plotQA").mkdir(parents=True)
    make_clip(tmp_path / "MLVU" / "video" / "1_plotQA" / "p.mp4", 1, fps=4, size=(32, 32))
    row = {"video": "p.mp4", "question": "What is drawn?", "candidates": ["x", "y"], "answer": "y",
           "question_type": "plotQA"}  # fmt: skip
    (folder / "1_plotQA.json").write_text(json.dumps([row]))
    runs = {}
    for prompt, selector in (("official", "prompt"), ("official", "question"), ("default", "prompt")):
        out = tmp_path / f"{prompt}-{selector}"
        scripted.asks.clear()
        evaluation.run(
            config(tmp_path / "MLVU", out, layout="mlvu", budgets=(16,), prompt=prompt, selector=selector)
        )
        (ask,) = scripted.asks
        runs[(prompt, selector)] = (ask, predictions(out)[0])
    ask, record = runs[("official", "prompt")]
    assert ask.reply_prefix == "Best option: (" == record["reply_prefix"] and ask.selection is None
    assert ask.prompt.endswith("Only give the best option.") and ask.selection_text == ask.prompt
    ask, record = runs[("official", "question")]
    assert ask.selection == "What is drawn?" and ask.prompt == runs[("official", "prompt")][0].prompt
    assert record["key"] != runs[("official", "prompt")][1]["key"]  # the selector text decides answers
    ask, record = runs[("default", "prompt")]
    assert ask.reply_prefix == "" == record["reply_prefix"]


def test_the_cli_takes_the_selector_text(tmp_path, scripted, capsys):
    import cli

    data = write_bench(tmp_path, {"a.mp4": 2}, per_video=1)
    argv = ["eval", "--data", str(data), "--format", "jsonl", "--out", str(tmp_path / "out"), "--budgets", "16",
            "--methods", "uniform", "--selector", "question"]  # fmt: skip
    assert cli.main(argv) == 0
    assert [a.selection for a in scripted.asks] == ["Question 0 about a.mp4?"]
    with pytest.raises(SystemExit) as refused:
        cli.main([*argv[:-1], "everything"])
    assert refused.value.code == 2
