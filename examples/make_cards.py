"""Make the shared run cards the page's gallery opens without running anything: one per example clip.

    python examples/make_cards.py [--backbone tiny-random] [DIR]

Each example clip (``make_examples.py``, made if missing) is compared with its question at the backbone's
default settings and its run card written to ``examples/cards/<clip>.json`` (committed: the Space ships them).
The cards in the repository were made on the ``tiny-random`` backbone, whose answers are noise; a machine
with a GPU makes real ones with ``--backbone qwen3vl-2b``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from examples.make_examples import make_all
from pipeline import runcard
from pipeline.compare import compare
from pipeline.events import Finished
from pipeline.request import Request
from pipeline.settings import Settings

HERE = Path(__file__).resolve().parent


def make_cards(out: Path, backbone: str) -> list[Path]:
    """One run card per example clip in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for clip, question in make_all(HERE / "clips"):
        settings = Settings(backbone=backbone)
        finished = [e for e in compare(Request(str(clip), question, settings)) if isinstance(e, Finished)]
        card = runcard.build(finished[-1], question, settings)
        written.append(runcard.save(card, out / f"{clip.stem}.json"))
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=HERE / "cards")
    parser.add_argument("--backbone", default="tiny-random")
    args = parser.parse_args()
    for path in make_cards(args.out, args.backbone):
        print(path)
