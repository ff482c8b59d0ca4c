"""The store as the channels' durable inbox: inbound messages in, their metadata conventions.

An inbound message is appended as a ``user`` message of the contact's open conversation (one is
started atomically if there is none) with the provider's message id as its idempotency key, so
a redelivered webhook stores nothing new. Its metadata keeps the normalised record under
``channel`` (provider, kind, the provider's timestamp, media ids …). The conversation's channel
is ``whatsapp`` or ``sms`` and its metadata keeps the phone, the profile name, the provider and
the business number (``account``) replies are sent from.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any, Final

from threadkeep import AsyncStore, Conversation, ConversationNotFound, Message
from threadkeep.channels._model import Inbound

__all__ = [
    "INBOUND",
    "SEEN_FACT",
    "conversation_metadata",
    "inbound_of",
    "is_channel_conversation",
    "is_unsent_reply",
    "store_inbound",
]

#: The message metadata key holding the normalised inbound record.
INBOUND: Final = "channel"
#: Contact fact (internal) noting where an inbound message was stored, by its provider id.
SEEN_FACT: Final = "_channel_seen:"


def conversation_metadata(message: Inbound) -> dict[str, Any]:
    """Return what a channel conversation keeps about its contact and the business number."""
    meta: dict[str, Any] = {"provider": message.provider, "account": message.account}
    if message.phone:
        meta["phone"] = message.phone
    if message.profile_name:
        meta["profile_name"] = message.profile_name
    return meta


async def store_inbound(store: AsyncStore, message: Inbound, tenant: str) -> Message | None:
    """Store one inbound message, once (its provider id is the idempotency key).

    A redelivery into the same open conversation is caught by the append's idempotency key; one
    that comes after the conversation was closed (the contact's next message would start a new
    one) is caught by a contact fact noted for each message, kept 7 days (``medium``), as long
    as Meta redelivers.

    Returns:
        The stored message (``replayed`` True when it had been stored before), or None for a
        redelivery of a message that is no longer kept (its conversation was deleted).

    Raises:
        BackendError: the store cannot take it (the webhook must answer non-200).
        InvalidInput: a contact id or text the store refuses.
    """
    key = SEEN_FACT + hashlib.sha256(message.provider_message_id.encode()).hexdigest()[:32]
    seen = await store.recall(message.contact_id, key, tenant=tenant)
    if seen and isinstance(seen[0].value, dict):
        return await _stored(store, seen[0].value, tenant)
    conv = await store.resume(
        message.contact_id,
        tenant=tenant,
        channel=message.channel,
        metadata=conversation_metadata(message),
    )
    stored = await store.append(
        conv.id,
        "user",
        message.text,
        metadata={INBOUND: message.model_dump(mode="json", exclude_defaults=True)},
        idempotency_key=message.provider_message_id,
        tenant=tenant,
    )
    if not stored.replayed:
        where = {"conversation_id": conv.id, "seq": stored.seq}
        await store.remember(message.contact_id, key, where, tenant=tenant, tier="medium")
    return stored


async def _stored(store: AsyncStore, where: dict[str, Any], tenant: str) -> Message | None:
    """The message a seen-fact points at, as a replay (None when it is no longer kept)."""
    try:
        found = await store.messages(
            str(where["conversation_id"]), after=int(where["seq"]) - 1, limit=1, tenant=tenant
        )
    except ConversationNotFound:
        return None
    return replace(found[0], replayed=True) if found else None


def inbound_of(message: Message) -> dict[str, Any] | None:
    """Return the normalised inbound record of a stored message, or None (not from a channel)."""
    if message.role != "user":
        return None
    record = message.metadata.get(INBOUND)
    return record if isinstance(record, dict) and "provider_message_id" in record else None


def is_channel_conversation(conv: Conversation) -> bool:
    """Return whether replies of ``conv`` go out through a channel (it was started by one)."""
    return conv.metadata.get("provider") in ("whatsapp", "twilio") and bool(
        conv.metadata.get("account")
    )


def is_unsent_reply(message: Message) -> bool:
    """Whether ``message`` is a processor's reply still ``queued`` (or with no delivery yet)."""
    if message.role != "assistant" or not message.content or "covers" not in message.metadata:
        return False
    delivery = message.delivery
    return delivery is None or delivery.get("state") == "queued"
