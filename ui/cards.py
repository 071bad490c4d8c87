"""Run cards shown on the page without running anything: a card a visitor loads, and the gallery of shared
cards shipped with the Space (``examples/cards/``, made by ``examples/make_cards.py`` from the example clips).

A card is untrusted input wherever it comes from: ``runcard.load`` and ``pipeline.cardview`` check every
field before anything is drawn. Its kept frames are shown when its video is on this server (the example clip
a shared card names, by file name among the example clips only, or an upload with the card's fingerprint):
the frames are decoded with the card's settings, no model runs. "Re-run card" runs it again on demand.
"""

from __future__ import annotations

import logging
from pathlib import Path

from examples import make_examples
from pipeline import cardview, runcard
from pipeline import report as rp
from pipeline.request import Request
from pipeline.settings import SettingsError
from pipeline.video import PreparedVideo, content_fingerprint, prepare
from ui.updates import Updates

log = logging.getLogger("arena")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHARED_CARDS = EXAMPLES / "cards"
#: The shared cards' gallery: one row per card.
HEADERS = ["video", "question", "backbone"]


def shared_cards(folder: Path = SHARED_CARDS) -> list[tuple[Path, dict]]:
    """The shipped cards that pass the checks every card passes, in file-name order (others are logged)."""
    cards = []
    for path in sorted(folder.glob("*.json")):
        try:
            cards.append((path, runcard.load(path)))
        except (runcard.CardError, SettingsError) as err:
            log.warning("shared card %s left out: %s", path.name, err)
    return cards


def gallery_rows(cards: list[tuple[Path, dict]]) -> list[list[str]]:
    return [[video_name(c), c["question"][:200], runcard.settings_of(c).backbone] for _, c in cards]


def video_name(card: dict) -> str:
    """The card's video file name as a card says it (any text: shown, never used as a path)."""
    name = card["video"].get("file_name")
    return name[:80] if isinstance(name, str) and name.strip() else "its video"


def plain(text: str, limit: int = 200) -> str:
    """``text`` shown as typed inside Markdown (a card's text is not ours: no links, images or markup)."""
    text = " ".join(text.split())[:limit]
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|~" else c for c in text)


def example_clip(card: dict) -> Path | None:
    """The example clip a card was made from, named by its file name among the example clips only (never a
    path the card gives), made on first use; None for a card of another video."""
    name = card["video"].get("file_name")
    if name not in {example[0] for example in make_examples.EXAMPLES}:
        return None
    rows = make_examples.make_all(EXAMPLES / "clips")
    return next(path for path, _ in rows if path.name == name)


def own_video(card: dict, video: str | None) -> Path | None:
    """``video`` when it is the card's (its fingerprint), else None."""
    if video and content_fingerprint(Path(video)) == card["video"]["fingerprint"]:
        return Path(video)
    return None


def sampled(card: dict, video: Path, limits) -> PreparedVideo:
    """``video``'s frames as the card's run sampled them (decoding only; cached like a run's frames)."""
    request = Request(str(video), card["question"], runcard.settings_of(card), limits=limits)
    *_, prepared = prepare(request, None)
    return prepared


def show(updates: Updates, card: dict, prepared: PreparedVideo | None, folder: Path) -> list:
    """Every output showing ``card`` as it ran: answers, token accounts, charts, timings, the card, and the
    galleries when ``prepared`` (its video's frames) is given."""
    reports = cardview.reports_of(card, prepared)
    card_path = runcard.save(card, folder / f"run-card-{card['video']['fingerprint'][:10]}.json")
    updates.results(prepared, reports, folder, card_path)
    updates.view[updates.out.timings_table] = rp.timings_frame(reports, cardview.shared_timings(card))
    frames = "" if prepared else " Its kept frames show once its video is uploaded."
    return updates.say(
        f"Opened the run card: “{plain(card['question'])}” on {plain(video_name(card))} with "
        f"{runcard.settings_of(card).backbone}. Nothing was run; press Re-run card to run it again.{frames}"
    )
