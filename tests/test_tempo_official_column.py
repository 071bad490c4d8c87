"""The ``tempo-6b.official`` column samples as the authors (2 fps from the source, at most 1024 frames, each
frame resized from full resolution to a 512 long edge, its own timestamps), before the GPU call, at its own
4K or 8K budget, and reports its frame count beside the shared one. A tiny random checkpoint stands in for
the weights (``tests.tempo_checkpoints``); the clip's frames show their own index as a bar code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import media
from model_zoo.tempo_official_frames import official_sample_indices
from pipeline import cache, official
from pipeline.compare import compare, run_methods
from pipeline.report import token_summary
from pipeline.request import Request
from pipeline.settings import Settings, SettingsError
from tests.tempo_checkpoints import TINY_RULE, make_setup
from tests.videos import BITS, make_clip, read_index

NAME = "tempo-6b.official"
#: The shared frames: 4 fps, at most 16 (the official column samples 2 fps of the source instead).
SETTINGS = Settings.for_backbone(
    "tiny-random", methods=("uniform", NAME), fps=4.0, max_frames=16, budget=48, max_new_tokens=2
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """5 s at 8 fps, 1024 x 576: the authors' plan takes 10 of its 40 frames, resized to 512 x 288."""
    return make_clip(
        tmp_path_factory.mktemp("official_clip") / "clip.mp4", seconds=5, fps=8, size=(1024, 576)
    )


@pytest.fixture(scope="module")
def column(tmp_path_factory):
    """The column's runner on a tiny checkpoint for this module; ``calls`` records what reached
    ``TempoOfficial.run`` (frames, duration, budget)."""
    setup = make_setup(tmp_path_factory.mktemp("official_column"))
    model = official.load_tempo_official(setup.tempo, base_vlm=setup.base, device="cpu", rule=TINY_RULE)
    calls = []
    real_run = model.run

    def recording(frames, duration, question, **kwargs):
        calls.append({"frames": frames, "duration": duration, **kwargs})
        return real_run(frames, duration, question, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "run", recording)
        patch.setattr(official.RUNNER, "model", official.Resident(lambda *weights: model))
        yield calls


def finished(clip, settings=SETTINGS, **kwargs):
    return list(compare(Request(clip, "What is shown?", settings), **kwargs))[-1]


@pytest.fixture(scope="module")
def first(clip, column):
    """One comparison with the defaults, and the call that reached the model."""
    cache.FRAMES.clear()
    done = finished(clip)
    return done, column[-1]


def test_the_column_decodes_its_own_frames_at_the_authors_plan(first):
    done, call = first
    report, prepared = done.reports[NAME], done.prepared
    assert report.error is None and report.answer
    frames = call["frames"]
    plan = official_sample_indices(40, 8.0)  # 2 fps of 5 s: 10 frames at round(linspace(0, 39, 10))
    assert len(plan) == 10 and len(prepared.frames) == 16, "its own count, not the shared 16"
    assert frames.shape == (10, 288, 512, 3), "resized from 1024 x 576 to the 512 long edge"
    assert [read_index(f, BITS) for f in frames] == plan, "the planned source frames, in order"
    assert call["duration"] == pytest.approx(5.0) and call["budget"] == 4096
    assert report.extra["real_fps"] == pytest.approx(10 / call["duration"])
    assert [row["time"] for row in report.extra["allocation"]] == ["<2.0 seconds>", "<6.0 seconds>"]
    assert [f["index"] for f in report.kept_frames] == plan
    assert [f["timestamp"] for f in report.kept_frames] == pytest.approx([i / 8 for i in plan], abs=1e-3)


def test_its_frame_count_is_reported_beside_the_shared_one(first):
    report = first[0].reports[NAME]
    assert report.extra["frames"] == 10 and report.extra["shared_frames"] == 16
    assert report.tokens["per_frame"] == pytest.approx(report.tokens["llm_input"] / 10, abs=1e-3)
    assert "its own 10 frames (2 fps) beside the shared 16" in token_summary(report)
    assert report.kept == sorted(set(report.kept)) and set(report.kept) <= set(range(16))


def test_its_frames_are_decoded_before_the_gpu_call_and_kept_for_a_follow_up(clip, column, monkeypatch):
    cache.FRAMES.clear()
    decoded = []
    real_sample_at = media.sample_at
    monkeypatch.setattr(media, "sample_at", lambda *a, **k: decoded.append(1) or real_sample_at(*a, **k))

    def gpu_part(job):
        assert isinstance(job.inputs[NAME], official.OwnFrames) and len(job.inputs[NAME]) == 10
        before = len(decoded)
        yield from run_methods(job)
        assert len(decoded) == before, "the GPU part decoded frames"

    done = finished(clip, runner=gpu_part)
    assert done.reports[NAME].error is None and decoded == [1]
    list(official.RUNNER.prepare(official.Job(done.prepared, "q", SETTINGS), [NAME], media.Limits()))
    assert decoded == [1], "a follow-up finds them in the frame cache"


def test_the_8k_budget_is_a_choice_of_the_column(clip, column):
    settings = dataclasses.replace(SETTINGS, method_options={NAME: {"visual_token_budget": 8192}})
    report = finished(clip, settings).reports[NAME]
    assert column[-1]["budget"] == 8192 and report.extra["budget"] == 8192
    assert Settings.from_dict(settings.to_dict()).options_for(NAME)["visual_token_budget"] == 8192


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"visual_token_budget": 5000}, "visual_token_budget must be 4096 or 8192, not 5000"),
        ({"visual_token_budget": 4096.0}, "must be 4096 or 8192"),
        ({"visual_token_budget": True}, "must be 4096 or 8192"),
        (
            {"checkpoint": "someone/else"},
            "has no option checkpoint to choose.*its choices: visual_token_budget",
        ),
    ],
)
def test_other_choices_are_refused_in_one_sentence(options, message):
    with pytest.raises(SettingsError, match=message):
        Settings(method_options={NAME: options})


def test_a_run_card_reads_back_only_the_columns_choices():
    settings = Settings(methods=("uniform", NAME))
    data = settings.to_dict()
    assert {"checkpoint", "base_vlm", "min_tokens"} <= set(data["method_options"][NAME])
    assert Settings.from_dict(data).method_options[NAME] == {"visual_token_budget": 4096}


def test_a_video_it_cannot_sample_fails_in_its_column_only(clip, column, monkeypatch):
    def broken(*args, **kwargs):
        raise media.CorruptVideoError()

    cache.FRAMES.clear()
    monkeypatch.setattr(media, "sample_at", broken)
    calls = len(column)
    done = finished(clip)
    assert done.reports[NAME].error == media.CorruptVideoError.default_message
    assert done.reports["uniform"].error is None and len(column) == calls


def test_the_gpu_time_asked_for_counts_its_own_frames(first):
    job = official.Job(first[0].prepared, "q", SETTINGS)
    pictures = media.Frames(np.zeros((100, 2, 2, 3), np.uint8), np.arange(100.0), np.arange(100))
    unknown = official.RUNNER.gpu_seconds(job, [NAME])  # not prepared: 2 fps of 5 s
    known = official.RUNNER.gpu_seconds(
        dataclasses.replace(job, inputs={NAME: official.OwnFrames(pictures, 50.0)}), [NAME]
    )
    assert known - unknown == pytest.approx((100 - 10) * 0.02)
