"""Run cards are untrusted input: a mutated card is refused with one sentence naming the field and its range.

A card goes through the very bounds the sliders, the API and the CLI use (``pipeline.bounds``); types are
strict (no bools or floats where whole numbers belong, no NaN or infinity, no text for numbers), nesting and
size are bounded, and a card never chooses which weights the server loads.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import media
from pipeline import official, runcard
from pipeline import settings as ps
from pipeline.bounds import SETTING_BOUNDS, SettingsError
from pipeline.settings import Settings
from tests.hostile import is_one_sentence
from tests.videos import make_clip

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = "tempo-6b.official"


def _card(**settings) -> dict:
    """A well-formed card as ``runcard.build`` writes it (no results needed to load or replay it)."""
    data = Settings.for_backbone("tiny-random", methods=("uniform", "xcomp", OFFICIAL), **settings).to_dict()
    return {
        "schema_version": runcard.SCHEMA_VERSION,
        "settings": data,
        "video": {"fingerprint": "0" * 64, "source_url": "https://example.com/v.mp4"},
        "question": "What is shown?",
        "results": {"uniform": {"answer": "a", "tokens": {"llm_input": 12}}},
    }


def _mutated(path: str, value) -> dict:
    card = copy.deepcopy(_card())
    *parents, last = path.split(".")
    target = card
    for key in parents:
        target = target[key]
    target[last] = value
    return card


def _refusal(text: str) -> str:
    """The sentence that loading ``text`` as a card file gives (the page and the CLI load files)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "card.json"
        path.write_text(text)
        with pytest.raises((runcard.CardError, SettingsError)) as caught:
            runcard.load(path)
    message = str(caught.value)
    assert is_one_sentence(message), message
    return message


def test_a_well_formed_card_loads():
    card = runcard.load(json.dumps(_card()))
    assert runcard.settings_of(card).methods == ("uniform", "xcomp", OFFICIAL)


MUTATIONS = [
    ("settings.segment_frames", 20000, "segment length (frames) must be a whole number from 2 to 32"),
    ("settings.segment_frames", 7, "even"),
    ("settings.max_new_tokens", 10**9, "Max new tokens must be a whole number from 1 to 512"),
    ("settings.budget", 48.0, "visual-token budget must be a whole number from 16 to 16384"),
    ("settings.budget", 48.5, "visual-token budget"),
    ("settings.budget", True, "visual-token budget"),
    ("settings.budget", "48", "visual-token budget"),
    ("settings.budget", [48], "visual-token budget"),
    ("settings.fps", 1e308, "Frames per second must be a number from 0.1 to 4"),
    ("settings.fps", math.inf, "Frames per second"),
    ("settings.fps", math.nan, "Frames per second"),
    ("settings.fps", 0, "Frames per second"),
    ("settings.seed", 2**70, "seed must be a whole number from 0 to 4294967295"),
    ("settings.seed", -1, "seed"),
    ("settings.max_side", 10**6, "Max side (pixels) must be a whole number from 32 to 1280"),
    ("settings.max_frames", 4.5, "Max frames"),
    ("settings.max_frames", 10**6, "Max frames must be a whole number from 2 to 1024"),
    ("settings.methods", "uniform", "Methods must be a list"),
    ("settings.methods", ["nope"], "Unknown method nope"),
    ("settings.methods", [], "at least one method"),
    ("settings.methods", [1, 2], "Methods must be a list"),
    ("settings.backbone", "nope", "Unknown backbone 'nope'"),
    ("settings.backbone", 5, "Unknown backbone"),
    ("settings.method_options", [], "Method options must be a mapping"),
    ("settings.method_options.xcomp", [], "options of xcomp must be a mapping"),
    ("settings.method_options.xcomp.window_frames", 10**9, "XComp's window_frames must be a whole number"),
    ("settings.method_options.xcomp.lp_comp", 1, "XComp's lp_comp must be true or false"),
    ("settings.method_options.xcomp.window_frames", 60, "xcomp options do not fit together"),
    ("settings.method_options.xcomp.evil", 1, "xcomp has no option evil"),
    ("settings.method_options.nope", {}, "There is no method nope"),
    ("settings.method_options.espresso", {"spatial_share": math.nan}, "Espresso's spatial_share"),
    ("settings.method_options.tempo", {"batch_size": 10**6}, "Tempo's batch_size"),
    ("settings", 5, "'settings' is not a mapping"),
    ("question", 5, "'question' is not a text"),
    ("video", "https://example.com/v.mp4", "'video' is not a mapping"),
    ("video.source_url", 5, "odd source_url"),
    ("results", [], "'results' is not a mapping"),
    ("results.uniform", 5, "results are not one record per method"),
    ("schema_version", True, "not a run card of schema version 1"),
    ("schema_version", "1", "not a run card of schema version 1"),
]


@pytest.mark.parametrize(
    ("path", "value", "words"), MUTATIONS, ids=[f"{p}={v!r:.20}" for p, v, _ in MUTATIONS]
)
def test_a_mutated_card_is_refused_with_one_sentence_naming_the_field(path, value, words):
    assert words in _refusal(json.dumps(_mutated(path, value)))


def test_every_numeric_setting_is_bounded_below_and_above():
    for name, bound in SETTING_BOUNDS.items():
        for value in (bound.low - 1, bound.high + 1):
            message = _refusal(json.dumps(_mutated(f"settings.{name}", value)))
            assert f"from {bound.low:g} to {bound.high:g}" in message or f"from {bound.low} to" in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"settings": ' + "[" * 100_000 + "]" * 100_000 + "}", "not a run card"),
        ('{"schema_version": 1, "settings": {"seed": ' + "9" * 5000 + "}}", "not a run card"),
        ("[]", "not a run card of schema version"),
        ('"a card"', "not a run card of schema version"),
        ('{"schema_version": 1', "not a run card"),
    ],
    ids=["deep-nesting", "5000-digit-int", "a-list", "a-string", "truncated"],
)
def test_json_that_breaks_the_parser_is_one_sentence(text, words):
    assert words in _refusal(text)


def test_a_card_file_larger_than_a_card_can_be_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "big.json"
    big.write_text('{"pad": "' + "x" * (runcard.MAX_CARD_BYTES + 10) + '"}')
    for path in (big, "/dev/zero"):
        with pytest.raises(runcard.CardError, match="larger than a run card can be"):
            runcard.load(path)


# --- a card never chooses the weights --------------------------------------------------------------------


def _with_weights(checkpoint: str) -> dict:
    card = _card()
    card["settings"]["method_options"][OFFICIAL] |= {"checkpoint": checkpoint, "base_vlm": checkpoint}
    card["settings"]["official_checkpoint"] = checkpoint  # the field older versions read
    card["settings"]["official_base"] = checkpoint
    return card


def test_a_card_cannot_choose_which_weights_the_server_downloads():
    settings = runcard.settings_of(runcard.load(json.dumps(_with_weights("attacker/any-repo"))))
    options = settings.options_for(OFFICIAL)
    assert options["checkpoint"] == "Vision-CAIR/Tempo-6B"
    assert options["base_vlm"] == "Qwen/Qwen3-VL-2B-Instruct"
    assert "attacker" not in json.dumps(settings.to_dict())


def test_neither_can_a_request(tmp_path):
    with pytest.raises(SettingsError, match="are the server's"):
        Settings(methods=(OFFICIAL,), method_options={OFFICIAL: {"checkpoint": "attacker/any-repo"}})
    with pytest.raises(TypeError):
        Settings(official_checkpoint="attacker/any-repo")  # no longer a setting at all


def test_only_the_server_points_the_official_column_at_other_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(ps, "_OFFICIAL_WEIGHTS", {})
    ps.use_official_weights(OFFICIAL, checkpoint=tmp_path / "tempo", base_vlm=tmp_path / "base")
    options = runcard.settings_of(_with_weights("attacker/any-repo")).options_for(OFFICIAL)
    assert options["checkpoint"] == str(tmp_path / "tempo") and options["base_vlm"] == str(tmp_path / "base")
    ps.reset_official_weights()
    assert Settings(methods=(OFFICIAL,)).options_for(OFFICIAL)["checkpoint"] == "Vision-CAIR/Tempo-6B"


def test_a_replayed_card_loads_the_registry_weights_not_the_cards(tmp_path, monkeypatch):
    """The card's commits pin the registry's repos only: a pin of any other repo reads nothing."""
    asked = []

    def refuse_to_load(checkpoint, base_vlm, revision, base_revision):
        asked.append((checkpoint, base_vlm, revision))
        raise OSError("no hub here")

    monkeypatch.setattr(official.RUNNER, "model", refuse_to_load)
    clip = make_clip(tmp_path / "clip.mp4", seconds=2, fps=4, size=(64, 48))
    card = _with_weights("attacker/any-repo")
    pins = {"Vision-CAIR/Tempo-6B": "d" * 40, "attacker/any-repo": "e" * 40}
    card["settings"] |= {"methods": [OFFICIAL], "max_frames": 4, "max_new_tokens": 1, "revisions": pins}
    card["video"]["fingerprint"] = media.fingerprint(clip)
    events = list(runcard.replay(runcard.load(json.dumps(card)), video=clip))
    assert asked == [("Vision-CAIR/Tempo-6B", "Qwen/Qwen3-VL-2B-Instruct", "d" * 40)]
    assert events[-1].reports[OFFICIAL].error


# --- the CLI: exit 2 and one sentence, never a traceback -------------------------------------------------


@pytest.mark.slow
def test_the_cli_replays_no_mutated_card(tmp_path):
    card = tmp_path / "card.json"
    card.write_text(json.dumps(_mutated("settings.seed", 2**70)))
    run = subprocess.run(
        [sys.executable, "cli.py", "replay", str(card)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and run.stdout == "" and is_one_sentence(run.stderr), run.stderr
    assert "seed" in run.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--seed", "-1"], "seed must be a whole number from 0 to 4294967295"),
        (["--seed", str(2**70)], "seed must be"),
        (["--fps", "inf"], "Frames per second must be a number from 0.1 to 4"),
        (["--max-new-tokens", "1000000000"], "Max new tokens"),
        (["--segment-frames", "20000"], "segment length"),
        (["--methods", "uniform,nope"], "Unknown method nope"),
        (["--budget", "abc"], "expected a positive number"),
    ],
)
def test_the_cli_refuses_odd_values_with_exit_2_and_one_line(capsys, flags, words):
    import cli

    try:
        code = cli.main(["compare", "--video", "clip.mp4", "--question", "What?", *flags])
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_every_compressor_option_is_bounded_and_every_registry_default_is_within_bounds():
    import dataclasses

    import compressors
    import model_zoo
    from pipeline.bounds import OPTION_BOUNDS, check_options

    for name, cls in compressors.COMPRESSORS.items():
        assert set(OPTION_BOUNDS[name]) == {f.name for f in dataclasses.fields(cls)}, name
    for backbone in model_zoo.list_backbones():
        settings = Settings.for_backbone(backbone, methods=list(compressors.COMPRESSORS))
        for method in compressors.COMPRESSORS:
            check_options(method, settings.options_for(method))
