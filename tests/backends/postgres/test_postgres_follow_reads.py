"""What a waiting PostgreSQL follower costs: its reads per write, its listener's wakes idle.

The followers here wait without the one-second re-read (``UNNOTIFIED_WAIT`` patched to an
hour), so every read after the first was woken by a notification, or came back for more after
a read that got events.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import psycopg
import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import SHARED, listening, sessions, url_of
from threadkeep._rules.ops import EventsOp, Outcome, Result
from threadkeep._rules.rows import EventRow
from threadkeep.backends.postgres import aio, sync

pytestmark = pytest.mark.postgres

WRITES = 20


@pytest.fixture(autouse=True)
def _notified_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "UNNOTIFIED_WAIT", 3600.0)
    monkeypatch.setattr(aio, "UNNOTIFIED_WAIT", 3600.0)


def _count_reads(backend: Any) -> list[int]:
    """Count the backend's event reads (one statement each)."""
    reads = [0]
    flows = backend._flows
    follow = flows.follow_events

    def counted(op: Any) -> Any:
        reads[0] += 1
        return follow(op)

    flows.follow_events = counted
    return reads


def _write_one_at_a_time(
    schema: str, reads: list[int], got: list[str], append: Callable[[int], Any]
) -> None:
    """Each write once the follower has the one before and waits again."""
    wait_until("the follower to wait", lambda: listening(schema) and reads[0] == 1)
    for n in range(WRITES):
        append(n)
        wait_until(f"the follower to get write {n}", lambda: len(got) == n + 1)  # noqa: B023
    # one read per write: the read that got its event took all there was, so the follower
    # waits for the next notification instead of reading again at once (it read twice per
    # write before: 40 reads here)
    assert reads[0] == 1 + WRITES


def test_a_follower_that_took_all_there_was_waits_for_the_next_write(schema: str) -> None:
    """Sync store: a follower of every tenant reads once per write, not twice."""
    got: list[str] = []
    with threadkeep.open(url_of(schema)) as store, threadkeep.open(url_of(schema)) as writer:
        conv = writer.start(contact_id="c", tenant="a")
        writer.append(conv.id, "user", "first")  # the writes below log one event each
        last = [e.id for e in store.events(timeout=0)][-1]
        reads = _count_reads(store._backend)

        def follow() -> None:
            for event in store.events(after=last, timeout=60):
                got.append(event.id)
                if len(got) == WRITES:
                    return

        thread = threading.Thread(target=follow)
        thread.start()
        try:
            _write_one_at_a_time(
                schema, reads, got, lambda n: writer.append(conv.id, "user", f"m{n}")
            )
        finally:
            thread.join(60)
    assert got == sorted(got, key=int) and len(set(got)) == WRITES


def test_a_follower_that_took_all_there_was_waits_for_the_next_write_async(schema: str) -> None:
    """Async store: the same (the writes from a thread of their own)."""
    got: list[str] = []
    writer = threadkeep.open(url_of(schema))

    async def main() -> None:
        async with threadkeep.open_async(url_of(schema)) as store:
            conv = await store.start(contact_id="c", tenant="a")
            await store.append(conv.id, "user", "first")  # the writes below log one event each
            last = [e.id async for e in store.events(timeout=0)][-1]
            reads = _count_reads(store._backend)

            async def follow() -> None:
                async for event in store.events(after=last, timeout=60):
                    got.append(event.id)
                    if len(got) == WRITES:
                        return

            task = asyncio.create_task(follow())
            await asyncio.to_thread(
                _write_one_at_a_time,
                schema,
                reads,
                got,
                lambda n: writer.append(conv.id, "user", f"m{n}"),
            )
            await asyncio.wait_for(task, 60)

    try:
        asyncio.run(main())
    finally:
        writer.close()
    assert got == sorted(got, key=int) and len(set(got)) == WRITES


def _switches(thread: threading.Thread) -> int:
    """How many times ``thread`` went to sleep so far (voluntary context switches, Linux)."""
    with open(f"/proc/self/task/{thread.native_id}/status") as status:
        line = next(x for x in status if x.startswith("voluntary_ctxt_switches:"))
    return int(line.split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_idle_listener_does_not_wake(schema: str) -> None:
    """The LISTEN thread sleeps until a notification comes (or ``close``): while a follower
    waits 1.5 s with nothing written it does not wake (it polled its session every 0.1 s
    before: about 15 wakes); a write's notification still reaches the follower."""
    with threadkeep.open(url_of(schema)) as store, threadkeep.open(url_of(schema)) as writer:
        conv = writer.start(contact_id="c", tenant="a")
        last = [e.id for e in store.events(timeout=0)][-1]
        assert list(store.events(after=last, timeout=0.2)) == []  # the listener listens
        thread = cast(Any, store._backend)._listener._thread
        assert thread is not None
        before = _switches(thread)
        assert list(store.events(after=last, timeout=1.5)) == []
        assert _switches(thread) - before <= 1
        got: list[str] = []

        def follow() -> None:
            for event in store.events(after=last, timeout=30):
                got.append(event.kind)
                return

        follower = threading.Thread(target=follow)
        follower.start()
        wait_until("the follower to wait", lambda: listening(schema))
        writer.append(conv.id, "user", "hi")
        follower.join(30)
    assert got and got[0] in {"message.appended", "status.changed"}


def test_a_follower_reads_on_after_the_listen_session_was_lost_twice(schema: str) -> None:
    """A lost LISTEN session is reconnected each time (the next one may get the same socket
    number: the thread once died of registering it twice), and the follower still gets a
    write made after the losses."""
    with threadkeep.open(url_of(schema)) as store, threadkeep.open(url_of(schema)) as writer:
        conv = writer.start(contact_id="c", tenant="a")
        last = [e.id for e in store.events(timeout=0)][-1]
        assert list(store.events(after=last, timeout=0.2)) == []  # the listener listens
        listener = cast(Any, store._backend)._listener
        for _ in range(2):
            pids = [pid for pid, name in sessions(schema) if name.startswith("threadkeep-events")]
            assert len(pids) == 1
            with psycopg.connect(SHARED, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (pids[0],))

            def relistening(gone: int = pids[0]) -> bool:
                now = [p for p, n in sessions(schema) if n.startswith("threadkeep-events")]
                return now not in ([], [gone])

            wait_until("the listener to reconnect", relistening)
        writer.append(conv.id, "user", "after the losses")
        kinds = [e.kind for e in store.events(after=last, timeout=10)]
        assert "message.appended" in kinds
        assert listener._thread is not None and listener._thread.is_alive()


def _read(n: int, *, after: int = 5, limit: int = 3, held: bool = False) -> Any:
    rows = [EventRow(str(after + i + 1), "k", "a", "c", "{}", 0) for i in range(n)]
    return (Result(Outcome.OK, rows), held)


def test_only_a_read_that_left_nothing_unread_lets_a_follower_wait(schema: str) -> None:
    """``Listener.seen``/``quiet``: a follower of every tenant at the end of a read that took
    fewer events than its limit, none held back, at the same mark, may wait; after a full
    batch or a held-back read it reads at once, and so does one tenant's follower always."""
    with threadkeep.open(url_of(schema)) as store:
        listener = cast(Any, store._backend)._listener
        every = EventsOp(tenant=None, after=5, limit=3, wait=1.0)
        mark = (1, 0)
        now = time.monotonic()
        listener.seen(every, mark, _read(2), now + 1.0)
        assert listener.quiet(None, 7, mark, now) > 0  # took all there was: wait
        assert listener.quiet(None, 6, mark, now) == 0  # another position
        assert listener.quiet(None, 7, (2, 0), now) == 0  # the mark moved
        assert listener.quiet("a", 7, mark, now) == 0  # one tenant's follower
        assert listener.quiet(None, 7, mark, now + 2.0) == 0  # the note's time is up
        listener.seen(
            EventsOp(tenant=None, after=7, limit=3, wait=1.0), mark, _read(3, after=7), now + 1.0
        )
        assert listener.quiet(None, 10, mark, now) == 0  # a full batch: more may be there
        listener.seen(every, mark, _read(1, held=True), now + 1.0)
        assert listener.quiet(None, 6, mark, now) == 0  # held back: read again
        listener.seen(EventsOp(tenant="a", after=5, limit=3, wait=1.0), mark, _read(1), now + 1.0)
        assert listener.quiet("a", 6, mark, now) == 0
