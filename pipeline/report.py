"""Turning method reports into what people read: token summaries, tables, the segment timeline, galleries.

Pure data in, plain text / pandas / matplotlib out, so the UI only places them and tests can check them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from pipeline.events import MethodReport
from pipeline.video import PreparedVideo

GALLERY_LIMIT = 48  # kept frames shown per column; evenly chosen when a method keeps more


def token_summary(report: MethodReport) -> str:
    """One Markdown line: raw → into the LLM, tokens per frame, compression ratio (+ XComp's last layer)."""
    if report.error:
        return f"**Failed:** {report.error}"
    t = report.tokens
    if "llm_input" not in t or "per_frame" not in t:
        return ""
    text = (
        f"**{t['raw']:,} → {t['llm_input']:,}** visual tokens · {t['per_frame']:g} per frame · "
        f"{t['ratio']:g}× compression · {len(report.kept_frames)} frames kept"
    )
    if "last_layer" in t:
        text += f" · {t['last_layer']:,} at the last layer (mean {t['mean_per_layer']:g} per layer)"
    own = report.extra
    if "frames" in own and "shared_frames" in own:  # a column that samples its own frames
        text += f" · its own {own['frames']:,} frames ({own['fps']:g} fps)"
        text += f" beside the shared {own['shared_frames']:,}"
    if own.get("notes"):  # where this run departed from its authors' flow
        text += " · " + "; ".join(own["notes"])
    text += f" · {report.extra['stages_summary']}" if "stages_summary" in report.extra else ""
    return text


def gallery_frames(prepared: PreparedVideo, report: MethodReport, limit: int = GALLERY_LIMIT) -> list:
    """(position in the sampled frames, caption) of the kept frames in temporal order, at most ``limit``."""
    kept = report.kept
    if len(kept) > limit:
        kept = [kept[i] for i in np.linspace(0, len(kept) - 1, limit).round().astype(int)]
    refs = [prepared.frame_ref(p) for p in kept]
    return [
        (p, f"{ref['timestamp']:.1f} s · frame {ref['index']}") for p, ref in zip(kept, refs, strict=True)
    ]


def tokens_frame(reports: Mapping[str, MethodReport]) -> pd.DataFrame:
    """Bars for the token chart: the raw video once, then each method's tokens into the LLM (and XComp's
    tokens at the last layer), with ``kind`` to colour them."""
    rows = []
    for method, r in reports.items():
        if r.error or "llm_input" not in r.tokens:
            continue
        if not rows:
            rows.append({"bar": "raw video", "kind": "raw", "tokens": r.tokens["raw"]})
        rows.append({"bar": method, "kind": "into the LLM", "tokens": r.tokens["llm_input"]})
        if "last_layer" in r.tokens:
            rows.append(
                {"bar": f"{method} · last layer", "kind": "last layer", "tokens": r.tokens["last_layer"]}
            )
    return pd.DataFrame(rows, columns=["bar", "kind", "tokens"])


#: The timings table's columns: model time per method (the video's decode and encode are shared by all),
#: page time (preparing images, charts and the run card for the page), memory, what came from the caches.
TIMINGS_COLUMNS = [
    "method",
    "kind",
    "decode s",
    "encode s",
    "compress s",
    "prefill s",
    "answer s",
    "page s",
    "memory MB",
    "memory kind",
    "from caches",
]


def timings_frame(
    reports: Mapping[str, MethodReport], shared: Mapping[str, float], *, page_s: float | None = None
) -> pd.DataFrame:
    """One "model" row per method: the shared decode/encode seconds, its own compress, prefill and answer
    seconds (answer = prefill + its decode steps), what it took from the caches (a follow-up is faster partly
    because of them), memory; then, when ``page_s`` is given, one "page" row: the seconds spent turning the
    results into what the page shows (images, charts, run card), which is no model's time."""
    rows = []
    for method, r in reports.items():
        memory = r.memory.get("peak_mb", r.memory.get("rss_mb"))
        rows.append(
            {
                "method": method,
                "kind": "model",
                "decode s": _s(shared.get("decode")),
                "encode s": _s(shared.get("encode")),
                "compress s": _s(r.timings.get("compress")),
                "prefill s": _s(r.timings.get("prefill")),
                "answer s": _s(r.timings.get("answer")),
                "memory MB": memory,
                "memory kind": "peak GPU" if "peak_mb" in r.memory else "process RSS",
                "from caches": ", ".join(r.timings.get("reused", [])) or "–",
            }
        )
    if page_s is not None:
        rows.append({"method": "page", "kind": "page", "page s": _s(page_s), "from caches": "–"})
    return pd.DataFrame(rows, columns=TIMINGS_COLUMNS)


def _s(value) -> float | None:
    return None if value is None else round(float(value), 3)


def timeline_figure(reports: Mapping[str, MethodReport]):
    """Per method, a row over the video's time: tokens given to each segment (bars), relevance (line),
    and the kept frames (ticks).

    A bare ``Figure`` (no pyplot: no global figure registry, safe from several threads) with fixed margins:
    ``tight_layout`` measured the text of every row again and cost more than everything else on the page.
    """
    from matplotlib.figure import Figure

    shown = [r for r in reports.values() if not r.error]
    rows = max(1, len(shown))
    height = 0.3 + 1.4 * rows + 0.5  # inches: top margin, one row each, the time axis
    fig = Figure(figsize=(10, height))
    fig.subplots_adjust(left=0.13, right=0.95, top=1 - 0.3 / height, bottom=0.5 / height, hspace=0.35)
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True))
    for ax, r in zip(axes, shown, strict=False):
        _timeline_row(ax, r)
    axes[-1].set_xlabel("time (s)")
    return fig


def _timeline_row(ax, report: MethodReport) -> None:
    starts = [s["start"] for s in report.segments]
    widths = [max(s["end"] - s["start"], 0.1) for s in report.segments]
    tokens = [s["tokens"] or 0 for s in report.segments]
    ax.bar(starts, tokens, width=widths, align="edge", color="#7aa6d6", label="tokens")
    ax.set_ylabel(report.method, rotation=0, ha="right", va="center")
    kept_t = [f["timestamp"] for f in report.kept_frames]
    top = max(tokens + [1])
    ax.plot(kept_t, [top * 1.05] * len(kept_t), "|", color="#d65f5f", markersize=8, label="kept frames")
    scores = [s["score"] for s in report.segments]
    if any(s is not None for s in scores):
        twin = ax.twinx()
        centres = [s + w / 2 for s, w in zip(starts, widths, strict=True)]
        twin.plot(centres, [s if s is not None else np.nan for s in scores], "o-", color="#e0a030", ms=3)
        twin.set_ylim(0, 1)
        twin.set_yticks([0, 1])
