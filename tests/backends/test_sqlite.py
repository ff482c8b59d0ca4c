"""SQLite-only checks: migrations under concurrent open, pragmas, unreachable files."""

import multiprocessing
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from threadkeep._rules import plans
from threadkeep.backends.sqlite._schema import MIGRATIONS


def _open_and_append(url: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    with threadkeep.open(url) as store:
        conv = store.start("racer")
        store.append(conv.id, "user", "hello")
        results.put(conv.id)


@pytest.mark.slow
def test_many_processes_opening_a_new_file_migrate_once(tmp_path):
    url = f"sqlite:///{tmp_path}/fresh.db"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_open_and_append, args=(url, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = {results.get(timeout=5) for _ in range(4)}
    assert len(ids) == 4
    db = sqlite3.connect(tmp_path / "fresh.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM conversations").fetchone()[0] == 4
    db.close()


def test_opening_while_another_connection_creates_the_file_waits_for_it(tmp_path):
    # A new file is in rollback mode until its first opener switches it to WAL; while that
    # opener holds the write lock, SQLite refuses a second switch at once (no busy handler):
    # the race of several worker processes opening a new file together.
    path = tmp_path / "racing.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE elsewhere (x)")
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    try:
        with threadkeep.open(f"sqlite:///{path}") as store:
            conv = store.start("c1")
            assert store.get(conv.id).contact_id == "c1"
    finally:
        release.join()
        other.close()


def test_a_file_locked_past_the_timeout_is_backend_unavailable(tmp_path):
    path = tmp_path / "held.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE elsewhere (x)")
    try:
        with pytest.raises(threadkeep.BackendUnavailable, match="locked"):
            threadkeep.open(f"sqlite:///{path}?timeout=0.2")
    finally:
        other.close()


def test_reopening_keeps_everything(tmp_path):
    url = f"sqlite:///{tmp_path}/keep.db"
    with threadkeep.open(url) as store:
        conv = store.start("c1", stage="Q1")
        store.append(conv.id, "user", "hello")
        store.save_state(conv.id, {"a": 1})
    with threadkeep.open(url) as store:
        assert store.get(conv.id).stage == "Q1"
        assert [m.content for m in store.messages(conv.id)] == ["hello"]
        assert store.load_state(conv.id).value == {"a": 1}


def test_relative_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with threadkeep.open("sqlite:///sub/rel.db") as store:
        store.start("c1")
    assert (tmp_path / "sub" / "rel.db").exists()


def test_missing_path_is_invalid_input():
    with pytest.raises(threadkeep.InvalidInput, match="sqlite:///relative/path.db"):
        threadkeep.open("sqlite://")


def _cache_sizes(store: threadkeep.Store) -> list[int]:
    """PRAGMA cache_size of the connections of two threads (each thread has its own)."""
    backend: Any = store._backend
    sizes = [backend._conn().execute("PRAGMA cache_size").fetchone()[0]]
    other = threading.Thread(
        target=lambda: sizes.append(backend._conn().execute("PRAGMA cache_size").fetchone()[0])
    )
    other.start()
    other.join()
    return sizes


@pytest.mark.parametrize(("query", "expected"), [("", -2000), ("?cache_size=-65536", -65536)])
def test_cache_size_sets_every_connections_page_cache(tmp_path, query, expected):
    """``?cache_size=`` (as SQLite's PRAGMA: KiB when negative) reaches each connection;
    without it SQLite's default (2 MB) stays. Keyword options take it too."""
    with threadkeep.open(f"sqlite:///{tmp_path}/c.db{query}") as store:
        assert _cache_sizes(store) == [expected, expected]
    with threadkeep.open(f"sqlite:///{tmp_path}/c.db", cache_size=5000) as store:
        assert _cache_sizes(store) == [5000, 5000]


@pytest.mark.parametrize("value", ["0", "lots", "1.5", "2147483648", "-2147483649"])
def test_a_bad_cache_size_is_invalid_input(tmp_path, value):
    with pytest.raises(threadkeep.InvalidInput, match="cache_size=.*malformed") as info:
        threadkeep.open(f"sqlite:///{tmp_path}/c.db?cache_size={value}")
    assert info.value.field == "cache_size"
    assert not (tmp_path / "c.db").exists()


def test_file_replaced_by_a_directory_is_backend_unavailable(tmp_path):
    path = tmp_path / "gone.db"
    store = threadkeep.open(f"sqlite:///{path}")
    conv = store.start("c1")
    store.close()
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / f"gone.db{suffix}"
        if p.exists():
            p.unlink()
    path.mkdir()
    with pytest.raises(threadkeep.BackendUnavailable) as info:
        threadkeep.open(f"sqlite:///{path}").get(conv.id)
    assert "gone.db" in str(info.value)


def test_counts_reads_counters_and_the_expired_range_only(tmp_path):
    """counts() does not walk the tenant's rows (bench.scale): the counters by primary key,
    and of the conversations only the expired-unswept range of the expiry index."""
    from threadkeep.backends.sqlite._schema import COUNTS

    path = tmp_path / "plan.db"
    threadkeep.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        plan = [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {COUNTS}", {"tenant": "t", "now": 1})]
    reads = [step for step in plan if "conversations " in step + " "]
    assert any("conversation_counts USING PRIMARY KEY" in step for step in plan), plan
    assert reads == ["SEARCH conversations USING INDEX conv_by_expiry (expires_us<?)"], plan


def test_a_failed_commit_leaves_the_threads_connection_usable(tmp_path):
    # a COMMIT that fails (here a deferred foreign key) must not leave the thread's
    # connection inside the transaction: every later write there would fail
    store = threadkeep.open(f"sqlite:///{tmp_path}/x.db")
    backend: Any = store._backend
    conn = backend._conn()
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE c (x REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(threadkeep.BackendError), backend._tx(True) as db:
        db.execute("INSERT INTO c VALUES (1)")
    assert not conn.in_transaction
    assert store.start("c1", tenant="t").status == "new"
    assert conn.execute("SELECT count(*) FROM c").fetchone()[0] == 0
    store.close()


def _due_three(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> tuple[threadkeep.Store, threadkeep.ManualClock, list[str]]:
    monkeypatch.setattr(plans, "SWEEP_BATCH", 1)
    clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = threadkeep.open(f"sqlite:///{tmp_path}/{name}", clock=clock)
    ids = [store.start(f"c{i}", tenant="t").id for i in range(3)]
    for cid in ids:
        store.append(cid, "user", "hi")
    clock.advance(timedelta(minutes=31))
    return store, clock, ids


def test_sweep_leaves_a_listed_conversation_touched_before_its_batch(tmp_path, monkeypatch):
    # sweep lists the idle-due ids once, then judges each again in its batch's transaction:
    # one made active after the listing stays active; one created meanwhile waits
    store, clock, ids = _due_three(tmp_path, monkeypatch, "r.db")
    backend: Any = store._backend
    listed: list[bool] = []
    created: list[str] = []
    idle_all, tx = backend._idle_all, backend._tx

    def listing(op):
        listed.append(True)
        return idle_all(op)

    def batch(write):
        if listed and write and not created:
            with threadkeep.open(f"sqlite:///{tmp_path}/r.db", clock=clock) as other:
                other.append(ids[1], "user", "still here")
                late = other.start("late", tenant="t")
                other.append(late.id, "user", "x")
                created.append(late.id)
        return tx(write)

    monkeypatch.setattr(backend, "_idle_all", listing)
    monkeypatch.setattr(backend, "_tx", batch)
    report = store.sweep()
    assert created
    assert [store.get(i, tenant="t").status for i in ids] == ["idle", "active", "idle"]
    assert report.idled == 2
    assert store.get(created[0], tenant="t").status == "active"
    table = "SELECT count(*) FROM temp.sweep_idle_due"
    assert backend._conn().execute(table).fetchone()[0] == 0
    store.close()


def test_a_sweep_failing_between_batches_keeps_no_list(tmp_path, monkeypatch):
    store, clock, ids = _due_three(tmp_path, monkeypatch, "f.db")
    backend: Any = store._backend
    idle_all, tx = backend._idle_all, backend._tx
    writes: list[bool] = []

    def listing(op):
        writes.clear()
        return idle_all(op)

    def batch(write):
        if write:
            writes.append(True)
            if len(writes) == 2:
                raise threadkeep.BackendUnavailable("sqlite", "batch", "injected")
        return tx(write)

    monkeypatch.setattr(backend, "_idle_all", listing)
    monkeypatch.setattr(backend, "_tx", batch)
    with pytest.raises(threadkeep.BackendUnavailable):
        store.sweep()
    table = "SELECT count(*) FROM temp.sweep_idle_due"
    assert backend._conn().execute(table).fetchone()[0] == 0
    assert backend._busy == 0
    monkeypatch.setattr(backend, "_tx", tx)
    clock.advance(timedelta(seconds=1))
    store.append(ids[2], "user", "back")
    store.sweep()
    assert [store.get(i, tenant="t").status for i in ids] == ["idle", "idle", "active"]
    store.close()


# ---- list() without conv_by_activity (migration 7) -----------------------------------------


def _list_plans(store: threadkeep.Store, **filters: Any) -> list[str]:
    """The query plan of the statement ``store.list(**filters)`` runs (traced, values bound)."""
    backend: Any = store._backend
    statements: list[str] = []
    conn = backend._conn()
    conn.set_trace_callback(statements.append)
    try:
        store.list(tenant="t", **filters)
    finally:
        conn.set_trace_callback(None)
    (sql,) = [s for s in statements if s.lstrip().startswith("SELECT")]
    return [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]


def test_a_list_without_status_merges_the_status_index_without_a_sort(tmp_path):
    """Without conv_by_activity (its entry moved on every append), a page with neither a
    status, a stage nor a contact reads one conv_by_status range per status, merged in
    order: no sort of the tenant's rows, with or without an agent filter and a cursor."""
    with threadkeep.open(f"sqlite:///{tmp_path}/l.db") as store:
        first = store.list(tenant="t", limit=1)
        assert first.items == []
        store.start("a", tenant="t")
        store.start("b", tenant="t")
        cursor = store.list(tenant="t", limit=1).next_cursor
        assert cursor is not None
        merged: list[dict[str, Any]] = [{}, {"agent_id": "x"}, {"cursor": cursor}]
        for filters in [*merged, {"agent_id": "x", "cursor": cursor}]:
            plan = _list_plans(store, **filters)
            assert "MERGE (UNION ALL)" in plan, (filters, plan)
            reads = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
            assert len(reads) == len(threadkeep.Status), (filters, plan)
            assert all("USING INDEX conv_by_status (tenant=? AND status=?" in r for r in reads)
            assert not any("TEMP B-TREE" in step for step in plan), (filters, plan)
        single = (({"status": "new"}, "conv_by_status"), ({"stage": "Q"}, "conv_by_stage"))
        for one, index in single:
            plan = _list_plans(store, **one)
            assert len(plan) == 1 and f"USING INDEX {index}" in plan[0], (one, plan)
        db = store._backend._conn()  # type: ignore[attr-defined]
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "conv_by_activity" not in names


def test_a_list_without_status_returns_every_status_in_activity_order(tmp_path):
    """The merged arms cover every status: pages of 2 visit each conversation once, newest
    activity first, whatever its status."""
    clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with threadkeep.open(f"sqlite:///{tmp_path}/s.db", clock=clock) as store:
        made: list[str] = []
        for status in ("new", "active", "idle", "waiting_agent", "closed") * 2:
            conv = store.start(f"c{len(made)}", tenant="t")
            if status == "closed":
                store.close_conversation(conv.id)
            elif status == "idle":
                store.append(conv.id, "user", "hi")
                store.set_status(conv.id, "idle")
            elif status != "new":
                store.set_status(conv.id, status)
            clock.advance(timedelta(seconds=1))
            made.append(conv.id)
        store.append(made[1], "user", "latest")  # the oldest active one moves to the front
        seen, cursor = [], None
        while True:
            page = store.list(tenant="t", limit=2, cursor=cursor)
            seen += [c.id for c in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        expected = [made[1], *[cid for cid in reversed(made) if cid != made[1]]]
        assert seen == expected
        assert {store.get(cid).status for cid in seen} == {s.value for s in threadkeep.Status}


@pytest.mark.parametrize("shape", ["last", "after", "before", "key", "window", "state"])
def test_a_read_sees_exactly_the_conversations_is_visible_lets_it_see(tmp_path, shape):
    # The reads test visibility in their one statement's WHERE (no per-row tenant and
    # expiry): the same answer as decide.is_visible at the expiry's edge and for a tenant.
    # "window": context()'s read (WindowOp), the window of 20 and the size, ([], 0) unseen;
    # "state": load_state (the current version, and version 2: NO_VERSION when seen).
    from threadkeep._rules import decide, ops
    from threadkeep._rules.ops import Outcome
    from threadkeep._rules.times import to_us

    with threadkeep.open(f"sqlite:///{tmp_path}/vis.db") as store:
        conv = store.start("c1", tenant="t1")
        store.append(conv.id, "user", "hi", idempotency_key="k1")
        empty = store.start("c2", tenant="t1")
        forever = store.start("c3", tenant="t1", retention=threadkeep.Retention(ttl=None))
        store.append(forever.id, "user", "hi", idempotency_key="k1")
        for cid in (conv.id, forever.id):  # a state where there is a message
            store.save_state(cid, {"n": 1})
        backend: Any = store._backend
        for cid, count in ((conv.id, 1), (empty.id, 0), (forever.id, 1)):
            expires_at = store.get(cid).expires_at
            expires_us = None if expires_at is None else to_us(expires_at)
            edge = 0 if expires_us is None else expires_us  # None: never expires (from review)
            for now_us in (edge - 1, edge, edge + 1, 2**62):
                for tenant in (None, "t1", "t2"):
                    op: Any
                    if shape == "key":
                        op = ops.KeyOp(cid, tenant, now_us, "k1")
                    elif shape == "window":
                        op = ops.WindowOp(cid, tenant, now_us)
                    elif shape == "state":
                        op = ops.LoadStateOp(cid, tenant, now_us, None)
                    else:
                        op = ops.ReadOp(
                            cid, tenant, now_us, last=2 if shape == "last" else None,
                            after=0, limit=10, before=5 if shape == "before" else None,
                        )  # fmt: skip
                    result = backend.execute(op)
                    seen = decide.is_visible("t1", expires_us, tenant, now_us)
                    assert (result.outcome is Outcome.OK) is seen, (cid, now_us, tenant)
                    if shape == "window":
                        rows, size = result.value
                        assert [r.content for r in rows] == ["hi"] * count * seen
                        assert size == (20 if seen else 0)
                    elif shape == "state":
                        assert (result.value is None) is (count == 0 or not seen)
                        other = backend.execute(ops.LoadStateOp(cid, tenant, now_us, 2))
                        assert other.outcome is (Outcome.NO_VERSION if seen else Outcome.NOT_FOUND)
                    elif not seen:
                        continue
                    elif shape == "key":
                        assert (result.value is None) is (count == 0)
                    else:
                        assert [m.content for m in result.value] == ["hi"] * count
                        assert all(m.conversation_id == cid for m in result.value)
        missing = ops.ReadOp("nope", None, 0, last=2, after=0, limit=10)
        assert backend.execute(missing).outcome is Outcome.NOT_FOUND
        assert backend.execute(ops.WindowOp("nope", None, 0)).value == ([], 0)
        assert backend.execute(ops.LoadStateOp("nope", None, 0, None)).outcome is Outcome.NOT_FOUND
