"""The demo seller qualification bot: four questions, a temperature, a human when asked.

Stages: ``Q0`` (nothing asked yet), ``Q1`` condition, ``Q2`` price expectation, ``Q3``
motivation, ``Q4`` timeline and whether a cash offer in it is acceptable, ``QUALIFIED`` when all
are known, ``STALLED`` after ``STALL_AFTER`` seller turns in a row that bring no new answer (a new
answer moves it back to the next open question). The stage is always the first unanswered
question, so answers given out of order are kept and their questions skipped; a later value for
a field replaces the earlier one (a correction).

The rules (``advance``) are pure and decide what to ask; the optional LLM only rewords.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from threadkeep import AsyncStore, Conversation, Message, StateConflict, Status
from threadkeep.bot import _extract
from threadkeep.bot._llm import LLMPhraser

__all__ = [
    "FACT_PREFIX",
    "FIELDS",
    "HANDOFF_REPLY",
    "MAX_CATCH_UP",
    "STALL_AFTER",
    "LLMPhraser",
    "SellerBot",
    "SellerState",
    "TurnResult",
    "advance",
    "catch_up",
    "compose_reply",
    "pending_question",
    "recall_seller",
    "remember_seller",
    "salvage",
    "score_temperature",
]

#: The conversation the LLM reads to match the seller's tone, in tokens (whole turns).
_LLM_BUDGET = 2000

Temperature = Literal["hot", "warm", "cold"]
Condition = Literal["poor", "needs_work", "fair", "good", "excellent"]
Motivation = Literal[
    "relocation",
    "divorce",
    "inherited",
    "financial",
    "downsizing",
    "upsizing",
    "retirement",
    "health",
    "landlord",
    "curious",
    "other",
]
#: Marks the fields the bot keeps for itself: the dashboard shows them locked.
_BOT: Final[dict[str, Any]] = {"readOnly": True}

#: Seller turns in a row without a new answer before the stage becomes ``STALLED``.
STALL_AFTER: Final = 3

#: At most this many unanswered seller messages are read when the bot takes over again.
MAX_CATCH_UP: Final = 50

#: The state fields the questions fill, in question order.
FIELDS: Final = ("condition", "price_expectation", "motivation", "timeline_days", "cash_offer_ok")

HANDOFF_REPLY: Final = (
    "Of course. I'm passing you to a member of our team; they will reply here shortly."
)

_NEEDY: Final = ("needs_work", "poor")
_STRONG_MOTIVATIONS: Final = frozenset(
    {"relocation", "divorce", "inherited", "financial", "health", "landlord"}
)


class SellerState(BaseModel):
    """What the bot knows about one seller; saved as the conversation's state.

    Attributes:
        stage: ``Q0``…``Q4``, ``QUALIFIED`` or ``STALLED``.
        condition: ``poor``, ``needs_work``, ``fair``, ``good`` or ``excellent``.
        condition_issues: named repairs ("roof", "foundation" …).
        price_expectation: whole dollars.
        motivation: ``relocation``, ``divorce``, ``inherited``, ``financial``, ``downsizing`` …
        timeline_days: how many days the seller gives the sale.
        cash_offer_ok: whether a cash offer in that timeline is acceptable.
        visit_time: when the seller would like the specialist's visit, in their words.
        temperature: ``hot``, ``warm`` or ``cold``, scored from the answers.
        turns_without_progress: seller turns in a row that brought no new answer.
        answered: the questions answered, in the order they were completed.
        corrections: how many times an answer was replaced by a different one.
        handoff_requested: whether the seller asked for a person.
        last_seq: the seq of the last seller message the bot has read.
        updated_at: when the state last changed (timezone-aware).
    """

    # Fields a person adds from the dashboard ("agent_notes") are kept, never dropped.
    model_config = ConfigDict(extra="allow")

    stage: str = Field(default="Q0", title="Bot stage", json_schema_extra=_BOT)
    condition: Condition | None = Field(default=None, title="Condition")
    condition_issues: list[str] = Field(default_factory=list, title="Repairs")
    price_expectation: int | None = Field(
        default=None, ge=0, title="Asking price", json_schema_extra={"format": "money"}
    )
    motivation: Motivation | None = Field(default=None, title="Reason for selling")
    timeline_days: int | None = Field(default=None, ge=0, title="Timeline (days)")
    cash_offer_ok: bool | None = Field(default=None, title="Cash offer OK")
    visit_time: str | None = Field(default=None, title="Best time to visit", max_length=200)
    temperature: Temperature = Field(default="cold", title="Temperature")
    turns_without_progress: int = Field(default=0, json_schema_extra=_BOT)
    answered: list[str] = Field(default_factory=list, json_schema_extra=_BOT)
    corrections: int = Field(default=0, json_schema_extra=_BOT)
    handoff_requested: bool = Field(default=False, json_schema_extra=_BOT)
    last_seq: int = Field(default=0, json_schema_extra=_BOT)
    updated_at: AwareDatetime | None = Field(default=None, json_schema_extra=_BOT)


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What one seller message did to the state.

    Attributes:
        before: the state before the message.
        state: the state after it.
        new: fields that got their first value.
        corrected: fields whose value was replaced.
        handoff: whether the seller asked for a person.
        asked: what the seller asked about (a visit, the offer, the next steps, thanks).
    """

    before: SellerState
    state: SellerState
    new: tuple[str, ...] = field(default=())
    corrected: tuple[str, ...] = field(default=())
    handoff: bool = False
    asked: _extract.Question | None = None

    @property
    def progressed(self) -> bool:
        """Whether the message brought any new or changed answer."""
        return bool(self.new or self.corrected)


def pending_question(state: SellerState) -> str | None:
    """Return the first unanswered question (``Q1``…``Q4``), or None when all are answered."""
    if state.condition is None:
        return "Q1"
    if state.price_expectation is None:
        return "Q2"
    if state.motivation is None:
        return "Q3"
    if state.timeline_days is None or state.cash_offer_ok is None:
        return "Q4"
    return None


def score_temperature(state: SellerState) -> Temperature:
    """Score a seller hot, warm or cold from the answers.

    Points: timeline ≤30 days 3, ≤90 days 2, ≤180 days 1; cash offer acceptable 2; a pressing
    motivation (relocation, divorce, inherited, financial, health, tired landlord) 2, another
    one 1 ("just curious" 0); a property that needs work or is in poor shape 1. Six or more is
    hot (only when a cash offer is not refused), three or more warm, else cold.
    """
    points = 0
    days = state.timeline_days
    if days is not None:
        points += 3 if days <= 30 else 2 if days <= 90 else 1 if days <= 180 else 0
    if state.cash_offer_ok:
        points += 2
    if state.motivation in _STRONG_MOTIVATIONS:
        points += 2
    elif state.motivation not in (None, "curious"):
        points += 1
    if state.condition in ("needs_work", "poor"):
        points += 1
    if points >= 6 and state.cash_offer_ok is not False:
        return "hot"
    return "warm" if points >= 3 else "cold"


def _extract_all(state: SellerState, text: str) -> dict[str, Any]:
    asking = pending_question(state) if state.stage != "Q0" else None
    found: dict[str, Any] = {}
    condition = _extract.extract_condition(text, asking=asking == "Q1")
    if condition is not None:
        found["condition"], issues = condition
        if issues:
            found["condition_issues"] = issues
    price = _extract.extract_price(
        text, asking=asking == "Q2", correcting=state.price_expectation is not None
    )
    if price is not None:
        found["price_expectation"] = price
    motivation = _extract.extract_motivation(text, asking=asking == "Q3")
    if motivation is not None:
        found["motivation"] = motivation
    days = _extract.extract_timeline_days(
        text,
        asking=asking == "Q4" and state.timeline_days is None,
        correcting=state.timeline_days is not None,
    )
    if days is not None:
        found["timeline_days"] = days
    cash = _extract.extract_cash_ok(text, asking=asking == "Q4" and state.cash_offer_ok is None)
    if cash is not None:
        found["cash_offer_ok"] = cash
    return found


def advance(state: SellerState, text: str, now: datetime) -> TurnResult:
    """Apply one seller message to ``state`` (pure: ``state`` is not changed).

    Args:
        state: the state before the message.
        text: the seller's message.
        now: when it arrived (timezone-aware).

    Returns:
        The new state and what changed.
    """
    found = _extract_all(state, text)
    updates: dict[str, Any] = {}
    new: list[str] = []
    corrected: list[str] = []
    for name in FIELDS:
        if name not in found:
            continue
        old = getattr(state, name)
        if old is None:
            new.append(name)
        elif old != found[name]:
            corrected.append(name)
        else:
            continue
        updates[name] = found[name]
    issues: list[str] = found.get("condition_issues", [])
    if "condition" in updates:
        updates["condition_issues"] = issues if updates["condition"] in _NEEDY else []
    elif issues and state.condition in _NEEDY:
        kept = state.condition_issues
        updates["condition_issues"] = kept + [i for i in issues if i not in kept]
    handoff = _extract.wants_human(text)
    asked = _extract.extract_question(text)
    when = _extract.extract_visit_time(text)
    if when is not None and (asked == "schedule" or state.stage == "QUALIFIED"):
        asked = "schedule"
        updates["visit_time"] = when
    after = state.model_copy(update=updates, deep=True)
    for stage in ("Q1", "Q2", "Q3", "Q4"):
        if stage not in after.answered and _answered(after, stage):
            after.answered.append(stage)
    after.corrections += len(corrected)
    after.handoff_requested = state.handoff_requested or handoff
    pending = pending_question(after)
    progressed = bool(new or corrected)
    if pending is None:
        after.stage = "QUALIFIED"
        after.turns_without_progress = 0
    elif progressed or state.stage == "Q0" or handoff:
        after.stage = pending
        after.turns_without_progress = 0
    elif asked is not None:  # a question is not a stall: the seller is still with us
        after.stage = pending
    else:
        after.turns_without_progress = state.turns_without_progress + 1
        after.stage = "STALLED" if after.turns_without_progress >= STALL_AFTER else pending
    after.temperature = score_temperature(after)
    after.updated_at = now
    return TurnResult(state, after, tuple(new), tuple(corrected), handoff, asked)


def catch_up(state: SellerState, missed: list[str], text: str, now: datetime) -> TurnResult:
    """Apply seller messages the bot did not answer (``missed``), then ``text`` (pure).

    While a person had the conversation the bot was silent; what the seller told them still
    counts ("it's 400k"), but those messages neither stall the conversation nor hand it over
    again. The result reports every answer they and ``text`` brought.

    Args:
        state: the state the bot saved last.
        missed: the seller's messages since then, oldest first, before ``text``.
        text: the message to answer.
        now: when it arrived (timezone-aware).
    """
    current = state
    new: list[str] = []
    corrected: list[str] = []
    for earlier in missed:
        step = advance(current, earlier, now)
        new += [n for n in step.new if n not in new]
        corrected += [c for c in step.corrected if c not in corrected]
        current = step.state
    if missed:
        pending = pending_question(current)
        current = current.model_copy(
            update={
                "stage": "QUALIFIED" if pending is None else pending,
                "turns_without_progress": 0 if new or corrected else state.turns_without_progress,
                "handoff_requested": state.handoff_requested,
            }
        )
    last = advance(current, text, now)
    new += [n for n in last.new if n not in new]
    corrected += [c for c in last.corrected if c not in corrected and c not in new]
    if (new or corrected) and not last.progressed and last.state.stage != "QUALIFIED":
        # the catch-up made progress even if this message alone did not
        pending = pending_question(last.state)
        last.state.stage = pending or "QUALIFIED"
        last.state.turns_without_progress = 0
    return TurnResult(state, last.state, tuple(new), tuple(corrected), last.handoff, last.asked)


def salvage(value: Any) -> SellerState:
    """Return the state in ``value``, dropping the fields that do not parse (never failing).

    A state edited by hand may hold ``"about 450k"`` as the price: the bot still answers (and
    asks again), and the dashboard shows the problem until the field is fixed or re-asked.
    """
    data = dict(value) if isinstance(value, dict) else {}
    for _ in range(len(data) + 1):
        try:
            return SellerState.model_validate(data)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if not bad & data.keys():
                break
            for key in bad:
                data.pop(key, None)
    return SellerState()


def _answered(state: SellerState, stage: str) -> bool:
    if stage == "Q1":
        return state.condition is not None
    if stage == "Q2":
        return state.price_expectation is not None
    if stage == "Q3":
        return state.motivation is not None
    return state.timeline_days is not None and state.cash_offer_ok is not None


# ---- phrasing -----------------------------------------------------------------------------

_LABELS: Final = {
    "condition": "condition",
    "price_expectation": "price",
    "motivation": "reason for selling",
    "timeline_days": "timeline",
    "cash_offer_ok": "cash offer",
}
_CONDITIONS: Final = {
    "poor": "in poor shape",
    "needs_work": "needs work",
    "fair": "in fair shape",
    "good": "in good shape",
    "excellent": "in excellent shape",
}

_MOTIVATION_LABELS: Final = {
    "relocation": "relocating",
    "divorce": "divorce",
    "inherited": "an inherited property",
    "financial": "financial pressure",
    "downsizing": "downsizing",
    "upsizing": "needing a bigger place",
    "retirement": "retirement",
    "health": "health",
    "landlord": "tired of being a landlord",
    "curious": "just curious",
    "other": "your own reasons",
}


def _days(days: int) -> str:
    if days % 365 == 0:
        years = days // 365
        return "a year" if years == 1 else f"{years} years"
    if days >= 60 and days % 30 == 0:
        return f"{days // 30} months"
    if days >= 14 and days % 7 == 0:
        return f"{days // 7} weeks"
    return "a day" if days == 1 else f"{days} days"


def _value(state: SellerState, name: str) -> str:
    if name == "condition":
        text = _CONDITIONS.get(state.condition or "", str(state.condition))
        if state.condition_issues:
            text += f" ({', '.join(state.condition_issues)})"
        return text
    if name == "price_expectation":
        return f"${state.price_expectation:,}"
    if name == "motivation":
        return _MOTIVATION_LABELS.get(state.motivation or "", str(state.motivation))
    if name == "timeline_days":
        return f"within {_days(state.timeline_days or 0)}"
    return "fine" if state.cash_offer_ok else "not wanted"


def _question(state: SellerState, stage: str) -> str:
    if stage == "Q1":
        return "What condition is the property in? Any repairs it needs, like the roof?"
    if stage == "Q2":
        return "What price are you hoping to get for it?"
    if stage == "Q3":
        return "What's making you think about selling?"
    if state.timeline_days is None and state.cash_offer_ok is None:
        return (
            "How soon would you like to sell, and would a cash offer in that timeline work for you?"
        )
    if state.timeline_days is None:
        return "How soon would you like to sell?"
    within = _days(state.timeline_days)
    return f"If we made you a cash offer to close within {within}, would that work?"


def _known(state: SellerState) -> list[str]:
    return [f"{_LABELS[n]} {_value(state, n)}" for n in FIELDS if getattr(state, n) is not None]


def _answer_after(turn: TurnResult) -> str:
    """What the bot says to a qualified seller: an answer to what they asked."""
    state = turn.state
    within = f"within {_days(state.timeline_days)}" if state.timeline_days else "on your timeline"
    if turn.asked == "schedule":
        if state.visit_time and state.visit_time != turn.before.visit_time:
            return (
                f"Noted: {state.visit_time} suits you for the visit. I've passed it on; the "
                "specialist will confirm it here."
            )
        return (
            "The specialist will arrange a short visit to see the property. What day and time "
            "suit you?"
        )
    if turn.asked == "offer":
        if state.cash_offer_ok is False:
            return (
                "You said a cash offer isn't for you; the specialist can also talk you through "
                "listing at full market value. Would you like that?"
            )
        return (
            f"A cash offer is a firm price with no repairs, showings or financing to wait for, "
            f"closing {within}. The specialist makes it in writing after a short visit, and you "
            f"can weigh it against your {_value(state, 'price_expectation')}; there's no "
            "obligation. Shall I ask them to set up the visit?"
        )
    if turn.asked == "next":
        return (
            f"Next: a specialist reviews what you told me ({'; '.join(_known(state))}), "
            "contacts you here within one business day to arrange a visit, and after it you "
            "get a written offer, with no obligation. What day and time would suit you for "
            "the visit?"
        )
    if turn.asked == "thanks":
        return (
            "You're welcome! A specialist will be in touch here. If anything changes, like "
            "your price or timeline, just tell me."
        )
    if turn.progressed:
        return "I've passed that on to the specialist."
    return (
        "I'm not sure I understood. I can help with arranging the visit, how the cash offer "
        'works, or what happens next; or say "talk to a human" to reach a person.'
    )


_BEFORE_QUALIFIED: Final = {
    "schedule": "A specialist will arrange a visit once I have a few details.",
    "offer": "A specialist makes the offer after a short visit; first, a few details.",
    "next": (
        "Once you've answered a few quick questions, a specialist contacts you to see the "
        "property and make an offer."
    ),
    "thanks": "You're welcome!",
}


def compose_reply(turn: TurnResult) -> str:
    """Return the bot's own reply to a turn: what it noted, then the next question.

    After qualification it answers what the seller asks (a visit, the cash offer, what happens
    next); before, it answers in a sentence and asks the pending question. A returning
    contact is greeted with what the bot still knows.

    Args:
        turn: the result of ``advance``.
    """
    state = turn.state
    parts: list[str] = []
    known = _known(turn.before)
    if turn.before.stage == "Q0" and known:
        parts.append(f"Welcome back! From last time I have: {'; '.join(known)}.")
    elif turn.before.stage == "Q0":
        parts.append("Hi! I can help you sell your home; I have four quick questions.")
    noted = [f"{_LABELS[n]} {_value(state, n)}" for n in turn.new]
    if noted:
        parts.append(f"Noted: {'; '.join(noted)}.")
    for name in turn.corrected:
        parts.append(f"Updated your {_LABELS[name]} to {_value(state, name)}.")
    pending = pending_question(state)
    if pending is None:
        if turn.before.stage != "QUALIFIED":
            summary = "; ".join(f"{_LABELS[n]} {_value(state, n)}" for n in FIELDS)
            parts.append(
                f"Thank you, that's everything I need: {summary}. A specialist will reach out "
                "shortly with an offer."
            )
        else:
            parts.append(_answer_after(turn))
    elif state.stage == "STALLED":
        parts.append(
            f"No problem, take your time. Whenever you're ready: {_question(state, pending)} "
            'You can also say "talk to a human" to reach a person.'
        )
    else:
        if turn.asked is not None and not turn.progressed:
            parts.append(_BEFORE_QUALIFIED[turn.asked])
        elif not turn.progressed and turn.before.stage != "Q0":
            parts.append("Sorry, I didn't quite catch that.")
        parts.append(_question(state, pending))
    return " ".join(parts)


# ---- contact memory -----------------------------------------------------------------------

#: The contact facts of the seller's answers are named ``seller.<field>``.
FACT_PREFIX: Final = "seller."
_REMEMBERED: Final = (*FIELDS, "condition_issues")


async def recall_seller(store: AsyncStore, conv: Conversation) -> SellerState:
    """Return a fresh state holding what the contact told the bot before (its facts)."""
    facts = await store.recall(conv.contact_id, tenant=conv.tenant)
    known = {
        f.key.removeprefix(FACT_PREFIX): f.value
        for f in facts
        if f.key.startswith(FACT_PREFIX) and f.key.removeprefix(FACT_PREFIX) in _REMEMBERED
    }
    state = salvage(known)
    state.answered = [q for q in ("Q1", "Q2", "Q3", "Q4") if _answered(state, q)]
    state.temperature = score_temperature(state)
    return state


async def remember_seller(store: AsyncStore, conv: Conversation, turn: TurnResult) -> None:
    """Keep the answers this turn brought as contact facts (``high`` tier: 30 days)."""
    changed = {*turn.new, *turn.corrected}
    if "condition" in changed:
        changed.add("condition_issues")
    for name in sorted(changed):
        await store.remember(
            conv.contact_id,
            FACT_PREFIX + name,
            getattr(turn.state, name),
            tenant=conv.tenant,
            tier="high",
        )


# ---- the bot ------------------------------------------------------------------------------


class SellerBot:
    """Qualifies a home seller; the default bot of ``POST /v1/chat``.

    The state is a SellerState saved with ``expected_version`` (on a conflict the message is
    applied once more to the newer state); the conversation's stage follows the state's; a
    request for a person moves the conversation to ``waiting_agent``, where the bot is silent.
    """

    #: The state this bot keeps; the service validates dashboard edits against it.
    state_model = SellerState

    def __init__(self, *, phraser: LLMPhraser | None = None) -> None:
        """Create the bot.

        Args:
            phraser: rewords the replies with an LLM; None keeps the bot's own words.
        """
        self.phraser = phraser

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SellerBot:
        """Return a bot that uses the LLM when ``ANTHROPIC_API_KEY`` is set.

        Args:
            environ: the variables to read (default: ``os.environ``); see LLMPhraser.from_env.
        """
        return cls(phraser=LLMPhraser.from_env(environ))

    async def respond(
        self, store: AsyncStore, conversation: Conversation, message: Message
    ) -> str | None:
        """Answer one seller message (already stored); None while a person handles the chat.

        Args:
            store: the store holding the conversation.
            conversation: the conversation (its status and stage are read again here).
            message: the seller's message.

        Returns:
            The reply, or None when the conversation waits for or is closed by an agent.

        Raises:
            ConversationNotFound: the conversation is gone.
            StateConflict: the state changed under the bot twice in a row.
        """
        tenant = conversation.tenant
        conv = await store.get(conversation.id, tenant=tenant)
        if conv.status in (Status.WAITING_AGENT, Status.CLOSED) or message.role != "user":
            return None
        turn = await self._advance(store, conv, message)
        await remember_seller(store, conv, turn)
        # The bot moves the stage only from a stage it set: a person's stage stays.
        if conv.stage in (None, turn.before.stage) and conv.stage != turn.state.stage:
            await store.set_stage(conv.id, turn.state.stage, tenant=tenant)
        if turn.handoff:
            await store.set_status(conv.id, Status.WAITING_AGENT, tenant=tenant)
            return HANDOFF_REPLY
        draft = compose_reply(turn)
        if self.phraser is None:
            return draft
        context = await store.context(
            conv.id, format="anthropic", token_budget=_LLM_BUDGET, tenant=tenant
        )
        return await self.phraser.rephrase(draft, message.content, context=context) or draft

    async def _advance(self, store: AsyncStore, conv: Conversation, message: Message) -> TurnResult:
        for attempt in range(2):
            snap = await store.load_state(conv.id, tenant=conv.tenant)
            # A new conversation starts from what the contact told us before (contact facts).
            state = salvage(snap.value) if snap.version else await recall_seller(store, conv)
            missed = await self._missed(store, conv, state, message)
            turn = catch_up(state, missed, message.content, message.created_at)
            turn.state.last_seq = message.seq
            try:
                await store.save_state(
                    conv.id, turn.state, expected_version=snap.version, tenant=conv.tenant
                )
            except StateConflict:
                if attempt:
                    raise
                continue
            return turn
        raise AssertionError("unreachable")  # pragma: no cover

    async def _missed(
        self, store: AsyncStore, conv: Conversation, state: SellerState, message: Message
    ) -> list[str]:
        """The seller's messages the bot has not read (sent while a person had the chat)."""
        if not state.last_seq or message.seq <= state.last_seq + 1:
            return []
        # Usually just the bot's own last reply and this message: one short read.
        since = await store.messages(
            conv.id, after=state.last_seq, limit=MAX_CATCH_UP + 2, tenant=conv.tenant
        )
        missed = [m.content for m in since if m.role == "user" and m.seq < message.seq]
        return missed[:MAX_CATCH_UP]
