"""The page in Debian's Chromium, driven by Playwright as a visitor would use it (tiny backbone).

Screenshots land in ``artifacts/screenshots/`` (ignored by git) for a human to look at.
"""

import shutil
from pathlib import Path

import pytest

from pipeline.columns import DEFAULT_COLUMNS as METHODS
from tests.app_server import running_app
from tests.videos import make_clip, write_garbage
from ui import page as ui_page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHARE = "#gradio-share-link-button-0"  # Gradio's own id for its Share via Link button
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
        context = browser.new_context(
            viewport={"width": 1600, "height": 1400}, permissions=["clipboard-read", "clipboard-write"]
        )
        page = context.new_page()
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
    assert page.locator(SHARE).is_disabled()  # nothing to share before a run: no bare address
    timings = page.locator("#timings")
    assert "from caches" in timings.inner_text() and "\n1\n" not in timings.inner_text()  # headers, not 1 2 3
    _upload(page, clip)
    _compare(page, "What is shown in the video?")
    _answers_done(page)
    for method in METHODS:
        answer = page.locator(f"#answer-{method} textarea").input_value()
        assert answer.strip(), method
        tokens = page.locator(f"#tokens-{method}").inner_text()
        assert "→" in tokens and "per frame" in tokens, method
        page.locator(f"#gallery-{method} img").first.wait_for(timeout=10_000)
        assert not _clipped(page, f"#gallery-{method}"), method
    assert "tiny-random" in page.locator("#tiny-banner").inner_text()
    assert _inside(page, "#timings th:last-child", "#timings")  # every column of the table in view
    page.screenshot(path=str(ARTIFACTS / "comparison.png"), full_page=True)


def test_share_via_link_opens_the_same_results_without_running_anything(page, monkeypatch):
    page.locator(SHARE).click()
    page.wait_for_function("() => navigator.clipboard.readText().then(t => t.includes('deep_link='))")
    link = page.evaluate("() => navigator.clipboard.readText()")
    shown = _results(page)
    monkeypatch.setattr(ui_page, "compare", _no_running)  # opening the link must not run a comparison
    other = page.context.new_page()
    try:
        other.goto(link)
        other.locator("#gallery-xcomp img").first.wait_for(timeout=30_000)
        assert _results(other) == shown and shown["status"].startswith("Done:")
        assert other.locator("#column-xcomp button", has_text="Kept moments").count() == 1  # not "Run"
        assert "from caches" in other.locator("#timings").inner_text()
    finally:
        other.close()


def _results(page) -> dict:
    """What a visitor reads on the page: status, each column's answer, tokens and number of kept frames."""
    shown = {"status": page.locator("#status").inner_text(), "card": page.locator("#card").inner_text()}
    for m in METHODS:
        shown[m] = (
            page.locator(f"#answer-{m} textarea").input_value(),
            page.locator(f"#tokens-{m}").inner_text(),
            page.locator(f"#gallery-{m} img").count(),
        )
    return shown


def _no_running(*args, **kwargs):
    raise AssertionError("a comparison ran")


def test_kept_moments_plays_in_its_column(page):
    page.locator("#column-xcomp button", has_text="Kept moments").click()
    player = page.locator("#moments-xcomp video")
    player.wait_for(timeout=60_000)
    assert player.get_attribute("src").endswith("kept-moments-xcomp.mp4")
    assert "Kept moments of xcomp" in page.locator("#moments-xcomp").inner_text()


def test_a_garbage_file_stays_in_the_status_line_and_the_next_comparison_still_works(page, clip, tmp_path):
    garbage = write_garbage(tmp_path / "broken.mp4")
    page.locator("#video button[aria-label='Clear']").first.click()
    _upload(page, garbage)
    _compare(page, "What is shown?")
    status = page.locator("#status")
    page.wait_for_function(
        "() => document.querySelector('#status').innerText.includes('not a video')", timeout=60_000
    )
    page.wait_for_timeout(3000)  # still there once the toast is gone
    assert "⚠️ This file is not a video" in status.inner_text()
    for method in METHODS:
        column = page.locator(f"#column-{method}")
        assert page.locator(f"#answer-{method} textarea").input_value().startswith("Not run: This file")
        assert column.locator("[data-testid=status-tracker]:not(.hide) .error").count() == 0, method
    page.screenshot(path=str(ARTIFACTS / "garbage-file.png"), full_page=True)
    page.locator("#video button[aria-label='Clear']").first.click()
    _upload(page, clip)
    _compare(page, "And now?")
    _answers_done(page)
    assert page.locator("#answer-tempo textarea").input_value().strip()


def test_one_video_at_a_time_an_upload_clears_the_link_and_a_link_clears_the_upload(page, clip):
    page.locator("#url textarea").fill("https://example.com/video.mp4")
    page.locator("#video video").wait_for(state="detached", timeout=10_000)  # the upload was cleared
    _upload(page, clip)
    page.locator("#video video").wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelector('#url textarea').value === ''", timeout=10_000)


def test_a_column_this_machine_cannot_run_is_not_offered(page):
    """CPU only and offline here: the official Tempo-6B column needs a GPU and its weights."""
    assert not page.locator("#methods").get_by_label("tempo-6b.official", exact=False).count()
    assert "espresso" in page.locator("#methods").inner_text()


def _clipped(page, selector: str) -> bool:
    """Whether any thumbnail or caption inside ``selector`` is cut off on the right."""
    return page.evaluate(
        """(selector) => {
            const box = document.querySelector(selector).getBoundingClientRect();
            const items = document.querySelectorAll(`${selector} .thumbnail-item, ${selector} .caption-label`);
            return [...items].some(e => e.getBoundingClientRect().right > box.right + 1
                                        || e.scrollWidth > e.clientWidth + 1);
        }""",
        selector,
    )


def _inside(page, inner: str, outer: str) -> bool:
    return page.evaluate(
        """([inner, outer]) => document.querySelector(inner).getBoundingClientRect().right
                              <= document.querySelector(outer).getBoundingClientRect().right + 1""",
        [inner, outer],
    )


def test_a_shared_card_opens_at_once_without_running_and_fills_the_inputs(page, monkeypatch):
    from ui import cards

    path, card = cards.shared_cards()[0]
    monkeypatch.setattr(ui_page, "compare", _no_running)
    page.locator("#shared-cards tr", has_text=card["question"]).first.click()
    page.wait_for_function(
        "() => document.querySelector('#status').innerText.includes('Nothing was run')", timeout=60_000
    )
    for method, result in card["results"].items():
        assert page.locator(f"#answer-{method} textarea").input_value() == result["answer"], method
        page.locator(f"#gallery-{method} img").first.wait_for(timeout=10_000)
    assert page.locator("#question textarea").input_value() == card["question"]
    assert page.locator("#video video").get_attribute("src").endswith(card["video"]["file_name"])
    assert path.stem in page.locator("#card-in").inner_text() and not page.locator(SHARE).is_disabled()


def test_an_example_runs_once_then_opens_from_the_cache(page, monkeypatch):
    examples = page.locator("#examples tr", has_text="What colour is the last scene?").first
    examples.click()
    _answers_done(page)
    first = page.locator("#answer-uniform textarea").input_value()
    monkeypatch.setattr(ui_page, "compare", _no_running)  # the second click is served from the cache
    page.locator("#shared-cards tr", has_text="counter.mp4").click()  # show something else in between
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Nothing was run')")
    examples.click()
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Done:')")
    assert page.locator("#answer-uniform textarea").input_value() == first
    page.locator("#tokens-plot canvas, #tokens-plot svg").first.wait_for(timeout=10_000)  # its chart too


def test_a_loaded_card_is_checked_and_a_good_one_opens_without_running(page, tmp_path, monkeypatch):
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1, "settings": {"budget": "lots"}}')
    _load_card(page, broken)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('⚠️')", timeout=30_000)
    assert "run card" in page.locator("#status").inner_text()
    monkeypatch.setattr(ui_page, "compare", _no_running)
    from ui import cards

    path, card = cards.shared_cards()[1]
    _load_card(page, path)
    page.wait_for_function(
        "() => document.querySelector('#status').innerText.includes('Nothing was run')", timeout=30_000
    )
    assert page.locator("#answer-espresso textarea").input_value() == card["results"]["espresso"]["answer"]


def _load_card(page, path: Path) -> None:
    clear = page.locator("#card-in button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#card-in input[type=file]").set_input_files(str(path))


def test_a_phone_390_px_wide_stacks_the_columns_and_nothing_overflows(page):
    phone = page.context.browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    try:
        phone.goto(page.url)
        phone.locator("#shared-cards tr", has_text="counter.mp4").click()
        phone.wait_for_function(
            "() => document.querySelector('#status').innerText.includes('Nothing was run')", timeout=60_000
        )
        phone.locator("#gallery-pool img").first.wait_for(timeout=10_000)
        boxes = [phone.locator(f"#column-{m}").bounding_box() for m in METHODS]
        assert all(b["width"] > 300 for b in boxes), boxes  # one column per row
        assert [b["y"] for b in boxes] == sorted(b["y"] for b in boxes)  # one under the other
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        assert phone.evaluate(OUTSIDE_THE_SCREEN) == []
        phone.screenshot(path=str(ARTIFACTS / "phone-390.png"), full_page=True)
    finally:
        phone.close()


#: Elements reaching past the right edge of the screen, but for those inside a box that scrolls sideways.
OUTSIDE_THE_SCREEN = """() => [...document.querySelectorAll('body *')].filter(e => {
    const box = e.getBoundingClientRect();
    if (box.width === 0 || box.right <= window.innerWidth + 1) return false;
    for (let p = e.parentElement; p; p = p.parentElement) {
        const style = getComputedStyle(p);
        if (['auto', 'scroll', 'hidden'].includes(style.overflowX)
            && p.getBoundingClientRect().right <= window.innerWidth + 1) return false;
    }
    return true;
}).map(e => `${e.tagName}#${e.id}.${e.className}`).slice(0, 10)"""


def test_the_evaluation_tab_shows_a_shipped_evaluation_and_opens_a_question(page, monkeypatch):
    import evaluation.runner
    from ui.evaltab import shipped

    monkeypatch.setattr(evaluation.runner, "run", _no_running)  # the page never runs an evaluation
    results = next(iter(shipped().values()))
    page.get_by_role("tab", name="Evaluation").click()
    page.locator("#eval-figure img, #eval-figure canvas, #eval-figure svg").first.wait_for(timeout=20_000)
    assert "uniform" in page.locator("#eval-results").inner_text()
    assert "difference (pp)" in page.locator("#eval-paired").inner_text()
    assert "kind" in page.locator("#eval-groups").inner_text()  # the needle questions' groups
    page.get_by_label("all wrong").check()
    qid = results.predictions[0]["qid"]
    page.locator("#eval-q").get_by_text(qid, exact=True).click()
    page.locator("#question textarea").wait_for(state="visible", timeout=20_000)
    assert page.locator("#question textarea").input_value() == results.predictions[0]["prompt"]
    video = Path(results.predictions[0]["video"]).name
    page.wait_for_function(
        f"() => (document.querySelector('#video video') || {{}}).src?.endsWith('{video}')", timeout=20_000
    )
    assert "press Compare" in page.locator("#status").inner_text()
