"""Many visitors at once (bench/load.py on a small scale): every request is answered or told the Space is busy."""

import json

import pytest

from bench import load
from pipeline.limits import AppSettings

pytestmark = pytest.mark.slow

BUSY = (
    "Queue is full! Please try again."  # what gradio_client raises (QueueError) when the queue refuses a job
)


def test_a_full_queue_says_busy_and_no_request_is_lost(capsys):
    # one comparison at a time and one waiting: three visitors starting together cannot all get in
    argv = ["--json", "--clients", "3", "--requests", "2", "--queue-size", "1", "--concurrency", "1"]
    status = load.main([*argv, "--solo", "0", "--timeout", "120"])
    report = json.loads(capsys.readouterr().out.strip())  # one JSON line, nothing else on stdout
    assert status == 0, report["failures"]
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
    columns = ["an answer", "", None, None] + ["", "", None, None] * 5
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
