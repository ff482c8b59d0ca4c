"""Whole turns (``threadkeep.bot.answer``) as people take them: opting out, coming back."""

import pytest

from threadkeep.bot import EchoBot, answer, opted_out
from threadkeep.bot._consent import OPT_IN_REPLY, OPT_OUT_FACT, OPT_OUT_REPLY, consent
from threadkeep.bot.seller import FACT_PREFIX, SellerBot, SellerState

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", "stop"),
        ("stop.", "stop"),
        ("Unsubscribe", "stop"),
        ("  QUIT  ", "stop"),
        ("stop all", "stop"),
        ("please stop texting me", "stop"),
        ("Stop messaging me!", "stop"),
        ("unsubscribe me", "stop"),
        ("opt me out please", "stop"),
        ("remove me from this list", "stop"),
        ("START", "start"),
        ("unstop", "start"),
        ("I want to stop paying rent on this place", None),
        ("can you stop by tomorrow?", None),
        ("let's start with the roof", None),
        ("end of the month works", None),
    ],
)
def test_consent_words(text, expected):
    assert consent(text) == expected


@pytest.mark.parametrize("bot", [EchoBot(), SellerBot()], ids=["echo", "seller"])
async def test_stop_closes_and_silences_every_bot_until_start(store, bot):
    contact = "+15550100"
    first = await answer(store, bot, "Hi, the house needs a new roof", contact_id=contact)
    assert first.reply is not None

    stop = await answer(store, bot, "STOP", contact_id=contact)
    assert stop.reply is not None and stop.reply.content == OPT_OUT_REPLY
    assert stop.conversation.id == first.conversation.id
    assert stop.conversation.status == "closed"
    assert await opted_out(store, contact)
    facts = await store.recall(contact, OPT_OUT_FACT)
    assert facts[0].value is True and facts[0].tier == "critical"

    # the next message is stored (for people to read) but no bot answers it
    later = await answer(store, bot, "hello?", contact_id=contact)
    assert later.conversation.id != first.conversation.id
    assert later.reply is None
    assert [m.content for m in await store.messages(later.conversation.id)] == ["hello?"]
    again = await answer(store, bot, "stop", contact_id=contact)
    assert again.reply is None  # confirmed once already: nothing more is sent
    assert again.conversation.status == "closed"

    start = await answer(store, bot, "START", contact_id=contact)
    assert start.reply is not None and start.reply.content == OPT_IN_REPLY
    assert not await opted_out(store, contact)
    back = await answer(store, bot, "It needs a new roof", contact_id=contact)
    assert back.reply is not None and back.reply.content != OPT_IN_REPLY


async def test_stop_counts_while_a_person_has_the_conversation(store):
    bot = SellerBot()
    first = await answer(store, bot, "talk to a human please", contact_id="c-1")
    assert first.conversation.status == "waiting_agent"
    stop = await answer(store, bot, "Unsubscribe", conversation_id=first.conversation.id)
    assert stop.reply is not None and stop.reply.content == OPT_OUT_REPLY
    assert stop.conversation.status == "closed"


async def test_start_without_an_opt_out_is_an_ordinary_message(store):
    done = await answer(store, EchoBot(), "start", contact_id="c-2")
    assert done.reply is not None and done.reply.content == "echo: start"


async def test_other_words_with_stop_in_them_get_answers(store):
    done = await answer(store, EchoBot(), "I want to stop paying rent", contact_id="c-3")
    assert done.reply is not None and done.conversation.status == "active"
    assert not await opted_out(store, "c-3")


async def test_a_returning_seller_is_not_asked_again(store):
    bot = SellerBot()
    contact = "+15550142"
    one = await answer(store, bot, "Hi, it needs a new roof", contact_id=contact)
    await answer(store, bot, "around 450k", conversation_id=one.conversation.id)
    facts = {f.key: f.value for f in await store.recall(contact)}
    assert facts[FACT_PREFIX + "condition"] == "needs_work"
    assert facts[FACT_PREFIX + "condition_issues"] == ["roof"]
    assert facts[FACT_PREFIX + "price_expectation"] == 450_000
    await store.close_conversation(one.conversation.id)

    back = await answer(store, bot, "Hi again", contact_id=contact)
    assert back.conversation.id != one.conversation.id
    reply = back.reply.content if back.reply else ""
    assert "Welcome back" in reply and "$450,000" in reply and "roof" in reply
    assert "What's making you think about selling?" in reply  # Q3, not Q1 again
    state = (await store.load_state(back.conversation.id, SellerState)).value
    assert (state.condition, state.price_expectation, state.stage) == ("needs_work", 450_000, "Q3")
    assert back.conversation.stage == "Q3"

    # a correction in the new conversation replaces the remembered value
    await answer(store, bot, "actually make it 475k", conversation_id=back.conversation.id)
    facts = {f.key: f.value for f in await store.recall(contact)}
    assert facts[FACT_PREFIX + "price_expectation"] == 475_000


async def test_another_contact_remembers_nothing_of_it(store):
    bot = SellerBot()
    await answer(store, bot, "Hi, it needs a new roof, 450k", contact_id="seller-a")
    other = await answer(store, bot, "Hi", contact_id="seller-b")
    assert other.reply is not None and "Welcome back" not in other.reply.content
    assert (await store.load_state(other.conversation.id, SellerState)).value.condition is None
