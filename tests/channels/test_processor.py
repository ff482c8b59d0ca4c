"""The processor in-process, on every backend: unanswered messages answered in order, several
at once answered together, each covered by exactly one reply, stale ones stored not answered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import threadkeep
from threadkeep import AsyncStore, Conversation, Message
from threadkeep.bot import EchoBot
from threadkeep.channels import Inbound
from threadkeep.channels.config import ChannelConfig
from threadkeep.channels.inbox import store_inbound
from threadkeep.channels.processor import Processor, unanswered

pytestmark = pytest.mark.anyio


def inbound(contact: str, n: int, text: str | None = None, *, age: float = 0.0) -> Inbound:
    return Inbound(
        provider="whatsapp",
        channel="whatsapp",
        provider_message_id=f"wamid.{contact}.{n}",
        account="106540352242922",
        contact_id=contact,
        phone=contact,
        kind="text",
        text=text or f"m{n}",
        provider_timestamp=datetime.now(UTC) - timedelta(seconds=age),
    )


class GatedBot:
    """Echo, but each turn waits until the test opens the gate (to pile messages up)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def respond(self, store: AsyncStore, conv: Conversation, message: Message) -> str:
        self.started.set()
        await self.gate.wait()
        return f"echo: {message.content}"


async def replies(store: AsyncStore, conv_id: str) -> list[Message]:
    return [m for m in await store.messages(conv_id, last=1000) if m.role == "assistant"]


async def run_until(processor: Processor, done: Any, seconds: float = 20.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    try:
        with anyio_fail_after(seconds):
            while not await done():  # noqa: ASYNC110 - polls the store, not an in-process flag
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task


def anyio_fail_after(seconds: float) -> Any:
    import anyio

    return anyio.fail_after(seconds)


async def test_every_message_answered_once_in_order(store_url: str) -> None:
    async with await threadkeep.open_async(store_url) as store:
        contacts = [f"c{i}-{store_url[:5]}-{id(store)}" for i in range(3)]
        for n in range(3):
            for contact in contacts:
                await store_inbound(store, inbound(contact, n), "default")
        processor = Processor(lambda: _same(store), EchoBot(), ChannelConfig(lease=5))
        convs = [await store.find_open(c) for c in contacts]

        async def done() -> bool:
            for conv in convs:
                assert conv is not None
                if (await unanswered(store, conv)).pending:
                    return False
            return True

        await run_until(processor, done)
        for conv in convs:
            assert conv is not None
            got = await replies(store, conv.id)
            covered = [seq for r in got for seq in r.metadata["covers"]]
            assert covered == [1, 2, 3]  # each inbound message covered by exactly one reply
            assert got[-1].metadata["reply_to"] == 3


async def _same(store: AsyncStore) -> AsyncStore:
    return store


async def test_messages_arriving_during_a_turn_are_answered_together(store_url: str) -> None:
    async with await threadkeep.open_async(store_url) as store:
        contact = f"gated-{id(store)}"
        await store_inbound(store, inbound(contact, 0, "first"), "default")
        bot = GatedBot()
        processor = Processor(lambda: _same(store), bot, ChannelConfig(lease=5))
        stop = asyncio.Event()
        task = asyncio.create_task(processor.run(stop))
        await asyncio.wait_for(bot.started.wait(), 10)
        for n in (1, 2):
            await store_inbound(store, inbound(contact, n, f"more {n}"), "default")
        bot.gate.set()
        conv = await store.find_open(contact)
        assert conv is not None
        for _ in range(500):
            if (
                not (await unanswered(store, conv)).pending
                and len(await replies(store, conv.id)) == 2
            ):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await task
        first, second = await replies(store, conv.id)
        assert first.content == "echo: first" and first.metadata["covers"] == [1]
        assert second.content == "echo: more 1\nmore 2" and second.metadata["covers"] == [2, 3]


async def test_stale_messages_are_stored_not_answered(store_url: str) -> None:
    async with await threadkeep.open_async(store_url) as store:
        contact = f"stale-{id(store)}"
        await store_inbound(store, inbound(contact, 0, "old", age=7200), "default")
        processor = Processor(lambda: _same(store), EchoBot(), ChannelConfig(stale_after=3600))
        conv = await store.find_open(contact)
        assert conv is not None

        async def done() -> bool:
            return not (await unanswered(store, conv)).pending

        await run_until(processor, done)
        assert await replies(store, conv.id) == []
        await store_inbound(store, inbound(contact, 1, "new"), "default")
        await run_until(processor, lambda: _has_replies(store, conv.id, 1))
        (reply,) = await replies(store, conv.id)
        assert reply.content == "echo: new" and reply.metadata["covers"] == [2]


async def _has_replies(store: AsyncStore, conv_id: str, n: int) -> bool:
    return len(await replies(store, conv_id)) >= n


async def test_reactions_and_web_conversations_are_not_answered(store_url: str) -> None:
    async with await threadkeep.open_async(store_url) as store:
        contact = f"react-{id(store)}"
        reaction = inbound(contact, 0).model_copy(
            update={"kind": "reaction", "text": "[reaction 👍]", "expects_reply": False}
        )
        await store_inbound(store, reaction, "default")
        web = await store.start(f"web-{id(store)}", channel="web")
        await store.append(web.id, "user", "hello")
        await store_inbound(store, inbound(contact, 1, "question"), "default")
        processor = Processor(lambda: _same(store), EchoBot(), ChannelConfig())
        conv = await store.find_open(contact)
        assert conv is not None
        await run_until(processor, lambda: _has_replies(store, conv.id, 1))
        (reply,) = await replies(store, conv.id)
        assert reply.metadata["covers"] == [2]
        assert await replies(store, web.id) == []


class FlakyBot:
    """Raises on its first two calls (a bug, an LLM outage), then echoes."""

    def __init__(self) -> None:
        self.calls = 0

    async def respond(self, store: AsyncStore, conv: Conversation, message: Message) -> str:
        self.calls += 1
        if self.calls <= 2:
            raise RuntimeError("the LLM is down")
        return f"echo: {message.content}"


async def test_a_failing_bot_is_retried_with_backoff_then_answers_once() -> None:
    async with await threadkeep.open_async("memory://") as store:
        await store_inbound(store, inbound("flaky", 0, "hello"), "default")
        bot = FlakyBot()
        processor = Processor(lambda: _same(store), bot, ChannelConfig())
        conv = await store.find_open("flaky")
        assert conv is not None
        started = asyncio.get_running_loop().time()
        await run_until(processor, lambda: _has_replies(store, conv.id, 1))
        waited = asyncio.get_running_loop().time() - started
        (reply,) = await replies(store, conv.id)
        assert reply.content == "echo: hello" and bot.calls == 3
        assert waited >= 3.0  # retried after 1 s, then after 2 s


async def test_a_channel_message_in_a_web_conversation_is_answered(store_url: str) -> None:
    async with await threadkeep.open_async(store_url) as store:
        contact = f"shared-{id(store)}"
        web = await store.start(contact, channel="web")
        await store.append(web.id, "user", "from the site")
        await store.append(web.id, "assistant", "hi from the site bot", metadata={"reply_to": 1})
        await store_inbound(store, inbound(contact, 0, "from WhatsApp"), "default")
        processor = Processor(lambda: _same(store), EchoBot(), ChannelConfig())
        await run_until(processor, lambda: _has_replies(store, web.id, 2))
        reply = (await replies(store, web.id))[-1]
        assert reply.content == "echo: from WhatsApp" and reply.metadata["covers"] == [3]
