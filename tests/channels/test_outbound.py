"""The sender against the fake provider API process, in-process store: what each failure
records on the reply, and which replies it never sends (a memory store)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import threadkeep
from tests.channels.test_processor import inbound
from tests.fakes.process import FakeProcess
from threadkeep import AsyncStore, Conversation, Message
from threadkeep.channels.config import ChannelConfig
from threadkeep.channels.inbox import store_inbound
from threadkeep.channels.outbound import Sender

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProcess]:
    process = FakeProcess("channels.py").started()
    yield process
    process.stop()


def config(fake: FakeProcess, stale_after: float = 86400.0) -> ChannelConfig:
    return ChannelConfig(
        whatsapp_app_secret="s", whatsapp_access_token="wa-token",
        whatsapp_api_url=f"{fake.url}/v25.0", stale_after=stale_after,
    )  # fmt: skip


async def reply_of(
    store: AsyncStore, contact: str, age: float = 0.0
) -> tuple[Conversation, Message]:
    await store_inbound(store, inbound(contact, 0, age=age), "default")
    conv = await store.find_open(contact)
    assert conv is not None
    reply = await store.append(
        conv.id, "assistant", "hello", metadata={"reply_to": 1, "covers": [1]}
    )
    return conv, reply


async def test_sent_with_the_provider_id(fake: FakeProcess) -> None:
    async with await threadkeep.open_async("memory://") as store:
        conv, reply = await reply_of(store, "c-sent")
        sender = Sender(config(fake), backoff=0.01)
        await sender.deliver(store, conv, reply)
        await sender.aclose()
        (stored,) = [m for m in await store.messages(reply.conversation_id) if m.seq == 2]
        assert stored.delivery is not None and stored.delivery["state"] == "sent"
        assert str(stored.delivery["provider_id"]).startswith("wamid.FAKE")


async def test_refused_and_exhausted_sends_fail_with_the_reason(fake: FakeProcess) -> None:
    async with await threadkeep.open_async("memory://") as store:
        sender = Sender(config(fake), attempts=3, backoff=0.01)
        conv, reply = await reply_of(store, "c-refused")
        fake.control(reject=True)
        try:
            await sender.deliver(store, conv, reply)
        finally:
            fake.control(reject=False)
        refused = (await store.messages(reply.conversation_id))[-1].delivery
        assert refused is not None and refused["state"] == "failed"
        assert "131026" in refused["error"] and "undeliverable" in refused["error"]
        conv, reply = await reply_of(store, "c-down")
        before = len(fake.requests())
        fake.control(fail_whatsapp=[500, 503, 429])
        await sender.deliver(store, conv, reply)
        down = (await store.messages(reply.conversation_id))[-1].delivery
        assert down is not None and down["state"] == "failed"
        assert down["error"].startswith("whatsapp unavailable after 3 attempts")
        assert len(fake.requests()) - before == 3  # bounded retries
        await sender.aclose()


async def test_never_sent_outside_the_window_or_twice(fake: FakeProcess) -> None:
    async with await threadkeep.open_async("memory://") as store:
        sender = Sender(config(fake, stale_after=3 * 86400), backoff=0.01)
        before = len(fake.requests())
        conv, reply = await reply_of(store, "c-window", age=25 * 3600)
        await sender.deliver(store, conv, reply)
        closed = (await store.messages(reply.conversation_id))[-1].delivery
        assert closed is not None and closed["state"] == "failed"
        assert "24-hour customer service window" in closed["error"]
        conv, reply = await reply_of(store, "c-unknown")
        attempted = await store.set_delivery(reply.conversation_id, 2, "queued", attempted=True)
        assert attempted is not None
        await sender.deliver(store, conv, attempted)
        unknown = (await store.messages(reply.conversation_id))[-1].delivery
        assert unknown is not None and unknown["error"].startswith("outcome unknown")
        assert len(fake.requests()) == before  # neither was sent
        await sender.aclose()


async def test_a_reply_goes_where_the_contact_last_wrote(fake: FakeProcess) -> None:
    async with await threadkeep.open_async("memory://") as store:
        web = await store.start("15553330000", channel="web")  # started by a web chat
        await store_inbound(store, inbound("15553330000", 0).model_copy(
            update={"account": "777", "phone": "15553330000"}), "default")  # fmt: skip
        reply = await store.append(
            web.id, "assistant", "hi", metadata={"reply_to": 1, "covers": [1]}
        )
        sender = Sender(config(fake), backoff=0.01)
        await sender.deliver(store, web, reply)
        await sender.aclose()
        sent = fake.requests()[-1]
        assert sent["path"] == "/v25.0/777/messages" and sent["body"]["to"] == "+15553330000"
        stored = (await store.messages(web.id))[-1].delivery
        assert stored is not None and stored["state"] == "sent"
