"""Round trips and statements per call on PostgreSQL, counted, never timed.

Round trips are the runs of the client's messages that the server answers, in a libpq trace
of the store's only pool connection; statements are the steps a call's flow yields. A read is
one statement and one round trip, and so is an append (its commit travels with it); resume()
finds the open conversation or inserts the new one and its event in one statement that
travels with the contact's lock and its commit (and a NOTIFY, a round trip of its own, only
when it created one); a state save sends its row lock, one statement (version, trim, row and
event) and its commit together: one round trip each, as is a lease's release; taking a lease
is one statement answered before its COMMIT (two round trips), and a fact's write two (its
read under the contact's lock). A write of one round trip is an implicit transaction: no
BEGIN, no COMMIT statement (``_conn.Ending``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psycopg
import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import call_in_thread, connect, recorded, url_of
from threadkeep._rules import ops
from threadkeep.backends.postgres import _conn, _schema as schema, _schema as sql, _wire, sync

#: psycopg prepares a statement on its 6th run (one round trip more, once): warm up past it.
WARM = 8
CALLS = 5


@pytest.fixture
def store(schema: str) -> Iterator[Any]:
    with threadkeep.open(url_of(schema) + "&pool_size=1") as opened:
        yield opened


def round_trips(store: Any, call: Callable[[int], object], calls: int = CALLS) -> float:
    """Round trips per call of ``call(i)``, after warming it up."""
    for i in range(WARM):
        call(-1 - i)
    pool = store._backend._pool
    fd, path = tempfile.mkstemp()
    try:
        with pool.connection() as conn:
            conn.pgconn.trace(fd)
        for i in range(calls):
            call(i)
        with pool.connection() as conn:
            conn.pgconn.untrace()
        with open(path, encoding="utf-8", errors="replace") as trace:
            lines = trace.read().splitlines()
    finally:
        os.close(fd)
        os.unlink(path)
    return _flushes(lines) / calls


def _flushes(lines: list[str]) -> int:
    """Round trips in a libpq trace: each run of the client's messages (``F``) that the server
    then answers (``B``). Not its ReadyForQuery messages: an implicit transaction and the
    NOTIFY after it end at a Sync each, two in one flush (``_conn.Ending``)."""
    runs = 0
    sending = False
    for line in lines:
        if "\tF\t" in line:
            sending = True
        elif "\tB\t" in line and sending:
            sending = False
            runs += 1
    return runs


def steps(store: Any, monkeypatch: pytest.MonkeyPatch, call: Callable[[], object]) -> list[str]:
    """The statements the flow of one ``call()`` yields, in order."""
    flows = store._backend._flows
    real = flows.call
    seen: list[str] = []

    def counting(op: Any) -> Any:
        run = real(op)
        return dataclasses.replace(run, attempt=lambda n: recorded(run.attempt(n), seen))

    monkeypatch.setattr(flows, "call", counting)
    try:
        call()
    finally:
        monkeypatch.undo()
    return seen


@pytest.fixture
def conversation(store: Any) -> Any:
    conv = store.resume("contact-rt", tenant="t")
    for i in range(30):
        store.append(conv.id, "user" if i % 2 == 0 else "assistant", f"message {i}")
    store.save_state(conv.id, {"stage": "Q1"})
    return conv


def test_reads_are_one_statement_and_one_round_trip(
    store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = conversation.id
    reads: dict[str, Callable[[int], object]] = {
        "messages(last=20)": lambda i: store.messages(cid, last=20),
        "messages(last=20, tenant=)": lambda i: store.messages(cid, last=20, tenant="t"),
        "context()": lambda i: store.context(cid),
        "load_state()": lambda i: store.load_state(cid),
        "find_open()": lambda i: store.find_open("contact-rt", tenant="t"),
        "get()": lambda i: store.get(cid),
    }
    for name, read in reads.items():
        assert round_trips(store, read) == 1.0, name
        assert len(steps(store, monkeypatch, partial(read, 0))) == 1, name


def test_a_window_read_fetches_only_the_message_columns(
    store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """messages(last=) reads ``LAST``: 8 columns a row, not context()'s window size too."""
    cid = conversation.id
    assert steps(store, monkeypatch, lambda: store.messages(cid, last=3)) == [
        schema.LAST.pick(None)
    ]
    assert steps(store, monkeypatch, lambda: store.context(cid)) == [schema.WINDOW.pick(None)]
    store.messages(cid, last=3)
    with store._backend._pool.connection() as conn:
        assert conn.wire.tx.pgresult.nfields == 8
    assert [m.seq for m in store.messages(cid, last=3)] == [m.seq for m in store.messages(cid)[-3:]]


def test_an_append_is_one_statement_and_one_round_trip(
    store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = conversation.id
    common = [schema.INDEX_SCANS, schema.APPEND_ONE.every]  # no function (session 12)
    assert steps(store, monkeypatch, lambda: store.append(cid, "user", "x")) == common
    keyed = steps(store, monkeypatch, lambda: store.append(cid, "user", "x", idempotency_key="q"))
    assert keyed == [schema.APPEND]
    bounded = store.start("contact-b", tenant="t", retention=threadkeep.Retention(max_messages=5))
    appends: dict[str, Callable[[int], object]] = {
        "append()": lambda i: store.append(cid, "user", f"m{i}"),
        "append(tenant=)": lambda i: store.append(cid, "user", f"m{i}", tenant="t"),
        "append(idempotency_key=)": lambda i: store.append(
            cid, "user", "k", idempotency_key=f"k{i}"
        ),
        "a replay": lambda i: store.append(cid, "user", "k", idempotency_key="k-1"),
        "append(), trimming": lambda i: store.append(bounded.id, "user", f"m{i}"),
    }
    # BEGIN, APPEND, COMMIT and NOTIFY in one flush (was 2; 3 with a key or a trim)
    for name, append in appends.items():
        assert round_trips(store, append) == 1.0, name
    with store.turn(cid, lease=60) as turn:  # fenced by the lease (was 2)
        assert round_trips(store, lambda i: turn.append("assistant", f"a{i}")) == 1.0


def test_resume_finds_or_creates_in_one_statement_with_its_lock(
    store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = steps(store, monkeypatch, lambda: store.resume("contact-new", tenant="t"))
    assert new == [schema.LOCK_CONTACT, schema.RESUME, schema.WAKE]  # the event is RESUME's
    found = steps(store, monkeypatch, lambda: store.resume("contact-rt", tenant="t"))
    assert found == [schema.LOCK_CONTACT, schema.RESUME]
    assert steps(store, monkeypatch, lambda: store.start("contact-s")) == [schema.START]
    # the lock and RESUME in one flush, an implicit transaction; the NOTIFY only when it
    # created the conversation, a round trip of its own (was in the same flush, always)
    assert round_trips(store, lambda i: store.resume(f"fresh-{i}", tenant="t")) == 2.0
    assert round_trips(store, lambda i: store.resume("contact-rt", tenant="t")) == 1.0
    created = _sent(monkeypatch, lambda: store.resume("contact-newer", tenant="t"))
    assert created == [schema.LOCK_CONTACT, schema.RESUME, schema.WAKE]
    found = _sent(monkeypatch, lambda: store.resume("contact-newer", tenant="t"))
    assert found == [schema.LOCK_CONTACT, schema.RESUME]  # it logged nothing: no NOTIFY
    assert round_trips(store, lambda i: store.start(f"s-{i}", tenant="t")) == 1.0


def test_state_save_writes_in_one_statement(
    store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = conversation.id
    saved = steps(store, monkeypatch, lambda: store.save_state(cid, {"stage": "Q2"}))
    assert saved == [schema.LOCK_FOR_SAVE.every, schema.SAVE.every]  # (was 3: lock, write, event)
    # BEGIN, the lock, SAVE, COMMIT and NOTIFY in one flush (was 3: the lock; the write and
    # the event; COMMIT)
    assert round_trips(store, lambda i: store.save_state(cid, {"i": i})) == 1.0
    assert round_trips(store, lambda i: store.save_state(cid, {"i": i}, tenant="t")) == 1.0
    version = [store.load_state(cid).version]

    def rollback(i: int) -> None:  # to the version before the newest, still kept
        version[0] = store.rollback_state(cid, to_version=version[0] - 1)

    assert round_trips(store, rollback) == 1.0
    conflicts = 0

    def stale(i: int) -> None:
        nonlocal conflicts
        try:
            store.save_state(cid, {"i": i}, expected_version=1)
        except threadkeep.StateConflict:
            conflicts += 1

    assert round_trips(store, stale) == 1.0 and conflicts == WARM + CALLS


def _sent(monkeypatch: pytest.MonkeyPatch, call: Callable[[], object]) -> list[str]:
    """The statements the pool's sessions send during ``call()``, in order."""
    sent: list[str] = []
    real = _wire.Wire.send

    def noting(self: Any, query: str, params: Any, binary: bool) -> int:
        sent.append(query)
        return real(self, query, params, binary)

    monkeypatch.setattr(_wire.Wire, "send", noting)
    try:
        call()
    finally:
        monkeypatch.undo()
    return sent


def test_a_turn_lease_is_two_round_trips_and_its_release_one(
    store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease request is one statement, answered before its COMMIT (it is not resent after a
    commit of unknown outcome): two round trips (was a peek in autocommit, then the lock, the
    take, an empty Sync and COMMIT: five); giving it back is one (was two); neither is
    followed by a NOTIFY (they log no event). A request that finds the lease busy is two
    round trips too (was one: the peek)."""
    cid = conversation.id

    def lease(i: int) -> None:
        with store.turn(cid, timeout=0, tenant="t" if i % 2 else None):
            pass

    assert steps(store, monkeypatch, partial(lease, 0)) == [
        schema.TAKE_LEASE.every, schema.RELEASE_LEASE
    ]  # fmt: skip
    assert round_trips(store, lease) == 3.0  # take (2) + release (1)
    with store.turn(cid, lease=60, timeout=0):  # held: a request finds it busy
        busy = 0

        def poll(i: int) -> None:
            nonlocal busy
            with pytest.raises(threadkeep.TurnInProgress), store.turn(cid, timeout=0):
                pass
            busy += 1

        assert round_trips(store, poll) == 2.0 and busy == WARM + CALLS
    sent = _sent(monkeypatch, partial(lease, 0))
    # the release is an implicit transaction (was BEGIN, the release, COMMIT)
    assert sent == ["BEGIN", schema.TAKE_LEASE.every, "COMMIT", schema.RELEASE_LEASE]


def test_a_fact_is_two_round_trips_without_a_notify(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remember(): the contact's lock and the fact's read, then its write with COMMIT (was a
    third round trip for COMMIT alone); no NOTIFY follows (no event)."""
    assert round_trips(store, lambda i: store.remember("c", "k", i, tenant="t")) == 2.0
    sent = _sent(monkeypatch, lambda: store.remember("c", "k", "v", tenant="t"))
    assert sent == [
        "BEGIN", schema.LOCK_CONTACT, schema.FACT_FOR_UPDATE, schema.REMEMBER, "COMMIT"
    ]  # fmt: skip
    assert [f.value for f in store.recall("c", "k", tenant="t")] == ["v"]


def test_a_write_of_one_exchange_sends_no_begin_or_commit(
    store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write whose first statement to be answered is its ``Closing`` one (after ``Unread``
    ones only) is one implicit transaction of the extended protocol: no BEGIN, no COMMIT, its
    Sync commits (was BEGIN first and COMMIT before the NOTIFY: two statements more each);
    the NOTIFY goes after that Sync, outside the transaction. Still one round trip each."""
    cid = conversation.id
    notify = schema.NOTIFY
    calls: dict[str, tuple[Callable[[], object], list[str]]] = {
        "append()": (
            lambda: store.append(cid, "user", "x"),
            [schema.INDEX_SCANS, schema.APPEND_ONE.every, notify],
        ),
        "start()": (lambda: store.start("contact-s", tenant="t"), [schema.START, notify]),
        "resume(), new": (
            lambda: store.resume("contact-new", tenant="t"),
            [schema.LOCK_CONTACT, schema.RESUME, schema.WAKE],
        ),
        "save_state()": (
            lambda: store.save_state(cid, {"stage": "Q2"}),
            [schema.LOCK_FOR_SAVE.every, schema.SAVE.every, notify],
        ),
    }
    for name, (call, expected) in calls.items():
        assert _sent(monkeypatch, call) == expected, name

    def turn() -> None:
        with store.turn(cid, lease=60) as held:
            held.append("assistant", "a")

    assert _sent(monkeypatch, turn) == [
        "BEGIN", schema.TAKE_LEASE.every, "COMMIT",
        schema.INDEX_SCANS, schema.APPEND_ONE.every, notify, schema.RELEASE_LEASE,
    ]  # fmt: skip
    # a write that needs an answer before its commit still opens its transaction
    fact = _sent(monkeypatch, lambda: store.remember("c", "k", "v", tenant="t"))
    assert fact[0] == "BEGIN" and fact[-1] == "COMMIT"
    gone = store.start("gone").id
    assert _sent(monkeypatch, lambda: store.delete(gone))[-2:] == ["COMMIT", notify]


def _one_exchange(statements: list[tuple[str, dict[str, Any]]]) -> Any:
    """A flow of ``statements``, the last a ``Closing`` one, answered with its rows."""

    def flow() -> Any:
        for statement in statements[:-1]:
            _ = yield statement  # an Unread one: answered with []
        return (yield statements[-1])

    return flow()


def test_an_implicit_transaction_that_fails_writes_nothing(store: Any, conversation: Any) -> None:
    """A failed statement of an implicit transaction rolls back the statements before it
    (the server skips the rest up to the Sync and rolls back there; the NOTIFY after that
    Sync runs and wakes nobody): the session is idle after it, and the commit counts as
    certainly not made (``Ending.failed``: the failed answer is the transaction's own). A
    failed NOTIFY, after the Sync that committed, leaves the outcome as it was."""
    cid = conversation.id
    rename = sql.Unread("UPDATE conversations SET stage = 'renamed' WHERE id = %(id)s")
    failing = sql.Closing("SELECT 1 / (SELECT count(*) - count(*) FROM messages)")
    logged = sql.Closing("SELECT set_config('threadkeep.emitted', 'on', false)")
    with store._backend._pool.connection() as conn:
        ending = _conn.Ending(store._backend._options.channel, together=True)
        flow = _one_exchange([(rename, {"id": cid}), (failing, {})])
        with pytest.raises(psycopg.errors.DivisionByZero):
            _conn.pump(conn, flow, transaction=True, ending=ending)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert (ending.committing, ending.implicit) == (True, 4)  # Parse and run of each
        ending.failed(conn)
        assert not ending.committing
    assert store.get(cid).stage != "renamed"
    with store._backend._pool.connection() as conn:
        unknown = _conn.Ending("c" * 100, together=True)  # a channel name the NOTIFY refuses
        flow = _one_exchange([(rename, {"id": cid}), (logged, {})])
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            _conn.pump(conn, flow, transaction=True, ending=unknown)
        unknown.failed(conn)
        assert unknown.committing  # the failed answer is the NOTIFY's, after the commit
    assert store.get(cid).stage == "renamed"


def _lease_op(store: Any, cid: str) -> ops.LeaseOp:
    now = store._now_us()
    return ops.LeaseOp(cid, None, now, now + 30_000_000)


@pytest.mark.parametrize(
    "other", ["takes it", "takes and gives it back", "deletes it", "expires it"]
)
def test_a_lease_taken_while_the_request_waited_for_the_row(
    store: Any, schema: str, other: str
) -> None:
    """The lease looks free to the request's snapshot, but another session holds the row and
    takes the lease: the request, checking the newest row once it has the lock, is BUSY;
    when the other gave it back too, the request takes it with the newest token + 1; when the
    other deleted the conversation or it expired, NOT_FOUND (as a lock would have found it:
    the request reads the row once more)."""
    cid = store.resume("contact-race", tenant="t").id
    backend = store._backend
    with connect(schema) as other_session:
        token = other_session.execute(
            "SELECT lease_token FROM conversations WHERE id = %s FOR UPDATE", (cid,)
        ).fetchone()[0]
        thread, out = call_in_thread(lambda: backend.execute(_lease_op(store, cid)))
        wait_until("the request to wait for the row", lambda: _waits_for_lock(schema))
        if other == "deletes it":
            other_session.execute("DELETE FROM conversations WHERE id = %s", (cid,))
        elif other == "expires it":
            other_session.execute("UPDATE conversations SET expires_us = 1 WHERE id = %s", (cid,))
        else:
            until = 0 if other == "takes and gives it back" else 2**62
            other_session.execute(
                "UPDATE conversations SET lease_token = %s, lease_until_us = %s WHERE id = %s",
                (token + 1, until, cid),
            )
        other_session.commit()
        thread.join(30)
    [result] = out
    if other == "takes it":
        assert (result.outcome, result.value) == (ops.Outcome.BUSY, 0)
    elif other == "takes and gives it back":
        assert (result.outcome, result.value) == (ops.Outcome.OK, token + 2)
    else:
        assert (result.outcome, result.value) == (ops.Outcome.NOT_FOUND, 0)


def _waits_for_lock(schema: str) -> bool:
    with connect(schema, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'",
            (f"threadkeep:{schema}"[:63],),
        ).fetchone()
    return bool(row and row[0])


def test_resume_inserts_only_when_none_is_open(store: Any, schema: str) -> None:
    first = store.resume("contact-x", tenant="t")
    again = store.resume("contact-x", tenant="t")
    assert again.id == first.id and again.created is False and first.created is True
    store.close_conversation(first.id)
    second = store.resume("contact-x", tenant="t")
    assert second.id != first.id and second.created is True
    with connect(schema) as conn:
        rows = conn.execute(
            "SELECT id, status FROM conversations WHERE contact_id = 'contact-x' ORDER BY 1"
        ).fetchall()
        started = conn.execute(
            "SELECT count(*) FROM events WHERE kind = 'conversation.started' "
            "AND conversation_id = ANY(%s)",
            ([first.id, second.id],),
        ).fetchone()
    assert sorted(rows) == sorted([(first.id, "closed"), (second.id, "new")])
    assert started == (2,)  # one event per conversation created, none for the one found


def test_a_resent_resume_that_had_committed_inserts_and_logs_nothing(
    store: Any, schema: str
) -> None:
    backend = store._backend
    op = store._start_op(True, "contact-r", "t", None, None, None, None, None)  # resume()'s
    created = backend._run(backend._flows.call(op))
    store.close_conversation(op.row.id)  # so a resend finds none open and tries the insert
    resent = backend._run(backend._flows.call(op))
    assert created.value.id == resent.value.id == op.row.id
    with connect(schema) as conn:
        started = conn.execute(
            "SELECT count(*) FROM events WHERE kind = 'conversation.started' "
            "AND conversation_id = %s",
            (op.row.id,),
        ).fetchone()
    assert started == (1,)


def test_window_reads_decode_text_keys_and_payloads(store: Any) -> None:
    conv = store.resume("contact-w", tenant="t")
    odd = "nul \x00, é and 🦜"
    store.append(conv.id, "user", odd, idempotency_key="k1")
    store.append(conv.id, "assistant", "", payload={"type": "text", "v": [1, 2]})
    store.append(conv.id, "user", "plain")  # an internal key is stored: never shown
    got = store.messages(conv.id, last=3)
    assert [(m.seq, m.content, m.idempotency_key, m.payload) for m in got] == [
        (1, odd, "k1", None),
        (2, "", None, {"type": "text", "v": [1, 2]}),
        (3, "plain", None, None),
    ]
    assert all(m.conversation_id == conv.id for m in got)
    assert got == store.messages(conv.id, after=0, limit=10)  # the other read path
    assert [m["content"] for m in store.context(conv.id)][0] == odd
    assert store.messages(store.resume("contact-empty", tenant="t").id, last=5) == []


def _calls(store: Any, n: int) -> None:
    conv = store.resume(f"contact-c{n}", tenant="t")
    for i in range(n):
        store.append(conv.id, "user", f"m{i}")
        store.messages(conv.id, last=5)
    store.save_state(conv.id, {"n": n})


def _count_cursors(monkeypatch: pytest.MonkeyPatch, cls: Any) -> list[int]:
    made = [0]
    real = cls.cursor

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        made[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "cursor", counting)
    return made


def test_no_call_makes_a_cursor(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's sessions run their statements through psycopg's libpq wrapper (``_wire``):
    no call makes a psycopg cursor, the first ones included (each session made two, and
    every write's statements ran through them and psycopg's pipeline); async alike."""
    made = _count_cursors(monkeypatch, psycopg.Connection)
    store = threadkeep.open(url_of(schema) + "&pool_size=1")
    try:
        _calls(store, 10)
    finally:
        store.close()
    assert made == [0]

    async def main() -> list[int]:
        made = _count_cursors(monkeypatch, psycopg.AsyncConnection)
        astore = await threadkeep.open_async(url_of(schema) + "&pool_size=1")
        try:
            await _acalls(astore, 10)
            return made
        finally:
            await astore.aclose()

    assert asyncio.run(main()) == [0]


def test_a_long_answer_is_not_kept_by_the_session(
    store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of more than a short page lets go of its rows when the call ends (the session's
    transformer would hold the last result until the session's next call: every message of
    the page, an erased one too); a short answer is kept; the session keeps its wire."""
    for i in range(60):
        store.append(conversation.id, "user", f"more {i}")
    store.messages(conversation.id, last=5)
    with store._backend._pool.connection() as conn:
        wire = conn.wire
        result = wire.tx.pgresult
        assert result is not None and 0 < result.ntuples < 10
    assert len(store.messages(conversation.id, after=0, limit=80)) == 80
    with store._backend._pool.connection() as conn:
        assert conn.wire is wire
        assert wire.tx.pgresult is None
    store.messages(conversation.id, last=5)
    kept: Any = wire.tx.pgresult
    assert kept is not None and 0 < kept.ntuples < 10


def test_a_lost_session_lets_go_of_its_wire(
    schema: str, store: Any, conversation: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session the server ended is discarded by the pool without its wire, which would keep
    it (and its libpq connection) alive in a cycle until the garbage collector runs."""
    settled: list[Any] = []
    real = _conn.settle

    def recording(conn: Any) -> None:
        settled.append(conn)
        real(conn)

    monkeypatch.setattr(sync, "settle", recording)
    store.messages(conversation.id, last=5)
    lost = settled[-1]
    assert "wire" in lost.__dict__
    with connect(schema, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (lost.info.backend_pid,))
    assert len(store.messages(conversation.id, last=5)) == 5  # retried on a new session
    assert lost.closed
    assert "wire" not in lost.__dict__


async def _acalls(store: Any, n: int) -> None:
    conv = await store.resume(f"contact-a{n}", tenant="t")
    for i in range(n):
        await store.append(conv.id, "user", f"m{i}")
        await store.messages(conv.id, last=5)
    await store.save_state(conv.id, {"n": n})


def _failing(run: Any) -> Any:
    """``run`` whose flow fails on the server inside its transaction (division by zero)."""

    def attempt(n: int) -> Any:
        yield schema.Unread("SELECT 1 / 0"), {}
        return (yield from run.attempt(n))

    return dataclasses.replace(run, attempt=attempt)


def test_a_failed_call_leaves_its_session_idle(
    schema: str, store: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver rolls back the session of a call that failed in its transaction before the
    pool takes it back (the pool would, logging a warning each time); the next calls use it
    as before; async alike."""
    conv = store.resume("contact-f", tenant="t")
    flows = store._backend._flows
    real = flows.call
    monkeypatch.setattr(flows, "call", lambda op: _failing(real(op)))
    with caplog.at_level(logging.WARNING), pytest.raises(threadkeep.BackendError):
        store.append(conv.id, "user", "lost")
    monkeypatch.undo()
    assert [r for r in caplog.records if r.name == "psycopg.pool"] == []
    with store._backend._pool.connection() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    store.append(conv.id, "user", "kept")
    assert [m.content for m in store.messages(conv.id, last=5)] == ["kept"]

    async def main() -> list[str]:
        astore = await threadkeep.open_async(url_of(schema) + "&pool_size=1")
        try:
            backend: Any = astore._backend
            aflows = backend._flows
            areal = aflows.call
            monkeypatch.setattr(aflows, "call", lambda op: _failing(areal(op)))
            with pytest.raises(threadkeep.BackendError):
                await astore.append(conv.id, "user", "lost")
            monkeypatch.undo()
            pool = await backend._pools.get()
            async with pool.connection() as conn:
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            await astore.append(conv.id, "user", "kept too")
            return [m.content for m in await astore.messages(conv.id, last=5)]
        finally:
            await astore.aclose()

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(main()) == ["kept", "kept too"]
    assert [r for r in caplog.records if r.name == "psycopg.pool"] == []


def test_a_keyed_chat_turn_is_ten_round_trips(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An echo bot's chat turn of a contact with an idempotency key (the load's turn), async:
    recall the key's note, resume, take the lease (two), the message, note the key (two),
    recall the opt-out, the reply, give the lease back: 10 round trips (was 15); the answer,
    and a retry's, as before. 18 statements (26 in session 11, 28 before): only the lease
    and the key's note open a transaction with BEGIN (the others that write are implicit
    ones), resume sends no NOTIFY when it found the open conversation, and the reply is the
    common append (``INDEX_SCANS`` then ``APPEND_ONE``, no function)."""
    from threadkeep.bot import EchoBot, answer

    exchanges = [0]
    sent: list[str] = []
    real = _wire.Wire.exchange_async
    send = _wire.Wire.send

    async def counting(self: Any) -> Any:
        exchanges[0] += 1
        return await real(self)

    def noting(self: Any, query: str, params: Any, binary: bool) -> int:
        sent.append(query)
        return send(self, query, params, binary)

    async def main() -> list[tuple[int, str | None]]:
        store = await threadkeep.open_async(url_of(schema) + "&pool_size=1")
        try:
            await answer(store, EchoBot(), "warm", contact_id="c", idempotency_key="k0")
            monkeypatch.setattr(_wire.Wire, "exchange_async", counting)
            monkeypatch.setattr(_wire.Wire, "send", noting)
            said = await answer(store, EchoBot(), "hi", contact_id="c", idempotency_key="k1")
            monkeypatch.undo()
            again = await answer(store, EchoBot(), "hi", contact_id="c", idempotency_key="k1")
            assert again.replayed and again.reply == said.reply
            return [(said.message.seq, said.reply.content if said.reply else None)]
        finally:
            await store.aclose()

    assert asyncio.run(main()) == [(3, "echo: hi")]
    assert exchanges == [10]
    assert len(sent) == 18 and sent.count("BEGIN") == sent.count("COMMIT") == 2
    assert sent.count(sql.APPEND_ONE.one) == 1 and sent.count(sql.APPEND) == 1
    assert sent.count(sql.NOTIFY) == 2  # the two appends' (equal text: WAKE's too)
