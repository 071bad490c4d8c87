"""The column registry and its one protocol: every column is an entry, the pipeline and the page follow it.

A new column is one runner plus one ``Column`` line: the fake runner below is registered the way a new
official model would be, and it runs end to end, in order, beside the real columns, without any other change.
"""

import dataclasses

import pytest

from pipeline import columns
from pipeline.columns import COLUMNS, DEFAULT_COLUMNS, Column, ColumnInfo
from pipeline.compare import compare, estimate_gpu_seconds
from pipeline.events import AnswerDelta, Finished, MethodDone, MethodReport
from pipeline.request import Job, Request
from pipeline.settings import Settings, SettingsError
from tests.videos import make_clip

SETTINGS = Settings(budget=48, max_frames=8, fps=2.0, max_new_tokens=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("columns") / "clip.mp4", seconds=4, fps=8, size=(128, 96))


@pytest.mark.parametrize("name", list(COLUMNS))
def test_every_column_has_a_runner_its_variant_and_words_for_the_page(name):
    column = COLUMNS[name]
    runner = column.runner
    assert callable(runner.run) and callable(runner.gpu_seconds)
    variant = column.variant("tiny-random")
    assert variant.name in (name, f"tiny-random.{name}")
    assert column.info.label and column.info.about
    assert bool(column.info.licence) == bool(column.own_variant)  # author weights always show a licence
    assert SETTINGS.options_for(name) is not None


def test_the_defaults_are_the_training_free_columns_and_every_name_is_validated():
    assert DEFAULT_COLUMNS == ("espresso", "xcomp", "tempo", "uniform", "pool")
    assert all(not COLUMNS[n].info.selected_by_default for n in COLUMNS if n not in DEFAULT_COLUMNS)
    with pytest.raises(SettingsError, match="Unknown method nope"):
        Settings(methods=("nope",))


def test_one_definition_of_each_default_per_backbone():
    import model_zoo

    for backbone in model_zoo.list_backbones():
        spec, settings = model_zoo.get_backbone_spec(backbone), Settings(backbone=backbone)
        assert (settings.budget, settings.fps, settings.max_frames, settings.segment_frames) == (
            spec.budget,
            spec.fps,
            spec.max_frames,
            spec.segment_frames,
        )
    assert Settings.for_backbone("tiny-random", budget=None) == Settings()


class EchoRunner:
    """A column of its own: answers with the question, keeps every other frame, finishes its columns in
    reverse order (the pipeline must still report them in column order)."""

    def run(self, job: Job, names):
        for name in reversed(names):
            yield AnswerDelta(name, job.question[:3])
            kept = list(range(0, job.prepared.real_frames, 2))
            report = MethodReport(method=name, label="echo", answer=job.question, kept=kept)
            report.kept_frames = [job.prepared.frame_ref(p) for p in kept]
            yield MethodDone(report)

    def gpu_seconds(self, job, names):
        return 7.0 * len(names)


ECHO = EchoRunner()


@pytest.fixture
def echo_columns(monkeypatch):
    """Two columns on the echo runner, registered like any new column: one ``Column`` line each."""
    info = ColumnInfo(label="echo", about="a test column", selected_by_default=False)
    extra = {n: Column(n, info, "tests.test_columns:ECHO") for n in ("echo-a", "echo-b")}
    monkeypatch.setattr(columns, "COLUMNS", {**COLUMNS, **extra})
    monkeypatch.setattr("pipeline.settings.COLUMNS", columns.COLUMNS)
    return list(extra)


def test_a_new_column_runs_beside_the_others_in_column_order(clip, echo_columns):
    settings = dataclasses.replace(SETTINGS, methods=("uniform", *echo_columns))
    events = list(compare(Request(clip, "What is shown?", settings)))
    done = [e.report.method for e in events if isinstance(e, MethodDone)]
    assert done == ["uniform", "echo-a", "echo-b"]
    finished = events[-1]
    assert isinstance(finished, Finished) and list(finished.reports) == done
    assert finished.reports["echo-b"].answer == "What is shown?"
    assert finished.reports["uniform"].error is None and finished.reports["uniform"].answer


def test_the_gpu_time_asked_for_is_what_the_selected_runners_need(clip, echo_columns):
    settings = dataclasses.replace(SETTINGS, methods=("uniform", *echo_columns))
    prepared = next(e for e in compare(Request(clip, "q", settings)) if isinstance(e, Finished)).prepared
    alone = estimate_gpu_seconds(Job(prepared, "q", dataclasses.replace(settings, methods=("uniform",))))
    assert estimate_gpu_seconds(Job(prepared, "q", settings)) == alone + 14
