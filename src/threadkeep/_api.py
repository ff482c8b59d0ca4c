"""Opening stores from URLs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from threadkeep._clock import Clock
from threadkeep._config import Limits, Retention
from threadkeep._encryption import Encryption
from threadkeep._store import AsyncStore, Store
from threadkeep._url import StoreURL
from threadkeep.backends import load_async, load_sync
from threadkeep.backends._protocol import AsyncBackend, Backend

__all__ = ["DEFAULT_STORE_URL", "open", "open_async", "redact_url"]

#: The store the command line, the service and the demo use when given none: a SQLite file
#: in the working directory.
DEFAULT_STORE_URL: Final = "sqlite:///./threadkeep.db"


def open(
    url: str,
    *,
    clock: Clock | None = None,
    retention: Retention | None = None,
    limits: Limits | None = None,
    instrument: Callable[[Backend], Backend] | None = None,
    encryption: Encryption | None = None,
    **options: Any,
) -> Store:
    """Open a store: ``memory://``, ``sqlite:///path.db``, ``redis://…``, ``postgresql://…``.

    Args:
        url: the store URL; its query parameters are backend options.
        clock: where time comes from (tests pass a ManualClock).
        retention: default retention of new conversations.
        limits: size limits and log bounds.
        instrument: wraps the opened backend, e.g. to time or count its calls (metrics,
            tracing); it receives the backend and returns the one the store uses.
        encryption: keys to encrypt message content and payloads, states and facts at
            rest with (``threadkeep.Encryption``; extra ``threadkeep[encryption]``).
        **options: backend options; they override the URL's query parameters.

    Returns:
        An open Store; use it as a context manager or call ``close()``.

    Raises:
        InvalidInput: a malformed URL or option, or a missing driver package.
        BackendUnavailable: the store cannot be reached.
    """
    parsed = StoreURL.parse(url, **options)
    backend = load_sync(parsed)
    _reached(backend.ping, backend.close)
    if instrument is not None:
        backend = instrument(backend)
    try:
        return Store(
            backend, url=parsed.redacted(), clock=clock, retention=retention, limits=limits,
            encryption=encryption,
        )  # fmt: skip
    except BaseException:  # no cryptography package: leave no pool behind
        backend.close()
        raise


def open_async(
    url: str,
    *,
    clock: Clock | None = None,
    retention: Retention | None = None,
    limits: Limits | None = None,
    instrument: Callable[[AsyncBackend], AsyncBackend] | None = None,
    encryption: Encryption | None = None,
    **options: Any,
) -> AsyncStore:
    """Open an AsyncStore; the same arguments as ``open``.

    Use it as ``async with threadkeep.open_async(url) as store:``, or ``store = await
    threadkeep.open_async(url)`` (then ``await store.aclose()``). Both connect at once, so an
    unreachable store raises there; a store used without either connects on its first call.

    Raises:
        InvalidInput: a malformed URL or option (at once), or a missing driver package.
        BackendUnavailable: the store cannot be reached (when awaited or entered).
    """
    parsed = StoreURL.parse(url, **options)

    async def connect() -> AsyncBackend:
        backend = await asyncio.to_thread(load_async, parsed)  # connects (see the backends)
        return backend if instrument is None else instrument(backend)

    return AsyncStore(
        connect=connect, url=parsed.redacted(), clock=clock, retention=retention, limits=limits,
        encryption=encryption,
    )  # fmt: skip


def _reached(ping: Callable[[], None], close: Callable[[], None]) -> None:
    """Ping a just-opened backend (a lazy driver, Redis, connects here); close it on failure.

    So ``open`` of an unreachable store raises BackendUnavailable at once, within the store's
    connect timeout, and leaves no pool behind.
    """
    try:
        ping()
    except BaseException:
        close()
        raise


def redact_url(url: str) -> str:
    """Return the store URL with its password hidden, for logs and messages.

    Raises:
        InvalidInput: a malformed URL or option (the check ``open`` makes first).
    """
    return StoreURL.parse(url).redacted()
