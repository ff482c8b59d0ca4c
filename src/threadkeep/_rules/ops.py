"""Operations the Store plans and backends carry out, and the one shape of every answer.

An op holds everything a backend needs: the time (``now_us``), the preconditions (which
statuses a change may start from, the status a message moves to) and the values to write.
Each op is typed by what its answer carries: a backend's ``execute(op: Op[R])`` returns
``Result[R]``, an outcome and a value. Backends never read the clock and never decide a rule;
they apply an op atomically, with the verdicts of ``decide``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Final, Generic, Literal, NamedTuple, TypeVar

from threadkeep._rules.retention import RetentionUs
from threadkeep._rules.rows import (
    ConversationRow,
    ErasureCounts,
    EventRow,
    FactRow,
    MessageRow,
    NewMessage,
    StateRow,
    SweepCounts,
    TenantCounts,
    WindowLike,
)

__all__ = [
    "ALL_OPS",
    "AppendManyOp",
    "AppendOp",
    "AppendReadOp",
    "ArchivedOp",
    "ClearOp",
    "CountsOp",
    "DeleteContactOp",
    "DeliveryOp",
    "DeleteOp",
    "EventsOp",
    "FactContactsOp",
    "FindOpenOp",
    "GetOp",
    "KeyOp",
    "LeaseOp",
    "ListOp",
    "LoadStateOp",
    "Op",
    "Outcome",
    "PopOp",
    "ReadOp",
    "RecallOp",
    "ReleaseOp",
    "RememberOp",
    "ReplaceOp",
    "Result",
    "RetainOp",
    "RewriteOp",
    "SaveStateOp",
    "StartOp",
    "SweepOp",
    "UpdateOp",
    "WindowOp",
]

R = TypeVar("R")
T = TypeVar("T")


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
    EXPIRED = "expired"


class Result(NamedTuple, Generic[T]):
    """A backend's answer to one op: what happened, and the value it carries.

    Each op's docstring says which outcomes it may have and what ``value`` is for each.
    """

    outcome: Outcome
    value: T


class Op(Generic[R]):
    """An operation whose answer is ``Result[R]``."""

    __slots__ = ()

    #: names this kind of op in metrics and logs (the Store method's backend verb)
    name: ClassVar[str]
    #: whether carrying it out may wait on purpose (an events read): leave it out of timings
    waits: ClassVar[bool] = False


# ---- conversations ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartOp(Op[ConversationRow]):
    """Create ``row`` (status new), or with ``resume`` return the contact's open one.

    Outcomes: CREATED with ``row``, EXISTING with the open conversation found.
    """

    name: ClassVar[str] = "create"
    row: ConversationRow
    resume: bool
    open_statuses: tuple[str, ...]
    events_kept: int
    #: the caller chose ``row.id`` (an import), rather than ``new_id``
    given_id: bool = False


@dataclass(frozen=True, slots=True)
class GetOp(Op[ConversationRow | None]):
    """Read one live conversation (``tenant`` None: any tenant). OK with it, or NOT_FOUND."""

    name: ClassVar[str] = "get"
    conversation_id: str
    tenant: str | None
    now_us: int


@dataclass(frozen=True, slots=True)
class FindOpenOp(Op[ConversationRow | None]):
    """Find a contact's open conversation with the newest activity: OK with it or None."""

    name: ClassVar[str] = "find_open"
    tenant: str
    contact_id: str
    open_statuses: tuple[str, ...]
    now_us: int


@dataclass(frozen=True, slots=True)
class UpdateOp(Op[ConversationRow | None]):
    """Set ``field`` (allowed only from ``allowed_from`` statuses) of a conversation.

    Outcomes: OK with the changed row; UNCHANGED (it had that value already), ILLEGAL (a
    status change the lifecycle forbids) or CLOSED (a stage or agent change of a closed one),
    each with the row found; NOT_FOUND with None.
    """

    name: ClassVar[str] = "update"
    conversation_id: str
    tenant: str | None
    now_us: int
    field: Literal["status", "stage", "agent_id"]
    value: str | None
    allowed_from: tuple[str, ...]
    events_kept: int


@dataclass(frozen=True, slots=True)
class ListOp(Op[list[ConversationRow]]):
    """Up to ``limit + 1`` live conversations, newest activity first, after keyset ``cursor``.

    The one extra row tells whether another page follows. Outcome: OK.
    """

    name: ClassVar[str] = "list"
    tenant: str
    now_us: int
    status: str | None
    stage: str | None
    agent_id: str | None
    contact_id: str | None
    limit: int
    cursor: tuple[int, str] | None


@dataclass(frozen=True, slots=True)
class CountsOp(Op[TenantCounts]):
    """Count a tenant's live conversations by status and stage. Outcome: OK."""

    name: ClassVar[str] = "counts"
    tenant: str
    now_us: int


@dataclass(frozen=True, slots=True)
class RetainOp(Op[ConversationRow | None]):
    """Give a conversation another retention.

    Its expiry and idle time follow from its last activity (the change is not activity).

    Outcomes: OK with the changed row; UNCHANGED (it had that retention) with the row;
    NOT_FOUND with None.
    """

    name: ClassVar[str] = "retain"
    conversation_id: str
    tenant: str | None
    now_us: int
    retention: RetentionUs
    events_kept: int


@dataclass(frozen=True, slots=True)
class DeleteOp(Op[None]):
    """Erase one conversation: messages, state, leases, its events; log one erasure event.

    A conversation of the tenant is erased even when it has expired; the outcome is OK when
    it was live, else NOT_FOUND.
    """

    name: ClassVar[str] = "delete"
    conversation_id: str
    tenant: str | None
    now_us: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class DeleteContactOp(Op[ErasureCounts]):
    """Erase every conversation (expired ones too) and every fact of a contact.

    Outcome: OK with what was erased, counted in the same transaction (``ErasureCounts``).
    """

    name: ClassVar[str] = "delete_contact"
    tenant: str
    contact_id: str
    now_us: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class SweepOp(Op[SweepCounts]):
    """Mark idle (``idle_from`` statuses past their idle time), purge expired data.

    Works in transactions of at most ``batch`` rows (memory: one). Outcome: OK.
    """

    name: ClassVar[str] = "sweep"
    now_us: int
    dry_run: bool
    idle_to: str
    idle_from: tuple[str, ...]
    batch: int
    events_kept: int


# ---- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppendOp(Op[MessageRow | None]):
    """Append a message: next seq, status per ``on_message``, sliding expiry, events.

    ``idempotency_key`` makes a replay return the stored message; ``fence`` (a turn token)
    makes the append fail unless that lease is still the current, live one. Outcomes: OK or
    DUPLICATE with the message; NOT_FOUND, CLOSED or FENCED with None (``decide.append``).
    """

    name: ClassVar[str] = "append"
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
    payload_json: str | None = None
    link: int = 0


@dataclass(frozen=True, slots=True)
class AppendReadOp(Op[tuple[MessageRow, ConversationRow | None] | None]):
    """``append``, answering also with the conversation as that append left it.

    The row is read atomically with the append (under its lock: a fenced append's row is the
    one under the lease), for a duplicate key too (the row as stored). Outcomes: those of
    ``append``, the value (the message, the row) where ``append``'s is the message; the row
    is None where the backend cannot tell it without another read (the caller reads it).
    """

    name: ClassVar[str] = "append_read"
    append: AppendOp


@dataclass(frozen=True, slots=True)
class AppendManyOp(Op[list[tuple[MessageRow, bool]]]):
    """Append a batch in one transaction: one seq range, one event per new message.

    An item whose key is stored already (or came earlier in the batch) is replayed, not
    stored. Outcomes: OK with each item's (message, replayed) in order; NOT_FOUND, CLOSED
    (unless every item is a replay) or FENCED with [] (``decide.append_many``).
    """

    name: ClassVar[str] = "append_many"
    conversation_id: str
    tenant: str | None
    now_us: int
    items: tuple[NewMessage, ...]
    on_message: Mapping[str, str]
    fence: int | None
    events_kept: int


@dataclass(frozen=True, slots=True)
class PopOp(Op[MessageRow | None]):
    """Remove the newest message; its seq is the next one's again.

    Outcomes: OK with the message removed (None: there was none); NOT_FOUND or CLOSED with
    None (``decide.pop``).
    """

    name: ClassVar[str] = "pop_last"
    conversation_id: str
    tenant: str | None
    now_us: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class ClearOp(Op[int]):
    """Remove every message; the conversation, its state, status and seq counter stay.

    Outcomes: OK with how many were removed; NOT_FOUND or CLOSED with 0 (``decide.clear``).
    """

    name: ClassVar[str] = "clear_messages"
    conversation_id: str
    tenant: str | None
    now_us: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class ReplaceOp(Op[tuple[list[MessageRow], int]]):
    """Replace every message with ``items`` (new seqs after the last), if unchanged.

    ``expected_last_seq`` (when given) must be the conversation's last seq. Outcomes: OK
    with (the new messages, the last seq); CONFLICT with ([], the current last seq);
    NOT_FOUND or CLOSED with ([], 0) (``decide.replace_history``).
    """

    name: ClassVar[str] = "replace_messages"
    conversation_id: str
    tenant: str | None
    now_us: int
    items: tuple[NewMessage, ...]
    expected_last_seq: int | None
    events_kept: int


@dataclass(frozen=True, slots=True)
class ReadOp(Op[list[MessageRow]]):
    """Read messages oldest first: the last N, or a page after or before a seq.

    The ``last`` N, or up to ``limit`` with seq above ``after``, or the newest ``limit`` with
    seq below ``before`` (when given).

    Outcomes: OK with the messages; NOT_FOUND with [].
    """

    name: ClassVar[str] = "read_messages"
    conversation_id: str
    tenant: str | None
    now_us: int
    last: int | None
    after: int
    limit: int
    before: int | None = None


@dataclass(frozen=True, slots=True)
class KeyOp(Op[MessageRow | None]):
    """Read the kept message stored under idempotency key ``key``.

    Outcomes: OK with it (None: no kept message has that key); NOT_FOUND with None.
    """

    name: ClassVar[str] = "message_by_key"
    conversation_id: str
    tenant: str | None
    now_us: int
    key: str


@dataclass(frozen=True, slots=True)
class DeliveryOp(Op[MessageRow | None]):
    """Record the delivery state of the kept message ``seq``, never moving it down.

    ``delivery_json`` is the new delivery (``state``, ``provider_id``, ``error``,
    ``updated_at`` …); ``decide.delivery`` says whether it replaces the stored one and with
    what. An applied change appends a ``message.delivery`` event.

    Outcomes: OK with the updated message (None: no kept message has that seq); UNCHANGED
    with the message as it is (the stored state ranks as high or higher); NOT_FOUND with None
    (the conversation is absent, expired or another tenant's).
    """

    name: ClassVar[str] = "set_delivery"
    conversation_id: str
    tenant: str | None
    now_us: int
    seq: int
    delivery_json: str
    events_kept: int


@dataclass(frozen=True, slots=True)
class WindowOp(Op[tuple[Sequence[WindowLike], int]]):
    """Read the conversation's window and the messages just before it, oldest first.

    The last ``retention.window`` messages and ``extra`` more before them (a window's start
    depends on the message before it).

    Outcomes: OK with (the messages, ``retention.window``); NOT_FOUND with ([], 0).
    """

    name: ClassVar[str] = "read_context"
    conversation_id: str
    tenant: str | None
    now_us: int
    extra: int = 1


# ---- state ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaveStateOp(Op[int]):
    """Save a new state version, compare-and-set on ``expected_version`` when given.

    With ``rollback_to`` set, the value is that stored version's (``value_json`` unused).
    Outcomes: OK with the new version; CONFLICT or NO_VERSION with the current version;
    NOT_FOUND with 0 (``decide.save_state``).
    """

    name: ClassVar[str] = "save_state"
    conversation_id: str
    tenant: str | None
    now_us: int
    value_json: str
    expected_version: int | None
    rollback_to: int | None
    versions_kept: int
    events_kept: int


@dataclass(frozen=True, slots=True)
class LoadStateOp(Op[StateRow | None]):
    """Load the current state version, or ``version``.

    Outcomes: OK with the row (None: nothing saved yet); NO_VERSION or NOT_FOUND with None.
    """

    name: ClassVar[str] = "load_state"
    conversation_id: str
    tenant: str | None
    now_us: int
    version: int | None


# ---- events, leases, facts --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventsOp(Op[list[EventRow]]):
    """Up to ``limit`` events with numbers above ``after`` (None: from the oldest retained).

    Waits up to ``wait`` seconds for one when there are none. Outcomes: OK with the events;
    EXPIRED with [] when ``after`` fell below the retained log.
    """

    name: ClassVar[str] = "read_events"
    waits: ClassVar[bool] = True
    tenant: str | None
    after: int | None
    limit: int
    wait: float


@dataclass(frozen=True, slots=True)
class LeaseOp(Op[int]):
    """Take a conversation's turn lease until ``until_us`` if it is free or ran out.

    Outcomes: OK with the new fencing token; BUSY or NOT_FOUND with 0 (``decide.lease``).
    """

    name: ClassVar[str] = "acquire_lease"
    conversation_id: str
    tenant: str | None
    now_us: int
    until_us: int


@dataclass(frozen=True, slots=True)
class ReleaseOp(Op[None]):
    """Give back a turn lease, only if ``token`` is still the current one. Outcome: OK."""

    name: ClassVar[str] = "release_lease"
    conversation_id: str
    token: int


@dataclass(frozen=True, slots=True)
class RememberOp(Op[FactRow]):
    """Store a fact about a contact. Outcome: OK with the fact.

    A different value supersedes the live one, which joins the fact's history
    (``decide.supersede``).
    """

    name: ClassVar[str] = "remember"
    tenant: str
    contact_id: str
    key: str
    value_json: str
    tier: str
    now_us: int
    expires_us: int
    source_json: str = "null"


@dataclass(frozen=True, slots=True)
class RecallOp(Op[list[FactRow]]):
    """Read a contact's live facts (one ``key`` or all), ordered by key. Outcome: OK."""

    name: ClassVar[str] = "recall"
    tenant: str
    contact_id: str
    key: str | None
    now_us: int


@dataclass(frozen=True, slots=True)
class RewriteOp(Op[int]):
    """Rewrite stored values in place (a key rotation): each pair is (as read, rewritten).

    A message's content and payload, a state version's value, or a fact's value and history
    are replaced only while they still hold what was read (compare-and-set), so a concurrent
    write is never overwritten. Nothing else changes: no event, no activity, expiry, seq or
    count. Messages (kept ones, and ``archived`` ones kept for idempotent replays, by key) and
    states are of ``conversation_id`` (of ``tenant``, which routes the statements); facts of
    ``tenant``/``contact_id``. Outcome: OK with how many pairs were rewritten.
    """

    name: ClassVar[str] = "rewrite"
    conversation_id: str | None
    tenant: str
    messages: tuple[tuple[MessageRow, MessageRow], ...] = ()
    states: tuple[tuple[StateRow, StateRow], ...] = ()
    contact_id: str | None = None
    facts: tuple[tuple[FactRow, FactRow], ...] = ()
    archived: tuple[tuple[MessageRow, MessageRow], ...] = ()


@dataclass(frozen=True, slots=True)
class FactContactsOp(Op[tuple[list[str], str]]):
    """A page of the contacts of ``tenant`` that have facts, from ``cursor`` ("": the first).

    Outcome: OK with (contact ids, the next page's cursor; "" after the last page). A page may
    hold fewer than ``limit`` (even none) before the last, and a contact may appear on two
    pages (Redis scans an index with a cursor of its own).
    """

    name: ClassVar[str] = "fact_contacts"
    tenant: str
    cursor: str
    limit: int


@dataclass(frozen=True, slots=True)
class ArchivedOp(Op[tuple[list[MessageRow], str]]):
    """A page of the messages kept for idempotent replays of ``tenant``'s conversation.

    Those are the messages ``max_messages`` trimmed whose key must still replay (Redis: every
    remembered key's message, kept ones too), by key after ``cursor`` ("": the first). Outcome:
    OK with (the messages, the next page's cursor; "" after the last page); a page may hold
    fewer than ``limit`` before the last.
    """

    name: ClassVar[str] = "archived"
    conversation_id: str
    tenant: str
    cursor: str
    limit: int


#: Every kind of op: a backend carries out each of them.
ALL_OPS: Final = (
    StartOp,
    GetOp,
    FindOpenOp,
    UpdateOp,
    RetainOp,
    ListOp,
    CountsOp,
    DeleteOp,
    DeleteContactOp,
    SweepOp,
    AppendOp,
    AppendReadOp,
    AppendManyOp,
    PopOp,
    ClearOp,
    ReplaceOp,
    KeyOp,
    ReadOp,
    DeliveryOp,
    WindowOp,
    SaveStateOp,
    LoadStateOp,
    EventsOp,
    LeaseOp,
    ReleaseOp,
    RememberOp,
    RecallOp,
    RewriteOp,
    FactContactsOp,
    ArchivedOp,
)
