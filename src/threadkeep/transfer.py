"""Export and import of whole conversations as JSON records (``threadkeep export``/``import``).

The public path for moving conversations between stores (and backends)::

    total, records = export_records(source, "loc-1")  # the tenant's live conversations
    for record in records:  # one JSON-ready dict each; a JSONL line once dumped
        import_record(target, clock, record)  # target opened with clock=clock (a ManualClock)

A record is one JSON object: ``{"conversation": {…}, "messages": […], "state": {"version",
"value"}, "facts": […]}``; ``parse_record`` reads one back from a line and checks its shape.
Import creates the conversation with its own id (the one path that does; it looks the id up
first), then replays the record through the store's own operations on a ``ManualClock`` set to
the original times, so every backend applies its own rules and the result keeps the
conversation's id, tenant, contact, agent, channel, metadata, stage, status, timestamps, time
to live, every message (role, content, payload, metadata, time, idempotency key) and the
contact's facts with their sources. Three things are not carried: the state's earlier versions
(the current value is saved again, as version 1), the values a fact superseded (its history),
and the seq numbers of a history trimmed by ``max_messages`` (the kept messages are numbered
from 1 again).

Importing a record twice changes nothing: an existing conversation only receives the messages
it lacks, and only changed state, stage, status and facts are written. A record is checked
whole (times, messages, facts) before anything is written, and a conversation the import
created is erased again if a later write fails, so a failed record leaves nothing half-made.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from threadkeep._clock import ManualClock
from threadkeep._exceptions import (
    ConversationNotFound,
    IllegalTransition,
    InvalidInput,
    ThreadkeepError,
)
from threadkeep._models import Conversation, jsonable
from threadkeep._rules import history, plans
from threadkeep._store import Store

__all__ = [
    "conversation_record",
    "export_conversations",
    "export_records",
    "import_record",
    "jsonable",
    "parse_record",
    "write_record",
]

_NEWEST = 2**62  # a seq above every stored one: before= it reads the newest messages
_PAGE = 200  # messages read (and written) at a time by an export


def write_record(store: Store, conv: Conversation, write: Callable[[str], object]) -> None:
    """Write one conversation's export record as JSON text, in pieces (no newline).

    The history is read and written a page at a time, so a long conversation is never held
    in memory whole; the text is what ``json.dumps(conversation_record(...))`` would give.
    """
    write('{"conversation": ' + json.dumps(conv.to_dict()) + ', "messages": [')
    sep = ""
    after = 0
    while page := store.messages(conv.id, after=after, limit=_PAGE, tenant=conv.tenant):
        for m in page:
            write(sep + json.dumps(m.to_dict()))
            sep = ", "
        after = page[-1].seq
    state = store.load_state(conv.id, tenant=conv.tenant)
    facts = [jsonable(asdict(f)) for f in store.recall(conv.contact_id, tenant=conv.tenant)]
    write(
        '], "state": ' + json.dumps({"version": state.version, "value": state.value})
        + ', "facts": ' + json.dumps(facts) + "}"
    )  # fmt: skip


def conversation_record(store: Store, conv: Conversation) -> dict[str, Any]:
    """Return one conversation as an export record: fields, whole history, state, facts."""
    parts: list[str] = []
    write_record(store, conv, parts.append)
    record: dict[str, Any] = json.loads("".join(parts))
    return record


def export_conversations(store: Store, tenant: str) -> tuple[int, Iterator[Conversation]]:
    """Return how many live conversations ``tenant`` has and an iterator over them.

    The conversations are listed first (keyset pages, newest activity first), so a long
    export can show progress.

    Raises:
        InvalidInput: a bad tenant name.
    """
    convs: list[Conversation] = []
    cursor: str | None = None
    while True:
        page = store.list(tenant=tenant, limit=200, cursor=cursor)
        convs.extend(page.items)
        if (cursor := page.next_cursor) is None:
            break
    return len(convs), iter(convs)


def export_records(store: Store, tenant: str) -> tuple[int, Iterator[dict[str, Any]]]:
    """Return how many live conversations ``tenant`` has and an iterator of their records.

    Raises:
        InvalidInput: a bad tenant name.
    """
    total, convs = export_conversations(store, tenant)
    return total, (conversation_record(store, c) for c in convs)


def parse_record(raw: str, where: str = "record") -> dict[str, Any]:
    """Decode and check the shape of one JSONL line of an export.

    Args:
        raw: the line.
        where: names the line in errors (such as ``"line 3"``).

    Raises:
        InvalidInput: not JSON, or not shaped like a record.
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{where}: invalid JSON ({e.msg})", field=where) from None
    conv = data.get("conversation") if isinstance(data, dict) else None
    if not isinstance(conv, dict):
        raise InvalidInput(f"{where}: expected an object with a conversation", field=where)
    for name in ("id", "tenant", "contact_id", "status", "created_at", "last_activity_at"):
        if not isinstance(conv.get(name), str):
            raise InvalidInput(f"{where}: conversation.{name} must be a string", field=where)
    msgs = data.get("messages", [])
    if not isinstance(msgs, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("seq"), int)
        and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str)
        for m in msgs
    ):
        raise InvalidInput(
            f"{where}: messages must be objects with seq, role and content", field=where
        )
    facts = data.get("facts", [])
    if not isinstance(facts, list) or not all(
        isinstance(f, dict) and isinstance(f.get("key"), str) for f in facts
    ):
        raise InvalidInput(f"{where}: facts must be objects with a key", field=where)
    return dict(data)


def _when(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be an ISO 8601 time, not {value!r}", field=field)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field} must be an ISO 8601 time, not {value!r}", field=field
        ) from None
    if when.tzinfo is None:
        raise InvalidInput(f"{field} must carry a time zone, not {value!r}", field=field)
    return when


def _start(store: Store, clock: ManualClock, src: Mapping[str, Any], tenant: str) -> Conversation:
    clock.set(_when(src.get("created_at"), "conversation.created_at"))
    expires = src.get("expires_at")
    ttl = None
    if expires is not None:
        last = _when(src.get("last_activity_at"), "conversation.last_activity_at")
        ttl = _when(expires, "conversation.expires_at") - last
    return store._create_with_id(
        src["id"], src["contact_id"], tenant=tenant, agent_id=src.get("agent_id"),
        channel=src.get("channel"), stage=src.get("stage"), metadata=src.get("metadata"),
        retention=replace(store.retention, ttl=ttl),
    )  # fmt: skip


def import_record(
    store: Store, clock: ManualClock, record: Mapping[str, Any], *, tenant: str | None = None
) -> bool:
    """Write one exported record into ``store``; return True when it made the conversation.

    Args:
        store: a store opened with ``clock``, which this function sets to the record's times.
        clock: the store's clock.
        record: one record as written by ``export_records``.
        tenant: put the conversation in this tenant instead of the record's own.

    Raises:
        InvalidInput: a malformed record, or its id is taken by another tenant's conversation.
        ThreadkeepError: what the store raises for the record's content.
    """
    src = record["conversation"]
    tenant = tenant or src["tenant"]
    try:
        conv = store.get(src["id"])
    except ConversationNotFound:
        conv = None
    if conv is not None and conv.tenant != tenant:
        raise InvalidInput(
            f"conversation {src['id']!r} already exists in tenant {conv.tenant!r}", field="id"
        )
    _check(store, record, tenant)
    if conv is not None:
        _replay(store, clock, record, conv, tenant)
        return False
    conv = _start(store, clock, src, tenant)
    try:
        _replay(store, clock, record, conv, tenant)
    except BaseException:
        with contextlib.suppress(ThreadkeepError):  # the first error is the one to report
            store.delete(conv.id, tenant=tenant)
        raise
    return True


def _check(store: Store, record: Mapping[str, Any], tenant: str) -> None:
    """Refuse a record whose times, messages or facts a store would refuse (no I/O).

    Raises:
        InvalidInput: the first bad field, named.
    """
    src = record["conversation"]
    for name in ("created_at", "last_activity_at"):
        _when(src.get(name), f"conversation.{name}")
    if src.get("expires_at") is not None:
        _when(src["expires_at"], "conversation.expires_at")
    for m in record.get("messages") or []:
        _when(m.get("created_at"), "message.created_at")
        history.check_message(
            m["role"], m["content"], payload=m.get("payload"),
            metadata=m.get("metadata") or None, idempotency_key=m.get("idempotency_key"),
            limits=store.limits,
        )  # fmt: skip
    for fact in record.get("facts") or []:
        when = _when(fact.get("updated_at"), "fact.updated_at")
        plans.remember(
            int(when.timestamp() * 1_000_000), store.limits, src["contact_id"], fact["key"],
            fact.get("value"), tenant, fact.get("tier", "medium"), fact.get("source"),
        )  # fmt: skip


def _replay(
    store: Store, clock: ManualClock, record: Mapping[str, Any], conv: Conversation, tenant: str
) -> None:
    """Write what ``conv`` lacks of ``record``: messages, state, stage, status, facts."""
    src = record["conversation"]
    messages = sorted(record.get("messages") or [], key=lambda m: m["seq"])
    # the newest message, whatever it is (last= would skip a trailing tool result)
    have = store.messages(conv.id, before=_NEWEST, limit=1, tenant=tenant)
    for m in messages[have[-1].seq if have else 0 :]:
        clock.set(_when(m.get("created_at"), "message.created_at"))
        store.append(
            conv.id, m["role"], m["content"], metadata=m.get("metadata") or None,
            idempotency_key=m.get("idempotency_key"), tenant=tenant, payload=m.get("payload"),
        )  # fmt: skip
    clock.set(_when(src.get("last_activity_at"), "conversation.last_activity_at"))
    state = record.get("state") or {}
    if state.get("version") and store.load_state(conv.id, tenant=tenant).value != state["value"]:
        store.save_state(conv.id, state["value"], tenant=tenant)
    conv = store.get(conv.id, tenant=tenant)
    if conv.stage != src.get("stage") and conv.status != "closed":
        conv = store.set_stage(conv.id, src.get("stage"), tenant=tenant)
    if conv.status != src.get("status"):
        # ``new`` cannot come back once the replayed messages moved the conversation on.
        with contextlib.suppress(IllegalTransition):
            store.set_status(conv.id, src["status"], tenant=tenant)
    known = {f.key: (f.value, f.tier) for f in store.recall(src["contact_id"], tenant=tenant)}
    for fact in record.get("facts") or []:
        if known.get(fact["key"]) != (fact.get("value"), fact.get("tier")):
            clock.set(_when(fact.get("updated_at"), "fact.updated_at"))
            store.remember(
                src["contact_id"], fact["key"], fact.get("value"), tenant=tenant,
                tier=fact.get("tier", "medium"), source=fact.get("source"),
            )  # fmt: skip
