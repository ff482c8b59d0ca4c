"""Turning backend rows and outcome codes into models or exceptions, in one place."""

from __future__ import annotations

import base64
import binascii
import json
from typing import cast

from threadkeep._config import Tier
from threadkeep._exceptions import (
    ConversationClosed,
    ConversationNotFound,
    IllegalTransition,
    InvalidInput,
    StateConflict,
    TurnInProgress,
)
from threadkeep._models import Conversation, Event, Fact, Message, Page
from threadkeep._rules.events import EventKind
from threadkeep._rules.lifecycle import TRANSITIONS, Status
from threadkeep._rules.ops import (
    AppendResult,
    ConvRow,
    EventRow,
    FactRow,
    MsgRow,
    Outcome,
    StateResult,
    UpdateResult,
)
from threadkeep._rules.times import from_us

_STATUSES = {s.value: s for s in Status}
_KINDS = {k.value: k for k in EventKind}

__all__ = [
    "decode_cursor",
    "encode_cursor",
    "finish_append",
    "finish_conversation",
    "finish_event",
    "finish_fact",
    "finish_message",
    "finish_page",
    "finish_state",
    "finish_update",
    "require",
]


def require(row: ConvRow | None, conversation_id: str) -> ConvRow:
    """Return ``row``, or raise ConversationNotFound when the backend found none.

    Raises:
        ConversationNotFound: when ``row`` is None.
    """
    if row is None:
        raise ConversationNotFound(conversation_id)
    return row


def finish_conversation(row: ConvRow, created: bool = False) -> Conversation:
    """Return the public model of a conversation row (``created``: this call made it)."""
    return Conversation(
        id=row.id,
        tenant=row.tenant,
        contact_id=row.contact_id,
        agent_id=row.agent_id,
        channel=row.channel,
        status=_STATUSES[row.status],
        stage=row.stage,
        metadata=json.loads(row.metadata_json),
        created_at=from_us(row.created_us),
        last_activity_at=from_us(row.activity_us),
        expires_at=None if row.expires_us is None else from_us(row.expires_us),
        message_count=row.message_count,
        state_version=row.state_version,
        created=created,
    )


def finish_message(row: MsgRow, replayed: bool = False) -> Message:
    """Return the public model of a message row (``replayed``: a stored one returned again)."""
    return Message(
        conversation_id=row.conversation_id,
        seq=row.seq,
        role=row.role,
        content=row.content,
        created_at=from_us(row.created_us),
        metadata={} if row.metadata_json == "{}" else json.loads(row.metadata_json),
        idempotency_key=row.idempotency_key,
        replayed=replayed,
    )


def finish_event(row: EventRow) -> Event:
    """Return the public model of an event row."""
    return Event(
        id=row.id,
        kind=_KINDS[row.kind],
        tenant=row.tenant,
        conversation_id=row.conversation_id,
        data=json.loads(row.data_json),
        at=from_us(row.at_us),
    )


def finish_fact(row: FactRow) -> Fact:
    """Return the public model of a fact row."""
    return Fact(
        key=row.key,
        value=json.loads(row.value_json),
        tier=cast(Tier, row.tier),
        updated_at=from_us(row.updated_us),
        expires_at=from_us(row.expires_us),
    )


def finish_append(result: AppendResult, conversation_id: str) -> Message:
    """Return the appended (or replayed) message, or raise what the outcome means.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        ConversationClosed: the conversation is closed.
        TurnInProgress: the append was fenced by a turn lease that is no longer current.
    """
    if result.outcome is Outcome.NOT_FOUND:
        raise ConversationNotFound(conversation_id)
    if result.outcome is Outcome.CLOSED:
        raise ConversationClosed(conversation_id)
    if result.outcome is Outcome.FENCED:
        raise TurnInProgress(
            conversation_id,
            f"the turn lease on conversation {conversation_id!r} ran out and was taken by "
            "another worker; this reply was not stored",
        )
    assert result.message is not None, result
    return finish_message(result.message, replayed=result.outcome is Outcome.DUPLICATE)


def finish_update(result: UpdateResult, conversation_id: str, target: str | None) -> Conversation:
    """Return the updated conversation, or raise what the outcome means.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        ConversationClosed: a stage change on a closed conversation.
        IllegalTransition: the lifecycle forbids the status change.
    """
    if result.outcome is Outcome.NOT_FOUND:
        raise ConversationNotFound(conversation_id)
    if result.outcome is Outcome.CLOSED:
        raise ConversationClosed(conversation_id)
    if result.outcome is Outcome.ILLEGAL:
        current = Status(result.current or "")
        raise IllegalTransition(
            conversation_id, current.value, str(target), (s.value for s in TRANSITIONS[current])
        )
    assert result.row is not None, result
    return finish_conversation(result.row)


def finish_state(result: StateResult, conversation_id: str, expected: int | None) -> int:
    """Return the saved state version, or raise what the outcome means.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        StateConflict: ``expected`` was not the current version.
        InvalidInput: a rollback to a version that is not kept.
    """
    if result.outcome is Outcome.NOT_FOUND:
        raise ConversationNotFound(conversation_id)
    if result.outcome is Outcome.CONFLICT:
        raise StateConflict(conversation_id, expected or 0, result.current)
    if result.outcome is Outcome.NO_VERSION:
        raise InvalidInput(
            f"state version {expected} of conversation {conversation_id!r} is not kept; "
            f"the current version is {result.current} and only the last versions are kept",
            field="to_version",
        )
    return result.version


def encode_cursor(row: ConvRow) -> str:
    """Return the opaque keyset cursor that continues after ``row``."""
    raw = json.dumps([row.activity_us, row.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Return the (activity_us, id) keyset position of a cursor.

    Raises:
        InvalidInput: when the cursor was not made by ``encode_cursor``.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        activity, conv_id = json.loads(raw)
        if not isinstance(activity, int) or not isinstance(conv_id, str):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInput(
            f"cursor {cursor!r} is malformed; pass the next_cursor of a previous page",
            field="cursor",
        ) from None
    return activity, conv_id


def finish_page(rows: list[ConvRow], limit: int) -> Page[Conversation]:
    """Return a page of ``limit`` conversations; the backend fetched one more to tell."""
    items = [finish_conversation(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items=items, next_cursor=encode_cursor(rows[limit - 1]) if more else None)
