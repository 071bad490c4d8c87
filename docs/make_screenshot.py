"""Make docs/screenshot.png: the real page after a comparison on an example clip (tiny backbone, offline).

Run ``python docs/make_screenshot.py`` (needs Debian's chromium and the dev requirements).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from playwright.sync_api import sync_playwright  # noqa: E402

from examples.make_examples import make_all  # noqa: E402
from tests.app_server import running_app  # noqa: E402
from tests.test_browser import CHROMIUM, FLAGS  # noqa: E402


def main(out: Path = ROOT / "docs" / "screenshot.png") -> Path:
    clip, question = make_all(ROOT / "examples" / "clips")[0]
    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        page.goto(url)
        page.locator("#video input[type=file]").set_input_files(str(clip))
        page.locator("#question textarea").fill(question)
        page.locator("#compare").click()
        page.wait_for_function(
            "() => document.querySelector('#status')?.innerText.includes('Done:')", timeout=300_000
        )
        page.locator("#gallery-pool img").first.wait_for()
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    return out


if __name__ == "__main__":
    print(main())
