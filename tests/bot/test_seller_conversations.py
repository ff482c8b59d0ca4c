"""Ten scripted seller conversations, turn by turn, through a real store (memory and SQLite).

Each turn does what the service does: append the user's message, let the bot respond, append
the reply as the assistant's. After every turn the conversation's stage, the state's extracted
fields and the temperature are checked. A turn's dict lists only what changes; the test carries
the rest forward.
"""

from typing import Any, cast

import pytest

from threadkeep import AsyncStore, Conversation, StateConflict
from threadkeep.bot.seller import HANDOFF_REPLY, SellerBot, SellerState, salvage

pytestmark = pytest.mark.anyio

FIELDS = (
    "condition",
    "condition_issues",
    "price_expectation",
    "motivation",
    "timeline_days",
    "cash_offer_ok",
    "visit_time",
)

CONVERSATIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "textbook-hot": [
        ("Hi, I'm thinking about selling my house", {"stage": "Q1", "temperature": "cold"}),
        (
            "It needs a new roof and the kitchen is dated",
            {"stage": "Q2", "condition": "needs_work", "condition_issues": ["roof", "kitchen"]},
        ),
        ("Around 450k", {"stage": "Q3", "price_expectation": 450_000}),
        (
            "I'm relocating for work",
            {"stage": "Q4", "motivation": "relocation", "temperature": "warm"},
        ),
        (
            "Within 30 days ideally, and yes cash is fine",
            {
                "stage": "QUALIFIED",
                "timeline_days": 30,
                "cash_offer_ok": True,
                "temperature": "hot",
            },
        ),
    ],
    "out-of-order-inherited": [
        (
            "Hello! I have to sell my mom's place within 2 months, she passed away last spring",
            {"stage": "Q1", "timeline_days": 60, "motivation": "inherited", "temperature": "warm"},
        ),
        ("It's in good shape, well maintained", {"stage": "Q2", "condition": "good"}),
        ("$325,000", {"stage": "Q4", "price_expectation": 325_000}),
        ("Sure", {"stage": "QUALIFIED", "cash_offer_ok": True, "temperature": "hot"}),
    ],
    "corrections": [
        ("hey", {"stage": "Q1", "temperature": "cold"}),
        ("Good condition overall", {"stage": "Q2", "condition": "good"}),
        ("I'd want 450 thousand", {"stage": "Q3", "price_expectation": 450_000}),
        (
            "Actually more like 500k, we just redid the bathrooms",
            {"stage": "Q3", "price_expectation": 500_000},
        ),
        (
            "We're downsizing now that the kids are gone",
            {"stage": "Q4", "motivation": "downsizing"},
        ),
        ("Probably in 3 months", {"stage": "Q4", "timeline_days": 90, "temperature": "warm"}),
        (
            "No, I'd rather list it and get full market value",
            {"stage": "QUALIFIED", "cash_offer_ok": False},
        ),
        ("Sorry, make that 2 months", {"stage": "QUALIFIED", "timeline_days": 60}),
    ],
    "goes-silent-then-returns": [
        ("hi", {"stage": "Q1"}),
        ("idk", {"stage": "Q1", "turns_without_progress": 1}),
        ("why do you need to know", {"stage": "Q1", "turns_without_progress": 2}),
        ("hmm", {"stage": "STALLED", "turns_without_progress": 3}),
        ("...", {"stage": "STALLED", "turns_without_progress": 4}),
        (
            "ok fine, it's in decent shape",
            {"stage": "Q2", "condition": "good", "turns_without_progress": 0},
        ),
    ],
    "asks-for-a-human": [
        (
            "I want to sell my house fast, it has foundation issues",
            {"stage": "Q2", "condition": "needs_work", "condition_issues": ["foundation"]},
        ),
        ("Can I talk to a real person?", {"stage": "Q2", "status": "waiting_agent"}),
        ("hello?", {"stage": "Q2", "status": "waiting_agent", "reply": None}),
    ],
    "distressed-big-numbers": [
        ("Hi there, selling a 3 bed 2 bath in Austin", {"stage": "Q1"}),
        (
            "Honestly it's falling apart, water damage in the basement",
            {"stage": "Q2", "condition": "poor", "condition_issues": ["water damage"]},
        ),
        (
            "I was hoping for 1.2 million but I know that's a stretch",
            {"stage": "Q3", "price_expectation": 1_200_000},
        ),
        ("Divorce.", {"stage": "Q4", "motivation": "divorce", "temperature": "warm"}),
        ("As soon as possible", {"stage": "Q4", "timeline_days": 14, "temperature": "hot"}),
        ("not really", {"stage": "QUALIFIED", "cash_offer_ok": False, "temperature": "warm"}),
    ],
    "just-curious-cold": [
        ("Just curious what my house is worth", {"stage": "Q1", "motivation": "curious"}),
        ("It's fine I guess", {"stage": "Q2", "condition": "good"}),
        ("no idea, what do you think?", {"stage": "Q2", "turns_without_progress": 1}),
        ("maybe 600", {"stage": "Q4", "price_expectation": 600_000, "turns_without_progress": 0}),
        ("No rush at all, maybe next year", {"stage": "Q4", "timeline_days": 365}),
        ("nah", {"stage": "QUALIFIED", "cash_offer_ok": False}),
    ],
    "everything-at-once": [
        (
            "Hi, inherited house, needs major repairs, want $280k, can close in 45 days and "
            "cash is totally fine",
            {
                "stage": "QUALIFIED",
                "condition": "needs_work",
                "price_expectation": 280_000,
                "motivation": "inherited",
                "timeline_days": 45,
                "cash_offer_ok": True,
                "temperature": "hot",
            },
        ),
        ("thanks!", {"stage": "QUALIFIED"}),
    ],
    "timeline-before-price": [
        ("Good morning", {"stage": "Q1"}),
        (
            "The roof is old and the HVAC needs replacing",
            {"stage": "Q2", "condition": "needs_work", "condition_issues": ["roof", "hvac"]},
        ),
        (
            "We need to be out by next month because of a job transfer",
            {"stage": "Q2", "timeline_days": 60, "motivation": "relocation", "temperature": "warm"},
        ),
        ("$390,000", {"stage": "Q4", "price_expectation": 390_000}),
        ("yeah that works", {"stage": "QUALIFIED", "cash_offer_ok": True, "temperature": "hot"}),
    ],
    "asks-after-qualifying": [
        (
            "Hi, inherited house, needs major repairs, want $280k, can close in 45 days and "
            "cash is totally fine",
            {
                "stage": "QUALIFIED",
                "condition": "needs_work",
                "price_expectation": 280_000,
                "motivation": "inherited",
                "timeline_days": 45,
                "cash_offer_ok": True,
                "temperature": "hot",
            },
        ),
        ("What happens next?", {"says": "Next: a specialist reviews"}),
        ("How does the cash offer work?", {"says": "closing within 45 days"}),
        ("When can you come by to see it?", {"says": "What day and time suit you?"}),
        (
            "Tuesday afternoon works",
            {"visit_time": "Tuesday afternoon", "says": "Noted: Tuesday afternoon suits you"},
        ),
        ("Actually I'd want 300k", {"price_expectation": 300_000, "says": "$300,000"}),
        ("thanks!", {"says": "You're welcome"}),
        ("purple monkey dishwasher", {"says": "I'm not sure I understood"}),
    ],
    "needs-nothing": [
        ("hi", {"stage": "Q1"}),
        ("It needs nothing", {"stage": "Q2", "condition": "good"}),
        ("What happens next?", {"stage": "Q2", "says": "Once you've answered"}),
        ("$410,000", {"stage": "Q3", "price_expectation": 410_000}),
    ],
    "the-house-is-a-mess": [
        ("Hello, the house is a mess and we need out", {"stage": "Q2", "condition": "poor"}),
        ("How much would you offer?", {"stage": "Q2", "says": "after a short visit"}),
    ],
    "stalls-then-qualifies": [
        ("hi", {"stage": "Q1"}),
        ("what company is this?", {"stage": "Q1", "turns_without_progress": 1}),
        ("?", {"stage": "Q1", "turns_without_progress": 2}),
        ("whatever", {"stage": "STALLED", "turns_without_progress": 3}),
        (
            "sorry, busy. It's move-in ready, fully renovated last year",
            {"stage": "Q2", "condition": "excellent", "turns_without_progress": 0},
        ),
        ("$615k", {"stage": "Q3", "price_expectation": 615_000}),
        ("retiring to Florida", {"stage": "Q4", "motivation": "retirement"}),
        (
            "in 6 weeks, and sure",
            {
                "stage": "QUALIFIED",
                "timeline_days": 42,
                "cash_offer_ok": True,
                "temperature": "warm",
            },
        ),
    ],
}


async def _turn(store: Any, bot: SellerBot, conv: Conversation, text: str) -> str | None:
    msg = await store.append(conv.id, "user", text, tenant=conv.tenant)
    reply = await bot.respond(store, conv, msg)
    if reply is not None:
        await store.append(conv.id, "assistant", reply, tenant=conv.tenant)
    return reply


async def _said(store: Any, bot: SellerBot, conv: Conversation, text: str) -> str:
    """A turn the bot must answer: its reply."""
    reply = await _turn(store, bot, conv, text)
    assert reply is not None, text
    return reply


@pytest.mark.parametrize("name", list(CONVERSATIONS))
async def test_scripted_conversation(store, name):
    bot = SellerBot()
    conv = await store.start(f"seller-{name}", tenant="loc-1", channel="web", stage="Q0")
    expected = dict.fromkeys(FIELDS)
    expected.update(condition_issues=[], temperature="cold", turns_without_progress=0)
    expected.update(status="active")
    for i, (text, changes) in enumerate(CONVERSATIONS[name], 1):
        reply = await _turn(store, bot, conv, text)
        expected.update({k: v for k, v in changes.items() if k not in ("reply", "says")})
        where = f"{name} turn {i}: {text!r}"
        if "reply" in changes:
            assert reply == changes["reply"], where
        else:
            assert reply, where
            assert changes.get("says", "") in reply, (where, reply)
        current = await store.get(conv.id)
        snap = await store.load_state(conv.id, SellerState, tenant="loc-1")
        state = snap.value
        assert current.stage == expected["stage"] == state.stage, where
        assert current.status == expected["status"], where
        got = {k: getattr(state, k) for k in (*FIELDS, "temperature", "turns_without_progress")}
        want = {k: expected[k] for k in got}
        assert got == want, where
        assert state.updated_at is not None and state.updated_at.tzinfo is not None


async def test_stages_are_recorded_in_answer_order(store):
    bot = SellerBot()
    conv = await store.start("seller-order")
    for text in ("we need to sell within 30 days, relocating", "good shape", "$400k", "yes"):
        await _turn(store, bot, conv, text)
    state = (await store.load_state(conv.id, SellerState)).value
    assert state.answered == ["Q3", "Q1", "Q2", "Q4"]
    assert state.stage == "QUALIFIED"


async def test_handoff_then_hand_back(store):
    bot = SellerBot()
    conv = await store.start("seller-handoff")
    await _turn(store, bot, conv, "hi")
    assert await _turn(store, bot, conv, "agent please") == HANDOFF_REPLY
    assert (await store.get(conv.id)).status == "waiting_agent"
    assert await _turn(store, bot, conv, "it needs a new roof") is None
    await store.append(conv.id, "agent", "Hi, I'm Dana. Back to the assistant now.")
    await store.set_status(conv.id, "active")
    reply = await _turn(store, bot, conv, "it needs a new roof")
    assert reply and "price" in reply
    assert (await store.get(conv.id)).stage == "Q2"


async def test_what_the_seller_told_a_person_counts_after_hand_back(store):
    bot = SellerBot()
    conv = await store.start("seller-catch-up")
    await _turn(store, bot, conv, "hi, it needs a new roof")
    assert await _turn(store, bot, conv, "can I talk to a real person?") == HANDOFF_REPLY
    # The bot is silent while the person has the chat; the seller answers the person.
    assert await _turn(store, bot, conv, "It has 3 bedrooms") is None
    await store.append(conv.id, "agent", "Thanks! Would you take 300k?")
    assert await _turn(store, bot, conv, "I'd want 400k") is None
    assert await _turn(store, bot, conv, "thanks") is None
    assert await _turn(store, bot, conv, "ok?") is None
    await store.set_status(conv.id, "active")

    reply = await _said(store, bot, conv, "we're relocating for work")
    snap = await store.load_state(conv.id, SellerState)
    state = snap.value
    # "400k" came from the seller; the agent's "300k" is not the seller's answer.
    assert state.price_expectation == 400_000
    assert state.motivation == "relocation"
    assert state.condition == "needs_work" and state.condition_issues == ["roof"]
    assert state.stage == "Q4" and (await store.get(conv.id)).stage == "Q4"
    assert state.turns_without_progress == 0  # "thanks", "ok?" did not stall it
    assert state.handoff_requested is True
    assert "$400,000" in reply and "relocating" in reply and "Sorry" not in reply
    assert state.last_seq == (await store.messages(conv.id, last=2))[0].seq


async def test_no_catch_up_read_for_a_plain_turn(store):
    bot = SellerBot()
    conv = await store.start("seller-plain")
    await _turn(store, bot, conv, "hi")

    class Counting(RacingStore):
        reads = 0

        async def messages(self, *args, **kw):
            Counting.reads += 1
            return await self._store.messages(*args, **kw)

    msg = await store.append(conv.id, "user", "good shape")
    assert await bot.respond(cast(AsyncStore, Counting(store, races=0)), conv, msg)
    assert Counting.reads == 1  # one short read: the bot's last reply and this message
    assert (await store.load_state(conv.id, SellerState)).value.condition == "good"


async def test_closed_conversation_gets_no_reply(store):
    bot = SellerBot()
    conv = await store.start("seller-closed")
    msg = await store.append(conv.id, "user", "hi")
    await store.close_conversation(conv.id)
    assert await bot.respond(store, conv, msg) is None


async def test_replies_ask_the_pending_question(store):
    bot = SellerBot()
    conv = await store.start("seller-replies")
    first = await _said(store, bot, conv, "hello")
    assert "condition" in first
    assert "price" in await _said(store, bot, conv, "needs a new roof")
    assert "Sorry" in await _said(store, bot, conv, "hmm")
    last = await _said(store, bot, conv, "350k, divorce, asap, cash ok")
    assert "$350,000" in last and "specialist" in last


class RacingStore:
    """Wraps a real store: a second screen saves the state right after the bot loads it."""

    def __init__(self, store: AsyncStore, races: int) -> None:
        self._store = store
        self.races = races

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def load_state(self, conversation_id: str, model: Any = None, **kw: Any) -> Any:
        snap = await self._store.load_state(conversation_id, model, **kw)
        if self.races:
            self.races -= 1
            edited = salvage(snap.value).model_copy(update={"motivation": "divorce"})
            await self._store.save_state(
                conversation_id, edited, expected_version=snap.version, tenant=kw.get("tenant")
            )
        return snap


async def test_state_conflict_reapplies_the_message_once(store):
    bot = SellerBot()
    conv = await store.start("seller-race")
    await _turn(store, bot, conv, "hi")
    racing = RacingStore(store, races=1)
    msg = await store.append(conv.id, "user", "needs a new roof")
    assert await bot.respond(cast(AsyncStore, racing), conv, msg)
    snap = await store.load_state(conv.id, SellerState)
    # the other screen's edit is kept and the message applied on top of it
    assert snap.value.motivation == "divorce"
    assert snap.value.condition == "needs_work"
    assert snap.version == 3  # 1: "hi", 2: the other screen, 3: the bot after reloading


async def test_state_conflict_twice_raises(store):
    bot = SellerBot()
    conv = await store.start("seller-race-2")
    msg = await store.append(conv.id, "user", "needs a new roof")
    with pytest.raises(StateConflict):
        await bot.respond(cast(AsyncStore, RacingStore(store, races=2)), conv, msg)
