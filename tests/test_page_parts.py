"""The page's parts below app.py: kept-frame images, throttled answer updates, per-request scratch folders."""

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import media
from pipeline.events import AnswerDelta, MethodDone, MethodReport, Progress
from pipeline.video import PreparedVideo
from ui import frames as frames_module
from ui.frames import FrameImages
from ui.scratch import ScratchDirs
from ui.updates import Updates, batches

ROOT = Path(__file__).resolve().parent.parent


def _prepared(count: int = 12, fingerprint: str = "f" * 32) -> PreparedVideo:
    ramp = np.linspace(0, 120, 64)[None, :, None] + np.linspace(0, 60, 48)[:, None, None]
    pixels = np.stack([np.broadcast_to(ramp + 8 * i, (48, 64, 3)) for i in range(count)]).astype(np.uint8)
    sampled = media.Frames(
        frames=pixels,
        timestamps=np.arange(count, dtype=np.float64) * 0.5,
        indices=np.arange(count) * 15,
    )
    info = media.VideoInfo(count / 2, 30.0, count * 15, 64, 48, 0, "h264", False, 1000, "/x.mp4")
    return PreparedVideo(Path("/x.mp4"), None, info, fingerprint, sampled, [], count)


def _report(method: str, kept: list[int]) -> MethodReport:
    return MethodReport(method=method, label=method, kept=kept)


# --- kept-frame images ------------------------------------------------------------------------------------


def test_each_frame_is_encoded_once_for_every_column_and_every_follow_up(tmp_path, monkeypatch):
    encoded = []
    real = frames_module.encode_jpeg
    monkeypatch.setattr(frames_module, "encode_jpeg", lambda frame: encoded.append(1) or real(frame))
    images, prepared = FrameImages(), _prepared()
    kept = {"a": [0, 2, 4], "b": [2, 4, 6], "c": [0, 6, 8]}
    for request in ("first", "follow-up"):
        folder = tmp_path / request
        folder.mkdir()
        galleries = {m: images.gallery(prepared, _report(m, k), folder) for m, k in kept.items()}
        files = {path for items in galleries.values() for path, _ in items}
        assert len(files) == 5 and all(Path(f).parent == folder for f in files)  # one file per frame
    assert len(encoded) == 5  # 5 distinct frames, encoded once for both requests


def test_a_gallery_image_is_its_frame_and_its_caption_the_frames_time(tmp_path):
    prepared = _prepared()
    ((path, caption),) = FrameImages().gallery(prepared, _report("a", [3]), tmp_path)
    decoded = np.asarray(Image.open(io.BytesIO(Path(path).read_bytes())).convert("RGB")).astype(int)
    assert decoded.shape == prepared.frames.frames[3].shape
    error = np.abs(decoded - prepared.frames.frames[3]).mean()
    assert error < 2 < np.abs(decoded - prepared.frames.frames[4]).mean()  # its frame, not its neighbour
    assert caption == "1.5 s · frame 45"


def test_two_requests_never_share_a_returned_file(tmp_path):
    images, prepared = FrameImages(), _prepared()
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    first = images.gallery(prepared, _report("a", [1, 2]), one)
    second = images.gallery(prepared, _report("a", [1, 2]), two)
    assert {p for p, _ in first}.isdisjoint(p for p, _ in second)
    assert [Path(p).read_bytes() for p, _ in first] == [Path(p).read_bytes() for p, _ in second]


# --- the comparison in its own thread, the page's updates in batches ------------------------------------


def _timed_events(count: int, every: float, log: list):
    try:
        for i in range(count):
            time.sleep(every)
            yield i
        log.append(("produced all", time.monotonic()))
    finally:
        log.append(("closed", time.monotonic()))


def test_batches_keep_every_event_in_order_about_ten_a_second():
    log = []
    got = list(batches(_timed_events(300, 0.002, log), interval=0.1))
    assert [e for batch in got for e in batch] == list(range(300))
    assert len(got) <= 300 * 0.002 / 0.1 + 3


def test_the_comparison_never_waits_for_the_page():
    log, seen = [], []
    for batch in batches(_timed_events(50, 0.001, log), interval=0.0):
        seen.append((time.monotonic(), batch))
        time.sleep(0.2)  # a slow page: each update takes 0.2 s to send
    produced = dict(log)["produced all"]
    assert len(seen) >= 2 and produced < seen[1][0]  # done before the page took its second batch
    assert [e for _, batch in seen for e in batch] == list(range(50))


def test_an_error_arrives_after_the_events_before_it():
    def failing():
        yield 1
        yield 2
        raise ValueError("the video is not a video")

    got = []
    with pytest.raises(ValueError, match="not a video"):
        for batch in batches(failing(), interval=0.05):
            got.extend(batch)
    assert got == [1, 2]


def test_a_visitor_who_leaves_stops_the_comparison():
    log = []
    stream = batches(_timed_events(1000, 0.005, log), interval=0.01)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 5
    while "closed" not in dict(log) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "closed" in dict(log) and "produced all" not in dict(log)


class _Outputs:
    """The page's outputs as names: status, and each column's answer and tokens."""

    status = "status"
    columns = {m: type("Col", (), {"answer": f"{m}-answer", "tokens": f"{m}-tokens"})() for m in "ab"}

    def blank(self, methods) -> dict:
        return {name: "" for name in self.components()}

    def components(self) -> list:
        return ["status", "a-answer", "a-tokens", "b-answer", "b-tokens"]


def _sent(values: list) -> dict:
    return dict(zip(_Outputs().components(), values, strict=True))


def test_each_columns_final_text_goes_out_with_its_report():
    updates = Updates(_Outputs(), files=None, images=None, methods=["a", "b"], interval=0.05)

    def events():
        text = {"a": "", "b": ""}
        for _ in range(200):
            time.sleep(0.001)
            for m in "ab":
                text[m] += "x"
                yield AnswerDelta(m, text[m])
        for m in "ab":
            yield MethodDone(MethodReport(method=m, label=m, answer=text[m] + "."))

    sent = [_sent(values) for values in updates.stream(events(), "q", None)]
    assert sent[-1]["a-answer"] == "x" * 200 + "." and sent[-1]["b-answer"] == "x" * 200 + "."
    assert len(sent) <= 200 * 0.001 / 0.05 + 4


def test_a_failure_stays_in_the_status_and_each_column_that_did_not_finish_says_why():
    updates = Updates(_Outputs(), files=None, images=None, methods=["a", "b"], interval=0.0)

    def events():
        yield Progress("answer", 0.5, "Answering…")
        yield MethodDone(MethodReport(method="a", label="a", answer="A red ball."))
        yield AnswerDelta("b", "A bl")
        raise media.VideoError("The video stopped.")

    with pytest.raises(media.VideoError):
        for values in updates.stream(events(), "q", None):
            assert _sent(values)["status"] == "Answering…"
    final = _sent(updates.failed("The video stopped."))
    assert final["status"] == "⚠️ The video stopped."
    assert final["a-answer"] == "A red ball." and final["b-answer"] == "Not run: The video stopped."


def test_a_failed_column_says_its_error_once():
    updates = Updates(_Outputs(), files=None, images=None, methods=["a"])
    updates.column_done(MethodReport(method="a", label="a", error="The budget is too small for a."))
    shown = _sent(updates.values())
    assert shown["a-answer"] == "⚠️ The budget is too small for a." and shown["a-tokens"] == ""


# --- per-request scratch folders --------------------------------------------------------------------------


def test_no_request_deletes_another_requests_folder_before_its_time():
    clock = type("Clock", (), {"now": 0.0, "__call__": lambda self: self.now})()
    scratch = ScratchDirs("arena-test-", ttl_s=3600, max_mb=1, min_age_s=600, clock=clock)
    try:
        mine = scratch.new()
        (mine / "video.mp4").write_bytes(b"\0" * (2 << 20))  # over the byte cap on its own
        for minute in range(1, 10):
            clock.now = minute * 60
            scratch.new()  # others' requests, within 10 minutes
        assert mine.is_dir()
        clock.now = 11 * 60  # past the minimum age, over the cap: the oldest goes first
        scratch.new()
        assert not mine.exists()
        clock.now = 2 * 3600  # past the lifetime: every old folder goes
        newest = scratch.new()
        assert [folder for _, folder in scratch.dirs] == [newest]
    finally:
        scratch.clear()
    assert not newest.exists()


def test_scratch_folders_are_removed_on_sigterm(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, sys, tempfile
        sys.path.insert(0, {str(ROOT)!r})
        tempfile.tempdir = {str(tmp_path)!r}
        from ui.scratch import ScratchDirs, remove_on_sigterm
        folders = [ScratchDirs("arena-a-").new(), ScratchDirs("arena-b-").new()]
        (folders[0] / "card.json").write_text("{{}}")
        remove_on_sigterm()
        print("ready", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "ready" and run.returncode == 128 + signal.SIGTERM, run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_app_removes_its_scratch_folders_when_the_space_stops_it(tmp_path):
    """``python app.py`` stopped with SIGTERM (as a Space is stopped) leaves no scratch folder behind."""
    from gradio_client import Client, handle_file

    from tests.app_server import free_port
    from tests.videos import make_clip
    from ui.inputs import page_args

    clip = make_clip(tmp_path / "clip.mp4", seconds=2, fps=4, size=(64, 48))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(scratch), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "app.py", "--port", str(port), "--backbone", "tiny-random"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        client = _connect(Client, f"http://127.0.0.1:{port}/")
        args = page_args(
            video=handle_file(str(clip)), question="What?", methods=["uniform"], max_new_tokens=1
        )
        client.predict(*args, api_name="/compare_page")
        assert list(scratch.glob("arena-out-*")), "the comparison wrote its run card and frames"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) != 0
    finally:
        process.kill()
    assert not list(scratch.glob("arena-*"))


def _connect(client_class, url: str):
    import time

    deadline = time.monotonic() + 180
    while True:
        try:
            return client_class(url, verbose=False)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# --- what the page offers ---------------------------------------------------------------------------------


def test_a_column_with_weights_of_its_own_is_offered_only_where_this_machine_can_run_it(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from pipeline.columns import COLUMNS
    from ui import inputs

    own = [m for m, c in COLUMNS.items() if c.info.needs_hub]
    shared = [m for m in COLUMNS if m not in own]
    assert own, "a column with weights of its own"

    def offered(*, gpu: bool, offline: bool, downloaded: bool = False) -> list[str]:
        monkeypatch.setattr(inputs.torch.cuda, "is_available", lambda: gpu)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        cached = "/cache/config.json" if downloaded else None
        monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: cached)
        return inputs.offered_columns()

    assert offered(gpu=False, offline=False) == shared  # CPU only: not offered, whatever the Hub
    assert offered(gpu=True, offline=True) == shared  # a GPU, but no weights within reach
    assert offered(gpu=True, offline=False) == list(COLUMNS)
    assert offered(gpu=True, offline=True, downloaded=True) == list(COLUMNS)
    monkeypatch.setattr(inputs.authors, "servable", lambda name: False)  # ZeroGPU: none placed at start-up
    assert offered(gpu=True, offline=False) == shared


# --- run cards opened without running ------------------------------------------------------------------


def test_a_shared_card_names_only_an_example_clip_and_its_text_stays_text(tmp_path):
    import json

    from ui import cards

    path, card = cards.shared_cards()[0]
    assert cards.example_clip(card).name == card["video"]["file_name"]
    for name in ("../../app.py", "/etc/passwd", 7, None):
        assert cards.example_clip({**card, "video": {**card["video"], "file_name": name}}) is None
    assert cards.plain("![x](http://evil/p.png) <b>hi</b>") == r"\!\[x\]\(http://evil/p\.png\) \<b\>hi\</b\>"
    (tmp_path / "bad.json").write_text(json.dumps({**card, "results": []}))
    (tmp_path / "good.json").write_text(path.read_text())
    assert [p.name for p, _ in cards.shared_cards(tmp_path)] == ["good.json"]
