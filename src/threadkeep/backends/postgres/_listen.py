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
opened on the first wait and closed with the store. The thread sleeps in one ``select`` on the
session's socket and a socket pair ``close`` writes to: an idle store makes no wake-up at all
(a poll of the session every 0.1 s, as before, cost each worker process of the service about
4 ms of CPU a second with nothing happening).

The generation is counted per tenant too: a ``NOTIFY``'s payload names whom the write concerns
(``concerns``: migration 11's ``emit_event``), so a follower of one tenant waits for that
tenant's count (or a wake of everyone) and sleeps through the other tenants' writes, while a
follower of every tenant (``tenant=None``) wakes for any. A payload naming no tenant (an
older writer's empty one, several tenants' ``*``, anything unknown), a lost session and
``close`` wake everyone, so nothing is missed.

A read of every tenant's events that left nothing unread is remembered too (``seen``): a
follower of every tenant at the position where that read ended, whose mark has not moved
since, waits instead of reading (``quiet``). (Not one tenant's follower: another tenant's
writes trim the log without moving its mark, and its ``CursorExpired`` must come at once.)
A follower that got events comes back at once for more; when its read took all
there was (fewer than its limit, none held back) that next read would find nothing new, since
everything committed since the read notifies after its commit and so moves the mark: the
service's reader of the log made two reads per wake, the second empty unless more came. The
memory lasts ``UNNOTIFIED_WAIT`` from the read's start, so a follower still reads at least
that often (a wake lost between a writer's COMMIT and its NOTIFY). A call with a timeout that
starts at such a position waits for the next notification before it reads, so a write
committed just before the call whose NOTIFY has not reached this thread yet is read when it
does (milliseconds); a call shorter than that can end empty. ``timeout=0`` always reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import threading
import time
from typing import Any, cast

import psycopg
from psycopg import sql

from threadkeep._rules.ops import EventsOp, Outcome, Result
from threadkeep._rules.rows import EventRow
from threadkeep.backends.postgres._conn import Attempts, ConnectionOptions

__all__ = ["Listener", "Mark", "Read", "concerns"]

_BELL = object()  # the selector's tag of the bell's socket
_BACKOFF_CAP = 2.0  # longest pause between reconnect attempts
_TENANTS_KEPT = 4096  # tenants counted at most; past it the counts restart (everyone wakes)

#: What a follower compares to see whether to read again (``Listener.mark``).
Mark = tuple[int, int]
#: A follower's read: its result and whether committed events after it are held back.
Read = tuple[Result[list[EventRow]], bool]


def concerns(payload: str) -> str | None:
    """The tenant a ``NOTIFY`` payload names (``t:<tenant>``), or None: it may concern anyone."""
    return payload[2:] if payload.startswith("t:") else None


class Listener:
    """The store's shared LISTEN session and the generation counts it drives."""

    def __init__(self, options: ConnectionOptions) -> None:
        self._options = options
        self._cond = threading.Condition()
        self._generation = 0  # every wake
        self._everyone = 0  # the wakes of every follower
        self._tenants: dict[str, int] = {}  # the wakes of one tenant's followers
        self._listening = False
        self._error: Exception | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._bell: socket.socket | None = None  # close() writes here to end the thread's wait
        self._bell_pid = 0  # the process whose thread listens for the bell
        # a follower of every tenant's last read that left nothing unread: where it ended, the
        # mark it was made at, and until when it stands
        self._seen: tuple[int | None, Mark, float] | None = None
        # the parked coroutines, by the tenant they follow (None: every tenant)
        self._futures: dict[
            str | None, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
        ] = {}

    def mark(self, tenant: str | None) -> Mark:
        """What moves when a follower of ``tenant`` (None: every tenant) should read again."""
        if tenant is None:
            return (self._generation, 0)
        return (self._everyone, self._tenants.get(tenant, 0))

    def seen(self, op: EventsOp, mark: Mark, read: Read, until: float) -> None:
        """Note ``read`` of ``op``, made at ``mark`` (taken before it): every tenant's follower.

        Remembered when it left nothing unread (OK, fewer events than ``op.limit``, none held
        back): a follower at its end holding ``mark`` need not read before ``until`` (the
        read's start plus ``UNNOTIFIED_WAIT``). Otherwise a note at ``op.after`` is dropped.
        Not for one tenant's follower: another tenant's writes trim the log it reads
        (``CursorExpired`` must come at once) without moving that tenant's mark.
        """
        if op.tenant is not None:
            return
        result, held = read
        with self._cond:
            if result.outcome is Outcome.OK and not held and len(result.value) < op.limit:
                ended = int(result.value[-1].id) if result.value else op.after
                self._seen = (ended, mark, until)
            elif self._seen is not None and self._seen[0] == op.after:
                self._seen = None

    def quiet(self, tenant: str | None, after: int | None, mark: Mark, now: float) -> float:
        """Seconds a follower of ``tenant`` at ``after`` holding ``mark`` may wait unread.

        More than 0 when a read of this store at that mark left nothing unread after
        ``after`` (``seen``, followers of every tenant only): what is left of that note. 0: read.
        """
        note = self._seen
        if tenant is not None or note is None or note[0] != after or note[1] != mark:
            return 0.0
        return max(0.0, note[2] - now)

    def start(self, tenant: str | None) -> Mark:
        """Make sure the session listens, and return ``tenant``'s current mark.

        Raises:
            BackendUnavailable: the session could not be opened within the store's timeout.
        """
        with self._cond:
            if self._listening:
                return self.mark(tenant)
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
            return self.mark(tenant)

    def ready(self, tenant: str | None) -> Mark | None:
        """``tenant``'s mark if the session listens already (no blocking), else None."""
        with self._cond:
            return self.mark(tenant) if self._listening else None

    def wait(self, tenant: str | None, mark: Mark, timeout: float) -> None:
        """Block until ``tenant``'s mark moves past ``mark`` or ``timeout`` seconds pass."""
        with self._cond:
            self._cond.wait_for(lambda: self.mark(tenant) != mark, timeout)

    async def await_change(self, tenant: str | None, mark: Mark, seconds: float) -> None:
        """``wait`` for a coroutine: parks the task, not a thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._cond:
            if self.mark(tenant) != mark:
                return
            parked = self._futures.setdefault(tenant, set())
            parked.add(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, seconds)
        finally:
            with self._cond:
                parked.discard(entry)
                if not parked and self._futures.get(tenant) is parked:
                    del self._futures[tenant]

    def close(self) -> None:
        """Stop the thread (it wakes at once and closes the session)."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._advance(None)
            # a forked child's copy of the store rings no bell: the thread is its parent's
            if self._bell is not None and self._bell_pid == os.getpid():
                with contextlib.suppress(OSError):  # full: a byte is there already
                    self._bell.send(b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._options.timeout + 1.0)

    # ---- the thread ---------------------------------------------------------------------

    def _advance(self, tenants: set[str] | None) -> None:
        """Move the marks of ``tenants``' followers (None: everyone's) and wake them.

        Call with the condition held. A follower of every tenant wakes either way.
        """
        self._generation += 1
        if tenants is not None and len(self._tenants) + len(tenants) > _TENANTS_KEPT:
            self._tenants.clear()  # bounded: the counts restart, and everyone reads again
            tenants = None
        if tenants is None:
            self._everyone += 1
            woken = list(self._futures)
        else:
            for tenant in tenants:
                self._tenants[tenant] = self._tenants.get(tenant, 0) + 1
            woken = [None, *tenants]
        self._cond.notify_all()
        for key in woken:
            for loop, future in self._futures.pop(key, ()):
                with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                    loop.call_soon_threadsafe(_settle, future)

    def _run(self) -> None:
        bell, ear = socket.socketpair()
        bell.setblocking(False)
        ear.setblocking(False)
        with bell, ear, selectors.DefaultSelector() as selector:
            with self._cond:
                self._bell, self._bell_pid = bell, os.getpid()
            try:
                selector.register(ear, selectors.EVENT_READ, _BELL)
                self._listen(selector)
            finally:  # also when the thread dies of something unforeseen: followers read again
                with self._cond:
                    self._bell = None
                    self._listening = False
                    self._advance(None)

    def _listen(self, selector: selectors.BaseSelector) -> None:
        options = self._options
        failures = 0
        while not self._closed:
            try:
                kwargs = {**options.kwargs, "application_name": options.listener_name}
                with psycopg.connect(options.conninfo, autocommit=True, **kwargs) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(options.channel)))
                    with self._cond:
                        self._listening, self._error, failures = True, None, 0
                        self._advance(None)  # anything sent while no session listened
                    # the number kept: once the session is lost, libpq has closed its socket
                    # and ``fileno()`` raises; the next session may get the same number
                    fd = conn.fileno()
                    selector.register(fd, selectors.EVENT_READ)
                    try:
                        self._hear(conn, selector)
                    finally:
                        selector.unregister(fd)
            except psycopg.Error as exc:
                failures += 1
                with self._cond:
                    self._listening, self._error = False, exc
                    self._advance(None)
                if not self._closed:
                    time.sleep(min(_BACKOFF_CAP, 0.05 * 2**failures))

    def _hear(self, conn: psycopg.Connection[Any], selector: selectors.BaseSelector) -> None:
        """Take the notifications as they come; sleep in between (until ``close``).

        libpq's calls directly, once ``select`` said the socket has something: psycopg's
        ``notifies()`` (its lock, generator, poll and timeout) took 33-36 µs of this thread's
        CPU per notification against 22-28 µs (``docs/performance.md``, session 11), paid for
        each write in each process that follows.
        """
        self._heard(
            {note.payload for note in conn.notifies(timeout=0)}
        )  # came with LISTEN's answer
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        while not self._closed:
            # the session has something (a notification, its end), or the bell rang
            for key, _ in selector.select():
                if key.data is _BELL:  # drained, so a stray ring cannot make this spin
                    with contextlib.suppress(OSError):
                        cast(socket.socket, key.fileobj).recv(64)
            pgconn.consume_input()  # all the socket holds; raises when the session is lost
            payloads = set()
            while (note := pgconn.notifies()) is not None:
                payloads.add(note.extra.decode(encoding))
            self._heard(payloads)

    def _heard(self, payloads: set[str]) -> None:
        """Wake the followers the notifications that came together concern (none: no one)."""
        if payloads:
            named = {concerns(payload) for payload in payloads}
            with self._cond:
                self._advance(None if None in named else cast(set[str], named))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
