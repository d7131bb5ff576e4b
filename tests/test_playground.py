"""The web playground, driven in headless Chromium (Debian's, through Playwright; no browser download)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ARTIFACTS, Server, start_server, stop_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TTSD_ENGINES": "hibari,espeak", "TTSD_DEFAULT_VOICE": "en-heart", "TTSD_RATE_LIMIT": "50"}
    srv = start_server(tmp_path_factory.mktemp("site"), env=env)
    yield srv
    stop_server(srv)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (scripts/test installs it)")
def test_speak_in_the_browser(site: Server) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                  "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized screen
        page.goto(site.url + "/")
        expect(page.locator("#voice optgroup")).to_have_count(3)  # en-US, cmn, yue
        page.fill("#text", "Hello from the playground. This sentence is streamed to the browser.")
        page.select_option("#voice", "en-heart")
        page.click("#speak")
        expect(page.locator("#cache")).to_have_text("queued", timeout=30_000)
        expect(page.locator("#status")).to_contain_text("done", timeout=60_000)
        page.wait_for_function(
            "() => document.querySelector('#player').src.startsWith('blob:')", timeout=60_000
        )
        page.wait_for_function("() => document.querySelector('#player').duration > 1", timeout=30_000)
        assert page.locator("#ttfa").inner_text().endswith("ms")

        # The same again, with the keyboard: a cache hit.
        page.focus("#text")
        page.keyboard.press("Control+Enter")
        expect(page.locator("#cache")).to_have_text("cache hit", timeout=30_000)
        page.wait_for_function(
            "() => /^[1-9][0-9]* %$/.test(document.querySelector('#hits').textContent)", timeout=10_000
        )

        # Errors are readable.
        page.fill("#text", "   ")
        page.click("#speak")
        expect(page.locator("#error")).to_contain_text("Invalid request", timeout=10_000)
        page.screenshot(path=str(Path(ARTIFACTS) / "playground.png"), full_page=True)
        browser.close()
