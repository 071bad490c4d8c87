"""The Gradio Space: layout, event wiring, and gr.Error at the edge. ``python app.py`` launches it."""

from __future__ import annotations

import argparse

import gradio as gr


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Long-Video Token Compression Arena") as demo:
        gr.Markdown("# Long-Video Token Compression Arena\nThe comparison page is being built.")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    build_demo().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
