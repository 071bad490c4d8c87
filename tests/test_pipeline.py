"""The comparison pipeline on the tiny backbone: shared work once, isolated failures, honest accounting."""

import dataclasses

import pytest
import torch

import compressors
import media
from pipeline import cache, official, runcard, video
from pipeline import events as ev
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from pipeline.compare import compare
from pipeline.request import Request
from pipeline.settings import Settings, SettingsError
from tests.videos import make_clip, write_garbage

SETTINGS = Settings.for_backbone("tiny-random", budget=48, max_frames=16, fps=4.0, max_new_tokens=4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=4, fps=8, size=(128, 96))


@pytest.fixture(autouse=True)
def fresh_caches():
    cache.FRAMES.clear()
    cache.TOKENS.clear()


def _run(source, question="What is shown?", settings=SETTINGS, **kwargs):
    events = list(compare(Request(source, question, settings, **kwargs)))
    assert isinstance(events[-1], ev.Finished)
    return events


def test_every_method_answers_within_the_budget_with_consistent_accounting(clip):
    finished = _run(clip)[-1]
    assert list(finished.reports) == list(METHODS)
    for method, r in finished.reports.items():
        assert r.error is None, method
        assert r.answer, method
        assert 0 < r.tokens["llm_input"] <= SETTINGS.budget < r.tokens["raw"], method
        assert r.tokens["per_frame"] == pytest.approx(
            r.tokens["llm_input"] / finished.prepared.real_frames, abs=1e-3
        )
        positions = r.kept
        assert positions == sorted(positions) and all(
            0 <= p < finished.prepared.real_frames for p in positions
        )
        times = [f["timestamp"] for f in r.kept_frames]
        assert times == sorted(times)
        assert len(r.segments) == len(finished.prepared.segments)


def test_answers_stream_before_each_method_is_done(clip):
    events = _run(clip)
    for method in METHODS:
        deltas = [e for e in events if isinstance(e, ev.AnswerDelta) and e.method == method]
        done = next(
            i for i, e in enumerate(events) if isinstance(e, ev.MethodDone) and e.report.method == method
        )
        assert deltas and events.index(deltas[0]) < done
        assert deltas[-1].text == events[done].report.answer


def test_progress_covers_sampling_to_the_last_answer(clip):
    stages = [e.stage for e in _run(clip) if isinstance(e, ev.Progress)]
    assert stages[:3] == ["probe", "sample", "encode"] and stages[-1] == "done"
    fractions = [e.fraction for e in _run(clip) if isinstance(e, ev.Progress)]
    assert fractions == sorted(fractions)


def test_video_is_sampled_and_encoded_once_per_request_and_reused_by_a_follow_up(clip, monkeypatch):
    from model_zoo import load_backbone

    backbone = load_backbone("tiny-random")
    calls = {"encode": 0, "sample": 0}
    real_encode, real_sample = backbone.encode, media.sample

    def encode(*a, **k):
        calls["encode"] += 1
        return real_encode(*a, **k)

    def sample(*a, **k):
        calls["sample"] += 1
        return real_sample(*a, **k)

    monkeypatch.setattr(backbone, "encode", encode)
    monkeypatch.setattr(media, "sample", sample)
    _run(clip)
    assert calls == {"encode": 1, "sample": 1}
    _run(clip, question="And what happens next?")
    assert calls == {"encode": 1, "sample": 1}


@dataclasses.dataclass
class _Broken:
    name = "xcomp"
    label = "broken"
    tokens_per_frame: int = 16
    window_frames: int = 64
    window_stride: int = 32
    clip_frames: int = 8
    lp_comp: bool = True

    def options(self):
        return {}

    def compress(self, *args, **kwargs):
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RuntimeError("kaboom"), "RuntimeError: kaboom"),
        (
            torch.OutOfMemoryError("CUDA out of memory"),
            "Out of memory: lower the token budget or the max frames",
        ),
    ],
)
def test_a_failing_method_reports_in_its_column_and_the_others_still_answer(
    clip, monkeypatch, error, expected
):
    broken = type("Broken", (_Broken,), {"error": error})
    monkeypatch.setitem(compressors.COMPRESSORS, "xcomp", broken)
    reports = _run(clip)[-1].reports
    assert reports["xcomp"].error.startswith(expected)
    assert all(r.error is None and r.answer for m, r in reports.items() if m != "xcomp")


def test_a_budget_covering_the_video_gives_every_method_the_stock_input(clip):
    settings = dataclasses.replace(SETTINGS, budget=16384)  # the largest budget a comparison may ask for
    # XComp always applies its token merging and LP-Comp, as its authors do (tests/test_xcomp.py)
    reports = {m: r for m, r in _run(clip, settings=settings)[-1].reports.items() if m != "xcomp"}
    answers = {r.answer for r in reports.values()}
    assert len(answers) == 1, "no compression must mean the same tokens, hence the same greedy answer"
    assert {r.tokens["llm_input"] for r in reports.values()} == {reports["uniform"].tokens["raw"]}


@pytest.mark.parametrize("question", ["", "   \n"])
def test_an_empty_question_is_refused_before_any_work(clip, question):
    with pytest.raises(video.QuestionError, match="Type a question"):
        next(compare(Request(clip, question, SETTINGS)))


def test_a_garbage_file_is_a_plain_video_error(tmp_path):
    with pytest.raises(media.VideoError) as err:
        _run(write_garbage(tmp_path / "x.mp4"))
    assert "\n" not in str(err.value)


def test_unknown_methods_and_backbones_are_settings_errors():
    with pytest.raises(SettingsError, match="choose from"):
        Settings(methods=("espresso", "nope"))
    with pytest.raises(SettingsError, match="tiny-random"):
        Settings.for_backbone("gpt-5")


def test_run_card_records_settings_video_and_results_and_replays_identically(clip):
    finished = _run(clip)[-1]
    card = runcard.build(finished, "What is shown?", SETTINGS)
    assert card["backbone"]["name"] == "tiny-random"
    assert card["video"]["fingerprint"] == media.fingerprint(clip)
    assert card["settings"]["budget"] == SETTINGS.budget
    assert set(card["settings"]["method_options"]) == set(METHODS)
    for method, result in card["results"].items():
        assert result["tokens"]["llm_input"] == finished.reports[method].tokens["llm_input"]
        assert all({"index", "timestamp"} <= set(f) for f in result["kept_frames"])
        assert all({"start", "end", "score", "tokens"} <= set(s) for s in result["segments"])
    loaded = runcard.load(runcard.dumps(card))
    replayed = list(runcard.replay(loaded, video=clip))[-1]
    assert runcard.diff(card, runcard.build(replayed, loaded["question"], runcard.settings_of(loaded))) == []


def test_replay_refuses_a_different_video(clip, tmp_path):
    card = runcard.build(_run(clip)[-1], "What is shown?", SETTINGS)
    other = make_clip(tmp_path / "other.mp4", seconds=3, fps=8, size=(128, 96))
    with pytest.raises(runcard.CardError, match="fingerprint"):
        list(runcard.replay(card, video=other))


# --- the official Tempo-6B column ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_official(tmp_path_factory):
    """A tiny random checkpoint under the official key names, loaded with small frames."""
    from pipeline import official
    from tests.tempo_checkpoints import TINY_RULE, write_base, write_tempo

    root = tmp_path_factory.mktemp("official")
    tempo, base = write_tempo(root / "tempo"), write_base(root / "base")
    return official.load_tempo_official(tempo, base_vlm=base, device="cpu", rule=TINY_RULE)


def test_official_tempo_answers_in_its_own_column_with_its_allocation(clip, monkeypatch, tiny_official):
    monkeypatch.setattr(official.RUNNER, "model", official.Resident(lambda *weights: tiny_official))
    settings = dataclasses.replace(SETTINGS, methods=("tempo", "tempo-6b.official"))
    reports = _run(clip, settings=settings)[-1].reports
    report = reports["tempo-6b.official"]
    assert report.error is None and report.answer
    tokens = [s["tokens"] for s in report.segments]
    assert 0 < report.tokens["llm_input"] == sum(tokens) <= report.extra["budget"] == 4096
    assert all(0 < s["score"] < 1 for s in report.segments)
    assert [row["tokens"] for row in report.extra["allocation"]] == tokens
    assert reports["tempo"].error is None


def test_official_tempo_without_hub_access_fails_in_its_column_only(clip):
    settings = dataclasses.replace(SETTINGS, methods=("pool", "tempo-6b.official"))
    reports = _run(clip, settings=settings)[-1].reports
    assert "Vision-CAIR/Tempo-6B" in reports["tempo-6b.official"].error
    assert reports["pool"].error is None and reports["pool"].answer


def test_a_budget_too_small_for_a_method_says_so_in_its_column(clip):
    settings = dataclasses.replace(SETTINGS, methods=("uniform", "tempo"))
    # Settings refuses budgets under 16 (pipeline.bounds), below one frame pair of a real backbone (~200
    # tokens) but not of the tiny one (12): force a budget of 2 to reach the compressor's own refusal.
    object.__setattr__(settings, "budget", 2)
    reports = _run(clip, settings=settings)[-1].reports
    assert reports["uniform"].error.startswith("A budget of 2 visual tokens is too small for uniform")
    assert reports["uniform"].error.endswith("raise the budget.")
    assert reports["tempo"].error is None and 0 < reports["tempo"].tokens["llm_input"] <= 2
