"""SQLite: closing the store while another thread is inside a call waits for that call."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from threadkeep import StoreClosed


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
