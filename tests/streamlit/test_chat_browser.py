"""The Streamlit chat in real Chromium: `streamlit run` as a process, two tabs, live updates."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadkeep
from tests._servers import ServerProcess, free_port, http_ready, unavailable

APP = Path(__file__).parent / "app"
pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def streamlit_app(store_url: str, tmp_path: Path) -> Iterator[str]:
    """``streamlit run`` of the two-page test app, as a process; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = ServerProcess(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(APP / "home.py"),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        http_ready(url + "/_stcore/health"),
        log=tmp_path / "streamlit.log",
        env={**os.environ, "TK_STREAMLIT_STORE": store_url, "TK_REFRESH": "1"},
        start_timeout=60,
    )
    app.start()
    yield url
    app.stop()


def test_the_chat_in_a_real_browser(streamlit_app, store_url, tmp_path):
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    with threadkeep.open(store_url) as store, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(streamlit_app)
        expect(page.get_by_text("Lead: Dana")).to_be_visible()
        expect(page.get_by_text("Suggested replies")).to_be_visible()  # chat() has run
        conv = store.find_open("+15550100", tenant="loc-1")
        assert conv is not None and conv.agent_id == "jorge"
        store.save_state(conv.id, {"contact_name": "Dana", "lead_source": "Zillow"})
        store.append(conv.id, "user", "Hi! Is the house on Maple St still available?")
        store.append(conv.id, "user", "I'm just browsing for now")
        # written by another screen: shows up by itself
        expect(page.get_by_text("I'm just browsing for now")).to_be_visible()
        expect(page.get_by_text("Objection: just browsing")).to_be_visible()
        page.get_by_role("button", name="Use this reply").first.click()
        reply = page.get_by_label("Reply")
        expect(reply).to_have_value(
            "Totally fine, most people start exactly there. Want me to send new listings like "
            "that one as they come up? Roughly when are you thinking of moving?"
        )
        page.get_by_role("button", name="Send", exact=True).click()
        expect(page.get_by_text("Want me to send new listings like that one").first).to_be_visible()
        second = browser.new_page(viewport={"width": 1280, "height": 900})
        second.goto(streamlit_app + "/listings")
        expect(second.get_by_text("Listings for Dana")).to_be_visible()
        expect(second.get_by_text("I'm just browsing for now")).to_be_visible()
        messages = store.messages(conv.id)
        assert [(m.role, m.content[:8]) for m in messages] == [
            ("user", "Hi! Is t"),
            ("user", "I'm just"),
            ("agent", "Totally "),
        ]
        folder = Path(os.environ.get("THREADKEEP_SCREENSHOTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(500)
        page.screenshot(path=str(folder / "streamlit.png"))
        browser.close()
