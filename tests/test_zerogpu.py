"""The GPU part run as ZeroGPU runs it: in a forked process whose memory vanishes after each request.

The encoded tokens computed in the fork come back to the caller's process, so a follow-up question reuses
them (a fork inherits the caller's caches) instead of encoding the video again. The scenario runs in a fresh
interpreter with one torch thread: forking a process whose OpenMP pool has run can hang the child.
"""

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from tests.videos import make_clip

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork start method")


def forked_runner(prepared, question, settings):
    """``run_methods`` in a forked child; its events come back pickled through a queue, as on ZeroGPU."""
    from pipeline import compare as pc

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            for event in pc.run_methods(prepared, question, settings):
                queue.put(event)
        finally:
            queue.put(None)

    process = ctx.Process(target=child, daemon=True)
    process.start()
    try:
        while (event := queue.get(timeout=120)) is not None:
            yield event
    finally:
        process.join(timeout=30)


def scenario(clip: str) -> dict:
    """A first question and a follow-up through forked runners, and the follow-up in process."""
    import torch

    torch.set_num_threads(1)
    from pipeline import compare as pc
    from pipeline.settings import Settings

    settings = Settings.for_backbone("tiny-random", budget=48, max_frames=16, fps=4.0, max_new_tokens=3)

    def run(question, runner=None):
        events = list(pc.compare(clip, question, settings=settings, runner=runner))
        encoded = next(e for e in events if isinstance(e, pc.Encoded))
        return encoded.fresh is not None, {m: r.answer for m, r in events[-1].reports.items()}

    first_fresh, _ = run("What is shown?", forked_runner)
    kept = len(pc.TOKEN_CACHE)
    follow_fresh, follow_answers = run("What happens next?", forked_runner)
    _, in_process = run("What happens next?")
    return {
        "first_fresh": first_fresh,
        "kept": kept,
        "follow_fresh": follow_fresh,
        "same": follow_answers == in_process,
    }


def test_tokens_encoded_in_the_fork_are_kept_by_the_caller_and_reused_by_a_follow_up(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=4, fps=8, size=(128, 96))
    code = f"import json; from tests.test_zerogpu import scenario; print(json.dumps(scenario({str(clip)!r})))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["first_fresh"], f"the first request encodes the video: {result}"
    assert result["kept"] == 1, f"the caller keeps what the fork encoded: {result}"
    assert not result["follow_fresh"], f"the follow-up finds the tokens in the inherited cache: {result}"
    assert result["same"], f"answers through the fork equal those in process: {result}"
