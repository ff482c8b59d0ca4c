"""The verdicts of every change, taken once for the memory, SQLite and PostgreSQL backends.

A backend reads what a verdict needs (the conversation row, and the stored message of an
idempotency key, the lease or a kept state version when the op asks about them), calls the
function here, and either returns its ``Result`` as it is or writes what it says: the
``Created``, ``Appended``, ``Updated`` or ``Saved`` plan, atomically. The order of the checks
(the precedence of the outcomes) exists only here; the Lua scripts keep their own copy for
atomicity on the Redis server, and the conformance suite holds every backend to the same one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final, NamedTuple, TypeAlias

from threadkeep._rules import delivery as dl, events as ev, lifecycle
from threadkeep._rules.events import NewEvent
from threadkeep._rules.ops import (
    AppendManyOp,
    AppendOp,
    ClearOp,
    DeliveryOp,
    LeaseOp,
    Outcome,
    PopOp,
    RememberOp,
    ReplaceOp,
    Result,
    RetainOp,
    SaveStateOp,
    StartOp,
    SweepOp,
    UpdateOp,
)
from threadkeep._rules.retention import is_expired
from threadkeep._rules.rows import ConversationRow, FactRow, MessageRow

__all__ = [
    "Appended",
    "Created",
    "Delivered",
    "HISTORY_KEPT",
    "Judge",
    "Rewritten",
    "Saved",
    "Updated",
    "append",
    "append_many",
    "clear",
    "create",
    "cursor_expired",
    "delivery",
    "erasable",
    "erased",
    "fact_due",
    "idle_due",
    "is_visible",
    "lease",
    "pop",
    "replace_history",
    "save_state",
    "supersede",
    "touch",
    "update",
    "visible",
]


# ---- visibility -------------------------------------------------------------------------


def is_visible(row_tenant: str, expires_us: int | None, tenant: str | None, now_us: int) -> bool:
    """Whether a conversation is seen by a caller: not expired, and of ``tenant`` when given.

    A conversation that expired is gone at once, whether or not it was purged yet; one of
    another tenant does not exist for the caller. The message, window and state reads say it
    again in SQL (``sqlite/_schema._VISIBLE``, ``postgres/_schema._last``): change them with
    it (``test_a_read_sees_exactly_the_conversations_is_visible_lets_it_see`` ties SQLite's).
    """
    return not is_expired(expires_us, now_us) and (tenant is None or row_tenant == tenant)


def visible(row: ConversationRow | None, tenant: str | None, now_us: int) -> ConversationRow | None:
    """Return ``row`` if the caller sees it (``is_visible``, inlined: every op asks), else None."""
    if row is None:
        return None
    expires_us = row.expires_us
    if (expires_us is not None and expires_us <= now_us) or (
        tenant is not None and row.tenant != tenant
    ):
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
    """Judge a start/resume; ``open_one`` is the contact's open conversation (resume only).

    An open conversation with this call's own new id is the one it created: a resend after
    a commit of unknown outcome finds it, and answers CREATED as the first try would have.
    """
    if op.resume and open_one is not None:
        if open_one.id == op.row.id:
            return Result(Outcome.CREATED, open_one)
        return Result(Outcome.EXISTING, open_one)
    row = op.row
    return Created(row, ev.started(row.contact_id, row.status, row.stage))


# ---- append -----------------------------------------------------------------------------


class Appended(NamedTuple):
    """What an append writes: the new messages, the conversation's new fields, events.

    ``max_messages`` trimming: when ``trim_from`` is set, the backend keeps the messages from
    the first one at or after seq ``trim_from`` that may start a window
    (``history.trim_start`` over their ``link`` bits) and deletes those before it; it keeps
    all when there is none. ``row_after(row, cut)`` then counts what is kept.

    Attributes:
        messages: the new messages, in seq order.
        answers: each item's (message, replayed) in the caller's order (append_many).
        status: the conversation's status after it.
        message_count: messages kept after it, before trimming.
        trim_from: the oldest seq ``max_messages`` keeps by count (None: keep all).
        activity_us: the new activity time (the messages').
        expires_us: the new expiry.
        idle_us: the new idle time.
        events: to log, in order.
    """

    messages: tuple[MessageRow, ...]
    answers: tuple[tuple[MessageRow, bool], ...]
    status: str
    message_count: int
    trim_from: int | None
    activity_us: int
    expires_us: int | None
    idle_us: int
    events: tuple[NewEvent, ...]

    @property
    def message(self) -> MessageRow:
        """The newest message written."""
        return self.messages[-1]

    def kept(self, cut: int | None) -> int:
        """How many messages are kept once the ones before seq ``cut`` are deleted."""
        return self.message_count if cut is None else self.message.seq - cut + 1

    def row_after(self, row: ConversationRow, cut: int | None = None) -> ConversationRow:
        """Return the conversation row as this append leaves it (``cut``: see the class)."""
        return replace(
            row,
            status=self.status,
            last_seq=self.message.seq,
            message_count=self.kept(cut),
            activity_us=self.activity_us,
            expires_us=self.expires_us,
            idle_us=self.idle_us,
        )

    def result(self) -> Result[MessageRow | None]:
        """The answer of append() once written."""
        return Result(Outcome.OK, self.message)

    def batch_result(self) -> Result[list[tuple[MessageRow, bool]]]:
        """The answer of append_many() once written."""
        return Result(Outcome.OK, list(self.answers))


def _trim_from(row: ConversationRow, last_seq: int, count: int) -> int | None:
    limit = row.retention.max_messages
    return last_seq - limit + 1 if limit is not None and count > limit else None


def _appended(
    row: ConversationRow,
    now_us: int,
    status: str,
    messages: tuple[MessageRow, ...],
    answers: tuple[tuple[MessageRow, bool], ...],
) -> Appended:
    events = [ev.message_appended(m.seq, m.role) for m in messages]
    if status != row.status:
        events.append(lifecycle.status_changed(row.status, status))
    count = row.message_count + len(messages)
    return Appended(
        messages,
        answers,
        status,
        count,
        _trim_from(row, messages[-1].seq, count),
        now_us,
        row.retention.expires_at(now_us),
        row.retention.idle_at(now_us),
        tuple(events),
    )


def _fenced(fence: int | None, lease: tuple[int, int], now_us: int) -> bool:
    return fence is not None and (lease[0] != fence or lease[1] <= now_us)


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
    if _fenced(op.fence, lease, op.now_us):
        return Result(Outcome.FENCED, None)
    message = MessageRow(
        row.id, row.last_seq + 1, op.role, op.content, op.now_us, op.metadata_json,
        op.idempotency_key, op.payload_json, op.link,
    )  # fmt: skip
    return _appended(row, op.now_us, status, (message,), ((message, False),))


def append_many(
    row: ConversationRow | None,
    op: AppendManyOp,
    stored: Mapping[str, MessageRow],
    lease: tuple[int, int],
) -> Result[list[tuple[MessageRow, bool]]] | Appended:
    """Judge a batch: not found; every item a replay (OK); closed; fenced; else write.

    An item whose key is in ``stored``, or was used by an earlier item of the batch, is a
    replay of that message; the others get consecutive seqs after the last.

    Args:
        row: the conversation as stored (None: there is none).
        op: the batch.
        stored: the stored message of each item key that has one.
        lease: the conversation's (lease token, lease until µs), for a fenced batch.
    """
    row = visible(row, op.tenant, op.now_us)
    if row is None:
        return Result(Outcome.NOT_FOUND, [])
    known = dict(stored)
    answers: list[tuple[MessageRow, bool]] = []
    messages: list[MessageRow] = []
    for item in op.items:
        key = item.idempotency_key
        if key is not None and key in known:
            answers.append((known[key], True))
            continue
        message = item.row(row.id, row.last_seq + len(messages) + 1, op.now_us)
        messages.append(message)
        answers.append((message, False))
        if key is not None:
            known[key] = message
    if not messages:
        return Result(Outcome.OK, answers)
    status = op.on_message.get(row.status)
    if status is None:
        return Result(Outcome.CLOSED, [])
    if _fenced(op.fence, lease, op.now_us):
        return Result(Outcome.FENCED, [])
    return _appended(row, op.now_us, status, tuple(messages), tuple(answers))


# ---- rewriting history ------------------------------------------------------------------


def _changeable(
    row: ConversationRow | None, tenant: str | None, now_us: int
) -> ConversationRow | Outcome:
    """The row if visible and open to changes; else the outcome that says why not."""
    row = visible(row, tenant, now_us)
    if row is None:
        return Outcome.NOT_FOUND
    if row.status == lifecycle.Status.CLOSED.value:
        return Outcome.CLOSED
    return row


class Rewritten(NamedTuple):
    """What pop_last, clear_messages or replace_messages writes.

    The backend deletes the kept messages with seq at or above ``delete_from`` (all of them
    for a clear or a replace), inserts ``messages`` (a replace), trims from ``trim_from`` as
    for an append, writes ``row_after`` and logs ``event``.
    """

    delete_from: int
    messages: tuple[MessageRow, ...]
    trim_from: int | None
    row: ConversationRow
    event: NewEvent

    def row_after(self, cut: int | None = None) -> ConversationRow:
        """Return the conversation row as this change leaves it (``cut``: see Appended)."""
        if cut is None:
            return self.row
        return replace(self.row, message_count=self.row.last_seq - cut + 1)


def pop(
    row: ConversationRow | None, op: PopOp, newest: MessageRow | None
) -> Result[MessageRow | None] | Rewritten:
    """Judge a pop: not found; closed; nothing to pop (OK, None); else remove ``newest``.

    The newest message's seq becomes the last seq's again, so seqs stay gap-free.
    """
    checked = _changeable(row, op.tenant, op.now_us)
    if isinstance(checked, Outcome):
        return Result(checked, None)
    if newest is None or checked.message_count == 0:
        return Result(Outcome.OK, None)
    after = touch(checked, op.now_us, last_seq=newest.seq - 1,
                  message_count=checked.message_count - 1)  # fmt: skip
    return Rewritten(newest.seq, (), None, after, ev.message_popped(newest.seq, newest.role))


def clear(row: ConversationRow | None, op: ClearOp) -> Result[int] | Rewritten:
    """Judge a clear: not found; closed; nothing kept (OK, 0); else remove every message.

    The seq counter stays: the next message continues after the last one.
    """
    checked = _changeable(row, op.tenant, op.now_us)
    if isinstance(checked, Outcome):
        return Result(checked, 0)
    if checked.message_count == 0:
        return Result(Outcome.OK, 0)
    after = touch(checked, op.now_us, message_count=0)
    event = ev.messages_cleared(checked.message_count, checked.last_seq)
    return Rewritten(0, (), None, after, event)


def replace_history(
    row: ConversationRow | None, op: ReplaceOp
) -> Result[tuple[list[MessageRow], int]] | Rewritten:
    """Judge a replace: not found; closed; stale ``expected_last_seq`` (CONFLICT); else write.

    The new messages take the seqs after the last one; answers carry the last seq (the
    current one for a conflict).
    """
    checked = _changeable(row, op.tenant, op.now_us)
    if isinstance(checked, Outcome):
        return Result(checked, ([], 0))
    if op.expected_last_seq is not None and op.expected_last_seq != checked.last_seq:
        return Result(Outcome.CONFLICT, ([], checked.last_seq))
    if not op.items and checked.message_count == 0:
        return Result(Outcome.OK, ([], checked.last_seq))
    first = checked.last_seq + 1
    messages = tuple(item.row(checked.id, first + i, op.now_us) for i, item in enumerate(op.items))
    last = first + len(messages) - 1 if messages else checked.last_seq
    after = touch(checked, op.now_us, last_seq=last, message_count=len(messages))
    event = ev.messages_replaced(checked.message_count, first if messages else 0, last)
    return Rewritten(0, messages, _trim_from(checked, last, len(messages)), after, event)


# ---- status and stage -------------------------------------------------------------------


class Updated(NamedTuple):
    """Write ``row`` (the changed conversation) and log ``event``; answer OK."""

    row: ConversationRow
    event: NewEvent

    def result(self) -> Result[ConversationRow | None]:
        """The answer once written."""
        return Result(Outcome.OK, self.row)


#: A change of one conversation judged on the row found (``update``, ``retain``): the answer,
#: or what to write.
Judge: TypeAlias = Callable[[ConversationRow | None], "Result[ConversationRow | None] | Updated"]


def update(row: ConversationRow | None, op: UpdateOp) -> Result[ConversationRow | None] | Updated:
    """Judge a status, stage or agent change: not found; unchanged, illegal or closed; else write.

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
    if op.field == "agent_id":
        if row.agent_id == op.value:
            return Result(Outcome.UNCHANGED, row)
        event = ev.agent_assigned(row.agent_id, op.value)
        return Updated(touch(row, op.now_us, agent_id=op.value), event)
    if row.stage == op.value:
        return Result(Outcome.UNCHANGED, row)
    return Updated(touch(row, op.now_us, stage=op.value), ev.stage_changed(row.stage, op.value))


def retain(row: ConversationRow | None, op: RetainOp) -> Result[ConversationRow | None] | Updated:
    """Judge a retention change: not found; unchanged; else write, expiry from last activity."""
    row = visible(row, op.tenant, op.now_us)
    if row is None:
        return Result(Outcome.NOT_FOUND, None)
    if row.retention == op.retention:
        return Result(Outcome.UNCHANGED, row)
    changed = replace(
        row,
        retention=op.retention,
        expires_us=op.retention.expires_at(row.activity_us),
        idle_us=op.retention.idle_at(row.activity_us),
    )
    return Updated(changed, ev.retention_changed(changed.expires_us))


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


#: At most this many superseded values are kept in a fact's history (newest first).
HISTORY_KEPT: Final = 20


def fact_due(row: FactRow, now_us: int) -> bool:
    """Whether sweep() removes a fact: its value and every value in its history have expired.

    A short-lived value that superseded a long-lived one leaves the older value's history to
    its own tier's time; the SQL and Lua sweeps say the same in their own words.
    """
    return row.expires_us <= now_us and all(
        int(h["expires_us"]) <= now_us for h in json.loads(row.history_json)
    )


def supersede(old: FactRow | None, op: RememberOp) -> FactRow:
    """Return the fact ``remember`` stores, given the stored one (None: there is none).

    A different value supersedes the live one: the old value, with its tier, source and times,
    goes first into the history. The same value again only refreshes the fact (tier, source,
    times). History entries are kept for their own tier's time (until their ``expires_us``),
    at most ``HISTORY_KEPT``; an expired fact leaves only its live history behind.
    """
    history: list[dict[str, str]] = []
    if old is not None:
        history = [h for h in json.loads(old.history_json) if int(h["expires_us"]) > op.now_us]
        if old.expires_us > op.now_us and old.value_json != op.value_json:
            history.insert(
                0,
                {
                    "value": old.value_json,
                    "tier": old.tier,
                    "source": old.source_json,
                    "updated_us": str(old.updated_us),
                    "expires_us": str(old.expires_us),
                },
            )
    return FactRow(
        op.key,
        op.value_json,
        op.tier,
        op.now_us,
        op.expires_us,
        op.source_json,
        json.dumps(history[:HISTORY_KEPT], separators=(",", ":")),
    )


class Delivered(NamedTuple):
    """What a delivery change writes: the message's new metadata and the event."""

    metadata_json: str
    event: NewEvent


def delivery(message: MessageRow | None, op: DeliveryOp) -> Delivered | Result[MessageRow | None]:
    """Decide a delivery change of ``message`` of a visible conversation (None: no such seq).

    Returns:
        What to write, or the op's final Result (OK with None, or UNCHANGED with the message).
    """
    if message is None:
        return Result(Outcome.OK, None)
    metadata_json = dl.apply(message.metadata_json, op.delivery_json)
    if metadata_json is None:
        return Result(Outcome.UNCHANGED, message)
    state = str(json.loads(op.delivery_json).get("state"))
    return Delivered(metadata_json, ev.message_delivery(message.seq, state))
