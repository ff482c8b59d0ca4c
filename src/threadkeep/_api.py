"""Opening stores from URLs."""

from __future__ import annotations

import asyncio
from typing import Any

from threadkeep._clock import Clock
from threadkeep._config import Limits, Retention
from threadkeep._store import AsyncStore, Store
from threadkeep._url import StoreURL
from threadkeep.backends import load_async, load_sync

__all__ = ["open", "open_async"]


def open(
    url: str,
    *,
    clock: Clock | None = None,
    retention: Retention | None = None,
    limits: Limits | None = None,
    **options: Any,
) -> Store:
    """Open a store: ``memory://``, ``sqlite:///path.db``, ``redis://…``, ``postgresql://…``.

    Args:
        url: the store URL; its query parameters are backend options.
        clock: where time comes from (tests pass a ManualClock).
        retention: default retention of new conversations.
        limits: size limits and log bounds.
        **options: backend options; they override the URL's query parameters.

    Returns:
        An open Store; use it as a context manager or call ``close()``.

    Raises:
        InvalidInput: a malformed URL or option, or a missing driver package.
        BackendUnavailable: the store cannot be reached.
    """
    parsed = StoreURL.parse(url, **options)
    return Store(
        load_sync(parsed), url=parsed.redacted(), clock=clock, retention=retention, limits=limits
    )


async def open_async(
    url: str,
    *,
    clock: Clock | None = None,
    retention: Retention | None = None,
    limits: Limits | None = None,
    **options: Any,
) -> AsyncStore:
    """Open an AsyncStore; the same arguments as ``open``.

    Raises:
        InvalidInput: a malformed URL or option, or a missing driver package.
        BackendUnavailable: the store cannot be reached.
    """
    parsed = StoreURL.parse(url, **options)
    backend = await asyncio.to_thread(load_async, parsed)
    return AsyncStore(
        backend, url=parsed.redacted(), clock=clock, retention=retention, limits=limits
    )
