"""Channels: WhatsApp Cloud API and Twilio webhooks in, replies out.

``whatsapp`` and ``twilio`` verify signatures over the raw bytes and parse a webhook into one
normalised ``Delivery`` (pure functions, no I/O). ``inbox`` stores inbound messages in the store
(durably, once per provider message id) and applies status updates; ``processor`` answers
unanswered inbound messages under each conversation's turn lease; ``outbound`` sends replies
through the providers' APIs (needs ``httpx`` and ``tenacity``: ``pip install threadkeep[crm]``).
"""

from __future__ import annotations

from threadkeep.channels._model import (
    Delivery,
    Inbound,
    Media,
    ProviderError,
    SignatureInvalid,
    SignatureMissing,
    StatusUpdate,
    UnreadablePayload,
)

__all__ = [
    "Delivery",
    "Inbound",
    "Media",
    "ProviderError",
    "SignatureInvalid",
    "SignatureMissing",
    "StatusUpdate",
    "UnreadablePayload",
]
