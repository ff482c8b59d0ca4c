"""One LISTEN session per store, fanning NOTIFY out to every waiting follower (sync and async).

A follower that has caught up waits for the store's event channel. Instead of a session of its
own per wait (N followers held N sessions and reopened them every slice), one daemon thread
holds a single ``LISTEN`` session (``application_name = threadkeep-events:<schema>``) and
counts the notifications it receives: the *generation*. A follower takes the generation
before it reads, reads through the pool, and when the read found nothing waits for the
generation to move (``wait`` in a thread, ``await_change`` in an event loop). A change
committed after the read notifies after the ``LISTEN`` is active, so it is never missed; one
committed before is seen by the read. When the session is lost the generation moves too (the
followers read again, through the pool) and the thread reconnects with capped backoff; it is
opened on the first wait and closed with the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import psycopg
from psycopg import sql

from threadkeep.backends.postgres._conn import Attempts, ConnectionOptions

__all__ = ["Listener"]

_TICK = 0.1  # longest the thread waits for a notification before checking for close()
_BACKOFF_CAP = 2.0  # longest pause between reconnect attempts


class Listener:
    """The store's shared LISTEN session and the generation count it drives."""

    def __init__(self, options: ConnectionOptions) -> None:
        self._options = options
        self._cond = threading.Condition()
        self._generation = 0
        self._listening = False
        self._error: Exception | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._futures: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def start(self) -> int:
        """Make sure the session listens, and return the current generation.

        Raises:
            BackendUnavailable: the session could not be opened within the store's timeout.
        """
        with self._cond:
            if self._listening:
                return self._generation
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._error = None
                self._thread = threading.Thread(
                    target=self._run, name="threadkeep-pg-listener", daemon=True
                )
                self._thread.start()
            if not self._cond.wait_for(lambda: self._listening, self._options.timeout):
                error = self._error or psycopg.OperationalError("LISTEN session not ready")
                Attempts(self._options).fail(error)
            return self._generation

    def ready(self) -> int | None:
        """The current generation if the session listens already (no blocking), else None."""
        with self._cond:
            return self._generation if self._listening else None

    def wait(self, generation: int, timeout: float) -> None:
        """Block until the generation moves past ``generation`` or ``timeout`` seconds pass."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != generation, timeout)

    async def await_change(self, generation: int, seconds: float) -> None:
        """``wait`` for a coroutine: parks the task, not a thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._cond:
            if self._generation != generation:
                return
            self._futures.add(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, seconds)
        finally:
            with self._cond:
                self._futures.discard(entry)

    def close(self) -> None:
        """Stop the thread (it closes the session within one tick)."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._advance()
        if thread is not None and thread is not threading.current_thread():
            thread.join(_TICK + self._options.timeout)

    # ---- the thread ---------------------------------------------------------------------

    def _advance(self) -> None:
        """Move the generation and wake every waiter (call with the condition held)."""
        self._generation += 1
        self._cond.notify_all()
        for loop, future in self._futures:
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future)
        self._futures.clear()

    def _run(self) -> None:
        try:
            self._listen()
        finally:  # also when the thread dies of something unforeseen: followers read again
            with self._cond:
                self._listening = False
                self._advance()

    def _listen(self) -> None:
        options = self._options
        failures = 0
        while not self._closed:
            try:
                kwargs = {**options.kwargs, "application_name": options.listener_name}
                with psycopg.connect(options.conninfo, autocommit=True, **kwargs) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(options.channel)))
                    with self._cond:
                        self._listening, self._error, failures = True, None, 0
                        self._advance()  # anything sent while no session listened: read again
                    while not self._closed:
                        notified = False
                        for _ in conn.notifies(timeout=_TICK):
                            notified = True
                            break
                        if notified:
                            with self._cond:
                                self._advance()
            except psycopg.Error as exc:
                failures += 1
                with self._cond:
                    self._listening, self._error = False, exc
                    self._advance()
                if not self._closed:
                    time.sleep(min(_BACKOFF_CAP, 0.05 * 2**failures))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
