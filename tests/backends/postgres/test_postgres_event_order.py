"""PostgreSQL event order without a lock: writers commit in parallel, readers never skip.

Writers hold a shared lock keyed below the ids they draw (``schema.EMIT``) and readers stop
below the lowest key held (``read_events``, migration 7); these tests check the guarantee the
old commit-ordered ids gave: a reader following the log with cursors while others write gets
every event once, in the order every other reader gets them.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from typing import Any

import psycopg
import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import (
    ON_MESSAGE,
    SHARED,
    connect,
    drop_schema,
    flows_of,
    listening,
    now_us,
    schema_at_version,
    url_of,
)
from threadkeep._rules import ops

pytestmark = pytest.mark.postgres

WRITERS = 4
APPENDS = 60


def _write(url: str, n: int, barrier: Any, out: Any) -> None:
    """One writer process: its own conversation, APPENDS appends; reports (id, seqs)."""
    with threadkeep.open(url) as store:
        conv = store.start(contact_id=f"w{n}")
        barrier.wait()
        seqs = []
        for k in range(APPENDS):
            seqs.append(store.append(conv.id, "user", f"{n}-{k}").seq)
            if random.random() < 0.2:  # vary the interleaving of the commits
                store.save_state(conv.id, {"k": k})
        out.put((conv.id, seqs))


def _follow(store: Any, stop: threading.Event, seen: list[Any]) -> None:
    """Follow the whole log with cursors (no wait) until ``stop``, then once more."""
    cursor = None
    while True:
        last_round = stop.is_set()
        for event in store.events(after=cursor, timeout=0):
            seen.append(event)
            cursor = event.id
        if last_round:
            return


@pytest.mark.slow
def test_followers_miss_no_event_of_concurrent_writers(schema: str) -> None:
    """4 processes append (and save states) to their own conversations at once while two
    threads follow the log with cursors: each follower gets every event the log holds at
    the end, once, in the log's order, and the log holds every acknowledged append."""
    url = url_of(schema)
    threadkeep.open(url).close()  # migrate once, before the writers race
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_write, args=(url, n, barrier, out)) for n in range(WRITERS)]
    with threadkeep.open(url) as store:
        stop = threading.Event()
        seen: list[list[Any]] = [[], []]
        followers = [threading.Thread(target=_follow, args=(store, stop, s)) for s in seen]
        for thread in followers:
            thread.start()
        for p in procs:
            p.start()
        acked = dict(out.get(timeout=240) for _ in procs)
        for p in procs:
            p.join(60)
        stop.set()
        for thread in followers:
            thread.join(120)
        log = list(store.events(timeout=0))
    assert [p.exitcode for p in procs] == [0] * WRITERS
    appended = {(e.conversation_id, e.data["seq"]) for e in log if e.kind == "message.appended"}
    assert appended == {(cid, seq) for cid, seqs in acked.items() for seq in seqs}
    for got in seen:
        assert [e.id for e in got] == [e.id for e in log]  # none skipped, none twice
    ids = [int(e.id) for e in log]
    assert ids == sorted(ids)
    for cid in acked:  # a conversation's events in the order they were written
        seqs = [e.data["seq"] for e in log if e.conversation_id == cid and "seq" in e.data]
        assert seqs == sorted(seqs)


def test_a_waiting_reader_gets_events_held_back_without_a_notification(schema: str) -> None:
    """An open transaction that logged an event holds back a later append's event; a reader
    waiting (an hour) when that transaction commits without notifying anyone still gets both:
    it reads again while events are held back, notified or not."""
    from threadkeep.backends.postgres._conn import pump

    store = threadkeep.open(url_of(schema))
    flows = flows_of(schema)
    try:
        a, b = store.start(contact_id="a"), store.start(contact_id="b")
        last = [e.id for e in store.events(timeout=0)][-1]
        with connect(schema) as slow:
            op = ops.AppendOp(
                a.id, None, now_us(), "user", "slow", "{}", None, ON_MESSAGE, None, 10_000
            )
            pump(slow, flows.call(op).attempt(1))  # its event written, not committed
            store.append(b.id, "user", "fast")  # committed and notified, held back
            got: list[Any] = []

            def follow() -> None:
                for event in store.events(after=last, timeout=3600):
                    got.append(event)
                    if event.conversation_id == b.id and event.kind == "message.appended":
                        return

            reader = threading.Thread(target=follow)
            reader.start()
            wait_until("the reader to LISTEN", lambda: listening(schema))
            assert not got
            slow.commit()  # no NOTIFY: pump without an Ending sends none
        reader.join(100)
        appended = [e.conversation_id for e in got if e.kind == "message.appended"]
        assert appended == [a.id, b.id]
    finally:
        store.close()


def test_upgrade_keeps_events_and_cursors(schema: str) -> None:
    """A schema at version 6 with events is upgraded: its events keep their ids as cursors,
    a cursor given out before reads on, new events come after the old ones, the log's floor
    still expires what was trimmed."""
    with psycopg.connect(SHARED) as conn:
        schema_at_version(conn, schema, 6)
        conn.execute(
            "INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
            "SELECT 'conversation.deleted', 't', 'c' || g, '{}', g FROM generate_series(1, 5) g"
        )
        conn.execute("DELETE FROM events WHERE id <= 2")
        conn.execute("UPDATE meta SET value = 2 WHERE key = 'events_floor'")
    with threadkeep.open(url_of(schema)) as store:
        assert [e.id for e in store.events(timeout=0)] == ["3", "4", "5"]
        assert [e.id for e in store.events(after="3", timeout=0)] == ["4", "5"]
        with pytest.raises(threadkeep.CursorExpired):
            list(store.events(after="1", timeout=0))
        conv = store.start(contact_id="c")
        new = list(store.events(after="5", timeout=0))
        assert [e.conversation_id for e in new] == [conv.id]
        assert int(new[0].id) > 5


def test_schemas_whose_names_hash_alike_get_their_own_event_tags(schema: str) -> None:
    """Readers look only at their schema's lock keys (its tag in the high bits): two schemas
    of one database whose names hash to the same tag would hold back each other's events, so
    migration 7 gives the second the next free tag."""
    with psycopg.connect(SHARED) as conn:
        names = [f"{schema}_{i}" for i in range(3000)]
        rows = conn.execute(
            "SELECT n, hashtext(n) & 32767 FROM unnest(%s::text[]) n", (names,)
        ).fetchall()
    first: dict[int, str] = {}
    pair = next((first[h], n) for n, h in rows if first.setdefault(h, n) != n)
    try:
        for name in pair:
            threadkeep.open(url_of(name)).close()
        with psycopg.connect(SHARED) as conn:
            tags = [conn.execute(f'SELECT "{name}".events_tag()').fetchone() for name in pair]
        assert tags[0] != tags[1], (pair, tags)
    finally:
        for name in pair:
            drop_schema(name)


@pytest.mark.parametrize("error", ["invalid_schema_name", "insufficient_privilege"])
def test_a_schema_whose_tag_cannot_be_read_does_not_stop_a_migration(
    schema: str, error: str
) -> None:
    """Migration 7 reads the tag of every other schema of the database that has one; a schema
    dropped between its scan and its read (the read fails as "schema does not exist") or one
    the migrating role may not read is skipped, not a failed open of a new store."""
    other = f"{schema}_x"
    with psycopg.connect(SHARED, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{other}"')
        conn.execute(
            f'CREATE FUNCTION "{other}".events_tag() RETURNS bigint LANGUAGE plpgsql AS '
            f"$$ BEGIN RAISE EXCEPTION 'unreadable' USING ERRCODE = '{error}'; END $$"
        )
    try:
        with threadkeep.open(url_of(schema)) as store:
            assert store.append(store.start(contact_id="c").id, "user", "hi").seq == 1
    finally:
        drop_schema(other)


def test_a_long_schema_name_still_notifies(schema: str) -> None:
    """The NOTIFY channel stays within PostgreSQL's 63 bytes whatever the schema's name
    (a longer one failed every NOTIFY, which now runs after the commit)."""
    long_name = (schema + "_" + "x" * 63)[:63]
    try:
        with threadkeep.open(url_of(long_name)) as store:
            first = store.start(contact_id="c-1")
            (started,) = store.events(tenant="default", timeout=0)
            assert started.conversation_id == first.id
            found: list[Any] = []
            reader = threading.Thread(
                target=lambda: found.append(next(iter(store.events(after=started.id, timeout=20))))
            )
            reader.start()
            wait_until("the LISTEN session", lambda: listening(long_name), 10)
            second = store.start(contact_id="c-2")
            reader.join(25)
            assert [e.conversation_id for e in found] == [second.id]
    finally:
        drop_schema(long_name)


def test_a_waiting_reader_finds_an_event_nobody_notified(schema: str) -> None:
    """A writer whose connection dropped between its COMMIT and its NOTIFY wakes nobody: a
    reader waiting with a long timeout still reads again within about a second."""
    with threadkeep.open(url_of(schema)) as store:
        conv = store.start(contact_id="c-1")
        (started,) = store.events(timeout=0)
        found: list[Any] = []
        reader = threading.Thread(
            target=lambda: found.append(next(iter(store.events(after=started.id, timeout=30))))
        )
        reader.start()
        wait_until("the LISTEN session", lambda: listening(schema), 10)
        with connect(schema, autocommit=True) as conn:  # an event committed without NOTIFY
            conn.execute(
                "INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
                "VALUES ('status.changed', 'default', %s, '{}', %s)",
                (conv.id, now_us()),
            )
        reader.join(10)
        assert not reader.is_alive(), "the reader waited for a notification that never came"
        assert [e.kind.value for e in found] == ["status.changed"]


def test_sessions_read_committed_whatever_the_database_default() -> None:
    """read_events (and resume's contact lock) need a new snapshot per statement: the store's
    sessions run READ COMMITTED even in a database whose default is REPEATABLE READ."""
    import uuid

    from tests._servers import require_reachable

    require_reachable(SHARED)
    database = f"tk_iso_{uuid.uuid4().hex[:10]}"
    base = SHARED.rsplit("/", 1)[0]
    with psycopg.connect(SHARED, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
        conn.execute(
            f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'"
        )
    try:
        with psycopg.connect(f"{base}/{database}") as plain:
            assert plain.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        with threadkeep.open(f"{base}/{database}?schema=iso") as store:
            store.start(contact_id="c-1")
            with store._backend._pool.connection() as conn:  # type: ignore[attr-defined]
                isolation = conn.execute("SHOW transaction_isolation").fetchone()
        assert isolation == ("read committed",)
    finally:
        with psycopg.connect(SHARED, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
