"""The GPU part run as ZeroGPU runs it: in a forked process whose memory vanishes after each request.

The encoded tokens computed in the fork come back to the caller's process, so a follow-up question reuses
them (a fork inherits the caller's caches) instead of encoding the video again.
"""

import multiprocessing
import sys

import pytest
import torch

from pipeline import compare as pc
from pipeline.cache import clear_caches
from pipeline.settings import Settings
from tests.videos import make_clip

SETTINGS = Settings.for_backbone("tiny-random", budget=48, max_frames=16, fps=4.0, max_new_tokens=3)
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork start method")


def forked_runner(prepared, question, settings):
    """``run_methods`` in a forked child; its events come back pickled through a queue, as on ZeroGPU."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        torch.set_num_threads(1)
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


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("zerogpu") / "clip.mp4", seconds=4, fps=8, size=(128, 96))


def _encoded(events):
    return next(e for e in events if isinstance(e, pc.Encoded))


def test_tokens_encoded_in_the_fork_are_kept_by_the_caller_and_reused_by_a_follow_up(clip):
    clear_caches()
    first = list(pc.compare(clip, "What is shown?", settings=SETTINGS, runner=forked_runner))
    assert _encoded(first).fresh is not None, "the first request encodes the video"
    assert len(pc.TOKEN_CACHE) == 1, "the caller keeps what the fork encoded"
    follow_up = list(pc.compare(clip, "What happens next?", settings=SETTINGS, runner=forked_runner))
    assert _encoded(follow_up).fresh is None, "the follow-up finds the tokens in the inherited cache"
    in_process = list(pc.compare(clip, "What happens next?", settings=SETTINGS))
    assert {m: r.answer for m, r in follow_up[-1].reports.items()} == {
        m: r.answer for m, r in in_process[-1].reports.items()
    }
