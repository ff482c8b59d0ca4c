"""The JSON shapes of the /v1 API, with the examples ``/openapi.json`` shows."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

import threadkeep
from threadkeep import (
    Conversation,
    Counts,
    ErasureReceipt,
    Event,
    Message,
    Retention,
    StateSnapshot,
)

__all__ = [
    "AppendIn",
    "ChatIn",
    "ChatOut",
    "ConversationOut",
    "ConversationPage",
    "CountsOut",
    "ErasureOut",
    "ErrorOut",
    "MessageList",
    "MessageOut",
    "RetentionIn",
    "StageIn",
    "StartIn",
    "StateIn",
    "StateOut",
    "StateProblem",
    "StatusIn",
    "VisitorConversationOut",
]

_ID = "01JDZ3V7K2M9X4QW8T6R5YB0NC"
_AT = "2026-11-30T09:15:02.123456+00:00"
StatusName = Literal["new", "active", "idle", "waiting_agent", "closed"]
RoleName = Literal["user", "assistant", "agent", "system", "tool"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """What went wrong."""

    type: str = Field(description="the error class, e.g. ConversationNotFound")
    message: str = Field(description="what was wrong and what is allowed")
    field: str | None = Field(default=None, description="the offending field, when one is")
    rule: str | None = Field(default=None, description="the validation rule that failed")
    errors: list[dict[str, Any]] | None = Field(default=None, description="every failed rule")
    conversation_id: str | None = Field(default=None, description="the conversation concerned")
    message_seq: int | None = Field(
        default=None, description="503 of a chat turn: the user's message was stored at this seq"
    )


class ErrorOut(BaseModel):
    """Every error response."""

    error: ErrorDetail

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "type": "ConversationNotFound",
                        "message": f"conversation '{_ID}' not found",
                    }
                }
            ]
        }
    )


class ConversationOut(BaseModel):
    """One conversation."""

    id: str
    tenant: str
    contact_id: str
    agent_id: str | None
    channel: str | None
    status: StatusName
    stage: str | None
    metadata: dict[str, Any]
    created_at: str
    last_activity_at: str
    expires_at: str | None
    message_count: int
    state_version: int
    allowed_statuses: list[StatusName] = Field(
        description="the statuses it may move to now (the lifecycle's rule, for buttons)"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _ID,
                    "tenant": "loc-1",
                    "contact_id": "+15550100",
                    "agent_id": "jorge",
                    "channel": "sms",
                    "status": "active",
                    "stage": "Q2",
                    "metadata": {"intent": "sell"},
                    "created_at": _AT,
                    "last_activity_at": _AT,
                    "expires_at": "2026-12-07T09:15:02.123456+00:00",
                    "message_count": 4,
                    "state_version": 2,
                    "allowed_statuses": ["closed", "idle", "waiting_agent"],
                }
            ]
        }
    )

    @classmethod
    def of(cls, conv: Conversation) -> ConversationOut:
        """Build it from a Conversation."""
        allowed = sorted(s.value for s in threadkeep.TRANSITIONS[threadkeep.Status(conv.status)])
        return cls.model_validate({**conv.to_dict(), "allowed_statuses": allowed})


class VisitorConversationOut(BaseModel):
    """One conversation as its visitor sees it: no stage, metadata, tenant or agent."""

    id: str
    status: StatusName
    created_at: str
    last_activity_at: str
    expires_at: str | None

    @classmethod
    def of(cls, conv: Conversation) -> VisitorConversationOut:
        """Build it from a Conversation."""
        return cls.model_validate(
            {k: v for k, v in conv.to_dict().items() if k in cls.model_fields}
        )


class ConversationPage(BaseModel):
    """One page of the listing, newest activity first."""

    items: list[ConversationOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")


class CountsOut(BaseModel):
    """How many live conversations the tenant has, by status and by stage."""

    total: int
    by_status: dict[str, int]
    by_stage: dict[str, int]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"total": 3, "by_status": {"active": 2, "waiting_agent": 1}, "by_stage": {"Q1": 3}}
            ]
        }
    )

    @classmethod
    def of(cls, counts: Counts) -> CountsOut:
        """Build it from Counts."""
        return cls(total=counts.total, by_status=counts.by_status, by_stage=counts.by_stage)


class ErasureOut(BaseModel):
    """The receipt of a contact's erasure: what went, from where, when."""

    tenant: str
    contact_id: str
    conversations: list[str] = Field(description="the erased conversations, oldest first")
    live: int = Field(description="how many of them had not expired")
    messages: int = Field(description="messages erased with them")
    states: int = Field(description="state versions erased with them")
    facts: int = Field(description="remembered facts of the contact erased")
    events: int = Field(
        description="event log entries erased with them (the log keeps one content-free "
        "conversation.deleted event per conversation)"
    )
    erased_at: str
    backend: str = Field(description="memory, sqlite, redis, rediss or postgresql")
    ghl_snapshots: int = Field(
        description="GoHighLevel sync snapshots of the contact erased from the sync's tenant "
        "(0 when GoHighLevel is off)"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tenant": "loc-1",
                    "contact_id": "+15550100",
                    "conversations": [_ID],
                    "live": 1,
                    "messages": 12,
                    "states": 3,
                    "facts": 2,
                    "events": 19,
                    "erased_at": _AT,
                    "backend": "postgresql",
                    "ghl_snapshots": 1,
                }
            ]
        }
    )

    @classmethod
    def of(cls, receipt: ErasureReceipt, ghl_snapshots: int) -> ErasureOut:
        """Build it from the store's receipt and the sync snapshots erased alongside."""
        data = receipt.to_dict()
        del data["store"]  # the store's URL is the operator's business, not an API client's
        return cls(**data, ghl_snapshots=ghl_snapshots)


class MessageOut(BaseModel):
    """One message."""

    conversation_id: str
    seq: int = Field(description="1, 2, 3 … per conversation, gap-free in commit order")
    role: RoleName
    content: str
    created_at: str
    metadata: dict[str, Any]
    idempotency_key: str | None
    payload: dict[str, Any] | list[Any] | None = Field(
        default=None, description="the item or content blocks stored verbatim with it, if any"
    )
    delivery: dict[str, Any] | None = Field(
        default=None,
        description="a reply sent through a channel: {state: queued | sent | delivered | read "
        "| failed, provider_id, error, updated_at}; null for other messages",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": _ID,
                    "seq": 3,
                    "role": "user",
                    "content": "About 350k, the roof needs work.",
                    "created_at": _AT,
                    "metadata": {},
                    "idempotency_key": "wamid.HBgL123",
                }
            ]
        }
    )

    @classmethod
    def of(cls, message: Message, *, visitor: bool = False) -> MessageOut:
        """Build it from a Message (for a visitor: without its metadata or payload).

        The fields of ``Message.to_dict()``, read one by one: ``to_dict`` goes through
        ``dataclasses.asdict``, a deep copy that costs more than the rest of the model. The
        metadata and payload are plain JSON values already (the store keeps JSON text and
        decodes it), so they are passed as they are.
        """
        data = {
            "conversation_id": message.conversation_id,
            "seq": message.seq,
            "role": message.role,
            "content": message.content,
            "created_at": message.created_at.isoformat(),
            "metadata": {} if visitor else message.metadata,
            "idempotency_key": message.idempotency_key,
            "payload": None if visitor else message.payload,
            "delivery": message.delivery,
        }
        return cls.model_validate(data)


class MessageList(BaseModel):
    """Messages, oldest first."""

    items: list[MessageOut]


class ChatIn(_In):
    """One user message for the bot."""

    message: str = Field(
        min_length=1, description="the user's text", examples=["Hi, I want to sell my house"]
    )
    conversation_id: str | None = Field(
        default=None, description="continue this conversation", examples=[_ID]
    )
    contact_id: str | None = Field(
        default=None,
        max_length=256,
        description="without conversation_id: resume the contact's open conversation or start "
        "one. From a visitor (no API key): the browser's own random id (16+ characters), "
        "turned into a contact of its own, on a first message only (a token names its contact)",
        examples=["+15550100"],
    )
    channel: str | None = Field(default=None, examples=["web"])

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"message": "Hi, I want to sell", "contact_id": "+1555"}]}
    )


class ChatOut(BaseModel):
    """The bot's answer to one turn."""

    conversation_id: str | None = Field(description="null only when the store was unreachable")
    reply: str | None = Field(description="null while a human agent handles the conversation")
    status: StatusName | None
    stage: str | None
    persisted: bool = Field(
        description="false: the store was unreachable before this request wrote anything: "
        "this message was not stored (one stored earlier with the same Idempotency-Key stays "
        "stored); a store failing during or after the write is a 503 TurnIncomplete instead"
    )
    message_seq: int | None = Field(default=None, description="seq of the stored user message")
    reply_seq: int | None = Field(default=None, description="seq of the stored reply")
    replayed: bool = Field(
        default=False, description="true: a retried delivery; this is the first answer again"
    )
    visitor_token: str | None = Field(
        default=None,
        description="with public chat: the bearer token of this conversation and its contact "
        "only (read it, post to it, follow its events); null when public chat is off",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "conversation_id": _ID,
                    "reply": "Thanks! What condition is the house in?",
                    "status": "active",
                    "stage": "Q1",
                    "persisted": True,
                    "message_seq": 1,
                    "reply_seq": 2,
                    "replayed": False,
                }
            ]
        }
    )


class RetentionIn(_In):
    """How long one conversation lives; a field left out keeps the service's setting."""

    ttl: float | None = Field(
        default=None,
        gt=0,
        le=10 * 365 * 24 * 3600,
        description="seconds it lives after its last activity (sliding); null: until deleted",
        examples=[2592000],
    )
    idle_after: float | None = Field(
        default=None,
        gt=0,
        le=10 * 365 * 24 * 3600,
        description="seconds without activity before it is marked idle",
        examples=[1800],
    )
    window: int | None = Field(
        default=None, ge=1, le=1000, description="how many recent messages the bot reads"
    )
    max_messages: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="keep only the newest N messages; null: keep all",
    )

    def over(self, base: Retention) -> Retention:
        """Return ``base`` with the fields given here (an explicit null ttl: never expires)."""
        given = {name: getattr(self, name) for name in self.model_fields_set}
        if given.get("idle_after") is None:
            given.pop("idle_after", None)
        if given.get("window") is None:
            given.pop("window", None)
        if "idle_after" in given:
            given["idle_after"] = timedelta(seconds=given["idle_after"])
        if given.get("ttl") is not None:
            given["ttl"] = timedelta(seconds=given["ttl"])
        return replace(base, **given)


class StartIn(_In):
    """A new conversation."""

    contact_id: str = Field(min_length=1, max_length=256, examples=["+15550100"])
    agent_id: str | None = Field(default=None, examples=["jorge"])
    channel: str | None = Field(default=None, examples=["sms"])
    stage: str | None = Field(default=None, examples=["Q0"])
    metadata: dict[str, Any] | None = Field(default=None, examples=[{"intent": "sell"}])
    retention: RetentionIn | None = Field(
        default=None,
        description="this conversation's retention instead of the service's "
        "(THREADKEEP_TTL, THREADKEEP_IDLE_AFTER, THREADKEEP_WINDOW)",
        examples=[{"ttl": None}, {"ttl": 2592000, "max_messages": 500}],
    )


class AppendIn(_In):
    """A message to store (no bot is called)."""

    role: RoleName = Field(examples=["agent"])
    content: str = Field(
        default="",
        description="the text people read; may be empty when a payload carries the message",
        examples=["Hi, this is Jorge from the office."],
    )
    metadata: dict[str, Any] | None = Field(default=None, examples=[{"via": "dashboard"}])
    payload: dict[str, Any] | list[Any] | None = Field(
        default=None,
        description="a framework's item or a provider's content blocks, kept verbatim "
        "(Limits.max_payload_bytes)",
        examples=[{"type": "function_call", "call_id": "c1", "name": "estimate",
                   "arguments": "{}"}],
    )  # fmt: skip


class StatusIn(_In):
    """A lifecycle change."""

    status: StatusName = Field(examples=["waiting_agent"])
    agent_id: str | None = Field(
        default=None,
        max_length=256,
        examples=["jorge"],
        description="who takes the conversation: set as its agent_id along with the status "
        "(absent or null: the agent stays as it is)",
    )

    @field_validator("agent_id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        """Refuse what the store would refuse, before the status changes."""
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ValueError("an agent id is 1-256 printable characters")
        return value


class StageIn(_In):
    """A stage change (null clears it)."""

    stage: str | None = Field(examples=["Q3"])


class StateIn(_In):
    """A state document to save; send the version it is based on as ``If-Match``."""

    value: Any = Field(examples=[{"stage": "Q2", "price_expectation": 350000}])


class StateProblem(BaseModel):
    """One way a stored state does not fit the bot's state schema."""

    field: str
    rule: str
    message: str


class StateOut(BaseModel):
    """A conversation's state; version 0 and value null when nothing was saved yet."""

    value: Any
    version: int
    saved_at: str | None
    problems: list[StateProblem] = Field(
        default_factory=list,
        description="where the stored value does not fit the bot's state schema (if it has one)",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"value": {"stage": "Q2"}, "version": 3, "saved_at": _AT}],
        }
    )

    @classmethod
    def of(cls, snap: StateSnapshot[Any], problems: list[StateProblem] | None = None) -> StateOut:
        """Build it from a StateSnapshot."""
        saved = None if snap.saved_at is None else snap.saved_at.isoformat()
        return cls(value=snap.value, version=snap.version, saved_at=saved, problems=problems or [])


class EventOut(BaseModel):
    """One change event, as the ``data:`` of an SSE message."""

    id: str
    kind: str
    tenant: str
    conversation_id: str
    data: dict[str, Any]
    at: str

    @classmethod
    def of(cls, event: Event) -> EventOut:
        """Build it from an Event."""
        return cls.model_validate(event.to_dict())
