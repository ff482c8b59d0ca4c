"""A retried delivery (the same Idempotency-Key) replays what the first one stored."""

from __future__ import annotations

import pytest

import threadkeep
from threadkeep import Limits, Retention
from threadkeep.bot import EchoBot, answer

pytestmark = pytest.mark.anyio


async def test_a_replay_reads_no_more_than_a_page() -> None:
    """The replay reads the message and those after it in one page, never past max_page."""
    async with await threadkeep.open_async("memory://", limits=Limits(max_page=50)) as store:
        first = await answer(store, EchoBot(), "hello", contact_id="m", idempotency_key="k1")
        again = await answer(store, EchoBot(), "hello", contact_id="m", idempotency_key="k1")
        assert again.replayed
        assert again.message.seq == first.message.seq
        assert again.reply is not None and first.reply is not None
        assert again.reply.seq == first.reply.seq


async def test_a_replay_of_a_trimmed_message_is_no_other_message() -> None:
    """Once max_messages trimmed the keyed message, its retry is refused as no longer kept,
    not answered with the next message still kept (and that one's reply)."""
    async with await threadkeep.open_async(
        "memory://", retention=Retention(max_messages=2)
    ) as store:
        first = await answer(store, EchoBot(), "hello", contact_id="t", idempotency_key="k1")
        await answer(store, EchoBot(), "hello", conversation_id=first.conversation.id)
        with pytest.raises(threadkeep.InvalidInput, match="no longer kept"):
            await answer(store, EchoBot(), "hello", contact_id="t", idempotency_key="k1")
