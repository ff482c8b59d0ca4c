"""Helpers of the PostgreSQL-only tests: schemas, connections, outages of a private cluster."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

import threadkeep
from tests._servers import POSTGRES_BASE, PostgresCluster, wait_until
from threadkeep import BackendUnavailable
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow
from threadkeep._url import StoreURL
from threadkeep.backends.postgres._conn import Session

#: The shared server the tests without a cluster of their own use.
SHARED = POSTGRES_BASE


def drop_schema(schema: str) -> None:
    with psycopg.connect(SHARED, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def schema_at_version(conn: psycopg.Connection[Any], schema: str, version: int) -> None:
    """Create ``schema`` on ``conn`` at migration ``version`` (an older threadkeep's), its
    search path set: what an upgrade starts from."""
    from threadkeep.backends.postgres._schema import MIGRATIONS, VERSION_TABLE

    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(f'SET search_path TO "{schema}"')
    conn.execute(VERSION_TABLE)
    for number, sql in enumerate(MIGRATIONS[:version], start=1):
        conn.execute(sql)
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))


def open_backend(schema: str) -> Any:
    from threadkeep.backends.postgres.sync import PostgresBackend

    return PostgresBackend(StoreURL.parse(f"{SHARED}?schema={schema}"))


def url_of(schema: str) -> str:
    return f"{SHARED}?schema={schema}"


def connect(schema: str, **kwargs: Any) -> Any:
    """A connection on the test's schema (not from any store), of the class ``pump`` runs on."""
    return Session.connect(SHARED, options=f"-c search_path={schema}", **kwargs)


def flows_of(schema: str) -> Any:
    from threadkeep.backends.postgres._conn import ConnectionOptions
    from threadkeep.backends.postgres._flows import Flows

    return Flows(ConnectionOptions(StoreURL.parse(url_of(schema))).channel)


def blocked_by(pid: int) -> bool:
    with psycopg.connect(SHARED, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
        ).fetchone()
    return bool(row and row[0])


def now_us() -> int:
    return time.time_ns() // 1000


ON_MESSAGE = {"new": "active", "active": "active", "idle": "active"}


OPEN = ("new", "active", "idle")


def make_row(i: int, rnd: random.Random, now: int) -> ConversationRow:
    ret = RetentionUs(
        ttl_us=rnd.choice([None, 5_000, 50_000]),
        idle_after_us=rnd.choice([1_000, 20_000]),
        window=rnd.choice([1, 2, 5]),
        max_messages=rnd.choice([None, 3]),
    )
    return ConversationRow(
        id=f"c{i:04d}",
        tenant=rnd.choice(["t1", "t2"]),
        contact_id=rnd.choice(["a", "b", "c"]),
        agent_id=rnd.choice([None, "bot"]),
        channel=None,
        status="new",
        stage=None,
        metadata_json="{}",
        created_us=now,
        activity_us=now,
        expires_us=ret.expires_at(now),
        idle_us=ret.idle_at(now),
        message_count=0,
        last_seq=0,
        state_version=0,
        retention=ret,
    )


def open_and_report(url: str, barrier: Any, out: Any) -> None:
    from threadkeep.backends.postgres.sync import PostgresBackend

    barrier.wait(timeout=60)
    backend = PostgresBackend(StoreURL.parse(url))
    out.put((os.getpid(), backend.migrated))
    backend.close()


def listening(schema: str) -> bool:
    """Whether the store's LISTEN session sits idle (not polling)."""
    with psycopg.connect(SHARED, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'idle' AND query LIKE %s",
            (f"threadkeep-events:{schema}"[:63], "LISTEN %"),
        ).fetchone()
    return bool(row and row[0])


def sessions(schema: str) -> list[tuple[int, str]]:
    """(pid, application_name) of every server session of the store on ``schema``."""
    with psycopg.connect(SHARED, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity WHERE application_name IN (%s, %s)",
            (f"threadkeep:{schema}"[:63], f"threadkeep-events:{schema}"[:63]),
        ).fetchall()
    return [(int(pid), str(name)) for pid, name in rows]


def lock_waiters(key: str) -> int:
    """How many sessions wait for the advisory lock ``hashtextextended(key, 0)``."""
    with psycopg.connect(SHARED, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
            (key,),
        ).fetchone()
    return int(row[0]) if row else 0


def stall_commits(schema: str, table: str) -> None:
    """Make every commit that inserted into ``table`` sleep while the ``gate`` row exists."""
    with connect(schema, autocommit=True) as conn:
        conn.execute("CREATE TABLE gate (shut boolean)")
        conn.execute("INSERT INTO gate VALUES (true)")
        conn.execute(
            "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF EXISTS (SELECT 1 FROM gate) THEN PERFORM pg_sleep(100); END IF; "
            "RETURN NULL; END $$"
        )
        conn.execute(
            f"CREATE CONSTRAINT TRIGGER stall AFTER INSERT ON {table} DEFERRABLE "
            "INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION stall()"
        )


def kill_in_commit(schema: str) -> str:
    """Wait for a store's session stalled in its commit, open the gate, and terminate that
    session: its connection is lost while committing (the transaction does not commit).

    The commit is COMMIT, or the Sync that ends an implicit transaction (``_conn.Ending``):
    then the session's query is the transaction's last statement. The session is the
    store's (its application name), in the database of ``SHARED``. Returns its query.
    """
    found: list[tuple[int, str]] = []

    def stalled() -> bool:
        with psycopg.connect(SHARED, autocommit=True) as conn:
            found[:] = [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT pid, query FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                    "AND datname = current_database() AND application_name = %s",
                    (f"threadkeep:{schema}"[:63],),
                ).fetchall()
            ]
        return bool(found)

    wait_until("a commit to stall", stalled)
    with connect(schema, autocommit=True) as conn:
        conn.execute("DELETE FROM gate")
        conn.execute("SELECT pg_terminate_backend(%s)", (found[0][0],))
    return found[0][1]


def call_in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


TIMEOUT = 2.0  # the store's configured timeout in the outage tests, seconds


SLACK = 3.0  # connect/scheduling slack on a loaded machine; a hang guard, not a benchmark


class Traffic:
    """Appends in a thread until stopped, recording what was acknowledged and what failed."""

    def __init__(self, append: Any) -> None:
        self.append = append
        self.acked: list[threadkeep.Message] = []
        self.failures: list[tuple[BaseException, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                self.acked.append(self.append(f"m{n}"))
            except Exception as exc:  # anything but BackendUnavailable fails the test below
                self.failures.append((exc, time.monotonic() - began))
                time.sleep(0.05)
            n += 1

    def wait_acked(self, count: int) -> None:
        wait_until(f"{count} acknowledged appends", lambda: len(self.acked) >= count)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)


def check_outage(cluster: PostgresCluster, traffic: Traffic, probe: Any, read_all: Any) -> None:
    traffic.wait_acked(20)
    cluster.stop()
    began = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        probe()
    assert time.monotonic() - began < TIMEOUT + SLACK
    assert f"127.0.0.1:{cluster.port}" in str(err.value)
    wait_until("the traffic to see the outage", lambda: len(traffic.failures) >= 3)
    cluster.start()
    recovered_from = len(traffic.acked)
    traffic.wait_acked(recovered_from + 20)  # the same store, no reopen: the pool recovered
    traffic.finish()
    for exc, took in traffic.failures:
        assert isinstance(exc, BackendUnavailable), repr(exc)
        assert took < TIMEOUT + SLACK
    stored = read_all()
    seqs = [m.seq for m in stored]
    assert seqs == list(range(1, len(stored) + 1))  # gap-free
    contents = [m.content for m in stored]
    assert len(set(contents)) == len(contents)  # a resend never duplicated a message
    by_seq = {m.seq: m.content for m in stored}
    for msg in traffic.acked:  # every acknowledged write is still there
        assert by_seq.get(msg.seq) == msg.content


def outage_url(cluster: PostgresCluster) -> str:
    return f"{cluster.url}?schema=tk_{uuid.uuid4().hex[:8]}&timeout={TIMEOUT}&retries=2"


def read_all(messages: Any, conv_id: str) -> list[threadkeep.Message]:
    out: list[threadkeep.Message] = []
    while page := messages(conv_id, after=out[-1].seq if out else 0, limit=1000):
        out.extend(page)
    return out


def recorded(flow: Any, seen: list[str]) -> Any:
    """``flow`` (a backend flow generator), noting each statement it yields in ``seen``."""
    rows = None
    try:
        while True:
            step = flow.send(rows)
            seen.append(step[0])
            rows = yield step
    except StopIteration as done:
        return done.value
