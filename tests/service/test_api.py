"""Every /v1 route and status code, through the real app, over every backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

import threadkeep
from tests.service._service_helpers import client_for


def start(api: TestClient, contact: str = "c-1", **body: Any) -> dict[str, Any]:
    resp = api.post("/v1/conversations", json={"contact_id": contact, **body})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def messages(api: TestClient, cid: str, query: str = "last=1000") -> list[dict[str, Any]]:
    resp = api.get(f"/v1/conversations/{cid}/messages?{query}")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


# ---- chat ---------------------------------------------------------------------------------


def test_chat_starts_a_conversation_and_keeps_both_turns(api):
    first = api.post("/v1/chat", json={"message": "hello"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["reply"] == "echo: hello"
    assert body["persisted"] is True
    assert body["status"] == "active"
    assert (body["message_seq"], body["reply_seq"]) == (1, 2)
    cid = body["conversation_id"]

    second = api.post("/v1/chat", json={"message": "again", "conversation_id": cid}).json()
    assert second["conversation_id"] == cid
    got = [(m["seq"], m["role"], m["content"]) for m in messages(api, cid)]
    assert got == [
        (1, "user", "hello"),
        (2, "assistant", "echo: hello"),
        (3, "user", "again"),
        (4, "assistant", "echo: again"),
    ]


def test_chat_resumes_the_contacts_open_conversation(api):
    a = api.post("/v1/chat", json={"message": "one", "contact_id": "+1555"}).json()
    b = api.post("/v1/chat", json={"message": "two", "contact_id": "+1555"}).json()
    assert a["conversation_id"] == b["conversation_id"]
    other = api.post("/v1/chat", json={"message": "x", "contact_id": "+1666"}).json()
    assert other["conversation_id"] != a["conversation_id"]
    # once closed, the contact's next message starts a new conversation
    closed = api.post(f"/v1/conversations/{a['conversation_id']}/status", json={"status": "closed"})
    assert closed.status_code == 200
    c = api.post("/v1/chat", json={"message": "three", "contact_id": "+1555"}).json()
    assert c["conversation_id"] != a["conversation_id"]


def test_chat_retried_with_an_idempotency_key_gets_the_first_answer(api):
    headers = {"Idempotency-Key": "wamid.1"}
    body = {"message": "hello", "contact_id": "+1777"}
    first = api.post("/v1/chat", json=body, headers=headers).json()
    assert first["replayed"] is False
    again = api.post("/v1/chat", json=body, headers=headers).json()
    assert again["replayed"] is True
    for name in ("conversation_id", "reply", "message_seq", "reply_seq", "persisted"):
        assert again[name] == first[name], name
    cid = first["conversation_id"]
    assert [m["content"] for m in messages(api, cid)] == ["hello", "echo: hello"]
    other = api.post("/v1/chat", json=body, headers={"Idempotency-Key": "wamid.2"}).json()
    assert (other["replayed"], other["message_seq"]) == (False, 3)


def test_chat_to_a_closed_conversation_is_409(api):
    cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
    api.post(f"/v1/conversations/{cid}/status", json={"status": "closed"})
    resp = api.post("/v1/chat", json={"message": "more", "conversation_id": cid})
    assert resp.status_code == 409
    assert resp.json()["error"]["type"] == "ConversationClosed"
    assert len(messages(api, cid)) == 2  # nothing written


def test_chat_to_an_unknown_conversation_is_404(api):
    resp = api.post("/v1/chat", json={"message": "hi", "conversation_id": "0" * 26})
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "ConversationNotFound"


def test_the_bot_is_silent_while_waiting_for_an_agent(api):
    cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
    api.post(f"/v1/conversations/{cid}/status", json={"status": "waiting_agent"})
    resp = api.post("/v1/chat", json={"message": "is anyone there?", "conversation_id": cid})
    assert resp.status_code == 200
    assert resp.json()["reply"] is None
    assert resp.json()["status"] == "waiting_agent"
    assert resp.json()["reply_seq"] is None
    # the message is stored for the human agent, who answers through /messages
    assert messages(api, cid)[-1]["content"] == "is anyone there?"
    agent = api.post(f"/v1/conversations/{cid}/messages", json={"role": "agent", "content": "Yes"})
    assert agent.status_code == 201
    back = api.post(f"/v1/conversations/{cid}/status", json={"status": "active"})
    assert back.json()["status"] == "active"
    assert api.post("/v1/chat", json={"message": "ok", "conversation_id": cid}).json()["reply"]


def test_a_take_over_records_who_took_the_conversation(api):
    cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
    path = f"/v1/conversations/{cid}/status"
    refused = api.post(path, json={"status": "waiting_agent", "agent_id": "bad\x00name"})
    assert refused.status_code == 422
    assert "agent" in refused.text
    assert api.get(f"/v1/conversations/{cid}").json()["status"] == "active"  # nothing changed
    taken = api.post(path, json={"status": "waiting_agent", "agent_id": "dana"})
    assert taken.status_code == 200
    assert (taken.json()["status"], taken.json()["agent_id"]) == ("waiting_agent", "dana")
    listed = api.get("/v1/conversations", params={"agent_id": "dana"}).json()["items"]
    assert [c["id"] for c in listed] == [cid]
    back = api.post(path, json={"status": "active"})  # handing back keeps who had it
    assert (back.json()["status"], back.json()["agent_id"]) == ("active", "dana")
    again = api.post(path, json={"status": "waiting_agent", "agent_id": "lee"})
    assert again.json()["agent_id"] == "lee"


def test_chat_waits_for_a_busy_turn_then_409(make_client):
    api = make_client(turn_wait=0.2)
    cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
    store = api.app.state.stores.store
    # hold the conversation's turn lease, as another worker answering it would
    holder = api.portal.wrap_async_context_manager(store.turn(cid, lease=30))
    with holder:
        resp = api.post("/v1/chat", json={"message": "second", "conversation_id": cid})
        assert resp.status_code == 409
        assert resp.json()["error"]["type"] == "TurnInProgress"
    assert len(messages(api, cid)) == 2  # the refused message was not stored
    resp = api.post("/v1/chat", json={"message": "third", "conversation_id": cid})
    assert resp.status_code == 200


# ---- conversations ----------------------------------------------------------------------


def test_an_expired_conversation_is_404(shared_store_url, tenant):
    # started 8 days ago (by a store whose clock says so): its 7-day TTL has run out
    past = datetime.now(UTC) - timedelta(days=8)
    with threadkeep.open(shared_store_url, clock=threadkeep.ManualClock(past)) as old:
        cid = old.start("c-old", tenant=tenant).id
        old.append(cid, "user", "hello from the past", tenant=tenant)
    with client_for(shared_store_url, api_keys=f"{tenant}:k", key="k") as api:
        _expired_is_gone(api, cid)


def _expired_is_gone(api: TestClient, cid: str) -> None:
    assert api.get(f"/v1/conversations/{cid}").status_code == 404
    assert api.get(f"/v1/conversations/{cid}/messages").status_code == 404
    assert api.post("/v1/chat", json={"message": "x", "conversation_id": cid}).status_code == 404
    assert api.get("/v1/conversations?contact_id=c-old").json()["items"] == []


def test_start_read_list_count_delete(api):
    conv = start(api, "c-1", agent_id="jorge", channel="sms", stage="Q0", metadata={"k": "v"})
    assert conv["status"] == "new"
    assert (conv["agent_id"], conv["channel"], conv["stage"]) == ("jorge", "sms", "Q0")
    assert conv["metadata"] == {"k": "v"}
    location = api.post("/v1/conversations", json={"contact_id": "c-loc"}).headers["Location"]
    assert api.get(location).json()["contact_id"] == "c-loc"
    api.delete(location)
    got = api.get(f"/v1/conversations/{conv['id']}")
    assert got.status_code == 200 and got.json() == conv
    for i in range(4):
        start(api, f"c-{i + 2}", stage="Q1")

    page = api.get("/v1/conversations?limit=2").json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    seen = [c["id"] for c in page["items"]]
    while page["next_cursor"]:
        page = api.get(f"/v1/conversations?limit=2&cursor={page['next_cursor']}").json()
        seen += [c["id"] for c in page["items"]]
    assert len(seen) == len(set(seen)) == 5

    only = api.get("/v1/conversations?stage=Q0").json()["items"]
    assert [c["id"] for c in only] == [conv["id"]]
    assert api.get("/v1/conversations?contact_id=c-3").json()["items"][0]["contact_id"] == "c-3"
    assert api.get("/v1/conversations?agent_id=jorge").json()["items"][0]["id"] == conv["id"]
    assert api.get("/v1/conversations?status=active").json()["items"] == []

    counts = api.get("/v1/counts").json()
    assert counts == {"total": 5, "by_status": {"new": 5}, "by_stage": {"Q0": 1, "Q1": 4}}

    gone = api.delete(f"/v1/conversations/{conv['id']}")
    assert gone.status_code == 204 and gone.content == b""
    assert api.get(f"/v1/conversations/{conv['id']}").status_code == 404
    assert api.delete(f"/v1/conversations/{conv['id']}").status_code == 404
    assert api.get(f"/v1/conversations/{conv['id']}/messages").status_code == 404


def test_status_transitions_and_409s(api):
    conv = start(api)
    cid = conv["id"]
    resp = api.post(f"/v1/conversations/{cid}/status", json={"status": "idle"})
    assert resp.status_code == 409  # new → idle is not a transition
    assert resp.json()["error"]["type"] == "IllegalTransition"
    assert "may go to" in resp.json()["error"]["message"]
    api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "hi"})
    assert api.get(f"/v1/conversations/{cid}").json()["status"] == "active"
    resp = api.post(f"/v1/conversations/{cid}/status", json={"status": "closed"})
    assert resp.status_code == 200 and resp.json()["status"] == "closed"
    resp = api.post(f"/v1/conversations/{cid}/status", json={"status": "active"})
    assert resp.status_code == 409
    resp = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "x"})
    assert resp.status_code == 409
    assert resp.json()["error"]["type"] == "ConversationClosed"
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 1


def test_stage(api):
    cid = start(api)["id"]
    resp = api.put(f"/v1/conversations/{cid}/stage", json={"stage": "Q3"})
    assert resp.status_code == 200 and resp.json()["stage"] == "Q3"
    resp = api.put(f"/v1/conversations/{cid}/stage", json={"stage": None})
    assert resp.json()["stage"] is None


# ---- messages -----------------------------------------------------------------------------


def test_append_with_idempotency_key_replays_the_original(api):
    cid = start(api)["id"]
    url = f"/v1/conversations/{cid}/messages"
    headers = {"Idempotency-Key": "wamid.123"}
    first = api.post(url, json={"role": "user", "content": "hi"}, headers=headers)
    assert first.status_code == 201
    assert first.json()["seq"] == 1 and first.json()["idempotency_key"] == "wamid.123"
    again = api.post(url, json={"role": "user", "content": "hi"}, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    other = api.post(url, json={"role": "user", "content": "hi"}, headers={"Idempotency-Key": "b"})
    assert other.json()["seq"] == 2
    assert [m["seq"] for m in messages(api, cid)] == [1, 2]


@pytest.mark.parametrize(
    ("change", "differ"),
    [
        ({"content": "bye"}, "content"),
        ({"role": "agent"}, "role"),
        ({"metadata": {"via": "sms"}}, "metadata"),
        ({"payload": {"type": "text"}}, "payload"),
    ],
)
def test_a_key_reused_for_a_different_message_is_422_and_stores_nothing(api, change, differ):
    cid = start(api)["id"]
    url = f"/v1/conversations/{cid}/messages"
    headers = {"Idempotency-Key": "wamid.SAME"}
    sent = {"role": "user", "content": "hi", "metadata": {"via": "web"}}
    first = api.post(url, json=sent, headers=headers)
    assert first.status_code == 201, first.text
    other = api.post(url, json={**sent, **change}, headers=headers)
    assert other.status_code == 422, other.text
    error = other.json()["error"]
    assert error["field"] == "Idempotency-Key"
    assert "already used for a different message" in error["message"]
    assert f"its {differ} differ" in error["message"]
    assert messages(api, cid) == [first.json()]


def test_read_messages_last_after_limit(api):
    cid = start(api)["id"]
    for i in range(6):
        resp = api.post(
            f"/v1/conversations/{cid}/messages",
            json={"role": "user", "content": f"m{i}", "metadata": {"i": i}},
        )
        assert resp.status_code == 201
    assert [m["seq"] for m in messages(api, cid, "last=2")] == [5, 6]
    assert [m["seq"] for m in messages(api, cid, "after=2&limit=3")] == [3, 4, 5]
    assert messages(api, cid, "after=6") == []
    assert messages(api, cid, "last=1")[0]["metadata"] == {"i": 5}
    assert len(messages(api, cid, "")) == 6


# ---- state ----------------------------------------------------------------------------------


def test_state_etag_and_if_match(api):
    cid = start(api)["id"]
    url = f"/v1/conversations/{cid}/state"
    empty = api.get(url)
    assert empty.status_code == 200
    assert empty.json() == {"value": None, "version": 0, "saved_at": None, "problems": []}
    assert empty.headers["ETag"] == '"0"'

    saved = api.put(url, json={"value": {"stage": "Q1"}}, headers={"If-Match": '"0"'})
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == 1 and saved.headers["ETag"] == '"1"'
    assert saved.json()["value"] == {"stage": "Q1"}

    stale = api.put(url, json={"value": {"stage": "Q9"}}, headers={"If-Match": '"0"'})
    assert stale.status_code == 412
    assert stale.json()["error"]["type"] == "StateConflict"
    assert api.get(url).json()["value"] == {"stage": "Q1"}  # nothing written

    weak = api.put(url, json={"value": {"stage": "Q2"}}, headers={"If-Match": 'W/"1"'})
    assert weak.status_code == 200 and weak.json()["version"] == 2
    blind = api.put(url, json={"value": [1, 2]})  # no If-Match: refused, nothing written
    assert blind.status_code == 428
    assert blind.json()["error"]["type"] == "PreconditionRequired"
    star = api.put(url, json={"value": "x"}, headers={"If-Match": "*"})  # explicit overwrite
    assert star.json()["version"] == 3
    current = api.get(url)
    assert current.headers["ETag"] == '"3"' and current.json()["value"] == "x"

    bad = api.put(url, json={"value": 1}, headers={"If-Match": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "If-Match"
    assert api.get(f"/v1/conversations/{'0' * 26}/state").status_code == 404


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field", "rule"),
    [
        ("/v1/chat", {}, "body.message", "missing"),
        ("/v1/chat", {"message": 5}, "body.message", "string_type"),
        ("/v1/chat", {"message": ""}, "body.message", "string_too_short"),
        ("/v1/chat", {"message": "hi", "extra": 1}, "body.extra", "extra_forbidden"),
        ("/v1/conversations", {"contact_id": "c", "metadata": []}, "body.metadata", "dict_type"),
    ],
)
def test_422_names_the_field_and_the_rule(api, path, body, field, rule):
    resp = api.post(path, json=body)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert (error["type"], error["field"], error["rule"]) == ("ValidationError", field, rule)
    assert field in error["message"]


def test_422_for_bad_values_the_store_rejects(api):
    cid = start(api)["id"]
    resp = api.post(f"/v1/conversations/{cid}/messages", json={"role": "robot", "content": "x"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "body.role"
    huge = "x" * (64 * 1024 + 1)
    resp = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": huge})
    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "InvalidInput"
    assert resp.json()["error"]["field"] == "content"
    resp = api.post("/v1/conversations", json={"contact_id": "   "})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "contact_id"
    resp = api.get(f"/v1/conversations/{cid}/messages?last=0")
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "query.last"
    resp = api.post(f"/v1/conversations/{cid}/status", json={"status": "asleep"})
    assert resp.status_code == 422 and resp.json()["error"]["rule"] == "literal_error"
    resp = api.post("/v1/chat", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 0  # no partial write


def test_413_for_a_body_over_the_limit(make_client):
    api = make_client(max_body_bytes=2048)
    big = {"message": "x" * 4096}
    resp = api.post("/v1/chat", json=big)
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "PayloadTooLarge"

    def chunks() -> Iterator[bytes]:
        yield b'{"message": "'
        for _ in range(10):
            yield b"y" * 512
        yield b'"}'

    streamed = api.post("/v1/chat", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert api.get("/v1/conversations").json()["items"] == []  # nothing was written
    small = api.post(
        "/v1/chat",
        content=iter([b'{"message": "ok"}']),
        headers={"Content-Type": "application/json"},
    )
    assert small.status_code == 200


def test_unknown_routes_answer_json_404_and_405(api):
    resp = api.get("/v1/nothing")
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "NotFound"
    resp = api.patch("/v1/chat", json={})
    assert resp.status_code == 405 and resp.json()["error"]["type"] == "MethodNotAllowed"


# ---- events (the backlog; the live stream is tested against a real server) --------------------


def parse_sse(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            out.append(fields)
    return out


def test_events_replay_and_resume(api):
    cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
    resp = api.get("/v1/events?from_start=true&follow=false")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(resp.text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "conversation.started"
    assert kinds.count("message.appended") == 2
    assert all(cid in e["data"] for e in events)
    assert all(json.loads(e["data"])["id"] == e["id"] for e in events)

    middle = events[1]["id"]
    resumed = parse_sse(api.get("/v1/events?follow=false", headers={"Last-Event-ID": middle}).text)
    assert [e["id"] for e in resumed] == [e["id"] for e in events[2:]]
    by_query = parse_sse(api.get(f"/v1/events?follow=false&after={middle}").text)
    assert [e["id"] for e in by_query] == [e["id"] for e in events[2:]]
    # without a cursor the stream starts at the end: no replay, but the resume point moves
    tail = api.get("/v1/events?follow=false").text
    assert parse_sse(tail) == [] and f"id: {events[-1]['id']}" in tail


def test_events_410_when_the_cursor_fell_out_of_the_log(make_client):
    api = make_client(events_kept=3)
    cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
    first = parse_sse(api.get("/v1/events?from_start=true&follow=false").text)[0]["id"]
    for i in range(5):
        api.post("/v1/chat", json={"message": f"m{i}", "conversation_id": cid})
    resp = api.get("/v1/events?follow=false", headers={"Last-Event-ID": first})
    assert resp.status_code == 410
    assert resp.json()["error"]["type"] == "CursorExpired"


# ---- health --------------------------------------------------------------------------------


def test_health_ready_and_metrics(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    api.post("/v1/chat", json={"message": "hi"})
    text = api.get("/metrics").text
    assert 'threadkeep_http_requests_total{method="POST",route="/v1/chat",status="200"' in text
    assert "threadkeep_http_request_duration_seconds_bucket" in text
    assert 'threadkeep_store_operations_total{op="append_read",outcome="ok"' in text
    assert 'threadkeep_store_operation_duration_seconds_count{op="append_read"' in text


def test_one_log_line_per_request(api, caplog, tenant):
    caplog.set_level("INFO", logger="threadkeep.access")
    cid = api.post("/v1/chat", json={"message": "hi"}).json()["conversation_id"]
    api.get(f"/v1/conversations/{cid}")
    lines = [r.getMessage() for r in caplog.records if r.name == "threadkeep.access"]
    assert len(lines) == 2

    chat, get = (json.loads(line) for line in lines)
    assert chat["route"] == "/v1/chat" and chat["status"] == 200
    assert chat["conversation_id"] == cid and chat["tenant"] == tenant
    assert get["conversation_id"] == cid and isinstance(get["duration_ms"], float)


def test_web_pages_are_served(api):
    assert 'id="transcript"' in api.get("/").text
    assert api.get("/dashboard").status_code == 200


def test_events_malformed_cursor_is_422(api):
    resp = api.get("/v1/events?follow=false", headers={"Last-Event-ID": "not-a-cursor"})
    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "InvalidInput"


def test_the_demo_bot_answers_while_the_store_is_unreachable(caplog):
    # nothing listens on 127.0.0.1:1: every store call is refused by the kernel
    with client_for("redis://127.0.0.1:1/0?timeout=0.5&retries=0", bot="seller") as api:
        assert api.get("/readyz").status_code == 503
        resp = api.post("/v1/chat", json={"message": "Hi, I want to sell my house"})
        assert resp.status_code == 200
        body = resp.json()
        assert body["persisted"] is False and body["conversation_id"] is None
        assert "condition" in body["reply"]  # the seller bot's first question
        assert api.get("/healthz").status_code == 200
        assert api.get("/v1/conversations").status_code == 503
    assert any("answering without keeping the turn" in r.getMessage() for r in caplog.records)
