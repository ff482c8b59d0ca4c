"""The synchronous PostgreSQL backend: flows from ``_flows`` run on a psycopg ConnectionPool.

Each op is one transaction (sweep: a series of bounded ones) committed before it returns, so
an acknowledged write is durable under PostgreSQL's own settings. Changes to a conversation
hold its row lock, so appends serialize per conversation and run in parallel across them.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, TypeVar, cast

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from threadkeep._rules.ops import EventsOp, Op, Outcome, Result
from threadkeep._rules.rows import EventRow
from threadkeep._url import StoreURL
from threadkeep.backends.postgres._conn import (
    Attempts,
    ConnectionOptions,
    lost_connection,
    migrate,
    pump,
)
from threadkeep.backends.postgres._flows import Flows, Run

__all__ = ["PostgresBackend"]

T = TypeVar("T")
R = TypeVar("R")


class PostgresBackend:
    """Backend on PostgreSQL with a connection pool; migrates the schema when opened."""

    def __init__(self, url: StoreURL) -> None:
        self._options = ConnectionOptions(url)
        self._flows = Flows(self._options.channel)
        self._pool: ConnectionPool[Any] = ConnectionPool(
            self._options.conninfo, **self._options.pool_kwargs("threadkeep")
        )
        attempts = Attempts(self._options)
        while True:
            try:
                self._pool.open(wait=True, timeout=attempts.remaining())
                break
            except Exception as exc:
                time.sleep(attempts.pause(exc))
        self.migrated = migrate(self._options)  # how many migrations this open applied

    def _run(self, call: Run[T]) -> T:
        """Run ``call`` in one transaction, retrying lost connections.

        A failure before the commit is sent is always safe to retry: the server rolls the
        transaction back when the connection goes. A failure while committing leaves the
        outcome unknown; ``once`` calls (not safe to apply twice) then raise at once.
        """
        attempts = Attempts(self._options)
        while True:
            committing = False
            try:
                with self._pool.connection(timeout=attempts.remaining()) as conn:
                    if not conn.autocommit:
                        conn.autocommit = True  # a write's flow opens its transaction itself
                    flow = call.attempt(attempts.failures + 1)
                    result = pump(conn, flow, transaction=not call.read)
                    committing = not call.read
                    if committing:
                        conn.commit()
                return result
            except psycopg.Error as exc:
                if committing and call.once:
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
        """Read events; when there are none, wait on LISTEN/NOTIFY on a dedicated connection."""
        result = self._run(self._flows.call(op))
        if result.value or result.outcome is not Outcome.OK:
            return result
        deadline = time.monotonic() + op.wait
        options = self._options
        try:
            with psycopg.connect(
                options.conninfo,
                autocommit=True,
                application_name=options.listener_name,
                **options.kwargs,
            ) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(options.channel)))
                while True:
                    result = pump(conn, self._flows.read_events(op))
                    remaining = deadline - time.monotonic()
                    if result.value or result.outcome is not Outcome.OK or remaining <= 0:
                        return result
                    for _ in conn.notifies(timeout=remaining, stop_after=1):
                        pass
        except psycopg.Error as exc:
            Attempts(options).fail(exc)

    def ping(self) -> None:
        """See Backend.ping."""
        self._run(Run(lambda n: self._flows.ping(), read=True, once=False))

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()
