"""Webhook payloads of the research notes (docs/shared research §1, §7): the byte-exact signed
fixtures in ``fixtures/``, and the official per-type examples wrapped in Meta's envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from threadkeep.channels import twilio, whatsapp

FIXTURES = Path(__file__).parent / "fixtures"
APP_SECRET = "test_app_secret"
AUTH_TOKEN = "test_auth_token"
PHONE_NUMBER_ID = "106540352242922"
SIGNATURES = {
    "whatsapp_text.json": (
        "sha256=3048de17b380561491e7d30f99d12a3ab62ce66b11009989833183ddeda3073e"
    ),
    "whatsapp_image.json": (
        "sha256=51c4526891e64a8c1076467c8805de947f92fcf83dd4b18d439d1e840dc43874"
    ),
    "whatsapp_status_delivered.json": (
        "sha256=c9b0c4c7d8bc5f7e28467356527bc3fa3c43fa5d8558eae37128c500fda56a09"
    ),
    "twilio_sms.form": "aI9AjofffjmbSJkGnq6nXN1Efl4=",
    "twilio_whatsapp_image.form": "hgqQv8SKZpZusBGH0czG5/4za1c=",
}
TWILIO_URLS = {
    "twilio_sms.form": "https://bot.example.com/webhooks/twilio/sms",
    "twilio_whatsapp_image.form": "https://bot.example.com/webhooks/twilio/whatsapp",
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


SENDER = {"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}


def envelope(
    *,
    messages: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    errors: list[dict[str, Any]] | None = None,
    contacts: list[dict[str, Any]] | None = None,
    phone_number_id: str = PHONE_NUMBER_ID,
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
    }
    if messages is not None:
        value["contacts"] = contacts if contacts is not None else [SENDER]
        value["messages"] = messages
    if statuses is not None:
        value["statuses"] = statuses
    if errors is not None:
        value["errors"] = errors
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }


def signed_json(body: dict[str, Any], secret: str = APP_SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body, separators=(",", ":")).encode()
    return raw, {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": whatsapp.sign(raw, secret),
    }


def signed_form(
    url: str, params: list[tuple[str, str]], token: str = AUTH_TOKEN
) -> tuple[bytes, dict[str, str]]:
    from urllib.parse import urlencode

    raw = urlencode(params).encode()
    return raw, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio.sign(url, params, token),
    }


def message(kind: str, wamid: str, ts: str = "1750025136", **body: Any) -> dict[str, Any]:
    return {"from": "16505551234", "id": wamid, "timestamp": ts, "type": kind, **body}


# The official examples of each type (research notes §1.3), as message objects.
TYPES: dict[str, dict[str, Any]] = {
    "text": message("text", "wamid.T1", text={"body": "Does it come in another color?"}),
    "button_reply": message(
        "interactive",
        "wamid.I1",
        context={"from": "15550783881", "id": "wamid.CTX1"},
        interactive={
            "type": "button_reply",
            "button_reply": {"id": "cancel-button", "title": "Cancel"},
        },
    ),
    "list_reply": message(
        "interactive",
        "wamid.I2",
        interactive={
            "type": "list_reply",
            "list_reply": {
                "id": "priority_express",
                "title": "Priority Mail Express",
                "description": "Next Day to 2 Days",
            },
        },
    ),
    "button": message(
        "button",
        "wamid.B1",
        context={"from": "15550783881", "id": "wamid.CTX2"},
        button={"payload": "Unsubscribe", "text": "Unsubscribe"},
    ),
    "image": message(
        "image",
        "wamid.M1",
        image={
            "caption": "Taj Mahal",
            "mime_type": "image/jpeg",
            "sha256": "SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=",
            "id": "1003383421387256",
        },
    ),
    "audio": message(
        "audio",
        "wamid.M2",
        audio={"mime_type": "audio/ogg; codecs=opus", "id": "1908647269898587", "voice": True},
    ),
    "document": message(
        "document",
        "wamid.M3",
        document={
            "caption": "my receipt",
            "filename": "receipt.pdf",
            "mime_type": "application/pdf",
            "id": "622684793477189",
        },
    ),
    "location": message(
        "location",
        "wamid.L1",
        location={
            "address": "101 Forest Ave, Palo Alto, CA 94301",
            "latitude": 37.44221496582,
            "longitude": -122.16165924072,
            "name": "Philz Coffee",
            "url": "https://philzcoffee.com/",
        },
    ),
    "contacts": message(
        "contacts",
        "wamid.C1",
        contacts=[
            {
                "name": {"first_name": "Barbara", "formatted_name": "Barbara J. Johnson"},
                "phones": [
                    {"phone": "+1 (415) 555-0829", "wa_id": "14125550829", "type": "MOBILE"}
                ],
            }
        ],
    ),
    "reaction": message(
        "reaction", "wamid.R1", reaction={"message_id": "wamid.OUT1", "emoji": "👍"}
    ),
    "unsupported": message(
        "unsupported",
        "wamid.U1",
        errors=[
            {
                "code": 131051,
                "title": "Message type unknown",
                "message": "Message type unknown",
                "error_data": {"details": "Message type is currently not supported."},
            }
        ],
        unsupported={"type": "edit"},
    ),
}

FAILED_STATUS = {
    "id": "wamid.OUT2",
    "status": "failed",
    "timestamp": "1751142888",
    "recipient_id": "16505551234",
    "errors": [
        {
            "code": 131047,
            "title": "Re-engagement message",
            "message": "Re-engagement message",
            "error_data": {
                "details": "More than 24 hours have passed since the recipient last replied."
            },
        }
    ],
}
ACCOUNT_ERROR = {
    "code": 130429,
    "title": "Rate limit hit",
    "message": "Rate limit hit",
    "error_data": {"details": "Message failed to send because there were too many messages"},
}
