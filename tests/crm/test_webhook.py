"""POST /v1/crm/ghl/webhook: verified, deduplicated, stored, and 429 when the store is down."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

import threadkeep
from tests._servers import free_port
from tests.crm._ghl_helpers import (
    LOCATION,
    PIPELINE,
    STAGE_IDS,
    TEST_PUBLIC_PEM,
    event,
    sign,
    signed,
)
from tests.service._service_helpers import client_for

URL = "/v1/crm/ghl/webhook"


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request, tmp_path):
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 's.db'}"


@pytest.fixture
def api(store_url, map_file):
    with client_for(
        store_url,
        api_keys="loc-1:k1",
        key="k1",
        ghl_locations=f"{LOCATION}:loc-1",
        ghl_public_key=TEST_PUBLIC_PEM,
        ghl_map=str(map_file),
    ) as client:
        yield client


def post(api: TestClient, payload: dict[str, Any], **headers: str) -> httpx2.Response:
    raw, signed_headers = signed(payload)
    return api.post(URL, content=raw, headers={**signed_headers, **headers})


def inbound(
    text: str = "Hi, I want to sell my house",
    message_id: str | None = None,
    contact: str = "cI08i1Bls3iTB9bKgFJh",
) -> dict[str, Any]:
    return event(
        "InboundMessage",
        contactId=contact,
        body=text,
        messageType="SMS",
        messageId=message_id or uuid.uuid4().hex[:20],
        conversationId="fcanlLgpbQgQhderivVs",
        dateAdded="2026-06-02T14:05:12.345Z",
        direction="inbound",
    )


def transcript(
    api: TestClient, contact: str = "cI08i1Bls3iTB9bKgFJh"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    items = api.get(f"/v1/conversations?contact_id={contact}").json()["items"]
    assert len(items) == 1
    conv = items[0]
    return conv, api.get(f"/v1/conversations/{conv['id']}/messages").json()["items"]


def test_inbound_messages_land_once_in_the_contacts_conversation(api):
    first = inbound(message_id="tyW42xCD0HQpb3hhfLcx")
    r = post(api, first)
    assert r.status_code == 200 and r.json()["status"] == "stored"
    again = post(api, first)  # the same delivery: refused as a duplicate
    assert again.json() == {"status": "duplicate", "webhookId": first["webhookId"]}
    retried = {**first, "webhookId": str(uuid.uuid4())}  # same message, another delivery
    assert post(api, retried).json()["status"] == "stored"
    post(api, inbound("It needs a new roof"))
    voicemail = inbound("")
    voicemail.update(messageType="CALL", status="voicemail")
    post(api, voicemail)
    reply = event(
        "OutboundMessage",
        contactId="cI08i1Bls3iTB9bKgFJh",
        body="On my way",
        messageType="SMS",
        messageId="out-1",
        source="app",
    )
    post(api, reply)
    conv, messages = transcript(api)
    assert conv["channel"] == "sms" and conv["tenant"] == "loc-1"
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Hi, I want to sell my house"),
        ("user", "It needs a new roof"),
        ("user", "[call voicemail]"),
        ("agent", "On my way"),
    ]
    assert messages[0]["metadata"]["ghl"]["messageId"] == "tyW42xCD0HQpb3hhfLcx"
    assert messages[0]["idempotency_key"] == "ghl:tyW42xCD0HQpb3hhfLcx"


def test_a_message_after_the_conversation_closed_starts_a_new_one(api):
    post(api, inbound("first"))
    conv, _ = transcript(api)
    assert (
        api.post(f"/v1/conversations/{conv['id']}/status", json={"status": "closed"}).status_code
        == 200
    )
    post(api, inbound("second"))
    items = api.get("/v1/conversations?contact_id=cI08i1Bls3iTB9bKgFJh").json()["items"]
    assert len(items) == 2


@pytest.mark.parametrize(
    ("mutate", "status", "says"),
    [
        (lambda raw, h: (raw, {**h, "X-GHL-Signature": sign(b"other")}), 401, "does not verify"),
        (lambda raw, h: (raw + b" ", h), 401, "does not verify"),
        (lambda raw, h: (raw, {"Content-Type": "application/json"}), 401, "no X-GHL-Signature"),
    ],
    ids=["wrong-signature", "changed-body", "no-signature"],
)
def test_unverified_deliveries_are_refused_and_store_nothing(api, mutate, status, says):
    raw, headers = signed(inbound())
    raw, headers = mutate(raw, headers)
    r = api.post(URL, content=raw, headers=headers)
    assert r.status_code == status and says in r.json()["error"]["message"]
    assert api.get("/v1/conversations").json()["items"] == []


def test_stale_unmapped_and_malformed_deliveries(api):
    stale = {**inbound(), "timestamp": "2026-01-01T00:00:00Z"}
    r = post(api, stale)
    assert r.status_code == 401 and r.json()["error"]["type"] == "StaleDelivery"
    r = post(api, {**inbound(), "locationId": "elsewhere"})
    assert r.status_code == 404 and "elsewhere" in r.json()["error"]["message"]
    raw = b'{"no":"type"}'
    r = api.post(URL, content=raw, headers={"X-GHL-Signature": sign(raw)})
    assert r.status_code == 422
    no_contact = inbound()
    del no_contact["contactId"]
    r = post(api, no_contact)
    assert r.status_code == 422 and r.json()["error"]["field"] == "contactId"
    assert post(api, event("NoteCreate", id="n1")).json()["done"] == "ignored"
    assert api.get("/v1/conversations").json()["items"] == []


def test_contact_events_become_facts(api):
    update = event(
        "ContactUpdate",
        id="nmFmQEsNgz6AVpgLVUJ0",
        name="John Deo",
        email="JohnDeo@gmail.com",
        phone="+919509597501",
        tags=["buyer"],
        customFields=[{"id": "6dvNaf7VhkQ9snc5vnjJ", "value": 450000}, {"id": "zz", "value": 1}],
    )
    r = post(api, update)
    assert r.status_code == 200 and r.json()["done"].startswith("facts name, email, phone, tags")
    # read the facts through the guidance of a conversation of the contact
    conv = api.post(
        "/v1/conversations", json={"contact_id": "nmFmQEsNgz6AVpgLVUJ0", "stage": "Q2"}
    ).json()
    g = api.get(f"/v1/conversations/{conv['id']}/guidance").json()
    facts = {f["key"]: f["value"] for f in g["facts"]}
    assert facts == {
        "email": "JohnDeo@gmail.com",
        "name": "John Deo",
        "phone": "+919509597501",
        "price_expectation": 450000,
        "tags": ["buyer"],
    }
    assert g["ready"]  # the CRM's price expectation answers Q2
    by_key = {f["key"]: f for f in g["facts"]}
    assert by_key["email"]["source"] == {
        "kind": "crm",
        "crm": "gohighlevel",
        "event": "ContactUpdate",
        "webhook_id": update["webhookId"],
        "location_id": LOCATION,
    }
    assert by_key["price_expectation"]["source"]["custom_field"] == "6dvNaf7VhkQ9snc5vnjJ"
    assert by_key["email"]["tier"] == "critical" and by_key["email"]["history"] == []
    # the contact changes their email in the CRM: the newer value supersedes, the old is kept
    post(api, event("ContactUpdate", id="nmFmQEsNgz6AVpgLVUJ0", email="john@work.example"))
    g = api.get(f"/v1/conversations/{conv['id']}/guidance").json()
    email = next(f for f in g["facts"] if f["key"] == "email")
    assert email["value"] == "john@work.example"
    assert [h["value"] for h in email["history"]] == ["JohnDeo@gmail.com"]
    assert email["history"][0]["source"]["webhook_id"] == update["webhookId"]


def test_opportunity_stage_updates_move_the_conversation(api):
    post(api, inbound())
    change = event(
        "OpportunityStageUpdate",
        id="opp-1",
        contactId="cI08i1Bls3iTB9bKgFJh",
        pipelineId=PIPELINE,
        pipelineStageId=STAGE_IDS["QUALIFIED"],
        status="open",
    )
    assert post(api, change).json()["done"].startswith("stage QUALIFIED")
    conv, _ = transcript(api)
    assert conv["stage"] == "QUALIFIED"
    other = {**change, "pipelineId": "another", "webhookId": str(uuid.uuid4())}
    assert post(api, other).json()["done"] == "ignored: not the mapped pipeline"
    unmapped = {**change, "pipelineStageId": "x", "webhookId": str(uuid.uuid4())}
    assert post(api, unmapped).json()["done"].startswith("ignored: pipeline stage x")
    fresh = event(
        "OpportunityStageUpdate",
        id="opp-2",
        contactId="cJAWDskpkJHbRbhAT7bs",
        pipelineId=PIPELINE,
        pipelineStageId=STAGE_IDS["Q2"],
    )
    post(api, fresh)  # a contact without a conversation gets one, at that stage
    conv, messages = transcript(api, "cJAWDskpkJHbRbhAT7bs")
    assert conv["stage"] == "Q2" and messages == []


def test_ghl_is_off_without_locations(store_url):
    with client_for(store_url) as api:
        raw, headers = signed(inbound())
        r = api.post(URL, content=raw, headers=headers)
        assert r.status_code == 404 and "not configured" in r.json()["error"]["message"]


def test_the_sync_tenant_gets_no_key(map_file):
    with (
        pytest.raises(threadkeep.InvalidInput, match="keeps the GoHighLevel sync's records"),
        client_for("memory://", api_keys="ghl-sync:k", ghl_locations=f"{LOCATION}:loc-1"),
    ):
        pass


def test_store_down_answers_429_so_ghl_retries(map_file):
    down = f"redis://127.0.0.1:{free_port()}/0?timeout=0.5&retries=0"
    with client_for(
        down,
        ghl_locations=f"{LOCATION}:loc-1",
        ghl_public_key=TEST_PUBLIC_PEM,
        ghl_map=str(map_file),
    ) as api:
        r = post(api, inbound())
        assert r.status_code == 429 and r.headers["Retry-After"] == "600"
        assert r.json()["error"]["type"] == "StoreUnavailable"
