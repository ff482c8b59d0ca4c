"""The asynchronous PostgreSQL backend: flows from ``_flows`` on a psycopg AsyncConnectionPool.

Each call is one transaction (sweep: a series of bounded ones) committed before it returns, so
an acknowledged write is durable under PostgreSQL's own settings. Changes to a conversation
hold its row lock, so appends serialize per conversation and run in parallel across them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from threadkeep._rules import ops
from threadkeep._url import StoreURL
from threadkeep.backends.postgres._conn import Attempts, Settings, lost_connection, retry_key
from threadkeep.backends.postgres._flows import COMMIT, Flow, Flows

__all__ = ["AsyncPostgresBackend"]

T = TypeVar("T")


async def _pump(conn: psycopg.AsyncConnection[Any], flow: Flow[T]) -> T:
    """Run ``flow`` on ``conn`` (results in binary format: less to parse); the caller commits."""
    async with conn.cursor() as cur:
        rows: Any = None
        try:
            while True:
                query, params = flow.send(rows)
                if query == COMMIT[0]:
                    await conn.commit()
                    rows = []
                    continue
                await cur.execute(query, params or None, binary=bool(params))
                rows = await cur.fetchall() if cur.description is not None else []
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class AsyncPostgresBackend:
    """Async backend on PostgreSQL; migrates when opened, opens its pool on first use."""

    def __init__(self, url: StoreURL) -> None:
        self._s = Settings(url)
        self._flows = Flows(self._s.channel)
        # migrate now, synchronously: the registry constructs async backends in a thread
        from threadkeep.backends.postgres.sync import migrate

        self.migrated = migrate(self._s)  # how many migrations this open applied
        self._pool: AsyncConnectionPool[Any] | None = None
        self._opening: asyncio.Lock | None = None

    async def _get_pool(self, attempts: Attempts) -> AsyncConnectionPool[Any]:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    self._s.conninfo,
                    min_size=1,
                    max_size=self._s.pool_size,
                    kwargs=self._s.kwargs,
                    timeout=self._s.timeout,
                    reconnect_timeout=self._s.reconnect_timeout,
                    open=False,
                    name=f"threadkeep-async-{self._s.schema}",
                )
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    async def _run(self, make: Any, read: bool = False, once: bool = False) -> Any:
        """Run the flow ``make()`` makes in one transaction (see the sync backend's _run)."""
        attempts = Attempts(self._s)
        while True:
            committing = False
            try:
                pool = await self._get_pool(attempts)
                async with pool.connection(timeout=attempts.remaining()) as conn:
                    if conn.autocommit != read:
                        await conn.set_autocommit(read)
                    result = await _pump(conn, make())
                    committing = not read
                    if committing:
                        await conn.commit()
                return result
            except psycopg.Error as exc:
                if committing and once:
                    attempts.fail(exc)
                delay = attempts.pause(exc)
                if lost_connection(exc) and self._pool is not None:
                    with contextlib.suppress(Exception):  # replace dead pooled connections
                        await self._pool.check()
                await asyncio.sleep(delay)

    async def ping(self) -> None:
        """See AsyncBackend.ping."""
        await self._run(self._flows.ping, read=True)

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.close()

    async def create(self, op: ops.StartOp) -> tuple[ops.Outcome, ops.ConvRow]:
        """See AsyncBackend.create."""
        return await self._run(lambda: self._flows.create(op))  # type: ignore[no-any-return]

    async def get(self, op: ops.GetOp) -> ops.ConvRow | None:
        """See AsyncBackend.get."""
        return await self._run(lambda: self._flows.get(op), read=True)  # type: ignore[no-any-return]

    async def find_open(self, op: ops.FindOpenOp) -> ops.ConvRow | None:
        """See AsyncBackend.find_open."""
        return await self._run(lambda: self._flows.find_open(op), read=True)  # type: ignore[no-any-return]

    async def append(self, op: ops.AppendOp) -> ops.AppendResult:
        """See AsyncBackend.append (safe to resend: an internal key detects a committed try)."""
        key, tries = retry_key(), [0]

        def attempt() -> Any:
            tries[0] += 1
            return self._flows.append(op, key, resent=tries[0] > 1)

        return await self._run(attempt)  # type: ignore[no-any-return]

    async def read_messages(self, op: ops.ReadOp) -> builtins.list[ops.MsgRow] | None:
        """See AsyncBackend.read_messages."""
        return await self._run(lambda: self._flows.read_messages(op), read=True)  # type: ignore[no-any-return]

    async def read_context(self, op: ops.ReadOp) -> builtins.list[tuple[str, str]] | None:
        """See AsyncBackend.read_context."""
        rows = await self.read_messages(op)
        return None if rows is None else [(m.role, m.content) for m in rows]

    async def update(self, op: ops.UpdateOp) -> ops.UpdateResult:
        """See AsyncBackend.update."""
        return await self._run(lambda: self._flows.update(op))  # type: ignore[no-any-return]

    async def save_state(self, op: ops.SaveStateOp) -> ops.StateResult:
        """See AsyncBackend.save_state."""
        return await self._run(lambda: self._flows.save_state(op), once=True)  # type: ignore[no-any-return]

    async def load_state(self, op: ops.LoadStateOp) -> tuple[ops.Outcome, ops.StateRow | None]:
        """See AsyncBackend.load_state."""
        return await self._run(lambda: self._flows.load_state(op), read=True)  # type: ignore[no-any-return]

    async def list(self, op: ops.ListOp) -> builtins.list[ops.ConvRow]:
        """See AsyncBackend.list."""
        return await self._run(lambda: self._flows.list(op), read=True)  # type: ignore[no-any-return]

    async def counts(self, op: ops.CountsOp) -> ops.CountsRow:
        """See AsyncBackend.counts."""
        return await self._run(lambda: self._flows.counts(op), read=True)  # type: ignore[no-any-return]

    async def delete(self, op: ops.DeleteOp) -> bool:
        """See AsyncBackend.delete."""
        return await self._run(lambda: self._flows.delete(op), once=True)  # type: ignore[no-any-return]

    async def delete_contact(self, op: ops.DeleteContactOp) -> int:
        """See AsyncBackend.delete_contact."""
        return await self._run(lambda: self._flows.delete_contact(op))  # type: ignore[no-any-return]

    async def sweep(self, op: ops.SweepOp) -> ops.SweepRow:
        """See AsyncBackend.sweep."""
        return await self._run(lambda: self._flows.sweep(op))  # type: ignore[no-any-return]

    async def read_events(
        self, op: ops.EventsOp, wait: float
    ) -> builtins.list[ops.EventRow] | None:
        """See AsyncBackend.read_events: waits on LISTEN/NOTIFY on a dedicated connection."""
        rows: builtins.list[ops.EventRow] | None = await self._run(
            lambda: self._flows.read_events(op)
        )
        if rows is None or rows or wait <= 0:
            return rows
        deadline = time.monotonic() + wait
        try:
            async with await psycopg.AsyncConnection.connect(
                self._s.conninfo,
                autocommit=True,
                application_name=self._s.listener_name,
                **self._s.kwargs,
            ) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._s.channel)))
                while True:
                    rows = await _pump(conn, self._flows.read_events(op))
                    remaining = deadline - time.monotonic()
                    if rows is None or rows or remaining <= 0:
                        return rows
                    async for _ in conn.notifies(timeout=remaining, stop_after=1):
                        pass
        except psycopg.Error as exc:
            Attempts(self._s).fail(exc)

    async def acquire_lease(self, op: ops.LeaseOp) -> ops.LeaseResult:
        """See AsyncBackend.acquire_lease."""
        return await self._run(lambda: self._flows.acquire_lease(op), once=True)  # type: ignore[no-any-return]

    async def release_lease(self, op: ops.ReleaseOp) -> None:
        """See AsyncBackend.release_lease."""
        await self._run(lambda: self._flows.release_lease(op))

    async def remember(self, op: ops.RememberOp) -> ops.FactRow:
        """See AsyncBackend.remember."""
        return await self._run(lambda: self._flows.remember(op))  # type: ignore[no-any-return]

    async def recall(self, op: ops.RecallOp) -> builtins.list[ops.FactRow]:
        """See AsyncBackend.recall."""
        return await self._run(lambda: self._flows.recall(op), read=True)  # type: ignore[no-any-return]
