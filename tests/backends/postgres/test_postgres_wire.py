"""The drivers' statements through psycopg's libpq wrapper (``_wire``): failures on the way.

A call that fails or is cancelled with answers outstanding must not hand a half-read
pipeline back to the pool; large messages must not block both ends of the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import select
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

import threadkeep
from tests.backends.postgres._helpers import connect, url_of
from threadkeep.backends.postgres import _wire
from threadkeep.backends.postgres._schema import Unread

pytestmark = pytest.mark.postgres


def test_placeholders_convert_as_psycopg_converts_them() -> None:
    sql, names, formats = _wire.convert("SELECT %(a)s, %(b)s, %(a)s, '%%' || %(c)s")
    assert sql == b"SELECT $1, $2, $1, '%' || $3"
    assert names == ("a", "b", "c")
    assert formats == (psycopg.adapt.PyFormat.AUTO,) * 3
    for odd in ("SELECT %s", "SELECT %(a)b", "SELECT 5 % 3"):
        with pytest.raises(psycopg.ProgrammingError):
            _wire.convert(odd)


def _pool_notes(caplog: pytest.LogCaptureFixture) -> set[str]:
    """What the pool logged: a closed session discarded, and nothing else (no session handed
    back in a transaction or mid-statement, "closing returned connection")."""
    return {r.msg.split(":")[0] for r in caplog.records if r.name == "psycopg.pool"}


def _blocked_on_lock(schema: str, pid: int) -> None:
    """Wait until the session ``pid`` waits for a lock."""
    with connect(schema, autocommit=True) as watch:
        for _ in range(500):
            row = watch.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.01)
    raise AssertionError("the append never waited for the lock")


def test_a_cancelled_async_append_leaves_the_pool_usable(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An append cancelled while it waits for its answers (the conversation's row locked by
    another session) is cancelled on the server and closes its session: the pool's only
    session is replaced, the next calls work, and the pool logs no session handed back
    mid-statement."""

    async def main() -> list[str]:
        astore = await threadkeep.open_async(url_of(schema) + "&pool_size=1")
        try:
            conv = await astore.resume("contact-cancel", tenant="t")
            await astore.append(conv.id, "user", "first")
            backend: Any = astore._backend
            pool = await backend._pools.get()
            async with pool.connection() as conn:
                pid = conn.info.backend_pid
            with connect(schema) as holder:  # a transaction holding the row's lock
                holder.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (conv.id,))
                task = asyncio.create_task(astore.append(conv.id, "user", "cancelled"))
                await asyncio.sleep(0)
                await asyncio.to_thread(_blocked_on_lock, schema, pid)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                holder.rollback()
            await astore.append(conv.id, "user", "after")
            async with pool.connection() as conn:
                assert conn.info.backend_pid != pid  # the cancelled one was closed
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            return [m.content for m in await astore.messages(conv.id, last=5)]
        finally:
            await astore.aclose()

    with caplog.at_level(logging.WARNING):
        contents = asyncio.run(main())
    # the server was asked to cancel it while it waited for the lock: not committed
    assert contents == ["first", "after"]
    assert _pool_notes(caplog) <= {"discarding closed connection"}


def test_an_interrupted_sync_append_leaves_the_pool_usable(
    schema: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync append interrupted while waiting for its answers (``KeyboardInterrupt`` in the
    wait) closes its session; the next call works on a new one."""
    store = threadkeep.open(url_of(schema) + "&pool_size=1")
    try:
        conv = store.resume("contact-int", tenant="t")
        store.append(conv.id, "user", "first")
        real = _wire._wait

        def interrupted(fd: int, write: bool) -> bool:
            raise KeyboardInterrupt

        monkeypatch.setattr(_wire, "_wait", interrupted)
        with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
            store.append(conv.id, "user", "interrupted")
        monkeypatch.setattr(_wire, "_wait", real)
        store.append(conv.id, "user", "after")
        contents = [m.content for m in store.messages(conv.id, last=5)]
        assert contents[0] == "first" and contents[-1] == "after"
        assert _pool_notes(caplog) <= {"discarding closed connection"}
    finally:
        store.close()


def test_an_error_of_the_flow_with_statements_queued_closes_the_session(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow that raises with statements queued and not sent (BEGIN) cannot leave pipeline
    mode: the session is closed, nothing of it committed, the next call works."""
    store = threadkeep.open(url_of(schema) + "&pool_size=1")
    try:
        conv = store.resume("contact-flow", tenant="t")
        flows = store._backend._flows  # type: ignore[attr-defined]
        real = flows.call

        def failing(op: Any) -> Any:
            def attempt(n: int) -> Any:
                yield Unread("SELECT 1"), {}  # queued behind BEGIN, not sent
                raise RuntimeError("the flow failed")

            return dataclasses.replace(real(op), attempt=attempt)

        monkeypatch.setattr(flows, "call", failing)
        with pytest.raises(RuntimeError):
            store.append(conv.id, "user", "never")
        monkeypatch.undo()
        store.append(conv.id, "user", "after")
        assert [m.content for m in store.messages(conv.id, last=5)] == ["after"]
    finally:
        store.close()


BIG = "ü" * (3 * 1024 * 1024)  # 6 MiB of UTF-8: more than either side's socket buffers
LIMITS = threadkeep.Limits(max_content_bytes=8 * 1024 * 1024)


def test_a_multi_megabyte_message_round_trips(schema: str) -> None:
    """A message of several MiB is written and read back whole (the flush reads while it
    writes), sync and async."""
    with threadkeep.open(url_of(schema) + "&pool_size=1", limits=LIMITS) as store:
        conv = store.resume("contact-big", tenant="t")
        store.append(conv.id, "user", BIG)
        assert store.messages(conv.id, last=1)[0].content == BIG

    async def main() -> bool:
        astore = await threadkeep.open_async(url_of(schema) + "&pool_size=1", limits=LIMITS)
        try:
            conv = await astore.resume("contact-big-a", tenant="t")
            await astore.append(conv.id, "user", BIG + "a")
            return (await astore.messages(conv.id, last=1))[0].content == BIG + "a"
        finally:
            await astore.aclose()

    assert asyncio.run(main())


def test_a_rollback_keeps_the_prepared_statements(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drivers' statements are prepared once per session (``_wire``). psycopg's
    ``rollback()`` (after a failed call) sends ``DEALLOCATE ALL`` once psycopg itself prepared
    anything on the session (its sixth run of a statement, ``pool.check()``'s included):
    the pool's sessions have psycopg's preparing off, so they keep theirs."""
    store = threadkeep.open(url_of(schema) + "&pool_size=1")
    try:
        conv = store.resume("contact-prep", tenant="t")
        for i in range(3):
            store.append(conv.id, "user", f"m{i}")
        pool = store._backend._pool  # type: ignore[attr-defined]
        with pool.connection() as conn:
            for _ in range(8):  # psycopg's own statements, as pool.check() runs them
                conn.execute("SELECT 1").fetchall()
            ours = set(conn.wire.prepared)
        flows = store._backend._flows  # type: ignore[attr-defined]
        real = flows.call

        def failing(op: Any) -> Any:
            run = real(op)

            def attempt(n: int) -> Any:
                yield Unread("SELECT 1 / 0"), {}
                return (yield from run.attempt(n))

            return dataclasses.replace(run, attempt=attempt)

        monkeypatch.setattr(flows, "call", failing)
        with pytest.raises(threadkeep.BackendError):
            store.append(conv.id, "user", "failed")  # rolled back by the driver
        monkeypatch.undo()
        with pool.connection() as conn:
            names = {
                r[0].encode()
                for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
            }
        assert ours and ours <= names
        store.append(conv.id, "user", "after")
        assert store.messages(conv.id, last=1)[0].content == "after"
    finally:
        store.close()


def test_past_its_cap_a_session_runs_statements_unnamed(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session prepares at most ``_MAX_PREPARED`` statements; the others run unnamed."""
    monkeypatch.setattr(_wire, "_MAX_PREPARED", 2)
    store = threadkeep.open(url_of(schema) + "&pool_size=1")
    try:
        conv = store.resume("contact-cap", tenant="t")
        for i in range(3):
            store.append(conv.id, "user", f"m{i}")
            store.save_state(conv.id, {"i": i})
        assert [m.content for m in store.messages(conv.id, last=5)] == ["m0", "m1", "m2"]
        pool = store._backend._pool  # type: ignore[attr-defined]
        with pool.connection() as conn:
            assert len(conn.wire.prepared) == 2
            count = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert count == (2,)
    finally:
        store.close()


def test_statements_dropped_behind_the_session_cost_one_call(schema: str) -> None:
    """Someone's ``DEALLOCATE ALL`` on a pooled session (a pooler's server switch does the
    same): a statement the session prepared before it fails once (26000, "does not exist"),
    that session is closed, and every later call works on a new one; a statement prepared
    after the drop does not later fail as "already exists" (42P05) on every call."""
    store = threadkeep.open(url_of(schema) + "&pool_size=1")
    try:
        conv = store.resume("contact-drop", tenant="t")
        store.append(conv.id, "user", "m1")
        pool = store._backend._pool  # type: ignore[attr-defined]
        with pool.connection() as conn:
            pid = conn.info.backend_pid
            conn.execute("DEALLOCATE ALL")
        assert store.list(tenant="t").items  # its statement is new: prepared after the drop
        with pytest.raises(threadkeep.BackendError, match="does not exist"):
            store.append(conv.id, "user", "dropped")
        for i in range(2):
            store.append(conv.id, "user", f"after {i}")
            assert store.list(tenant="t").items
        with pool.connection() as conn:
            assert conn.info.backend_pid != pid
        contents = [m.content for m in store.messages(conv.id)]
        assert contents == ["m1", "after 0", "after 1"]
    finally:
        store.close()


class _Freezer:
    """A TCP relay to the test server that can stop forwarding (a server or network that no
    longer answers, as the client sees it)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.held: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.frozen.is_set():
                self.held.append(client)
                continue
            server = socket.create_connection(self.target)
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        while not self.frozen.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.05)
            for side in ready:
                data = side.recv(65536)
                if not data:
                    a.close()
                    b.close()
                    return
                (b if side is a else a).sendall(data)
        self.held += [a, b]

    def close(self) -> None:
        self.listener.close()
        for held in self.held:
            held.close()


def test_a_cancellation_against_a_silent_server_blocks_nothing(schema: str) -> None:
    """An async append cancelled while the server (here a relay that stopped forwarding)
    answers nothing ends at once, and asking the server to cancel it never stops the event
    loop (psycopg's ``cancel_safe``, bounded by ``CANCEL_TIMEOUT``; libpq's blocking cancel
    held the interpreter until the server answered, which a silent one never does)."""
    parts = urlsplit(url_of(schema))
    freezer = _Freezer((parts.hostname or "127.0.0.1", parts.port or 5432))
    relayed = parts._replace(netloc=f"{parts.username}@127.0.0.1:{freezer.port}").geturl()

    async def main() -> tuple[float, float]:
        astore = await threadkeep.open_async(relayed + "&pool_size=1&timeout=3")
        try:
            conv = await astore.resume("contact-silent", tenant="t")
            await astore.append(conv.id, "user", "first")
            stalls = [0.0]

            async def beat() -> None:
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    stalls.append(now - last)
                    last = now

            beating = asyncio.create_task(beat())
            freezer.frozen.set()
            task = asyncio.create_task(astore.append(conv.id, "user", "unanswered"))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 30)
            took = time.monotonic() - started
            beating.cancel()
            return took, max(stalls)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(astore.aclose(), 10)

    try:
        took, stall = asyncio.run(main())
    finally:
        freezer.close()
    assert took < _wire.CANCEL_TIMEOUT + 5
    assert stall < 1.0  # the loop went on while the cancel request waited
