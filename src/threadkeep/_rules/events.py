"""Event kinds and payload builders.

Payloads carry ids, sequence numbers, roles and statuses, never message content, so an erased
conversation leaves nothing readable in the log; erasure events say only that it happened.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "EventKind",
    "deleted",
    "message_appended",
    "stage_changed",
    "started",
    "state_saved",
    "status_changed",
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


def started(contact_id: str, status: str, stage: str | None) -> tuple[str, dict[str, Any]]:
    """Return the event of a new conversation."""
    return EventKind.STARTED.value, {"contact_id": contact_id, "status": status, "stage": stage}


def message_appended(seq: int, role: str) -> tuple[str, dict[str, Any]]:
    """Return the event of an appended message (no content)."""
    return EventKind.MESSAGE_APPENDED.value, {"seq": seq, "role": role}


def status_changed(old: str, new: str) -> tuple[str, dict[str, Any]]:
    """Return the event of a status change; closing is its own kind."""
    kind = EventKind.CLOSED if new == "closed" else EventKind.STATUS_CHANGED
    return kind.value, {"from": old, "to": new}


def stage_changed(old: str | None, new: str | None) -> tuple[str, dict[str, Any]]:
    """Return the event of a stage change."""
    return EventKind.STAGE_CHANGED.value, {"from": old, "to": new}


def state_saved(version: int) -> tuple[str, dict[str, Any]]:
    """Return the event of a saved state version (no state content)."""
    return EventKind.STATE_SAVED.value, {"version": version}


def deleted() -> tuple[str, dict[str, Any]]:
    """Return the erasure event: that a deletion happened, nothing of what was deleted."""
    return EventKind.DELETED.value, {}
