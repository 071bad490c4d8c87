"""Every column says where it departs from its paper, with the reason, in one place a visitor reads: the text
the page shows with the column (``ColumnInfo.about``) is word for word its row in the README's "How each column
differs from its paper"."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.columns import COLUMNS

README = Path(__file__).resolve().parents[1] / "README.md"


def departures_section() -> str:
    text = README.read_text()
    start = text.index("## How each column differs from its paper")
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.parametrize("name", list(COLUMNS))
def test_the_page_and_the_readme_say_the_same_about_each_column(name):
    about = COLUMNS[name].info.about
    assert f"| `{name}` | {about} |" in departures_section().splitlines()
    assert "arXiv" in about or about.startswith("Baseline, no paper"), (
        "it names its paper, or says it has none"
    )


def test_no_column_row_is_left_without_a_column_or_a_column_without_a_row():
    rows = [line for line in departures_section().splitlines() if line.startswith("| `")]
    named = [row.split("`")[1] for row in rows]
    assert named == list(COLUMNS)
