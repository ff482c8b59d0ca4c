"""The normalised records every channel's parser returns, and the errors of verification.

A webhook delivery becomes a ``Delivery``: the inbound messages it carries, the status updates of
messages we sent, and the errors the provider reported. Parsers are pure functions of the raw
bytes (no I/O); the service stores what they return.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from threadkeep import ThreadkeepError

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

Channel = Literal["whatsapp", "sms"]
Provider = Literal["whatsapp", "twilio"]
Kind = Literal[
    "text",
    "interactive",
    "button",
    "media",
    "location",
    "contacts",
    "reaction",
    "system",
    "unsupported",
]
DeliveryState = Literal["queued", "sent", "delivered", "read", "failed"]


class SignatureMissing(ThreadkeepError):
    """The request carries no signature header; nothing was stored."""

    http_status = 401


class SignatureInvalid(ThreadkeepError):
    """The signature does not match the raw body (or URL and form); nothing was stored."""

    http_status = 403


class UnreadablePayload(ThreadkeepError):
    """A signed body that is not the provider's format (not JSON, not a form, no id)."""

    http_status = 400


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Media(_Record):
    """One attachment, by the provider's id (WhatsApp media id) or URL (Twilio)."""

    kind: str
    provider_media_id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    url: str | None = None
    filename: str | None = None
    caption: str | None = None


class ProviderError(_Record):
    """An error the provider reported (on a message, a status or the account)."""

    code: int | None = None
    title: str | None = None
    details: str | None = None


class Inbound(_Record):
    """One inbound customer message, whatever channel brought it.

    Attributes:
        provider: ``whatsapp`` (Cloud API) or ``twilio``.
        channel: ``whatsapp`` (Cloud API or via Twilio) or ``sms``.
        provider_message_id: ``wamid.…`` or ``MessageSid``: the idempotency key.
        account: the business number it was sent to (WhatsApp ``phone_number_id``, Twilio
            ``To`` without the ``whatsapp:`` prefix): it names the tenant.
        contact_id: the stable user id: the WhatsApp business-scoped user id when present, else
            the phone number (``wa_id``/``From``).
        phone: the customer's phone when known (WhatsApp: digits without ``+``; Twilio: E.164).
        profile_name: the customer's profile name when known.
        kind: what sort of message it is.
        text: the words people read (text body, button title, caption, a short description of
            a location, contact card, reaction or unsupported message).
        reply_payload: the id of the tapped button or list row.
        media: attachments.
        location: latitude, longitude, name, address, url.
        contacts: shared contact cards, verbatim.
        reaction: ``{"message_id", "emoji"}`` (emoji absent when removed).
        context_message_id: the message this one replies to.
        provider_timestamp: when the provider says it was sent (Twilio gives none: receipt
            time).
        errors: errors attached to the message (``unsupported``).
        expects_reply: whether the bot should answer it (reactions and system notices: no).
    """

    provider: Provider
    channel: Channel
    provider_message_id: str
    account: str
    contact_id: str
    phone: str | None = None
    profile_name: str | None = None
    kind: Kind
    text: str
    reply_payload: str | None = None
    media: list[Media] = []
    location: dict[str, Any] | None = None
    contacts: list[dict[str, Any]] | None = None
    reaction: dict[str, Any] | None = None
    context_message_id: str | None = None
    provider_timestamp: datetime
    errors: list[ProviderError] = []
    expects_reply: bool = True


class StatusUpdate(_Record):
    """The delivery status of a message we sent.

    Attributes:
        provider: ``whatsapp`` or ``twilio``.
        provider_message_id: the id the send API returned.
        state: ``sent``, ``delivered``, ``read`` or ``failed`` (other provider states map to
            one of these, or are ignored by the parser).
        provider_timestamp: when it happened (Twilio: receipt time).
        recipient: the recipient's id as the provider gives it.
        reference: what we attached when sending (WhatsApp ``biz_opaque_callback_data``,
            Twilio status callback query): ``conversation_id:seq`` of the reply.
        error: the failure, when ``state`` is ``failed``.
    """

    provider: Provider
    provider_message_id: str
    state: DeliveryState
    provider_timestamp: datetime
    recipient: str | None = None
    reference: str | None = None
    error: ProviderError | None = None


class Delivery(_Record):
    """Everything one webhook request carried.

    Attributes:
        messages: inbound messages, in the order of the body.
        statuses: status updates, in the order of the body.
        errors: account-level errors (logged; they carry no message id).
        ignored: what the parser skipped, one line each (another webhook field, an unknown
            status value).
    """

    messages: list[Inbound] = []
    statuses: list[StatusUpdate] = []
    errors: list[ProviderError] = []
    ignored: list[str] = []
