"""Faults inside the running app (driven through gradio_client): each becomes one sentence, and the page lives on.

The app runs in this process, so a test breaks one piece of it with monkeypatch (a compressor, the shared
encoder, the video reader) and then checks what a visitor gets back, and that the next comparison works.
"""

import logging
import weakref

import gradio as gr
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import compressors
import media
from bench.load import local_app
from pipeline import cache, shared
from pipeline.accounting import OUT_OF_MEMORY
from pipeline.columns import DEFAULT_COLUMNS as METHODS
from pipeline.limits import AppSettings
from tests.videos import make_clip
from ui import edge, page
from ui.edge import UNEXPECTED

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
    """The typed ``/compare`` endpoint: the run card, and each column's answer as the page shows it."""
    kwargs = {"budget": 48, "max_frames": 8, "fps": 2, "max_new_tokens": 2, **settings}
    card = client.predict(
        question="What is shown?", video=handle_file(str(clip)), api_name="/compare", **kwargs
    )
    answers = {m: r["answer"] if not r["error"] else f"⚠️ {r['error']}" for m, r in card["results"].items()}
    return {"card": card, "answers": answers}


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
    assert list(out["card"]["results"]) == list(METHODS)
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
    assert out["answers"]["tempo"] == "⚠️ " + OUT_OF_MEMORY
    assert "lower the token budget or the max frames" in OUT_OF_MEMORY
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

    real_free = edge.free_memory

    def spy():
        freed_after_release.append(held[0]() is None)  # the traceback no longer holds the block
        real_free()

    monkeypatch.setattr(shared, "encode", encode_out_of_memory)
    monkeypatch.setattr(edge, "free_memory", spy)
    with pytest.raises(AppError) as err:
        _compare(client, clip)
    assert str(err.value) == OUT_OF_MEMORY
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
    assert _answered(_compare(client, clip, backbone="tiny-random"), METHODS)


def test_an_unexpected_error_is_one_sentence_without_internals_and_is_logged(
    client, clip, monkeypatch, caplog
):
    def broken_probe(path, **kwargs):
        raise ZeroDivisionError("internal detail at /srv/secret/path")

    monkeypatch.setattr(media, "probe", broken_probe)
    cache.clear_caches()  # the clip's probe is cached from the earlier tests: read it again
    with caplog.at_level(logging.ERROR, logger="arena"), pytest.raises(AppError) as err:
        _compare(client, clip)
    message = str(err.value)
    assert message == UNEXPECTED.format(name="ZeroDivisionError") and _is_one_sentence(message)
    assert "secret" not in message
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    monkeypatch.undo()
    assert _answered(_compare(client, clip), METHODS)


def test_an_unexpected_error_while_cutting_kept_moments_is_one_sentence(client, clip, monkeypatch):
    card = _compare(client, clip, methods=["uniform"])["card"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "/tmp/arena-out-x/kept-moments-uniform.mp4")

    monkeypatch.setattr(page, "export_moments", disk_full)
    with pytest.raises(AppError) as err:
        client.predict(method="uniform", card=card, video=handle_file(str(clip)), api_name="/kept_moments")
    assert str(err.value) == UNEXPECTED.format(name="OSError")


def test_handlers_raise_only_gr_errors():
    """Every event handler of the page goes through the edge, which turns a user error into its sentence."""
    built = page.Page(AppSettings(), "tiny-random")
    demo = built.build()
    handlers = [
        f.fn for f in demo.fns.values() if f.fn is not None and not f.fn.__module__.startswith("gradio")
    ]
    assert handlers and all(hasattr(fn, "__wrapped__") for fn in handlers), handlers
    with pytest.raises(gr.Error, match="(?i)unknown backbone .no-such-backbone"):
        edge.at_the_edge(built.backbone_defaults)("no-such-backbone")
