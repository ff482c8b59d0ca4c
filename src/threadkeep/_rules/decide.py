"""The verdicts of every change, taken once for the memory, SQLite and PostgreSQL backends.

A backend reads what a verdict needs (the conversation row, and the stored message of an
idempotency key, the lease or a kept state version when the op asks about them), calls the
function here, and either returns its ``Result`` as it is or writes what it says: the
``Created``, ``Appended``, ``Updated`` or ``Saved`` plan, atomically. The order of the checks
(the precedence of the outcomes) exists only here; the Lua scripts keep their own copy for
atomicity on the Redis server, and the conformance suite holds every backend to the same one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

from threadkeep._rules import events as ev, lifecycle
from threadkeep._rules.events import NewEvent
from threadkeep._rules.ops import (
    AppendOp,
    LeaseOp,
    Outcome,
    Result,
    SaveStateOp,
    StartOp,
    SweepOp,
    UpdateOp,
)
from threadkeep._rules.retention import is_expired
from threadkeep._rules.rows import ConversationRow, MessageRow

__all__ = [
    "Appended",
    "Created",
    "Saved",
    "Updated",
    "append",
    "create",
    "cursor_expired",
    "erasable",
    "erased",
    "idle_due",
    "is_visible",
    "lease",
    "save_state",
    "touch",
    "update",
    "visible",
]


# ---- visibility -------------------------------------------------------------------------


def is_visible(row_tenant: str, expires_us: int | None, tenant: str | None, now_us: int) -> bool:
    """Whether a conversation is seen by a caller: not expired, and of ``tenant`` when given.

    A conversation that expired is gone at once, whether or not it was purged yet; one of
    another tenant does not exist for the caller.
    """
    return not is_expired(expires_us, now_us) and (tenant is None or row_tenant == tenant)


def visible(row: ConversationRow | None, tenant: str | None, now_us: int) -> ConversationRow | None:
    """Return ``row`` if the caller sees it (see ``is_visible``), else None."""
    if row is None or not is_visible(row.tenant, row.expires_us, tenant, now_us):
        return None
    return row


def erasable(row: ConversationRow | None, tenant: str | None) -> bool:
    """Whether delete() erases ``row``: any conversation of the tenant, expired ones too."""
    return row is not None and (tenant is None or row.tenant == tenant)


def erased(row: ConversationRow, now_us: int) -> Result[None]:
    """The answer of a delete that erased ``row``: OK if it was live, else NOT_FOUND."""
    return Result(Outcome.NOT_FOUND if is_expired(row.expires_us, now_us) else Outcome.OK, None)


# ---- activity ---------------------------------------------------------------------------


def touch(row: ConversationRow, now_us: int, **changes: Any) -> ConversationRow:
    """Return ``row`` with activity at ``now_us``, its expiry and idle time slid from it."""
    return replace(
        row,
        activity_us=now_us,
        expires_us=row.retention.expires_at(now_us),
        idle_us=row.retention.idle_at(now_us),
        **changes,
    )


def idle_due(row: ConversationRow, op: SweepOp) -> bool:
    """Whether sweep() turns ``row`` idle: an ``idle_from`` status, idle time reached, live."""
    return (
        row.status in op.idle_from
        and row.idle_us <= op.now_us
        and not is_expired(row.expires_us, op.now_us)
    )


# ---- create -----------------------------------------------------------------------------


class Created(NamedTuple):
    """Insert ``op.row`` and log ``event``; answer CREATED."""

    row: ConversationRow
    event: NewEvent

    def result(self) -> Result[ConversationRow]:
        """The answer once written."""
        return Result(Outcome.CREATED, self.row)


def create(op: StartOp, open_one: ConversationRow | None) -> Result[ConversationRow] | Created:
    """Judge a start/resume; ``open_one`` is the contact's open conversation (resume only)."""
    if op.resume and open_one is not None:
        return Result(Outcome.EXISTING, open_one)
    row = op.row
    return Created(row, ev.started(row.contact_id, row.status, row.stage))


# ---- append -----------------------------------------------------------------------------


class Appended(NamedTuple):
    """What an append writes: the message, the conversation's new fields, trimming, events.

    Attributes:
        message: the new message.
        status: the conversation's status after it.
        message_count: messages kept after it.
        trim_to: delete the messages with seq up to this (None: keep all).
        activity_us: the new activity time (the message's).
        expires_us: the new expiry.
        idle_us: the new idle time.
        events: to log, in order.
    """

    message: MessageRow
    status: str
    message_count: int
    trim_to: int | None
    activity_us: int
    expires_us: int | None
    idle_us: int
    events: tuple[NewEvent, ...]

    def row_after(self, row: ConversationRow) -> ConversationRow:
        """Return the conversation row as this append leaves it."""
        return replace(
            row,
            status=self.status,
            last_seq=self.message.seq,
            message_count=self.message_count,
            activity_us=self.activity_us,
            expires_us=self.expires_us,
            idle_us=self.idle_us,
        )

    def result(self) -> Result[MessageRow | None]:
        """The answer once written."""
        return Result(Outcome.OK, self.message)


def append(
    row: ConversationRow | None,
    op: AppendOp,
    stored: MessageRow | None,
    lease: tuple[int, int],
) -> Result[MessageRow | None] | Appended:
    """Judge an append, in this order: not found, duplicate key, closed, fenced; else write.

    Args:
        row: the conversation as stored (None: there is none).
        op: the append.
        stored: the message stored under ``op.idempotency_key`` (None: none, or no key).
        lease: the conversation's (lease token, lease until µs), for a fenced append.
    """
    row = visible(row, op.tenant, op.now_us)
    if row is None:
        return Result(Outcome.NOT_FOUND, None)
    if stored is not None:
        return Result(Outcome.DUPLICATE, stored)
    status = op.on_message.get(row.status)
    if status is None:
        return Result(Outcome.CLOSED, None)
    if op.fence is not None and (lease[0] != op.fence or lease[1] <= op.now_us):
        return Result(Outcome.FENCED, None)
    seq = row.last_seq + 1
    count = row.message_count + 1
    limit = row.retention.max_messages
    trim_to = None
    if limit is not None and count > limit:
        trim_to, count = seq - limit, limit
    message = MessageRow(
        row.id, seq, op.role, op.content, op.now_us, op.metadata_json, op.idempotency_key
    )
    appended = ev.message_appended(seq, op.role)
    events = (
        (appended,)
        if status == row.status
        else (appended, lifecycle.status_changed(row.status, status))
    )
    return Appended(
        message,
        status,
        count,
        trim_to,
        op.now_us,
        row.retention.expires_at(op.now_us),
        row.retention.idle_at(op.now_us),
        events,
    )


# ---- status and stage -------------------------------------------------------------------


class Updated(NamedTuple):
    """Write ``row`` (the changed conversation) and log ``event``; answer OK."""

    row: ConversationRow
    event: NewEvent

    def result(self) -> Result[ConversationRow | None]:
        """The answer once written."""
        return Result(Outcome.OK, self.row)


def update(row: ConversationRow | None, op: UpdateOp) -> Result[ConversationRow | None] | Updated:
    """Judge a status or stage change: not found; then unchanged, illegal or closed; else write.

    Setting the value a conversation already has changes nothing, not even its activity.
    """
    row = visible(row, op.tenant, op.now_us)
    if row is None:
        return Result(Outcome.NOT_FOUND, None)
    if op.field == "status":
        target = str(op.value)
        verdict = lifecycle.status_verdict(row.status, target, op.allowed_from)
        if verdict is not None:
            return Result(verdict, row)
        return Updated(
            touch(row, op.now_us, status=target), lifecycle.status_changed(row.status, target)
        )
    if row.status not in op.allowed_from:
        return Result(Outcome.CLOSED, row)
    if row.stage == op.value:
        return Result(Outcome.UNCHANGED, row)
    return Updated(touch(row, op.now_us, stage=op.value), ev.stage_changed(row.stage, op.value))


# ---- state ------------------------------------------------------------------------------


class Saved(NamedTuple):
    """What a state save writes.

    Attributes:
        version: the new version.
        value_json: its value.
        trim_to: delete the versions up to this one (the newest ``versions_kept`` stay).
        activity_us: the new activity time.
        expires_us: the new expiry.
        idle_us: the new idle time.
        event: to log.
    """

    version: int
    value_json: str
    trim_to: int
    activity_us: int
    expires_us: int | None
    idle_us: int
    event: NewEvent

    def row_after(self, row: ConversationRow) -> ConversationRow:
        """Return the conversation row as this save leaves it."""
        return replace(
            row,
            state_version=self.version,
            activity_us=self.activity_us,
            expires_us=self.expires_us,
            idle_us=self.idle_us,
        )

    def result(self) -> Result[int]:
        """The answer once written."""
        return Result(Outcome.OK, self.version)


def save_state(
    row: ConversationRow | None, op: SaveStateOp, rollback_value: str | None
) -> Result[int] | Saved:
    """Judge a state save, in this order: not found, conflict, version not kept; else write.

    A closed conversation's state may still be saved.

    Args:
        row: the conversation as stored (None: there is none).
        op: the save.
        rollback_value: the value of kept version ``op.rollback_to`` (None: not kept, or no
            rollback).
    """
    row = visible(row, op.tenant, op.now_us)
    if row is None:
        return Result(Outcome.NOT_FOUND, 0)
    current = row.state_version
    if op.expected_version is not None and op.expected_version != current:
        return Result(Outcome.CONFLICT, current)
    value = op.value_json
    if op.rollback_to is not None:
        if rollback_value is None:
            return Result(Outcome.NO_VERSION, current)
        value = rollback_value
    version = current + 1
    return Saved(
        version,
        value,
        version - op.versions_kept,
        op.now_us,
        row.retention.expires_at(op.now_us),
        row.retention.idle_at(op.now_us),
        ev.state_saved(version),
    )


# ---- leases and events ------------------------------------------------------------------


def lease(row: ConversationRow | None, op: LeaseOp, held: tuple[int, int]) -> Result[int]:
    """Judge a lease request; ``held`` is the current (token, until µs).

    Returns:
        NOT_FOUND or BUSY, or OK with the next token: write it with ``op.until_us``.
    """
    if visible(row, op.tenant, op.now_us) is None:
        return Result(Outcome.NOT_FOUND, 0)
    token, until = held
    if until > op.now_us:
        return Result(Outcome.BUSY, 0)
    return Result(Outcome.OK, token + 1)


def cursor_expired(after: int | None, floor: int) -> bool:
    """Whether an events cursor fell out of a log whose events up to ``floor`` are gone.

    No cursor (None) reads from the oldest retained event, so it never expires.
    """
    return after is not None and after < floor
