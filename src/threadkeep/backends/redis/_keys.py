"""Key names. They mirror the builders at the top of ``scripts/_lib.lua``.

Every key of a store starts with ``prefix{prefix}:``: it begins with the prefix (so
``SCAN MATCH prefix*`` finds it) and carries the hash tag ``{prefix}``, hence one Redis Cluster
slot, so a script may touch a conversation, the tenant's indexes and the event log atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one store (one ``prefix``)."""

    prefix: str

    @property
    def base(self) -> str:
        """The common start of every key: the prefix, then the store's hash tag."""
        return self.prefix + "{" + self.prefix + "}:"

    @property
    def events(self) -> str:
        """The event stream; also the routing key of every script."""
        return self.base + "ev"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of the store."""
        return self.prefix + "{*"  # a prefix is letters, digits, "_" and "-": nothing to escape

    def conversation(self, conversation_id: str) -> str:
        """The hash holding one conversation's fields."""
        return f"{self.base}c:{conversation_id}"

    def messages(self, conversation_id: str) -> str:
        """The list of a conversation's kept messages."""
        return f"{self.base}m:{conversation_id}"

    def idempotency(self, conversation_id: str) -> str:
        """The hash of a conversation's remembered idempotency keys."""
        return f"{self.base}i:{conversation_id}"

    def idempotency_order(self, conversation_id: str) -> str:
        """The list of caller idempotency keys, oldest first (bounds the hash)."""
        return f"{self.base}iq:{conversation_id}"

    def retry_order(self, conversation_id: str) -> str:
        """The list of internal retry keys, oldest first (bounds the hash)."""
        return f"{self.base}rq:{conversation_id}"

    def states(self, conversation_id: str) -> str:
        """The hash of a conversation's kept state versions."""
        return f"{self.base}s:{conversation_id}"

    def event_ids(self, conversation_id: str) -> str:
        """The list of the ids of a conversation's retained events (erasure needs no scan)."""
        return f"{self.base}e:{conversation_id}"

    def conversation_keys(self, conversation_id: str) -> tuple[str, ...]:
        """Every key that belongs to one conversation alone."""
        return (
            self.conversation(conversation_id),
            self.messages(conversation_id),
            self.idempotency(conversation_id),
            self.idempotency_order(conversation_id),
            self.retry_order(conversation_id),
            self.states(conversation_id),
            self.event_ids(conversation_id),
        )

    def facts(self, tenant: str, contact_id: str) -> str:
        """The hash of a contact's facts."""
        return f"{self.base}f:{len(tenant)}:{tenant}:{contact_id}"
