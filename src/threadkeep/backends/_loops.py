"""One client per event loop, closed in that loop before it ends.

Async drivers (redis.asyncio, psycopg's pool) bind their connections to the loop that opened
them, while frameworks call a store from many loops: ``asyncio.run`` once per call, a new loop
per ``Runner.run_sync``, a loop in each of several threads. ``PerLoop`` gives each running
loop its own client, made on first use there. It closes that client inside its loop before
the loop closes: an async generator parked on first use is finalized by the loop's
``shutdown_asyncgens()``, which ``asyncio.run`` and ``asyncio.Runner`` call while the loop still
runs. ``aclose()`` closes the calling loop's client at once and asks the other live loops to
close theirs.

A client with tasks of its own (psycopg's pool: workers and a scheduler) must be closed
earlier, in the round where ``asyncio.run``/``asyncio.Runner`` cancel the loop's tasks, which
comes before ``shutdown_asyncgens()`` and waits for every cancelled task to finish. A pool
worker catches the ``CancelledError`` that lands in a connection attempt (psycopg-pool counts
it among the client exceptions it survives) and goes back to waiting for work, so it would only
end on the stop that ``close()`` sends, and the guard that calls ``close()`` would only run once
that round ended: the loop's teardown hung. With ``close_on_cancel`` each loop also gets a
*keeper* task, parked until that round cancels it, which then closes the client alongside the
tasks being cancelled.
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
        close_on_cancel: also close it when the loop cancels its tasks (a keeper task), for
            clients whose own tasks cannot outlive that round (see the module's docstring).
    """

    def __init__(
        self,
        make: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]],
        *,
        close_on_cancel: bool = False,
    ) -> None:
        self._make = make
        self._close = close
        self._close_on_cancel = close_on_cancel
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[T, AsyncGenerator[None, None], asyncio.Task[None] | None],
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
        closed: asyncio.Future[None] = loop.create_future()
        guard = self._guard(loop, client, closed)
        await guard.__anext__()  # the loop now finalizes it when it shuts down
        keeper = None
        if self._close_on_cancel:
            keeper = loop.create_task(_keep(guard, closed), name="threadkeep-per-loop-keeper")
        with self._lock:
            self._clients[loop] = (client, guard, keeper)
        return client

    def replace(self, client: T) -> None:
        """Use ``client`` in the running loop from now on (the caller closed the old one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            _, guard, keeper = self._clients[loop]
            self._clients[loop] = (client, guard, keeper)

    async def _guard(
        self, loop: asyncio.AbstractEventLoop, client: T, closed: asyncio.Future[None]
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if not closed.done():
                closed.set_result(None)  # a keeper, if any, has nothing left to do
            with self._lock:
                entry = self._clients.pop(loop, None)
            with contextlib.suppress(Exception):
                await self._close(client if entry is None else entry[0])

    async def aclose(self) -> None:
        """Close every loop's client: this loop's now, live other loops' soon."""
        here = asyncio.get_running_loop()
        with self._lock:
            entries = list(self._clients.items())
        for loop, (_, guard, _) in entries:
            if loop is here:
                await guard.aclose()
            elif loop.is_running() and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # it closed meanwhile
                    asyncio.run_coroutine_threadsafe(guard.aclose(), loop)


async def _keep(guard: AsyncGenerator[None, None], closed: asyncio.Future[None]) -> None:
    """Wait until the client is closed; if this task is cancelled first, close it now."""
    try:
        await asyncio.shield(closed)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # taken: a later cancellation interrupts the close
        with contextlib.suppress(RuntimeError):  # aclose() is closing it at this moment
            await guard.aclose()
