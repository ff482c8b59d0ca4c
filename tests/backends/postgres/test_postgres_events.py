"""PostgreSQL events: followers wait on LISTEN/NOTIFY; the async store end to end."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import threadkeep
from tests._servers import wait_until
from tests.backends.postgres._helpers import SHARED, connect, listening, sessions, url_of

pytestmark = pytest.mark.postgres


def test_events_wait_wakes_on_notify(schema: str) -> None:
    """A reader waits on LISTEN (an idle session, no polling) and wakes on the NOTIFY.

    The wait is an hour: only the notification can end it before pytest's timeout.
    """
    store = threadkeep.open(url_of(schema))
    try:
        conv = store.start(contact_id="c1")
        last = [e.id for e in store.events(timeout=0)][-1]
        got: list[Any] = []
        reader = threading.Thread(
            target=lambda: got.append(next(store.events(after=last, timeout=3600)))
        )
        reader.start()
        wait_until("the reader to LISTEN", lambda: listening(schema))
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


FOLLOWERS = 20
POOL = 4


def _watch(schema: str, seconds: float) -> tuple[set[int], int]:
    """Sample the store's sessions for ``seconds``: the LISTEN pids seen, the most at once."""
    listeners: set[int] = set()
    most = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = sessions(schema)
        listeners |= {pid for pid, name in now if name.startswith("threadkeep-events:")}
        most = max(most, len(now))
        time.sleep(0.1)
    return listeners, most


@pytest.mark.parametrize("api", ["sync", "async"])
def test_idle_followers_share_one_listen_session(schema: str, api: str) -> None:
    """20 followers waiting in 1 s slices (like the SSE route) on a pool of 4: one LISTEN
    session for all of them, never reopened, at most pool + 1 sessions; one event reaches all.
    """
    url = f"{url_of(schema)}&pool_size={POOL}"
    got: dict[int, str] = {}

    def slices(store: Any, after: str, i: int) -> None:
        while not (events := list(store.events(after=after, timeout=1.0))):
            pass
        got[i] = events[0].kind

    if api == "sync":
        store = threadkeep.open(url)
        conv = store.start(contact_id="c1")
        last = [e.id for e in store.events(timeout=0)][-1]
        threads = [threading.Thread(target=slices, args=(store, last, i)) for i in range(FOLLOWERS)]
        for t in threads:
            t.start()
        try:
            listeners, most = _watch(schema, 3.5)
            store.append(conv.id, "user", "hi")
            for t in threads:
                t.join(30)
        finally:
            store.close()
    else:

        async def main() -> tuple[set[int], int]:
            astore = await threadkeep.open_async(url)
            try:
                conv = await astore.start(contact_id="c1")
                last = [e.id async for e in astore.events(timeout=0)][-1]

                async def follow(i: int) -> None:
                    while not (events := [e async for e in astore.events(after=last, timeout=1.0)]):
                        pass
                    got[i] = events[0].kind

                tasks = [asyncio.create_task(follow(i)) for i in range(FOLLOWERS)]
                seen = await asyncio.to_thread(_watch, schema, 3.5)
                await astore.append(conv.id, "user", "hi")
                await asyncio.wait_for(asyncio.gather(*tasks), 30)
                return seen
            finally:
                await astore.aclose()

        listeners, most = asyncio.run(main())
    assert len(listeners) == 1, f"LISTEN sessions opened: {sorted(listeners)}"
    assert most <= POOL + 1
    assert got == dict.fromkeys(range(FOLLOWERS), "message.appended")


def test_the_log_floor_rises_past_an_event_erased_before_its_trim(schema: str) -> None:
    """An event an erasure removed is still trimmed by count: the floor rises past it, so a
    cursor from before it expires (the memory store's rule) instead of reading on as if
    nothing had been trimmed."""
    with threadkeep.open(url_of(schema), limits=threadkeep.Limits(events_kept=3)) as store:
        gone = store.start(contact_id="c1", tenant="t")  # event 1
        kept = store.start(contact_id="c2", tenant="t")  # event 2
        store.delete(gone.id, tenant="t")  # erases event 1; logs event 3
        store.set_stage(kept.id, "Q1", tenant="t")  # event 4 trims id 1, erased already
        with pytest.raises(threadkeep.CursorExpired):
            list(store.events(after="0", tenant="t", timeout=0))
        assert [e.id for e in store.events(after="1", tenant="t", timeout=0)] == ["2", "3", "4"]


def test_an_id_that_never_became_an_event_does_not_expire_a_cursor(schema: str) -> None:
    """A write rolled back after drawing an id leaves a gap in the ids; the trim of that id
    deletes nothing and must not raise the floor: a reader exactly ``events_kept`` behind
    whose next ids are gaps missed no event (it expired before migration 9)."""
    with threadkeep.open(url_of(schema), limits=threadkeep.Limits(events_kept=3)) as store:
        a = store.start(contact_id="c1", tenant="t")  # event 1
        with connect(schema) as conn:  # id 2 drawn by a write rolled back
            conn.execute(
                "INSERT INTO events (kind, tenant, conversation_id, data_json, at_us) "
                "VALUES ('x', 't', 'x', '{}', 0)"
            )
            conn.rollback()
        store.set_stage(a.id, "Q1", tenant="t")  # event 3
        store.set_stage(a.id, "Q2", tenant="t")  # event 4 trims id 1: floor 1
        store.set_stage(a.id, "Q3", tenant="t")  # event 5 trims id 2, which never was
        got = [e.id for e in store.events(after="1", tenant="t", timeout=0)]
        assert got == ["3", "4", "5"]
        assert [e.id for e in store.events(after="1", timeout=0)] == ["3", "4", "5"]
        with pytest.raises(threadkeep.CursorExpired):  # event 1 itself was trimmed
            list(store.events(after="0", tenant="t", timeout=0))


def test_an_erased_event_leaves_a_placeholder_that_no_reader_returns(schema: str) -> None:
    """Erasure keeps the ids of the events it removes (placeholders of no tenant): readers of
    every tenant skip them, and the erasure still counts them."""
    with threadkeep.open(url_of(schema)) as store:
        gone = store.start(contact_id="c1", tenant="t")
        store.append(gone.id, "user", "hi", tenant="t")
        kept = store.start(contact_id="c2", tenant="u")
        store.delete(gone.id, tenant="t")
        every = [(e.kind.value, e.conversation_id) for e in store.events(timeout=0)]
        assert every == [
            ("conversation.started", kept.id),
            ("conversation.deleted", gone.id),
        ]
        assert [e.kind.value for e in store.events(tenant="t", timeout=0)] == [
            "conversation.deleted"
        ]
        with connect(schema) as conn:
            rows = conn.execute("SELECT id, tenant FROM events ORDER BY id").fetchall()
    assert rows == [(1, ""), (2, ""), (3, ""), (4, "u"), (5, "t")]


def test_an_append_that_writes_nothing_wakes_no_listener(schema: str) -> None:
    """Only a write that logged events notifies: a replay and an append to a closed
    conversation commit nothing and send no NOTIFY (each did before migration 9)."""
    from threadkeep._url import StoreURL
    from threadkeep.backends.postgres._conn import ConnectionOptions

    channel = ConnectionOptions(StoreURL.parse(url_of(schema))).channel
    with threadkeep.open(url_of(schema) + "&pool_size=1") as store:
        conv = store.resume("c", tenant="t")
        store.append(conv.id, "user", "hi", idempotency_key="k")
        closed = store.resume("d", tenant="t")
        store.close_conversation(closed.id)
        with connect(schema, autocommit=True) as listener:
            listener.execute(f"LISTEN {channel}")
            replay = store.append(conv.id, "user", "hi", idempotency_key="k")
            assert replay.replayed
            with pytest.raises(threadkeep.ConversationClosed):
                store.append(closed.id, "user", "hi")
            store.append(conv.id, "user", "written")  # the one write that logs an event
            listener.execute("SELECT pg_notify(%s, 'end')", (channel,))
            payloads = []
            for note in listener.notifies(timeout=30):
                payloads.append(note.payload)
                if note.payload == "end":
                    break
    assert payloads == ["t:t", "end"]  # the write's tenant (migration 11)
