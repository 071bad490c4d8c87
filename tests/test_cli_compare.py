"""`cli.py compare` and `cli.py replay`: the same comparison and run card as the page, from a terminal."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.columns import DEFAULT_COLUMNS as METHODS
from tests.videos import make_clip

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("cli") / "clip.mp4", seconds=12, fps=4, size=(128, 96))


@pytest.fixture(scope="module")
def card(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("cards") / "card.json"
    run = cli("compare", "--video", clip, "--question", "What is shown?", "--budget", "40", "--max-new-tokens", "3",
              "--json", out)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == json.loads(out.read_text())
    return out


def test_compare_writes_a_card_with_every_method_within_the_budget(card, clip):
    data = json.loads(card.read_text())
    assert data["settings"]["budget"] == 40 and data["question"] == "What is shown?"
    assert list(data["results"]) == list(METHODS)
    for method, result in data["results"].items():
        assert result["error"] is None, method
        assert 0 < result["tokens"]["llm_input"] <= 40 < result["tokens"]["raw"], method


def test_replay_of_an_unchanged_card_reproduces_it_and_exits_0(card, clip):
    run = cli("replay", card, "--video", clip)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["same"] is True


def test_replay_exits_1_and_names_what_differs(card, clip, tmp_path):
    data = json.loads(card.read_text())
    data["results"]["tempo"]["answer"] = "something else"
    data["results"]["pool"]["tokens"]["llm_input"] += 1
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    run = cli("replay", edited, "--video", clip)
    assert run.returncode == 1
    differences = json.loads(run.stdout)["differences"]
    assert any(d.startswith("tempo.answer") for d in differences)
    assert any(d.startswith("pool.tokens") for d in differences)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("compare", "--video", "{clip}", "--question", " "), "Type a question"),
        (("compare", "--video", "{clip}", "--question", "q", "--methods", "magic"), "Unknown method magic"),
        (("compare", "--video", "{clip}", "--question", "q", "--backbone", "gpt"), "tiny-random"),
        (("compare", "--video", "/no/such/video.mp4", "--question", "q"), "was not found"),
        (("replay", "{card}"), "uploaded file"),
        (("replay", "{clip}"), "not a run card"),
    ],
)
def test_user_errors_are_one_line_on_stderr_with_exit_code_2(clip, card, args, message):
    run = cli(*(a.format(clip=clip, card=card) for a in args))
    assert run.returncode == 2
    assert message.lower() in run.stderr.lower()
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


@pytest.mark.network
def test_compare_reads_a_url_and_records_it_in_the_card(video_server, tmp_path):
    url = video_server.url("clip.mp4")
    run = cli("compare", "--video", url, "--question", "What is shown?", "--methods", "uniform,tempo",
              "--max-new-tokens", "2", "--allow-private")  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["video"]["source_url"] == url and list(data["results"]) == ["tempo", "uniform"]
