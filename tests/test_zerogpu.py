"""The GPU part run as ZeroGPU runs it: in a forked worker, its arguments and events pickled across.

``spaces`` forks a worker on a GPU's first call and reuses it while it stays idle; a busy or dead worker means
a fresh fork. The encoded tokens, Tempo's relevance scores and the question-independent compressions computed
in a worker come back to the caller's process (``Encoded.fresh``, ``Computed``), so a follow-up question, or
the same question with another budget, reuses them in the next fresh fork (which inherits the caller's
caches). The call's arguments stay small: the frames travel as a file reference (``pipeline.handoff``).
Scenarios run in a fresh interpreter with one torch thread: forking a process whose OpenMP pool has run can
hang the child.
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


class ReusedWorker:
    """A GPU worker as ``spaces`` 0.51 runs one (``spaces.zero.wrappers``): forked once, then reused for every
    call; each call's ``(args, kwargs)`` goes to it through ``spaces.utils.SimpleQueue`` (pickled by
    multiprocessing's ``ForkingPickler``, as ``arg_queue.put`` does) and its events come back the same way.
    ``sizes`` holds the pickled size of every call's arguments; ``pids`` the worker that ran each call."""

    def __init__(self) -> None:
        from spaces.utils import SimpleQueue

        self.calls, self.events = SimpleQueue(), SimpleQueue()
        self.sizes: list[int] = []
        self.pids: list[int] = []
        self.process = multiprocessing.get_context("fork").Process(target=self._serve, daemon=True)
        self.process.start()

    def _serve(self) -> None:
        import os

        from pipeline.compare import run_methods

        while (call := self.calls.get()) is not None:
            args, kwargs = call
            for event in run_methods(*args, **kwargs):
                self.events.put(event)
            self.events.put(os.getpid())

    def __call__(self, job):
        from multiprocessing.reduction import ForkingPickler

        call = ((job,), {})
        self.sizes.append(len(ForkingPickler.dumps(call)))
        self.calls.put(call)
        while not isinstance(event := self.events.get(), int):
            yield event
        self.pids.append(event)

    def close(self) -> None:
        self.calls.put(None)
        self.process.join(timeout=30)


def reused_worker_scenario(clip: str) -> dict:
    """Two calls through one reused worker (16 then 48 frames), each answered in process too."""
    import torch

    torch.set_num_threads(1)
    from multiprocessing.reduction import ForkingPickler

    import numpy as np

    from pipeline import events as ev
    from pipeline.compare import compare
    from pipeline.request import Job, Request
    from pipeline.settings import Settings

    worker, result = ReusedWorker(), {"same": [], "by_value": [], "frames": []}
    try:
        for frames in (16, 48):
            settings = Settings.for_backbone("tiny-random", max_frames=frames, fps=4.0, max_new_tokens=3)
            request = Request(clip, "What is shown?", settings)
            forked = list(compare(request, runner=worker))
            in_process = list(compare(request))
            answers = [{m: r.answer for m, r in e[-1].reports.items()} for e in (forked, in_process)]
            result["same"].append(answers[0] == answers[1] and all(answers[0].values()))
            prepared = forked[-1].prepared
            pixels = dataclasses.replace(prepared.frames, frames=np.asarray(prepared.frames.frames))
            by_value = Job(dataclasses.replace(prepared, frames=pixels), request.question, settings)
            result["by_value"].append(len(ForkingPickler.dumps(((by_value,), {}))))
            result["frames"].append(len(prepared.frames))
            result.setdefault("fresh", []).append(next(e for e in forked if isinstance(e, ev.Encoded)).fresh)
    finally:
        worker.close()
    result["fresh"] = [fresh is not None for fresh in result["fresh"]]
    return {**result, "sizes": worker.sizes, "pids": worker.pids}


def test_the_gpu_call_receives_a_file_reference_not_the_frames_and_its_worker_is_reused(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=12, fps=4, size=(320, 192))
    code = (
        "import json; from tests.test_zerogpu import reused_worker_scenario as s; "
        f"print(json.dumps(s({str(clip)!r})))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["frames"] == [16, 48], result
    assert result["same"] == [True, True], f"answers through the worker equal those in process: {result}"
    assert len(set(result["pids"])) == 1, f"one worker served both calls: {result}"
    assert max(result["sizes"]) < 16_000, f"the pickled call stays small: {result}"
    assert result["sizes"][1] - result["sizes"][0] < 32 * 100, f"and grows by bytes per frame: {result}"
    assert min(result["by_value"]) > 2_000_000, f"the frames by value would have been megabytes: {result}"
