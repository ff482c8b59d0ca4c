"""The synchronous PostgreSQL backend: flows from ``_flows`` run on a psycopg ConnectionPool.

Each call is one transaction (sweep: a series of bounded ones) committed before it returns, so
an acknowledged write is durable under PostgreSQL's own settings. Changes to a conversation
hold its row lock, so appends serialize per conversation and run in parallel across them.
"""

from __future__ import annotations

import builtins
import contextlib
import time
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from threadkeep._rules import ops
from threadkeep._url import StoreURL
from threadkeep.backends.postgres._conn import Attempts, Settings, lost_connection, retry_key
from threadkeep.backends.postgres._flows import COMMIT, Flow, Flows

__all__ = ["PostgresBackend"]

T = TypeVar("T")


def _pump(conn: psycopg.Connection[Any], flow: Flow[T]) -> T:
    """Run ``flow`` on ``conn`` (results in binary format: less to parse); the caller commits."""
    with conn.cursor() as cur:
        rows: Any = None
        try:
            while True:
                query, params = flow.send(rows)
                if query == COMMIT[0]:
                    conn.commit()
                    rows = []
                    continue
                cur.execute(query, params or None, binary=bool(params))
                rows = cur.fetchall() if cur.description is not None else []
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def migrate(settings: Settings) -> int:
    """Create the schema if absent and apply missing migrations; return how many ran.

    Raises:
        BackendUnavailable: the server cannot be reached within the timeout.
    """
    attempts = Attempts(settings)
    while True:
        try:
            with psycopg.connect(
                settings.conninfo, connect_timeout=settings.kwargs["connect_timeout"]
            ) as conn:
                return _pump(conn, Flows.migrate(settings.schema))
        except psycopg.Error as exc:
            time.sleep(attempts.pause(exc))


class PostgresBackend:
    """Backend on PostgreSQL with a connection pool; migrates the schema when opened."""

    def __init__(self, url: StoreURL) -> None:
        self._s = Settings(url)
        self._flows = Flows(self._s.channel)
        self._pool = ConnectionPool(
            self._s.conninfo,
            min_size=1,
            max_size=self._s.pool_size,
            kwargs=self._s.kwargs,
            timeout=self._s.timeout,
            reconnect_timeout=self._s.reconnect_timeout,
            open=False,
            name=f"threadkeep-{self._s.schema}",
        )
        attempts = Attempts(self._s)
        while True:
            try:
                self._pool.open(wait=True, timeout=attempts.remaining())
                break
            except Exception as exc:
                time.sleep(attempts.pause(exc))
        self.migrated = migrate(self._s)  # how many migrations this open applied

    def _run(self, make: Any, read: bool = False, once: bool = False) -> Any:
        """Run the flow ``make()`` makes in one transaction, retrying lost connections.

        A failure before the commit is sent is always safe to retry: the server rolls the
        transaction back when the connection goes. A failure while committing leaves the
        outcome unknown; ``once`` flows (not safe to apply twice) then raise at once.
        """
        attempts = Attempts(self._s)
        while True:
            committing = False
            try:
                with self._pool.connection(timeout=attempts.remaining()) as conn:
                    if conn.autocommit != read:
                        conn.autocommit = read
                    result = _pump(conn, make())
                    committing = not read
                    if committing:
                        conn.commit()
                return result
            except psycopg.Error as exc:
                if committing and once:
                    attempts.fail(exc)
                delay = attempts.pause(exc)
                if lost_connection(exc):  # replace the pool's other dead connections now
                    with contextlib.suppress(Exception):
                        self._pool.check()
                time.sleep(delay)

    def ping(self) -> None:
        """See Backend.ping."""
        self._run(self._flows.ping, read=True)

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()

    def create(self, op: ops.StartOp) -> tuple[ops.Outcome, ops.ConvRow]:
        """See Backend.create."""
        return self._run(lambda: self._flows.create(op))  # type: ignore[no-any-return]

    def get(self, op: ops.GetOp) -> ops.ConvRow | None:
        """See Backend.get."""
        return self._run(lambda: self._flows.get(op), read=True)  # type: ignore[no-any-return]

    def find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        """See Backend.find_open."""
        return self._run(lambda: self._flows.find_open(op), read=True)  # type: ignore[no-any-return]

    def append(self, op: ops.AppendOp) -> ops.AppendResult:
        """See Backend.append (safe to resend: an internal key detects a committed try)."""
        key, tries = retry_key(), [0]

        def attempt() -> Any:
            tries[0] += 1
            return self._flows.append(op, key, resent=tries[0] > 1)

        return self._run(attempt)  # type: ignore[no-any-return]

    def read_messages(self, op: ops.ReadOp) -> builtins.list[ops.MsgRow] | None:
        """See Backend.read_messages."""
        return self._run(lambda: self._flows.read_messages(op), read=True)  # type: ignore[no-any-return]

    def read_context(self, op: ops.ReadOp) -> builtins.list[tuple[str, str]] | None:
        """See Backend.read_context."""
        rows = self.read_messages(op)
        return None if rows is None else [(m.role, m.content) for m in rows]

    def update(self, op: ops.UpdateOp) -> ops.UpdateResult:
        """See Backend.update."""
        return self._run(lambda: self._flows.update(op))  # type: ignore[no-any-return]

    def save_state(self, op: ops.SaveStateOp) -> ops.StateResult:
        """See Backend.save_state."""
        return self._run(lambda: self._flows.save_state(op), once=True)  # type: ignore[no-any-return]

    def load_state(self, op: ops.LoadStateOp) -> tuple[ops.Outcome, ops.StateRow | None]:
        """See Backend.load_state."""
        return self._run(lambda: self._flows.load_state(op), read=True)  # type: ignore[no-any-return]

    def list(self, op: ops.ListOp) -> builtins.list[ops.ConvRow]:
        """See Backend.list."""
        return self._run(lambda: self._flows.list(op), read=True)  # type: ignore[no-any-return]

    def counts(self, op: ops.CountsOp) -> ops.CountsRow:
        """See Backend.counts."""
        return self._run(lambda: self._flows.counts(op), read=True)  # type: ignore[no-any-return]

    def delete(self, op: ops.DeleteOp) -> bool:
        """See Backend.delete."""
        return self._run(lambda: self._flows.delete(op), once=True)  # type: ignore[no-any-return]

    def delete_contact(self, op: ops.DeleteContactOp) -> int:
        """See Backend.delete_contact."""
        return self._run(lambda: self._flows.delete_contact(op))  # type: ignore[no-any-return]

    def sweep(self, op: ops.SweepOp) -> ops.SweepRow:
        """See Backend.sweep."""
        return self._run(lambda: self._flows.sweep(op))  # type: ignore[no-any-return]

    def read_events(self, op: ops.EventsOp, wait: float) -> builtins.list[ops.EventRow] | None:
        """See Backend.read_events: waits on LISTEN/NOTIFY on a dedicated connection."""
        rows: builtins.list[ops.EventRow] | None = self._run(lambda: self._flows.read_events(op))
        if rows is None or rows or wait <= 0:
            return rows
        deadline = time.monotonic() + wait
        try:
            with psycopg.connect(
                self._s.conninfo,
                autocommit=True,
                application_name=self._s.listener_name,
                **self._s.kwargs,
            ) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._s.channel)))
                while True:
                    rows = _pump(conn, self._flows.read_events(op))
                    remaining = deadline - time.monotonic()
                    if rows is None or rows or remaining <= 0:
                        return rows
                    for _ in conn.notifies(timeout=remaining, stop_after=1):
                        pass
        except psycopg.Error as exc:
            Attempts(self._s).fail(exc)

    def acquire_lease(self, op: ops.LeaseOp) -> ops.LeaseResult:
        """See Backend.acquire_lease."""
        return self._run(lambda: self._flows.acquire_lease(op), once=True)  # type: ignore[no-any-return]

    def release_lease(self, op: ops.ReleaseOp) -> None:
        """See Backend.release_lease."""
        self._run(lambda: self._flows.release_lease(op))

    def remember(self, op: ops.RememberOp) -> ops.FactRow:
        """See Backend.remember."""
        return self._run(lambda: self._flows.remember(op))  # type: ignore[no-any-return]

    def recall(self, op: ops.RecallOp) -> builtins.list[ops.FactRow]:
        """See Backend.recall."""
        return self._run(lambda: self._flows.recall(op), read=True)  # type: ignore[no-any-return]
