"""Event streams wait on one reader of the log per process (``service/followers.py``).

An idle ``GET /v1/events`` stream makes no store read and holds no store connection: N idle
streams cost the store what one does. Each stream still gets every event of its tenant, in log
order, and none of another tenant's.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

import threadkeep
from tests._servers import POSTGRES_BASE, require_reachable
from tests.backends.postgres._helpers import drop_schema
from tests.service._service_helpers import LiveServer, PrivateRedis
from threadkeep import Event, EventKind
from threadkeep._models import jsonable
from threadkeep._rules.ops import Op, Result
from threadkeep.backends import AsyncBackend
from threadkeep.service.followers import PACE, PACED_LOG, Followers
from threadkeep.service.routers import events as events_route
from threadkeep.service.routers.events import _everything, _follow, sse

STREAMS = 100
POOL = 2  # the served store's pool: 40 streams must not need more


class CountingBackend:
    """Counts the event reads that reach the backend."""

    def __init__(self, backend: AsyncBackend) -> None:
        self.backend = backend
        self.event_reads = 0

    async def execute(self, op: Op[Any]) -> Result[Any]:
        if op.name == "read_events":
            self.event_reads += 1
        return await self.backend.execute(op)

    async def ping(self) -> None:
        await self.backend.ping()

    async def close(self) -> None:
        await self.backend.close()


async def _nothing() -> AsyncIterator[Event]:
    return
    yield  # an async generator with no events: the backlog of a stream that is caught up


async def _until(what: str, check: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


def test_idle_streams_read_nothing_and_every_stream_gets_every_event(store_url: str) -> None:
    """100 streams of one tenant, one of another and one of a tenant with no events, caught
    up, in one process, heartbeats every 0.2 s: while idle the store sees only the reader's
    reads (about one a second, not 100 or one per heartbeat); three appends (four events) reach
    each stream of the tenant once, in log order, without a read per stream; the other streams
    get none; stopping ends every stream.
    """
    tenant, other = f"t-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        counting: list[CountingBackend] = []

        def wrap(backend: AsyncBackend) -> AsyncBackend:
            counting.append(CountingBackend(backend))
            return counting[0]

        store = await threadkeep.open_async(store_url, instrument=wrap)
        followers = Followers()
        try:
            conv = await store.start(contact_id="c1", tenant=tenant)
            await store.start(contact_id="c2", tenant=other)
            cursor = [e async for e in store.events(timeout=0)][-1].id
            sent: list[list[str]] = [[] for _ in range(STREAMS + 1)]
            followers.start(store)  # as the route does

            async def stream(i: int, who: str, after: str | None) -> None:
                chunks = _follow(  # heartbeats every 0.2 s: they make no read either
                    store, who, _nothing(), after, True, 0.2, True, followers, lambda e: True
                )
                async for chunk in chunks:
                    sent[i].append(chunk)

            tasks = [asyncio.create_task(stream(i, tenant, cursor)) for i in range(STREAMS)]
            tasks.append(asyncio.create_task(stream(STREAMS, other, cursor)))
            quiet: list[str] = []  # a tenant with no event at all: its position is no event's
            sent.append(quiet)
            tasks.append(asyncio.create_task(stream(STREAMS + 1, "quiet", None)))
            await _until("the streams to start", lambda: all(sent))
            await asyncio.sleep(0.5)
            before = counting[0].event_reads
            await asyncio.sleep(3.0)
            assert counting[0].event_reads - before <= 5  # the reader's slices, not the streams'

            before = counting[0].event_reads
            for text in ("one", "two", "three"):
                await store.append(conv.id, "user", text)
            expected = [
                f"id: {e.id}" async for e in store.events(tenant=tenant, after=cursor, timeout=0)
            ]
            assert len(expected) == 4  # three messages and the status change

            def ids(chunks: list[str]) -> list[str]:
                return [line for line in "".join(chunks).split("\n") if line.startswith("id: ")]

            await _until("every event", lambda: all(len(ids(s)) >= 4 for s in sent[:STREAMS]))
            assert counting[0].event_reads - before <= 10  # not one (or more) per stream
            for chunks in sent[:STREAMS]:
                assert ids(chunks) == expected
            assert ids(sent[STREAMS]) == ids(quiet) == []  # the other tenants' streams: nothing
            assert ": heartbeat\n\n" in quiet

            await followers.aclose()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)  # stopping ends every stream
        finally:
            await followers.aclose()
            await store.aclose()

    asyncio.run(main())


def test_a_stream_behind_the_window_reads_the_store() -> None:
    """A position older than the reader's window is answered from the store, in order."""

    async def main() -> None:
        store = await threadkeep.open_async("memory://")
        followers = Followers(window=2)
        try:
            conv = await store.start(contact_id="c1")
            cursor = [e async for e in store.events(timeout=0)][-1].id
            followers.start(store)
            await _until("the reader", lambda: followers.since("default", cursor) is not None)
            for i in range(5):
                await store.append(conv.id, "user", f"m{i}")
            expected = [e.id async for e in store.events(after=cursor, timeout=0)]
            await _until("the reader to read them", lambda: followers.since("x", cursor) is None)
            chunks = _follow(
                store, "default", _nothing(), cursor, True, 60.0, True, followers, lambda e: True
            )
            got: list[str] = []
            async for chunk in chunks:
                got += [line[4:] for line in chunk.split("\n") if line.startswith("id: ")]
                if len(got) >= len(expected):
                    break
            assert got == expected
        finally:
            await followers.aclose()
            await store.aclose()

    asyncio.run(main())


# ---- a real server: what the store sees of 40 idle streams --------------------------------


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])  # fmt: skip
def served_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """(store URL, connections()): a private Redis, or a schema of the test's own."""
    if request.param == "redis":
        redis_server = PrivateRedis(tmp_path)
        redis_server.start()
        client = redis_server.client()

        def redis_connections() -> dict[str, int]:
            clients = [c for c in client.client_list() if c.get("cmd") != "client|list"]
            waiting = sum(c.get("cmd") == "xread" for c in clients)
            return {"total": len(clients), "waiting": waiting}

        try:
            yield f"{redis_server.url}?prefix=tk-followers&pool_size={POOL}", redis_connections
        finally:
            client.close()
            redis_server.stop()
        return
    import psycopg

    require_reachable(POSTGRES_BASE)
    schema = f"tk_test_{uuid.uuid4().hex[:12]}"

    def pg_connections() -> dict[str, int]:
        with psycopg.connect(POSTGRES_BASE) as conn:
            rows = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE application_name IN (%s, %s)",
                (f"threadkeep:{schema}", f"threadkeep-events:{schema}"),
            ).fetchall()
        names = [name for (name,) in rows]
        return {"total": len(names), "waiting": names.count(f"threadkeep-events:{schema}")}

    try:
        yield f"{POSTGRES_BASE}?schema={schema}&pool_size={POOL}", pg_connections
    finally:
        drop_schema(schema)


def _event_reads(base: str) -> float:
    return _metric_reads(httpx.get(base + "/metrics", timeout=10).text)


def _metric_reads(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("threadkeep_store_operations_total{") and 'op="read_events"' in line
    )


def test_idle_streams_hold_no_store_connection_of_their_own(
    live_server: Any, served_store: tuple[str, Any]
) -> None:
    """One worker, 40 idle streams, a pool of 2: the server holds at most the pool and one
    connection that waits for events (XREAD BLOCK, or the LISTEN session), and reads events
    about once a second, not 40 times; the streams still follow.
    """
    url, connections = served_store
    server: LiveServer = live_server(url)
    httpx.post(server.url + "/v1/chat", json={"message": "hi"}, timeout=10)
    with httpx.Client(timeout=httpx.Timeout(10.0)) as client:
        streams: list[tuple[Any, Iterator[str]]] = []

        def open_stream() -> None:
            cm = client.stream("GET", server.url + "/v1/events")
            lines = cm.__enter__().iter_lines()
            assert next(lines) == "retry: 2000"
            streams.append((cm, lines))

        for _ in range(40):
            open_stream()
        time.sleep(2.0)
        reads = _event_reads(server.url)
        time.sleep(3.0)
        assert _event_reads(server.url) - reads <= 5
        many = connections()
        assert many["waiting"] <= 1, many
        assert many["total"] <= POOL + 1, many
        # and they still follow: the next message reaches every stream
        answer = httpx.post(server.url + "/v1/chat", json={"message": "again"}, timeout=10)
        conversation = answer.json()["conversation_id"]
        for _, lines in streams:
            assert any(conversation in line for line in lines if line.startswith("data: "))
        for cm, _ in streams:
            cm.__exit__(None, None, None)


def test_a_stream_without_a_cursor_starts_at_the_tail_without_reading_the_log(
    make_client: Any,
) -> None:
    """Once the reader knows the end of the log, a new stream without a cursor gets its
    tenant's last event id as its resume point (as when it read the tenant's log) without an
    event read of its own.
    """
    client = make_client()
    for i in range(3):
        assert client.post("/v1/chat", json={"message": f"m{i}"}).status_code == 200
    first = client.get("/v1/events?follow=false")  # starts the reader; may read the log itself
    last = [line for line in first.text.splitlines() if line.startswith("id: ")]
    followers: Followers = client.app.state.followers
    deadline = time.monotonic() + 10
    while followers.tail(followers_tenant(client)) is None:
        assert time.monotonic() < deadline, "the reader never got ready"
        time.sleep(0.05)
    reads = _metric_reads(client.get("/metrics").text)
    again = client.get("/v1/events?follow=false")
    assert _metric_reads(client.get("/metrics").text) == reads
    assert again.text == first.text == f"retry: 2000\n\n{last[0]}\n\n"


def followers_tenant(client: Any) -> str:
    """The tenant of the test client's key."""
    return str(next(iter(client.app.state.api_keys.values())))


# ---- what a wake costs: one write, one rendering per process, no deep copy -----------------


def _event(number: int, tenant: str = "t") -> Event:
    at = datetime(2026, 12, 1, 12, 0, number, tzinfo=UTC)
    data = {"seq": number, "role": "user", "parts": [{"kind": "text"}], "at": at}
    return Event(f"{number}-0", EventKind.MESSAGE_APPENDED, tenant, "c1", data, at)


def _caught_up(tenant: str = "t") -> Followers:
    """A reader that knows the end of the log (event ``0-0``), with no task: a test feeds it."""
    followers = Followers()
    followers._begin_at("0-0", {tenant: "0-0"})
    return followers


def _stream(followers: Followers) -> AsyncGenerator[str, None]:
    """A caught-up stream of tenant ``t`` that waits on ``followers`` (no store: none read)."""
    keep = _everything
    stream = _follow(cast(Any, None), "t", _nothing(), "0-0", True, 60.0, True, followers, keep)
    return cast(AsyncGenerator[str, None], stream)  # an async generator: aclose() ends it


def test_an_event_renders_without_deep_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Event.to_dict`` gives what ``jsonable(asdict(event))`` gave, without ``asdict``'s deep
    copy of ``data`` (one ``copy.deepcopy`` call per value, then ``jsonable`` copied it again).
    """
    event = _event(1)
    expected = jsonable(asdict(event))
    deep_copies = 0
    original = copy.deepcopy

    def counting(value: Any, memo: Any = None) -> Any:
        nonlocal deep_copies
        deep_copies += 1
        return original(value, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)
    rendered = event.to_dict()
    assert deep_copies == 0
    assert rendered == expected and list(rendered) == list(expected)
    assert sse(event) == sse(Event(**{f.name: getattr(event, f.name) for f in fields(event)}))
    rendered["data"]["parts"].append("x")  # a copy: the event's own data is untouched
    assert event.data["parts"] == [{"kind": "text"}]


def test_a_wake_sends_what_the_window_got_in_one_chunk() -> None:
    """Three events the reader takes in one read reach a waiting stream as one chunk (one
    write to its connection), in log order; another tenant's event in between is left out.
    """

    async def main() -> None:
        followers = _caught_up()
        chunks = _stream(followers)
        assert await anext(chunks) == "retry: 2000\n\n"
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.05)  # the stream looked (nothing yet) and waits
        assert not waiting.done()
        for event in (_event(1), _event(2, "other"), _event(3), _event(4)):
            followers._take(event)  # as the reader does, all of one read before it yields
        chunk = await asyncio.wait_for(waiting, 5)
        assert chunk == sse(_event(1)) + sse(_event(3)) + sse(_event(4))
        await followers.aclose()
        await chunks.aclose()

    asyncio.run(main())


def test_a_stream_behind_a_busy_tenant_sends_the_window_in_bounded_chunks() -> None:
    """A stream that waited while its tenant wrote a window's worth gets it in writes of about
    ``CHUNK`` characters (the connection's back-pressure holds between them), not one write of
    the whole window; together, every event once, in log order.
    """

    async def main() -> None:
        followers = _caught_up()
        chunks = _stream(followers)
        assert await anext(chunks) == "retry: 2000\n\n"
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.05)
        at = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
        taken = [
            Event(f"{n}-0", EventKind.MESSAGE_APPENDED, "t", "c1", {"seq": n, "text": "x" * 40}, at)
            for n in range(1, 2001)
        ]
        for event in taken:
            followers._take(event)
        sent = [await asyncio.wait_for(waiting, 5)]
        expected = "".join(sse(event) for event in taken)
        while sum(map(len, sent)) < len(expected):
            sent.append(await asyncio.wait_for(anext(chunks), 5))
        assert "".join(sent) == expected
        assert len(sent) > 1
        assert max(map(len, sent)) < events_route.CHUNK + max(len(sse(e)) for e in taken)
        await followers.aclose()
        await chunks.aclose()

    asyncio.run(main())


def test_streams_of_a_tenant_share_one_rendering_of_each_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten streams of one tenant in a process render each event once, not once per stream;
    an event that left the window forgets its rendering.
    """
    rendered: list[str] = []

    def counting(event: Event) -> str:
        rendered.append(event.id)
        return sse(event)

    monkeypatch.setattr(events_route, "sse", counting)

    async def main() -> None:
        followers = _caught_up()
        streams = [_stream(followers) for _ in range(10)]
        for stream in streams:
            assert await anext(stream) == "retry: 2000\n\n"
        waiting = [asyncio.ensure_future(anext(stream)) for stream in streams]
        await asyncio.sleep(0.05)
        for number in (1, 2, 3):
            followers._take(_event(number))
        sent = await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert sent == [sse(_event(1)) + sse(_event(2)) + sse(_event(3))] * 10
        assert rendered == ["1-0", "2-0", "3-0"]
        assert set(followers._texts) == {"1-0", "2-0", "3-0"}
        await followers.aclose()
        for stream in streams:
            await stream.aclose()

    asyncio.run(main())

    small = Followers(window=2)
    small._begin_at("0-0", {})
    for number in range(1, 6):
        small._take(_event(number))
        small.text(_event(number), sse)
    assert set(small._texts) == set(small._number) == {"3-0", "4-0", "5-0"}  # the window's


# ---- a busy log: the reader paces its reads, every stream still gets every event once ----------


def test_a_busy_reader_folds_the_writes_between_its_reads(own_store_url: str) -> None:
    """Another thread appends 40 messages 2 ms apart while the process's reader follows the
    log: after a read that got events the next one starts no sooner than ``PACE`` after it
    began, so the reads are at most one per ``PACE`` of the writes' time (plus the first and
    the last), where before the reader read about once per write (one notification each);
    it still takes every event of the log once, in log order. Idle, it reads as before.
    """
    if own_store_url.startswith("sqlite"):
        pytest.skip("SQLite's follower polls inside one backend call: its reads are not counted")
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    writes = 40

    async def main() -> None:
        counting: list[CountingBackend] = []

        def wrap(backend: AsyncBackend) -> AsyncBackend:
            counting.append(CountingBackend(backend))
            return counting[0]

        store = await threadkeep.open_async(own_store_url, instrument=wrap)
        writer = threadkeep.open(own_store_url)
        followers = Followers()
        try:
            conv = writer.start(contact_id="c1", tenant=tenant)
            writer.append(conv.id, "user", "first", tenant=tenant)  # then one event per append
            cursor = [e async for e in store.events(timeout=0)][-1].id
            followers.start(store)
            await _until("the reader", lambda: followers.since(tenant, cursor) is not None)
            await asyncio.sleep(0.3)  # the reader waits

            def append() -> None:
                for i in range(writes):
                    writer.append(conv.id, "user", f"m{i}", tenant=tenant)
                    time.sleep(0.002)

            before = counting[0].event_reads
            began = time.monotonic()
            await asyncio.to_thread(append)
            took = time.monotonic() - began
            expected = [e.id for e in writer.events(after=cursor, timeout=0)]
            assert len(expected) == writes
            await _until("the reader to take them", lambda: followers._head == expected[-1])
            reads = counting[0].event_reads - before
            assert reads <= took / PACE + 3, (reads, took)  # main: about one per write
            found = followers.since(tenant, cursor)
            assert found is not None and [e.id for e in found[0]] == expected
        finally:
            await followers.aclose()
            writer.close()
            await store.aclose()

    asyncio.run(main())


def test_streams_under_a_paced_reader_get_each_event_once_in_order(own_store_url: str) -> None:
    """Three tenants written by three threads at once, quickly; per tenant a stream from the
    tail, one from the start of the test, and one that ends after a few events and resumes
    from the last id it got (Last-Event-ID); a small window, so some looks read the store.
    Every stream gets exactly its tenant's events after its cursor, once, in log order.
    """
    tenants = [f"t{n}-{uuid.uuid4().hex[:8]}" for n in range(3)]
    per_tenant = 30

    async def main() -> None:
        store = await threadkeep.open_async(own_store_url)
        writer = threadkeep.open(own_store_url)
        followers = Followers(window=8)
        try:
            convs = {t: writer.start(contact_id="c1", tenant=t) for t in tenants}
            for t, conv in convs.items():
                writer.append(conv.id, "user", "first", tenant=t)  # then one event per append
            cursor = [e async for e in store.events(timeout=0)][-1].id
            followers.start(store)
            await _until("the reader", lambda: followers.tail(tenants[0]) is not None)

            async def stream(tenant: str, after: str | None, want: int = per_tenant) -> list[str]:
                if after is None:  # as the route does without a cursor: from the tail
                    tail = followers.tail(tenant)
                    assert tail is not None
                    after = tail[1]
                chunks = cast(
                    AsyncGenerator[str, None],
                    _follow(
                        store, tenant, _nothing(), after, True, 60.0, True, followers, _everything
                    ),
                )
                got: list[str] = []
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        got += [x[4:] for x in chunk.split("\n") if x.startswith("id: ")]
                        if len(got) >= want:
                            break
                return got

            async def resumed(tenant: str) -> list[str]:
                first = await stream(tenant, cursor, 5)
                return first + await stream(tenant, first[-1], per_tenant - len(first))

            tasks = {
                t: [
                    asyncio.create_task(stream(t, None)),
                    asyncio.create_task(stream(t, cursor)),
                    asyncio.create_task(resumed(t)),
                ]
                for t in tenants
            }
            await asyncio.sleep(0.2)  # the tail streams look before the writes

            def append(tenant: str) -> None:
                for i in range(per_tenant):
                    writer.append(convs[tenant].id, "user", f"m{i}", tenant=tenant)
                    if i % 3 == 0:
                        time.sleep(0.003)

            await asyncio.gather(*(asyncio.to_thread(append, t) for t in tenants))
            for tenant in tenants:
                expected = [
                    e.id async for e in store.events(tenant=tenant, after=cursor, timeout=0)
                ]
                assert len(expected) == per_tenant
                got = await asyncio.wait_for(asyncio.gather(*tasks[tenant]), 20)
                assert got == [expected] * 3, tenant
        finally:
            await followers.aclose()
            writer.close()
            await store.aclose()

    asyncio.run(main())


def test_a_reader_of_a_short_log_is_not_paced(own_store_url: str) -> None:
    """Review: a paused reader falls up to a pause's writes further behind the log's end, so
    with a log that keeps few events (``THREADKEEP_EVENTS_KEPT`` takes 1) it fell out of it
    (``CursorExpired``, every stream with it) where an unpaced reader kept up. Below
    ``PACED_LOG`` the reader does not pause: here a 60 s pace would hold the second read."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    limits = threadkeep.Limits(events_kept=PACED_LOG - 1)

    async def main() -> None:
        store = await threadkeep.open_async(own_store_url, limits=limits)
        writer = threadkeep.open(own_store_url, limits=limits)
        followers = Followers(pace=60.0)
        try:
            conv = writer.start(contact_id="c1", tenant=tenant)
            cursor = [e async for e in store.events(timeout=0)][-1].id
            followers.start(store)
            await _until("the reader", lambda: followers.since(tenant, cursor) is not None)
            writer.append(conv.id, "user", "one", tenant=tenant)
            first = [e.id for e in writer.events(after=cursor, timeout=0)]
            await _until("the first read", lambda: followers._head == first[-1])
            writer.append(conv.id, "user", "two", tenant=tenant)
            expected = [e.id for e in writer.events(after=cursor, timeout=0)]
            await _until("the second read", lambda: followers._head == expected[-1], 10.0)
        finally:
            await followers.aclose()
            writer.close()
            await store.aclose()

    asyncio.run(main())
