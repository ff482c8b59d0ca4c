"""The conversation a turn answers with is the one the turn left, however the turn ended.

A turn whose last write is its reply's append takes the conversation from that append
(``append_read``); every other turn reads it after giving the lease back. Either way it is
what ``get`` tells once the turn is over.
"""

from typing import Any

import pytest

from threadkeep import Status
from threadkeep.bot import EchoBot, answer

from .test_bot_items import ToolBot

pytestmark = pytest.mark.anyio


class StageBot:
    """Moves the conversation on before it answers (a write of the turn before the reply)."""

    async def respond(self, store: Any, conversation: Any, message: Any) -> str:
        await store.set_stage(conversation.id, "Q2", tenant=conversation.tenant)
        return "next question"


class Silent:
    async def respond(self, store: Any, conversation: Any, message: Any) -> None:
        return None


@pytest.mark.parametrize("bot", [EchoBot(), StageBot(), ToolBot(), Silent()], ids=type)
async def test_a_turn_answers_the_conversation_as_the_turn_left_it(store: Any, bot: Any) -> None:
    first = await answer(store, bot, "hi", contact_id="c-1")
    cid = first.conversation.id
    for text in ("more", "STOP", "START", "again"):
        done = await answer(store, bot, text, conversation_id=cid)
        assert done.conversation == await store.get(cid)
        if done.reply is not None and text != "STOP":  # a close is the STOP turn's last write
            assert done.conversation.last_activity_at == done.reply.created_at
        if text == "STOP":
            assert done.conversation.status is Status.CLOSED
            cid = (await answer(store, bot, "back", contact_id="c-1")).conversation.id
