"""Event streams wait on one reader of the log per process (``service/followers.py``).

An idle ``GET /v1/events`` stream makes no store read and holds no store connection: N idle
streams cost the store what one does. Each stream still gets every event of its tenant, in log
order, and none of another tenant's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import threadkeep
from tests._servers import POSTGRES_BASE, require_reachable
from tests.backends.postgres._helpers import drop_schema
from tests.service._service_helpers import LiveServer, PrivateRedis
from threadkeep import Event
from threadkeep._rules.ops import Op, Result
from threadkeep.backends import AsyncBackend
from threadkeep.service.followers import Followers
from threadkeep.service.routers.events import _follow

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
                return [c.split("\n")[0] for c in chunks if c.startswith("id: ")]

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
                if chunk.startswith("id: "):
                    got.append(chunk.split("\n")[0].removeprefix("id: "))
                if len(got) == len(expected):
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
