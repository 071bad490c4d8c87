"""Many visitors at once (bench/load.py on a small scale): every request is answered or told the Space is busy."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from bench import load
from pipeline import shared
from pipeline.columns import COLUMNS
from pipeline.limits import AppSettings

pytestmark = pytest.mark.slow

BUSY = (
    "Queue is full! Please try again."  # what gradio_client raises (QueueError) when the queue refuses a job
)


def test_a_full_queue_says_busy_and_no_request_is_lost():
    # one comparison at a time and one waiting: three visitors starting together cannot all get in; run as a
    # user runs it, in a process of its own, whose stdout is the one JSON line and nothing else
    argv = ["--json", "--clients", "3", "--requests", "2", "--queue-size", "1", "--concurrency", "1"]
    script = Path(load.__file__)
    done = subprocess.run(
        [sys.executable, str(script), *argv, "--solo", "0", "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=script.parents[1],
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"stdout is the JSON line alone, got: {done.stdout[:500]}"
    report = json.loads(lines[0])
    assert done.returncode == 0, report["failures"]
    assert report["sent"] == 6 and report["accounted"]
    assert report["lost"] == report["failed"] == 0, report["failures"]
    assert report["completed"] + report["busy"] == 6
    assert report["completed"] >= 2 and report["busy"] >= 1, report
    assert report["busy_messages"] == [BUSY]
    assert report["p50_s"] is not None and report["p50_s"] <= report["p95_s"]
    assert report["queue_size"] == 1 and report["machine"]["cores"] >= 1


def test_requests_that_fit_the_queue_all_complete_and_each_answer_is_checked(tmp_path):
    request = load.Request(load.make_clip(tmp_path / "clip.mp4"), methods=("uniform",), max_frames=4)
    with load.local_app(AppSettings(queue_size=8, concurrency=2)) as url:
        report = load.run_load(url, clients=2, requests=2, request=request, timeout_s=120)
    assert report["completed"] == 4 and report["busy"] == report["failed"] == report["lost"] == 0, report


def test_an_incomplete_answer_counts_as_failed_not_completed():
    columns = ["an answer", "", None, None] + ["", "", None, None] * (len(COLUMNS) - 1)
    result = ("Done: 8 frames", None, None, None, None, *columns)
    assert load.check_answer(result, ("espresso",)) == ""
    assert load.check_answer(result, ("espresso", "xcomp")) == "no answer from xcomp"
    assert load.check_answer(("Starting…", None, None, None, None, *columns), ("espresso",)).startswith(
        "status"
    )


def test_percentiles_are_nearest_rank():
    assert load._percentile([], 50) is None
    assert load._percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert load._percentile([float(i) for i in range(1, 21)], 95) == 19.0


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_the_page_tells_a_visitor_the_space_is_busy_when_the_queue_is_full(tmp_path, monkeypatch):
    playwright = pytest.importorskip("playwright.sync_api")
    clip = load.make_clip(tmp_path / "clip.mp4")
    entered, release = threading.Event(), threading.Event()
    encode = shared.encode

    def held_encode(*args, **kwargs):  # the first comparison holds the only slot until the test lets go
        entered.set()
        release.wait(60)
        return encode(*args, **kwargs)

    monkeypatch.setattr(shared, "encode", held_encode)
    request = load.Request(clip, methods=("uniform",), max_frames=4)
    with load.local_app(AppSettings(queue_size=1, concurrency=1)) as url:
        running = Client(url, verbose=False).submit(*request.args(), api_name="/compare_page")
        try:
            assert entered.wait(60)
            waiting = Client(url, verbose=False).submit(*request.args(), api_name="/compare_page")
            _wait_for_queue_length(url, 1)
            with playwright.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
                page = browser.new_page()
                page.goto(url)
                page.locator("#video input[type=file]").set_input_files(str(clip))
                page.locator("#question textarea").fill("What moves?")
                page.locator("#compare").click()
                toast = page.get_by_text("This application is currently busy. Please try again.").first
                toast.wait_for(timeout=30_000)
                browser.close()
        finally:
            release.set()
        assert load.check_answer(running.result(timeout=60), request.methods) == ""
        assert load.check_answer(waiting.result(timeout=60), request.methods) == ""


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def _wait_for_queue_length(url: str, length: int) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(url + "gradio_api/queue/status").json()["queue_size"] < length:
        assert time.monotonic() < deadline, "the second request never reached the queue"
        time.sleep(0.05)
