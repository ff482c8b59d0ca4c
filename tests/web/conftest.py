"""Browser tests: ``threadkeep serve`` over a SQLite file, driven by Debian's Chromium."""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests._servers import ServerProcess, free_port, http_ready, unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: `make screenshots` sets this to docs/screenshots (the README shows them); a plain test run
#: keeps its screenshots in its temporary directory, so it leaves the checkout unchanged.
SCREENSHOTS_ENV = "THREADKEEP_SCREENSHOTS"
SERVE = [sys.executable, "-m", "threadkeep.cli.main", "serve", "--host", "127.0.0.1"]


def post_json(url: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """POST JSON to the app under test (with an API key when given); return the decoded reply."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.loads(resp.read()))


class LiveServer(ServerProcess):
    """``threadkeep serve`` over a SQLite file in a child process; restart() keeps the port."""

    def __init__(self, db: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = db
        # Only this test's settings; no LLM key, so the bot uses its own words, never the network.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("THREADKEEP_")}
        environ.pop("ANTHROPIC_API_KEY", None)
        environ.update(env or {})
        # Exactly what `make run` does: the `threadkeep serve` command.
        args = [*SERVE, "--store", f"sqlite:///{db}", "--port", str(self.port)]
        super().__init__(args, http_ready(self.url + "/dashboard"), log=log, env=environ)

    def restart(self) -> None:
        self.stop(timeout=10)
        self.start()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, one per test module (test_browser.py is the only one using it).

    Not session-wide: Playwright's sync API keeps an asyncio loop running in the main thread
    while it is open, and every later test calling ``asyncio.run`` would fail.
    """
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright)")
    expect.set_options(timeout=15_000)  # a busy machine; a pass never waits for this
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class OtherSite:
    """Another site, on its own origin (``http://localhost:PORT``), whose pages include the
    service's widget with one script tag; the service allows that origin through CORS."""

    def __init__(self) -> None:
        self.service_url = ""  # set once the service runs
        site = self

        class Page(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = (
                    f"<!doctype html><title>Harbor Homes {self.path}</title>"
                    f"<h1>Harbor Homes {self.path}</h1>"
                    '<a href="/listings" data-testid="next">Listings</a>'
                    f'<script src="{site.service_url}/widget.js"></script>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        self.httpd.daemon_threads = True
        self.origin = f"http://localhost:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def other_site() -> Iterator[OtherSite]:
    site = OtherSite()
    yield site
    site.close()


@pytest.fixture
def server(tmp_path: Path, browser: Any, other_site: OtherSite) -> Iterator[LiveServer]:
    """The app, keyless (loopback only), letting ``other_site``'s pages call it."""
    live = LiveServer(
        tmp_path / "threadkeep.db",
        tmp_path / "server.log",
        env={"THREADKEEP_CORS_ORIGINS": other_site.origin},
    )
    other_site.service_url = live.url
    live.start()
    yield live
    live.stop()


#: The API keys of ``keyed_server``: key -> tenant.
KEYS = {"key-loc-1": "loc-1", "key-loc-2": "loc-2"}


@pytest.fixture
def keyed_server(tmp_path: Path, browser: Any) -> Iterator[LiveServer]:
    """The app with API keys configured: each key sees its own tenant only."""
    pairs = ",".join(f"{tenant}:{key}" for key, tenant in KEYS.items())
    live = LiveServer(
        tmp_path / "keyed.db", tmp_path / "keyed.log", env={"THREADKEEP_API_KEYS": pairs}
    )
    live.start()
    yield live
    live.stop()


@pytest.fixture
def api(server: LiveServer) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """POST JSON to a path of the app under test (to set up conversations quickly)."""
    return lambda path, body: post_json(server.url + path, body)


@pytest.fixture
def keyed_api(keyed_server: LiveServer) -> Callable[[str, dict[str, Any], str], dict[str, Any]]:
    """POST JSON with an API key to a path of ``keyed_server``."""
    return lambda path, body, key: post_json(keyed_server.url + path, body, key)


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Open a page in a fresh browser context (its own localStorage, like another device).

    Pages go to ``server``, or to ``keyed_server`` when the test uses that one.
    """
    contexts: list[Any] = []
    name = "keyed_server" if "keyed_server" in request.fixturenames else "server"
    server: LiveServer = request.getfixturevalue(name)

    def open_page(
        path: str = "/", *, width: int = 1280, height: int = 800, context: Any = None
    ) -> Any:
        if context is None:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.set_default_timeout(15_000)
            contexts.append(context)
        page = context.new_page()
        page.goto(path if path.startswith("http") else server.url + path)
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def save_screenshot(tmp_path: Path) -> Callable[..., None]:
    """Save a page's screenshot (under $THREADKEEP_SCREENSHOTS, else the test's tmp dir)."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")

    def save(page: Any, name: str, *, full_page: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / name), full_page=full_page)

    return save
