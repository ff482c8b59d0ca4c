"""The store as the channels' durable inbox: inbound messages in, their metadata conventions.

An inbound message is appended as a ``user`` message of the contact's open conversation (one is
started atomically if there is none) with the provider's message id as its idempotency key, so
a redelivered webhook stores nothing new. Its metadata keeps the normalised record under
``channel`` (provider, kind, the provider's timestamp, media ids …). The conversation's channel
is ``whatsapp`` or ``sms`` and its metadata keeps the phone, the profile name, the provider and
the business number (``account``) replies are sent from.
"""

from __future__ import annotations

from typing import Any, Final

from threadkeep import AsyncStore, Conversation, Message
from threadkeep.channels._model import Inbound

__all__ = [
    "INBOUND",
    "conversation_metadata",
    "inbound_of",
    "is_channel_conversation",
    "is_unsent_reply",
    "store_inbound",
]

#: The message metadata key holding the normalised inbound record.
INBOUND: Final = "channel"


def conversation_metadata(message: Inbound) -> dict[str, Any]:
    """Return what a channel conversation keeps about its contact and the business number."""
    meta: dict[str, Any] = {"provider": message.provider, "account": message.account}
    if message.phone:
        meta["phone"] = message.phone
    if message.profile_name:
        meta["profile_name"] = message.profile_name
    return meta


async def store_inbound(store: AsyncStore, message: Inbound, tenant: str) -> Message:
    """Store one inbound message, once (its provider id is the idempotency key).

    Returns:
        The stored message (``replayed`` True when it had been stored before).

    Raises:
        BackendError: the store cannot take it (the webhook must answer non-200).
        InvalidInput: a contact id or text the store refuses.
    """
    conv = await store.resume(
        message.contact_id,
        tenant=tenant,
        channel=message.channel,
        metadata=conversation_metadata(message),
    )
    return await store.append(
        conv.id,
        "user",
        message.text,
        metadata={INBOUND: message.model_dump(mode="json", exclude_defaults=True)},
        idempotency_key=message.provider_message_id,
        tenant=tenant,
    )


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
