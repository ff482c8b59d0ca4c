"""The drivers' own exchange with the server: scripts and the window read's ``MULTI`` sent
on a pooled connection directly, not through redis-py's ``Script``, ``execute_command`` or
pipeline objects (about 30 us of client CPU per call); errors leave no dirty connection.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.asyncio.connection import Connection as AsyncConnection
from redis.client import Pipeline
from redis.commands.core import AsyncScript, Script
from redis.connection import Connection

import threadkeep
from tests._servers import RedisServer
from tests.backends.redis._helpers import SHARED, ahot_calls, hot_calls
from threadkeep import BackendError
from threadkeep.backends.redis._keys import Keys

pytestmark = pytest.mark.redis


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Count redis-py's high-level calls and the writes to the socket while inside."""
    counts = {"execute_command": 0, "script": 0, "pipeline": 0, "writes": 0}

    def wrap(owner: Any, name: str, counter: str) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[counter] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    wrap(redis.Redis, "execute_command", "execute_command")
    wrap(Script, "__call__", "script")
    wrap(Pipeline, "execute", "pipeline")
    wrap(Connection, "send_packed_command", "writes")
    wrap(aioredis.Redis, "execute_command", "execute_command")
    wrap(AsyncScript, "__call__", "script")
    wrap(AsyncPipeline, "execute", "pipeline")
    wrap(AsyncConnection, "send_packed_command", "writes")
    yield counts


def test_hot_calls_are_one_write_each_without_redis_py_layers(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        conv = store.resume("c-1")
        store.append(conv.id, "user", "warm")
        with counting(monkeypatch) as counts:
            hot_calls(store, conv.id)
        assert counts == {"execute_command": 0, "script": 0, "pipeline": 0, "writes": 4}


def test_async_hot_calls_are_one_write_each_without_redis_py_layers(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> dict[str, int]:
        store = await threadkeep.open_async(f"redis://{SHARED}/0?prefix={prefix}")
        try:
            conv = await store.resume("c-1")
            await store.append(conv.id, "user", "warm")
            with counting(monkeypatch) as counts:
                await ahot_calls(store, conv.id)
            return counts
        finally:
            await store.aclose()

    counts = asyncio.run(main())
    assert counts == {"execute_command": 0, "script": 0, "pipeline": 0, "writes": 4}


def test_after_noscript_the_script_is_loaded_and_run_in_one_round_trip(
    own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with threadkeep.open(own_server.url + "?prefix=noscript") as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "before")
        client = redis.Redis(host="127.0.0.1", port=own_server.port)
        client.config_resetstat()
        client.script_flush()
        with counting(monkeypatch) as counts:
            assert store.append(conv.id, "user", "after").seq == 2
        assert counts["writes"] == 2  # EVALSHA (NOSCRIPT), then SCRIPT LOAD + EVALSHA
        stats = client.info("commandstats")
        assert stats["cmdstat_script|load"]["calls"] == 1
        assert stats["cmdstat_evalsha"]["calls"] == 2
        client.close()

    async def main() -> None:  # the async driver, the same
        store = await threadkeep.open_async(own_server.url + "?prefix=noscript")
        try:
            await store.append(conv.id, "user", "warm")  # connects (CLIENT SETINFO …)
            client.script_flush()
            with counting(monkeypatch) as counts:
                assert (await store.append(conv.id, "user", "async")).seq == 4
            assert counts["writes"] == 2
        finally:
            await store.aclose()

    client = redis.Redis(host="127.0.0.1", port=own_server.port)
    asyncio.run(main())
    client.close()


def test_an_error_inside_the_window_read_leaves_no_dirty_connection(prefix: str) -> None:
    """A WRONGTYPE reply inside ``EXEC`` is raised; the connection is closed (replies may be
    left unread after an error), and the next calls on the pool read their own replies."""
    url = f"redis://{SHARED}/0?prefix={prefix}&pool_size=1&retries=0"
    with threadkeep.open(url) as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "one")
        raw = redis.Redis.from_url(f"redis://{SHARED}/0", decode_responses=True)
        messages = Keys(prefix).messages(conv.id)
        saved = raw.lrange(messages, 0, -1)
        raw.delete(messages)
        raw.set(messages, "not a list")
        with pytest.raises(BackendError, match="WRONGTYPE"):
            store.messages(conv.id, last=5)
        raw.delete(messages)
        raw.rpush(messages, *saved)
        assert [m.content for m in store.messages(conv.id, last=5)] == ["one"]
        assert store.append(conv.id, "user", "two").seq == 2
        assert store.load_state(conv.id).value is None
        raw.close()


def test_a_script_error_keeps_the_connection_and_the_next_reply_in_order(prefix: str) -> None:
    url = f"redis://{SHARED}/0?prefix={prefix}&pool_size=1&retries=0"
    with threadkeep.open(url) as store:
        conv = store.start("c-1")
        raw = redis.Redis.from_url(f"redis://{SHARED}/0", decode_responses=True)
        messages = Keys(prefix).messages(conv.id)
        raw.set(messages, "not a list")
        with pytest.raises(BackendError):
            store.append(conv.id, "user", "refused")
        raw.delete(messages)
        raw.close()
        assert store.append(conv.id, "user", "taken").seq == 1
        assert [m.content for m in store.messages(conv.id)] == ["taken"]


def test_a_command_refused_before_exec_leaves_no_reply_for_the_next_call(
    own_server: RedisServer,
) -> None:
    """A user who may not run LRANGE: the server refuses it when MULTI queues it, and EXEC
    then aborts, so the window read stops at an error with replies still unread. The
    connection must be closed, not given back: the next call on the one-connection pool
    would read the previous call's leftover replies as its own (wrong data)."""
    admin = redis.Redis(host="127.0.0.1", port=own_server.port)
    admin.acl_setuser(
        "limited", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-lrange"],
    )  # fmt: skip
    with threadkeep.open(own_server.url + "?prefix=acl") as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "one")
        store.save_state(conv.id, {"k": 1})
    url = f"redis://limited:pw@127.0.0.1:{own_server.port}/0?prefix=acl&pool_size=1&retries=0"
    with threadkeep.open(url) as store:
        for _ in range(2):
            with pytest.raises(BackendError):
                store.messages(conv.id, last=2)
            assert store.load_state(conv.id).value == {"k": 1}
            assert store.get(conv.id).id == conv.id

    async def main() -> None:
        store = await threadkeep.open_async(url)
        try:
            for _ in range(2):
                with pytest.raises(BackendError):
                    await store.messages(conv.id, last=2)
                assert (await store.load_state(conv.id)).value == {"k": 1}
                assert (await store.get(conv.id)).id == conv.id
        finally:
            await store.aclose()

    asyncio.run(main())
    admin.close()


def test_an_argument_redis_cannot_send_is_a_redis_error_as_with_redis_py() -> None:
    # hiredis refuses it with a TypeError; redis-py's packer answers DataError (a RedisError,
    # which the drivers map to BackendError): the direct packing must answer the same
    from threadkeep.backends.redis._base import packed

    with pytest.raises(redis.exceptions.DataError):
        packed(None, (("SET", "k", True),))


def test_a_new_conversation_is_not_sent_back_by_the_create_script(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create script stores the row it was given: made now, it answers without the row
    (the driver decodes nothing); found again, it sends the stored row."""
    from threadkeep.backends.redis import _codec

    decoded: list[Any] = []
    original = _codec.decode_conversation

    def counted(fields: Any) -> Any:
        decoded.append(fields)
        return original(fields)

    monkeypatch.setattr(_codec, "decode_conversation", counted)
    with threadkeep.open(f"redis://{SHARED}/0?prefix={prefix}") as store:
        made = store.resume("c-1", tenant="t", stage="Q1", channel="web", metadata={"a": [1]})
        assert made.created and decoded == []
        found = store.resume("c-1", tenant="t")
        assert not found.created and len(decoded) == 1
        assert made == found == store.get(made.id)  # ``created`` is not compared


def test_an_append_makes_few_python_calls_of_threadkeeps_own(own_server: RedisServer) -> None:
    """The client's share of an append, counted: the calls of threadkeep's own functions per
    keyless append on the sync driver (cProfile). Session 12 took it from 47 to 33: the flow
    binds the outcome and event kind to names (an enum's lookup by name or value runs Python
    code of ``enum``'s), makes its Result, Eval and AppendOp without their constructors'
    frames, writes the script's arguments inline (no ``codec.opt``/``encode_message`` calls),
    reads a one-slot store's keys without ``_route``'s generator, and builds the Message of a
    stored append from what it sent (the script answers its seq, no entry to decode)."""
    import cProfile
    import pstats

    with threadkeep.open(own_server.url + "?prefix=calls") as store:
        conv = store.resume("c-1", tenant="bench")
        for _ in range(20):
            store.append(conv.id, "user", "warm")
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(50):
            store.append(conv.id, "user", "x" * 200)
        profile.disable()
    stats: Any = pstats.Stats(profile)
    package = os.path.dirname(threadkeep.__file__) + os.sep  # not a checkout named threadkeep
    own = sum(
        calls
        for (path, _, _), (_, calls, _, _, _) in stats.stats.items()
        if path.startswith(package)
    )
    assert own / 50 <= 33, own / 50
