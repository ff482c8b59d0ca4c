"""A bot may answer with items: its tool calls and their results are stored as messages."""

import pytest

from threadkeep import InvalidInput
from threadkeep.bot import answer

pytestmark = pytest.mark.anyio

CALL = {"type": "function_call", "call_id": "c1", "name": "estimate", "arguments": "{}"}
OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": "450k"}


class ToolBot:
    """Calls a tool, reads its result, then replies; counts how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def respond(self, store, conversation, message):
        self.calls += 1
        return [
            ("assistant", "", {"payload": CALL}),
            ("tool", "", {"payload": OUTPUT, "metadata": {"ms": 12}}),
            ("assistant", "It is worth about 450k."),
        ]


async def test_items_are_stored_and_the_words_are_the_reply(store):
    bot = ToolBot()
    done = await answer(store, bot, "what is my house worth?", contact_id="c-1",
                        idempotency_key="k1")  # fmt: skip
    assert done.reply is not None
    assert done.reply.content == "It is worth about 450k."
    history = await store.messages(done.conversation.id)
    assert [(m.role, m.payload) for m in history] == [
        ("user", None), ("assistant", CALL), ("tool", OUTPUT), ("assistant", None)
    ]  # fmt: skip
    assert [m.metadata.get("reply_to") for m in history[1:]] == [1, 1, 1]
    assert history[2].metadata["ms"] == 12
    again = await answer(store, bot, "what is my house worth?", contact_id="c-1",
                         idempotency_key="k1")  # fmt: skip
    assert (again.replayed, again.reply) == (True, done.reply)
    assert bot.calls == 1
    anthropic = await store.context(done.conversation.id, format="anthropic")
    assert [m["role"] for m in anthropic["messages"]] == ["user", "assistant", "user", "assistant"]


async def test_a_bad_item_stores_no_reply(store):
    class Broken:
        async def respond(self, store, conversation, message):
            return [("assistant", "", {"payload": CALL}), ("robot", "?")]

    with pytest.raises(InvalidInput, match="item 1"):
        await answer(store, Broken(), "hi", contact_id="c-2")
    conv = await store.find_open("c-2")
    assert [m.role for m in await store.messages(conv.id)] == ["user"]


def test_the_llm_request_joins_the_last_user_turn():
    from threadkeep.bot._llm import with_request

    assert with_request([], "r") == [{"role": "user", "content": "r"}]
    joined = with_request([{"role": "user", "content": "hi"}], "r")
    assert joined == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "r"}]}
    ]
    after_bot = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert with_request(after_bot, "r")[-1] == {"role": "user", "content": "r"}
