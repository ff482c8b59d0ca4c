"""SQLite: closing while another thread is inside a call waits for it; sweeps are bounded."""

from __future__ import annotations

import sqlite3
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from threadkeep import StoreClosed
from threadkeep.backends.sqlite import backend as sqlite_backend


def test_close_waits_for_a_call_in_progress(tmp_path: Path) -> None:
    """A thread's append waits for the file's write lock (held by another connection) when
    the store is closed: close() returns only after the append finished, and the append is
    stored, not cut off under a running statement (a closed connection, or a crash)."""
    path = tmp_path / "t.db"
    store = threadkeep.open(f"sqlite:///{path}?timeout=5")
    conv = store.start("c-1")
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock: the append waits in SQLite
    outcome: list[Any] = []
    appended = threading.Event()

    def append() -> None:
        try:
            outcome.append(store.append(conv.id, "user", "while closing"))
        except BaseException as exc:  # recorded: the assertion below names it
            outcome.append(exc)
        appended.set()

    writer = threading.Thread(target=append)
    writer.start()
    time.sleep(0.3)  # the append is inside SQLite's busy wait by now
    threading.Timer(0.5, blocker.rollback).start()  # let it through in a moment
    store.close()
    assert appended.is_set(), "close() returned while the append was still running"
    writer.join(10)
    blocker.close()
    (result,) = outcome
    assert isinstance(result, threadkeep.Message), result
    with threadkeep.open(f"sqlite:///{path}") as again:
        assert [m.content for m in again.messages(conv.id)] == ["while closing"]


def test_calls_after_close_are_refused(tmp_path: Path) -> None:
    """The backend refuses a call that starts after close() began (the Store refuses first;
    this is a call already past that check)."""
    store = threadkeep.open(f"sqlite:///{tmp_path / 't.db'}")
    backend = store._backend
    store.close()
    with pytest.raises(StoreClosed):
        backend.ping()


def test_a_purge_deletes_a_long_history_over_several_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2,000-message expired conversation with a bite of 500 messages per transaction
    (MESSAGES_PER_PURGE=1 × SWEEP_BATCH=500) is deleted by 4 write transactions or more (it was
    one): the file's one write lock is never held for the whole history."""
    clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with threadkeep.open(f"sqlite:///{tmp_path / 't.db'}", clock=clock) as store:
        conv = store.start("c-1")
        for _ in range(2):
            store.append_many(conv.id, [("user", "x")] * 1000)
        clock.advance(timedelta(days=8))
        monkeypatch.setattr(sqlite_backend, "MESSAGES_PER_PURGE", 1)
        statements: list[str] = []
        backend = store._backend
        assert isinstance(backend, sqlite_backend.SQLiteBackend)
        backend._conn().set_trace_callback(statements.append)
        assert store.sweep().purged == 1
        backend._conn().set_trace_callback(None)
    transactions: list[list[str]] = []
    for statement in statements:
        if statement.startswith("BEGIN"):
            transactions.append([])
        elif transactions:
            transactions[-1].append(statement)
    deleting = [t for t in transactions if any("DELETE FROM messages" in s for s in t)]
    assert len(deleting) >= 4, [len(t) for t in transactions]
    with threadkeep.open(f"sqlite:///{tmp_path / 't.db'}") as again:
        assert isinstance(again._backend, sqlite_backend.SQLiteBackend)
        db = again._backend._conn()
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM conversations").fetchone() == (0,)


def test_a_dry_run_sweep_counts_without_loading_the_due_ids(tmp_path: Path) -> None:
    """5,000 expired and 5,000 idle conversations: a dry run reports them all while its peak
    allocation stays far below what holding their ids takes (it fetched every id before)."""
    clock = threadkeep.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    short = threadkeep.Retention(ttl=timedelta(hours=1))
    with threadkeep.open(f"sqlite:///{tmp_path / 't.db'}", clock=clock) as store:
        for i in range(5000):
            store.start(f"gone-{i}", retention=short)
            store.append(store.start(f"idle-{i}").id, "user", "hi")  # active, then idle
        clock.advance(timedelta(hours=2))
        store.sweep(dry_run=True)  # warm: statements compiled, caches filled
        tracemalloc.start()
        try:
            report = store.sweep(dry_run=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (report.purged, report.idled) == (5000, 5000)
        assert peak < 100_000, peak  # 10,000 ids fetched as rows take about 1.5 MB
