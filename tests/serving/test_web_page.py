"""The web page in a real browser: Debian's headless Chromium, driven by Playwright, against the front under uvicorn.

Stream plays chunks as they arrive (checked through the page's `window.musicops` hook), Generate plays a WAV, and
both land in the history. Set MUSICOPS_SCREENSHOT=1 to refresh docs/web-page.png.
"""

import os
import shutil
from pathlib import Path

import pytest

from serving.front.app import FrontSettings, create_app, serve_in_thread
from serving.sources import LocalSource

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "web-page.png"


@pytest.fixture
def page_url(micro_dir):
    app = create_app(LocalSource(micro_dir), FrontSettings(default_duration=4.0))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian's chromium package); Playwright downloads none here")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
        )
        try:
            yield browser
        finally:
            browser.close()


def test_streaming_plays_chunks_as_they_arrive_and_fills_the_history(page_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_url)
    page.wait_for_function("window.musicops && window.musicops.ready")
    assert page.locator("#ready").inner_text() == "model ready"

    page.fill("#prompt", "a warm lo-fi beat with soft piano chords")
    page.fill("#seed", "7")
    page.click("#stream")
    page.wait_for_function("window.musicops.chunksReceived >= 2 && window.musicops.playerStarted")
    page.wait_for_function("window.musicops.stats !== null")
    hook = page.evaluate("({...window.musicops, history: window.musicops.history.length})")
    assert hook["header"]["sample_rate"] == 32000 and hook["stats"]["seed"] == 7
    assert hook["stats"]["samples"] == 4 * 32000 and not hook["stats"]["cancelled"]
    assert hook["scheduledSeconds"] == pytest.approx(4.0, abs=1e-3)
    assert hook["history"] == 1 and page.locator("#stat-seed").inner_text() == "7"

    page.click("#generate")
    page.wait_for_function("window.musicops.history.length === 2 && !window.musicops.busy")
    assert page.locator("#history .item").count() == 2
    assert page.locator("#error").is_hidden() and not errors

    page.screenshot(path=str(tmp_path / "web-page.png"), full_page=True)
    if os.environ.get("MUSICOPS_SCREENSHOT"):
        shutil.copyfile(tmp_path / "web-page.png", DOCS_SCREENSHOT)


def test_invalid_input_shows_the_server_message(page_url, browser):
    page = browser.new_page()
    page.goto(page_url)
    page.wait_for_function("window.musicops && window.musicops.ready")
    page.click("#more summary")
    page.fill("#top_p", "3")
    page.click("#generate")
    page.wait_for_function("window.musicops.error")
    assert "top_p" in page.locator("#error").inner_text()
    page.click("#stream")
    page.wait_for_function("!window.musicops.busy && window.musicops.error.includes('top_p')")
    assert page.evaluate("window.musicops.chunksReceived") == 0
