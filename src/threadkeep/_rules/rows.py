"""What backends store and return: rows, with times as integer microseconds since the epoch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any, NamedTuple, Protocol

from threadkeep._rules.retention import RetentionUs

__all__ = [
    "ConversationRow",
    "ErasureCounts",
    "EventRow",
    "FactRow",
    "MessageRow",
    "NewMessage",
    "StateRow",
    "SweepCounts",
    "TenantCounts",
    "WindowLike",
    "WindowRow",
    "parse_json",
]


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """A conversation as stored."""

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


class MessageRow(NamedTuple):
    """A message as stored; ``link`` holds its ``parts.link_of`` bits (windows read them)."""

    conversation_id: str
    seq: int
    role: str
    content: str
    created_us: int
    metadata_json: str
    idempotency_key: str | None
    payload_json: str | None = None
    link: int = 0

    @property
    def payload(self) -> Any:
        """The payload, parsed (None when there is none)."""
        return _parsed(self.payload_json)


class WindowRow(NamedTuple):
    """A message as a context window reads it: who, what, and its ``link`` bits."""

    role: str
    content: str
    payload_json: str | None
    link: int

    @property
    def payload(self) -> Any:
        """The payload, parsed (None when there is none)."""
        return _parsed(self.payload_json)


def _parsed(payload_json: str | None) -> Any:
    return None if payload_json is None else parse_json(payload_json)


# json.loads checks its argument's type, a BOM and surrounding whitespace in Python (three
# calls) before the C scanner; about half of its cost for the short JSON a row holds.
# (typeshed wants a make_scanner as its context; any decoder's settings will do, its TODO says)
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def parse_json(text: str) -> Any:
    """Return ``json.loads(text)``: the same value or error, in about half the time.

    The scanner parses what the store wrote (compact JSON) at once; anything else (leading
    or trailing whitespace, a BOM, bytes, invalid JSON) gets ``json.loads``'s own answer.
    """
    try:
        value, end = _scan(text, 0)
    except (StopIteration, TypeError):
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


class WindowLike(Protocol):
    """What a context window reads of a row (a ``WindowRow``; a ``MessageRow`` has it too)."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def payload_json(self) -> str | None: ...
    @property
    def link(self) -> int: ...
    @property
    def payload(self) -> Any: ...


class NewMessage(NamedTuple):
    """A message to store, checked (``_rules.history``); the backend gives it a seq."""

    role: str
    content: str
    payload_json: str | None
    metadata_json: str
    idempotency_key: str | None
    link: int

    def row(self, conversation_id: str, seq: int, created_us: int) -> MessageRow:
        """Return the stored row of this message at ``seq``."""
        return MessageRow(
            conversation_id, seq, self.role, self.content, created_us, self.metadata_json,
            self.idempotency_key, self.payload_json, self.link,
        )  # fmt: skip


class StateRow(NamedTuple):
    """A state version as stored."""

    version: int
    value_json: str
    saved_us: int


class EventRow(NamedTuple):
    """An event as stored; ``id`` is the backend's cursor text (``"12"``, Redis ``"12-0"``)."""

    id: str
    kind: str
    tenant: str
    conversation_id: str
    data_json: str
    at_us: int


class FactRow(NamedTuple):
    """A contact-memory fact as stored.

    ``source_json`` says who set it (a JSON object, or ``null``); ``history_json`` is the list
    of the values it replaced, newest first, each ``{"value", "tier", "source", "updated_us",
    "expires_us"}`` with the values as JSON text (see ``decide.supersede``).
    """

    key: str
    value_json: str
    tier: str
    updated_us: int
    expires_us: int
    source_json: str = "null"
    history_json: str = "[]"


@dataclass(frozen=True, slots=True)
class TenantCounts:
    """Live conversations of a tenant, by status and by stage."""

    by_status: dict[str, int]
    by_stage: dict[str, int]


@dataclass(frozen=True, slots=True)
class ErasureCounts:
    """What an erasure of a contact removed, counted in the transaction that removed it.

    ``conversations`` are the erased ids in creation order; ``live`` how many of them had not
    expired; ``messages`` kept messages, ``states`` state versions, ``facts`` remembered facts,
    ``events`` entries of the log that went with them (not the erasure events it adds).
    """

    conversations: tuple[str, ...]
    live: int
    messages: int
    states: int
    facts: int
    events: int


@dataclass(frozen=True, slots=True)
class SweepCounts:
    """How many things a sweep changed, or would change."""

    idled: int
    purged: int
    facts_purged: int
