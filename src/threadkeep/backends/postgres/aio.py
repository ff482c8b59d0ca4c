"""The asynchronous PostgreSQL backend: flows from ``_flows`` on a psycopg AsyncConnectionPool.

Each op is one transaction (sweep: a series of bounded ones) committed before it returns, so
an acknowledged write is durable under PostgreSQL's own settings. Changes to a conversation
hold its row lock, so appends serialize per conversation and run in parallel across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, TypeVar, cast

import psycopg
import psycopg_pool
from psycopg_pool import AsyncConnectionPool

from threadkeep._rules.ops import EventsOp, Op, Outcome, Result
from threadkeep._rules.rows import EventRow
from threadkeep._url import StoreURL
from threadkeep.backends._loops import PerLoop
from threadkeep.backends.postgres._conn import (
    BEGIN,
    END,
    AsyncSession,
    Attempts,
    ConnectionOptions,
    Ending,
    check_alive,
    lost_connection,
    migrate,
    send_implicit,
    settle,
)
from threadkeep.backends.postgres._flows import (
    COMMIT,
    HELD_PAUSE,
    UNNOTIFIED_WAIT,
    Flow,
    Flows,
    Run,
)
from threadkeep.backends.postgres._listen import Listener
from threadkeep.backends.postgres._schema import EMIT, NOTIFY, Closing, Unread, may_log
from threadkeep.backends.postgres._wire import Wire

__all__ = ["AsyncPostgresBackend"]

T = TypeVar("T")
R = TypeVar("R")


async def _pump(
    conn: AsyncSession,
    flow: Flow[T],
    *,
    transaction: bool = False,
    ending: Ending | None = None,
) -> T:
    """Run ``flow`` on ``conn``, as the sync backend's ``pump`` does.

    A cancellation while answers are outstanding closes the session (``Wire.exchange_async``):
    the pool drops it rather than hand out a half-read pipeline.
    """
    wire = conn.wire
    try:
        return await _passes(wire, flow, transaction, ending)
    except BaseException:
        if wire.busy:
            wire.drain()
        raise


async def _passes(wire: Wire, flow: Flow[T], transaction: bool, ending: Ending | None) -> T:
    """``_pump``'s passes (``wire`` left as it is on a failure)."""
    rows: Any = None
    if not transaction:
        while True:
            try:
                query, params = flow.send(rows)
            except StopIteration as done:
                return cast(T, done.value)
            if wire.opens():  # not autocommit (migrate): a transaction, as psycopg opens it
                wire.send_alone(BEGIN, None)
                await wire.exchange_async()
            position = wire.send_alone(query, params)
            rows = wire.rows((await wire.exchange_async())[position])
    try:
        query, params = flow.send(rows)
    except StopIteration as done:
        return cast(T, done.value)
    while True:  # a transaction a pass
        closing = False
        ended = False
        emitted = False
        held: list[tuple[str, dict[str, Any]]] = []
        if ending is not None:  # the pass before committed (its commit was answered)
            ending.committing = False
            ending.implicit = 0
        wire.begin()
        while isinstance(query, Unread):  # whether BEGIN goes first: the next statement says
            emitted = emitted or query is EMIT
            held.append((query, params))
            try:
                query, params = flow.send([])
            except StopIteration as done:
                result = cast(T, done.value)
                ended = True
                break
        if ending is not None and ending.together and (ended or isinstance(query, Closing)):
            position = send_implicit(
                wire, ending, held, None if ended else (query, params), emitted
            )
            answers = await wire.exchange_async()
            wire.end()  # every answer is in
            if ended:
                return result
            try:  # the Closing statement's answer
                query, params = flow.send(wire.rows(answers[position]))
            except StopIteration as done:
                return cast(T, done.value)
            continue
        wire.send(BEGIN, None, False)
        for step in held:
            wire.send(step[0], step[1], bool(step[1]))
        while not ended:
            if query == COMMIT[0]:
                wire.send(END, None, False)
                if emitted and ending is not None:
                    wire.send(NOTIFY, {"chan": ending.channel}, False)
                    emitted = False
                wire.sync()  # BEGIN would take the NOTIFY into its transaction
                await wire.exchange_async()
                wire.send(BEGIN, None, False)
                rows = []
            elif isinstance(query, Unread):
                emitted = emitted or query is EMIT
                wire.send(query, params, bool(params))
                rows = []
            elif isinstance(query, Closing) and ending is not None and ending.together:
                position = wire.send(query, params, True)
                ending.committing = True
                wire.send(END, None, False)
                if emitted or may_log(query):
                    wire.send(NOTIFY, {"chan": ending.channel}, False)
                closing = True
                break
            else:
                position = wire.send(query, params, bool(params))
                wire.sync()
                answers = await wire.exchange_async()
                emitted = emitted or may_log(query)  # not together
                rows = wire.rows(answers[position])
            try:
                query, params = flow.send(rows)
            except StopIteration as done:
                result = cast(T, done.value)
                break
        if not closing and ending is not None:
            if not ending.together and wire.queued:  # (none: every statement is answered)
                wire.sync()
                await wire.exchange_async()
            ending.committing = True
            wire.send(END, None, False)
            if emitted:
                wire.send(NOTIFY, {"chan": ending.channel}, False)
        wire.sync()
        answers = await wire.exchange_async()
        wire.end()  # every answer is in
        if not closing:
            return result
        try:  # the Closing statement's answer
            query, params = flow.send(wire.rows(answers[position]))
        except StopIteration as done:
            return cast(T, done.value)


class AsyncPostgresBackend:
    """Async backend on PostgreSQL; migrates when opened, opens a pool per event loop.

    A pool's workers belong to the loop that opened it, so each loop gets one on first use
    there, closed before that loop ends (``_loops.PerLoop``).
    """

    def __init__(self, url: StoreURL) -> None:
        self._options = ConnectionOptions(url)
        self._flows = Flows(self._options.channel)
        self._listener = Listener(self._options)
        # migrate now, synchronously: the registry constructs async backends in a thread
        self.migrated = migrate(self._options)  # how many migrations this open applied
        # the pool's workers cannot outlive the round where the loop cancels its tasks (a worker
        # survives a cancellation that lands in a connection attempt): close it in that round
        self._pools: PerLoop[AsyncConnectionPool[AsyncSession]] = PerLoop(
            self._open_pool, _close_pool, close_on_cancel=True
        )

    async def _open_pool(self) -> AsyncConnectionPool[AsyncSession]:
        pool = AsyncConnectionPool(
            self._options.conninfo,
            connection_class=AsyncSession,
            **self._options.pool_kwargs("threadkeep-async"),
        )
        await pool.open(wait=False)
        return pool

    async def _run(self, call: Run[T]) -> T:
        """Run ``call`` in one transaction (see the sync backend's _run)."""
        attempts = Attempts(self._options)
        while True:
            ending = None if call.read else Ending(self._options.channel, together=call.together)
            try:
                pool = await self._pools.get()
                conn = await pool.getconn(attempts.remaining())
                try:
                    if call.once and call.together:
                        check_alive(conn)  # dead before the call: retried, nothing was sent
                    flow = call.attempt(attempts.failures + 1)
                    return await _pump(conn, flow, transaction=not call.read, ending=ending)
                except BaseException as exc:
                    if ending is not None and isinstance(exc, psycopg.Error):
                        ending.failed(conn)  # before the session is rolled back
                    with contextlib.suppress(Exception):  # a lost one: the pool replaces it
                        await conn.rollback()
                    raise
                finally:
                    settle(conn)
                    await pool.putconn(conn)
            except psycopg.Error as exc:
                if ending is not None and ending.committing and call.once:
                    attempts.fail(exc)
                delay = attempts.pause(exc)
                pool_now = self._pools.current()
                if lost_connection(exc) and pool_now is not None:
                    with contextlib.suppress(Exception):  # replace dead pooled connections
                        await pool_now.check()
                await asyncio.sleep(delay)

    async def execute(self, op: Op[R]) -> Result[R]:
        """See PostgresBackend.execute."""
        if isinstance(op, EventsOp) and op.wait > 0:
            return cast("Result[R]", await self._wait_events(op))
        return await self._run(self._flows.call(op))

    async def _wait_events(self, op: EventsOp) -> Result[list[EventRow]]:
        """Read events; when there are none, wait for the store's shared LISTEN session."""
        deadline = time.monotonic() + op.wait
        listener = self._listener
        held_pause = HELD_PAUSE[0]
        follow = Run(lambda n: self._flows.follow_events(op), read=True, once=False)
        while True:
            mark = listener.ready(op.tenant)
            if mark is None:  # opening the session blocks: not on the loop
                mark = await asyncio.to_thread(listener.start, op.tenant)
            began = time.monotonic()
            quiet = listener.quiet(op.tenant, op.after, mark, began)
            if quiet > 0:  # see the sync backend's _wait_events
                if deadline <= began:
                    return Result(Outcome.OK, [])
                await listener.await_change(op.tenant, mark, min(deadline - began, quiet))
                continue
            read = result, held = await self._run(follow)
            listener.seen(op, mark, read, began + UNNOTIFIED_WAIT)
            remaining = deadline - time.monotonic()
            if result.value or result.outcome is not Outcome.OK or remaining <= 0:
                return result
            if held:  # see the sync backend's _wait_events
                await listener.await_change(op.tenant, mark, min(remaining, held_pause))
                held_pause = min(HELD_PAUSE[1], held_pause * 2)
            else:
                await listener.await_change(op.tenant, mark, min(remaining, UNNOTIFIED_WAIT))

    async def ping(self) -> None:
        """See AsyncBackend.ping."""
        await self._run(Run(lambda n: self._flows.ping(), read=True, once=False))

    async def close(self) -> None:
        """Close every loop's pool and the LISTEN session."""
        await asyncio.to_thread(self._listener.close)
        await self._pools.aclose()


async def _close_pool(pool: AsyncConnectionPool[AsyncSession]) -> None:
    """Close ``pool`` and its idle sessions, also when its loop is ending.

    ``close()`` sets the pool closed and sends its workers their stop, then waits for them and
    only after that closes the idle connections. When the loop is ending it has cancelled the
    workers, and that wait re-raises a worker's cancellation (which says nothing of the caller):
    the idle connections are taken out first and closed here, so the sessions end with the
    loop. Only a cancellation of the calling task itself propagates.
    """
    idle: list[psycopg.AsyncConnection[Any]] = []
    try:
        with contextlib.suppress(psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed):
            for _ in range(pool.get_stats().get("pool_available", 0)):
                idle.append(await pool.getconn(timeout=0.05))
        await pool.close()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
    finally:
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()
