"""The web playground, driven in headless Chromium (Debian's, through Playwright; no browser download)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ARTIFACTS
from .servers import Server, start_server, stop_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("site")
    (tmp / "lexicons").mkdir()
    (tmp / "lexicons" / "brands.pls").write_text(
        '<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" xml:lang="en-US">'
        "<lexeme><grapheme>TTSD</grapheme><alias>text to speech daemon</alias></lexeme></lexicon>"
    )
    env = {
        "TTSD_ENGINES": "hibari,espeak",
        "TTSD_DEFAULT_VOICE": "en-heart",
        "TTSD_RATE_LIMIT": "50",
        "TTSD_LEXICON_DIR": str(tmp / "lexicons"),
    }
    srv = start_server(tmp, env=env)
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

        # A lexicon: listed, and a text spoken with it is a new request (its key carries the lexicon).
        expect(page.locator("#lexicons option")).to_have_count(1)
        page.select_option("#lexicons", "brands")
        page.fill("#text", "Hello from the playground of TTSD.")
        page.click("#speak")
        expect(page.locator("#cache")).to_have_text("queued", timeout=30_000)
        expect(page.locator("#status")).to_contain_text("done", timeout=60_000)

        # Errors are readable.
        page.fill("#text", "   ")
        page.click("#speak")
        expect(page.locator("#error")).to_contain_text("Invalid request", timeout=10_000)
        page.screenshot(path=str(Path(ARTIFACTS) / "playground.png"), full_page=True)
        browser.close()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (scripts/test installs it)")
def test_live_mode_types_plays_and_is_interrupted(site: Server) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                  "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page()
        page.goto(site.url + "/")
        expect(page.locator("#voice optgroup")).to_have_count(3)
        page.select_option("#voice", "en-heart")
        page.fill("#text", "The first sentence arrives quickly. Then a second one follows it.")
        page.click("#live")
        expect(page.locator("#live-status")).to_have_text("done", timeout=60_000)
        expect(page.locator("#sentences li")).to_have_count(2)
        assert int(page.locator("#live-chunks").inner_text()) >= 2

        # A long reply, interrupted as soon as it is heard: acknowledged, and nothing more arrives.
        page.fill("#text", " ".join(f"This is sentence number {n} of a long reply." for n in range(30)))
        page.click("#live")
        page.wait_for_function(
            "() => parseInt(document.querySelector('#live-chunks').textContent) > 0", timeout=30_000
        )
        page.click("#interrupt")
        expect(page.locator("#live-status")).to_have_text("interrupted", timeout=10_000)
        heard = page.locator("#live-chunks").inner_text()
        page.wait_for_timeout(1500)
        assert page.locator("#live-chunks").inner_text() == heard
        assert page.locator("#sentences li").count() < 30
        page.screenshot(path=str(Path(ARTIFACTS) / "playground-live.png"), full_page=True)
        browser.close()
