"""The web routes serve the pages and files the browser needs (no browser involved)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from threadkeep.web.routes import STATIC_DIR, router


@pytest.fixture
def client():
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "marker"),
    [
        ("/", 'id="transcript"'),
        ("/dashboard", 'id="conflict"'),
        ("/demo/widget", '<script src="/widget.js"></script>'),
        ("/demo/widget/page2", '<script src="/widget.js"></script>'),
        ("/demo/two-screens", '<iframe src="/demo/widget/page2"'),
    ],
)
def test_pages_are_html(client, path, marker):
    resp = client.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert marker in resp.text
    assert 'name="viewport"' in resp.text  # usable on a phone


def test_pages_load_nothing_from_other_hosts():
    for page in STATIC_DIR.iterdir():
        text = page.read_text(encoding="utf-8")
        assert "http://" not in text.replace("http://www.w3.org", "")
        assert "https://" not in text.replace("https://host/widget.js", "")


def test_widget_script_is_one_self_contained_file(client):
    resp = client.get("/widget.js")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/javascript")
    assert "const TK" in resp.text and "attachShadow" in resp.text
    assert resp.text.startswith("(function () {")


@pytest.mark.parametrize(
    ("name", "ctype"),
    [("style.css", "text/css"), ("tk.js", "text/javascript"), ("dashboard.js", "text/javascript")],
)
def test_static_files(client, name, ctype):
    resp = client.get(f"/static/{name}")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(ctype)


@pytest.mark.parametrize(
    "name", ["missing.js", "../routes.py", "..%2Froutes.py", "%2e%2e/__init__.py", "a%00b.js"]
)
def test_static_refuses_anything_else(client, name):
    assert client.get(f"/static/{name}").status_code == 404
