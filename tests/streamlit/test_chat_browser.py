"""The Streamlit chat in real Chromium: `streamlit run` as a process, two tabs, live updates."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import threadkeep

APP = Path(__file__).parent / "app"
pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def streamlit_app(store_url, tmp_path):
    port = free_port()
    log = (tmp_path / "streamlit.log").open("wb")
    env = {**os.environ, "TK_STREAMLIT_STORE": store_url, "TK_REFRESH": "1"}
    proc = subprocess.Popen(
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
        env=env,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail((tmp_path / "streamlit.log").read_text())
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


def test_the_chat_in_a_real_browser(streamlit_app, store_url, tmp_path):
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
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
