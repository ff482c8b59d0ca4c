"""The webhook routes in-process (TestClient): handshake, signatures before anything is stored,
every message type stored once, tenants, Twilio's URL behind a proxy, the store down → 503."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.channels._payloads import (
    APP_SECRET,
    AUTH_TOKEN,
    PHONE_NUMBER_ID,
    SIGNATURES,
    TYPES,
    envelope,
    fixture,
    signed_form,
    signed_json,
)
from tests.service._service_helpers import client_for
from threadkeep.channels import twilio, whatsapp

# No processor here: these tests look at what the routes store (test_live has the answers).
WA: dict[str, Any] = {
    "whatsapp_app_secret": APP_SECRET,
    "whatsapp_verify_token": "vibecoding",
    "channel_worker": False,
}
PUBLIC = "https://bot.example.com/hooks"
TW: dict[str, Any] = {
    "twilio_auth_token": AUTH_TOKEN,
    "twilio_account_sid": "AC1",
    "public_url": PUBLIC,
    "channel_worker": False,
}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tk.db'}"


def conversations(client: Any, contact: str) -> list[dict[str, Any]]:
    found = client.get("/v1/conversations", params={"contact_id": contact})
    items: list[dict[str, Any]] = found.json()["items"]
    return items


def history(client: Any, conv_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"/v1/conversations/{conv_id}/messages").json()[
        "items"
    ]
    return items


def test_handshake(sqlite_url):
    with client_for(sqlite_url, **WA) as client:
        ok = client.get(
            "/v1/channels/whatsapp",
            params={"hub.mode": "subscribe", "hub.challenge": "1158201444",
                    "hub.verify_token": "vibecoding"},
        )  # fmt: skip
        assert ok.status_code == 200 and ok.text == "1158201444"
        assert ok.headers["content-type"].startswith("text/plain")
        bad = client.get(
            "/v1/channels/whatsapp",
            params={"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "nope"},
        )
        assert bad.status_code == 403


def test_unconfigured_channels_answer_404(sqlite_url):
    with client_for(sqlite_url) as client:
        assert client.get("/v1/channels/whatsapp").status_code == 404
        assert client.post("/v1/channels/whatsapp", content=b"{}").status_code == 404
        assert client.post("/v1/channels/twilio", content=b"").status_code == 404
        assert client.post("/v1/channels/twilio/status", content=b"").status_code == 404


def test_known_answer_payload_stored_once_with_bad_signatures_refused(sqlite_url):
    raw = fixture("whatsapp_text.json")
    good = {"X-Hub-Signature-256": SIGNATURES["whatsapp_text.json"]}
    with client_for(sqlite_url, **WA) as client:
        missing = client.post("/v1/channels/whatsapp", content=raw)
        assert missing.status_code == 401
        wrong = client.post(
            "/v1/channels/whatsapp", content=raw, headers={"X-Hub-Signature-256": "sha256=00"}
        )
        assert wrong.status_code == 403
        assert conversations(client, "16505551234") == []  # nothing stored
        for _ in range(3):  # redeliveries
            assert (
                client.post("/v1/channels/whatsapp", content=raw, headers=good).status_code == 200
            )
        (conv,) = conversations(client, "16505551234")
        assert conv["channel"] == "whatsapp"
        assert conv["metadata"]["phone"] == "16505551234"
        assert conv["metadata"]["profile_name"] == "Sheena Nelson"
        assert conv["metadata"]["account"] == PHONE_NUMBER_ID
        (msg,) = history(client, conv["id"])
        assert msg["role"] == "user" and msg["content"] == "Does it come in another color? Café 😀"
        assert msg["idempotency_key"].startswith("wamid.HBgLMTY1")
        assert msg["metadata"]["channel"]["provider_timestamp"] == "2025-06-08T20:59:43Z"


def test_every_message_type_is_stored_in_order(sqlite_url):
    with client_for(sqlite_url, **WA) as client:
        raw, headers = signed_json(envelope(messages=list(TYPES.values())))
        assert client.post("/v1/channels/whatsapp", content=raw, headers=headers).status_code == 200
        (conv,) = conversations(client, "16505551234")
        stored = history(client, conv["id"])
        assert [m["idempotency_key"] for m in stored] == [m["id"] for m in TYPES.values()]
        kinds = [m["metadata"]["channel"]["kind"] for m in stored]
        assert kinds == ["text", "interactive", "interactive", "button", "media", "media",
                         "media", "location", "contacts", "reaction", "unsupported"]  # fmt: skip
        assert (
            stored[4]["metadata"]["channel"]["media"][0]["provider_media_id"] == "1003383421387256"
        )


def test_bsuid_keys_the_contact_and_tenants_follow_the_number(sqlite_url):
    with client_for(sqlite_url, **WA, whatsapp_tenants=f"{PHONE_NUMBER_ID}:loc-1") as client:
        raw = fixture("whatsapp_image.json")
        sig = {"X-Hub-Signature-256": SIGNATURES["whatsapp_image.json"]}
        assert client.post("/v1/channels/whatsapp", content=raw, headers=sig).status_code == 200
        assert conversations(client, "US.13491208655302741918") == []  # not in tenant default
    with client_for(sqlite_url, **WA, api_keys="loc-1:k1", key="k1") as client:
        (conv,) = conversations(client, "US.13491208655302741918")
        assert conv["tenant"] == "loc-1" and conv["metadata"]["phone"] == "16505551234"


def test_twilio_inbound_behind_a_proxy(sqlite_url):
    params = [("MessageSid", "SM1"), ("From", "+14155550100"), ("To", "+15558675310"),
              ("Body", "Hi, I want to sell"), ("ToCity", "")]  # fmt: skip
    url = PUBLIC + "/v1/channels/twilio"
    with client_for(sqlite_url, **TW) as client:
        raw, headers = signed_form(url, params)
        missing = client.post("/v1/channels/twilio", content=raw)
        assert missing.status_code == 401
        # Signed for the internal URL the proxy forwards to: not what Twilio signs.
        _, internal = signed_form("http://testserver/v1/channels/twilio", params)
        assert client.post("/v1/channels/twilio", content=raw, headers=internal).status_code == 403
        assert conversations(client, "+14155550100") == []
        for _ in range(2):
            done = client.post("/v1/channels/twilio", content=raw, headers=headers)
            assert done.status_code == 200
            assert done.text == twilio.EMPTY_TWIML
            assert done.headers["content-type"].startswith("text/xml")
        (conv,) = conversations(client, "+14155550100")
        assert conv["channel"] == "sms" and conv["metadata"]["phone"] == "+14155550100"
        (msg,) = history(client, conv["id"])
        assert msg["content"] == "Hi, I want to sell" and msg["idempotency_key"] == "SM1"


def test_unreadable_signed_body_is_400_and_stores_nothing(sqlite_url):
    with client_for(sqlite_url, **WA) as client:
        raw = b"not json"
        headers = {"X-Hub-Signature-256": whatsapp.sign(raw, APP_SECRET)}
        assert client.post("/v1/channels/whatsapp", content=raw, headers=headers).status_code == 400


def test_store_down_answers_503():
    with client_for("redis://127.0.0.1:9/0?prefix=tk-down", **WA) as client:
        raw, headers = signed_json(envelope(messages=[TYPES["text"]]))
        done = client.post("/v1/channels/whatsapp", content=raw, headers=headers)
        assert done.status_code == 503
        assert json.loads(done.text)["error"]["type"] == "StoreUnavailable"


def test_status_form_url_encoding_roundtrip():
    # the signature covers decoded values: an encoded '+' and an empty value both count
    params = [("From", "+1555"), ("Empty", "")]
    assert twilio.form(urlencode(params).encode()) == params


def test_redelivery_after_the_conversation_was_closed_or_deleted_stores_nothing(sqlite_url):
    raw, headers = signed_json(envelope(messages=[{**TYPES["text"], "from": "15557770000"}]))
    with client_for(sqlite_url, **WA) as client:
        assert client.post("/v1/channels/whatsapp", content=raw, headers=headers).status_code == 200
        (conv,) = conversations(client, "15557770000")
        closed = client.post(f"/v1/conversations/{conv['id']}/status", json={"status": "closed"})
        assert closed.status_code == 200
        # Meta redelivers (up to 7 days): no new conversation, nothing stored again
        assert client.post("/v1/channels/whatsapp", content=raw, headers=headers).status_code == 200
        query = {"contact_id": "15557770000", "status": "closed"}
        listed = client.get("/v1/conversations", params=query).json()["items"]
        assert [c["id"] for c in listed] == [conv["id"]]
        assert conversations(client, "15557770000") == [listed[0]]
        assert len(history(client, conv["id"])) == 1
        assert client.delete(f"/v1/conversations/{conv['id']}").status_code == 204
        assert client.post("/v1/channels/whatsapp", content=raw, headers=headers).status_code == 200
        assert conversations(client, "15557770000") == []  # an erased message is not revived
        metrics = client.get("/metrics").text
        assert 'outcome="duplicate"' in metrics
