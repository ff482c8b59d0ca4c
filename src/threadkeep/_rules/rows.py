"""What backends store and return: rows, with times as integer microseconds since the epoch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from threadkeep._rules.retention import RetentionUs

__all__ = [
    "ConversationRow",
    "EventRow",
    "FactRow",
    "MessageRow",
    "StateRow",
    "SweepCounts",
    "TenantCounts",
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
    """An event as stored; ``id`` is the backend's cursor text (``"12"``, Redis ``"12-0"``)."""

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
class TenantCounts:
    """Live conversations of a tenant, by status and by stage."""

    by_status: dict[str, int]
    by_stage: dict[str, int]


@dataclass(frozen=True, slots=True)
class SweepCounts:
    """How many things a sweep changed, or would change."""

    idled: int
    purged: int
    facts_purged: int
