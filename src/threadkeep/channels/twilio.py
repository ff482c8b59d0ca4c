"""Twilio Messaging (SMS, WhatsApp via Twilio): ``X-Twilio-Signature`` and the form posts.

Pure functions, no I/O. Twilio signs the URL it called (the public one, not what a proxy
forwards to us) followed by every form parameter, sorted, name then value, with HMAC-SHA1 and
the auth token. The form is read from the raw body with empty values kept (they are signed
too). As Twilio's own validator does, the URL is tried with and without its default port.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

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
    "EMPTY_TWIML",
    "SIGNATURE_HEADER",
    "form",
    "parse_inbound",
    "parse_status",
    "sign",
    "verify",
]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
#: The answer to every Twilio webhook: no inline reply (the processor answers through the API).
EMPTY_TWIML: Final = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_PREFIX: Final = "whatsapp:"
#: Twilio's MessageStatus values → delivery states; the rest (queued, sending, accepted,
#: receiving, received, scheduled, canceled …) say nothing a delivery state does not.
_STATES: Final = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
}


def form(raw: bytes) -> list[tuple[str, str]]:
    """Return the form parameters of a raw ``application/x-www-form-urlencoded`` body.

    Raises:
        UnreadablePayload: the body is not UTF-8.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadablePayload("the form body is not UTF-8") from None
    return parse_qsl(text, keep_blank_values=True)


def sign(url: str, params: list[tuple[str, str]], auth_token: str) -> str:
    """Return the ``X-Twilio-Signature`` of a POST to ``url`` with ``params``."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    data = url + "".join(
        name + value for name in sorted(grouped) for value in sorted(grouped[name])
    )
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if parts.port is None and default is not None:
        return [url, urlunsplit(parts._replace(netloc=f"{host}:{default}"))]
    if parts.port == default:
        return [url, urlunsplit(parts._replace(netloc=host))]
    return [url]


def verify(url: str, raw: bytes, headers: Mapping[str, str], auth_token: str) -> None:
    """Check ``X-Twilio-Signature`` for a POST of ``raw`` to the public ``url``.

    Raises:
        SignatureMissing: no such header (401).
        SignatureInvalid: it does not match (403): a wrong token, or ``url`` is not the URL
            Twilio called (set ``THREADKEEP_PUBLIC_URL`` behind a proxy).
        UnreadablePayload: the body is not UTF-8.
    """
    given = headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower())
    if not given:
        raise SignatureMissing(f"no {SIGNATURE_HEADER} header: the request is not from Twilio")
    params = form(raw)
    supplied = given.strip().encode("utf-8", "replace")
    # Every variant is compared (no early exit), so the time taken says nothing either.
    matches = [hmac.compare_digest(sign(u, params, auth_token).encode(), supplied)
               for u in _port_variants(url)]  # fmt: skip
    if not any(matches):
        raise SignatureInvalid(
            f"{SIGNATURE_HEADER} does not match {url} and the form (wrong auth token, or "
            "THREADKEEP_PUBLIC_URL is not the URL configured in Twilio)"
        )


def _address(value: str) -> tuple[str, bool]:
    """``whatsapp:+1555…`` → (``+1555…``, True); ``+1555…`` → (``+1555…``, False)."""
    if value.startswith(_PREFIX):
        return value[len(_PREFIX) :], True
    return value, False


def parse_inbound(raw: bytes, received_at: datetime) -> Delivery:
    """Read an inbound message form post (SMS or WhatsApp via Twilio).

    Args:
        raw: the verified body.
        received_at: when it arrived (Twilio sends no timestamp).

    Raises:
        UnreadablePayload: no ``MessageSid`` or ``From``, or not UTF-8.
    """
    params = dict(form(raw))
    sid = params.get("MessageSid") or params.get("SmsMessageSid")
    sender = params.get("From")
    if not sid or not sender:
        raise UnreadablePayload("a Twilio message post needs MessageSid and From")
    phone, whatsapp = _address(sender)
    account, _ = _address(params.get("To", ""))
    external = params.get("ExternalUserId")
    user_id = _address(external)[0] if external else None
    count = int(params["NumMedia"]) if params.get("NumMedia", "").isdigit() else 0
    media = [
        Media(
            kind=(params.get(f"MediaContentType{i}") or "file").split("/")[0],
            mime_type=params.get(f"MediaContentType{i}") or None,
            url=params.get(f"MediaUrl{i}") or None,
            caption=params.get("Body") or None,
        )
        for i in range(count)
    ]
    body = params.get("Body", "")
    kind = "text"
    extra: dict[str, object] = {}
    if params.get("ButtonPayload") or params.get("ButtonText"):
        kind = "button"
        body = params.get("ButtonText") or params.get("ButtonPayload") or body
        extra["reply_payload"] = params.get("ButtonPayload") or None
    elif params.get("Latitude") and params.get("Longitude"):
        kind = "location"
        extra["location"] = {
            "latitude": float(params["Latitude"]),
            "longitude": float(params["Longitude"]),
            "address": params.get("Address") or None,
            "name": params.get("Label") or None,
        }
        body = body or f"[location: {params['Latitude']}, {params['Longitude']}]"
    elif media:
        kind = "media"
        body = body or f"[{media[0].kind}]"
    return Delivery(
        messages=[
            Inbound(
                provider="twilio",
                channel="whatsapp" if whatsapp else "sms",
                provider_message_id=sid,
                account=account,
                contact_id=user_id or phone,
                phone=phone if phone.startswith("+") else None,
                profile_name=params.get("ProfileName") or None,
                kind=kind,
                text=body or "[empty message]",
                media=media,
                context_message_id=params.get("OriginalRepliedMessageSid") or None,
                provider_timestamp=received_at,
                **extra,
            )
        ]
    )


def parse_status(raw: bytes, received_at: datetime, reference: str | None = None) -> Delivery:
    """Read a status callback form post.

    Args:
        raw: the verified body.
        received_at: when it arrived (Twilio sends no timestamp).
        reference: what the status callback URL carried (``conversation_id:seq``).

    Raises:
        UnreadablePayload: no ``MessageSid``/``MessageStatus``, or not UTF-8.
    """
    params = dict(form(raw))
    sid, status = params.get("MessageSid"), params.get("MessageStatus")
    if not sid or not status:
        raise UnreadablePayload("a Twilio status callback needs MessageSid and MessageStatus")
    state = _STATES.get(status)
    if state is None:
        return Delivery(ignored=[f"status {status!r} of {sid} ignored"])
    code = params.get("ErrorCode")
    error = None
    if state == "failed":
        error = ProviderError(
            code=int(code) if code and code.isdigit() else None,
            title=params.get("ErrorMessage") or f"Twilio status {status}",
        )
    return Delivery(
        statuses=[
            StatusUpdate(
                provider="twilio",
                provider_message_id=sid,
                state=state,
                provider_timestamp=received_at,
                recipient=params.get("To") or None,
                reference=reference,
                error=error,
            )
        ]
    )
