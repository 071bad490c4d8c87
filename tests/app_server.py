"""Launch the real app in-process on 127.0.0.1 for client and browser tests."""

from __future__ import annotations

import socket
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(backbone: str = "tiny-random", settings=None):
    """Yield the base URL of the app (tiny backbone, the Space's default limits) and close it afterwards."""
    import app
    from pipeline.limits import AppSettings

    port = free_port()
    demo = app.launch(
        settings or AppSettings(), backbone=backbone, port=port, prevent_thread_lock=True, quiet=True
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
