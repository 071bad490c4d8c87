"""Faults inside the running app (driven through gradio_client): each becomes one sentence, and the page lives on.

The app runs in this process, so a test breaks one piece of it with monkeypatch (a compressor, the shared
encoder, the video reader) and then checks what a visitor gets back, and that the next comparison works.
"""

import json
import logging
import weakref
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import app
import compressors
import media
from bench.load import local_app
from pipeline import compare as pc
from pipeline.limits import AppSettings
from pipeline.settings import COLUMNS, METHODS
from tests.videos import make_clip

pytestmark = pytest.mark.slow
MB = 1 << 20
CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 400000000000000 bytes. Error code 12 (Cannot allocate memory)"
)


@pytest.fixture(scope="module")
def client():
    with local_app(AppSettings()) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("faults") / "clip.mp4", seconds=4, fps=8, size=(128, 96))


def _compare(client, clip, **settings) -> dict:
    kwargs = {"budget": 48, "max_frames": 8, "fps": 2, "max_new_tokens": 2, **settings}
    result = client.predict(
        video=handle_file(str(clip)), url="", question="What is shown?", api_name="/compare", **kwargs
    )
    status, _tokens, _timeline, _timings, card, *columns = result
    answers = {m: columns[4 * i] for i, m in enumerate(COLUMNS)}
    return {"status": status, "card": json.loads(Path(card).read_text()), "answers": answers}


def _answered(out: dict, methods) -> bool:
    return all(out["answers"][m] and not out["answers"][m].startswith("⚠️") for m in methods)


def _is_one_sentence(message: str) -> bool:
    text = message.strip()
    return bool(text) and "\n" not in text and "Traceback" not in text and text.endswith(".")


def test_a_method_that_raises_leaves_the_other_columns_answered(client, clip, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("injected failure in xcomp\nsecond line of detail")

    monkeypatch.setattr(compressors.COMPRESSORS["xcomp"], "compress", broken)
    out = _compare(client, clip)
    assert out["status"].startswith("Done")
    assert out["answers"]["xcomp"] == "⚠️ RuntimeError: injected failure in xcomp"
    assert _answered(out, [m for m in METHODS if m != "xcomp"])
    assert out["card"]["results"]["xcomp"]["error"] == "RuntimeError: injected failure in xcomp"
    monkeypatch.undo()
    assert _answered(_compare(client, clip), METHODS)


def test_out_of_memory_in_one_method_is_one_sentence_in_its_column_and_its_memory_is_freed(
    client, clip, monkeypatch
):
    held = []

    def greedy(self, *args, **kwargs):
        block = torch.ones(64 * MB // 4)  # 64 MB the method had taken when memory ran out
        held.append(weakref.ref(block))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(compressors.COMPRESSORS["tempo"], "compress", greedy)
    out = _compare(client, clip)
    assert out["answers"]["tempo"] == "⚠️ " + app.OUT_OF_MEMORY
    assert "lower the token budget or the max frames" in app.OUT_OF_MEMORY
    assert _answered(out, [m for m in METHODS if m != "tempo"])
    assert len(held) == 1 and held[0]() is None


@pytest.mark.parametrize(
    "error",
    [
        lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        lambda: RuntimeError(CPU_OOM),
    ],
    ids=["cuda", "cpu-allocator"],
)
def test_out_of_memory_in_the_shared_encoding_is_one_sentence_and_memory_is_freed_first(
    client, clip, monkeypatch, error
):
    held, freed_after_release = [], []

    def encode_out_of_memory(backbone, prepared, settings):
        block = torch.ones(64 * MB // 4)
        held.append(weakref.ref(block))
        raise error()  # a new exception each time, as in life (one kept by the test would keep its traceback)

    real_free = pc.free_memory

    def spy():
        freed_after_release.append(held[0]() is None)  # the traceback no longer holds the block
        real_free()

    monkeypatch.setattr(pc, "_encode", encode_out_of_memory)
    monkeypatch.setattr(pc, "free_memory", spy)
    with pytest.raises(AppError) as err:
        _compare(client, clip)
    assert str(err.value) == app.OUT_OF_MEMORY
    assert freed_after_release == [True]
    monkeypatch.undo()
    assert _answered(_compare(client, clip), METHODS)


def test_a_backbone_that_cannot_load_is_one_sentence_and_the_next_comparison_on_tiny_random_works(
    client, clip
):
    with pytest.raises(AppError) as err:
        _compare(client, clip, backbone="qwen3vl-2b")  # offline here: its weights cannot be fetched
    message = str(err.value)
    assert _is_one_sentence(message) and "'qwen3vl-2b'" in message and "tiny-random" in message
    defaults = client.predict("qwen3vl-2b", api_name="/defaults")  # the page still follows the dropdown
    assert defaults[0]["value"] == 4096
    assert _answered(_compare(client, clip, backbone="tiny-random"), METHODS)


def test_an_unexpected_error_is_one_sentence_without_internals_and_is_logged(
    client, clip, monkeypatch, caplog
):
    def broken_probe(path, **kwargs):
        raise ZeroDivisionError("internal detail at /srv/secret/path")

    monkeypatch.setattr(media, "probe", broken_probe)
    with caplog.at_level(logging.ERROR, logger="arena"), pytest.raises(AppError) as err:
        _compare(client, clip)
    message = str(err.value)
    assert message == app.UNEXPECTED.format(name="ZeroDivisionError") and _is_one_sentence(message)
    assert "secret" not in message
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    monkeypatch.undo()
    assert _answered(_compare(client, clip), METHODS)


def test_an_unexpected_error_while_cutting_kept_moments_is_one_sentence(client, clip, monkeypatch):
    _compare(client, clip, methods=["uniform"])

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "/tmp/arena-out-x/kept-moments-uniform.mp4")

    monkeypatch.setattr(app, "export_moments", disk_full)
    with pytest.raises(AppError) as err:
        client.predict(api_name="/moments_uniform")
    assert str(err.value) == app.UNEXPECTED.format(name="OSError")


def test_handlers_raise_only_gr_errors():
    """Every event handler of the page goes through the edge (the moments lambdas call one that does)."""
    for handler in (app.compare, app.rerun_card, app.kept_moments, app.backbone_defaults):
        assert handler.__wrapped__ is not None
    with pytest.raises(app.gr.Error, match="(?i)unknown backbone .no-such-backbone"):
        app.backbone_defaults("no-such-backbone")
