"""The app end to end through its API, as a gradio_client user would drive it (tiny backbone)."""

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from pipeline.columns import COLUMNS
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from tests.app_server import running_app
from tests.videos import make_clip, write_garbage
from ui.page import page_args
from ui.updates import page_result

pytestmark = pytest.mark.slow
BUDGET = 48


@pytest.fixture(scope="module")
def client():
    with running_app() as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("app") / "clip.mp4", seconds=4, fps=8, size=(128, 96))


def _compare(client, video, question="What is shown?", **settings) -> dict:
    """The typed ``/compare`` endpoint: the run card."""
    kwargs = {"budget": BUDGET, "max_frames": 16, "fps": 4, "max_new_tokens": 4, **settings}
    return client.predict(question=question, video=video, api_name="/compare", **kwargs)


def _page(client, video, question="What is shown?", **settings) -> dict:
    """The page's own Compare event, as the browser triggers it, its outputs by name."""
    kwargs = {"budget": BUDGET, "max_frames": 16, "fps": 4, "max_new_tokens": 4, **settings}
    args = page_args(video=video, url="", question=question, backbone="tiny-random", seed=0, **kwargs)
    result = client.predict(*args, api_name="/compare_page")
    return page_result(result, COLUMNS)


def test_all_five_methods_answer_with_consistent_accounting_and_galleries(client, clip):
    out = _page(client, handle_file(str(clip)))
    card = json.loads(Path(out["card_file"]).read_text())
    assert set(card["results"]) == set(METHODS)
    for method in METHODS:
        answer, tokens_md, gallery = (out[f"{method}.{part}"] for part in ("answer", "tokens", "gallery"))
        result = card["results"][method]
        assert result["error"] is None and answer == result["answer"] and answer
        assert 0 < result["tokens"]["llm_input"] <= BUDGET < result["tokens"]["raw"]
        assert f"{result['tokens']['llm_input']:,}" in tokens_md
        assert len(gallery) == min(len(result["kept_frames"]), 48) > 0
        assert all(Path(item["image"]).is_file() for item in gallery)
        captions = [item["caption"] for item in gallery]
        assert captions[0].startswith(f"{result['kept_frames'][0]['timestamp']:.1f} s")
    rows = {row[0]: row for row in out["tokens_plot"]["data"] if row[1] == "into the LLM"}
    assert [row[0] for row in out["tokens_plot"]["data"]][0] == "raw video"
    assert {m: rows[m][2] for m in METHODS} == {m: card["results"][m]["tokens"]["llm_input"] for m in METHODS}


def test_a_garbage_file_gets_its_plain_sentence_and_the_next_comparison_works(client, clip, tmp_path):
    garbage = write_garbage(tmp_path / "garbage.mp4")
    with pytest.raises(AppError) as err:
        _compare(client, handle_file(str(garbage)))
    message = str(err.value)
    assert "Traceback" not in message and message.strip()
    card = _compare(client, handle_file(str(clip)), methods=["uniform"])
    assert card["results"]["uniform"]["answer"] and list(card["results"]) == ["uniform"]


def test_the_typed_endpoint_needs_only_the_question_and_a_video(client, clip):
    card = client.predict(question="What is shown?", video=handle_file(str(clip)), api_name="/compare")
    assert list(card["results"]) == list(METHODS) and card["question"] == "What is shown?"
    assert all(r["error"] is None and r["answer"] for r in card["results"].values())


def test_an_empty_question_is_refused_with_a_sentence(client, clip):
    with pytest.raises(AppError, match="Type a question"):
        _compare(client, handle_file(str(clip)), question="  ")


def test_no_video_and_no_url_is_refused_with_a_sentence(client):
    with pytest.raises(AppError, match="Upload a video or paste a video URL"):
        _compare(client, None)


def test_a_downloaded_run_card_re_runs_to_the_same_result(client, clip):
    out = _page(client, handle_file(str(clip)), methods=["tempo", "pool"])
    rerun = page_result(
        client.predict(
            card_file=handle_file(out["card_file"]),
            video=handle_file(str(clip)),
            url="",
            api_name="/rerun_card",
        ),
        COLUMNS,
    )
    assert "Re-run matches the card" in rerun["status"]


def test_kept_moments_download_is_an_mp4_of_the_kept_frames(client, clip):
    import media

    _page(client, handle_file(str(clip)), methods=["xcomp"])
    update = client.predict(api_name="/moments_xcomp")
    path = update["value"] if isinstance(update, dict) else update
    info = media.probe(path)
    assert Path(path).suffix == ".mp4" and info.duration > 0


def test_no_method_selected_is_refused_with_a_sentence(client, clip):
    with pytest.raises(AppError, match="Pick at least one method"):
        _compare(client, handle_file(str(clip)), methods=[])
