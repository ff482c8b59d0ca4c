"""Backend answers turned into models or exceptions, in one place, one message per condition.

Each ``finish_*`` takes the ``Result`` of one op (and the op) and returns what the Store
method of that name returns, or raises what the outcome means; ``to_*`` convert rows to the
public models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, Final, NoReturn, TypeVar, cast

from threadkeep._config import Tier
from threadkeep._exceptions import (
    ConversationClosed,
    ConversationNotFound,
    CursorExpired,
    HistoryConflict,
    IllegalTransition,
    InvalidInput,
    StateConflict,
    TurnInProgress,
)
from threadkeep._models import (
    Conversation,
    Counts,
    ErasureReceipt,
    Event,
    Fact,
    FactVersion,
    Message,
    Page,
    StateSnapshot,
    SweepReport,
)
from threadkeep._rules import windows
from threadkeep._rules.builders import fast_builder, slots_twin
from threadkeep._rules.cursors import encode_page
from threadkeep._rules.events import EventKind
from threadkeep._rules.lifecycle import TRANSITIONS, Status
from threadkeep._rules.ops import (
    AppendManyOp,
    AppendOp,
    AppendReadOp,
    ClearOp,
    DeleteContactOp,
    DeleteOp,
    DeliveryOp,
    KeyOp,
    ListOp,
    LoadStateOp,
    Outcome,
    PopOp,
    ReadOp,
    ReplaceOp,
    Result,
    RetainOp,
    SaveStateOp,
    SweepOp,
    UpdateOp,
    WindowOp,
)
from threadkeep._rules.parts import Link, MessageLike, link
from threadkeep._rules.rows import (
    ConversationRow,
    ErasureCounts,
    EventRow,
    FactRow,
    MessageRow,
    StateRow,
    SweepCounts,
    TenantCounts,
    WindowLike,
    parse_json,
)
from threadkeep._rules.times import EPOCH, MICROSECOND, from_us
from threadkeep._serde import load_state
from threadkeep._url import SCHEME_ALIASES

__all__ = [
    "estimate_tokens",
    "finish_append",
    "finish_append_many",
    "finish_append_read",
    "finish_clear",
    "finish_context",
    "finish_counts",
    "finish_create",
    "finish_delete",
    "finish_events",
    "finish_find_open",
    "finish_get",
    "finish_key",
    "finish_lease",
    "finish_list",
    "finish_load_state",
    "finish_messages",
    "finish_pop",
    "finish_recall",
    "finish_replace",
    "finish_save_state",
    "finish_sweep",
    "finish_retain",
    "finish_update",
    "to_conversation",
    "to_event",
    "to_fact",
    "to_message",
    "to_messages",
    "turn_busy",
    "turn_taken",
]

T = TypeVar("T")

#: The outcomes the reads test, as names: on Python 3.11 an ``Outcome.NOT_FOUND`` lookup goes
#: through ``EnumType.__getattr__``'s slow attribute path (~850 instructions each).
_NOT_FOUND: Final = Outcome.NOT_FOUND
_NO_VERSION: Final = Outcome.NO_VERSION
_DUPLICATE: Final = Outcome.DUPLICATE
_STATUSES = {s.value: s for s in Status}
_KINDS = {k.value: k for k in EventKind}


# ---- rows to models ---------------------------------------------------------------------


# A read builds a model per row: each is built by its fast_builder (the same object as the
# dataclass's __init__ makes, in about a third of the time), every field given, in order.
_conversation: Final[
    Callable[
        [str, str, str, str | None, str | None, Status, str | None, dict[str, Any], datetime,
         datetime, datetime | None, int, int, bool],
        Conversation,
    ]
] = fast_builder(Conversation)  # fmt: skip
#: Messages are built in to_messages' own loop on this twin of Message's slots, filled in
#: its field order (checked here, at import: a field added to Message must be filled there).
_MESSAGE_SLOTS: Final[Any] = slots_twin(Message)
if _MESSAGE_SLOTS.__slots__ != (
    "conversation_id", "seq", "role", "content", "created_at", "metadata", "idempotency_key",
    "replayed", "payload",
):  # fmt: skip
    raise TypeError("Message's fields changed: fill them in outcomes.to_messages")
_snapshot: Final[
    Callable[[Any, int, datetime | None], StateSnapshot[Any]]
] = fast_builder(StateSnapshot)  # fmt: skip
_event: Final[
    Callable[[str, EventKind, str, str, dict[str, Any], datetime], Event]
] = fast_builder(Event)  # fmt: skip


def to_conversation(row: ConversationRow, created: bool = False) -> Conversation:
    """Return the public model of a conversation row (``created``: this call made it)."""
    metadata, expires_us = row.metadata_json, row.expires_us
    return _conversation(
        row.id, row.tenant, row.contact_id, row.agent_id, row.channel, _STATUSES[row.status],
        row.stage, {} if metadata == "{}" else parse_json(metadata), from_us(row.created_us),
        from_us(row.activity_us), None if expires_us is None else from_us(expires_us),
        row.message_count, row.state_version, created,
    )  # fmt: skip


def to_messages(rows: Iterable[MessageRow], replayed: bool = False) -> list[Message]:
    """Return the public models of message rows (``replayed``: stored ones returned again)."""
    # One loop builds them all, each as fast_builder would (every slot filled on a twin
    # instance, then re-classed), without a call per message, created_at as from_us makes
    # it (inlined): about 0.1 µs less a message than a builder and a from_us call each.
    out: list[Message] = []
    add, plain, cls, epoch, tick = out.append, _MESSAGE_SLOTS, Message, EPOCH, MICROSECOND
    for (
        conversation_id, seq, role, content, created_us, metadata_json, idempotency_key,
        payload_json, _link,
    ) in rows:  # fmt: skip
        made = plain()
        made.conversation_id = conversation_id
        made.seq = seq
        made.role = role
        made.content = content
        made.created_at = epoch + tick * created_us
        made.metadata = {} if metadata_json == "{}" else parse_json(metadata_json)
        made.idempotency_key = idempotency_key
        made.replayed = replayed
        made.payload = None if payload_json is None else parse_json(payload_json)
        made.__class__ = cls
        add(made)
    return out


def to_message(row: MessageRow, replayed: bool = False) -> Message:
    """Return the public model of a message row (``replayed``: a stored one returned again)."""
    return to_messages((row,), replayed)[0]


def to_event(row: EventRow) -> Event:
    """Return the public model of an event row."""
    return _event(
        row.id, _KINDS[row.kind], row.tenant, row.conversation_id, parse_json(row.data_json),
        from_us(row.at_us),
    )  # fmt: skip


def to_fact(row: FactRow, now_us: int | None = None) -> Fact:
    """Return the public model of a fact row (history versions live at ``now_us`` only)."""
    return Fact(
        key=row.key,
        value=parse_json(row.value_json),
        tier=cast(Tier, row.tier),
        updated_at=from_us(row.updated_us),
        expires_at=from_us(row.expires_us),
        source=parse_json(row.source_json),
        history=tuple(
            FactVersion(
                value=parse_json(h["value"]),
                tier=cast(Tier, h["tier"]),
                source=parse_json(h["source"]),
                updated_at=from_us(int(h["updated_us"])),
                expires_at=from_us(int(h["expires_us"])),
            )
            for h in parse_json(row.history_json)
            if now_us is None or int(h["expires_us"]) > now_us
        ),
    )


# ---- the conditions, each raised from one place -----------------------------------------


def _not_found(conversation_id: str) -> NoReturn:
    raise ConversationNotFound(conversation_id)


def _found(result: Result[T | None], conversation_id: str) -> T:
    if result.outcome is Outcome.NOT_FOUND or result.value is None:
        _not_found(conversation_id)
    return result.value


def _not_kept(conversation_id: str, version: int | None, field: str) -> NoReturn:
    raise InvalidInput(
        f"state version {version} of conversation {conversation_id!r} is not kept; "
        "only the newest versions are kept (Limits.state_versions_kept)",
        field=field,
    )


def turn_busy(conversation_id: str) -> TurnInProgress:
    """The error of a turn whose lease another worker still holds at the deadline."""
    return TurnInProgress(conversation_id)


def turn_taken(conversation_id: str) -> TurnInProgress:
    """The error of a turn whose lease ran out and was taken over; its reply was not stored."""
    return TurnInProgress(
        conversation_id,
        f"the turn lease on conversation {conversation_id!r} ran out and was taken by "
        "another worker; this reply was not stored",
    )


# ---- one finisher per Store method ------------------------------------------------------


def finish_create(result: Result[ConversationRow]) -> Conversation:
    """start() / resume(): the conversation, ``created`` when this call made it."""
    return to_conversation(result.value, created=result.outcome is Outcome.CREATED)


def finish_get(result: Result[ConversationRow | None], conversation_id: str) -> Conversation:
    """get().

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
    """
    return to_conversation(_found(result, conversation_id))


def finish_find_open(result: Result[ConversationRow | None]) -> Conversation | None:
    """find_open(): the open conversation, or None."""
    return None if result.value is None else to_conversation(result.value)


def finish_append(result: Result[MessageRow | None], op: AppendOp) -> Message:
    """append(): the stored message (the first one, ``replayed``, for a known key).

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        ConversationClosed: the conversation is closed.
        TurnInProgress: the append was fenced by a turn lease that is no longer current.
    """
    outcome, message = result
    if message is not None:
        return to_messages((message,), outcome is _DUPLICATE)[0]
    if outcome is Outcome.CLOSED:
        raise ConversationClosed(op.conversation_id)
    if outcome is Outcome.FENCED:
        raise turn_taken(op.conversation_id)
    _not_found(op.conversation_id)


def finish_append_read(
    result: Result[tuple[MessageRow, ConversationRow | None] | None], op: AppendReadOp
) -> tuple[Message, Conversation | None]:
    """The internal append_read(): as finish_append, with the conversation as it left it.

    The conversation is None when the backend could not tell it without another read.

    Raises:
        as finish_append.
    """
    outcome, value = result
    if value is None:
        finish_append(Result(outcome, None), op.append)  # raises
    assert value is not None
    message, row = value
    return (
        to_message(message, outcome is Outcome.DUPLICATE),
        None if row is None else to_conversation(row),
    )


def finish_append_many(
    result: Result[list[tuple[MessageRow, bool]]], op: AppendManyOp
) -> list[Message]:
    """append_many(): each item's message, in order (``replayed`` for a known key).

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        ConversationClosed: the conversation is closed (and some item is new).
        TurnInProgress: the batch was fenced by a turn lease that is no longer current.
    """
    outcome = result.outcome
    if outcome is Outcome.NOT_FOUND:
        _not_found(op.conversation_id)
    if outcome is Outcome.CLOSED:
        raise ConversationClosed(op.conversation_id)
    if outcome is Outcome.FENCED:
        raise turn_taken(op.conversation_id)
    return [to_message(row, replayed) for row, replayed in result.value]


def _changed(outcome: Outcome, conversation_id: str) -> None:
    if outcome is Outcome.NOT_FOUND:
        _not_found(conversation_id)
    if outcome is Outcome.CLOSED:
        raise ConversationClosed(conversation_id)


def finish_pop(result: Result[MessageRow | None], op: PopOp) -> Message | None:
    """pop_last(): the removed message, or None when there was none.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        ConversationClosed: the conversation is closed.
    """
    _changed(result.outcome, op.conversation_id)
    return None if result.value is None else to_message(result.value)


def finish_clear(result: Result[int], op: ClearOp) -> int:
    """clear_messages(): how many messages were removed.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        ConversationClosed: the conversation is closed.
    """
    _changed(result.outcome, op.conversation_id)
    return result.value


def finish_replace(result: Result[tuple[list[MessageRow], int]], op: ReplaceOp) -> list[Message]:
    """replace_messages(): the new history.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        ConversationClosed: the conversation is closed.
        HistoryConflict: ``expected_last_seq`` was not the last seq.
    """
    _changed(result.outcome, op.conversation_id)
    rows, last_seq = result.value
    if result.outcome is Outcome.CONFLICT:
        raise HistoryConflict(op.conversation_id, op.expected_last_seq or 0, last_seq)
    return to_messages(rows)


def finish_delivery(result: Result[MessageRow | None], op: DeliveryOp) -> Message | None:
    """set_delivery(): the message as it is now (changed or not), or None (no such seq kept).

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
    """
    if result.outcome is Outcome.NOT_FOUND:
        _not_found(op.conversation_id)
    return None if result.value is None else to_message(result.value)


def finish_key(result: Result[MessageRow | None], op: KeyOp) -> Message | None:
    """message_by_key(): the kept message with that key, or None.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
    """
    if result.outcome is Outcome.NOT_FOUND:
        _not_found(op.conversation_id)
    return None if result.value is None else to_message(result.value)


_USER_LINK: Final = Link(user=True)
_PLAIN_LINK: Final = Link()
#: A row's payload: a message without one calls and answers no tool (``_links``).
_PAYLOAD_JSON: Final = attrgetter("payload_json")


def _links(rows: Sequence[WindowLike]) -> list[Link]:
    """Each row's Link (its payload is parsed only where there is one: rarely)."""
    return [
        (_USER_LINK if row.role == "user" else _PLAIN_LINK)
        if row.payload_json is None  # no payload: no call, no result
        else link(row.role, row.content, row.payload)
        for row in rows
    ]


def _window_start(rows: Sequence[WindowLike], want: int) -> int:
    """``windows.window_start`` of ``rows``, without their Links when none has a payload."""
    complete = len(rows) <= want
    if list(map(_PAYLOAD_JSON, rows)).count(None) == len(rows):  # no tool call or result
        return windows.plain_start(len(rows), want, complete=complete)
    return windows.window_start(_links(rows), want, complete=complete)


def finish_messages(result: Result[list[MessageRow]], op: ReadOp) -> list[Message]:
    """messages(): for ``last``, the tail that splits no tool call from its result.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
    """
    if result.outcome is _NOT_FOUND:
        _not_found(op.conversation_id)
    rows = result.value
    if op.last is not None:  # the one more row only tells where the window may start
        rows = rows[_window_start(rows, op.last - 1) :]
    return to_messages(rows)


def estimate_tokens(message: MessageLike) -> int:
    """A message's rough token count: its text and payload, 4 characters a token."""
    payload = "" if message.payload is None else json.dumps(message.payload)
    return windows.estimate_tokens(len(message.content) + len(payload))


def finish_context(
    result: Result[tuple[Sequence[WindowLike], int]],
    op: WindowOp,
    token_budget: int | None,
    count_tokens: Callable[[MessageLike], int] | None,
) -> Sequence[WindowLike]:
    """context(): the window's messages, whole exchanges only, within ``token_budget``.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
    """
    if result.outcome is _NOT_FOUND:
        _not_found(op.conversation_id)
    rows, want = result.value
    if token_budget is None:
        return rows[_window_start(rows, want) :]
    links = _links(rows)
    start = windows.window_start(links, want, complete=len(rows) <= want)
    window = rows[start:]
    if count_tokens is None:
        tokens = [windows.estimate_tokens(len(r.content) + len(r.payload_json or ""))
                  for r in window]  # fmt: skip
    else:
        tokens = [count_tokens(r) for r in window]
    begin = windows.budget_start(links[start:], tokens, token_budget, start=0, complete=True)
    return window[begin:]


def finish_update(result: Result[ConversationRow | None], op: UpdateOp) -> Conversation:
    """set_status() / set_stage() / assign() / close_conversation().

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        ConversationClosed: a stage or agent change of a closed conversation.
        IllegalTransition: the lifecycle forbids the status change.
    """
    row = _found(result, op.conversation_id)
    if result.outcome is Outcome.CLOSED:
        raise ConversationClosed(op.conversation_id)
    if result.outcome is Outcome.ILLEGAL:
        current = _STATUSES[row.status]
        raise IllegalTransition(
            op.conversation_id,
            current.value,
            str(op.value),
            (s.value for s in TRANSITIONS[current]),
        )
    return to_conversation(row)


def finish_retain(result: Result[ConversationRow | None], op: RetainOp) -> Conversation:
    """set_retention().

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
    """
    return to_conversation(_found(result, op.conversation_id))


def finish_save_state(result: Result[int], op: SaveStateOp) -> int:
    """save_state() / rollback_state(): the new version.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        StateConflict: ``expected_version`` was not the current version.
        InvalidInput: a rollback to a version that is not kept.
    """
    outcome = result.outcome
    if outcome is Outcome.NOT_FOUND:
        _not_found(op.conversation_id)
    if outcome is Outcome.CONFLICT:
        raise StateConflict(op.conversation_id, op.expected_version or 0, result.value)
    if outcome is Outcome.NO_VERSION:
        _not_kept(op.conversation_id, op.rollback_to, "to_version")
    return result.value


def finish_load_state(
    result: Result[StateRow | None], op: LoadStateOp, model: type[T] | None
) -> StateSnapshot[Any]:
    """load_state(): the snapshot, as ``model`` when given (version 0: nothing saved).

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
        InvalidInput: that version is not kept, or the state does not fit ``model``.
    """
    outcome, row = result
    if outcome is _NOT_FOUND:
        _not_found(op.conversation_id)
    if outcome is _NO_VERSION:
        _not_kept(op.conversation_id, op.version, "version")
    if row is None:
        return _snapshot(None, 0, None)
    return _snapshot(load_state(row.value_json, model), row.version, from_us(row.saved_us))


def finish_list(result: Result[list[ConversationRow]], op: ListOp) -> Page[Conversation]:
    """list(): a page; the backend fetched one row more than ``op.limit`` to tell if one follows."""
    rows = result.value
    items = [to_conversation(r) for r in rows[: op.limit]]
    more = len(rows) > op.limit
    return Page(items=items, next_cursor=encode_page(rows[op.limit - 1]) if more else None)


def finish_counts(result: Result[TenantCounts]) -> Counts:
    """counts()."""
    row = result.value
    return Counts(sum(row.by_status.values()), row.by_status, row.by_stage)


def finish_delete(result: Result[None], op: DeleteOp) -> None:
    """delete().

    Raises:
        ConversationNotFound: there was no live conversation with that id.
    """
    if result.outcome is Outcome.NOT_FOUND:
        _not_found(op.conversation_id)


def finish_delete_contact(
    result: Result[ErasureCounts], op: DeleteContactOp, url: str
) -> ErasureReceipt:
    """delete_contact(): the receipt of what the backend erased in one transaction.

    ``url`` is the store's URL with its password hidden; its scheme (aliases resolved) names
    the backend.
    """
    erased = result.value
    scheme = url.split(":", 1)[0]
    return ErasureReceipt(
        tenant=op.tenant,
        contact_id=op.contact_id,
        conversations=erased.conversations,
        live=erased.live,
        messages=erased.messages,
        states=erased.states,
        facts=erased.facts,
        events=erased.events,
        erased_at=from_us(op.now_us),
        backend=SCHEME_ALIASES.get(scheme, scheme),
        store=url,
    )


def finish_sweep(result: Result[SweepCounts], op: SweepOp) -> SweepReport:
    """sweep()."""
    row = result.value
    return SweepReport(row.idled, row.purged, row.facts_purged, op.dry_run)


def finish_events(result: Result[list[EventRow]], after: str | None) -> list[Event]:
    """One read of events() after cursor ``after``.

    Raises:
        CursorExpired: the cursor fell out of the bounded log.
    """
    if result.outcome is Outcome.EXPIRED:
        raise CursorExpired(str(after))
    return [to_event(r) for r in result.value]


def finish_lease(result: Result[int], conversation_id: str) -> int | None:
    """One attempt of turn(): the fencing token, or None while another worker holds it.

    Raises:
        ConversationNotFound: absent, expired or another tenant's.
    """
    if result.outcome is Outcome.NOT_FOUND:
        _not_found(conversation_id)
    return result.value if result.outcome is Outcome.OK else None


def finish_remember(result: Result[FactRow]) -> Fact:
    """remember()."""
    return to_fact(result.value)


def finish_recall(result: Result[list[FactRow]], now_us: int) -> list[Fact]:
    """recall(): the live facts, each with the versions of its history still live."""
    return [to_fact(r, now_us) for r in result.value]
