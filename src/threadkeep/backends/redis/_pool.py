"""redis-py's blocking connection pools with a lean hand-out and return of a connection.

redis-py's ``BlockingConnectionPool`` spends more client time handing out a connection and
taking it back than the hot scripts spend packing, sending and reading theirs: a
deprecation-checking wrapper, usage metrics recorded on every get and release (a pool name
formatted each time), a ``queue.LifoQueue`` whose every ``get`` and ``put`` takes a
``threading.Condition``, and in asyncio an ``asyncio.Condition`` entered and a timeout timer
armed on every get. These subclasses keep what a pool guarantees and skip the rest:

- the bound: at most ``max_connections`` connections, and a caller waits up to ``timeout``
  for one when all are in use (then ``ConnectionError("No connection available.")``);
- a connection handed out is connected and has nothing left to read: one the server closed,
  or that holds unread data, is reconnected first (``can_read``; redis-py 8 skips this check
  on RESP3 connections, these pools always make it);
- a connection flagged for reconnection (redis-py 7 and later) is disconnected when it comes
  back, still counted in use while it disconnects, so the bound holds;
- after a fork the child gets a fresh pool (``_checkpid``), as redis-py does;
- ``disconnect()`` and every other method are redis-py's own, on the same structures.

What they leave out: redis-py's pool usage metrics (its observability ``record_*`` calls, a
no-op unless a metrics collector is set up) and its maintenance-notification locking (it
matters only on servers that send maintenance notifications, such as Redis Enterprise or Cloud,
over RESP3; a connection they flag is still disconnected on its return). Sync: idle connections
are a plain list (``append`` and ``pop`` are atomic), and only a caller that finds none takes a
lock and waits on a ``Condition``. Asyncio: a caller that finds an idle connection takes it at
once, without entering the pool's ``Condition`` or arming a timeout; one that finds none waits
as before, and a waiter cancelled or timed out after it was woken hands the wake-up on (on
Python 3.11 an ``asyncio.Condition`` loses it: redis-py's own pool does too).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, TimeoutError

__all__ = ["AsyncPool", "Pool"]


def _should_reconnect(connection: Any) -> bool:
    """redis-py >= 7 marks a connection for reconnection (maintenance); 5.3 and 6.x do not."""
    check = getattr(connection, "should_reconnect", None)
    return check is not None and check()


class _Lifo:
    """What the pool uses of ``queue.LifoQueue``, without a lock on the fast path.

    ``get`` pops an idle entry at once; only when there is none does it take the lock and
    wait. A ``put`` appends, then wakes a waiter if any is registered: a waiter registers
    (under the lock) before it looks again, so an entry put after its first look is either
    seen by that second look or followed by a wake-up.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: list[Any] = []  # redis-py reads it (its idle connections)
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0

    def qsize(self) -> int:
        return len(self.queue)

    def put_nowait(self, item: Any) -> None:
        if len(self.queue) >= self.maxsize:
            raise queue.Full
        self.queue.append(item)
        if self._waiting:
            with self._cond:
                self._cond.notify()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.put_nowait(item)  # the pool never puts back more than it took

    def get_nowait(self) -> Any:
        return self.get(False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        try:
            return self.queue.pop()
        except IndexError:
            if not block:
                raise queue.Empty from None
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    try:
                        return self.queue.pop()
                    except IndexError:
                        pass
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise queue.Empty
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1


class Pool(redis.BlockingConnectionPool):
    """redis-py's blocking pool, handing out and taking back connections leanly (see above)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(queue_class=_Lifo, **kwargs)  # type: ignore[no-untyped-call]

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """Return a connected connection with nothing to read, waiting up to ``timeout``."""
        if self.pid != os.getpid():
            self._checkpid()
        try:
            connection = self.pool.get(block=True, timeout=self.timeout)
        except queue.Empty:
            raise ConnectionError("No connection available.") from None
        if connection is None:  # a free place: make the connection
            connection = self.make_connection()  # type: ignore[no-untyped-call]
        try:
            if connection._sock is None:  # connect() would return at once, through a retry
                connection.connect()
            try:
                if connection.can_read():
                    raise ConnectionError("Connection has data")
            except (ConnectionError, TimeoutError, OSError):
                connection.disconnect()
                connection.connect()
                if connection.can_read():
                    raise ConnectionError("Connection not ready") from None
        except BaseException:
            self.release(connection)
            raise
        return connection

    def release(self, connection: Any) -> None:
        """Take a connection back (one of a forked parent's is dropped, its place freed)."""
        if self.pid != os.getpid():
            self._checkpid()
        if connection.pid != self.pid:  # made before a fork: not this process's to keep
            connection.disconnect()
            self.pool.put_nowait(None)
            return
        if _should_reconnect(connection):
            connection.disconnect()
        try:  # noqa: SIM105 (contextlib.suppress: three Python calls more per release)
            self.pool.put_nowait(connection)
        except queue.Full:  # never: it takes back what it handed out
            pass


class AsyncPool(aioredis.BlockingConnectionPool):
    """redis.asyncio's blocking pool; an idle connection is handed out without waiting."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiting = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """Return a connected connection, waiting up to ``timeout`` when none is idle."""
        if not self._available_connections:
            self._waiting += 1
            try:
                return await super().get_connection()  # type: ignore[no-untyped-call]
            except BaseException:
                # Python < 3.13: a Condition waiter cancelled (or timed out) after its notify
                # takes that wake-up with it; hand it on when a connection is idle
                if self._waiting > 1 and self._available_connections:
                    async with self._condition:
                        self._condition.notify()
                raise
            finally:
                self._waiting -= 1
        connection = self._available_connections.pop()
        self._in_use_connections.add(connection)
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        """Take a connection back; wake a caller waiting for one, if any."""
        if _should_reconnect(connection):  # still counted in use while it disconnects
            await connection.disconnect()
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)
        if self._waiting:
            async with self._condition:
                self._condition.notify()
