"""PostgreSQL-only checks: equivalence with the memory backend, migrations, NOTIFY, outages.

Tests against the shared server use their own schema and drop it afterwards; the outage test
starts its own cluster with ``initdb``/``pg_ctl`` on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from threadkeep import BackendUnavailable
from threadkeep._rules import ops
from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import ConversationRow
from threadkeep._url import StoreURL

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

SHARED = "postgresql://postgres@127.0.0.1:5432/test"


def _require_shared() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return
    except OSError as exc:
        reason = f"postgresql not reachable at 127.0.0.1:5432 ({type(exc).__name__})"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _drop(schema: str) -> None:
    with psycopg.connect(SHARED, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def schema() -> Iterator[str]:
    _require_shared()
    name = f"tk_test_{uuid.uuid4().hex[:12]}"
    yield name
    _drop(name)


def _pg(schema: str) -> Any:
    from threadkeep.backends.postgres.sync import PostgresBackend

    return PostgresBackend(StoreURL.parse(f"{SHARED}?schema={schema}"))


def _url(schema: str) -> str:
    return f"{SHARED}?schema={schema}"


def _conn(schema: str, **kwargs: Any) -> Any:
    """A plain psycopg connection on the test's schema (not from any store)."""
    return psycopg.connect(SHARED, options=f"-c search_path={schema}", **kwargs)


def _flows(schema: str) -> Any:
    from threadkeep.backends.postgres._conn import Settings
    from threadkeep.backends.postgres._flows import Flows

    return Flows(Settings(StoreURL.parse(_url(schema))).channel)


def _until(what: str, check: Any, limit: float = 60.0) -> None:
    """Poll ``check()`` until true; fail after ``limit`` seconds (a hang guard, not a timing)."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def _blocked_by(pid: int) -> bool:
    with psycopg.connect(SHARED, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
        ).fetchone()
    return bool(row and row[0])


def _now_us() -> int:
    return time.time_ns() // 1000


# ---- rows for the flows driven directly ----------------------------------------------

ON_MESSAGE = {"new": "active", "active": "active", "idle": "active"}
OPEN = ("new", "active", "idle")


def _row(i: int, rnd: random.Random, now: int) -> ConversationRow:
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


# ---- migrations -------------------------------------------------------------------------


def _open_and_report(url: str, barrier: Any, out: Any) -> None:
    from threadkeep.backends.postgres.sync import PostgresBackend

    barrier.wait(timeout=60)
    backend = PostgresBackend(StoreURL.parse(url))
    out.put((os.getpid(), backend.migrated))
    backend.close()


@pytest.mark.slow
def test_concurrent_open_migrates_once(schema: str) -> None:
    """Six processes open a fresh schema at once: exactly one applies each migration."""
    from threadkeep.backends.postgres._schema import MIGRATIONS

    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [
        ctx.Process(target=_open_and_report, args=(_url(schema), barrier, out)) for _ in range(6)
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    applied = sorted(n for _, n in reports)
    assert len({pid for pid, _ in reports}) == 6  # six distinct processes
    assert applied == [0] * 5 + [len(MIGRATIONS)]  # one migrated, five found it done
    with psycopg.connect(SHARED) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_version ORDER BY 1').fetchall()
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    # opening again applies nothing
    with contextlib.closing(_pg(schema)) as again:
        assert again.migrated == 0


def test_upgrade_from_version_1_keeps_messages(schema: str) -> None:
    """A schema left at version 1 (text content) is upgraded on open and its messages read."""
    from threadkeep.backends.postgres._conn import pump
    from threadkeep.backends.postgres._schema import MIGRATIONS, VERSION_TABLE

    now = _now_us()
    row = _row(1, random.Random(3), now)
    with psycopg.connect(SHARED) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(VERSION_TABLE)
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        pump(conn, _flows(schema).call(ops.StartOp(row, False, OPEN, 100)).attempt(1))
        conn.execute(
            "UPDATE conversations SET last_seq = 1, message_count = 1, ttl_us = NULL, "
            "expires_us = NULL WHERE id = %s",
            (row.id,),
        )
        conn.execute(
            "INSERT INTO messages VALUES (%s, 1, 'user', 'héllo', %s, '{}', NULL)", (row.id, now)
        )
    with contextlib.closing(_pg(schema)) as backend:
        assert backend.migrated == len(MIGRATIONS) - 1
    store = threadkeep.open(_url(schema))
    try:
        assert [m.content for m in store.messages(row.id, tenant=row.tenant)] == ["héllo"]
        store.append(row.id, "user", "a\x00b", tenant=row.tenant)
        assert [m.content for m in store.messages(row.id, tenant=row.tenant)][-1] == "a\x00b"
    finally:
        store.close()


# ---- events wake on NOTIFY --------------------------------------------------------------


def _listening(schema: str) -> bool:
    """Whether the store's event reader sits idle on its LISTEN session (not polling)."""
    with psycopg.connect(SHARED, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'idle' AND query LIKE %s",
            (f"threadkeep-events:{schema}"[:63], "%FROM events%"),
        ).fetchone()
    return bool(row and row[0])


def test_events_wait_wakes_on_notify(schema: str) -> None:
    """A reader waits on LISTEN (an idle session, no polling) and wakes on the NOTIFY.

    The wait is an hour: only the notification can end it before pytest's timeout.
    """
    store = threadkeep.open(_url(schema))
    try:
        conv = store.start(contact_id="c1")
        last = [e.id for e in store.events(timeout=0)][-1]
        got: list[Any] = []
        reader = threading.Thread(
            target=lambda: got.append(next(store.events(after=last, timeout=3600)))
        )
        reader.start()
        _until("the reader to LISTEN", lambda: _listening(schema))
        assert not got
        store.append(conv.id, "user", "hi")
        reader.join(100)
        assert [e.kind for e in got] == ["message.appended"]
    finally:
        store.close()


def test_async_store_round_trip(schema: str) -> None:
    async def main() -> None:
        store = await threadkeep.open_async(f"{SHARED}?schema={schema}")
        try:
            conv = await store.start(contact_id="c1")
            await store.append(conv.id, "user", "hello")
            msgs = await store.messages(conv.id)
            assert [m.content for m in msgs] == ["hello"]
            last = [e.id async for e in store.events(timeout=0)][-1]

            async def later() -> None:
                await asyncio.sleep(0.3)
                await store.append(conv.id, "user", "again")

            task = asyncio.create_task(later())
            kinds = []
            async for event in store.events(after=last, timeout=3600):  # NOTIFY ends it
                kinds.append(event.kind)
                break
            await task
            assert kinds == ["message.appended"]
        finally:
            await store.aclose()

    asyncio.run(main())


# ---- appends serialize per conversation only ------------------------------------------


def test_appends_serialize_per_conversation_only(schema: str) -> None:
    """While another session holds conversation A's row lock, an append to B completes
    and an append to A waits for exactly that lock, then lands with the next seq."""
    store = threadkeep.open(_url(schema))
    try:
        a, b = store.start(contact_id="a"), store.start(contact_id="b")
        store.append(a.id, "user", "a1")
        with _conn(schema) as blocker:
            blocker.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (a.id,))
            # would hang (and hit pytest's timeout) if appends serialized globally
            assert store.append(b.id, "user", "b1").seq == 1
            done: list[Any] = []
            waiter = threading.Thread(target=lambda: done.append(store.append(a.id, "user", "a2")))
            waiter.start()
            _until(
                "the append to A to wait on A's row lock",
                lambda: _blocked_by(blocker.info.backend_pid),
            )
            assert not done and store.append(b.id, "user", "b2").seq == 2
            blocker.rollback()
        waiter.join(60)
        assert [m.seq for m in done] == [2]
        assert [m.content for m in store.messages(a.id)] == ["a1", "a2"]
    finally:
        store.close()


def _lock_waiters(key: str) -> int:
    """How many sessions wait for the advisory lock ``hashtextextended(key, 0)``."""
    with psycopg.connect(SHARED, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
            (key,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_event_ids_follow_commit_order(schema: str) -> None:
    """An event committed late never hides behind a cursor already past it.

    Transaction 1 appends to A (its event drawn) and stays open; then the store appends to
    B. A reader polling in between and resuming from its cursor must still get both.
    """
    from threadkeep.backends.postgres._conn import pump

    store = threadkeep.open(_url(schema))
    flows = _flows(schema)
    try:
        a, b = store.start(contact_id="a"), store.start(contact_id="b")
        cursor = [e.id for e in store.events(timeout=0)][-1]
        with _conn(schema) as slow:
            op = ops.AppendOp(
                a.id, None, _now_us(), "user", "slow", "{}", None, ON_MESSAGE, None, 10_000
            )
            pump(slow, flows.call(op).attempt(1))  # event id drawn, not committed
            fast = threading.Thread(target=lambda: store.append(b.id, "user", "fast"))
            fast.start()
            _until(
                "the append to B to finish or wait for the event log",
                lambda: not fast.is_alive() or _lock_waiters(flows.events_lock) > 0,
            )
            seen = list(store.events(after=cursor, timeout=0))
            slow.commit()
        fast.join(60)
        seen += list(store.events(after=seen[-1].id if seen else cursor, timeout=0))
        appended = sorted(e.conversation_id for e in seen if e.kind == "message.appended")
        assert appended == sorted([a.id, b.id])
        ids = [int(e.id) for e in seen]
        assert ids == sorted(ids)
    finally:
        store.close()


# ---- state compare-and-set; bounded logs ------------------------------------------------


def test_state_cas_has_one_winner_and_keeps_last_k(schema: str) -> None:
    limits = threadkeep.Limits(state_versions_kept=3)
    store = threadkeep.open(_url(schema), limits=limits)
    try:
        conv = store.start(contact_id="a")
        results: list[Any] = []

        def save(n: int) -> None:
            try:
                results.append(store.save_state(conv.id, {"n": n}, expected_version=0))
            except threadkeep.StateConflict as exc:
                results.append(exc)

        racers = [threading.Thread(target=save, args=(n,)) for n in range(6)]
        for t in racers:
            t.start()
        for t in racers:
            t.join(60)
        assert sorted(type(r).__name__ for r in results) == ["StateConflict"] * 5 + ["int"]
        for n in range(6):
            store.save_state(conv.id, {"n": n})
        with _conn(schema) as conn:
            rows = conn.execute("SELECT version FROM states ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [5, 6, 7]  # the last K = 3 versions
        assert store.rollback_state(conv.id, to_version=5) == 8
    finally:
        store.close()


def test_event_log_is_bounded(schema: str) -> None:
    store = threadkeep.open(_url(schema), limits=threadkeep.Limits(events_kept=5))
    try:
        conv = store.start(contact_id="a")
        first = next(store.events(timeout=0)).id
        for n in range(20):
            store.append(conv.id, "user", f"m{n}")
        with _conn(schema) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (5,)
        assert len(list(store.events(timeout=0))) == 5
        with pytest.raises(threadkeep.CursorExpired):
            list(store.events(after=first, timeout=0))
    finally:
        store.close()


# ---- retry safety: a resent write whose first try committed -------------------------------


def test_resent_append_and_start_apply_once(schema: str) -> None:
    from threadkeep.backends.postgres._conn import pump

    _pg(schema).close()  # migrate
    flows, now = _flows(schema), _now_us()
    row = _row(1, random.Random(1), now)
    start = flows.call(ops.StartOp(row, False, OPEN, 100))
    with _conn(schema) as conn:
        assert pump(conn, start.attempt(1)).outcome is ops.Outcome.CREATED
        conn.commit()
        assert pump(conn, start.attempt(2)) == (ops.Outcome.CREATED, row)  # the resend
        conn.commit()
        op = ops.AppendOp(row.id, None, now, "user", "hi", "{}", None, ON_MESSAGE, None, 100)
        append = flows.call(op)
        first = pump(conn, append.attempt(1))
        conn.commit()
        again = pump(conn, append.attempt(2))  # the same internal key, looked up first
        conn.commit()
        assert again == first and first.value is not None and first.value.seq == 1
        kinds = [r[0] for r in conn.execute("SELECT kind FROM events ORDER BY id").fetchall()]
        assert kinds == ["conversation.started", "message.appended", "status.changed"]
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def _stall_commits(schema: str, table: str) -> None:
    """Make every commit that inserted into ``table`` sleep while the ``gate`` row exists."""
    with _conn(schema, autocommit=True) as conn:
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


def _kill_in_commit(schema: str) -> None:
    """Wait for a session stalled inside COMMIT, open the gate, and terminate that session:
    its connection is lost while committing (the transaction does not commit)."""
    found: list[int] = []

    def stalled() -> bool:
        with psycopg.connect(SHARED, autocommit=True) as conn:
            found[:] = [
                r[0]
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE query = 'COMMIT' "
                    "AND wait_event = 'PgSleep' AND datname = 'test'"
                ).fetchall()
            ]
        return bool(found)

    _until("a commit to stall", stalled)
    with _conn(schema, autocommit=True) as conn:
        conn.execute("DELETE FROM gate")
        conn.execute("SELECT pg_terminate_backend(%s)", (found[0],))


def _call_in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_connection_lost_while_committing_append_is_resent_once(schema: str) -> None:
    store = threadkeep.open(_url(schema))
    try:
        conv = store.start(contact_id="a")
        _stall_commits(schema, "messages")
        thread, out = _call_in_thread(lambda: store.append(conv.id, "user", "hi"))
        _kill_in_commit(schema)
        thread.join(60)
        assert [m.seq for m in out] == [1]  # resent (safe: it carries its internal key)
        assert [m.content for m in store.messages(conv.id)] == ["hi"]
    finally:
        store.close()


def test_connection_lost_while_committing_state_is_not_resent(schema: str) -> None:
    """A save_state whose commit may or may not have happened is not sent again (a resend
    could conflict with itself or save twice): the caller gets BackendUnavailable."""
    store = threadkeep.open(_url(schema))
    try:
        conv = store.start(contact_id="a")
        _stall_commits(schema, "states")
        thread, out = _call_in_thread(
            lambda: store.save_state(conv.id, {"n": 1}, expected_version=0)
        )
        _kill_in_commit(schema)
        thread.join(60)
        assert len(out) == 1 and isinstance(out[0], BackendUnavailable)
        with _conn(schema) as conn:  # a resend would have committed: the gate is open now
            assert conn.execute("SELECT count(*) FROM states").fetchone() == (0,)
        assert store.save_state(conv.id, {"n": 1}, expected_version=0) == 1
    finally:
        store.close()


# ---- sweep: bounded transactions ----------------------------------------------------------


def test_sweep_purges_in_bounded_transactions(schema: str) -> None:
    """The real sweep flow on a real connection: every transaction erases at most ``batch``
    conversations and ``batch * MESSAGES_PER_CONVERSATION`` messages, rows locked by a
    writer are skipped (not waited for), and nothing expired is visible before the purge."""
    from datetime import UTC, datetime, timedelta

    from threadkeep.backends.postgres._flows import COMMIT, MESSAGES_PER_CONVERSATION

    clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = threadkeep.open(
        _url(schema), clock=clock, retention=threadkeep.Retention(ttl=timedelta(minutes=5))
    )
    try:
        ids = [store.start(contact_id=f"c{i}").id for i in range(8)]
        for cid in ids[:-1]:
            store.append(cid, "user", "hello")
        for n in range(130):  # one long history
            store.append(ids[-1], "user", f"m{n}")
        clock.advance(timedelta(minutes=10))
        assert store.list().items == []  # expired: invisible before any purge
        now = int(clock.now().timestamp() * 1_000_000)
        op = ops.SweepOp(now, False, "idle", ("new", "active"), 3, 100)
        flow = _flows(schema).call(op).attempt(1)
        convs, msgs = [0], [0]  # erased per transaction
        with _conn(schema) as conn, _conn(schema) as writer:
            writer.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (ids[0],))
            rows: Any = None
            with contextlib.suppress(StopIteration), conn.cursor() as cur:
                while True:
                    query, params = flow.send(rows)
                    if query == COMMIT[0]:
                        conn.commit()
                        convs.append(0)
                        msgs.append(0)
                        rows = []
                        continue
                    cur.execute(query, params or None)
                    if query.startswith("DELETE FROM conversations"):
                        convs[-1] += cur.rowcount
                    elif query.startswith("DELETE FROM messages"):
                        msgs[-1] += cur.rowcount
                    rows = cur.fetchall() if cur.description is not None else []
            conn.commit()
            writer.rollback()
        assert max(convs) <= 3 and sum(convs) == 7  # ids[0] was locked: skipped, not waited
        assert max(msgs) <= 3 * MESSAGES_PER_CONVERSATION and sum(msgs) == 6 + 130
        assert store.sweep().purged == 1  # the next sweep takes the one skipped
        with _conn(schema) as conn:
            assert conn.execute("SELECT count(*) FROM conversations").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    finally:
        store.close()


# ---- outage: our own cluster, stopped and started again ---------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Cluster:
    """A throwaway PostgreSQL cluster in a temp dir, run as ``postgres`` when we are root."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                pytest.skip("running as root without runuser; initdb refuses root")
            self.as_user = [runuser, "-u", "postgres", "--"]
            shutil.chown(root, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-w",
            "start",
            "-l",
            str(self.data / "log"),
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture(scope="module")
def cluster() -> Iterator[_Cluster]:
    """A private PostgreSQL cluster (initdb in a temp dir, a free loopback port)."""
    with tempfile.TemporaryDirectory(prefix="tk-pg-") as tmp:
        os.chmod(tmp, 0o755)
        own = _Cluster(Path(tmp))
        own.start()
        try:
            yield own
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                own.stop()


TIMEOUT = 2.0  # the store's configured timeout in the outage tests, seconds
SLACK = 3.0  # connect/scheduling slack on a loaded machine; a hang guard, not a benchmark


class _Traffic:
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
        _until(f"{count} acknowledged appends", lambda: len(self.acked) >= count)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)


def _check_outage(cluster: _Cluster, traffic: _Traffic, probe: Any, read_all: Any) -> None:
    traffic.wait_acked(20)
    cluster.stop()
    began = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        probe()
    assert time.monotonic() - began < TIMEOUT + SLACK
    assert f"127.0.0.1:{cluster.port}" in str(err.value)
    _until("the traffic to see the outage", lambda: len(traffic.failures) >= 3)
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


def _outage_url(cluster: _Cluster) -> str:
    return (
        f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        f"?schema=tk_{uuid.uuid4().hex[:8]}&timeout={TIMEOUT}&retries=2"
    )


@pytest.mark.slow
def test_outage_unavailable_then_recovers(cluster: _Cluster) -> None:
    store = threadkeep.open(_outage_url(cluster))
    try:
        conv = store.start(contact_id="c1")
        traffic = _Traffic(lambda text: store.append(conv.id, "user", text))
        try:
            _check_outage(
                cluster,
                traffic,
                lambda: store.get(conv.id),
                lambda: _read_all(store.messages, conv.id),
            )
        finally:
            traffic.finish()
    finally:
        store.close()


@pytest.mark.slow
def test_async_outage_unavailable_then_recovers(cluster: _Cluster) -> None:
    import anyio.from_thread

    with anyio.from_thread.start_blocking_portal() as portal:

        async def open_it() -> threadkeep.AsyncStore:
            return await threadkeep.open_async(_outage_url(cluster))

        store = portal.call(open_it)

        def call(name: str, *args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                return await getattr(store, name)(*args, **kwargs)

            return portal.call(run)

        try:
            conv = call("start", "c1")
            traffic = _Traffic(lambda text: call("append", conv.id, "user", text))
            try:
                _check_outage(
                    cluster,
                    traffic,
                    lambda: call("get", conv.id),
                    lambda: _read_all(lambda *a, **k: call("messages", *a, **k), conv.id),
                )
            finally:
                traffic.finish()
        finally:
            portal.call(store.aclose)


def _read_all(messages: Any, conv_id: str) -> list[threadkeep.Message]:
    out: list[threadkeep.Message] = []
    while page := messages(conv_id, after=out[-1].seq if out else 0, limit=1000):
        out.extend(page)
    return out
