"""One client per event loop, closed in that loop before it ends.

Async drivers (redis.asyncio, psycopg's pool) bind their connections to the loop that opened
them, while frameworks call a store from many loops: ``asyncio.run`` once per call, a new loop
per ``Runner.run_sync``, a loop in each of several threads. ``PerLoop`` gives each running
loop its own client, made on first use there. It closes that client inside its loop before
the loop closes: an async generator parked on first use is finalized by the loop's
``shutdown_asyncgens()``, which ``asyncio.run`` and ``asyncio.Runner`` call while the loop still
runs. ``aclose()`` closes the calling loop's client at once and asks the other live loops to
close theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    """A client per event loop.

    Args:
        make: opens a client in the running loop.
        close: closes a client, in the loop that made it.
    """

    def __init__(
        self, make: Callable[[], Awaitable[T]], close: Callable[[T], Awaitable[None]]
    ) -> None:
        self._make = make
        self._close = close
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[T, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def current(self) -> T | None:
        """The running loop's client, if it has one yet."""
        with self._lock:
            entry = self._clients.get(asyncio.get_running_loop())
        return None if entry is None else entry[0]

    async def get(self) -> T:
        """The running loop's client, made on first use."""
        found = self.current()
        if found is not None:
            return found
        client = await self._make()
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._clients.get(loop)
        if entry is not None:  # another task of this loop made one meanwhile
            await self._close(client)
            return entry[0]
        guard = self._guard(loop, client)
        await guard.__anext__()  # the loop now finalizes it when it shuts down
        with self._lock:
            self._clients[loop] = (client, guard)
        return client

    def replace(self, client: T) -> None:
        """Use ``client`` in the running loop from now on (the caller closed the old one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            _, guard = self._clients[loop]
            self._clients[loop] = (client, guard)

    async def _guard(
        self, loop: asyncio.AbstractEventLoop, client: T
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                entry = self._clients.pop(loop, None)
            with contextlib.suppress(Exception):
                await self._close(client if entry is None else entry[0])

    async def aclose(self) -> None:
        """Close every loop's client: this loop's now, live other loops' soon."""
        here = asyncio.get_running_loop()
        with self._lock:
            entries = list(self._clients.items())
        for loop, (_, guard) in entries:
            if loop is here:
                await guard.aclose()
            elif loop.is_running() and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # it closed meanwhile
                    asyncio.run_coroutine_threadsafe(guard.aclose(), loop)
