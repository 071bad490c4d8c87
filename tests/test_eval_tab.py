"""The Evaluation tab: shipped evaluations read and shown (ui.evalview, ui.evaltab), never run."""

import shutil

import pytest

from evaluation.report import load_results
from ui import evalview
from ui.evaltab import EvalTab, shipped


def _record(qid, method, budget, pred, gold="A", video="videos/v.mp4"):
    return {
        "qid": qid,
        "video": video,
        "question": qid,
        "prompt": f"P {qid}",
        "gold": gold,
        "method": method,
        "budget": budget,
        "pred": pred,
        "correct": pred == gold,
    }


def test_the_browser_filters_disagreement_and_all_wrong():
    records = [
        _record("same-right", "uniform", 32, "A"),
        _record("same-right", "xcomp", 32, "A"),
        _record("split", "uniform", 32, "A"),
        _record("split", "xcomp", 32, "B"),
        _record("all-wrong", "uniform", 32, "C"),
        _record("all-wrong", "xcomp", 32, None),
        _record("budgets", "uniform", 32, "B"),
        _record("budgets", "uniform", 64, "C"),
    ]
    entries = evalview.questions(records)
    pick = {name: [q["qid"] for q in entries if keep(q)] for name, keep in evalview.FILTERS.items()}
    assert pick["methods disagree"] == ["split", "all-wrong"]  # one budget, two letters (None is one)
    assert pick["all wrong"] == ["all-wrong", "budgets"]
    table = evalview.question_table(entries)
    assert list(table.columns) == ["qid", "question", "gold", "uniform @32", "xcomp @32", "uniform @64"]
    assert table.loc[1, "xcomp @32"] == "B ✗" and table.loc[2, "xcomp @32"] == "– ✗"


def test_the_shipped_needle_evaluation_is_read_whole():
    found = shipped()
    assert found, "examples/evaluations/ ships the needle example's outputs"
    results = next(iter(found.values()))
    summary = results.summary
    table = evalview.results_table(summary)
    assert len(table) == len(summary["results"]) and set(table["method"]) >= {"uniform", "xcomp"}
    assert len(evalview.paired_table(summary)) == len(summary["paired"])
    assert len(evalview.groups_table(summary)) == len(summary["groups"])
    figure = evalview.accuracy_figure(summary)
    ax = figure.axes[0]
    assert ax.get_legend_handles_labels()[1] == list(dict.fromkeys(table["method"]))  # a line per method
    assert all(c.has_yerr for c in ax.containers) and len(ax.containers) == 5  # interval bars on each
    assert len(figure.axes) == 2  # the needle benchmark: how often each method kept a needle frame
    for q in evalview.questions(results.predictions):
        assert evalview.video_of(results.folder, q) is not None, q["qid"]  # every video is shipped


def test_a_question_names_its_video_inside_the_folder_only(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v.mp4").write_bytes(b"x")
    (tmp_path.parent / "outside.mp4").write_bytes(b"x")
    assert evalview.video_of(tmp_path, {"video": "videos/v.mp4"}) == (tmp_path / "videos" / "v.mp4").resolve()
    for name in ("../outside.mp4", str(tmp_path.parent / "outside.mp4"), "videos/none.mp4", None, 3):
        assert evalview.video_of(tmp_path, {"video": name}) is None, name


def test_a_broken_folder_is_left_out_and_the_tab_runs_nothing(tmp_path, monkeypatch):
    import evaluation.runner

    monkeypatch.setattr(evaluation.runner, "run", lambda *a, **k: pytest.fail("an evaluation ran"))
    good = next(iter(shipped().values())).folder
    shutil.copytree(good, tmp_path / "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{")
    (tmp_path / "broken" / "eval_card.json").write_text("{}")
    tab = EvalTab(tmp_path)
    assert [r.folder.name for r in tab.found.values()] == ["good"]
    name = next(iter(tab.found))
    every = {p["qid"] for p in load_results(tmp_path / "good").predictions}
    assert len(tab.browse(name, "all questions")) == len(every)
