"""Redis faults: an outage under traffic (appendfsync always), a frozen server, a reply lost
after the script ran (resent, applied once).
"""

from __future__ import annotations

import time

import pytest
import redis

import threadkeep
from tests._servers import RedisServer
from tests.backends.redis._helpers import CALL_BOUND, LosingProxy, Writer
from threadkeep import BackendUnavailable

pytestmark = pytest.mark.redis


def test_outage_fails_fast_then_recovers_without_reopening(own_server: RedisServer) -> None:
    url = own_server.url + "?prefix=outage&timeout=1&retries=10"
    with threadkeep.open(url) as store:
        conv = store.start("c-1")
        store.save_state(conv.id, {"stage": "Q3"})
        writer = Writer(store, conv.id)
        writer.start()
        try:
            writer.wait_for(50)
            own_server.kill()  # SIGKILL: only what appendfsync always wrote survives
            # the call in flight at the kill may still be acknowledged (its reply was sent
            # before); once a call has failed, every later call began after the kill
            writer.wait_for_failures(1)
            before = len(writer.acknowledged)
            time.sleep(3)
            writer.wait_for_failures(3)
            assert len(writer.acknowledged) == before  # nothing acknowledged while down
            own_server.start()
            writer.wait_for(before + 50)  # the same Store object, not reopened
            # the restarted server had no scripts: the store met NOSCRIPT and loaded them again
            errors = own_server.client().info("errorstats")
            assert errors["errorstat_NOSCRIPT"]["count"] >= 1, errors
        finally:
            writer.stop.set()
            writer.join(30)
        for elapsed, exc in writer.failures:
            assert elapsed < CALL_BOUND  # failed within the timeout, never hung
            assert f"127.0.0.1:{own_server.port}" in str(exc)
            assert "ConnectionError" in str(exc)
            assert isinstance(exc.__cause__, redis.ConnectionError)
        stored = [(m.seq, m.content) for m in store.messages(conv.id, after=0, limit=1000)]
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))  # gap-free
        contents = [content for _, content in stored]
        assert len(set(contents)) == len(contents)  # nothing stored twice
        assert set(writer.acknowledged) <= set(stored)  # every acknowledged write survived
        assert store.load_state(conv.id).value == {"stage": "Q3"}
        assert store.get(conv.id).message_count == len(stored)


@pytest.mark.anyio
async def test_async_outage_recovers(own_server: RedisServer) -> None:
    url = own_server.url + "?prefix=aoutage&timeout=1&retries=1"
    store = await threadkeep.open_async(url)
    try:
        conv = await store.start("c-1")
        await store.append(conv.id, "user", "before")
        own_server.kill()
        with pytest.raises(BackendUnavailable):
            await store.append(conv.id, "user", "during")
        own_server.start()
        after = await store.append(conv.id, "user", "after")
        assert after.seq == 2
    finally:
        await store.aclose()


def test_a_change_resent_after_a_lost_reply_is_applied_once(own_server: RedisServer) -> None:
    proxy = LosingProxy(own_server.port)
    url = f"redis://127.0.0.1:{proxy.port}/0?prefix=lost&retries=3&timeout=5"
    try:
        with threadkeep.open(url) as store:
            conv = store.start("c-1")
            warm = store.start("c-warm")  # load every script used below before faults start
            store.append(conv.id, "user", "first")
            store.save_state(conv.id, {"v": 0})
            with store.turn(warm.id):
                pass
            store.delete(warm.id)

            proxy.arm()
            message = store.append(conv.id, "user", "once")  # no caller key: the internal one
            assert proxy.dropped == 1
            assert message.seq == 2
            assert [m.content for m in store.messages(conv.id)] == ["first", "once"]
            appended = [e for e in store.events() if e.kind == "message.appended"]
            assert [e.data["seq"] for e in appended if e.conversation_id == conv.id] == [1, 2]

            proxy.arm()
            assert store.save_state(conv.id, {"v": 1}, expected_version=1) == 2
            assert proxy.dropped == 2
            assert store.load_state(conv.id).version == 2

            proxy.arm()
            with store.turn(conv.id, lease=5) as turn:  # not TurnInProgress against itself
                turn.append("assistant", "fenced")
            assert proxy.dropped == 3

            with store.turn(conv.id, lease=5) as turn:  # a chat turn's message, resent
                proxy.arm()
                read, seen = turn._append_read("user", "read", None)
                assert proxy.dropped == 4
                assert (read.seq, read.replayed) == (4, False)
                assert seen == store.get(conv.id)  # the resend answers the record too

            proxy.arm()
            again = store.start("c-2")
            assert proxy.dropped == 5
            assert [c.id for c in store.list(contact_id="c-2").items] == [again.id]
            started = [e.kind for e in store.events() if e.conversation_id == again.id]
            assert started == ["conversation.started"]  # made once: the resend found it

            proxy.arm()
            store.delete(conv.id)  # not ConversationNotFound for its own first run
            assert proxy.dropped == 6
            with pytest.raises(threadkeep.ConversationNotFound):
                store.get(conv.id)

            proxy.arm()
            receipt = store.delete_contact("c-2")  # its first run's receipt, not an empty one
            assert proxy.dropped == 7
            assert (receipt.conversations, receipt.live) == ((again.id,), 1)
    finally:
        proxy.close()


@pytest.mark.anyio
async def test_an_async_append_resent_after_a_lost_reply_is_applied_once(
    own_server: RedisServer,
) -> None:
    proxy = LosingProxy(own_server.port)
    store = await threadkeep.open_async(f"redis://127.0.0.1:{proxy.port}/0?prefix=alost")
    try:
        conv = await store.start("c-1")
        await store.append(conv.id, "user", "first")  # the script is loaded before the fault
        proxy.arm()
        message = await store.append(conv.id, "user", "once")
        assert proxy.dropped == 1
        assert message.seq == 2
        assert [m.content for m in await store.messages(conv.id)] == ["first", "once"]
    finally:
        await store.aclose()
        proxy.close()


def test_a_frozen_server_fails_calls_within_the_timeout(own_server: RedisServer) -> None:
    url = own_server.url + "?prefix=frozen&timeout=1&retries=10"
    with threadkeep.open(url) as store:
        conv = store.start("c-1")
        store.append(conv.id, "user", "before")
        own_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as info:
                store.append(conv.id, "user", "while frozen")
            # one attempt times out after 1 s and the deadline stops the retries
            assert time.monotonic() - started < CALL_BOUND
            assert "TimeoutError" in str(info.value)
            assert isinstance(info.value.__cause__, redis.TimeoutError)
        finally:
            own_server.resume()
        after = store.append(conv.id, "user", "after")  # same Store object
        # the frozen append may have run once the server woke up: it is never stored twice
        contents = [m.content for m in store.messages(conv.id)]
        assert contents.count("while frozen") <= 1
        assert contents[-1] == "after" and after.seq == len(contents)
