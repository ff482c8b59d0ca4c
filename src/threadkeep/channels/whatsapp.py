"""WhatsApp Cloud API: the verify-token handshake, ``X-Hub-Signature-256`` and the webhook body.

Pure functions of bytes and strings, no I/O. The signature is an HMAC-SHA256 of the raw body
with the app secret; Meta signs its escaped wire form (non-ASCII and ``/`` escaped), so
re-serialised JSON does not verify: always pass the bytes as received. Every ``entry``,
``change``, message and status of a batch is read; a ``field`` other than ``messages`` is
skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

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

__all__ = ["SIGNATURE_HEADER", "handshake", "parse", "sign", "verify"]

SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
_MEDIA: Final = ("image", "audio", "video", "document", "sticker")
_STATES: Final = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}


def sign(raw: bytes, app_secret: str) -> str:
    """Return the ``X-Hub-Signature-256`` value of ``raw`` (``sha256=<hex>``)."""
    return "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()


def verify(raw: bytes, headers: Mapping[str, str], app_secret: str) -> None:
    """Check the ``X-Hub-Signature-256`` header against the raw body, in constant time.

    Raises:
        SignatureMissing: no such header (401).
        SignatureInvalid: it does not match (403).
    """
    given = headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower())
    if not given:
        raise SignatureMissing(f"no {SIGNATURE_HEADER} header: the request is not from Meta")
    expected = sign(raw, app_secret).encode()
    # Bytes on both sides: compare_digest refuses non-ASCII str, and a forged header may be any.
    if not hmac.compare_digest(expected, given.strip().encode("utf-8", "replace")):
        raise SignatureInvalid(
            f"{SIGNATURE_HEADER} does not match the body (wrong app secret, or the body was "
            "changed on the way)"
        )


def handshake(params: Mapping[str, str], verify_token: str) -> str | None:
    """Return ``hub.challenge`` when the GET handshake is valid, else None.

    Valid: ``hub.mode`` is ``subscribe`` and ``hub.verify_token`` equals ``verify_token``
    (compared in constant time).
    """
    token = params.get("hub.verify_token", "")
    challenge = params.get("hub.challenge")
    if params.get("hub.mode") != "subscribe" or challenge is None:
        return None
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        return None
    return challenge


def _epoch(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(str(value)), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise UnreadablePayload(f"timestamp {value!r} is not Unix seconds") from None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _error(data: Any) -> ProviderError:
    data = _dict(data)
    code = data.get("code")
    return ProviderError(
        code=code if isinstance(code, int) else None,
        title=_str(data.get("title")) or _str(data.get("message")),
        details=_str(_dict(data.get("error_data")).get("details")),
    )


def _contact_of(message: dict[str, Any], contacts: list[Any]) -> dict[str, Any]:
    """The ``value.contacts`` entry of the message's sender (not necessarily the first)."""
    sender, user = message.get("from") or None, message.get("from_user_id") or None
    for contact in contacts:
        contact = _dict(contact)
        if (user and contact.get("user_id") == user) or (sender and contact.get("wa_id") == sender):
            return contact
    return _dict(contacts[0]) if len(contacts) == 1 else {}


def _describe(message: dict[str, Any], kind: str) -> dict[str, Any]:
    """The kind-specific fields of an ``Inbound`` and the text people read."""
    body = _dict(message.get(kind))
    if kind == "text":
        return {"kind": "text", "text": str(body.get("body") or "")}
    if kind == "interactive":
        reply = _dict(body.get(str(body.get("type") or "")))
        title = str(reply.get("title") or reply.get("body") or "")
        return {"kind": "interactive", "text": title, "reply_payload": _str(reply.get("id"))}
    if kind == "button":
        text = str(body.get("text") or body.get("payload") or "")
        return {"kind": "button", "text": text, "reply_payload": _str(body.get("payload"))}
    if kind in _MEDIA:
        media = Media(
            kind=kind,
            provider_media_id=_str(body.get("id")),
            mime_type=_str(body.get("mime_type")),
            sha256=_str(body.get("sha256")),
            url=_str(body.get("url")),
            filename=_str(body.get("filename")),
            caption=_str(body.get("caption")),
        )
        text = media.caption or f"[{kind}{': ' + media.filename if media.filename else ''}]"
        return {"kind": "media", "text": text, "media": [media]}
    if kind == "location":
        where = ", ".join(str(body[k]) for k in ("name", "address") if body.get(k))
        place = f"{body.get('latitude')}, {body.get('longitude')}"
        return {
            "kind": "location",
            "text": f"[location: {where} ({place})]" if where else f"[location: {place}]",
            "location": body,
        }
    if kind == "contacts":
        cards = [_dict(c) for c in _list(message.get("contacts"))]
        names = [str(_dict(c.get("name")).get("formatted_name") or "?") for c in cards]
        return {"kind": "contacts", "text": f"[contacts: {', '.join(names)}]", "contacts": cards}
    if kind == "reaction":
        emoji = _str(body.get("emoji"))
        text = f"[reaction {emoji}]" if emoji else "[reaction removed]"
        return {"kind": "reaction", "text": text, "reaction": body, "expects_reply": False}
    if kind == "system":
        return {"kind": "system", "text": f"[system: {body.get('body') or body.get('type')}]",
                "expects_reply": False}  # fmt: skip
    what = _dict(message.get("unsupported")).get("type") or kind
    return {"kind": "unsupported", "text": f"[unsupported message: {what}]"}


def _inbound(message: dict[str, Any], contacts: list[Any], account: str) -> Inbound:
    wamid = _str(message.get("id"))
    if wamid is None:
        raise UnreadablePayload("a WhatsApp message has no id")
    contact = _contact_of(message, contacts)
    user_id = _str(message.get("from_user_id")) or _str(contact.get("user_id"))
    phone = _str(message.get("from")) or _str(contact.get("wa_id"))
    contact_id = user_id or phone
    if contact_id is None:
        raise UnreadablePayload(f"WhatsApp message {wamid} names no sender")
    kind = str(message.get("type") or "unsupported")
    return Inbound(
        provider="whatsapp",
        channel="whatsapp",
        provider_message_id=wamid,
        account=account,
        contact_id=contact_id,
        phone=phone,
        profile_name=_str(_dict(contact.get("profile")).get("name")),
        context_message_id=_str(_dict(message.get("context")).get("id")),
        provider_timestamp=_epoch(message.get("timestamp")),
        errors=[_error(e) for e in _list(message.get("errors"))],
        **_describe(message, kind),
    )


def _status(status: dict[str, Any]) -> StatusUpdate | str:
    wamid, state = _str(status.get("id")), _STATES.get(str(status.get("status")))
    if wamid is None or state is None:
        return f"status {status.get('status')!r} of {status.get('id')!r} ignored"
    errors = _list(status.get("errors"))
    return StatusUpdate(
        provider="whatsapp",
        provider_message_id=wamid,
        state=state,
        provider_timestamp=_epoch(status.get("timestamp")),
        recipient=_str(status.get("recipient_id")) or _str(status.get("recipient_user_id")),
        reference=_str(status.get("biz_opaque_callback_data")),
        error=_error(errors[0]) if errors else None,
    )


def parse(raw: bytes) -> Delivery:
    """Read a (verified) webhook body: every message, status and error of every entry/change.

    Raises:
        UnreadablePayload: not JSON, not a WhatsApp Business Account notification, or a message
            without id, sender or timestamp.
    """
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise UnreadablePayload(f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("entry"), list):
        raise UnreadablePayload("the body is not a WhatsApp webhook (no entry list)")
    messages: list[Inbound] = []
    statuses: list[StatusUpdate] = []
    errors: list[ProviderError] = []
    ignored: list[str] = []
    for entry in body["entry"]:
        for change in _list(_dict(entry).get("changes")):
            change = _dict(change)
            if change.get("field") != "messages":
                ignored.append(f"field {change.get('field')!r} ignored")
                continue
            value = _dict(change.get("value"))
            account = str(_dict(value.get("metadata")).get("phone_number_id") or "")
            contacts = _list(value.get("contacts"))
            messages += [
                _inbound(_dict(m), contacts, account) for m in _list(value.get("messages"))
            ]
            for status in _list(value.get("statuses")):
                read = _status(_dict(status))
                if isinstance(read, str):
                    ignored.append(read)
                else:
                    statuses.append(read)
            errors += [_error(e) for e in _list(value.get("errors"))]
    return Delivery(messages=messages, statuses=statuses, errors=errors, ignored=ignored)
