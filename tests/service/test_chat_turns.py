"""Chat turns that go wrong: a store failing mid-turn, retried deliveries, refused messages.

Regression tests of the adversarial review of b07f6d3 (findings 2, 11 and 12): each failed there.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI
from fastapi.testclient import TestClient

import threadkeep
from tests.service._service_helpers import client_for


def history(api: TestClient, cid: str) -> list[tuple[int, str, str]]:
    items = api.get(f"/v1/conversations/{cid}/messages?last=100").json()["items"]
    return [(m["seq"], m["role"], m["content"]) for m in items]


class StoreDropsOutBot:
    """While it composes its reply, the SQLite file is locked by another connection for
    ``seconds`` (the store URL waits at most 0.3 s for a lock): the store drops out mid-turn."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        self.seconds = seconds
        self.timers: list[threading.Timer] = []

    async def respond(self, store: Any, conversation: Any, message: Any) -> str:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("BEGIN EXCLUSIVE")

        def unlock() -> None:
            db.execute("ROLLBACK")
            db.close()

        timer = threading.Timer(self.seconds, unlock)
        timer.start()
        self.timers.append(timer)
        return f"echo: {message.content}"


def test_a_store_failing_after_the_message_was_stored_is_a_503_naming_it(tmp_path):
    """Finding 2: not `persisted: false` ("nothing was kept") when the message was kept."""
    path = tmp_path / "drop.db"
    with client_for(f"sqlite:///{path}?timeout=0.3", turn_wait=0.2, turn_lease=1) as api:
        bot = StoreDropsOutBot(path, 1.0)
        state_of(api).bot = bot
        key = {"Idempotency-Key": "wamid.drop-1"}
        resp = api.post(
            "/v1/chat", json={"message": "I want to sell", "contact_id": "+1"}, headers=key
        )
        for timer in bot.timers:
            timer.join()
        assert resp.status_code == 503, resp.text
        error = resp.json()["error"]
        assert error["type"] == "TurnIncomplete"
        assert error["message_seq"] == 1
        cid = error["conversation_id"]
        assert history(api, cid) == [(1, "user", "I want to sell")]

        # The client retries with its key: the message is not stored twice, the bot answers it.
        state_of(api).bot = threadkeep_echo()
        again = api.post(
            "/v1/chat", json={"message": "I want to sell", "contact_id": "+1"}, headers=key
        )
        assert again.status_code == 200, again.text
        body = again.json()
        assert (body["conversation_id"], body["replayed"], body["persisted"]) == (cid, True, True)
        assert body["reply"] == "echo: I want to sell"
        assert history(api, cid) == [
            (1, "user", "I want to sell"),
            (2, "assistant", "echo: I want to sell"),
        ]


def test_a_failed_turn_releases_its_lease(tmp_path):
    """Finding 2: the failed turn's lease (30 s) was left held; the next message got 409."""
    path = tmp_path / "lease.db"
    with client_for(f"sqlite:///{path}?timeout=0.3", turn_wait=0.2, turn_lease=30) as api:
        bot = StoreDropsOutBot(path, 1.0)
        state_of(api).bot = bot
        first = api.post("/v1/chat", json={"message": "one", "contact_id": "+3"})
        for timer in bot.timers:
            timer.join()
        assert first.status_code == 503, first.text
        cid = first.json()["error"]["conversation_id"]
        state_of(api).bot = threadkeep_echo()
        nxt = api.post("/v1/chat", json={"message": "two", "contact_id": "+3"})
        assert nxt.status_code == 200, nxt.text
        assert nxt.json()["conversation_id"] == cid
        assert history(api, cid) == [
            (1, "user", "one"),
            (2, "user", "two"),
            (3, "assistant", "echo: two"),
        ]


def test_a_retry_failing_again_is_a_503_naming_the_stored_message(tmp_path):
    """Not `persisted: false` for a retry whose message the first delivery stored."""
    path = tmp_path / "again.db"
    with client_for(f"sqlite:///{path}?timeout=0.3", turn_wait=0.2) as api:
        bot = StoreDropsOutBot(path, 0.8)
        state_of(api).bot = bot
        key = {"Idempotency-Key": "wamid.again-1"}
        body = {"message": "hello", "contact_id": "+4"}
        assert api.post("/v1/chat", json=body, headers=key).status_code == 503
        for timer in bot.timers:
            timer.join()
        again = api.post("/v1/chat", json=body, headers=key)  # the bot drops the store again
        for timer in bot.timers:
            timer.join()
        assert again.status_code == 503, again.text
        error = again.json()["error"]
        assert (error["type"], error["message_seq"]) == ("TurnIncomplete", 1)
        assert history(api, error["conversation_id"]) == [(1, "user", "hello")]


def state_of(api: TestClient) -> Any:
    """The running app's state (TestClient types its app as any ASGI app)."""
    return cast(FastAPI, api.app).state


def threadkeep_echo() -> Any:
    from threadkeep.bot import EchoBot

    return EchoBot()


def test_a_store_down_before_anything_was_stored_answers_unpersisted(tmp_path):
    """`persisted: false` is kept for what it means: nothing was written."""
    path = tmp_path / "down.db"
    with client_for(f"sqlite:///{path}?timeout=0.2", turn_wait=0.1) as api:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            resp = api.post("/v1/chat", json={"message": "hello", "contact_id": "+2"})
        finally:
            db.execute("ROLLBACK")
            db.close()
        assert resp.status_code == 200, resp.text
        assert (resp.json()["persisted"], resp.json()["reply"]) == (False, "echo: hello")
        assert api.get("/v1/conversations?contact_id=%2B2").json()["items"] == []


def test_a_retry_after_the_conversation_was_closed_is_recognised(api):
    """Finding 11: the key is scoped to the tenant, not to the conversation it resolves to."""
    key = {"Idempotency-Key": "wamid.RETRY-1"}
    first = api.post(
        "/v1/chat", json={"message": "hello", "contact_id": "+1555"}, headers=key
    ).json()
    cid = first["conversation_id"]
    assert api.post(f"/v1/conversations/{cid}/status", json={"status": "closed"}).status_code == 200
    retry = api.post("/v1/chat", json={"message": "hello", "contact_id": "+1555"}, headers=key)
    assert retry.status_code == 200, retry.text
    body = retry.json()
    assert (body["replayed"], body["conversation_id"], body["reply"]) == (True, cid, "echo: hello")
    assert body["status"] == "closed"
    listed = api.get("/v1/conversations?contact_id=%2B1555").json()["items"]
    assert [c["id"] for c in listed] == [cid]  # no second conversation, nothing stored twice
    assert history(api, cid) == [(1, "user", "hello"), (2, "assistant", "echo: hello")]


def test_an_anonymous_retry_is_recognised(api):
    key = {"Idempotency-Key": "widget-RETRY-2"}
    a = api.post("/v1/chat", json={"message": "anon hello"}, headers=key).json()
    b = api.post("/v1/chat", json={"message": "anon hello"}, headers=key).json()
    assert (b["replayed"], b["conversation_id"]) == (True, a["conversation_id"])
    assert len(history(api, a["conversation_id"])) == 2


def test_a_replayed_message_whose_reply_was_never_stored_is_answered(api):
    """Finding 12: never `replayed: true, reply: null` for a message the bot never answered."""
    cid = api.post("/v1/conversations", json={"contact_id": "+17"}).json()["id"]
    # The first delivery of M1 stored the message, then its turn died before the reply.
    stored = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "user", "content": "M1"},
        headers={"Idempotency-Key": "K1"},
    )
    assert stored.status_code == 201
    m2 = api.post("/v1/chat", json={"message": "M2", "conversation_id": cid}).json()
    assert m2["reply"] == "echo: M2"
    retry = api.post(
        "/v1/chat",
        json={"message": "M1", "conversation_id": cid},
        headers={"Idempotency-Key": "K1"},
    )
    body = retry.json()
    assert (body["replayed"], body["reply"], body["message_seq"]) == (True, "echo: M1", 1)
    again = api.post(
        "/v1/chat",
        json={"message": "M1", "conversation_id": cid},
        headers={"Idempotency-Key": "K1"},
    ).json()
    assert (again["reply"], again["reply_seq"]) == ("echo: M1", body["reply_seq"])  # answered once
    assert [r for _, r, _ in history(api, cid)] == ["user", "user", "assistant", "assistant"]


def test_a_key_reused_for_a_different_message_is_422(api):
    key = {"Idempotency-Key": "wamid.SAME"}
    first = api.post("/v1/chat", json={"message": "yes", "contact_id": "+3"}, headers=key).json()
    other = api.post("/v1/chat", json={"message": "no", "contact_id": "+3"}, headers=key)
    assert other.status_code == 422
    assert other.json()["error"]["field"] == "Idempotency-Key"
    assert "different message" in other.json()["error"]["message"]
    assert history(api, first["conversation_id"]) == [
        (1, "user", "yes"),
        (2, "assistant", "echo: yes"),
    ]


def test_a_refused_message_writes_nothing(api):
    too_big = "x" * (threadkeep.DEFAULT_LIMITS.max_content_bytes + 1)
    for message in (too_big, "   "):
        resp = api.post("/v1/chat", json={"message": message, "contact_id": "+4"})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "message"
    assert api.get("/v1/conversations?contact_id=%2B4").json()["items"] == []
    assert api.get("/v1/counts").json()["total"] == 0


def test_the_guidance_panel_shows_no_internal_notes(make_client):
    """Keyed chat turns leave `_chat_turn:` notes; people see only what the contact said."""
    api = make_client(bot="seller")
    out = api.post(
        "/v1/chat",
        json={"message": "It needs a new roof", "contact_id": "+15550177"},
        headers={"Idempotency-Key": "wamid.guidance-1"},
    ).json()
    facts = api.get(f"/v1/conversations/{out['conversation_id']}/guidance").json()["facts"]
    keys = [f["key"] for f in facts]
    assert "seller.condition" in keys  # the bot remembered the answer as a contact fact
    assert not [k for k in keys if k.startswith("_")]


def _store_ops(api: TestClient) -> dict[str, float]:
    """The store operations counted so far, by name (``/metrics``)."""
    ops: dict[str, float] = {}
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("threadkeep_store_operations_total{"):
            name = line.split('op="', 1)[1].split('"', 1)[0]
            ops[name] = ops.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return ops


def _ops_of(api: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    before = _store_ops(api)
    resp = api.post("/v1/chat", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    after = _store_ops(api)
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def test_an_echo_turn_makes_only_the_store_calls_it_needs(tmp_path):
    with client_for(f"sqlite:///{tmp_path / 'ops.db'}") as api:
        cid = api.post("/v1/chat", json={"message": "hi", "contact_id": "c"}).json()
        cid = cid["conversation_id"]
        # a given conversation without a key: no read before the lease (the lease finds it);
        # the message's append answers the conversation as of it, and the reply's as the
        # turn leaves it (append_read both: no get)
        assert _ops_of(api, {"message": "more", "conversation_id": cid}) == {
            "acquire_lease": 1, "append_read": 2, "recall": 1, "release_lease": 1,
        }  # fmt: skip
        # a contact's turn with a key: the key's note is read first and written after
        keyed = _ops_of(api, {"message": "k", "contact_id": "c"}, {"Idempotency-Key": "k-1"})
        assert keyed == {
            "recall": 2, "create": 1, "acquire_lease": 1, "append_read": 2, "remember": 1,
            "release_lease": 1,
        }  # fmt: skip
        assert [c for _, _, c in history(api, cid)] == [
            "hi",
            "echo: hi",
            "more",
            "echo: more",
            "k",
            "echo: k",
        ]


def test_a_keyless_turn_of_an_absent_or_other_tenants_conversation_is_404(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    with threadkeep.open(url) as store:
        theirs = store.start("c", tenant="other").id
    with client_for(url) as api:
        for cid in (theirs, "0" * 26):
            resp = api.post("/v1/chat", json={"message": "hi", "conversation_id": cid})
            assert resp.status_code == 404, resp.text
            assert resp.json()["error"]["type"] == "ConversationNotFound"
    with threadkeep.open(url) as store:
        assert store.messages(theirs, tenant="other") == []


def test_a_retry_after_the_conversation_was_closed_reads_its_message_once(tmp_path: Path) -> None:
    """The replayed message and the reply after it come from one read of the history."""
    with client_for(f"sqlite:///{tmp_path / 'replay.db'}") as api:
        key = {"Idempotency-Key": "wamid.R-3"}
        body = {"message": "hello", "contact_id": "+1666"}
        cid = api.post("/v1/chat", json=body, headers=key).json()["conversation_id"]
        for i in range(3):  # an agent writes after the reply
            api.post(
                f"/v1/conversations/{cid}/messages", json={"role": "agent", "content": f"a{i}"}
            )
        api.post(f"/v1/conversations/{cid}/status", json={"status": "closed"})
        ops = _ops_of(api, body, key)
        assert ops.get("read_messages") == 1
        again = api.post("/v1/chat", json=body, headers=key).json()
        assert (again["replayed"], again["reply"], again["reply_seq"]) == (True, "echo: hello", 2)
