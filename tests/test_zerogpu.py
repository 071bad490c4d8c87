"""The GPU part run as ZeroGPU runs it: in a forked process whose memory vanishes after each request.

The encoded tokens, Tempo's relevance scores and the question-independent compressions computed in the fork
come back to the caller's process (``Encoded.fresh``, ``Computed``), so a follow-up question, or the same
question with another budget, reuses them (a fork inherits the caller's caches) instead of computing them
again. The scenario runs in a fresh
interpreter with one torch thread: forking a process whose OpenMP pool has run can hang the child.
"""

import dataclasses
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from tests.videos import make_clip

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork start method")


def forked_runner(job):
    """``run_methods`` in a forked child; its events come back pickled through a queue, as on ZeroGPU.

    torch pickles a CPU tensor as a file descriptor of shared memory that the parent fetches from the child
    when it unpickles, so the child waits until the parent has read every event before it exits (else a
    tensor sent last, e.g. in ``Computed``, can no longer be fetched).
    """
    from pipeline.compare import run_methods

    ctx = multiprocessing.get_context("fork")
    queue, received = ctx.Queue(), ctx.Event()

    def child():
        try:
            for event in run_methods(job):
                queue.put(event)
        finally:
            queue.put(None)
            received.wait(timeout=120)

    process = ctx.Process(target=child, daemon=True)
    process.start()
    try:
        while (event := queue.get(timeout=120)) is not None:
            yield event
    finally:
        received.set()
        process.join(timeout=30)


def scenario(clip: str) -> dict:
    """A first question and a follow-up through forked runners, and the follow-up in process."""
    import torch

    torch.set_num_threads(1)
    from pipeline import cache
    from pipeline import events as ev
    from pipeline.compare import compare
    from pipeline.request import Request
    from pipeline.settings import Settings

    settings = Settings.for_backbone("tiny-random", budget=48, max_frames=16, fps=4.0, max_new_tokens=3)

    def run(question, runner=None, budget=48):
        events = list(
            compare(Request(clip, question, dataclasses.replace(settings, budget=budget)), runner=runner)
        )
        encoded = next(e for e in events if isinstance(e, ev.Encoded))
        computed = [name for e in events if isinstance(e, ev.Computed) for name, _, _ in e.entries]
        return encoded.fresh is not None, computed, {m: r.answer for m, r in events[-1].reports.items()}

    first_fresh, first_computed, _ = run("What is shown?", forked_runner)
    kept = {
        "tokens": len(cache.TOKENS),
        "relevance": len(cache.RELEVANCE),
        "compressions": len(cache.COMPRESSIONS),
    }
    _, rebudget_computed, _ = run("What is shown?", forked_runner, budget=40)
    follow_fresh, _, follow_answers = run("What happens next?", forked_runner)
    _, _, in_process = run("What happens next?")
    return {
        "first_fresh": first_fresh,
        "first_computed": sorted(set(first_computed)),
        "kept": kept,
        "rebudget_computed": sorted(set(rebudget_computed)),
        "follow_fresh": follow_fresh,
        "same": follow_answers == in_process,
    }


def test_what_the_fork_computes_is_kept_by_the_caller_and_reused_by_later_requests(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=4, fps=8, size=(128, 96))
    code = f"import json; from tests.test_zerogpu import scenario; print(json.dumps(scenario({str(clip)!r})))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["first_fresh"], f"the first request encodes the video: {result}"
    assert result["first_computed"] == ["compressions", "relevance"], f"the fork hands both back: {result}"
    assert result["kept"] == {"tokens": 1, "relevance": 1, "compressions": 3}, (
        f"the caller keeps them: {result}"
    )
    assert result["rebudget_computed"] == ["compressions"], (
        f"another budget reuses Tempo's relevance from the caller's cache, compresses anew: {result}"
    )
    assert not result["follow_fresh"], f"the follow-up finds the tokens in the inherited cache: {result}"
    assert result["same"], f"answers through the fork equal those in process: {result}"
