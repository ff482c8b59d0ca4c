"""The drivers' connection pools (``_pool``): redis-py's, handing out and taking back a
connection without its lock, metrics and timers on the hot path, with the same guarantees
(bound, waiting, a closed connection replaced, fork safety); and no retry objects built for
a call that succeeds at once."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

import threadkeep
from tests._servers import RedisServer
from tests.backends.redis._helpers import SHARED, ahot_calls, hot_calls
from threadkeep.backends.redis import _errors
from threadkeep.backends.redis._pool import AsyncPool, Pool

pytestmark = pytest.mark.redis

URL = f"redis://{SHARED}/0"


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Count locked waits (``threading.Condition``, ``asyncio.Condition``) and retry objects
    (``Attempts``) made by this thread while inside (an executor's thread of the event loop
    may take a lock of its own meanwhile)."""
    counts = {"condition": 0, "async condition": 0, "attempts": 0}
    me = threading.get_ident()
    inside = [True]

    def wrap(owner: Any, name: str, counter: str) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            if inside[0] and threading.get_ident() == me:
                counts[counter] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    wrap(threading.Condition, "__enter__", "condition")
    wrap(asyncio.Condition, "__aenter__", "async condition")
    wrap(_errors.Attempts, "__init__", "attempts")
    yield counts
    inside[0] = False  # the patches stay until the test ends: count no more


def test_hot_calls_take_no_lock_and_build_no_retry_objects(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with threadkeep.open(f"{URL}?prefix={prefix}") as store:
        conv = store.resume("c-1")
        store.append(conv.id, "user", "warm")
        with counting(monkeypatch) as counts:
            hot_calls(store, conv.id)
            assert store.resume("c-2").created
        assert counts == {"condition": 0, "async condition": 0, "attempts": 0}


def test_async_hot_calls_take_no_lock_and_build_no_retry_objects(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> dict[str, int]:
        store = await threadkeep.open_async(f"{URL}?prefix={prefix}")
        try:
            conv = await store.resume("c-1")
            await store.append(conv.id, "user", "warm")
            with counting(monkeypatch) as counts:
                await ahot_calls(store, conv.id)
                assert (await store.resume("c-2")).created
            return counts
        finally:
            await store.aclose()

    counts = asyncio.run(main())
    assert counts == {"condition": 0, "async condition": 0, "attempts": 0}


def _pool(size: int, timeout: float) -> Pool:
    return Pool.from_url(URL, max_connections=size, timeout=timeout, decode_responses=True)


def test_a_caller_waits_for_a_connection_given_back() -> None:
    pool = _pool(1, 5)
    held = pool.get_connection()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get_connection()))
    waiter.start()
    time.sleep(0.2)
    assert got == []  # waiting: the one connection is in use
    pool.release(held)
    waiter.join(5)
    assert got == [held]
    pool.release(got[0])
    assert len(pool._connections) == 1
    pool.disconnect()


def test_a_caller_gives_up_after_the_pool_timeout() -> None:
    pool = _pool(1, 0.2)
    held = pool.get_connection()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="No connection available"):
        pool.get_connection()
    assert time.monotonic() - started >= 0.2
    pool.release(held)
    pool.release(pool.get_connection())  # given back: available again
    pool.disconnect()


def test_many_threads_share_few_connections_and_each_reads_its_own_replies() -> None:
    pool = _pool(3, 10)
    client = redis.Redis(connection_pool=pool)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(200):
                assert client.echo(f"{worker}-{i}") == f"{worker}-{i}"
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(pool._connections) <= 3
    assert len(pool.pool.queue) == 3  # every place back: connections or free ones
    pool.disconnect()


def test_a_connection_the_server_closed_is_replaced_before_use(
    own_server: RedisServer,
) -> None:
    """The pool looks at a connection before handing it out (a server restart or an idle
    timeout closes them all): the call needs no retry."""
    with threadkeep.open(own_server.url + "?prefix=closed&retries=0") as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "one")
        admin = own_server.client()
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        assert store.append(conv.id, "user", "two").seq == 2
        admin.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_connections_of_its_own(prefix: str) -> None:
    with threadkeep.open(f"{URL}?prefix={prefix}") as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "parent")
        pid = os.fork()
        if pid == 0:  # the child: its own connections, the parent's left alone
            code = 1
            try:
                store.append(conv.id, "user", "child")
                code = 0 if len(store.messages(conv.id)) == 2 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert [m.content for m in store.messages(conv.id)] == ["parent", "child"]


def test_an_async_caller_waits_for_a_connection_given_back() -> None:
    async def main() -> None:
        pool = AsyncPool.from_url(URL, max_connections=1, timeout=5, decode_responses=True)
        held = await pool.get_connection()
        waiter = asyncio.create_task(pool.get_connection())
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await pool.release(held)
        assert await asyncio.wait_for(waiter, 5) is held
        await pool.release(held)
        too_many = AsyncPool.from_url(URL, max_connections=1, timeout=0.1)
        other = await too_many.get_connection()
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            await too_many.get_connection()
        await too_many.release(other)
        await too_many.disconnect()
        await pool.disconnect()

    asyncio.run(main())


def test_an_async_connection_disconnecting_on_its_return_still_counts_against_the_bound() -> None:
    # a connection flagged for reconnection (redis-py >= 7: a maintenance notification) is
    # disconnected as it comes back; while that runs, another caller must not get a place of
    # its own beyond max_connections
    async def main() -> int:
        pool = AsyncPool.from_url(URL, max_connections=1, timeout=5)
        try:
            first = await pool.get_connection()
            first.mark_for_reconnect()
            giving_back = asyncio.create_task(pool.release(first))
            await asyncio.sleep(0)  # the release is inside its disconnect()
            second = await asyncio.wait_for(pool.get_connection(), 5)
            await giving_back
            made = len(pool._in_use_connections) + len(pool._available_connections)
            await pool.release(second)
            return made
        finally:
            await pool.disconnect()

    if not hasattr(redis.connection.Connection, "mark_for_reconnect"):
        pytest.skip("redis-py < 7 flags no connection for reconnection")
    assert asyncio.run(main()) == 1


def test_an_async_waiter_cancelled_after_its_wake_up_hands_it_on() -> None:
    # Python 3.11's asyncio.Condition loses a notify whose waiter is cancelled before it runs:
    # the other waiter must still get the idle connection
    async def main() -> bool:
        pool = AsyncPool.from_url(URL, max_connections=1, timeout=None)
        try:
            held = await pool.get_connection()
            first = asyncio.create_task(pool.get_connection())
            second = asyncio.create_task(pool.get_connection())
            await asyncio.sleep(0.05)  # both wait
            await pool.release(held)  # wakes the first
            first.cancel()  # before it runs
            done, _ = await asyncio.wait({second}, timeout=5)
            if second in done:
                await pool.release(second.result())
                return True
            second.cancel()
            return False
        finally:
            await pool.disconnect()

    assert asyncio.run(main())
