"""The app end to end through its API, as a gradio_client user would drive it (tiny backbone)."""

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import media
from pipeline.columns import COLUMNS
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from tests.app_server import running_app
from tests.hostile import is_one_sentence
from tests.videos import make_clip, write_garbage
from ui.inputs import page_args
from ui.updates import page_result

pytestmark = pytest.mark.slow
BUDGET = 48


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


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


def _page_run(client, *args) -> tuple[list[dict], Exception | None]:
    """Every update the page's Compare event sent, by name, and the error it ended with (None: none)."""
    job = client.submit(*args, api_name="/compare_page")
    try:
        job.result(timeout=300)
        error = None
    except AppError as err:
        error = err
    return [page_result(values, COLUMNS) for values in job.outputs()], error


def test_a_refusal_stays_in_the_status_line_and_each_column_says_why_it_did_not_run(client, tmp_path):
    garbage = write_garbage(tmp_path / "garbage.mp4")
    args = page_args(video=handle_file(str(garbage)), question="What is shown?", methods=["xcomp", "pool"])
    sent, error = _page_run(client, *args)
    assert error is not None and "not a video" in str(error)  # the toast
    final = sent[-1]
    assert final["status"] == f"⚠️ {error}"
    assert final["xcomp.answer"] == final["pool.answer"] == f"Not run: {error}"
    assert final["tempo.answer"] == "(not selected)"


def test_the_status_goes_forward_only_and_ends_on_done(client, clip):
    args = page_args(video=handle_file(str(clip)), question="What is shown?", max_frames=16, max_new_tokens=4)
    sent, error = _page_run(client, *args)
    statuses = [s["status"] for s in sent]
    steps = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
    assert error is None and steps[0] == "Starting on the uploaded video…" and steps[-1].startswith("Done:")
    assert len(steps) == len(set(steps)), steps  # no step shown again once another followed it
    assert not any(s.startswith(("Done:", "⚠️")) for s in steps[:-1])


def test_a_visitors_mistake_is_one_log_line_and_no_traceback(client, tmp_path, capfd, caplog):
    garbage = write_garbage(tmp_path / "garbage.mp4")
    with caplog.at_level(logging.WARNING, logger="arena"), pytest.raises(AppError):
        _compare(client, handle_file(str(garbage)))
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    lines = [r.getMessage() for r in caplog.records if r.name == "arena"]
    assert len(lines) == 1 and "not a video" in lines[0] and "\n" not in lines[0]
    assert all(r.exc_info is None for r in caplog.records if r.name == "arena")


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
        client.predict(handle_file(out["card_file"]), handle_file(str(clip)), "", api_name="/rerun_card"),
        COLUMNS,
    )
    assert "Re-run matches the card" in rerun["status"]


def test_kept_moments_is_an_mp4_around_each_frame_the_card_says_the_column_kept(client, clip):
    card = _compare(client, handle_file(str(clip)), methods=["xcomp", "uniform"])
    for method in ("xcomp", "uniform"):
        path = client.predict(
            method=method, card=card, video=handle_file(str(clip)), api_name="/kept_moments"
        )
        moments = {round(f["timestamp"], 3) for f in card["results"][method]["kept_frames"]}
        info = media.probe(path)
        assert Path(path).name == f"kept-moments-{method}.mp4"
        assert 0 < info.duration <= len(moments) * 1.0 + 0.25  # about a second around each kept frame


def test_kept_moments_refuses_a_card_it_cannot_trust_with_one_sentence(client, clip, tmp_path):
    card = _compare(client, handle_file(str(clip)), methods=["uniform"])
    other = make_clip(tmp_path / "other.mp4", seconds=3, fps=8, size=(96, 64))
    forged = json.loads(json.dumps(card))
    forged["results"]["uniform"]["kept_frames"] = [{"index": "0; rm -rf /", "timestamp": 1.0}]
    cases = [
        ({"card": card, "video": handle_file(str(other))}, "not the one this card was made from"),
        ({"card": card}, "give that video file"),
        ({"card": forged, "video": handle_file(str(clip))}, "kept_frames are not frames"),
        ({"card": {"results": {}}, "video": handle_file(str(clip))}, "not a run card"),
    ]
    for kwargs, words in cases:
        with pytest.raises(AppError, match=words) as err:
            client.predict(method="uniform", api_name="/kept_moments", **kwargs)
        assert is_one_sentence(str(err.value)), err.value
    with pytest.raises(AppError, match="no column 'xcomp'; it has uniform"):
        client.predict(method="xcomp", card=card, video=handle_file(str(clip)), api_name="/kept_moments")


def test_the_api_documents_compare_and_kept_moments_and_keeps_every_page_helper_private(client, app_url):
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/compare", "/kept_moments"} and not api["unnamed_endpoints"]
    parameters = api["named_endpoints"]["/compare"]["parameters"]
    assert [p["parameter_name"] for p in parameters if not p["parameter_has_default"]] == ["question"]
    events = httpx.get(app_url + "config", timeout=30).json()["dependencies"]
    callable_ = {e["api_name"]: e["api_visibility"] for e in events if e["api_visibility"] != "private"}
    assert callable_ == {
        "compare": "public",
        "kept_moments": "public",
        "compare_page": "undocumented",
        "rerun_card": "undocumented",
    }
    with pytest.raises(ValueError, match="Cannot find a function"):
        client.predict("tiny-random", api_name="/backbone_defaults")


def test_the_app_is_an_mcp_server_whose_tools_are_compare_and_kept_moments(app_url):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def tools() -> dict:
        async with (
            streamablehttp_client(app_url + "gradio_api/mcp/") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return {tool.name: tool for tool in (await session.list_tools()).tools}

    offered = asyncio.run(tools())
    assert set(offered) == {"compare", "kept_moments"}
    compare = offered["compare"]
    assert compare.inputSchema["required"] == ["question"]
    assert {"video", "url", "methods", "budget"} <= set(compare.inputSchema["properties"])
    assert "Compare token-compression methods" in compare.description
    assert offered["kept_moments"].inputSchema["required"] == ["method", "card"]


def test_no_method_selected_is_refused_with_a_sentence(client, clip):
    with pytest.raises(AppError, match="Pick at least one method"):
        _compare(client, handle_file(str(clip)), methods=[])
