"""``threadkeep serve``: uvicorn with N real worker processes and a graceful shutdown.

Workers build the app with ``create_app()`` from ``THREADKEEP_*`` variables, which ``run`` sets
from its arguments and checks (and warns about) once, before any worker starts. On SIGTERM/SIGINT
uvicorn stops accepting, lets in-flight requests finish (event streams get ``GRACE`` seconds),
then each worker closes its store.
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn
from fastapi import FastAPI

from threadkeep import InvalidInput, redact_url
from threadkeep.bot import make_bot
from threadkeep.service.app import create_app
from threadkeep.service.settings import (
    ServiceSettings,
    get_settings,
    is_loopback,
    load_settings,
    unknown_variables,
)

__all__ = ["GRACE", "check_exposure", "run"]

#: Seconds in-flight requests (and open event streams) get at shutdown.
GRACE = 5

log = logging.getLogger("threadkeep.service")


def check_exposure(settings: ServiceSettings) -> None:
    """Refuse to serve a non-loopback address without API keys.

    Raises:
        InvalidInput: ``host`` is not loopback and no API key is configured.
    """
    if not is_loopback(settings.host) and not settings.tenants_by_key():
        raise InvalidInput(
            f"refusing to serve {settings.host} without API keys: anyone who can reach it "
            "would read every conversation. Set THREADKEEP_API_KEYS (tenant:key,…) or "
            "THREADKEEP_API_KEYS_FILE, or bind 127.0.0.1",
            field="host",
        )


def _worker_app() -> FastAPI:
    """A worker's app, from the settings ``run`` checked (and warned about) before it started."""
    return create_app(get_settings())


def run(
    *,
    store_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
) -> None:
    """Serve the API until interrupted.

    Args:
        store_url: the store (default: ``THREADKEEP_STORE``, else the SQLite default).
        host: the address to bind.
        port: the port.
        workers: worker processes (each opens its own store connections).

    Raises:
        InvalidInput: a non-loopback host without API keys, a bad setting or bot (one line
            naming the variable and the rule).
    """
    if store_url is not None:
        os.environ["THREADKEEP_STORE"] = store_url
    os.environ["THREADKEEP_HOST"] = host
    os.environ["THREADKEEP_PORT"] = str(port)
    os.environ["THREADKEEP_WORKERS"] = str(workers)
    settings = load_settings()
    for name in unknown_variables():
        sys.stderr.write(f"warning: {name} is not a threadkeep setting (a typo?); ignored\n")
    # Check everything here, so N workers do not each fail with a traceback.
    store = redact_url(settings.store)  # also checks the URL
    settings.tenants_by_key()
    settings.visitor_secrets()
    check_exposure(settings)
    make_bot(settings.bot)
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(
        f"threadkeep serving {store} at http://{shown}:{port}/ "
        f"({workers} worker{'s' if workers != 1 else ''}; API docs at /docs)\n"
    )
    sys.stderr.flush()
    uvicorn.run(
        "threadkeep.service.server:_worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers if workers > 1 else None,
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=GRACE,
        proxy_headers=False,
    )
