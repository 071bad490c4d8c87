"""Arrays handed to the GPU worker by file (``pipeline.handoff``): pickled as a path, mapped read-only."""

import gc
import multiprocessing
import pickle
import weakref
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest

from pipeline import handoff


def test_an_array_pickles_as_its_file_and_reads_back_equal(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 90, 160, 3), dtype=np.uint8)
    mapped = handoff.to_file(pixels, folder=tmp_path)
    data = ForkingPickler.dumps(mapped)
    assert len(data) < 1000 < pixels.nbytes
    back = pickle.loads(data)
    assert isinstance(back, np.ndarray) and np.array_equal(back, pixels)
    assert not back.flags.writeable, "the worker maps the caller's file read-only"
    with pytest.raises(ValueError):
        back[0, 0, 0, 0] = 1


def test_views_and_computed_arrays_pickle_by_value(tmp_path):
    mapped = handoff.to_file(np.arange(24, dtype=np.int64).reshape(4, 6), folder=tmp_path)
    for derived in (mapped[1:3], mapped * 2):
        assert np.array_equal(pickle.loads(pickle.dumps(derived)), np.asarray(derived))


def test_the_file_goes_with_the_last_array_of_it_but_not_when_a_fork_runs_its_finalizers(tmp_path):
    mapped = handoff.to_file(np.ones((8, 8), dtype=np.uint8), folder=tmp_path)
    path = mapped.path
    child = multiprocessing.get_context("fork").Process(target=_run_finalizers)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0 and path.exists(), "a fork running its inherited finalizers leaves the file"
    view = mapped[:2]
    del mapped
    gc.collect()
    assert path.exists(), "a view keeps the file"
    del view
    gc.collect()
    assert not path.exists()


def _run_finalizers():
    weakref.finalize._exitfunc()  # what a forked worker's exit would run: every inherited finalizer


def test_a_mismatched_file_is_refused(tmp_path):
    mapped = handoff.to_file(np.zeros((2, 3), dtype=np.float32), folder=tmp_path)
    with pytest.raises(ValueError, match="expected"):
        handoff.open_file(mapped.path, (3, 2), mapped.dtype.str)


def test_the_folder_is_in_shared_memory_only_with_room_to_spare(monkeypatch, tmp_path):
    monkeypatch.setattr(handoff, "_has_room", lambda root, nbytes: False)
    assert handoff.handoff_folder(10).parent != handoff.SHM


def test_tempo_6bs_own_frames_reach_the_gpu_call_as_a_file_too(tmp_path):
    import media
    from pipeline.official import sample_own_frames
    from tests.videos import make_clip

    clip = make_clip(tmp_path / "clip.mp4", seconds=4, fps=8, size=(320, 192))
    own = sample_own_frames(clip, media.probe(clip), media.Limits())
    assert own.error is None and len(own.frames) == 8
    assert len(ForkingPickler.dumps(own)) < 4000 < own.frames.frames.nbytes
