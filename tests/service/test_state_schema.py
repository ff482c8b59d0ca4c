"""A bot's declared state: its schema over HTTP, validated saves, and a bot that copes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service._service_helpers import client_for


@pytest.fixture
def seller(store_url, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with client_for(store_url, bot="seller") as client:
        yield client


def chat(client: TestClient, message: str, cid: str | None = None) -> dict[str, Any]:
    body = {"message": message, **({"conversation_id": cid} if cid else {"contact_id": "+1"})}
    resp = client.post("/v1/chat", json=body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_the_schema_is_the_bots_state_model(seller):
    cid = chat(seller, "Hi, I want to sell")["conversation_id"]
    schema = seller.get(f"/v1/conversations/{cid}/state/schema").json()
    props = schema["properties"]
    assert props["price_expectation"]["format"] == "money"
    assert props["last_seq"]["readOnly"] is True
    assert "needs_work" in props["condition"]["anyOf"][0]["enum"]


def test_a_free_form_bot_has_no_schema(store_url):
    with client_for(store_url) as echo:
        cid = echo.post("/v1/conversations", json={"contact_id": "x"}).json()["id"]
        assert echo.get(f"/v1/conversations/{cid}/state/schema").status_code == 404
        put = echo.put(
            f"/v1/conversations/{cid}/state", json={"value": [1, 2]}, headers={"If-Match": '"0"'}
        )
        assert put.status_code == 200  # free-form


def test_a_bad_price_edit_is_refused_naming_the_field_and_rule(seller):
    cid = chat(seller, "Hi, I want to sell")["conversation_id"]
    url = f"/v1/conversations/{cid}/state"
    current = seller.get(url)
    value = {**current.json()["value"], "price_expectation": "about 450k"}
    bad = seller.put(url, json={"value": value}, headers={"If-Match": current.headers["ETag"]})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert (error["field"], error["rule"]) == ("price_expectation", "int_parsing")
    assert seller.get(url).json()["version"] == current.json()["version"]  # nothing saved
    for wrong in ([1, 2], "x"):
        r = seller.put(url, json={"value": wrong}, headers={"If-Match": current.headers["ETag"]})
        assert r.status_code == 422
    # The visitor's next message is answered as usual.
    assert chat(seller, "It needs a new roof", cid)["reply"]


def test_the_bot_keeps_a_persons_stage_and_fields(seller):
    cid = chat(seller, "Hi, I want to sell")["conversation_id"]
    url = f"/v1/conversations/{cid}/state"
    current = seller.get(url)
    value = {**current.json()["value"], "agent_notes": "call after 5pm"}
    saved = seller.put(url, json={"value": value}, headers={"If-Match": current.headers["ETag"]})
    assert saved.status_code == 200, saved.text
    seller.put(f"/v1/conversations/{cid}/stage", json={"stage": "APPOINTMENT_SET"})
    answer = chat(seller, "It needs a new roof", cid)
    assert answer["stage"] == "APPOINTMENT_SET"
    after = seller.get(url).json()["value"]
    assert after["agent_notes"] == "call after 5pm"
    assert after["condition"] == "needs_work"


def test_the_bot_answers_over_a_state_it_cannot_parse(seller):
    cid = chat(seller, "Hi, I want to sell")["conversation_id"]
    store = seller.app.state.store  # another program saved a broken state, past the API
    broken = {"stage": "Q1", "price_expectation": "about 450k"}
    seller.portal.call(lambda: store.save_state(cid, broken, tenant="default"))
    shown = seller.get(f"/v1/conversations/{cid}/state").json()
    assert shown["problems"][0]["field"] == "price_expectation"
    answer = chat(seller, "It needs a new roof", cid)
    assert "price" in answer["reply"]  # answered, and asks for the price again
