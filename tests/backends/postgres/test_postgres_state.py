"""PostgreSQL state saves in one round trip (``schema.SAVE``), held to ``decide.save_state``.

The flow sends the row lock and one statement that writes only what the rules would, with
COMMIT in the same flush; it judges the statement's answer with ``decide.save_state`` and,
should the statement have written nothing the rules would write, saves in statements judged
one by one (``Flows._save_locked``). Here both run on the same starting rows, each in a
savepoint rolled back afterwards, and must answer and leave the same rows, over generated
cases: live or expired, another tenant's, stale and current expected versions, rollbacks to
kept, trimmed and unknown versions, versions kept from 1 up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import resource
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import (
    SHARED,
    blocked_by,
    call_in_thread,
    connect,
    flows_of,
    open_backend,
    recorded,
    sessions,
    url_of,
)
from threadkeep._rules import ops
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow
from threadkeep.backends.postgres import _schema as schema
from threadkeep.backends.postgres._conn import pump

pytestmark = pytest.mark.postgres

NOW = 1_000_000_000
HUGE = 2**40  # a version past the integer column's range (the caller's argument is an int)


@pytest.fixture
def migrated(schema: str) -> str:
    open_backend(schema).close()
    return schema


def _rows(conn: psycopg.Connection[Any], cid: str, after_event: int) -> tuple[Any, ...]:
    """Every row a save may write: the conversation, its states and events."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return conn.execute(sql, {"id": cid, "after": after_event}).fetchall()

    return (
        rows("SELECT * FROM conversations WHERE id = %(id)s"),
        rows("SELECT * FROM states WHERE conversation_id = %(id)s ORDER BY version"),
        rows(
            "SELECT kind, tenant, conversation_id, data_json, at_us FROM events "
            "WHERE conversation_id = %(id)s AND id > %(after)s ORDER BY id"
        ),
    )


def _start(conn: psycopg.Connection[Any], case: dict[str, Any]) -> str:
    """Insert the case's conversation (unless it is absent) and its kept versions."""
    cid = uuid.uuid4().hex
    if case["absent"]:
        return cid
    current = case["current"]
    row = ConversationRow(
        id=cid, tenant="t1", contact_id="a", agent_id=None, channel=None, status="active",
        stage=None, metadata_json="{}", created_us=NOW - 10, activity_us=NOW - 10,
        expires_us=case["expires_us"], idle_us=NOW + 5, message_count=0, last_seq=0,
        state_version=current, retention=RetentionUs(case["ttl_us"], 900, 5, None),
    )  # fmt: skip
    conn.execute(schema.INSERT_CONVERSATION, schema.encode_conversation(row))
    for version in range(max(1, current - case["stored"] + 1), current + 1):
        conn.execute(
            "INSERT INTO states (tenant, conversation_id, version, value_json, saved_us) "
            "VALUES ('t1', %s, %s, %s, %s)",
            (cid, version, f'{{"v":{version}}}', NOW - 100 + version),
        )
    return cid


# weighted toward saves that go through (a rare draw of each failing condition), so the
# boundaries of the ones that decide (expiry, versions, trim) are met often
CASES = st.fixed_dictionaries(
    {
        "absent": st.sampled_from([False, False, False, True]),
        "expires_us": st.sampled_from([None, NOW - 1, NOW, NOW + 1]),
        "ttl_us": st.sampled_from([None, 50]),
        "tenant": st.sampled_from([None, "t1", "t1", "t2"]),
        "current": st.integers(0, 5),
        "stored": st.integers(0, 6),  # how many of the newest versions are in the table
        "expected": st.sampled_from([None, None, "current", "current", "stale", "ahead", "huge"]),
        "rollback": st.sampled_from([None, None, None, 0, 1, 3, 5, 6, HUGE]),
        "kept": st.integers(1, 4),
    }
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=CASES)
# the trim's boundary: 3 versions stored, 2 kept, so the save deletes exactly one
@example(
    case={
        "absent": False, "expires_us": None, "ttl_us": 50, "tenant": "t1", "current": 3,
        "stored": 3, "expected": "current", "rollback": None, "kept": 2,
    }
)  # fmt: skip
# the expiry's boundary: a row expiring at the save's own time is gone (the rules decline)
@example(
    case={
        "absent": False, "expires_us": NOW, "ttl_us": 50, "tenant": "t1", "current": 1,
        "stored": 1, "expected": None, "rollback": None, "kept": 2,
    }
)  # fmt: skip
# a rollback to the oldest kept version, the one this save trims
@example(
    case={
        "absent": False, "expires_us": None, "ttl_us": None, "tenant": None, "current": 3,
        "stored": 2, "expected": None, "rollback": 2, "kept": 2,
    }
)  # fmt: skip
def test_one_statement_answers_and_writes_as_the_rules_do(
    migrated: str, case: dict[str, Any]
) -> None:
    flows = flows_of(migrated)
    expected = {
        None: None,
        "current": case["current"],
        "stale": case["current"] - 1,
        "ahead": case["current"] + 1,
        "huge": HUGE,
    }[case["expected"]]
    op = ops.SaveStateOp(
        conversation_id="", tenant=case["tenant"], now_us=NOW, value_json='{"new":true}',
        expected_version=expected, rollback_to=case["rollback"], versions_kept=case["kept"],
        events_kept=10_000,
    )  # fmt: skip
    with connect(migrated) as conn:
        cid = _start(conn, case)
        op = dataclasses.replace(op, conversation_id=cid)
        after = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchall()[0][0]
        conn.execute("SAVEPOINT start")
        seen: list[str] = []
        fast = pump(conn, recorded(flows._save_state(op), seen))
        fast_rows = _rows(conn, cid, after)
        conn.execute("ROLLBACK TO SAVEPOINT start")
        slow = pump(conn, flows._save_locked(op))
        slow_rows = _rows(conn, cid, after)
        conn.rollback()
    # the rules never save where the statement did not
    assert seen == [schema.LOCK_FOR_SAVE.pick(op.tenant), schema.SAVE.pick(op.tenant)]
    assert fast == slow
    assert fast_rows == slow_rows


def test_the_rules_save_where_the_statement_declines(
    migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the statement's conditions lag the rules (here it declines every save), the save
    is made as the rules say, in statements of a transaction of its own: the same versions,
    trim, row and events."""
    declining = schema.Routed(
        *(
            schema.Closing(sql.replace("FROM c WHERE (", "FROM c WHERE false AND ("))
            for sql in schema.SAVE
        )
    )
    assert declining != schema.SAVE
    monkeypatch.setattr(schema, "SAVE", declining)
    limits = threadkeep.Limits(state_versions_kept=2)
    with threadkeep.open(url_of(migrated), limits=limits) as store:
        conv = store.resume("c", tenant="t")
        backend: Any = store._backend
        seen: list[str] = []
        real = backend._flows.call

        def recording(op: Any) -> Any:
            run = real(op)
            return dataclasses.replace(run, attempt=lambda n: recorded(run.attempt(n), seen))

        monkeypatch.setattr(backend._flows, "call", recording)
        assert store.save_state(conv.id, {"n": 1}) == 1
        assert seen == [
            schema.LOCK_FOR_SAVE.every,
            declining.every,
            schema.LOCK_CONVERSATION.every,
            schema.SAVE_STATE,
            schema.EMIT,
        ]
        assert store.save_state(conv.id, {"n": 2}, expected_version=1, tenant="t") == 2
        assert store.save_state(conv.id, {"n": 3}) == 3
        with pytest.raises(threadkeep.StateConflict):
            store.save_state(conv.id, {"n": 4}, expected_version=1)
        assert store.rollback_state(conv.id, to_version=2) == 4
        assert store.load_state(conv.id).value == {"n": 2}
        assert store.load_state(conv.id, version=3).value == {"n": 3}
        events = [(e.kind.value, e.data) for e in store.events(tenant="t", timeout=0)]
    assert events[1:] == [("state.saved", {"version": v}) for v in (1, 2, 3, 4)]
    with connect(migrated) as conn:
        versions = conn.execute("SELECT version FROM states ORDER BY 1").fetchall()
    assert versions == [(3,), (4,)]


def _terminate_the_pool_session(schema: str) -> None:
    """End the store's one pool session from outside; return as soon as the server no
    longer lists it (its FATAL message sent, the end of the stream a moment later: the
    moment a save found the connection alive, and lost it after its COMMIT had left)."""
    (pid,) = [p for p, name in sessions(schema) if not name.startswith("threadkeep-events")]
    with psycopg.connect(SHARED, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(10_000):
            listed = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
            if admin.execute(listed, (pid,)).fetchone() == (0,):
                return
            time.sleep(0.001)
    raise AssertionError("the session did not end")


ROUNDS = 8  # without the check before sending, about one round in three failed


def test_a_pooled_connection_lost_while_idle_is_retried(migrated: str) -> None:
    """The lock, the save and COMMIT go in one flush, and a save is not sent again once its
    COMMIT may have left. A connection the server ended while it sat in the pool is found
    before anything is sent (``_conn.check_alive``), so the save is retried on a new one,
    not refused as a commit of unknown outcome, and applied once."""
    with threadkeep.open(url_of(migrated) + "&pool_size=1") as store:
        conv = store.resume("c", tenant="t")
        version = store.save_state(conv.id, {"n": 0})
        for n in range(1, ROUNDS + 1):
            _terminate_the_pool_session(migrated)
            version = store.save_state(conv.id, {"n": n}, expected_version=version)
            assert version == n + 1
        assert store.load_state(conv.id).value == {"n": ROUNDS}


def test_a_pooled_connection_lost_while_idle_is_retried_async(migrated: str) -> None:
    async def run() -> None:
        store = await threadkeep.open_async(url_of(migrated) + "&pool_size=1")
        try:
            conv = await store.resume("c", tenant="t")
            version = await store.save_state(conv.id, {"n": 0})
            for n in range(1, ROUNDS + 1):
                await asyncio.to_thread(_terminate_the_pool_session, migrated)
                version = await store.save_state(conv.id, {"n": n}, expected_version=version)
                assert version == n + 1
        finally:
            await store.aclose()

    asyncio.run(run())


def test_concurrent_saves_trim_to_the_versions_kept(migrated: str) -> None:
    """Savers of one conversation queue on its row lock; each one's statement reads the states
    after the lock is granted, so it trims the versions the one before it committed."""
    limits = threadkeep.Limits(state_versions_kept=1)
    with threadkeep.open(url_of(migrated), limits=limits) as store:
        conv = store.resume("c", tenant="t")

        def save(n: int) -> None:
            for i in range(15):
                store.save_state(conv.id, {"n": n, "i": i})

        savers = [threading.Thread(target=save, args=(n,)) for n in range(4)]
        for t in savers:
            t.start()
        for t in savers:
            t.join(120)
        with connect(migrated) as conn:
            versions = conn.execute("SELECT version FROM states").fetchall()
        assert versions == [(60,)]
        assert store.load_state(conv.id).version == 60


@contextlib.contextmanager
def _descriptors_past_fd_setsize() -> Iterator[None]:
    """Hold every descriptor number up to past FD_SETSIZE (1,024) open, so whatever the
    process opens next (a store's connections) gets a number past it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1_200 + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the hard limit on open files is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held = [os.open(os.devnull, os.O_RDONLY)]  # kept open too: no number below is left free
    try:
        while held[-1] < 1_200:
            held.append(os.dup(held[0]))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_saves_on_a_connection_past_fd_setsize(migrated: str) -> None:
    """A process with more than 1,024 descriptors open hands the pool's connections numbers
    past FD_SETSIZE: the check before a save (``_conn.check_alive``) works on any number
    (``select()`` raised ValueError there, and every save failed)."""
    with (
        _descriptors_past_fd_setsize(),
        threadkeep.open(url_of(migrated) + "&pool_size=1") as store,
    ):
        conv = store.resume("c", tenant="t")
        assert store.save_state(conv.id, {"n": 1}) == 1
        assert store.save_state(conv.id, {"n": 2}, expected_version=1) == 2
        assert store.load_state(conv.id).value == {"n": 2}
        assert store.resume("c", tenant="t").id == conv.id
        backend: Any = store._backend
        with backend._pool.connection() as conn:  # the one the saves ran on
            assert conn.pgconn.socket > 1_024


def test_saves_on_a_connection_past_fd_setsize_async(migrated: str) -> None:
    async def run() -> None:
        store = await threadkeep.open_async(url_of(migrated) + "&pool_size=1")
        try:
            conv = await store.resume("c", tenant="t")
            assert await store.save_state(conv.id, {"n": 1}) == 1
            assert await store.save_state(conv.id, {"n": 2}, expected_version=1) == 2
            assert (await store.load_state(conv.id)).value == {"n": 2}
            assert (await store.resume("c", tenant="t")).id == conv.id
            backend: Any = store._backend
            pool = backend._pools.current()
            async with pool.connection() as conn:
                assert conn.pgconn.socket > 1_024
        finally:
            await store.aclose()

    with _descriptors_past_fd_setsize():
        asyncio.run(run())


def _lose_a_deadlock(migrated: str, start_save: Any) -> None:
    """Call ``start_save`` (version 1 saved, keeping one version: the save makes version 2
    and deletes version 1) while another transaction holds version 1's row, then make that
    transaction wait for the conversation's row, which the save holds: a deadlock. The other
    transaction waits 30 s before looking for one and the save's session 1 s (the server's
    default), so the save is the one the server ends."""
    with connect(migrated) as other:
        other.execute("SET deadlock_timeout = '30s'")
        (cid,) = other.execute("SELECT id FROM conversations").fetchone() or ("",)
        locked = "SELECT FROM states WHERE conversation_id = %s AND version = 1 FOR UPDATE"
        assert other.execute(locked, (cid,)).fetchall() == [()]
        start_save()
        wait_until("the save to wait for version 1", lambda: blocked_by(other.info.backend_pid))
        # granted once the server has ended the save's transaction
        other.execute("SELECT FROM conversations WHERE id = %s FOR UPDATE", (cid,))
        other.rollback()


def _saved_once(migrated: str) -> None:
    with connect(migrated) as conn:
        states = conn.execute("SELECT version, value_json FROM states").fetchall()
        saved = conn.execute(
            "SELECT data_json FROM events WHERE kind = 'state.saved' ORDER BY id"
        ).fetchall()
        version = conn.execute("SELECT state_version FROM conversations").fetchone()
    assert states == [(2, '{"n":2}')]
    assert saved == [('{"version":1}',), ('{"version":2}',)]
    assert version == (2,)


def _second_save(migrated: str, interfere: Any, limits: threadkeep.Limits | None = None) -> None:
    """Save version 1, then version 2 (expecting 1) from a thread while ``interfere(migrated,
    start)`` runs (``start`` starts that save): it lands once, as version 2."""
    with threadkeep.open(url_of(migrated), limits=limits) as store:
        conv = store.resume("c", tenant="t")
        assert store.save_state(conv.id, {"n": 1}) == 1
        saves: list[Any] = []

        def start() -> None:
            save = lambda: store.save_state(conv.id, {"n": 2}, expected_version=1)  # noqa: E731
            saves.append(call_in_thread(save))

        interfere(migrated, start)
        thread, out = saves[0]
        thread.join(60)
        assert out == [2]
        assert store.load_state(conv.id).value == {"n": 2}


def _second_save_async(
    migrated: str, interfere: Any, limits: threadkeep.Limits | None = None
) -> None:
    """``_second_save`` on the asyncio store (``interfere`` runs in a thread)."""

    async def run() -> None:
        store = await threadkeep.open_async(url_of(migrated), limits=limits)
        try:
            conv = await store.resume("c", tenant="t")
            assert await store.save_state(conv.id, {"n": 1}) == 1
            loop = asyncio.get_running_loop()
            saves: list[Any] = []

            def start() -> None:
                save = store.save_state(conv.id, {"n": 2}, expected_version=1)
                saves.append(asyncio.run_coroutine_threadsafe(save, loop))

            await asyncio.to_thread(interfere, migrated, start)
            assert await asyncio.wrap_future(saves[0]) == 2
            assert (await store.load_state(conv.id)).value == {"n": 2}
        finally:
            await store.aclose()

    asyncio.run(run())


ONE_KEPT = threadkeep.Limits(state_versions_kept=1)


def test_a_save_that_loses_a_deadlock_is_retried(migrated: str) -> None:
    """The lock, the save and its commit go in one flush. A server error before the commit
    (here the save is chosen to end a deadlock) rolls the implicit transaction back, so it
    did not commit: the save is retried as every flow retries a deadlock, and applied once (not
    refused as a commit of unknown outcome)."""
    _second_save(migrated, _lose_a_deadlock, ONE_KEPT)
    _saved_once(migrated)


def test_a_save_that_loses_a_deadlock_is_retried_async(migrated: str) -> None:
    _second_save_async(migrated, _lose_a_deadlock, ONE_KEPT)
    _saved_once(migrated)


def _end_a_save_waiting_for_the_row(migrated: str, start_save: Any) -> None:
    """Call ``start_save`` while another transaction holds the conversation's row, end the
    save's session while it waits for that row (a server restart, a failover), then let the
    row go. The save had certainly not committed: it must be retried, not refused as a
    commit of unknown outcome."""
    with connect(migrated) as other:
        locked = "SELECT FROM conversations FOR UPDATE"
        assert other.execute(locked).fetchall() == [()]
        start_save()
        holder = other.info.backend_pid
        wait_until("the save to wait for the row", lambda: blocked_by(holder))
        with psycopg.connect(SHARED, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE %s = ANY(pg_blocking_pids(pid))",
                (holder,),
            ).fetchall()
        assert ended == [(True,)]
        wait_until("the retried save to wait again", lambda: blocked_by(holder))
        other.rollback()


def test_a_save_whose_session_ends_while_it_waits_for_the_row_is_retried(
    migrated: str,
) -> None:
    """The row lock goes in the save's one flush with COMMIT, but it is taken with SKIP
    LOCKED: a save that finds the row busy writes nothing and takes the row in a pass of its
    own, answered before its COMMIT is queued (which also no longer counts as committing
    because the pass before it committed), so losing the session while waiting is retried."""
    _second_save(migrated, _end_a_save_waiting_for_the_row)


def test_a_save_whose_session_ends_while_it_waits_for_the_row_is_retried_async(
    migrated: str,
) -> None:
    _second_save_async(migrated, _end_a_save_waiting_for_the_row)
