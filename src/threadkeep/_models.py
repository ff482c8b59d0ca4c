"""The values the Store returns: frozen, typed, with aware UTC datetimes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from threadkeep._config import Tier
from threadkeep._rules.events import EventKind
from threadkeep._rules.lifecycle import Status

__all__ = [
    "Conversation",
    "Counts",
    "ErasureReceipt",
    "Event",
    "Fact",
    "FactVersion",
    "Message",
    "Page",
    "StateSnapshot",
    "SweepReport",
    "jsonable",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation with a contact.

    Attributes:
        id: time-sortable, URL-safe id.
        tenant: namespace (CRM location, company …).
        contact_id: the customer (phone number, CRM id …).
        agent_id: the bot or agent persona answering, if any.
        channel: ``web``, ``whatsapp``, ``sms`` …
        status: ``new``, ``active``, ``idle``, ``waiting_agent`` or ``closed``.
        stage: free domain string such as ``"Q2"``.
        metadata: JSON object.
        created_at: when it started.
        last_activity_at: last message or change.
        expires_at: when it expires unless there is activity (``None``: never).
        message_count: messages currently kept.
        state_version: current state version (0 when no state was saved).
        created: True only on the value that the ``start()`` or ``resume()`` call which
            created this conversation returned; False when ``resume()`` found the contact's open
            one, and on every value read later. It is about the call, not the conversation, so
            it takes no part in ``==`` and is left out of ``to_dict()``.
    """

    id: str
    tenant: str
    contact_id: str
    agent_id: str | None
    channel: str | None
    status: Status
    stage: str | None
    metadata: dict[str, Any]
    created_at: datetime
    last_activity_at: datetime
    expires_at: datetime | None
    message_count: int
    state_version: int = 0
    created: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the stored fields (datetimes as ISO 8601 strings)."""
        data = cast(dict[str, Any], jsonable(asdict(self)))
        del data["created"]
        return data


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation.

    Attributes:
        conversation_id: the conversation it belongs to.
        seq: 1, 2, 3 … per conversation, gap-free in commit order.
        role: ``user``, ``assistant``, ``agent``, ``system`` or ``tool``.
        content: the text people read (may be empty when ``payload`` carries the message).
        created_at: when it was stored.
        metadata: JSON object.
        idempotency_key: the caller's key, if one was given.
        replayed: True when ``append()`` was given an idempotency key it had already stored:
            nothing was written and this is the message stored the first time. It is about the
            call, not the message, so it takes no part in ``==`` and is left out of
            ``to_dict()``.
        payload: the JSON stored with it, verbatim (a framework's item, a provider's content
            blocks …), or None; ``threadkeep.formats`` reads it for ``context(format=…)``.
        delivery: how far a message sent through a channel got (see ``delivery``).
    """

    conversation_id: str
    seq: int
    role: str
    content: str
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    replayed: bool = field(default=False, compare=False)
    payload: Any = None

    @property
    def delivery(self) -> dict[str, Any] | None:
        """How far a message sent through a channel got, or None (never sent through one).

        ``{"state": "queued" | "sent" | "delivered" | "read" | "failed", "provider_id": …,
        "error": … | None, "updated_at": …}``, kept in the metadata under ``delivery`` and
        changed only by ``Store.set_delivery`` (never moved down).
        """
        value = self.metadata.get("delivery")
        return value if isinstance(value, dict) else None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the stored fields (datetimes as ISO 8601 strings)."""
        data = cast(dict[str, Any], jsonable(asdict(self)))
        del data["replayed"]
        data["delivery"] = self.delivery
        return data


@dataclass(frozen=True, slots=True)
class StateSnapshot(Generic[T]):
    """A conversation's state at one version.

    Attributes:
        value: the state (``None`` when nothing was saved yet).
        version: its version; 0 means nothing was saved yet.
        saved_at: when that version was saved.
    """

    value: T | None
    version: int
    saved_at: datetime | None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing.

    Attributes:
        items: the page's items.
        next_cursor: pass it as ``cursor=`` for the next page; ``None`` on the last page.
    """

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the change log.

    Attributes:
        id: the cursor of this event; pass it as ``after=`` to resume after it.
        kind: what happened (an EventKind: ``conversation.started``, ``message.appended`` …).
        tenant: the conversation's tenant.
        conversation_id: the conversation that changed.
        data: details (never message content of erased conversations).
        at: when it happened.
    """

    id: str
    kind: EventKind
    tenant: str
    conversation_id: str
    data: dict[str, Any]
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (datetimes as ISO 8601 strings).

        Built field by field: ``asdict`` deep-copied ``data`` before ``jsonable`` copied it
        again, and an event stream renders every event it sends (``GET /v1/events``).
        """
        return {
            "id": self.id,
            "kind": self.kind,
            "tenant": self.tenant,
            "conversation_id": self.conversation_id,
            "data": jsonable(self.data),
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What ``sweep()`` did (or would do, with ``dry_run=True``).

    Attributes:
        idled: conversations marked idle.
        purged: expired conversations physically removed.
        facts_purged: expired contact-memory facts removed.
        dry_run: whether nothing was changed.
    """

    idled: int
    purged: int
    facts_purged: int
    dry_run: bool


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What ``delete_contact()`` erased, where and when: counted in the erasing transaction.

    Attributes:
        tenant: the contact's tenant.
        contact_id: the contact.
        conversations: ids of the erased conversations, oldest first (expired ones too).
        live: how many of them had not expired.
        messages: messages erased with them.
        states: state versions erased with them.
        facts: remembered facts of the contact erased.
        events: entries of the event log erased with the conversations (the log then holds
            one ``conversation.deleted`` event per conversation, with no content).
        erased_at: when (the store's clock).
        backend: the store's kind: ``memory``, ``sqlite``, ``redis``, ``rediss`` or
            ``postgresql``.
        store: the store's URL, password hidden.
    """

    tenant: str
    contact_id: str
    conversations: tuple[str, ...]
    live: int
    messages: int
    states: int
    facts: int
    events: int
    erased_at: datetime
    backend: str
    store: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``erased_at`` as an ISO 8601 string)."""
        return cast(dict[str, Any], jsonable(asdict(self)))


@dataclass(frozen=True, slots=True)
class FactVersion:
    """A value a fact had before a newer one superseded it.

    Attributes:
        value: the value then.
        tier: its tier.
        source: who set it (see Fact.source).
        updated_at: when it was remembered.
        expires_at: when this version is forgotten (its tier's time after ``updated_at``).
    """

    value: Any
    tier: Tier
    source: dict[str, Any] | None
    updated_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Fact:
    """A remembered fact about a contact, outliving one conversation.

    Attributes:
        key: the fact's name.
        value: any JSON value.
        tier: ``critical``, ``high``, ``medium`` or ``low``.
        updated_at: when it was last remembered.
        expires_at: when it is forgotten.
        source: who set it, as given to ``remember`` (e.g. ``{"kind": "conversation",
            "conversation_id": …, "message_seq": 3}`` or ``{"kind": "crm", "event": …}``).
        history: the values it replaced, newest first, each kept for its own tier's time.
    """

    key: str
    value: Any
    tier: Tier
    updated_at: datetime
    expires_at: datetime
    source: dict[str, Any] | None = None
    history: tuple[FactVersion, ...] = ()


@dataclass(frozen=True, slots=True)
class Counts:
    """How many live conversations a tenant has, by status and by stage.

    Attributes:
        total: all live conversations.
        by_status: status → count.
        by_stage: stage → count (conversations without a stage are left out).
    """

    total: int
    by_status: dict[str, int]
    by_stage: dict[str, int]


def jsonable(value: Any) -> Any:
    """Return ``value`` with datetimes as ISO 8601 strings, recursively (dicts, lists, tuples)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
