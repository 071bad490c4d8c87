"""The page in Debian's Chromium, driven by Playwright as a visitor would use it (tiny backbone).

Screenshots land in ``artifacts/screenshots/`` (ignored by git) for a human to look at.
"""

import shutil
from pathlib import Path

import pytest

from pipeline.columns import DEFAULT_COLUMNS as METHODS
from tests.app_server import running_app
from tests.videos import make_clip, write_garbage

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def page():
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_app() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1400})
        page.goto(url)
        page.wait_for_selector("#compare")
        yield page
        browser.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # 20 frames at the default 1 fps: more visual tokens than the tiny backbone's budget, so all compress
    return make_clip(tmp_path_factory.mktemp("browser") / "clip.mp4", seconds=20, fps=4, size=(128, 96))


def _upload(page, path: Path) -> None:
    page.locator("#video input[type=file]").set_input_files(str(path))


def _compare(page, question: str) -> None:
    page.locator("#question textarea").fill(question)
    page.locator("#compare").click()


def _answers_done(page) -> None:
    page.wait_for_function(
        "() => document.querySelector('#status') && document.querySelector('#status').innerText.includes('Done:')",
        timeout=180_000,
    )


def test_upload_ask_compare_shows_five_answers_with_token_counts_and_galleries(page, clip):
    _upload(page, clip)
    _compare(page, "What is shown in the video?")
    _answers_done(page)
    for method in METHODS:
        answer = page.locator(f"#answer-{method} textarea").input_value()
        assert answer.strip(), method
        tokens = page.locator(f"#tokens-{method}").inner_text()
        assert "→" in tokens and "per frame" in tokens, method
        page.locator(f"#gallery-{method} img").first.wait_for(timeout=10_000)
    assert "tiny-random" in page.locator("#tiny-banner").inner_text()
    page.screenshot(path=str(ARTIFACTS / "comparison.png"), full_page=True)


def test_a_garbage_file_shows_its_message_and_the_next_comparison_still_works(page, clip, tmp_path):
    garbage = write_garbage(tmp_path / "broken.mp4")
    page.locator("#video button[aria-label='Clear']").first.click()
    _upload(page, garbage)
    _compare(page, "What is shown?")
    toast = page.get_by_text("not a video", exact=False).first
    toast.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "garbage-file.png"), full_page=True)
    page.locator("#video button[aria-label='Clear']").first.click()
    _upload(page, clip)
    _compare(page, "And now?")
    _answers_done(page)
    assert page.locator("#answer-tempo textarea").input_value().strip()


def test_the_official_tempo_column_appears_when_chosen_and_shows_its_licence(page):
    column = page.locator("#column-tempo-6b-official")
    assert not column.is_visible()
    page.get_by_label("tempo-6b.official", exact=False).check()
    column.wait_for(state="visible", timeout=10_000)
    assert "non-commercial" in column.inner_text()
    page.get_by_label("tempo-6b.official", exact=False).uncheck()
    column.wait_for(state="hidden", timeout=10_000)
