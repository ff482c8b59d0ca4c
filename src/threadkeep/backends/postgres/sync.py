"""The synchronous PostgreSQL backend: flows from ``_flows`` run on a psycopg ConnectionPool.

Each op is one transaction (sweep: a series of bounded ones) committed before it returns, so
an acknowledged write is durable under PostgreSQL's own settings. Changes to a conversation
hold its row lock, so appends serialize per conversation and run in parallel across them.
"""

from __future__ import annotations

import contextlib
import time
from typing import TypeVar, cast

import psycopg
from psycopg_pool import ConnectionPool

from threadkeep._rules.ops import EventsOp, Op, Outcome, Result
from threadkeep._rules.rows import EventRow
from threadkeep._url import StoreURL
from threadkeep.backends.postgres._conn import (
    Attempts,
    ConnectionOptions,
    Ending,
    Session,
    check_alive,
    lost_connection,
    migrate,
    pump,
    settle,
)
from threadkeep.backends.postgres._flows import HELD_PAUSE, UNNOTIFIED_WAIT, Flows, Run
from threadkeep.backends.postgres._listen import Listener

__all__ = ["PostgresBackend"]

T = TypeVar("T")
R = TypeVar("R")


class PostgresBackend:
    """Backend on PostgreSQL with a connection pool; migrates the schema when opened."""

    def __init__(self, url: StoreURL) -> None:
        self._options = ConnectionOptions(url)
        self._flows = Flows(self._options.channel)
        self._listener = Listener(self._options)
        # migrate first, on a connection of its own: an unreachable server fails here, fast
        # and naming the cause (connection refused, unknown host …), before any pool exists
        self.migrated = migrate(self._options)  # how many migrations this open applied
        self._pool = ConnectionPool(
            self._options.conninfo,
            connection_class=Session,
            **self._options.pool_kwargs("threadkeep"),
        )
        attempts = Attempts(self._options)
        while True:
            try:
                self._pool.open(wait=True, timeout=attempts.remaining())
                break
            except Exception as exc:
                try:
                    time.sleep(attempts.pause(exc))
                except BaseException:
                    self._pool.close()  # stop its reconnecting workers
                    raise

    def _run(self, call: Run[T]) -> T:
        """Run ``call`` in one transaction, retrying lost connections.

        A failure before the commit is sent is always safe to retry: the server rolls the
        transaction back when the connection goes. A failure while committing leaves the
        outcome unknown; ``once`` calls (not safe to apply twice) then raise at once, and
        only they wait for their statements' answers before sending COMMIT (``Ending``),
        save_state excepted (``Run.together``: its COMMIT travels with its statements, and a
        connection the server ended while it sat in the pool is found first, ``check_alive``;
        a server error inside its transaction, a deadlock lost, came before its commit,
        ``Ending.failed``, and is retried as in every other flow).
        """
        attempts = Attempts(self._options)
        pool = self._pool
        while True:
            ending = None if call.read else Ending(self._options.channel, together=call.together)
            try:
                conn = pool.getconn(attempts.remaining())
                try:
                    if call.once and call.together:
                        check_alive(conn)  # dead before the call: retried, nothing was sent
                    flow = call.attempt(attempts.failures + 1)
                    return pump(conn, flow, transaction=not call.read, ending=ending)
                except BaseException as exc:
                    if ending is not None and isinstance(exc, psycopg.Error):
                        ending.failed(conn)  # before the session is rolled back
                    with contextlib.suppress(Exception):  # a lost one: the pool replaces it
                        conn.rollback()
                    raise
                finally:
                    settle(conn)
                    pool.putconn(conn)
            except psycopg.Error as exc:
                if ending is not None and ending.committing and call.once:
                    attempts.fail(exc)
                delay = attempts.pause(exc)
                if lost_connection(exc):  # replace the pool's other dead connections now
                    with contextlib.suppress(Exception):
                        self._pool.check()
                time.sleep(delay)

    def execute(self, op: Op[R]) -> Result[R]:
        """Carry out ``op``; a wait for events listens on a connection of its own."""
        if isinstance(op, EventsOp) and op.wait > 0:
            return cast("Result[R]", self._wait_events(op))
        return self._run(self._flows.call(op))

    def _wait_events(self, op: EventsOp) -> Result[list[EventRow]]:
        """Read events; when there are none, wait for the store's shared LISTEN session.

        Only a write that may concern ``op.tenant`` wakes the wait (``_listen``).

        While committed events are held back by the horizon (``schema.READ_EVENTS``), read
        again after a short pause even without a notification: what holds them back may be a
        transaction that logs no event and so notifies nobody when it ends.

        A follower that got events comes back for more at once: when the read before took all
        there was and the mark has not moved since (``Listener.quiet``), it waits instead of
        reading (at most ``UNNOTIFIED_WAIT`` after that read).
        """
        deadline = time.monotonic() + op.wait
        held_pause = HELD_PAUSE[0]
        follow = Run(lambda n: self._flows.follow_events(op), read=True, once=False)
        while True:
            mark = self._listener.start(op.tenant)
            began = time.monotonic()
            quiet = self._listener.quiet(op.tenant, op.after, mark, began)
            if quiet > 0:  # a read of this store at this mark found nothing after op.after
                if deadline <= began:
                    return Result(Outcome.OK, [])
                self._listener.wait(op.tenant, mark, min(deadline - began, quiet))
                continue
            read = result, held = self._run(follow)
            self._listener.seen(op, mark, read, began + UNNOTIFIED_WAIT)
            remaining = deadline - time.monotonic()
            if result.value or result.outcome is not Outcome.OK or remaining <= 0:
                return result
            if held:
                self._listener.wait(op.tenant, mark, min(remaining, held_pause))
                held_pause = min(HELD_PAUSE[1], held_pause * 2)
            else:
                self._listener.wait(op.tenant, mark, min(remaining, UNNOTIFIED_WAIT))

    def ping(self) -> None:
        """See Backend.ping."""
        self._run(Run(lambda n: self._flows.ping(), read=True, once=False))

    def close(self) -> None:
        """Close the pool and the LISTEN session."""
        self._listener.close()
        self._pool.close()
