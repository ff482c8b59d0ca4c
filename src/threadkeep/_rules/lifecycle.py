"""Conversation lifecycle.

Law: every status rule lives in this file, as tables and the few functions that read them;
backends receive preconditions (the statuses a change may start from, the status a message
moves to), never rules. ``decide`` and the Lua scripts apply them.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from threadkeep._exceptions import InvalidInput
from threadkeep._rules.events import EventKind, NewEvent
from threadkeep._rules.ops import Outcome

__all__ = [
    "IDLE_FROM",
    "ON_MESSAGE",
    "ON_MESSAGE_VALUES",
    "OPEN",
    "STAGE_FROM",
    "TRANSITIONS",
    "Status",
    "change_kind",
    "check_status",
    "sources_for",
    "status_changed",
    "status_verdict",
]


class Status(StrEnum):
    """The statuses of a conversation."""

    NEW = "new"
    ACTIVE = "active"
    IDLE = "idle"
    WAITING_AGENT = "waiting_agent"
    CLOSED = "closed"


#: Explicit status changes (set_status / close_conversation / sweep) allowed from each status.
#: Setting the status a conversation already has is always allowed and changes nothing.
TRANSITIONS: Final = MappingProxyType(
    {
        Status.NEW: frozenset({Status.ACTIVE, Status.WAITING_AGENT, Status.CLOSED}),
        Status.ACTIVE: frozenset({Status.IDLE, Status.WAITING_AGENT, Status.CLOSED}),
        Status.IDLE: frozenset({Status.ACTIVE, Status.WAITING_AGENT, Status.CLOSED}),
        Status.WAITING_AGENT: frozenset({Status.ACTIVE, Status.CLOSED}),
        Status.CLOSED: frozenset(),
    }
)

#: What a new message does to the status; a status missing here (closed) refuses messages.
ON_MESSAGE: Final = MappingProxyType(
    {
        Status.NEW: Status.ACTIVE,
        Status.ACTIVE: Status.ACTIVE,
        Status.IDLE: Status.ACTIVE,
        Status.WAITING_AGENT: Status.WAITING_AGENT,
    }
)

#: ON_MESSAGE as plain strings, the form ops carry to backends.
ON_MESSAGE_VALUES: Final = MappingProxyType({k.value: v.value for k, v in ON_MESSAGE.items()})

#: Statuses that make a conversation the contact's open one (find_open / resume).
OPEN: Final = frozenset(s for s in Status if s is not Status.CLOSED)

#: Statuses that sweep() turns idle after ``idle_after`` without activity (time-driven only).
IDLE_FROM: Final = (Status.ACTIVE,)

#: Statuses in which the stage may change: a closed conversation keeps its last stage.
STAGE_FROM: Final = tuple(sorted(s.value for s in OPEN))


def check_status(value: object) -> Status:
    """Return ``value`` as a Status.

    Raises:
        InvalidInput: when it is not one of the statuses.
    """
    try:
        return Status(str(value))
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise InvalidInput(
            f"unknown status {value!r}; allowed: {allowed}", field="status"
        ) from None


def sources_for(target: Status) -> tuple[str, ...]:
    """Return the statuses from which ``target`` may be set (itself included, as a no-op)."""
    return tuple(
        sorted(
            {s.value for s, targets in TRANSITIONS.items() if target in targets} | {target.value}
        )
    )


def status_verdict(current: str, target: str, allowed_from: Collection[str]) -> Outcome | None:
    """Judge a status change: UNCHANGED, ILLEGAL, or None when it is to be made.

    ``allowed_from`` is what ``sources_for(target)`` gave the op.
    """
    if current == target:
        return Outcome.UNCHANGED
    if current not in allowed_from:
        return Outcome.ILLEGAL
    return None


def change_kind(target: str) -> EventKind:
    """Return the event kind of a change to ``target``: closing is its own kind."""
    return EventKind.CLOSED if target == Status.CLOSED else EventKind.STATUS_CHANGED


def status_changed(old: str, new: str) -> NewEvent:
    """Return the event of a status change."""
    return change_kind(new).value, {"from": old, "to": new}
