"""Operations the Store plans and backends carry out, and the rows backends return.

An op holds everything a backend needs: the time (``now_us``), the preconditions (which
statuses a change may start from), and the values to write. Backends never read the clock and
never decide a rule; they apply an op atomically and return rows or an outcome code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, NamedTuple

from threadkeep._rules import events as ev
from threadkeep._rules.retention import RetentionUs

__all__ = [
    "AppendOp",
    "AppendResult",
    "ConvRow",
    "CountsOp",
    "CountsRow",
    "DeleteContactOp",
    "DeleteOp",
    "EventRow",
    "EventsOp",
    "FactRow",
    "FindOpenOp",
    "GetOp",
    "LeaseOp",
    "LeaseResult",
    "ListOp",
    "LoadStateOp",
    "MsgRow",
    "Outcome",
    "ReadOp",
    "RecallOp",
    "ReleaseOp",
    "RememberOp",
    "SaveStateOp",
    "StartOp",
    "StateResult",
    "StateRow",
    "SweepOp",
    "SweepRow",
    "UpdateOp",
    "UpdateResult",
]


class Outcome(Enum):
    """What a backend did with an op."""

    OK = "ok"
    CREATED = "created"
    EXISTING = "existing"
    DUPLICATE = "duplicate"
    UNCHANGED = "unchanged"
    NOT_FOUND = "not_found"
    CLOSED = "closed"
    ILLEGAL = "illegal"
    CONFLICT = "conflict"
    NO_VERSION = "no_version"
    BUSY = "busy"
    FENCED = "fenced"


# ---- rows -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConvRow:
    """A conversation as stored. Times are microseconds since the epoch."""

    id: str
    tenant: str
    contact_id: str
    agent_id: str | None
    channel: str | None
    status: str
    stage: str | None
    metadata_json: str
    created_us: int
    activity_us: int
    expires_us: int | None
    idle_us: int
    message_count: int
    last_seq: int
    state_version: int
    retention: RetentionUs


class MsgRow(NamedTuple):
    """A message as stored."""

    conversation_id: str
    seq: int
    role: str
    content: str
    created_us: int
    metadata_json: str
    idempotency_key: str | None


class StateRow(NamedTuple):
    """A state version as stored."""

    version: int
    value_json: str
    saved_us: int


class EventRow(NamedTuple):
    """An event as stored; ``id`` is the backend's cursor text."""

    id: str
    kind: str
    tenant: str
    conversation_id: str
    data_json: str
    at_us: int


class FactRow(NamedTuple):
    """A contact-memory fact as stored."""

    key: str
    value_json: str
    tier: str
    updated_us: int
    expires_us: int


@dataclass(frozen=True, slots=True)
class CountsRow:
    """Live conversations of a tenant grouped by status and by stage."""

    by_status: dict[str, int]
    by_stage: dict[str, int]


@dataclass(frozen=True, slots=True)
class SweepRow:
    """How many things a sweep changed or would change."""

    idled: int
    purged: int
    facts_purged: int


# ---- ops --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartOp:
    """Create ``row`` (status new), or with ``resume`` return the contact's open one."""

    row: ConvRow
    resume: bool
    open_statuses: tuple[str, ...]
    events_kept: int


@dataclass(frozen=True, slots=True)
class GetOp:
    """Read one live conversation (``tenant`` None: any tenant)."""

    conversation_id: str
    tenant: str | None
    now_us: int


@dataclass(frozen=True, slots=True)
class FindOpenOp:
    """Find a contact's open conversation with the newest activity."""

    tenant: str
    contact_id: str
    open_statuses: tuple[str, ...]
    now_us: int


@dataclass(frozen=True, slots=True)
class AppendOp:
    """Append a message: next seq, status per ``on_message``, sliding expiry, one event.

    ``idempotency_key`` makes a replay return the stored message; ``fence`` (a turn token)
    makes the append fail with FENCED unless that lease is still the current, live one.
    """

    conversation_id: str
    tenant: str | None
    now_us: int
    role: str
    content: str
    metadata_json: str
    idempotency_key: str | None
    on_message: Mapping[str, str]
    fence: int | None
    events_kept: int


@dataclass(frozen=True, slots=True)
class ReadOp:
    """Read messages: the ``last`` N, or those after seq ``after`` (``limit`` at most).

    With ``window`` set, ``last`` is the conversation's own retention window.
    """

    conversation_id: str
    tenant: str | None
    now_us: int
    window: bool
    last: int | None
    after: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class UpdateOp:
    """Set ``status`` (allowed only from ``allowed_from``) or ``stage`` of a conversation."""

    conversation_id: str
    tenant: str | None
    now_us: int
    field: str  # "status" or "stage"
    value: str | None
    allowed_from: tuple[str, ...]
    events_kept: int


@dataclass(frozen=True, slots=True)
class SaveStateOp:
    """Save a new state version, compare-and-set on ``expected_version`` when given.

    With ``rollback_to`` set, the value is that stored version's (``value_json`` ignored).
    """

    conversation_id: str
    tenant: str | None
    now_us: int
    value_json: str
    expected_version: int | None
    rollback_to: int | None
    keep: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class LoadStateOp:
    """Load the current state version, or a given one."""

    conversation_id: str
    tenant: str | None
    now_us: int
    version: int | None


@dataclass(frozen=True, slots=True)
class ListOp:
    """A page of live conversations, newest activity first, after keyset ``cursor``."""

    tenant: str
    now_us: int
    status: str | None
    stage: str | None
    agent_id: str | None
    contact_id: str | None
    limit: int
    cursor: tuple[int, str] | None


@dataclass(frozen=True, slots=True)
class CountsOp:
    """Count a tenant's live conversations by status and stage."""

    tenant: str
    now_us: int


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Erase one conversation: messages, state, leases, its events; log one erasure event."""

    conversation_id: str
    tenant: str | None
    now_us: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class DeleteContactOp:
    """Erase every conversation and every fact of a contact."""

    tenant: str
    contact_id: str
    now_us: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class SweepOp:
    """Mark idle (``idle_from`` statuses past their idle time) and purge expired data."""

    now_us: int
    dry_run: bool
    idle_to: str
    idle_from: tuple[str, ...]
    batch: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class EventsOp:
    """Read up to ``limit`` events after ``after`` (None: the oldest retained)."""

    tenant: str | None
    after: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class LeaseOp:
    """Take the turn lease of a conversation until ``until_us`` if it is free or ran out."""

    conversation_id: str
    tenant: str | None
    now_us: int
    until_us: int


@dataclass(frozen=True, slots=True)
class ReleaseOp:
    """Give back a turn lease, only if ``token`` is still the current one."""

    conversation_id: str
    token: int


@dataclass(frozen=True, slots=True)
class RememberOp:
    """Store or replace a fact about a contact."""

    tenant: str
    contact_id: str
    key: str
    value_json: str
    tier: str
    now_us: int
    expires_us: int


@dataclass(frozen=True, slots=True)
class RecallOp:
    """Read a contact's live facts (one ``key`` or all)."""

    tenant: str
    contact_id: str
    key: str | None
    now_us: int


# ---- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of an append; ``message`` is set for OK and DUPLICATE."""

    outcome: Outcome
    message: MsgRow | None = None


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """Outcome of a status/stage update; ``current`` is the status found."""

    outcome: Outcome
    row: ConvRow | None = None
    current: str | None = None


@dataclass(frozen=True, slots=True)
class StateResult:
    """Outcome of a state save; ``version`` saved, or the ``current`` one on CONFLICT."""

    outcome: Outcome
    version: int = 0
    saved_us: int = 0
    current: int = 0


@dataclass(frozen=True, slots=True)
class LeaseResult:
    """Outcome of a lease request; ``token`` is the fencing token when OK."""

    outcome: Outcome
    token: int = 0


# ---- decisions every Python backend takes the same way, on the row it holds locked ----------


def touch(row: ConvRow, now_us: int, **changes: Any) -> ConvRow:
    """Return ``row`` with activity at ``now_us`` and its expiry and idle time slid from it."""
    return replace(
        row,
        activity_us=now_us,
        expires_us=row.retention.expires_at(now_us),
        idle_us=row.retention.idle_at(now_us),
        **changes,
    )


def decide_update(row: ConvRow, op: UpdateOp) -> UpdateResult | tuple[str, dict[str, Any]]:
    """Judge a status or stage update against the conversation's live row.

    Returns:
        The final result when nothing is to be written (unchanged, illegal, closed), else the
        event to write together with the change.
    """
    if op.field == "status":
        if row.status == op.value:
            return UpdateResult(Outcome.UNCHANGED, row, row.status)
        if row.status not in op.allowed_from:
            return UpdateResult(Outcome.ILLEGAL, row, row.status)
        return ev.status_changed(row.status, str(op.value))
    if row.status not in op.allowed_from:
        return UpdateResult(Outcome.CLOSED, row, row.status)
    if row.stage == op.value:
        return UpdateResult(Outcome.UNCHANGED, row, row.status)
    return ev.stage_changed(row.stage, op.value)
