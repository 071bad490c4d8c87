"""The Gradio Space: ``demo`` is the page, ``python app.py`` serves it within the Space's limits.

The page itself lives in ``ui`` (components and handlers as one ``ui.page.Page``, the edge where failures
become sentences, event-to-update streaming); everything below is gradio-free (``pipeline``, ``media``,
``model_zoo``, ``compressors``). The GPU part of a comparison is ``pipeline.compare.run_on_gpu``, under
``spaces.GPU`` for ZeroGPU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr
import spaces  # ZeroGPU: imported before anything initialises CUDA (importing torch does not)
import torch

import model_zoo
from pipeline import authors
from pipeline.cache import configure_caches
from pipeline.columns import COLUMNS
from pipeline.limits import AppSettings
from ui.page import Page
from ui.scratch import remove_on_sigterm
from ui.widgets import CSS

ROOT = Path(__file__).parent
DEFAULT_BACKBONE = model_zoo.GPU_DEFAULT if torch.cuda.is_available() else model_zoo.TINY


def examples() -> list[list]:
    """The generated example clips with their questions (made on first use, never committed)."""
    from examples import make_examples

    return make_examples.gallery_rows(ROOT / "examples")


def build_demo(settings: AppSettings | None = None, backbone: str = DEFAULT_BACKBONE) -> gr.Blocks:
    """The page, its handlers applying ``settings`` (default ``AppSettings()``, the Space's limits)."""
    return Page(settings or AppSettings(), backbone, examples()).build()


def launch(
    settings: AppSettings,
    *,
    backbone: str = DEFAULT_BACKBONE,
    host: str = "127.0.0.1",
    port: int | None = None,
    **launch_kwargs,
) -> gr.Blocks:
    """Build the page and serve it within ``settings``: queue size, concurrency and Gradio's upload cap. The
    app is also an MCP server (``/gradio_api/mcp/``): its tools are the documented endpoints, ``compare``
    and ``kept_moments``."""
    configure_caches(settings.cache_settings())
    model_zoo.set_max_resident(settings.max_backbones)
    demo = build_demo(settings, backbone)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=settings.max_upload_bytes,
        mcp_server=True,
        css=CSS,
        **launch_kwargs,
    )
    return demo


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, AppSettings]:
    """The command line: where to serve, which backbone, and the limits (``AppSettings``'s flags)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=model_zoo.list_backbones())
    own = [name for name, column in COLUMNS.items() if column.own_variant]
    parser.add_argument(
        "--official-columns",
        nargs="*",
        default=[],
        choices=own,
        metavar="NAME",
        help=f"on ZeroGPU, the columns with the authors' weights to load at start-up ({', '.join(own)}); "
        "only those are offered there (default: none)",
    )
    # the platform's own variables (Hugging Face Spaces sets GRADIO_SERVER_NAME), not settings of ours
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    AppSettings.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args, AppSettings.from_args(args)
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> None:
    args, settings = parse_args(argv)
    print("Limits: " + ", ".join(f"{flag} {value}" for flag, value, _ in settings.rows()), flush=True)
    if spaces.config.Config.zero_gpu:  # ZeroGPU: models placed at start-up, the page offers only those
        model_zoo.place_backbones([args.backbone])
        authors.place_columns(args.official_columns)
    remove_on_sigterm()  # a Space is stopped with SIGTERM: scratch folders go then too
    launch(settings, backbone=args.backbone, host=args.host, port=args.port)


#: The page with the Space's default limits (Gradio's and Spaces' convention); ``main`` serves its own.
demo = build_demo()

if __name__ == "__main__":
    main()
