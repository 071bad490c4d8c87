"""Test-wide settings: no network beyond 127.0.0.1, no analytics, deterministic torch."""

import os
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the page's examples are cached on first use: each test session in a fresh folder, never a stale cache
os.environ.setdefault("GRADIO_EXAMPLES_CACHE", tempfile.mkdtemp(prefix="arena-examples-"))


# --- media: generated test videos and a local web server (helpers in tests/videos.py) ---
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def test_videos(tmp_path_factory):
    """tests.videos.VideoSet: `test_videos["h264.mp4"]` makes (once per session) and returns a small video."""
    from tests.videos import VideoSet

    return VideoSet(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="session")
def video_server(test_videos):
    """tests.videos.VideoServer on 127.0.0.1 serving clip.mp4 (4 s), long.mp4 (12 s) and big.mp4 (1.2 MB)."""
    from tests.videos import VideoServer, make_clip, write_video

    folder = test_videos.folder / "served"
    folder.mkdir(exist_ok=True)
    make_clip(folder / "clip.mp4", 4)
    make_clip(folder / "long.mp4", 12)
    write_video(folder / "big.mp4", 10, size=(320, 240), options={"crf": "0"}, draw=_noise)
    with VideoServer(folder) as server:
        yield server


@pytest.fixture(scope="session")
def hostile_server(test_videos):
    """tests.hostile.HostileServer on 127.0.0.1: compression bombs, odd codings, redirect chains (hostile suite)."""
    from tests.hostile import BOMB_BYTES, HostileServer, encode, gzip_stream
    from tests.videos import make_clip

    clip = make_clip(test_videos.folder / "hostile-clip.mp4", 2)
    with HostileServer(clip, encode(gzip_stream(BOMB_BYTES), ["gzip"])) as server:
        yield server


def _noise(index, width, height):
    import numpy as np

    return np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    the tiny model's small ops run many times faster than with two threads fighting for a loaded machine's
    cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- engine: the tiny backbone with sdpa attention, and a copy of it with eager attention ---


@pytest.fixture(scope="module")
def sdpa():
    """The cached ``tiny-random`` backbone (sdpa attention) on the CPU."""
    from model_zoo import TINY, load_backbone

    return load_backbone(TINY, device="cpu")


@pytest.fixture(scope="module")
def eager(sdpa):
    """A deep copy of the tiny backbone switched to eager attention (the cached one is left as it is)."""
    import copy

    from model_zoo import engine_layers

    backbone = copy.copy(sdpa)
    backbone.model = copy.deepcopy(sdpa.model)
    backbone.model.set_attn_implementation("eager")
    assert engine_layers.attention_implementation(backbone.model) == "eager"
    return backbone
