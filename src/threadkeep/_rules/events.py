"""Event kinds and payload builders (a status change's event is built by ``lifecycle``).

Payloads carry ids, sequence numbers, roles and statuses, never message content, so an erased
conversation leaves nothing readable in the log; erasure events say only that it happened.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Final, TypeAlias

__all__ = [
    "EventKind",
    "NewEvent",
    "data_json",
    "deleted",
    "message_appended",
    "message_popped",
    "message_delivery",
    "messages_cleared",
    "messages_replaced",
    "stage_changed",
    "started",
    "state_saved",
]


class EventKind(StrEnum):
    """The kinds of change the log records."""

    STARTED = "conversation.started"
    MESSAGE_APPENDED = "message.appended"
    STATUS_CHANGED = "status.changed"
    STAGE_CHANGED = "stage.changed"
    STATE_SAVED = "state.saved"
    CLOSED = "conversation.closed"
    DELETED = "conversation.deleted"
    MESSAGE_POPPED = "message.popped"
    MESSAGES_CLEARED = "messages.cleared"
    MESSAGES_REPLACED = "messages.replaced"
    AGENT_ASSIGNED = "agent.assigned"
    RETENTION_CHANGED = "retention.changed"
    MESSAGE_DELIVERY = "message.delivery"


#: An event to append to the log: its kind and its data (the backend adds id, tenant, time).
NewEvent: TypeAlias = tuple[str, dict[str, Any]]


def started(contact_id: str, status: str, stage: str | None) -> NewEvent:
    """Return the event of a new conversation."""
    return EventKind.STARTED.value, {"contact_id": contact_id, "status": status, "stage": stage}


_APPENDED = EventKind.MESSAGE_APPENDED.value  # read once: an enum's .value is a slow property


def message_appended(seq: int, role: str) -> NewEvent:
    """Return the event of an appended message (no content)."""
    return _APPENDED, {"seq": seq, "role": role}


def message_popped(seq: int, role: str) -> NewEvent:
    """Return the event of the newest message removed by ``pop_last`` (no content)."""
    return EventKind.MESSAGE_POPPED.value, {"seq": seq, "role": role}


def message_delivery(seq: int, state: str) -> NewEvent:
    """Return the event of a message's new delivery state (no content)."""
    return EventKind.MESSAGE_DELIVERY.value, {"seq": seq, "state": state}


def messages_cleared(removed: int, last_seq: int) -> NewEvent:
    """Return the event of ``clear_messages``: how many went, up to which seq."""
    return EventKind.MESSAGES_CLEARED.value, {"removed": removed, "last_seq": last_seq}


def messages_replaced(removed: int, first_seq: int, last_seq: int) -> NewEvent:
    """Return the event of ``replace_messages``: how many went, and the new seq range."""
    data = {"removed": removed, "first_seq": first_seq, "last_seq": last_seq}
    return EventKind.MESSAGES_REPLACED.value, data


def stage_changed(old: str | None, new: str | None) -> NewEvent:
    """Return the event of a stage change."""
    return EventKind.STAGE_CHANGED.value, {"from": old, "to": new}


def agent_assigned(old: str | None, new: str | None) -> NewEvent:
    """Return the event of a change of the conversation's agent."""
    return EventKind.AGENT_ASSIGNED.value, {"from": old, "to": new}


def retention_changed(expires_us: int | None) -> NewEvent:
    """Return the event of a new retention: when the conversation now expires (µs; None)."""
    return EventKind.RETENTION_CHANGED.value, {"expires_us": expires_us}


def state_saved(version: int) -> NewEvent:
    """Return the event of a saved state version (no state content)."""
    return EventKind.STATE_SAVED.value, {"version": version}


def deleted() -> NewEvent:
    """Return the erasure event: that a deletion happened, nothing of what was deleted."""
    return EventKind.DELETED.value, {}


#: A payload as the compact JSON text backends store (one encoder for every call: json.dumps
#: with ``separators`` builds a new one each time).
data_json: Final = json.JSONEncoder(separators=(",", ":")).encode
