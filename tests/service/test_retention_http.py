"""Per-conversation retention over HTTP, over the service's THREADKEEP_TTL/IDLE_AFTER/WINDOW."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest


def _lives(conv: dict[str, Any]) -> timedelta | None:
    if conv["expires_at"] is None:
        return None
    return datetime.fromisoformat(conv["expires_at"]) - datetime.fromisoformat(
        conv["last_activity_at"]
    )


def test_a_conversation_takes_its_own_retention(make_client):
    api = make_client(ttl=3600)
    default = api.post("/v1/conversations", json={"contact_id": "c-default"}).json()
    assert _lives(default) == timedelta(hours=1)  # the service's THREADKEEP_TTL
    forever = api.post(
        "/v1/conversations", json={"contact_id": "c-forever", "retention": {"ttl": None}}
    ).json()
    assert forever["expires_at"] is None and _lives(forever) is None
    month = api.post(
        "/v1/conversations", json={"contact_id": "c-month", "retention": {"ttl": 30 * 86400}}
    ).json()
    assert _lives(month) == timedelta(days=30)
    # activity slides it by the conversation's own ttl, not the service's
    api.post(f"/v1/conversations/{month['id']}/messages", json={"role": "user", "content": "hi"})
    again = api.get(f"/v1/conversations/{month['id']}").json()
    assert _lives(again) == timedelta(days=30)
    assert api.get(f"/v1/conversations/{forever['id']}").json()["expires_at"] is None


def test_max_messages_keeps_the_newest(make_client):
    api = make_client()
    conv = api.post(
        "/v1/conversations", json={"contact_id": "c-trim", "retention": {"max_messages": 2}}
    ).json()
    for text in ("one", "two", "three"):
        resp = api.post(
            f"/v1/conversations/{conv['id']}/messages", json={"role": "user", "content": text}
        )
        assert resp.status_code == 201
    items = api.get(f"/v1/conversations/{conv['id']}/messages").json()["items"]
    assert [m["content"] for m in items] == ["two", "three"]
    # the service's default (no retention given) keeps everything
    whole = api.post("/v1/conversations", json={"contact_id": "c-whole"}).json()
    for text in ("one", "two", "three"):
        api.post(
            f"/v1/conversations/{whole['id']}/messages", json={"role": "user", "content": text}
        )
    assert len(api.get(f"/v1/conversations/{whole['id']}/messages").json()["items"]) == 3


@pytest.mark.parametrize(
    ("retention", "field"),
    [
        ({"ttl": -5}, "body.retention.ttl"),
        ({"ttl": "a week"}, "body.retention.ttl"),
        ({"window": 0}, "body.retention.window"),
        ({"max_messages": 0}, "body.retention.max_messages"),
        ({"forever": True}, "body.retention.forever"),
    ],
)
def test_bad_retention_is_422_and_starts_nothing(make_client, retention, field):
    api = make_client()
    resp = api.post("/v1/conversations", json={"contact_id": "c-bad", "retention": retention})
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == field
    assert api.get("/v1/conversations?contact_id=c-bad").json()["items"] == []


def test_an_existing_conversation_gets_a_new_retention(make_client):
    api = make_client(ttl=3600)
    conv = api.post("/v1/conversations", json={"contact_id": "c-quiet"}).json()
    path = f"/v1/conversations/{conv['id']}/retention"
    for bad, field in (({"ttl": -5}, "body.ttl"), ({"forever": True}, "body.forever")):
        refused = api.put(path, json=bad)
        assert refused.status_code == 422
        assert refused.json()["error"]["field"] == field
    assert _lives(api.get(f"/v1/conversations/{conv['id']}").json()) == timedelta(hours=1)
    forever = api.put(path, json={"ttl": None})
    assert forever.status_code == 200
    assert forever.json()["expires_at"] is None
    assert forever.json()["last_activity_at"] == conv["last_activity_at"]  # not activity
    month = api.put(path, json={"ttl": 30 * 86400}).json()
    assert _lives(month) == timedelta(days=30)
    assert api.put("/v1/conversations/" + "0" * 26 + "/retention", json={}).status_code == 404
