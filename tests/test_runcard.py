"""Run cards: loading refuses what is not a card, and diff reports exactly what must reproduce."""

import copy
import json

import pytest

from pipeline import runcard


def _card() -> dict:
    result = {
        "label": "Tempo",
        "answer": "A red ball.",
        "error": None,
        "tokens": {"raw": 1024, "llm_input": 128, "per_frame": 4.0, "ratio": 8.0},
        "kept_frames": [{"index": 0, "timestamp": 0.0}, {"index": 8, "timestamp": 1.0}],
        "segments": [{"start": 0.0, "end": 1.0, "score": 0.5, "tokens": 128}],
        "timings": {"compress": 0.1, "answer": 0.2},
    }
    return {
        "schema_version": runcard.SCHEMA_VERSION,
        "settings": {"backbone": "tiny-random", "methods": ["tempo"], "budget": 128},
        "video": {"fingerprint": "abc", "source_url": None},
        "question": "What is shown?",
        "results": {"tempo": result},
    }


def test_identical_cards_have_no_differences_even_when_timings_differ():
    old, new = _card(), _card()
    new["results"]["tempo"]["timings"] = {"compress": 9.0, "answer": 9.0}
    assert runcard.diff(old, new) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("answer", "A blue ball."),
        ("error", "RuntimeError: boom"),
        ("tokens", {"raw": 1024, "llm_input": 129, "per_frame": 4.0, "ratio": 8.0}),
        ("kept_frames", [{"index": 0, "timestamp": 0.0}]),
        ("segments", [{"start": 0.0, "end": 1.0, "score": 0.5, "tokens": 127}]),
    ],
)
def test_diff_names_every_reproducible_field_that_changed(field, value):
    old, new = _card(), _card()
    new["results"]["tempo"][field] = value
    differences = runcard.diff(old, new)
    assert len(differences) == 1 and differences[0].startswith(f"tempo.{field}:")


def test_diff_reports_a_method_missing_from_one_run():
    old, new = _card(), _card()
    new["results"]["pool"] = copy.deepcopy(new["results"]["tempo"])
    assert runcard.diff(old, new) == ["pool: only in the new run"]


def test_load_round_trips_a_saved_card(tmp_path):
    path = runcard.save(_card(), tmp_path / "card.json")
    assert runcard.load(path) == _card()
    assert runcard.load(path.read_text()) == _card()


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        json.dumps([1, 2]),
        json.dumps({"schema_version": 999}),
        json.dumps({"schema_version": 1}),
    ],
)
def test_load_refuses_what_is_not_a_card_with_one_sentence(tmp_path, content):
    path = tmp_path / "card.json"
    path.write_text(content)
    with pytest.raises(runcard.CardError) as err:
        runcard.load(path)
    assert str(err.value).endswith(".") and "\n" not in str(err.value)


def test_a_card_of_an_uploaded_file_needs_the_file_to_re_run():
    with pytest.raises(runcard.CardError, match="uploaded file"):
        runcard.source_of(_card())
    assert runcard.source_of(_card(), "clip.mp4") == "clip.mp4"
