"""A turn lease released while the store is out (finding 2 of the review of b07f6d3).

The outage is real: another connection holds the SQLite file exclusively (the store waits at
most 0.1 s for a lock), as a dropped Redis or PostgreSQL would refuse the release.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import threadkeep
from threadkeep import BackendUnavailable


@contextmanager
def locked_for(path: Path, seconds: float) -> Iterator[threading.Timer]:
    """Hold the file exclusively from now for ``seconds`` (released by a timer)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("BEGIN EXCLUSIVE")

    def unlock() -> None:
        db.execute("ROLLBACK")
        db.close()

    timer = threading.Timer(seconds, unlock)
    timer.start()
    try:
        yield timer
    finally:
        timer.join()


def test_a_release_refused_by_an_outage_is_tried_again(tmp_path: Path) -> None:
    """On b07f6d3 the release failed at once and the conversation stayed locked for the lease."""
    path = tmp_path / "t.db"
    with threadkeep.open(f"sqlite:///{path}?timeout=0.1") as store:
        cid = store.start("c").id
        with ExitStack() as outage, store.turn(cid, lease=30) as turn:
            turn.append("user", "hello")
            outage.enter_context(locked_for(path, 0.6))
        with store.turn(cid, timeout=0) as again:  # free at once: not held for 30 s
            again.append("assistant", "hi")
        assert [m.content for m in store.messages(cid)] == ["hello", "hi"]


def test_a_lease_that_cannot_be_released_lapses_by_its_ttl(tmp_path: Path) -> None:
    """The store stays out past the lease: the turn says so, and the lease lapses by itself."""
    path = tmp_path / "t.db"
    with threadkeep.open(f"sqlite:///{path}?timeout=0.1") as store:
        cid = store.start("c").id
        with ExitStack() as outage:
            with pytest.raises(BackendUnavailable), store.turn(cid, lease=0.5) as turn:
                turn.append("user", "hello")
                outage.enter_context(locked_for(path, 1.5))
                began = time.monotonic()
            tried = time.monotonic() - began
        assert 0.4 <= tried < 1.4  # tried for the lease's length (0.5 s), no longer
        with store.turn(cid, timeout=0) as again:  # lapsed: nobody released it
            again.append("user", "later")
        assert [m.content for m in store.messages(cid)] == ["hello", "later"]


def test_a_failed_turn_releases_its_lease_on_the_async_store(tmp_path: Path) -> None:
    """The body's own error is what the caller sees; the lease is released behind it."""
    path = tmp_path / "t.db"

    async def main() -> None:
        async with await threadkeep.open_async(f"sqlite:///{path}?timeout=0.1") as store:
            cid = (await store.start("c")).id
            with ExitStack() as outage, pytest.raises(BackendUnavailable) as failed:
                async with store.turn(cid, lease=30) as turn:
                    outage.enter_context(locked_for(path, 0.6))
                    await turn.append("user", "hello")  # the outage: refused
            assert "unavailable" in str(failed.value)
            async with store.turn(cid, timeout=0) as again:
                await again.append("user", "after")
            assert [m.content for m in await store.messages(cid)] == ["after"]

    asyncio.run(main())
