"""The FastAPI application: ``create_app()`` builds it from settings (default: the environment).

The lifespan opens the AsyncStore (``app.state.store``) and closes it on shutdown. The web pages
(``threadkeep.web``) are served beside the API; their routes come first, so ``/`` is the chat.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from threadkeep import __version__
from threadkeep.bot import make_bot
from threadkeep.channels.config import channel_config
from threadkeep.playbooks import PlaybookSet
from threadkeep.playbooks.guidance import guidance_phraser
from threadkeep.service import errors
from threadkeep.service.followers import Followers
from threadkeep.service.hot import HotRoutes
from threadkeep.service.limits import RateLimiter
from threadkeep.service.middleware import BodyLimit, RequestLog
from threadkeep.service.observe import Metrics
from threadkeep.service.routers import (
    channels,
    chat,
    contacts,
    conversations,
    crm,
    events,
    guidance,
    health,
    messages,
    playbooks,
    state,
)
from threadkeep.service.runtime import StoreHolder
from threadkeep.service.settings import ServiceSettings, get_settings, unknown_variables
from threadkeep.service.visitors import VisitorTokens

__all__ = ["create_app"]

log = logging.getLogger("threadkeep.service")

DESCRIPTION = """\
The conversations of chat agents, over HTTP: history, lifecycle, versioned state and live
events, on whichever store the service was started with.

**Auth.** Send `Authorization: Bearer <key>`; each key belongs to one tenant and never sees
another tenant's data (404). A service started without keys serves loopback clients only.

**Visitors.** With `THREADKEEP_PUBLIC_CHAT=true`, `POST /v1/chat` needs no key: it answers with
a `visitor_token`. Sent as the bearer (or `?visitor_token=` on `/v1/events`), it reads that one
conversation (`GET /v1/conversations/{id}`, `GET …/messages`), posts to it (`POST /v1/chat`) and
follows its events; everything else is 404. Visitors never see `system` or `tool` messages,
message metadata, the stage or the conversation's metadata.

**Errors** are JSON `{"error": {"type", "message"}}` with the status of the error class
(422 bodies also name the `field` and the `rule`).
"""


def _configure_logging(level: str) -> None:
    ours = logging.getLogger("threadkeep")
    # Log to stderr unless the host program (or pytest) already configured logging.
    if not ours.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        ours.addHandler(handler)
    ours.setLevel(level.upper())


def _on_stop_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` too when SIGTERM or SIGINT arrives; return a function that undoes it.

    The server's own handlers (uvicorn's graceful shutdown) still run. Only the main thread
    can install handlers; elsewhere (a test client's thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = signal.getsignal(sig)
        if not callable(before):
            continue

        def handler(signum: int, frame: FrameType | None, before: Any = before) -> None:
            callback()
            before(signum, frame)

        previous[sig] = before
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            signal.signal(sig, before)

    return restore


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service.

    Args:
        settings: what to serve and how; default: read from ``THREADKEEP_*`` variables, and
            a variable of that prefix that names no setting is logged as a warning.

    Returns:
        The ASGI application (serve it with uvicorn, or ``threadkeep serve``).

    Raises:
        InvalidInput: a bad setting, malformed API keys (or keys file), store URL, bot or
            playbook, or public chat without a visitor secret.
    """
    from_environment = settings is None
    settings = settings or get_settings()
    _configure_logging(settings.log_level)
    for name in unknown_variables() if from_environment else ():
        log.warning("%s is not a threadkeep setting (a typo?); it is ignored", name)
    api_keys = settings.tenants_by_key()
    secrets = settings.visitor_secrets()
    metrics = Metrics()
    holder = StoreHolder(
        settings.store, metrics, settings.limits(), settings.retention(), settings.encryption()
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if api_keys:
            tenants = sorted(set(api_keys.values()))
            log.info("API keys configured for %d tenant(s): %s", len(tenants), ", ".join(tenants))
        else:
            log.warning(
                "no API keys configured: serving loopback clients only, all as tenant 'default'"
            )
        await holder.try_open()
        app.state.store = holder.store
        outbox = crm.start_outbox(app)
        processor = channels.start_processor(app)
        log.info("serving store %s with the %s bot", holder.redacted, settings.bot)
        # one reader of the log per process for the event streams; ended at SIGTERM/SIGINT
        followers = app.state.followers = Followers()
        restore = _on_stop_signal(followers.stop_soon)
        try:
            yield
        finally:
            restore()
            await followers.aclose()
            await channels.stop_processor(app, processor)
            await crm.stop_outbox(app, outbox)
            await holder.aclose()
            app.state.store = None

    # Swagger UI and ReDoc from files shipped in a package (fastapi-offline), not a CDN:
    # /docs works on a machine without internet access.
    app = FastAPIOffline(
        title="threadkeep",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.api_keys = api_keys
    app.state.key_limits = RateLimiter(settings.rate_limit, settings.rate_window)
    app.state.visitor_limits = RateLimiter(settings.visitor_rate_limit, settings.rate_window)
    app.state.visitor_tokens = (
        VisitorTokens(secrets, settings.visitor_token_ttl) if settings.public_chat else None
    )
    app.state.metrics = metrics
    app.state.stores = holder
    app.state.store = None
    app.state.bot = make_bot(settings.bot)
    app.state.playbooks = PlaybookSet.parse(settings.playbook, settings.playbooks)
    app.state.guidance_phraser = guidance_phraser()
    app.state.ghl = crm.setup(app, settings, holder)
    app.state.channels = channel_config(settings)
    app.state.followers = Followers()
    errors.install(app)

    from threadkeep.web.routes import router as web_router

    app.include_router(web_router)
    for module in (
        chat,
        conversations,
        contacts,
        messages,
        state,
        events,
        health,
        playbooks,
        guidance,
        crm,
    ):
        app.include_router(module.router)
    app.include_router(channels.router)
    # innermost: the chat turn and the append skip FastAPI's routing (service/hot.py)
    app.add_middleware(HotRoutes, api=app)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key"],
            expose_headers=["ETag"],
            max_age=600,
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestLog, metrics=metrics)
    return app
