"""What answer() reads after the turn: the conversation again by default, or (``read_after``
False) only when the turn may have changed it beyond its own messages."""

from __future__ import annotations

from typing import Any

import pytest

from threadkeep import AsyncStore, Status
from threadkeep.bot import EchoBot, answer

pytestmark = pytest.mark.anyio


class SavingBot:
    """Saves state as it answers (a state save changes the conversation's state_version)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def respond(self, store: AsyncStore, conversation: Any, message: Any) -> str:
        self.seen.append(store)
        await store.save_state(conversation.id, {"n": 1}, tenant=conversation.tenant)
        return "saved"


async def test_the_conversation_after_the_turn_counts_the_reply_by_default(store):
    done = await answer(store, EchoBot(), "hi", contact_id="c")
    assert done.conversation.message_count == 2
    assert done.conversation == await store.get(done.conversation.id)


async def test_without_read_after_it_is_the_one_read_under_the_lease(store):
    first = await answer(store, EchoBot(), "hi", contact_id="c", read_after=False)
    assert first.conversation.status == Status.ACTIVE  # after the message: new -> active
    assert first.conversation.message_count == 1  # read before the reply (documented)
    stored = await store.get(first.conversation.id)
    assert (stored.status, stored.stage, stored.message_count) == (Status.ACTIVE, None, 2)


async def test_a_bot_that_saves_state_has_the_conversation_read_after_the_turn(store):
    bot = SavingBot()
    done = await answer(store, bot, "hi", contact_id="c", read_after=False)
    assert done.conversation.state_version == 1
    assert done.conversation.message_count == 2
    # the bot was given a view of the store, not the store other callers share
    assert bot.seen[0] is not store
    assert type(bot.seen[0]) is type(store)
    assert store._backend is not bot.seen[0]._backend
    assert (await store.load_state(done.conversation.id)).version == 1
