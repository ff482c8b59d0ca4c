"""Guidance for a conversation's current stage, computed by pure rules (``compute``).

Inputs are what the store holds: the conversation, its state (a JSON object), the contact's
facts and the recent messages. The rules:

- A field's value comes from the conversation's state, else from the contact's facts (state
  wins: it is this conversation's); ``conversation.<field>`` reads the conversation itself.
- A key question is unanswered while its field is not set (a question with no field is always
  shown); a transition criterion is met or missing by ``Criterion.met``.
- An objection is seen when one of its triggers appears in one of the last ``RECENT`` messages
  from the contact (``user`` role), newest first.
- Three suggested replies: the replies to the objections seen, then the unanswered questions,
  then the stage's ready-made replies, without repeats.

``reword`` may then ask an LLM to reword the suggestions; any failure keeps the rules' words.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from threadkeep import Conversation, Fact, Message
from threadkeep.bot._llm import LLMPhraser
from threadkeep.playbooks.model import (
    CONVERSATION_FIELDS,
    Criterion,
    Playbook,
    Stage,
    is_set,
    resolve,
)

__all__ = [
    "RECENT",
    "SUGGESTIONS",
    "CriterionStatus",
    "FactView",
    "Guidance",
    "ObjectionSeen",
    "QuestionView",
    "Suggestion",
    "compute",
    "guidance_phraser",
    "reword",
]

#: How many of the newest messages are searched for objections.
RECENT: Final = 10

#: How many replies are suggested.
SUGGESTIONS: Final = 3

_SYSTEM: Final = (
    "You reword a reply a real-estate agent may send to a lead. Keep every question, number and "
    "fact exactly; add no new questions, numbers, promises or facts. Warm and brief: at most two "
    "short sentences. Reply with the reworded message only."
)
_PROMPT: Final = "The lead said: {said}\n\nReword this reply: {draft}"

Source = Literal["state", "fact", "conversation"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class QuestionView(_Frozen):
    """A key question of the stage, with whether the state answers it."""

    ask: str
    field: str | None
    why: str
    answered: bool


class CriterionStatus(_Frozen):
    """One transition criterion, met or missing, with the value it read."""

    when: str
    label: str
    field: str
    met: bool
    value: Any = None
    source: Source | None = None


class ObjectionSeen(_Frozen):
    """An objection found in a recent message, with how to handle it."""

    id: str
    handling: str
    reply: str
    seq: int
    excerpt: str


class Suggestion(_Frozen):
    """A reply the agent may send; ``kind`` says which rule proposed it."""

    text: str
    kind: Literal["objection", "question", "reply"]
    ref: str | None = None


class FactView(_Frozen):
    """A fact about the contact, as the guidance shows it."""

    key: str
    value: Any
    tier: str
    updated_at: datetime
    expires_at: datetime
    source: dict[str, Any] | None = None


class Guidance(_Frozen):
    """What to do next in a conversation, for its current stage.

    Attributes:
        conversation_id: the conversation.
        playbook: the playbook's name.
        stage: the stage the guidance is for (the conversation's, or the first one).
        stage_name: its display name.
        known_stage: False when the conversation's stage is not in the playbook (the guidance
            is then for the first stage).
        objectives: what the stage must achieve.
        questions: every key question, each with whether it is answered.
        unanswered: the key questions not yet answered, in order.
        objections: objections seen in the recent messages, newest first.
        critical_actions: what must not be forgotten.
        success_metrics: how to tell the stage went well.
        criteria_met: transition criteria already met.
        criteria_missing: transition criteria still missing.
        next_stage: the stage that follows (None after a final stage).
        next_stage_name: its display name.
        ready: whether every criterion is met and there is a next stage.
        suggestions: three replies the agent may send.
        facts: the contact's facts.
        state_version: the state version read.
        last_seq: the seq of the newest message read (0: none).
        reworded: whether an LLM reworded the suggestions.
    """

    conversation_id: str
    playbook: str
    stage: str
    stage_name: str
    known_stage: bool
    objectives: list[str]
    questions: list[QuestionView]
    unanswered: list[QuestionView]
    objections: list[ObjectionSeen]
    critical_actions: list[str]
    success_metrics: list[str]
    criteria_met: list[CriterionStatus]
    criteria_missing: list[CriterionStatus]
    next_stage: str | None
    next_stage_name: str | None
    ready: bool
    suggestions: list[Suggestion]
    facts: list[FactView]
    state_version: int
    last_seq: int
    reworded: bool = False


def _values(
    conversation: Conversation, state: Any, facts: Sequence[Fact]
) -> tuple[dict[str, Any], dict[str, Source]]:
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for fact in facts:
        values[fact.key] = fact.value
        sources[fact.key] = "fact"
    if isinstance(state, Mapping):
        for key, value in state.items():
            if is_set(value) or key not in values:
                values[key] = value
                sources[key] = "state"
    values["conversation"] = {name: getattr(conversation, name) for name in CONVERSATION_FIELDS}
    sources["conversation"] = "conversation"
    return values, sources


def _label(playbook: Playbook, criterion: Criterion) -> str:
    """Return a criterion's label, or say it with the field's label when it has none."""
    if criterion.label != criterion.when:
        return criterion.label
    name = next((f.label for f in playbook.fields if f.name == criterion.field and f.label), None)
    if name is None:
        return criterion.label
    if criterion.op in _SAID:
        return f"{name}{_SAID[criterion.op]}"
    return f"{name} {criterion.op} {json.dumps(criterion.value)}"


_SAID: Final = {"set": " known", "unset": " not known", "true": ": yes", "false": ": no"}


def _excerpt(text: str, start: int, end: int, width: int = 40) -> str:
    left = max(0, start - width)
    right = min(len(text), end + width)
    return ("…" if left else "") + text[left:right].strip() + ("…" if right < len(text) else "")


def _objections(stage: Stage, messages: Sequence[Message]) -> list[ObjectionSeen]:
    recent = [m for m in messages[-RECENT:] if m.role == "user"]
    seen: list[ObjectionSeen] = []
    for objection in stage.objections:
        pattern = objection.pattern()
        for message in reversed(recent):
            match = pattern.search(" ".join(message.content.split()))
            if match:
                text = " ".join(message.content.split())
                seen.append(
                    ObjectionSeen(
                        id=objection.id,
                        handling=objection.handling,
                        reply=objection.reply,
                        seq=message.seq,
                        excerpt=_excerpt(text, match.start(), match.end()),
                    )
                )
                break
    return sorted(seen, key=lambda o: -o.seq)


def _suggestions(
    stage: Stage, objections: Sequence[ObjectionSeen], unanswered: Sequence[QuestionView]
) -> list[Suggestion]:
    candidates = [
        Suggestion(text=o.reply or o.handling, kind="objection", ref=o.id) for o in objections
    ]
    candidates += [Suggestion(text=q.ask, kind="question", ref=q.field) for q in unanswered]
    candidates += [Suggestion(text=r, kind="reply") for r in stage.replies]
    out: list[Suggestion] = []
    for candidate in candidates:
        if all(candidate.text != s.text for s in out):
            out.append(candidate)
    return out[:SUGGESTIONS]


def compute(
    playbook: Playbook,
    conversation: Conversation,
    *,
    state: Any = None,
    state_version: int = 0,
    facts: Sequence[Fact] = (),
    messages: Sequence[Message] = (),
) -> Guidance:
    """Return the guidance for the conversation's current stage (pure: no I/O, no clock).

    Args:
        playbook: the playbook the conversation follows.
        conversation: the conversation (its stage picks the playbook stage).
        state: its state as plain JSON (a dict), or None.
        state_version: the version of that state.
        facts: the contact's live facts.
        messages: the recent messages, oldest first.
    """
    stage = playbook.stage(conversation.stage)
    known = stage is not None
    stage = stage or playbook.stages[0]
    values, sources = _values(conversation, state, facts)
    questions = [
        QuestionView(
            ask=q.ask,
            field=q.field,
            why=q.why,
            answered=q.field is not None and is_set(resolve(values, q.field)),
        )
        for q in stage.key_questions
    ]
    statuses = []
    for criterion in stage.transition.criteria:
        value = resolve(values, criterion.field)
        statuses.append(
            CriterionStatus(
                when=criterion.when,
                label=_label(playbook, criterion),
                field=criterion.field,
                met=criterion.met(values),
                value=value if is_set(value) or value is False or value == 0 else None,
                source=sources.get(criterion.field.split(".")[0]) if is_set(value) else None,
            )
        )
    unanswered = [q for q in questions if not q.answered]
    objections = _objections(stage, messages)
    next_stage = playbook.next_stage(stage)
    missing = [c for c in statuses if not c.met]
    return Guidance(
        conversation_id=conversation.id,
        playbook=playbook.name,
        stage=stage.id,
        stage_name=stage.name,
        known_stage=known,
        objectives=list(stage.objectives),
        questions=questions,
        unanswered=unanswered,
        objections=objections,
        critical_actions=list(stage.critical_actions),
        success_metrics=list(stage.success_metrics),
        criteria_met=[c for c in statuses if c.met],
        criteria_missing=missing,
        next_stage=next_stage.id if next_stage else None,
        next_stage_name=next_stage.name if next_stage else None,
        ready=next_stage is not None and not missing,
        suggestions=_suggestions(stage, objections, unanswered),
        facts=[
            FactView(
                key=f.key,
                value=f.value,
                tier=f.tier,
                updated_at=f.updated_at,
                expires_at=f.expires_at,
                source=getattr(f, "source", None),
            )
            for f in facts
        ],
        state_version=state_version,
        last_seq=messages[-1].seq if messages else 0,
    )


def guidance_phraser(environ: Mapping[str, str] | None = None) -> LLMPhraser | None:
    """Return an LLM phraser for suggestions when ``ANTHROPIC_API_KEY`` is set, else None.

    Reads the same variables as the demo bot (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``,
    ``ANTHROPIC_MODEL``, ``THREADKEEP_BOT_LLM_TIMEOUT``).

    Args:
        environ: the variables to read (default: ``os.environ``).
    """
    phraser = LLMPhraser.from_env(environ)
    if phraser is None:
        return None
    return dataclasses.replace(phraser, system=_SYSTEM, prompt=_PROMPT)


async def reword(guidance: Guidance, phraser: LLMPhraser, last_user_message: str) -> Guidance:
    """Return ``guidance`` with its suggestions reworded by the LLM, each kept when it fails.

    The LLM is asked for all suggestions at once (concurrently); a suggestion the LLM fails
    on, answers too slowly, or whose question it drops keeps the rules' words.

    Args:
        guidance: the rules' guidance.
        phraser: the LLM phraser (see ``guidance_phraser``).
        last_user_message: what the contact said last (for tone only).
    """
    answers = await asyncio.gather(
        *(phraser.rephrase(s.text, last_user_message) for s in guidance.suggestions)
    )
    suggestions = [
        s.model_copy(update={"text": text}) if text else s
        for s, text in zip(guidance.suggestions, answers, strict=True)
    ]
    changed = any(text for text in answers)
    return guidance.model_copy(update={"suggestions": suggestions, "reworded": changed})
