"""A follower of one tenant on Redis: what its reads scan while other tenants write, and that
it misses none of its tenant's events."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from tests._servers import RedisServer
from threadkeep.backends.redis._scripts import SCRIPTS

pytestmark = pytest.mark.redis

_EVENTS = hashlib.sha1(SCRIPTS["events"].encode()).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server logging every command (the slow log, with no threshold), in order."""
    server = RedisServer(tmp_path, appendonly=False)
    server.start()
    raw = server.client()
    raw.config_set("slowlog-log-slower-than", 0)
    raw.config_set("slowlog-max-len", 1_000_000)
    raw.close()
    yield server
    server.kill()


def _poll(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60  # a hang guard, not a timing
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.001)


def _two_tenants(store: Any) -> tuple[Any, Any, str]:
    """An active conversation of tenant ``a`` and one of ``b`` (each append to them logs one
    event), and the log's last event id."""
    conv_a = store.start("c-a", tenant="a")
    conv_b = store.start("c-b", tenant="b")
    for conv in (conv_a, conv_b):
        store.append(conv.id, "user", "first")
    return conv_a, conv_b, [e.id for e in store.events(timeout=0)][-1]


def _follow(url: str, api: str, after: str, got: list[Any]) -> threading.Thread:
    """A thread following tenant ``a`` from ``after`` until it has one event (into ``got``)."""

    def sync() -> None:
        with threadkeep.open(url) as store:
            for event in store.events(tenant="a", after=after, timeout=60):
                got.append(event)
                break

    async def main() -> None:
        store = await threadkeep.open_async(url)
        try:
            async for event in store.events(tenant="a", after=after, timeout=60):
                got.append(event)
                break
        finally:
            await store.aclose()

    thread = threading.Thread(target=sync if api == "sync" else lambda: asyncio.run(main()))
    thread.start()
    return thread


def _scanned(raw: Any, base: int) -> list[int]:
    """How many log entries each events read of tenant ``a`` scanned, from the slow log.

    The slow log holds the commands a script ran too, each in order: the log's last number at
    a read is ``base`` plus the ``XADD``s before it, and the read scans the entries numbered
    after its cursor argument up to that number.
    """
    logged = 0
    scanned = []
    for entry in reversed(raw.slowlog_get(-1)):  # oldest first
        args = bytes(entry["command"]).decode().split(" ")
        if args[0].upper() == "XADD":
            logged += 1
        elif args[0].upper() == "EVALSHA" and args[1] == _EVENTS and args[-2] == "+a":
            scanned.append(base + logged - int(args[-3].lstrip("+")))
    return scanned


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_tenant_follower_scans_each_write_of_another_tenant_once(
    server: RedisServer, api: str
) -> None:
    """Tenant ``b`` appends 150 messages one by one while a follower of ``a`` waits: each
    wake's read goes on from where the previous one stopped, so the follower's reads scan
    151 log entries in all (``b``'s 150 and ``a``'s one), not 11,476 (150 * 151 / 2 + 151) as
    when every read started again from the follower's cursor (checked: it fails so); the read
    that finds ``a``'s event then reads once more from the cursor (151 again), for its answer."""
    writes = 150
    url = server.url + "?prefix=follow&timeout=30"
    raw = server.client()
    got: list[Any] = []
    with threadkeep.open(url) as store:
        conv_a, conv_b, base = _two_tenants(store)
        raw.slowlog_reset()
        follower = _follow(url, api, base, got)
        try:
            for i in range(writes):
                _poll("the follower to wait", lambda: raw.info("clients")["blocked_clients"] == 1)
                store.append(conv_b.id, "user", f"b{i}")
                # the append's XADD unblocked the follower before its reply came back
            _poll("the follower to wait", lambda: raw.info("clients")["blocked_clients"] == 1)
            store.append(conv_a.id, "user", "for a")
        finally:
            follower.join(60)
    scanned = _scanned(raw, int(base.partition("-")[0]))
    raw.close()
    assert [(e.kind, e.tenant) for e in got] == [("message.appended", "a")]
    assert sum(scanned[:-1]) == writes + 1, scanned
    assert scanned[-1] == writes + 1, scanned
    assert len(scanned) > writes // 2  # woken by most writes (none, without a blocked check)


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_tenant_follower_misses_none_of_its_events_among_others(
    server: RedisServer, api: str
) -> None:
    """Two writers, of tenants ``a`` and ``b``, append at random while a follower of ``a``
    reads on from each event it gets: it gets every event of ``a`` once, in log order, though
    its reads go on from positions past other tenants' events (a guard: it passes on main)."""
    url = server.url + "?prefix=mixed&timeout=30"
    each = 120
    with threadkeep.open(url) as store:
        conv_a, conv_b, base = _two_tenants(store)
        received: list[str] = []

        def follow_sync() -> None:
            with threadkeep.open(url) as follower:
                for event in follower.events(tenant="a", after=base, timeout=10):
                    received.append(event.id)
                    if len(received) == each:
                        return

        async def follow_async() -> None:
            follower = await threadkeep.open_async(url)
            try:
                async for event in follower.events(tenant="a", after=base, timeout=10):
                    received.append(event.id)
                    if len(received) == each:
                        return
            finally:
                await follower.aclose()

        def write(conv_id: str, seed: int) -> None:
            rng = random.Random(seed)
            with threadkeep.open(url) as writer:
                for i in range(each):
                    writer.append(conv_id, "user", f"m{i}")
                    if rng.random() < 0.2:
                        time.sleep(rng.random() / 200)

        threads = [
            threading.Thread(
                target=follow_sync if api == "sync" else lambda: asyncio.run(follow_async())
            ),
            threading.Thread(target=write, args=(conv_a.id, 1)),
            threading.Thread(target=write, args=(conv_b.id, 2)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        expected = [e.id for e in store.events(tenant="a", after=base, timeout=0)]
    assert len(expected) == each
    assert received == expected


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_follower_from_the_oldest_retained_is_never_expired(
    server: RedisServer, api: str
) -> None:
    """A follower without a cursor whose read position (past other tenants' events) falls out
    of a 3-event log while it waits (one append of 6 messages of ``b``) reads from the oldest
    retained again, as it was asked: no CursorExpired (it raised so before this read went on
    from its position only when the caller gave none)."""
    url = server.url + "?prefix=oldest&timeout=30"
    limits = threadkeep.Limits(events_kept=3)
    raw = server.client()
    got: list[Any] = []
    errors: list[BaseException] = []

    def sync() -> None:
        with threadkeep.open(url, limits=limits) as follower:
            for event in follower.events(tenant="a", timeout=30):
                got.append(event)
                break

    async def main() -> None:
        follower = await threadkeep.open_async(url, limits=limits)
        try:
            async for event in follower.events(tenant="a", timeout=30):
                got.append(event)
                break
        finally:
            await follower.aclose()

    def follow() -> None:
        try:
            sync() if api == "sync" else asyncio.run(main())
        except BaseException as exc:  # recorded: the assertion below names it
            errors.append(exc)

    with threadkeep.open(url, limits=limits) as store:
        conv_a = store.start("c-a", tenant="a")
        conv_b = store.start("c-b", tenant="b")
        for i in range(3):  # a's event falls out of the log
            store.append(conv_b.id, "user", f"b{i}")
        thread = threading.Thread(target=follow)
        thread.start()
        try:
            _poll("the follower to wait", lambda: raw.info("clients")["blocked_clients"] == 1)
            store.append_many(conv_b.id, [("user", f"burst {i}") for i in range(6)])
            store.append(conv_a.id, "user", "for a")
        finally:
            thread.join(60)
    raw.close()
    assert errors == []
    assert [(e.kind, e.tenant) for e in got] == [("message.appended", "a")]


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_follower_moved_on_answers_from_its_cursor(server: RedisServer, api: str) -> None:
    """A follower of ``a`` whose cursor the 5-event log's floor passes while it waits (``b``
    appends 12 messages one by one, each waking it) gets CursorExpired when ``a``'s event
    comes, as a read from its cursor tells: the read that finds the event once moved on reads
    again from the cursor (review found the moved position hid the expiry; fails without)."""
    url = server.url + "?prefix=moved&timeout=30"
    limits = threadkeep.Limits(events_kept=5)
    raw = server.client()
    got: list[Any] = []
    errors: list[BaseException] = []
    with threadkeep.open(url, limits=limits) as store:
        conv_a, conv_b, base = _two_tenants(store)

        def follow() -> None:
            try:
                if api == "sync":
                    with threadkeep.open(url, limits=limits) as follower:
                        got.extend(follower.events(tenant="a", after=base, timeout=30))
                    return

                async def main() -> None:
                    follower = await threadkeep.open_async(url, limits=limits)
                    try:
                        async for event in follower.events(tenant="a", after=base, timeout=30):
                            got.append(event)
                    finally:
                        await follower.aclose()

                asyncio.run(main())
            except BaseException as exc:  # recorded: the assertion below names it
                errors.append(exc)

        thread = threading.Thread(target=follow)
        thread.start()
        try:
            for i in range(12):
                _poll("the follower to wait", lambda: raw.info("clients")["blocked_clients"] == 1)
                store.append(conv_b.id, "user", f"b{i}")
            _poll("the follower to wait", lambda: raw.info("clients")["blocked_clients"] == 1)
            store.append(conv_a.id, "user", "for a")
        finally:
            thread.join(60)
    raw.close()
    assert got == []
    assert [type(e) for e in errors] == [threadkeep.CursorExpired], errors
