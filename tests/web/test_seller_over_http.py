"""The seller bot is the default bot of ``POST /v1/chat`` (no browser: the service in-process)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from threadkeep.bot.seller import HANDOFF_REPLY
from threadkeep.cli.main import app
from threadkeep.service.app import create_app
from threadkeep.service.settings import ServiceSettings


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path / 'http.db'}"


@pytest.fixture
def client(store_url, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # the bot's own words
    monkeypatch.delenv("THREADKEEP_BOT", raising=False)
    settings = ServiceSettings(store=store_url, api_keys="loc-1:k1")
    assert settings.bot == "seller"  # the default
    with TestClient(create_app(settings), headers={"Authorization": "Bearer k1"}) as client:
        yield client


def chat(client: TestClient, conv: str | None, message: str) -> dict[str, Any]:
    body = {"message": message, "contact_id": "+15550100"}
    if conv:
        body["conversation_id"] = conv
    resp = client.post("/v1/chat", json=body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_seller_bot_over_http(client):
    first = chat(client, None, "Hi, I want to sell my house")
    conv = first["conversation_id"]
    assert (first["status"], first["stage"]) == ("active", "Q1")
    assert "condition" in first["reply"]

    turn = chat(client, conv, "It needs a new roof, I'd want around 450k")
    assert turn["stage"] == "Q3"
    assert "$450,000" in turn["reply"]

    state = client.get(f"/v1/conversations/{conv}/state")
    assert state.status_code == 200
    value = state.json()["value"]
    assert value["condition"] == "needs_work"
    assert value["price_expectation"] == 450_000
    assert value["stage"] == "Q3" and value["temperature"] == "cold"
    assert state.json()["version"] == 2  # one save per bot turn, each with expected_version
    assert state.headers["etag"].strip('W/"') == "2"

    # Asking for a person hands the conversation over; the bot is then silent.
    handoff = chat(client, conv, "Can I talk to a real person?")
    assert (handoff["status"], handoff["reply"]) == ("waiting_agent", HANDOFF_REPLY)
    silent = chat(client, conv, "Hello? I'm relocating for work")
    assert silent["reply"] is None and silent["status"] == "waiting_agent"
    resp = client.post(f"/v1/conversations/{conv}/status", json={"status": "active"})
    assert resp.status_code == 200, resp.text

    back = chat(client, conv, "We're relocating for work, within 30 days, cash is fine")
    assert (back["status"], back["stage"]) == ("active", "QUALIFIED")
    value = client.get(f"/v1/conversations/{conv}/state").json()["value"]
    assert value["motivation"] == "relocation"
    assert value["timeline_days"] == 30 and value["cash_offer_ok"] is True
    assert value["temperature"] == "hot"

    items = client.get(f"/v1/conversations/{conv}/messages").json()["items"]
    roles = [m["role"] for m in items]
    assert roles == ["user", "assistant"] * 3 + ["user"] + ["user", "assistant"]
    listed = client.get("/v1/conversations", params={"stage": "QUALIFIED"}).json()["items"]
    assert [c["id"] for c in listed] == [conv]


def test_contact_resumes_its_conversation_over_http(client):
    first = chat(client, None, "hello")
    again = chat(client, None, "good shape")  # same contact, no id: the open conversation
    assert again["conversation_id"] == first["conversation_id"]
    assert again["stage"] == "Q2"


def test_terminal_continues_a_web_conversation(client, store_url):
    web = chat(client, None, "Hi, it needs a new roof")
    # The terminal opens the same SQLite file as the service.
    result = CliRunner().invoke(
        app,
        ["chat", "--store", store_url, "--tenant", "loc-1", "--contact", "+15550100"],
        input="around 450k\n",
    )
    assert result.exit_code == 0, result.output
    assert f"conversation {web['conversation_id']}" in result.stderr
    assert "you> Hi, it needs a new roof" in result.stdout  # the web's history first
    assert "Noted: price $450,000" in result.stdout
