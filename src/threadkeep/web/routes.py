"""Routes of the browser front end: chat, dashboard, widget script, demo pages, static files.

Everything is plain HTML/CSS/JS shipped inside the package (no build step, no CDN); the pages
talk to the ``/v1`` HTTP API and follow ``/v1/events`` with ``EventSource``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

__all__ = ["STATIC_DIR", "router"]

#: Where the pages, styles and scripts live.
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"

_NO_CACHE: Final = {"Cache-Control": "no-cache"}
_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / name).read_text(encoding="utf-8"), headers=_NO_CACHE)


@router.get("/")
def chat_page() -> HTMLResponse:
    """Serve the web chat."""
    return _page("chat.html")


@router.get("/dashboard")
def dashboard_page() -> HTMLResponse:
    """Serve the live dashboard of the tenant's conversations."""
    return _page("dashboard.html")


@router.get("/demo/widget")
def demo_widget_page() -> HTMLResponse:
    """Serve the first screen of the widget demo site."""
    return _page("demo-home.html")


@router.get("/demo/widget/page2")
def demo_widget_page2() -> HTMLResponse:
    """Serve the second screen of the widget demo site."""
    return _page("demo-listings.html")


@router.get("/demo/two-screens")
def demo_two_screens() -> HTMLResponse:
    """Serve both screens of the widget demo side by side: one visitor, two tabs, in sync."""
    return _page("demo-two-screens.html")


@router.get("/widget.js")
def widget_script() -> Response:
    """Serve the embeddable chat bubble: the shared client followed by the widget, in one file."""
    parts = [(STATIC_DIR / name).read_text(encoding="utf-8") for name in ("tk.js", "widget.js")]
    body = "(function () {\n" + "\n".join(parts) + "\n})();\n"
    return Response(body, media_type=_TYPES[".js"], headers=_NO_CACHE)


@router.get("/static/{name:path}")
def static_file(name: str) -> FileResponse:
    """Serve one file of the front end.

    Raises:
        HTTPException: 404 when the name is not a file of the static folder.
    """
    if "\x00" in name:  # no file has it; Path would raise ValueError (a 500)
        raise HTTPException(status_code=404, detail="no static file with a NUL in its name")
    path = (STATIC_DIR / name).resolve()
    if not path.is_relative_to(STATIC_DIR) or not path.is_file() or path.suffix not in _TYPES:
        raise HTTPException(status_code=404, detail=f"no static file {name!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_NO_CACHE)
