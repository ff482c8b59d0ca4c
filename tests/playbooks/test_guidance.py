"""Guidance rules (pure), the seller playbook against the bot, and threadkeep.guidance()."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import threadkeep
from threadkeep.bot.seller import SellerState, advance, compose_reply
from threadkeep.playbooks import get_playbook, parse_playbook
from threadkeep.playbooks.guidance import RECENT, compute, guidance_phraser, reword

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def conv(stage: str | None, message_count: int = 0, **kw: Any) -> threadkeep.Conversation:
    return threadkeep.Conversation(
        id="c1",
        tenant="t",
        contact_id="+1555",
        agent_id=kw.get("agent_id"),
        channel="sms",
        status=threadkeep.Status.ACTIVE,
        stage=stage,
        metadata={},
        created_at=NOW,
        last_activity_at=NOW,
        expires_at=None,
        message_count=message_count,
    )


def msg(seq: int, content: str, role: str = "user") -> threadkeep.Message:
    return threadkeep.Message("c1", seq, role, content, NOW)


def fact(key: str, value: Any) -> threadkeep.Fact:
    return threadkeep.Fact(key, value, "high", NOW, NOW + timedelta(days=30))


BOOK = parse_playbook(
    {
        "name": "t",
        "fields": [{"name": n} for n in ("price", "timeline", "intent", "name")],
        "stages": [
            {
                "id": "one",
                "name": "One",
                "objectives": ["learn price and timeline"],
                "key_questions": [
                    {"ask": "What price?", "field": "price"},
                    {"ask": "How soon?", "field": "timeline"},
                    {"ask": "Anything else?"},
                ],
                "objections": [
                    {
                        "id": "lowball",
                        "triggers": ["lowball", "too low"],
                        "handling": "h1",
                        "reply": "No obligation. What price?",
                    },
                    {"id": "think", "triggers": ["think about it"], "handling": "h2"},
                ],
                "critical_actions": ["log it"],
                "success_metrics": ["a price"],
                "transition": {
                    "criteria": "price is set and timeline <= 90 and "
                    "conversation.message_count >= 2"
                },
                "replies": ["r1", "How soon?", "r3"],
            },
            {
                "id": "two",
                "name": "Two",
                "objectives": ["o"],
                "replies": ["a", "b", "c"],
                "final": True,
            },
        ],
    }
)


def test_unanswered_questions_and_criteria_follow_the_state():
    g = compute(BOOK, conv("one", 1), state={"price": 400000}, state_version=3)
    assert [q.ask for q in g.unanswered] == ["How soon?", "Anything else?"]
    assert [q.answered for q in g.questions] == [True, False, False]
    assert [c.when for c in g.criteria_met] == ["price is set"]
    assert [c.when for c in g.criteria_missing] == [
        "timeline <= 90",
        "conversation.message_count >= 2",
    ]
    assert g.criteria_met[0].value == 400000 and g.criteria_met[0].source == "state"
    assert g.criteria_missing[1].value == 1 and g.criteria_missing[1].source == "conversation"
    assert not g.ready and g.next_stage == "two" and g.state_version == 3
    assert g.objectives == ["learn price and timeline"] and g.critical_actions == ["log it"]
    g = compute(BOOK, conv("one", 2), state={"price": 1, "timeline": 30})
    assert g.ready and not g.criteria_missing and len(g.criteria_met) == 3
    g = compute(BOOK, conv("one", 2), state={"price": 1, "timeline": 120})
    assert not g.ready and [c.field for c in g.criteria_missing] == ["timeline"]


def test_facts_fill_fields_and_the_state_wins():
    g = compute(
        BOOK,
        conv("one"),
        state={"price": None, "timeline": 60},
        facts=[fact("price", 350000), fact("timeline", 400)],
    )
    met = {c.field: c for c in g.criteria_met}
    assert met["price"].value == 350000 and met["price"].source == "fact"
    assert met["timeline"].value == 60 and met["timeline"].source == "state"
    assert [f.key for f in g.facts] == ["price", "timeline"]


def test_objections_are_read_from_recent_user_messages_newest_first():
    messages = [msg(1, "That's too low!")]
    messages += [msg(i, "ok", "assistant" if i % 2 else "user") for i in range(2, 2 + RECENT)]
    g = compute(BOOK, conv("one"), messages=messages)
    assert g.objections == []  # the objection scrolled out of the recent window
    messages = [
        msg(1, "I need to think about it"),
        msg(2, "Is that a lowball, really?", "assistant"),  # not the contact's words
        msg(3, "Sounds like a LOWBALL\nto me"),
        msg(4, "lowballing is rude"),  # whole words only
    ]
    g = compute(BOOK, conv("one"), messages=messages)
    assert [(o.id, o.seq) for o in g.objections] == [("lowball", 3), ("think", 1)]
    assert g.objections[0].excerpt == "Sounds like a LOWBALL to me"
    assert g.last_seq == 4


def test_three_suggestions_objections_first_then_questions_then_replies():
    g = compute(BOOK, conv("one"), messages=[msg(1, "too low"), msg(2, "let me think about it")])
    assert [(s.kind, s.text) for s in g.suggestions] == [
        ("objection", "h2"),  # newest objection first; without a reply, its handling
        ("objection", "No obligation. What price?"),
        ("question", "What price?"),
    ]
    g = compute(BOOK, conv("one"), state={"price": 1})
    assert [s.text for s in g.suggestions] == ["How soon?", "Anything else?", "r1"]
    g = compute(BOOK, conv("one"), state={"price": 1, "timeline": 2})
    assert [s.text for s in g.suggestions] == ["Anything else?", "r1", "How soon?"]


def test_unknown_and_final_stages():
    g = compute(BOOK, conv("zz"))
    assert not g.known_stage and g.stage == "one"
    g = compute(BOOK, conv(None))
    assert g.known_stage and g.stage == "one"
    g = compute(BOOK, conv("two"))
    assert g.next_stage is None and not g.ready and g.criteria_missing == []
    assert len(g.suggestions) == 3


SELLER_SCRIPT = [
    "Hi, I want to sell my house",
    "It needs a new roof",
    "hmm",
    "around 450k",
    "relocating for work",
    "within 30 days",
    "yes",
]


def test_the_seller_playbook_agrees_with_the_bot():
    """At every turn the bot's stage is the playbook stage whose criteria are missing, every
    earlier question stage is met, and the bot asks the playbook's key question."""
    book = get_playbook("seller")
    assert {f.name for f in book.fields} <= set(SellerState.model_fields)
    state = SellerState()
    order = ["Q1", "Q2", "Q3", "Q4"]
    for count, text in enumerate(SELLER_SCRIPT, start=1):
        turn = advance(state, text, NOW)
        state = turn.state
        values = state.model_dump(mode="json")
        g = compute(book, conv(state.stage, count), state=values)
        if state.stage in order:
            assert not g.ready and g.criteria_missing, state.stage
            assert g.unanswered[0].ask in compose_reply(turn) or state.stage == "Q4"
            for earlier in order[: order.index(state.stage)]:
                assert compute(book, conv(earlier, count), state=values).ready, earlier
    assert state.stage == "QUALIFIED"
    assert compute(book, conv("Q4", 7), state=state.model_dump(mode="json")).ready
    q4 = compute(book, conv("Q4", 1), state={})
    assert q4.suggestions[0].text == "How soon would you like to sell?"
    stalled = SellerState(stage="Q2", condition="good")
    for _ in range(3):
        stalled = advance(stalled, "hmm", NOW).state
    assert stalled.stage == "STALLED"
    g = compute(book, conv("STALLED", 5), state=stalled.model_dump(mode="json"))
    assert g.unanswered[0].field == "price_expectation"


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_library_function_sync_and_async(url, tmp_path):
    import anyio

    url = f"sqlite:///{tmp_path / 'g.db'}" if url == "sqlite" else url
    with threadkeep.open(url) as store:
        c = store.start("+1555", tenant="loc-1", stage="Q2")
        store.append(c.id, "user", "you tell me what it's worth")
        store.save_state(c.id, {"condition": "good"}, expected_version=0)
        store.remember("+1555", "price_expectation", 300000, tenant="loc-1")
        g = threadkeep.guidance(store, c.id, "seller")
        assert g.stage == "Q2" and g.ready and g.objections[0].id == "you_tell_me"
        assert g.criteria_met[0].source == "fact" and g.state_version == 1
        with pytest.raises(threadkeep.ConversationNotFound):
            threadkeep.guidance(store, c.id, "seller", tenant="loc-2")
        with pytest.raises(threadkeep.InvalidInput, match="unknown playbook"):
            threadkeep.guidance(store, c.id, "nope")
        cid = c.id
    if url == "memory://":
        return

    async def main():
        async with await threadkeep.open_async(url) as astore:
            g2 = await threadkeep.guidance(astore, cid, get_playbook("seller"))
            assert g2 == g

    anyio.run(main)


def test_llm_rewords_and_falls_back(fake_llm):
    env = {
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake_llm.url,
        "THREADKEEP_BOT_LLM_TIMEOUT": "20",  # a pass never waits for it; a busy machine may
    }
    phraser = guidance_phraser(env)
    assert phraser is not None and guidance_phraser({}) is None
    g = compute(get_playbook("seller"), conv("Q2"), messages=[msg(1, "you tell me")])
    import anyio

    reworded = anyio.run(reword, g, phraser, "you tell me")
    assert reworded.reworded
    assert [s.text for s in reworded.suggestions] == ["Sure! " + s.text for s in g.suggestions]
    sent = fake_llm.requests()
    assert (
        len(sent) == 3 and "The lead said: you tell me" in sent[0]["body"]["messages"][0]["content"]
    )
    assert "real-estate agent" in sent[0]["body"]["system"]
    for mode in ("error", "drop", "slow"):
        fake_llm.control(mode=mode)
        impatient = dataclasses.replace(phraser, timeout=1.0)  # the fake sleeps 10 s when slow
        kept = anyio.run(reword, g, phraser if mode != "slow" else impatient, "you tell me")
        assert kept == g, mode  # the rules' words, reworded stays False


def test_library_function_rewords_with_a_phraser(fake_llm):
    phraser = guidance_phraser(
        {
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": fake_llm.url,
            "THREADKEEP_BOT_LLM_TIMEOUT": "20",
        }
    )
    with threadkeep.open("memory://") as store:
        c = store.start("+1555", stage="Q1")
        g = threadkeep.guidance(store, c.id, "seller", phraser=phraser)
    assert g.reworded and all(s.text.startswith("Sure! ") for s in g.suggestions)
